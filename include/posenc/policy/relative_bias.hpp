#pragma once
// T5 relative attention bias (Raffel et al. 2020): a learned scalar per (bucket, head), where the
// bucket is that of key - query (policy/relative_bucket.hpp); added to the scores. T5 itself
// uses no 1/sqrt(d) scaling (pass AttentionOptions{.scale = 1.0}).

#include <algorithm>
#include <limits>
#include <memory>
#include <vector>

#include "posenc/concepts.hpp"
#include "posenc/kernel/dispatch.hpp"
#include "posenc/policy/bias_matrix.hpp"
#include "posenc/policy/relative_bucket.hpp"
#include "posenc/positions.hpp"
#include "posenc/tensor.hpp"

namespace posenc {

class RelativeBias : public EncodingBase {
 public:
  static constexpr bool kScoreBias = true;
  static constexpr bool kRelativeScoreBias = true;  // a function of k - q only

  /// `table` [num_buckets, heads] (HF `relative_attention_bias.weight`) is copied once.
  RelativeBias(RelativeBucketConfig config, TensorRef<const float, 2> table)
      : buckets_(config),
        table_(std::make_shared<const Tensor<float, 2>>(copy_table(config, table))),
        by_offset_(bias_by_offset(buckets_, *table_)) {}

  const RelativeBuckets& buckets() const { return buckets_; }
  Index num_heads() const { return table_->dimension(1); }
  const Tensor<float, 2>& table() const { return *table_; }

  /// bias[h, i, j] = table[bucket(k_j - q_i), h], shape [heads, Lq, Lk].
  Tensor<float, 3> bias(PositionsRef q_positions, PositionsRef k_positions) const {
    return detail::bias_matrix(*this, num_heads(), q_positions, k_positions);
  }

  // --- score-bias hook ---
  /// Keys at k_first, k_first + 1, ...: the offsets k - q run consecutively, so the row is a
  /// saturated prefix, a contiguous slice of the head's bias by offset, and a saturated suffix.
  /// Adds each bias less the row's largest, which it returns for the softmax to subtract (in
  /// double): a trained table's values are small, but where they are large (|b| ~ 1e4, float
  /// spacing 1e-3) a score plus its bias would lose the digits the softmax needs; biases near the
  /// largest differ from it exactly (Sterbenz), and those far below it weigh ~0. (Attention redoes
  /// key by key, in double, the rows for which this largest is huge or belongs to a key they do
  /// not see; see weigh_tile_row.)
  double add_bias_row_consecutive(Index head, Position q_position, Position k_first, Index n, float* row) const {
    if (!by_offset_) {  // a bucket search per key
      const auto bias_of = [&](Index j) { return bucket_bias(head, k_first + j - q_position); };
      float largest = -std::numeric_limits<float>::infinity();
      for (Index j = 0; j < n; ++j) largest = std::max(largest, bias_of(j));
      for (Index j = 0; j < n; ++j) row[j] += bias_of(j) - largest;
      return largest;
    }
    const Position reach = buckets_.config().max_distance;
    const float* bias = by_offset_->data() + head * (2 * reach + 1) + reach;  // bias[offset], |offset| <= reach
    const Position first = k_first - q_position;                              // offset of row[0]
    const Index below = static_cast<Index>(std::clamp<Position>(-reach - first, 0, n));      // offsets < -reach
    const Index inside = static_cast<Index>(std::clamp<Position>(reach + 1 - first, 0, n));  // offsets <= reach
    const Index suffix = std::max(below, inside);
    // Every key past the reach on one side (most of a long causal context): one bias, nothing to add.
    if (below == n) return bias[-reach];
    if (inside == 0) return bias[reach];
    float largest = below > 0 ? bias[-reach] : -std::numeric_limits<float>::infinity();
    largest = kernel::largest_of(bias + first + below, inside - below, largest);
    if (suffix < n) largest = std::max(largest, bias[reach]);
    for (Index j = 0; j < below; ++j) row[j] += bias[-reach] - largest;
    for (Index j = below; j < inside; ++j) row[j] += bias[first + j] - largest;
    for (Index j = suffix; j < n; ++j) row[j] += bias[reach] - largest;
    return largest;
  }

  void check_heads(Index heads) const {
    detail::require<ShapeMismatch>(heads == num_heads(), "table has ", num_heads(),
                                   " columns (one per head), attention has ", heads, " heads");
  }
  template <class T>
  void add_bias_row(Index head, Position q_position, const Position* k_positions, Index n, T* row) const {
    if (by_offset_) {  // the usual case: a gather from the head's bias over clamped offsets
      const Position reach = buckets_.config().max_distance;
      const float* bias = by_offset_->data() + head * (2 * reach + 1) + reach;
      for (Index j = 0; j < n; ++j) {
        const Position offset = std::clamp(k_positions[j] - q_position, -reach, reach);
        row[j] += static_cast<T>(bias[offset]);
      }
      return;
    }
    for (Index j = 0; j < n; ++j) row[j] += static_cast<T>(bucket_bias(head, k_positions[j] - q_position));
  }

 private:
  /// The head's bias at offset k - q, through a bucket search (the path without by_offset_).
  float bucket_bias(Index head, Position offset) const {
    return table_->data()[buckets_.bucket(offset) * num_heads() + head];
  }
  static Tensor<float, 2> copy_table(const RelativeBucketConfig& config, TensorRef<const float, 2> table) {
    detail::require<ShapeMismatch>(table.present(), "table [num_buckets, heads] is required");
    detail::require_shape(table, "table", {config.num_buckets, -1}, "[num_buckets, heads]");
    detail::require<ShapeMismatch>(table.dim(1) >= 1, "table needs at least one head column");
    return Tensor<float, 2>(table.map());
  }

  // Buckets saturate at |offset| >= max_distance, so one head's bias as a function of the offset
  // k - q is a vector over [-max_distance, max_distance]: [heads, 2 * max_distance + 1]. Skipped
  // (bucket search per element) when max_distance is huge.
  static std::shared_ptr<const std::vector<float>> bias_by_offset(const RelativeBuckets& buckets,
                                                                  const Tensor<float, 2>& table) {
    const Position reach = buckets.config().max_distance;
    if (reach > kMaxOffsetTable) return nullptr;
    const Index heads = table.dimension(1);
    auto by_offset = std::make_shared<std::vector<float>>(static_cast<std::size_t>(heads * (2 * reach + 1)));
    for (Position offset = -reach; offset <= reach; ++offset) {
      const Index bucket = buckets.bucket(offset);
      for (Index h = 0; h < heads; ++h) (*by_offset)[static_cast<std::size_t>(h * (2 * reach + 1) + reach + offset)] = table(bucket, h);
    }
    return by_offset;
  }
  static constexpr Position kMaxOffsetTable = 1 << 16;

  RelativeBuckets buckets_;
  std::shared_ptr<const Tensor<float, 2>> table_;
  std::shared_ptr<const std::vector<float>> by_offset_;
};

}  // namespace posenc
