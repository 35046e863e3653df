#pragma once
// ALiBi (Press et al. 2022, "Train Short, Test Long"): no embedding at all; each head h adds
// -m_h * |i - j| to its attention scores. Slopes follow Press's `get_slopes` (= BLOOM
// `build_alibi_tensor`, MPT and ggml with max_bias 8): for H a power of two, m_k = 2^(-8k/H);
// otherwise the 2^floor(log2 H) geometric slopes followed by every other slope of twice as many.

#include <algorithm>
#include <bit>
#include <cmath>
#include <vector>

#include "posenc/concepts.hpp"
#include "posenc/policy/bias_matrix.hpp"
#include "posenc/kernel/dispatch.hpp"
#include "posenc/positions.hpp"
#include "posenc/tensor.hpp"

namespace posenc {

/// ALiBi slopes for `num_heads` heads, in head order.
inline std::vector<double> alibi_slopes(Index num_heads) {
  detail::require<InvalidParameter>(num_heads >= 1, "num_heads must be >= 1, got ", num_heads);
  const auto heads = static_cast<std::uint64_t>(num_heads);
  const double m = static_cast<double>(std::bit_floor(heads));  // 2^floor(log2 H)
  std::vector<double> slopes;
  slopes.reserve(heads);
  for (double k = 1; k <= m; ++k) slopes.push_back(std::exp2(-8.0 * k / m));
  for (double j = 1; j <= static_cast<double>(num_heads) - m; ++j) slopes.push_back(std::exp2(-4.0 * (2.0 * j - 1.0) / m));
  return slopes;
}

class ALiBi : public EncodingBase {
 public:
  static constexpr bool kScoreBias = true;
  static constexpr bool kRelativeScoreBias = true;  // a function of k - q only

  explicit ALiBi(Index num_heads) : slopes_(alibi_slopes(num_heads)) {}

  Index num_heads() const { return static_cast<Index>(slopes_.size()); }
  const std::vector<double>& slopes() const { return slopes_; }

  /// bias[h, i, j] = -slope_h * |q_positions[i] - k_positions[j]|, shape [heads, Lq, Lk].
  Tensor<float, 3> bias(PositionsRef q_positions, PositionsRef k_positions) const {
    return detail::bias_matrix(*this, num_heads(), q_positions, k_positions);
  }

  // --- score-bias hook ---
  void check_heads(Index heads) const {
    detail::require<InvalidParameter>(heads == num_heads(), "ALiBi was built for num_heads = ", num_heads(),
                                      ", attention has ", heads, " heads");
  }
  template <class T>
  void add_bias_row(Index head, Position q_position, const Position* k_positions, Index n, T* row) const {
    kernel::scalar::add_alibi_row(row, slopes_[static_cast<std::size_t>(head)], q_position, k_positions, n);
  }
  /// Keys at k_first, k_first + 1, ...: a ramp relative to the key nearest the query, e. With
  /// d0 = q - k_first and e = clamp(d0, 0, n - 1), |d0 - j| = |e - j| + |d0 - e| for every j < n,
  /// so row[j] += -slope |e - j| (small, exact in float) and the constant -slope |d0 - e| (up to
  /// -2^31 slope) is returned in double for the softmax to subtract.
  double add_bias_row_consecutive(Index head, Position q_position, Position k_first, Index n, float* row) const {
    const double slope = slopes_[static_cast<std::size_t>(head)];
    const Position d0 = q_position - k_first;
    const Position nearest = std::clamp<Position>(d0, 0, n - 1);
    kernel::add_alibi_ramp(row, slope, nearest, n);
    return -slope * static_cast<double>(d0 >= nearest ? d0 - nearest : nearest - d0);
  }

 private:
  std::vector<double> slopes_;
};

}  // namespace posenc
