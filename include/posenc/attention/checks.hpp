#pragma once
// Validation at the attention boundary: everything the kernels below rely on.

#include <cmath>
#include <cstdint>
#include <span>

#include "posenc/attention/options.hpp"
#include "posenc/concepts.hpp"
#include "posenc/positions.hpp"

namespace posenc::detail {

inline void check_attention_shape(const AttentionShape& s) {
  // No sequences, queries or keys is a valid (empty) call; heads and head_dim are parameters.
  require<ShapeMismatch>(s.batch >= 0 && s.q_len >= 0 && s.k_len >= 0 && s.heads >= 1 && s.kv_heads >= 1 &&
                             s.head_dim >= 1,
                         "attention needs batch, q_len, k_len >= 0 and heads, kv_heads, head_dim >= 1, got batch ",
                         s.batch, ", q_len ", s.q_len, ", k_len ", s.k_len, ", heads ", s.heads, ", kv_heads ",
                         s.kv_heads, ", head_dim ", s.head_dim);
  require<InvalidParameter>(s.heads % s.kv_heads == 0, "heads = ", s.heads, " is not a multiple of kv_heads = ",
                            s.kv_heads, " (grouped-query attention)");
}

/// Everything but tensor shapes: positions, key padding values, scale and the policy's hooks.
template <class P>
void check_attention_inputs(const AttentionShape& s, const Position* q_positions, const Position* k_positions,
                            const std::uint8_t* key_padding, const P& policy, const AttentionOptions& options) {
  check_attention_shape(s);
  check_positions({q_positions, static_cast<std::size_t>(s.batch * s.q_len)}, "q_positions");
  check_positions({k_positions, static_cast<std::size_t>(s.batch * s.k_len)}, "k_positions");
  if (key_padding != nullptr) {
    for (Index j = 0; j < s.batch * s.k_len; ++j) {
      require<InvalidParameter>(key_padding[j] <= 1, "key_padding[", j, "] = ", int{key_padding[j]},
                                " must be 0 (attend) or 1 (masked out)");
    }
  }
  if (options.scale) {
    // The kernels multiply in float: a double beyond FLT_MAX would become infinity there.
    require<InvalidParameter>(std::isfinite(static_cast<float>(*options.scale)),
                              "scale must be finite in float (|scale| <= 3.4e38), got ", *options.scale);
  }
  if constexpr (P::kQKRotation) {
    require<ShapeMismatch>(policy.head_dim() == s.head_dim, "the rotary policy has head_dim ", policy.head_dim(),
                           ", q and k have head_dim ", s.head_dim);
  }
  if constexpr (P::kScoreBias) policy.check_heads(s.heads);
}

/// The rope seq_len of a call: max over every query and key position (all sequences) + 1.
inline Position call_sequence_length(const AttentionShape& s, const Position* q_positions, const Position* k_positions) {
  return std::max(sequence_length({q_positions, static_cast<std::size_t>(s.batch * s.q_len)}),
                  sequence_length({k_positions, static_cast<std::size_t>(s.batch * s.k_len)}));
}

}  // namespace posenc::detail
