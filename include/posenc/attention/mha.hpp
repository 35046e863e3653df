#pragma once
// Multi-head self-attention with projections, y = attention(x'Wq, x'Wk, x'Wv) Wo, where
// x' = x + E(positions) for input-embedding policies (Sinusoidal, LearnedAbsolute) and x' = x
// otherwise. Row-vector convention (y = x @ W, as HF Conv1D / GPT-2), no biases. Head h owns
// columns h*D .. h*D + D - 1 of each projection, D = d_model / heads.

#include <Eigen/Core>
#include <cstdint>
#include <span>

#include "posenc/attention/attention.hpp"
#include "posenc/concepts.hpp"
#include "posenc/tensor.hpp"

namespace posenc {
namespace detail {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// x [batch * tokens, d_model] (rows of `batch` sequences), output y of the same shape.
template <class P>
void multi_head_attention_unchecked(Index batch, Index tokens, Index d_model, Index heads, const float* x,
                                    const float* wq, const float* wk, const float* wv, const float* wo,
                                    const Position* positions, const std::uint8_t* key_padding, const P& policy,
                                    const AttentionOptions& options, float* y) {
  using ConstMap = Eigen::Map<const RowMatrix>;
  const Index rows = batch * tokens;
  RowMatrix embedded = ConstMap(x, rows, d_model);
  if constexpr (P::kInputEmbedding) {
    policy.add_embedding_unchecked(embedded.data(), {positions, static_cast<std::size_t>(rows)});
  }
  const RowMatrix q = embedded * ConstMap(wq, d_model, d_model);
  const RowMatrix k = embedded * ConstMap(wk, d_model, d_model);
  const RowMatrix v = embedded * ConstMap(wv, d_model, d_model);
  RowMatrix o(rows, d_model);
  const AttentionShape shape{batch, tokens, tokens, heads, heads, d_model / heads};
  attention_into(shape, q.data(), k.data(), v.data(), positions, positions, key_padding, policy, options, o.data());
  Eigen::Map<RowMatrix>(y, rows, d_model).noalias() = o * ConstMap(wo, d_model, d_model);
}

template <int Rank, class P>
void check_mha_inputs(const TensorRef<const float, Rank>& x, const TensorRef<const float, 2>& wq,
                      const TensorRef<const float, 2>& wk, const TensorRef<const float, 2>& wv,
                      const TensorRef<const float, 2>& wo, Index heads, const P& policy) {
  static_assert(check_policy<P>());
  require<ShapeMismatch>(x.present(), "x is required");
  const Index d_model = x.dim(Rank - 1);
  require<InvalidParameter>(heads >= 1 && d_model % heads == 0, "num_heads = ", heads,
                            " must be >= 1 and divide d_model = ", d_model);
  require_shape(wq, "wq", {d_model, d_model}, "[d_model, d_model]");
  require_shape(wk, "wk", {d_model, d_model}, "[d_model, d_model]");
  require_shape(wv, "wv", {d_model, d_model}, "[d_model, d_model]");
  require_shape(wo, "wo", {d_model, d_model}, "[d_model, d_model]");
  if constexpr (P::kInputEmbedding) {
    require<ShapeMismatch>(policy.embedding_dim() == d_model, "the embedding policy has dim ", policy.embedding_dim(),
                           ", x has d_model ", d_model);
  }
}

}  // namespace detail

/// Self-attention of one sequence: x [tokens, d_model], weights [d_model, d_model], positions
/// [tokens], optional key_padding [tokens]. Returns y [tokens, d_model].
template <class P>
Tensor<float, 2> multi_head_attention(TensorRef<const float, 2> x, TensorRef<const float, 2> wq,
                                      TensorRef<const float, 2> wk, TensorRef<const float, 2> wv,
                                      TensorRef<const float, 2> wo, PositionsRef positions, Index num_heads,
                                      const P& policy, const AttentionOptions& options = {},
                                      KeyPaddingRef key_padding = {}) {
  detail::check_mha_inputs(x, wq, wk, wv, wo, num_heads, policy);
  detail::require_shape(positions, "positions", {x.dim(0)}, "[tokens]");
  if (key_padding.data() != nullptr) detail::require_shape(key_padding, "key_padding", {x.dim(0)}, "[tokens]");
  detail::check_positions(detail::as_span(positions), "positions");
  if constexpr (P::kInputEmbedding) policy.check_embedding_positions(detail::as_span(positions));
  Tensor<float, 2> y(x.dim(0), x.dim(1));
  detail::multi_head_attention_unchecked(1, x.dim(0), x.dim(1), num_heads, x.data(), wq.data(), wk.data(), wv.data(),
                                         wo.data(), positions.data(), key_padding.data(), policy, options, y.data());
  return y;
}

/// Batched self-attention: x [B, tokens, d_model], positions and key_padding [B, tokens]; the
/// weights are shared. Returns y [B, tokens, d_model].
template <class P>
Tensor<float, 3> multi_head_attention(TensorRef<const float, 3> x, TensorRef<const float, 2> wq,
                                      TensorRef<const float, 2> wk, TensorRef<const float, 2> wv,
                                      TensorRef<const float, 2> wo, BatchPositionsRef positions, Index num_heads,
                                      const P& policy, const AttentionOptions& options = {},
                                      BatchKeyPaddingRef key_padding = {}) {
  detail::check_mha_inputs(x, wq, wk, wv, wo, num_heads, policy);
  detail::require_shape(positions, "positions", {x.dim(0), x.dim(1)}, "[batch, tokens]");
  if (key_padding.data() != nullptr) detail::require_shape(key_padding, "key_padding", {x.dim(0), x.dim(1)}, "[batch, tokens]");
  const std::span<const Position> all_positions(positions.data(), static_cast<std::size_t>(positions.size()));
  detail::check_positions(all_positions, "positions");
  if constexpr (P::kInputEmbedding) policy.check_embedding_positions(all_positions);
  Tensor<float, 3> y(x.dim(0), x.dim(1), x.dim(2));
  detail::multi_head_attention_unchecked(x.dim(0), x.dim(1), x.dim(2), num_heads, x.data(), wq.data(), wk.data(),
                                         wv.data(), wo.data(), positions.data(), key_padding.data(), policy, options,
                                         y.data());
  return y;
}

}  // namespace posenc
