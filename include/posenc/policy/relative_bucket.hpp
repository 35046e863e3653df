#pragma once
// T5 relative-position buckets (Raffel et al. 2020; HF `T5Attention._relative_position_bucket`,
// = mesh-tensorflow). For rel = key - query:
//
//   bidirectional: half the buckets for rel > 0; n = |rel|.   causal: n = max(-rel, 0).
//   n < max_exact (= buckets/2):  bucket n                    (exact small distances)
//   otherwise: max_exact + floor((nb - me) * ln(n/me) / ln(md/me)), capped at nb - 1 (log bins)
//
// HF evaluates the log line in float32, which misses exact integer boundaries at some configs.
// Here the floor is exact: bucket me + k starts at the smallest n with n^(nb-me) >= md^k me^(nb-me-k),
// found once per config (long double, confirmed with exact integers where the two sides are close),
// so a lookup is a search in a short table of integer thresholds.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "posenc/config.hpp"
#include "posenc/errors.hpp"
#include "posenc/positions.hpp"
#include "posenc/tensor.hpp"

namespace posenc {

struct RelativeBucketConfig {
  Index num_buckets = 32;
  Position max_distance = 128;
  bool bidirectional = true;  ///< false for decoder self-attention (future keys share bucket 0)
};

namespace detail {

/// Non-negative integer with 32-bit limbs: just enough arithmetic to compare products of powers.
class BigNatural {
 public:
  explicit BigNatural(std::uint32_t value) : limbs_{value} {}

  void multiply(std::uint64_t factor) {
    const auto low = static_cast<std::uint32_t>(factor);
    const auto high = static_cast<std::uint32_t>(factor >> 32);
    if (high == 0) {
      multiply_limb(low);
      return;
    }
    BigNatural upper = *this;  // this * factor = this * low + (this * high) * 2^32
    upper.multiply_limb(high);
    multiply_limb(low);
    add_shifted_limb(upper);
  }
  void multiply_power(std::uint64_t factor, Index exponent) {
    for (Index i = 0; i < exponent; ++i) multiply(factor);
  }
  friend bool operator>=(const BigNatural& a, const BigNatural& b) {
    if (a.limbs_.size() != b.limbs_.size()) return a.limbs_.size() > b.limbs_.size();
    return !std::lexicographical_compare(a.limbs_.rbegin(), a.limbs_.rend(), b.limbs_.rbegin(), b.limbs_.rend());
  }

 private:
  void multiply_limb(std::uint32_t factor) {
    std::uint64_t carry = 0;
    for (std::uint32_t& limb : limbs_) {
      const std::uint64_t product = static_cast<std::uint64_t>(limb) * factor + carry;  // < 2^64
      limb = static_cast<std::uint32_t>(product);
      carry = product >> 32;
    }
    if (carry != 0) limbs_.push_back(static_cast<std::uint32_t>(carry));
    trim();
  }
  // this += other * 2^32
  void add_shifted_limb(const BigNatural& other) {
    if (limbs_.size() < other.limbs_.size() + 1) limbs_.resize(other.limbs_.size() + 1, 0);
    std::uint64_t carry = 0;
    for (std::size_t i = 0; i < other.limbs_.size() || carry != 0; ++i) {
      if (i + 1 == limbs_.size()) limbs_.push_back(0);
      const std::uint64_t sum = std::uint64_t{limbs_[i + 1]} + (i < other.limbs_.size() ? other.limbs_[i] : 0) + carry;
      limbs_[i + 1] = static_cast<std::uint32_t>(sum);
      carry = sum >> 32;
    }
    trim();
  }
  void trim() {
    while (limbs_.size() > 1 && limbs_.back() == 0) limbs_.pop_back();
  }

  std::vector<std::uint32_t> limbs_;  // least significant first, no leading zero limb beyond the first
};

}  // namespace detail

class RelativeBuckets {
 public:
  explicit RelativeBuckets(RelativeBucketConfig config) : config_(config) {
    detail::require<InvalidParameter>(config.num_buckets >= 1, "num_buckets must be >= 1, got ", config.num_buckets);
    const Index per_direction = config.bidirectional ? config.num_buckets / 2 : config.num_buckets;
    max_exact_ = per_direction / 2;
    detail::require<InvalidParameter>(max_exact_ >= 1, "num_buckets = ", config.num_buckets,
                                      " leaves no exact bucket (needs num_buckets >= ", config.bidirectional ? 4 : 2,
                                      ")");
    detail::require<InvalidParameter>(config.max_distance > max_exact_, "max_distance must exceed the exact buckets (",
                                      max_exact_, "), got ", config.max_distance);
    const Index log_buckets = per_direction - max_exact_;
    // With max_distance beyond kMaxPosition the last log bins start past every distance two
    // positions can have: they get no threshold.
    for (Index k = 1; k < log_buckets && reaches(k, log_buckets, kMaxPosition); ++k) {
      thresholds_.push_back(first_distance_of(k, log_buckets));
    }
  }

  const RelativeBucketConfig& config() const { return config_; }

  /// buckets[i, j] = bucket(k_positions[j] - q_positions[i]), shape [Lq, Lk].
  Tensor<Index, 2> buckets(PositionsRef q_positions, PositionsRef k_positions) const {
    detail::check_positions(detail::as_span(q_positions), "q_positions");
    detail::check_positions(detail::as_span(k_positions), "k_positions");
    Tensor<Index, 2> out(q_positions.dim(0), k_positions.dim(0));
    for (Index i = 0; i < out.dimension(0); ++i) {
      for (Index j = 0; j < out.dimension(1); ++j) out(i, j) = bucket(k_positions.data()[j] - q_positions.data()[i]);
    }
    return out;
  }

  /// Bucket of rel = key_position - query_position. Any value: positions differ by at most
  /// kMaxPosition, but a caller may ask about larger distances directly.
  Index bucket(Position relative) const {
    // |relative|, saturated (-INT64_MIN overflows; no threshold lies beyond INT64_MAX)
    const Position magnitude = relative == std::numeric_limits<Position>::min() ? std::numeric_limits<Position>::max()
                               : relative < 0                                 ? -relative
                                                                              : relative;
    Index offset = 0;
    Position n = 0;
    if (config_.bidirectional) {
      if (relative > 0) offset = config_.num_buckets / 2;
      n = magnitude;
    } else {
      n = relative < 0 ? magnitude : 0;
    }
    if (n < max_exact_) return offset + n;
    auto log_bin = static_cast<Index>(std::upper_bound(thresholds_.begin(), thresholds_.end(), n) - thresholds_.begin());
    // Bins that start past kMaxPosition have no threshold (see the constructor): decided directly.
    const Index log_buckets = (config_.bidirectional ? config_.num_buckets / 2 : config_.num_buckets) - max_exact_;
    while (n > kMaxPosition && log_bin + 1 < log_buckets && reaches(log_bin + 1, log_buckets, n)) ++log_bin;
    return offset + max_exact_ + log_bin;
  }

 private:
  // Is floor(e * ln(n/me) / ln(md/me)) >= k, i.e. n^e >= md^k * me^(e-k)?
  bool reaches(Index k, Index e, Position n) const {
    const long double lhs = static_cast<long double>(e) * std::log(static_cast<long double>(n));
    const long double rhs = static_cast<long double>(k) * std::log(static_cast<long double>(config_.max_distance)) +
                            static_cast<long double>(e - k) * std::log(static_cast<long double>(max_exact_));
    const long double margin = 1e-12L * std::max<long double>(1.0L, std::fabs(rhs));
    if (lhs - rhs > margin) return true;
    if (rhs - lhs > margin) return false;
    detail::BigNatural left(1), right(1);  // too close for logs: decide exactly
    left.multiply_power(static_cast<std::uint64_t>(n), e);
    right.multiply_power(static_cast<std::uint64_t>(config_.max_distance), k);
    right.multiply_power(static_cast<std::uint64_t>(max_exact_), e - k);
    return left >= right;
  }

  // Smallest n >= max_exact with log bin >= k (k < e, so n <= max_distance); the caller has
  // checked that n <= kMaxPosition.
  Position first_distance_of(Index k, Index e) const {
    const long double me = static_cast<long double>(max_exact_);
    const long double md = static_cast<long double>(config_.max_distance);
    const long double estimate = std::ceil(me * std::pow(md / me, static_cast<long double>(k) / static_cast<long double>(e)));
    auto n = std::clamp(static_cast<Position>(estimate), static_cast<Position>(max_exact_),
                        std::min(config_.max_distance, kMaxPosition));
    while (n > max_exact_ && reaches(k, e, n - 1)) --n;
    while (!reaches(k, e, n)) ++n;
    return n;
  }

  RelativeBucketConfig config_;
  Index max_exact_ = 0;
  std::vector<Position> thresholds_;  // thresholds_[k-1] = first distance of log bin k
};

}  // namespace posenc
