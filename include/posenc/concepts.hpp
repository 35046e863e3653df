#pragma once
// The three hook points at which a positional encoding touches attention, as C++20 concepts.
//
//   input embedding   x[t, :] += E(pos_t) before the Q/K/V projections   Sinusoidal, LearnedAbsolute
//   query/key rotation  q_t, k_t rotated by an angle of pos_t              RoPE
//   score bias        s[h, i, j] += b_h(pos_i, pos_j) inside the softmax    ALiBi, RelativeBias
//
// A policy derives from EncodingBase and switches on the hooks it implements (capability flags,
// as CUTLASS's epilogue fusion operations do). Attention calls each hook under `if constexpr`, so
// an unused hook costs nothing. The hook functions are "unchecked": attention validates every
// argument at its public boundary first, then calls them.

#include <concepts>
#include <span>
#include <type_traits>

#include "posenc/config.hpp"

namespace posenc {

/// Base of every policy: declares which hooks it implements (none by default).
struct EncodingBase {
  static constexpr bool kInputEmbedding = false;
  static constexpr bool kQKRotation = false;
  static constexpr bool kScoreBias = false;
};

/// x[t, :] += E(positions[t]) for x of shape [positions.size(), embedding_dim()].
template <class P>
concept InputEmbedding = requires(const P& policy, float* x, std::span<const Position> positions) {
  { policy.embedding_dim() } -> std::convertible_to<Index>;
  policy.check_embedding_positions(positions);  // throws PositionOutOfRange
  policy.add_embedding_unchecked(x, positions);
};

/// Rotation of query and key rows. `rotation(seq_len)` fixes the per-call state (frequencies);
/// `rotate_unchecked` rotates x [tokens, heads, head_dim()] in place, in float or double.
template <class P>
concept QKRotation = requires(const P& policy, Position seq_len, float* xf, double* xd, Index tokens,
                              Index heads, const Position* positions) {
  { policy.head_dim() } -> std::convertible_to<Index>;
  typename P::Rotation;
  { policy.rotation(seq_len) } -> std::same_as<typename P::Rotation>;
  policy.rotate_unchecked(xf, tokens, heads, positions, policy.rotation(seq_len));
  policy.rotate_unchecked(xd, tokens, heads, positions, policy.rotation(seq_len));
};

namespace detail {
/// Whether attention rotates the keys as well as the queries. A rotation policy may answer
/// `rotates_keys() == false` when the keys it is given are already rotated (a KV cache that
/// stores keys after RoPE, as HF transformers does; see RoPE::for_rotated_key_cache).
template <class P>
bool rotates_keys(const P& policy) {
  if constexpr (requires { { policy.rotates_keys() } -> std::convertible_to<bool>; }) {
    return policy.rotates_keys();
  } else {
    (void)policy;
    return true;
  }
}
}  // namespace detail

/// Additive score bias: row[j] += b_head(q_position, k_positions[j]) for j < n. Attention calls it
/// on double rows (ALiBi biases reach 1e9 at large positions, where float spacing is too coarse
/// for softmax); the float form serves callers that want float bias matrices.
template <class P>
concept ScoreBias = requires(const P& policy, Index head, Position q_position, const Position* k_positions,
                             Index n, double* row_d, float* row_f) {
  policy.check_heads(head);  // throws unless the policy serves exactly this many heads
  policy.add_bias_row(head, q_position, k_positions, n, row_d);
  policy.add_bias_row(head, q_position, k_positions, n, row_f);
};

/// Optional fast form of the score-bias hook for keys at consecutive positions k_first,
/// k_first + 1, ... (the usual KV cache): ALiBi becomes a ramp, T5 a contiguous slice. It adds
/// b_head(q, k_first + j) - offset to row[j] in float and returns the offset, a constant of the
/// call that keeps the float values small where the bias is large (softmax is invariant under it).
template <class P>
concept ConsecutiveScoreBias = ScoreBias<P> && requires(const P& policy, Index head, Position q_position,
                                                        Position k_first, Index n, float* row) {
  { policy.add_bias_row_consecutive(head, q_position, k_first, n, row) } -> std::convertible_to<double>;
};

/// A consecutive score bias that depends on k - q only, b(q + t, k + t) = b(q, k) (ALiBi, T5),
/// declared by `static constexpr bool kRelativeScoreBias = true`: attention then takes the bias of
/// a block of queries at consecutive positions from one consecutive row (of up to ~70 keys, all
/// positions within [0, kMaxPosition]). A class derived from ALiBi or RelativeBias whose bias is
/// not a function of k - q must declare kRelativeScoreBias = false.
template <class P>
concept RelativeScoreBias = P::kScoreBias && ConsecutiveScoreBias<P> && requires { requires P::kRelativeScoreBias; };

/// A complete policy: derives from EncodingBase and implements every hook it declares.
template <class P>
concept PositionalEncoding = std::derived_from<P, EncodingBase> &&
                             (!P::kInputEmbedding || InputEmbedding<P>) &&
                             (!P::kQKRotation || QKRotation<P>) && (!P::kScoreBias || ScoreBias<P>);

namespace detail {

/// Compile-time check with a message that names what is missing (used by attention and mha).
template <class P>
constexpr bool check_policy() {
  static_assert(std::is_base_of_v<EncodingBase, P>,
                "posenc: a policy must derive from posenc::EncodingBase and set kInputEmbedding, "
                "kQKRotation and kScoreBias for the hooks it implements");
  if constexpr (std::is_base_of_v<EncodingBase, P>) {
    static_assert(!P::kInputEmbedding || InputEmbedding<P>,
                  "posenc: the policy sets kInputEmbedding but lacks embedding_dim(), "
                  "check_embedding_positions(span<const Position>) or add_embedding_unchecked(float*, span)");
    static_assert(!P::kQKRotation || QKRotation<P>,
                  "posenc: the policy sets kQKRotation but lacks head_dim(), a Rotation type, "
                  "rotation(Position seq_len) or rotate_unchecked(T*, tokens, heads, positions, rotation)");
    static_assert(!P::kScoreBias || ScoreBias<P>,
                  "posenc: the policy sets kScoreBias but lacks check_heads(Index) or "
                  "add_bias_row(head, q_position, k_positions, n, T* row) for T = float and double");
  }
  return true;
}

}  // namespace detail
}  // namespace posenc
