#pragma once
// Validation of position arguments, shared by every encoding and by attention.

#include <algorithm>
#include <span>

#include "posenc/config.hpp"
#include "posenc/errors.hpp"
#include "posenc/tensor.hpp"

namespace posenc::detail {

/// The positions of a rank-1 view as a span.
inline std::span<const Position> as_span(PositionsRef positions) {
  return {positions.data(), static_cast<std::size_t>(positions.dim(0))};
}

/// Throws PositionOutOfRange unless every position lies in [0, kMaxPosition].
inline void check_positions(std::span<const Position> positions, const char* name) {
  for (std::size_t i = 0; i < positions.size(); ++i) {
    const Position p = positions[i];
    require<PositionOutOfRange>(p >= 0 && p <= kMaxPosition, name, "[", i, "] = ", p,
                                " is outside [0, 2^31 - 1]");
  }
}

/// max(positions) + 1: the `seq_len` HF's dynamic_rope_update derives from position_ids.
inline Position sequence_length(std::span<const Position> positions) {
  Position max_position = -1;
  for (Position p : positions) max_position = std::max(max_position, p);
  return max_position + 1;
}

}  // namespace posenc::detail
