#pragma once
// One sequence of an attention call as the schedules read it: its positions and mask
// (SequenceView), runs of consecutive positions, and its query/key rows gathered and rotated by the
// policy.

#include <algorithm>
#include <cstdint>

#include "posenc/config.hpp"
#include "posenc/kernel/simd.hpp"

#if defined(POSENC_HAS_VECTOR_KERNELS)

namespace posenc::detail {

/// Positions and mask of one attention call, for one sequence.
struct SequenceView {
  const Position* q_positions;
  const Position* k_positions;
  const std::uint8_t* key_padding;  // may be null
  bool causal;
  bool visible(Position q, Index j) const {
    return (!causal || k_positions[j] <= q) && (key_padding == nullptr || key_padding[j] == 0);
  }
};

/// Whether positions[0, n) are p, p + 1, ..., p + n - 1.
inline bool consecutive_positions(const Position* positions, Index n) {
  for (Index j = 1; j < n; ++j) {
    if (positions[j] != positions[0] + j) return false;
  }
  return true;
}

/// out [tokens, heads, d] = the rows of `tokens` tokens, token t's `heads` rows at
/// in + t * in_stride (d apart), rotated by the policy's query/key rotation where it has one. A
/// policy that rotates out of place while gathering (RoPE) reads each row once; one that only
/// rotates in place (all QKRotation asks) gets a copy first.
template <class P, class Rotation>
void gather_rows(const P& policy, const Rotation* rotation, const float* in, Index in_stride, Index tokens,
                 Index heads, Index d, const Position* positions, float* out) {
  if constexpr (requires { policy.rotate_unchecked(in, in_stride, out, tokens, heads, positions, *rotation); }) {
    policy.rotate_unchecked(in, in_stride, out, tokens, heads, positions, *rotation);
  } else {
    for (Index t = 0; t < tokens; ++t) {
      std::copy(in + t * in_stride, in + t * in_stride + heads * d, out + t * heads * d);
    }
    if constexpr (P::kQKRotation) policy.rotate_unchecked(out, tokens, heads, positions, *rotation);
  }
}

/// Whether every key j0 .. j0 + n - 1 is visible to every query at position >= q_min (no
/// padding, none in the future): the tile's rows then need no mask.
inline bool tile_all_visible(const SequenceView& seq, Index j0, Index n, Position q_min) {
  for (Index j = j0; j < j0 + n; ++j) {
    if (!seq.visible(q_min, j)) return false;
  }
  return true;
}

}  // namespace posenc::detail

#endif  // POSENC_HAS_VECTOR_KERNELS
