#pragma once
// attention(): softmax(scale * q k^T + bias) v with a positional-encoding policy's hooks.
//
//   q [tokens_q, heads, head_dim], k and v [tokens_k, kv_heads, head_dim]   (or with a leading
//   batch dim), positions per token. Grouped-query attention: head h reads kv head
//   h / (heads / kv_heads), as HF repeat_kv. Causality is by position value (k_pos <= q_pos), so a
//   KV-cache decode step, chunked prefill and left padding are all just positions. A row that sees
//   no key yields zeros.

#include <algorithm>
#include <bit>
#include <cstdint>

#include "posenc/attention/checks.hpp"
#include "posenc/attention/options.hpp"
#include "posenc/attention/reference.hpp"
#include "posenc/attention/tiled.hpp"
#include "posenc/concepts.hpp"
#include "posenc/tensor.hpp"

namespace posenc {

namespace detail {
/// Whether x[0, n) holds no infinity and no NaN (all exponent bits set): integer tests, which
/// compilers vectorise.
inline bool all_finite(const float* x, Index n) {
  constexpr std::uint32_t kExponent = 0x7f800000u;
  std::uint32_t non_finite = 0;
  for (Index i = 0; i < n; ++i) {
    non_finite |= static_cast<std::uint32_t>((std::bit_cast<std::uint32_t>(x[i]) & kExponent) == kExponent);
  }
  return non_finite == 0;
}
}  // namespace detail

/// Raw-pointer form for engines without Eigen: every buffer dense row-major with the sizes of
/// `shape` (see AttentionShape); `key_padding` may be null; `out` has q's shape and overlaps none
/// of q, k, v (the kernels read them after writing parts of out).
template <class P>
void attention_into(const AttentionShape& shape, const float* q, const float* k, const float* v,
                    const Position* q_positions, const Position* k_positions, const std::uint8_t* key_padding,
                    const P& policy, const AttentionOptions& options, float* out) {
  static_assert(detail::check_policy<P>());
  detail::check_attention_inputs(shape, q_positions, k_positions, key_padding, policy, options);
  const TensorRef<float, 4> out_ref(out, {shape.batch, shape.q_len, shape.heads, shape.head_dim});
  detail::require_disjoint(out_ref, "out", TensorRef<const float, 4>(q, out_ref.dims()), "q");
  const std::array<Index, 4> kv_dims = {shape.batch, shape.k_len, shape.kv_heads, shape.head_dim};
  detail::require_disjoint(out_ref, "out", TensorRef<const float, 4>(k, kv_dims), "k");
  detail::require_disjoint(out_ref, "out", TensorRef<const float, 4>(v, kv_dims), "v");
  if (out_ref.size() == 0) return;  // no sequences or no queries
  if (shape.k_len == 0) {           // no keys: every row sees none and is zeros
    std::fill(out, out + out_ref.size(), 0.0f);
    return;
  }
#if defined(POSENC_HAS_VECTOR_KERNELS)
  if (options.kernel == AttentionKernel::kTiled) {
    detail::tiled_attention_unchecked(shape, q, k, v, q_positions, k_positions, key_padding, policy, options, out);
    // The float kernels overflow where only inputs near float's range (~3.4e38) take them: a score
    // q.k, or a row's unnormalised sum of weighted values (up to k_len * max |v|), beyond it. The
    // exact result is finite all the same, so such a call is redone in double by the reference;
    // not one whose inputs hold an inf or NaN already (its result is NaN either way).
    if (detail::all_finite(out, out_ref.size())) return;
    const Index kv_size = shape.batch * shape.k_len * shape.kv_heads * shape.head_dim;
    if (!detail::all_finite(q, out_ref.size()) || !detail::all_finite(k, kv_size) || !detail::all_finite(v, kv_size)) {
      return;
    }
  }
#endif
  detail::reference_attention_unchecked(shape, q, k, v, q_positions, k_positions, key_padding, policy, options, out);
}

/// Frees the buffers the calling thread keeps between attention calls: the packed K and V of the
/// prefill schedule (2 * k_len * head_dim floats of its largest call) and its per-worker tiles.
inline void release_attention_buffers() {
#if defined(POSENC_HAS_VECTOR_KERNELS)
  detail::thread_prefill_buffers() = {};
#endif
}

namespace detail {

/// Sizes of q, k, v (rank 3, or rank 4 with a leading batch dim), checked against each other.
template <int Rank>
AttentionShape attention_shape_of(const TensorRef<const float, Rank>& q, const TensorRef<const float, Rank>& k,
                                  const TensorRef<const float, Rank>& v) {
  constexpr int b = Rank - 3;  // index of the token dim
  const char* layout = Rank == 3 ? "[tokens, kv_heads, head_dim]" : "[batch, tokens, kv_heads, head_dim]";
  require<ShapeMismatch>(q.present(), "q is required");
  AttentionShape s;
  s.batch = Rank == 4 ? q.dim(0) : 1;
  s.q_len = q.dim(b);
  s.heads = q.dim(b + 1);
  s.head_dim = q.dim(b + 2);
  require<ShapeMismatch>(k.present(), "k is required");
  s.k_len = k.dim(b);
  s.kv_heads = k.dim(b + 1);
  std::array<Index, Rank> want{};
  if constexpr (Rank == 4) want[0] = s.batch;
  want[b] = -1;
  want[b + 1] = -1;
  want[b + 2] = s.head_dim;
  require_shape(k, "k", want, layout);
  require_shape(v, "v", k.dims(), layout);
  return s;
}

}  // namespace detail

/// Attention over one sequence: q [Lq, heads, D], k and v [Lk, kv_heads, D], positions [Lq] and
/// [Lk], optional key_padding [Lk] (1 = masked out). Returns [Lq, heads, D].
template <class P>
Tensor<float, 3> attention(TensorRef<const float, 3> q, TensorRef<const float, 3> k, TensorRef<const float, 3> v,
                           PositionsRef q_positions, PositionsRef k_positions, const P& policy,
                           const AttentionOptions& options = {}, KeyPaddingRef key_padding = {}) {
  const AttentionShape s = detail::attention_shape_of(q, k, v);
  detail::require_shape(q_positions, "q_positions", {s.q_len}, "[q_tokens]");
  detail::require_shape(k_positions, "k_positions", {s.k_len}, "[k_tokens]");
  if (key_padding.data() != nullptr) detail::require_shape(key_padding, "key_padding", {s.k_len}, "[k_tokens]");
  Tensor<float, 3> out(s.q_len, s.heads, s.head_dim);
  attention_into(s, q.data(), k.data(), v.data(), q_positions.data(), k_positions.data(), key_padding.data(), policy,
                 options, out.data());
  return out;
}

/// Batched attention: q [B, Lq, heads, D], k and v [B, Lk, kv_heads, D], positions [B, Lq] and
/// [B, Lk], optional key_padding [B, Lk]. Each sequence keeps its own positions; one RoPE seq_len
/// serves the whole call (as HF's dynamic_rope_update). Returns [B, Lq, heads, D].
template <class P>
Tensor<float, 4> attention(TensorRef<const float, 4> q, TensorRef<const float, 4> k, TensorRef<const float, 4> v,
                           BatchPositionsRef q_positions, BatchPositionsRef k_positions, const P& policy,
                           const AttentionOptions& options = {}, BatchKeyPaddingRef key_padding = {}) {
  const AttentionShape s = detail::attention_shape_of(q, k, v);
  detail::require_shape(q_positions, "q_positions", {s.batch, s.q_len}, "[batch, q_tokens]");
  detail::require_shape(k_positions, "k_positions", {s.batch, s.k_len}, "[batch, k_tokens]");
  if (key_padding.data() != nullptr) {
    detail::require_shape(key_padding, "key_padding", {s.batch, s.k_len}, "[batch, k_tokens]");
  }
  Tensor<float, 4> out(s.batch, s.q_len, s.heads, s.head_dim);
  attention_into(s, q.data(), k.data(), v.data(), q_positions.data(), k_positions.data(), key_padding.data(), policy,
                 options, out.data());
  return out;
}

}  // namespace posenc
