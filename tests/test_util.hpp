#pragma once
// Shared helpers of the posenc tests: random tensors, comparisons, error checks, and the
// independent reference implementations (long double / double, written from FORMAT.md §4 and the
// papers, not from the library) that the tests compare the library against.

#include <algorithm>
#include <array>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <numbers>
#include <optional>
#include <posenc/posenc.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace testutil {

using posenc::Index;
using posenc::Position;
template <int Rank>
using FTensor = posenc::Tensor<float, Rank>;
template <int Rank>
using DTensor = posenc::Tensor<double, Rank>;

// ---------------------------------------------------------------------------------------------
// Data

/// Uniform values in [lo, hi), reproducible from the seed.
template <int Rank>
FTensor<Rank> random_tensor(std::mt19937& rng, const std::array<Index, Rank>& dims, float lo = -1.0f, float hi = 1.0f) {
  FTensor<Rank> t(dims);
  std::uniform_real_distribution<float> dist(lo, hi);
  for (Index i = 0; i < t.size(); ++i) t.data()[i] = dist(rng);
  return t;
}

/// `count` floats on 64-byte-aligned memory (the widest vector's alignment), set to `fill`.
class AlignedFloats {
 public:
  explicit AlignedFloats(Index count, float fill = 0.0f)
      : data_(static_cast<float*>(std::aligned_alloc(64, static_cast<std::size_t>((count * 4 + 63) / 64 * 64)))),
        count_(count) {
    if (!data_) throw std::bad_alloc();
    std::fill(data_.get(), data_.get() + count, fill);
  }
  float* data() const { return data_.get(); }
  Index size() const { return count_; }
  std::vector<float> values() const { return std::vector<float>(data_.get(), data_.get() + count_); }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> data_;
  Index count_;
};

inline std::vector<Position> iota_positions(Index n, Position start = 0) {
  std::vector<Position> p(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) p[static_cast<std::size_t>(i)] = start + i;
  return p;
}

template <int Rank>
DTensor<Rank> to_double(const FTensor<Rank>& t) {
  DTensor<Rank> d(t.dimensions());
  for (Index i = 0; i < t.size(); ++i) d.data()[i] = static_cast<double>(t.data()[i]);
  return d;
}

// ---------------------------------------------------------------------------------------------
// Comparison

/// Every element of `got` within abs + rel*|want| of `want` (same number of elements); on failure
/// reports the worst element.
template <class A, class B>
void check_close(const A& got, const B& want, double abs, double rel = 0.0) {
  REQUIRE(static_cast<Index>(got.size()) == static_cast<Index>(want.size()));
  double worst_excess = -1.0;
  Index worst = -1;
  for (Index i = 0; i < static_cast<Index>(got.size()); ++i) {
    const double g = static_cast<double>(got.data()[i]);
    const double w = static_cast<double>(want.data()[i]);
    const double excess = std::fabs(g - w) - (abs + rel * std::fabs(w));
    if (!(excess <= 0.0) && (worst < 0 || excess > worst_excess || std::isnan(excess))) {
      worst_excess = excess;
      worst = i;
    }
  }
  if (worst >= 0) {
    std::ostringstream msg;
    msg.precision(10);
    msg << "worst element " << worst << ": got " << static_cast<double>(got.data()[worst]) << ", want "
        << static_cast<double>(want.data()[worst]) << " (abs " << abs << ", rel " << rel << ")";
    INFO(msg.str());
    CHECK(worst < 0);
  } else {
    SUCCEED();
  }
}

/// Largest |a - b| over all elements; infinity where a NaN meets anything (std::max would drop it)
/// or the sizes differ.
template <class A, class B>
double max_abs_diff(const A& a, const B& b) {
  if (static_cast<Index>(a.size()) != static_cast<Index>(b.size())) return std::numeric_limits<double>::infinity();
  double m = 0.0;
  for (Index i = 0; i < static_cast<Index>(a.size()); ++i) {
    const double x = static_cast<double>(a.data()[i]), y = static_cast<double>(b.data()[i]);
    if (x == y) continue;  // also equal infinities
    const double diff = std::fabs(x - y);
    if (std::isnan(diff)) return std::numeric_limits<double>::infinity();  // a NaN on either side: no match
    m = std::max(m, diff);
  }
  return m;
}

/// max_abs_diff when every value of a and b is finite, else -1: for checks that two results
/// differ, where a NaN or an infinity must not pass as "different".
template <class A, class B>
double finite_max_abs_diff(const A& a, const B& b) {
  for (Index i = 0; i < static_cast<Index>(a.size()); ++i) {
    if (!std::isfinite(static_cast<double>(a.data()[i]))) return -1.0;
  }
  for (Index i = 0; i < static_cast<Index>(b.size()); ++i) {
    if (!std::isfinite(static_cast<double>(b.data()[i]))) return -1.0;
  }
  return max_abs_diff(a, b);
}

/// Evaluates the expression once; requires that it throws `Type` (caught as such) with a message
/// that contains `name`.
#define POSENC_REQUIRE_THROWS_NAMING(Type, name, ...)             \
  do {                                                            \
    bool posenc_caught_ = false;                                  \
    std::string posenc_message_;                                  \
    INFO("expression: " #__VA_ARGS__);                            \
    try {                                                         \
      (void)(__VA_ARGS__);                                        \
    } catch (const Type& posenc_error_) {                         \
      posenc_caught_ = true;                                      \
      posenc_message_ = posenc_error_.what();                     \
    }                                                             \
    REQUIRE(posenc_caught_);                                      \
    CHECK_THAT(posenc_message_, Catch::Matchers::Contains(name)); \
  } while (false)

// ---------------------------------------------------------------------------------------------
// RoPE reference (FORMAT.md §4.3), long double

struct RefFrequencies {
  std::vector<long double> inv_freq;
  long double attention_factor = 1.0L;
};

inline std::vector<long double> ref_default_inv_freq(long double base, Index r) {
  std::vector<long double> f;
  for (Index i = 0; i < r / 2; ++i) {
    f.push_back(std::pow(base, -2.0L * static_cast<long double>(i) / static_cast<long double>(r)));
  }
  return f;
}

/// The frequencies of FORMAT.md §4.3 for `seq_len` = max(positions) + 1, written from the table
/// there (HF modeling_rope_utils formulas), independently of the library.
inline RefFrequencies ref_frequencies(const posenc::RopeScaling& s, long double base, Index r, Position seq_len) {
  using T = posenc::RopeScalingType;
  const long double rd = static_cast<long double>(r);
  const long double orig = static_cast<long double>(s.original_max_position_embeddings);
  const long double factor = static_cast<long double>(s.factor);
  const long double pi = std::numbers::pi_v<long double>;
  RefFrequencies out;
  out.inv_freq = ref_default_inv_freq(base, r);
  switch (s.type) {
    case T::kNone:
      break;
    case T::kLinear:
      for (auto& f : out.inv_freq) f /= factor;
      break;
    case T::kNtk:
      out.inv_freq = ref_default_inv_freq(base * std::pow(factor, rd / (rd - 2.0L)), r);
      break;
    case T::kDynamic:
      if (static_cast<long double>(seq_len) > orig) {
        const long double b =
            base * std::pow(factor * static_cast<long double>(seq_len) / orig - (factor - 1.0L), rd / (rd - 2.0L));
        out.inv_freq = ref_default_inv_freq(b, r);
      }
      break;
    case T::kYarn: {
      // HF find_correction_dim / find_correction_range / linear_ramp_factor.
      auto corr = [&](long double beta) { return rd * std::log(orig / (beta * 2.0L * pi)) / (2.0L * std::log(base)); };
      long double low = corr(static_cast<long double>(s.beta_fast));
      long double high = corr(static_cast<long double>(s.beta_slow));
      if (s.truncate) {
        low = std::floor(low);
        high = std::ceil(high);
      }
      low = std::max(low, 0.0L);
      high = std::min(high, rd - 1.0L);
      if (low == high) high += 0.001L;
      for (std::size_t i = 0; i < out.inv_freq.size(); ++i) {
        const long double linear = (static_cast<long double>(i) - low) / (high - low);
        const long double ramp = std::min(std::max(linear, 0.0L), 1.0L);
        const long double extrapolation_factor = 1.0L - ramp;
        const long double extrapolated = out.inv_freq[i];
        const long double interpolated = extrapolated / factor;
        out.inv_freq[i] = interpolated * (1.0L - extrapolation_factor) + extrapolated * extrapolation_factor;
      }
      auto m = [](long double scale, long double k) {
        return scale <= 1.0L ? 1.0L : 0.1L * k * std::log(scale) + 1.0L;
      };
      if (s.attention_factor) {
        out.attention_factor = static_cast<long double>(*s.attention_factor);
      } else if (s.mscale && s.mscale_all_dim && *s.mscale != 0.0 && *s.mscale_all_dim != 0.0) {
        out.attention_factor =
            m(factor, static_cast<long double>(*s.mscale)) / m(factor, static_cast<long double>(*s.mscale_all_dim));
      } else {
        out.attention_factor = m(factor, 1.0L);
      }
      break;
    }
    case T::kLlama3: {
      const long double low_wl = orig / static_cast<long double>(s.low_freq_factor);
      const long double high_wl = orig / static_cast<long double>(s.high_freq_factor);
      for (auto& f : out.inv_freq) {
        const long double wavelength = 2.0L * pi / f;
        if (wavelength < high_wl) continue;
        if (wavelength > low_wl) {
          f = f / factor;
        } else {
          const long double smooth = (orig / wavelength - static_cast<long double>(s.low_freq_factor)) /
                                     static_cast<long double>(s.high_freq_factor - s.low_freq_factor);
          f = (1.0L - smooth) * f / factor + smooth * f;
        }
      }
      break;
    }
    case T::kLongRope: {
      const bool long_context = static_cast<long double>(seq_len) > orig;
      const auto& ext = long_context ? s.long_factor : s.short_factor;
      for (std::size_t i = 0; i < out.inv_freq.size(); ++i) {
        out.inv_freq[i] =
            1.0L / (static_cast<long double>(ext[i]) * std::pow(base, 2.0L * static_cast<long double>(i) / rd));
      }
      if (s.attention_factor) {
        out.attention_factor = static_cast<long double>(*s.attention_factor);
      } else if (factor > 1.0L) {
        out.attention_factor = std::sqrt(1.0L + std::log(factor) / std::log(orig));
      }
      break;
    }
  }
  return out;
}

/// y = RoPE(x) for x [tokens, heads, head_dim], pairs (i, i + r/2) or (2i, 2i + 1), in long double.
inline DTensor<3> ref_rope(const DTensor<3>& x, const std::vector<Position>& positions, const RefFrequencies& f,
                           bool interleaved) {
  DTensor<3> y = x;
  const Index pairs = static_cast<Index>(f.inv_freq.size());
  for (Index t = 0; t < x.dimension(0); ++t) {
    for (Index i = 0; i < pairs; ++i) {
      const long double angle =
          static_cast<long double>(positions[static_cast<std::size_t>(t)]) * f.inv_freq[static_cast<std::size_t>(i)];
      const long double c = std::cos(angle);
      const long double s = std::sin(angle);
      const Index ia = interleaved ? 2 * i : i;
      const Index ib = interleaved ? 2 * i + 1 : i + pairs;
      for (Index h = 0; h < x.dimension(1); ++h) {
        const long double a = x(t, h, ia);
        const long double b = x(t, h, ib);
        y(t, h, ia) = static_cast<double>(f.attention_factor * (a * c - b * s));
        y(t, h, ib) = static_cast<double>(f.attention_factor * (b * c + a * s));
      }
    }
  }
  return y;
}

/// Every scaling type, valid for the given rotary_dim (> 2), with parameters that make each one
/// differ from the default frequencies for seq_len around 64.
inline std::vector<std::pair<std::string, posenc::RopeScaling>> all_scalings(Index rotary_dim) {
  using posenc::RopeScaling;
  std::vector<std::pair<std::string, RopeScaling>> out;
  out.emplace_back("none", RopeScaling::none());
  out.emplace_back("linear", RopeScaling::linear(4.0));
  out.emplace_back("ntk", RopeScaling::ntk(3.0));
  out.emplace_back("dynamic", RopeScaling::dynamic(4.0, 16));
  out.emplace_back("yarn", RopeScaling::yarn(8.0, 32));
  out.emplace_back("llama3", RopeScaling::llama3(8.0, 1.0, 4.0, 64));
  std::vector<double> short_factor, long_factor;
  for (Index i = 0; i < rotary_dim / 2; ++i) {
    short_factor.push_back(1.0 + 0.05 * static_cast<double>(i));
    long_factor.push_back(1.5 + 0.75 * static_cast<double>(i));
  }
  out.emplace_back("longrope", RopeScaling::longrope(short_factor, long_factor, 16, 4.0));
  return out;
}

inline posenc::RoPE make_rope(Index head_dim, std::optional<Index> rotary_dim, posenc::RopeLayout layout,
                              posenc::RopeScaling scaling = posenc::RopeScaling::none(), double base = 10000.0) {
  posenc::RopeConfig config;
  config.head_dim = head_dim;
  config.rotary_dim = rotary_dim;
  config.base = base;
  config.layout = layout;
  config.scaling = std::move(scaling);
  return posenc::RoPE(config);
}

// ---------------------------------------------------------------------------------------------
// ALiBi reference: Press et al. `get_slopes` (the paper's reference code, recursive form).

inline std::vector<double> press_slopes(Index n) {
  auto power_of_2 = [](Index m) {
    const double start = std::pow(2.0, -std::pow(2.0, -(std::log2(static_cast<double>(m)) - 3.0)));
    std::vector<double> s;
    for (Index i = 0; i < m; ++i) s.push_back(start * std::pow(start, static_cast<double>(i)));
    return s;
  };
  const double l = std::log2(static_cast<double>(n));
  if (l == std::floor(l)) return power_of_2(n);
  const Index closest = Index{1} << static_cast<int>(std::floor(l));
  std::vector<double> s = power_of_2(closest);
  const std::vector<double> twice = press_slopes(2 * closest);
  for (std::size_t i = 0; i < twice.size() && static_cast<Index>(s.size()) < n; i += 2) s.push_back(twice[i]);
  return s;
}

// ---------------------------------------------------------------------------------------------
// T5 bucket reference: the exact floor of FORMAT.md §4.6 with arbitrary-precision integers.

/// Non-negative integer in base 10^9 (least significant limb first).
class Decimal {
 public:
  explicit Decimal(std::uint64_t v) {
    do {
      limbs_.push_back(static_cast<std::uint32_t>(v % kBase));
      v /= kBase;
    } while (v != 0);
  }
  Decimal& operator*=(std::uint64_t f) {
    // Schoolbook over the base-10^9 digits of f (at most 3): limb * digit + partial + carry
    // < 10^18 + 10^9 + 10^9 + 2 < 2^64.
    std::vector<std::uint32_t> product(limbs_.size() + 3, 0);
    for (std::size_t i = 0; f != 0; ++i, f /= kBase) {
      const std::uint64_t digit = f % kBase;
      std::uint64_t carry = 0;
      for (std::size_t j = 0; j < limbs_.size() || carry != 0; ++j) {
        const std::uint64_t p = (j < limbs_.size() ? limbs_[j] * digit : 0) + product[i + j] + carry;
        product[i + j] = static_cast<std::uint32_t>(p % kBase);
        carry = p / kBase;
      }
    }
    while (product.size() > 1 && product.back() == 0) product.pop_back();
    limbs_ = std::move(product);
    return *this;
  }
  friend int compare(const Decimal& a, const Decimal& b) {
    if (a.limbs_.size() != b.limbs_.size()) return a.limbs_.size() < b.limbs_.size() ? -1 : 1;
    for (std::size_t i = a.limbs_.size(); i-- > 0;) {
      if (a.limbs_[i] != b.limbs_[i]) return a.limbs_[i] < b.limbs_[i] ? -1 : 1;
    }
    return 0;
  }

 private:
  static constexpr std::uint64_t kBase = 1000000000;
  std::vector<std::uint32_t> limbs_;
};

inline Decimal power(std::uint64_t base, Index exponent) {
  Decimal d(1);
  for (Index i = 0; i < exponent; ++i) d *= base;
  return d;
}

/// T5 buckets of rel = key - query (FORMAT.md §4.6, HF `_relative_position_bucket`), with the log
/// bin decided exactly: the largest k (capped at nb - 1 - me) with md^k * me^(e-k) <= n^e, e = nb - me.
class RefT5Buckets {
 public:
  RefT5Buckets(Index num_buckets, Position max_distance, bool bidirectional)
      : bidirectional_(bidirectional), nb_(bidirectional ? num_buckets / 2 : num_buckets), me_(nb_ / 2) {
    const Index e = nb_ - me_;
    for (Index k = 1; k <= nb_ - 1 - me_; ++k) {
      Decimal rhs = power(static_cast<std::uint64_t>(max_distance), k);
      for (Index i = 0; i < e - k; ++i) rhs *= static_cast<std::uint64_t>(me_);
      rhs_.push_back(rhs);
    }
  }

  Index bucket(Position rel) const {
    Index ret = 0;
    Position n = 0;
    if (bidirectional_) {
      if (rel > 0) ret += nb_;
      n = rel < 0 ? -rel : rel;
    } else {
      n = std::max<Position>(-rel, 0);
    }
    if (n < me_) return ret + n;
    const Decimal lhs = power(static_cast<std::uint64_t>(n), nb_ - me_);
    Index k = 0;
    while (k < static_cast<Index>(rhs_.size()) && compare(rhs_[static_cast<std::size_t>(k)], lhs) <= 0) ++k;
    return ret + me_ + k;
  }

 private:
  bool bidirectional_;
  Index nb_;
  Index me_;
  std::vector<Decimal> rhs_;  // rhs_[k - 1] = md^k * me^(e - k)
};

// ---------------------------------------------------------------------------------------------
// Attention reference (FORMAT.md §4.8): scores, softmax and weighted sum in double.

using BiasFunction = std::function<double(Index head, Position q_position, Position k_position)>;

/// q [Lq, H, D], k and v [Lk, Hkv, D] (already rotated if the encoding rotates); head h reads
/// kv head h / (H / Hkv); bias may be empty; padding may be empty (no mask).
inline DTensor<3> naive_attention(const DTensor<3>& q, const DTensor<3>& k, const DTensor<3>& v,
                                  const std::vector<Position>& q_positions, const std::vector<Position>& k_positions,
                                  bool causal, double scale, const BiasFunction& bias = {},
                                  const std::vector<std::uint8_t>& padding = {}) {
  const Index lq = q.dimension(0), heads = q.dimension(1), d = q.dimension(2);
  const Index lk = k.dimension(0), kv_heads = k.dimension(1);
  DTensor<3> out(lq, heads, d);
  out.setZero();
  for (Index h = 0; h < heads; ++h) {
    const Index g = h / (heads / kv_heads);
    for (Index i = 0; i < lq; ++i) {
      std::vector<double> logits;
      std::vector<Index> keys;
      for (Index j = 0; j < lk; ++j) {
        const bool masked =
            (causal && k_positions[static_cast<std::size_t>(j)] > q_positions[static_cast<std::size_t>(i)]) ||
            (!padding.empty() && padding[static_cast<std::size_t>(j)] != 0);
        if (masked) continue;
        double s = 0.0;
        for (Index c = 0; c < d; ++c) s += q(i, h, c) * k(j, g, c);
        s *= scale;
        if (bias) s += bias(h, q_positions[static_cast<std::size_t>(i)], k_positions[static_cast<std::size_t>(j)]);
        logits.push_back(s);
        keys.push_back(j);
      }
      if (keys.empty()) continue;
      const double mx = *std::max_element(logits.begin(), logits.end());
      double z = 0.0;
      for (double& s : logits) z += (s = std::exp(s - mx));
      for (std::size_t n = 0; n < keys.size(); ++n) {
        for (Index c = 0; c < d; ++c) out(i, h, c) += logits[n] / z * v(keys[n], g, c);
      }
    }
  }
  return out;
}

/// What an encoding does to attention, written independently of the library: an optional rotation
/// of q and k (given the call's seq_len) and an optional score bias.
struct RefEncoding {
  std::string name;
  std::function<void(DTensor<3>& q, DTensor<3>& k, const std::vector<Position>& q_positions,
                     const std::vector<Position>& k_positions, Position seq_len)>
      rotate;
  BiasFunction bias;
};

inline Position max_plus_one(const std::vector<Position>& a, const std::vector<Position>& b) {
  Position m = -1;
  for (Position p : a) m = std::max(m, p);
  for (Position p : b) m = std::max(m, p);
  return m + 1;
}

/// naive_attention after the encoding's rotation; seq_len 0: derived from these positions.
inline DTensor<3> reference_attention(const RefEncoding& encoding, DTensor<3> q, DTensor<3> k, const DTensor<3>& v,
                                      const std::vector<Position>& q_positions,
                                      const std::vector<Position>& k_positions, bool causal, double scale,
                                      const std::vector<std::uint8_t>& padding = {}, Position seq_len = 0) {
  if (encoding.rotate) {
    encoding.rotate(q, k, q_positions, k_positions, seq_len > 0 ? seq_len : max_plus_one(q_positions, k_positions));
  }
  return naive_attention(q, k, v, q_positions, k_positions, causal, scale, encoding.bias, padding);
}
inline DTensor<3> reference_attention(const RefEncoding& encoding, const FTensor<3>& q, const FTensor<3>& k,
                                      const FTensor<3>& v, const std::vector<Position>& q_positions,
                                      const std::vector<Position>& k_positions, bool causal, double scale,
                                      const std::vector<std::uint8_t>& padding = {}, Position seq_len = 0) {
  return reference_attention(encoding, to_double(q), to_double(k), to_double(v), q_positions, k_positions, causal,
                             scale, padding, seq_len);
}

inline RefEncoding ref_none() { return {"none", {}, {}}; }

inline RefEncoding ref_rope_encoding(const posenc::RopeScaling& scaling, long double base, Index rotary_dim,
                                     bool interleaved) {
  RefEncoding e;
  e.name = "rope";
  e.rotate = [=](DTensor<3>& q, DTensor<3>& k, const std::vector<Position>& qp, const std::vector<Position>& kp,
                 Position seq_len) {
    const RefFrequencies f = ref_frequencies(scaling, base, rotary_dim, seq_len);
    q = ref_rope(q, qp, f, interleaved);
    k = ref_rope(k, kp, f, interleaved);
  };
  return e;
}

inline RefEncoding ref_alibi(Index heads) {
  const std::vector<double> slopes = press_slopes(heads);
  return {"alibi", {}, [slopes](Index h, Position q, Position k) {
            return -slopes[static_cast<std::size_t>(h)] * static_cast<double>(q > k ? q - k : k - q);
          }};
}

/// table [num_buckets, heads]
inline RefEncoding ref_t5(const posenc::RelativeBucketConfig& config, const FTensor<2>& table) {
  const auto buckets = std::make_shared<RefT5Buckets>(config.num_buckets, config.max_distance, config.bidirectional);
  return {"relative_bias", {}, [buckets, table](Index h, Position q, Position k) {
            return static_cast<double>(table(buckets->bucket(k - q), h));
          }};
}

inline std::vector<Position> random_positions(std::mt19937& rng, Index n, Position lo, Position hi) {
  std::uniform_int_distribution<Position> dist(lo, hi);
  std::vector<Position> p(static_cast<std::size_t>(n));
  for (auto& x : p) x = dist(rng);
  return p;
}

inline std::vector<std::uint8_t> random_padding(std::mt19937& rng, Index n, double p_masked) {
  std::bernoulli_distribution dist(p_masked);
  std::vector<std::uint8_t> m(static_cast<std::size_t>(n));
  for (auto& x : m) x = dist(rng) ? 1 : 0;
  return m;
}

inline posenc::AttentionOptions attention_options(bool causal, std::optional<double> scale = std::nullopt,
                                                  posenc::AttentionKernel kernel = posenc::AttentionKernel::kTiled,
                                                  int threads = 1) {
  posenc::AttentionOptions o;
  o.causal = causal;
  o.scale = scale;
  o.kernel = kernel;
  o.threads = threads;
  return o;
}

inline const char* kernel_name(posenc::AttentionKernel kernel) {
  return kernel == posenc::AttentionKernel::kTiled ? "tiled" : "reference";
}
inline constexpr posenc::AttentionKernel kKernels[] = {posenc::AttentionKernel::kTiled,
                                                       posenc::AttentionKernel::kReference};

/// Row block [b] of a batched tensor [B, ...] as an owning tensor of rank Rank - 1.
template <class T, int Rank>
posenc::Tensor<T, Rank - 1> slice_batch(const posenc::Tensor<T, Rank>& t, Index b) {
  std::array<Index, Rank - 1> dims{};
  for (int i = 1; i < Rank; ++i) dims[static_cast<std::size_t>(i - 1)] = t.dimension(i);
  posenc::Tensor<T, Rank - 1> out(dims);
  std::copy(t.data() + b * out.size(), t.data() + (b + 1) * out.size(), out.data());
  return out;
}

/// Row b of a [B, L] vector-of-rows.
template <class T>
std::vector<T> row(const std::vector<T>& flat, Index b, Index width) {
  return std::vector<T>(flat.begin() + b * width, flat.begin() + (b + 1) * width);
}

}  // namespace testutil
