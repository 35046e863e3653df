#pragma once
// Tensor types of the public API.
//
// posenc works on dense row-major float tensors. Arguments are taken as `TensorRef<T, Rank>`, a
// non-owning view that binds (like Eigen::Ref for matrices) to an Eigen::Tensor, an
// Eigen::TensorMap (const or not), a raw pointer plus sizes, or, for rank 1, any contiguous range
// such as std::vector<Position>. Results are returned as `Tensor<T, Rank>` (Eigen, row-major).

#include <array>
#include <cstddef>
#include <cstdint>
#include <ranges>
#include <type_traits>
#include <utility>
#include <unsupported/Eigen/CXX11/Tensor>

#include "posenc/config.hpp"
#include "posenc/errors.hpp"

namespace posenc {

/// Owning row-major Eigen tensor, the type every posenc function returns.
template <class T, int Rank>
using Tensor = Eigen::Tensor<T, Rank, Eigen::RowMajor, Eigen::Index>;

/// Eigen's non-owning view of a row-major tensor; what `TensorRef::map()` gives back.
template <class T, int Rank>
using TensorMap = Eigen::TensorMap<Eigen::Tensor<std::remove_const_t<T>, Rank, Eigen::RowMajor, Eigen::Index>>;
template <class T, int Rank>
using ConstTensorMap =
    Eigen::TensorMap<const Eigen::Tensor<std::remove_const_t<T>, Rank, Eigen::RowMajor, Eigen::Index>>;

namespace detail {
template <class E>
concept EigenTensorLike = requires(E& e) {
  e.data();
  e.dimension(0);
  std::remove_cvref_t<E>::NumDimensions;
  std::remove_cvref_t<E>::Layout;
};
}  // namespace detail

/// A non-owning view of a dense row-major tensor: a pointer and `Rank` sizes. A default-constructed
/// TensorRef is "absent", which optional inputs such as key padding use; a view of an empty tensor
/// (a dim of 0, whose data may be null) is present and empty.
template <class T, int Rank>
class TensorRef {
 public:
  using Scalar = std::remove_const_t<T>;
  static constexpr int kRank = Rank;

  TensorRef() = default;
  TensorRef(T* data, const std::array<Index, Rank>& dims) : data_(data), dims_(dims), bound_(true) {}

  /// Binds to an Eigen::Tensor or Eigen::TensorMap of the same rank and scalar.
  template <detail::EigenTensorLike E>
    requires(!std::is_same_v<std::remove_cvref_t<E>, TensorRef> &&
             static_cast<int>(std::remove_cvref_t<E>::NumDimensions) == Rank)
  TensorRef(E&& tensor) : data_(tensor.data()), bound_(true) {  // NOLINT(google-explicit-constructor)
    using Plain = std::remove_cvref_t<E>;
    static_assert(static_cast<int>(Plain::Layout) == static_cast<int>(Eigen::RowMajor),
                  "posenc: tensors must be row-major: declare Eigen::Tensor<float, N, Eigen::RowMajor>");
    static_assert(std::is_convertible_v<decltype(tensor.data()), T*>,
                  "posenc: element type differs, or a const tensor was passed where posenc writes");
    for (int i = 0; i < Rank; ++i) dims_[i] = static_cast<Index>(tensor.dimension(i));
  }

  /// Rank-1 views of contiguous ranges (std::vector<Position>, std::array, std::span, ...).
  template <std::ranges::contiguous_range R>
    requires(Rank == 1 && !detail::EigenTensorLike<R> &&
             std::is_convertible_v<decltype(std::ranges::data(std::declval<R&>())), T*>)
  TensorRef(R&& range)  // NOLINT(google-explicit-constructor)
      : data_(std::ranges::data(range)), dims_{static_cast<Index>(std::ranges::size(range))}, bound_(true) {}

  /// A mutable view converts to a const one.
  template <class U>
    requires(std::is_const_v<T> && std::is_same_v<U, std::remove_const_t<T>>)
  TensorRef(const TensorRef<U, Rank>& other)  // NOLINT(google-explicit-constructor)
      : data_(other.data()), dims_(other.dims()), bound_(other.present()) {}

  T* data() const { return data_; }
  /// Bound to data, or to an empty tensor (data may then be null).
  bool present() const { return data_ != nullptr || (bound_ && size() == 0); }
  Index dim(int i) const { return dims_[static_cast<std::size_t>(i)]; }
  const std::array<Index, Rank>& dims() const { return dims_; }
  Index size() const {
    Index n = 1;
    for (Index d : dims_) n *= d;
    return n;
  }
  /// Eigen view of the same memory.
  auto map() const {
    if constexpr (std::is_const_v<T>) {
      return ConstTensorMap<T, Rank>(data_, dims_);
    } else {
      return TensorMap<T, Rank>(data_, dims_);
    }
  }

 private:
  T* data_ = nullptr;
  std::array<Index, Rank> dims_{};
  bool bound_ = false;
};

/// Positions of the tokens of one sequence `[tokens]`, or of a batch `[batch, tokens]`.
using PositionsRef = TensorRef<const Position, 1>;
using BatchPositionsRef = TensorRef<const Position, 2>;
/// Key padding: 1 = masked out, 0 = attend. `[k_tokens]` or `[batch, k_tokens]`.
using KeyPaddingRef = TensorRef<const std::uint8_t, 1>;
using BatchKeyPaddingRef = TensorRef<const std::uint8_t, 2>;

namespace detail {

inline std::string shape_string(const Index* dims, int rank) {
  std::string s = "[";
  for (int i = 0; i < rank; ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

template <class T, int Rank>
std::string shape_string(const TensorRef<T, Rank>& t) {
  return shape_string(t.dims().data(), Rank);
}

/// Throws ShapeMismatch unless `t` has exactly the dims `want` (entries < 0 match anything).
template <class T, int Rank>
void require_shape(const TensorRef<T, Rank>& t, const char* name, const std::type_identity_t<std::array<Index, Rank>>& want,
                   const char* layout) {
  require<ShapeMismatch>(t.present(), name, " is required ", layout);
  bool ok = true;
  for (int i = 0; i < Rank; ++i) ok = ok && (want[i] < 0 || t.dim(i) == want[i]);
  if (ok) return;  // the message allocates: built only on failure (an attention call checks 3 to 5 shapes)
  throw ShapeMismatch(concat(name, " must have shape ", layout, " = ", shape_string(want.data(), Rank),
                             " (-1: any), got ", shape_string(t)));
}

/// Throws InvalidParameter if the elements of `out` and `in` overlap, unless `allow_same` and they
/// are the same tensor (an in-place call).
template <class T, class U, int Rank, int RankIn>
void require_disjoint(const TensorRef<T, Rank>& out, const char* out_name, const TensorRef<U, RankIn>& in,
                      const char* in_name, bool allow_same = false) {
  const auto span_of = [](const auto& t) {
    const auto begin = reinterpret_cast<std::uintptr_t>(t.data());
    return std::pair{begin, begin + static_cast<std::uintptr_t>(t.size()) * sizeof(*t.data())};
  };
  const auto [out_begin, out_end] = span_of(out);
  const auto [in_begin, in_end] = span_of(in);
  if (out_begin >= in_end || in_begin >= out_end) return;
  if (allow_same && out_begin == in_begin && out_end == in_end) return;
  const auto offset = static_cast<std::intptr_t>(out_begin - in_begin);  // wraps to the signed difference
  throw InvalidParameter(concat(out_name, " overlaps ", in_name, ": it begins ", offset, " bytes from ", in_name,
                                "'s start, ", allow_same ? "and must be that tensor itself or disjoint from it"
                                                         : "and must be disjoint from it"));
}

}  // namespace detail
}  // namespace posenc
