#pragma once
// Learned absolute position embedding (GPT-2 `wpe`, BERT, OPT): a trained [max_len, dim] table,
// row p added to the input embedding of the token at position p.

#include <memory>
#include <span>

#include "posenc/concepts.hpp"
#include "posenc/positions.hpp"
#include "posenc/tensor.hpp"

namespace posenc {

class LearnedAbsolute : public EncodingBase {
 public:
  static constexpr bool kInputEmbedding = true;

  /// `table` [max_len, dim] is copied once; copies of the policy share it (immutable).
  explicit LearnedAbsolute(TensorRef<const float, 2> table)
      : table_(std::make_shared<const Tensor<float, 2>>(copy_table(table))) {}

  Index max_len() const { return table_->dimension(0); }
  Index dim() const { return table_->dimension(1); }
  const Tensor<float, 2>& table() const { return *table_; }

  /// GPT-2 decoding with a KV cache: x[l, :] += table[offset + l, :], x is [L, dim].
  void add_to(TensorRef<float, 2> x, Position offset) const {
    detail::require_shape(x, "x", {-1, dim()}, "[L, dim]");
    const Index tokens = x.dim(0);
    detail::require<PositionOutOfRange>(offset >= 0 && offset <= max_len() - tokens, "offset = ", offset, " with ",
                                        tokens, " tokens runs past the table (max_len ", max_len(), ")");
    add_rows(x.data(), tokens, [offset](Index l) { return offset + l; });
  }

  /// x[l, :] += table[positions[l], :], x is [positions, dim].
  void add_to(TensorRef<float, 2> x, PositionsRef positions) const {
    detail::require_shape(x, "x", {positions.dim(0), dim()}, "[positions, dim]");
    check_embedding_positions(detail::as_span(positions));
    add_embedding_unchecked(x.data(), detail::as_span(positions));
  }

  // --- input-embedding hook ---
  Index embedding_dim() const { return dim(); }
  void check_embedding_positions(std::span<const Position> positions) const {
    for (std::size_t l = 0; l < positions.size(); ++l) {
      detail::require<PositionOutOfRange>(positions[l] >= 0 && positions[l] < max_len(), "positions[", l,
                                          "] = ", positions[l], " is outside the table rows [0, ", max_len(), ")");
    }
  }
  void add_embedding_unchecked(float* x, std::span<const Position> positions) const {
    add_rows(x, static_cast<Index>(positions.size()), [positions](Index l) { return positions[static_cast<std::size_t>(l)]; });
  }

 private:
  static Tensor<float, 2> copy_table(TensorRef<const float, 2> table) {
    detail::require<ShapeMismatch>(table.present() && table.dim(0) >= 1 && table.dim(1) >= 1,
                                   "table must be a non-empty [max_len, dim] tensor, got ",
                                   detail::shape_string(table));
    return Tensor<float, 2>(table.map());
  }

  template <class RowOf>
  void add_rows(float* x, Index tokens, RowOf row_of) const {
    const Index d = dim();
    for (Index l = 0; l < tokens; ++l) {
      const float* POSENC_RESTRICT source = table_->data() + row_of(l) * d;
      float* POSENC_RESTRICT target = x + l * d;
      for (Index c = 0; c < d; ++c) target[c] += source[c];
    }
  }

  std::shared_ptr<const Tensor<float, 2>> table_;
};

}  // namespace posenc
