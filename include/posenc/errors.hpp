#pragma once
// The three error kinds of the public boundary. Each derives from the standard exception a
// caller would catch (std::invalid_argument or std::out_of_range), and its message names the
// argument and the offending value.

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace posenc {

/// A parameter outside its domain (odd rotary_dim, base <= 1, unknown layout, ...).
class InvalidParameter : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// A tensor whose rank or dimensions disagree with the parameters or with another tensor.
class ShapeMismatch : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// A position < 0 or > kMaxPosition, or past the rows of a table.
class PositionOutOfRange : public std::out_of_range {
 public:
  using std::out_of_range::out_of_range;
};

namespace detail {

template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream out;
  out.precision(17);
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}

/// Throws Error(concat(parts...)) unless `condition` holds.
template <class Error, class... Parts>
void require(bool condition, Parts&&... parts) {
  if (!condition) throw Error(concat(std::forward<Parts>(parts)...));
}

}  // namespace detail
}  // namespace posenc
