#pragma once
// RoPE frequency scaling ("rope_scaling" in HF configs): how inv_freq and the attention factor
// are derived from (base, rotary_dim, scaling, seq_len). Semantics of HF transformers
// `modeling_rope_utils.py` (v5 form), as pinned by conformance FORMAT.md §4.3. All in double.

#include <algorithm>
#include <cmath>
#include <numbers>
#include <optional>
#include <string_view>
#include <vector>

#include "posenc/config.hpp"
#include "posenc/errors.hpp"

namespace posenc {

enum class RopeScalingType {
  kNone,
  kLinear,   // position interpolation (Chen et al. 2023): inv_freq / factor
  kNtk,      // static NTK-aware base change (bloc97): base * factor^(r/(r-2))
  kDynamic,  // dynamic NTK (HF _compute_dynamic_ntk_parameters): base grows with seq_len > orig
  kYarn,     // YaRN (Peng et al. 2023): ramp between interpolation and extrapolation + mscale
  kLlama3,   // Llama 3.1 (Meta apply_scaling): wavelength bands
  kLongRope  // LongRoPE / Phi-3 (Ding et al. 2024): per-pair factors, short/long switch
};

/// "none" | "linear" | "ntk" | "dynamic" | "yarn" | "llama3" | "longrope".
inline RopeScalingType parse_rope_scaling_type(std::string_view name) {
  if (name == "none") return RopeScalingType::kNone;
  if (name == "linear") return RopeScalingType::kLinear;
  if (name == "ntk") return RopeScalingType::kNtk;
  if (name == "dynamic") return RopeScalingType::kDynamic;
  if (name == "yarn") return RopeScalingType::kYarn;
  if (name == "llama3") return RopeScalingType::kLlama3;
  if (name == "longrope") return RopeScalingType::kLongRope;
  throw InvalidParameter(detail::concat("scaling type must be one of none, linear, ntk, dynamic, yarn, llama3, "
                                        "longrope; got \"", name, "\""));
}

/// Parameters of a RoPE scaling. Build with the named constructors; fields not used by the type are
/// ignored. Validated by RoPE's constructor against its rotary_dim.
struct RopeScaling {
  RopeScalingType type = RopeScalingType::kNone;
  double factor = 1.0;
  Position original_max_position_embeddings = 0;
  // YaRN
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  std::optional<double> mscale;
  std::optional<double> mscale_all_dim;
  bool truncate = true;
  // YaRN and LongRoPE: overrides the derived attention factor.
  std::optional<double> attention_factor;
  // Llama 3
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  // LongRoPE: rotary_dim/2 factors each.
  std::vector<double> short_factor;
  std::vector<double> long_factor;

  static RopeScaling none() { return {}; }
  static RopeScaling linear(double factor) { return with(RopeScalingType::kLinear, factor, 0); }
  static RopeScaling ntk(double factor) { return with(RopeScalingType::kNtk, factor, 0); }
  static RopeScaling dynamic(double factor, Position original_max) {
    return with(RopeScalingType::kDynamic, factor, original_max);
  }
  static RopeScaling yarn(double factor, Position original_max) {
    return with(RopeScalingType::kYarn, factor, original_max);
  }
  static RopeScaling llama3(double factor, double low_freq_factor, double high_freq_factor, Position original_max) {
    RopeScaling s = with(RopeScalingType::kLlama3, factor, original_max);
    s.low_freq_factor = low_freq_factor;
    s.high_freq_factor = high_freq_factor;
    return s;
  }
  static RopeScaling longrope(std::vector<double> short_factor, std::vector<double> long_factor,
                              Position original_max, double factor = 1.0) {
    RopeScaling s = with(RopeScalingType::kLongRope, factor, original_max);
    s.short_factor = std::move(short_factor);
    s.long_factor = std::move(long_factor);
    return s;
  }

 private:
  static RopeScaling with(RopeScalingType type, double factor, Position original_max) {
    RopeScaling s;
    s.type = type;
    s.factor = factor;
    s.original_max_position_embeddings = original_max;
    return s;
  }
};

/// Per-call rotary state: the angle of pair i at position p is p * inv_freq[i]; the rotated dims
/// are multiplied by attention_factor (HF multiplies cos and sin by `attention_scaling`).
struct RotaryFrequencies {
  std::vector<double> inv_freq;
  double attention_factor = 1.0;
};

namespace detail {

/// YaRN's m(s, k): the "mscale" attention temperature (Peng et al. 2023, eq. 22).
inline double yarn_mscale(double scale, double k) { return scale <= 1.0 ? 1.0 : 0.1 * k * std::log(scale) + 1.0; }

/// YaRN's attention factor: the explicit one, else m(factor, mscale) / m(factor, mscale_all_dim)
/// when both are given and non-zero (DeepSeek-V2), else m(factor, 1) (HF `_compute_yarn_parameters`).
inline double yarn_attention_factor(const RopeScaling& s) {
  if (s.attention_factor) return *s.attention_factor;
  if (s.mscale && s.mscale_all_dim && *s.mscale != 0.0 && *s.mscale_all_dim != 0.0) {
    return yarn_mscale(s.factor, *s.mscale) / yarn_mscale(s.factor, *s.mscale_all_dim);
  }
  return yarn_mscale(s.factor, 1.0);
}

inline void validate_rope_scaling(const RopeScaling& s, Index rotary_dim) {
  using T = RopeScalingType;
  const auto needs_factor_ge_1 = [&] {
    require<InvalidParameter>(s.factor >= 1.0 && std::isfinite(s.factor), "scaling factor must be >= 1, got ",
                              s.factor);
  };
  const auto needs_original_max = [&] {
    require<InvalidParameter>(s.original_max_position_embeddings >= 1,
                              "original_max_position_embeddings must be >= 1, got ",
                              s.original_max_position_embeddings);
  };
  const auto needs_positive_attention_factor = [&] {
    // cos and sin are scaled by it in float.
    require<InvalidParameter>(
        !s.attention_factor || (*s.attention_factor > 0.0 && std::isfinite(static_cast<float>(*s.attention_factor))),
        "attention_factor must be > 0 and finite in float, got ", s.attention_factor.value_or(0.0));
  };
  switch (s.type) {
    case T::kNone:
      break;
    case T::kLinear:
      needs_factor_ge_1();
      break;
    case T::kNtk:
    case T::kDynamic:
      needs_factor_ge_1();
      require<InvalidParameter>(rotary_dim > 2, "ntk/dynamic scaling needs rotary_dim > 2, got ", rotary_dim);
      if (s.type == T::kDynamic) needs_original_max();
      break;
    case T::kYarn:
      needs_factor_ge_1();
      needs_original_max();
      require<InvalidParameter>(s.beta_slow > 0.0 && s.beta_fast > s.beta_slow && std::isfinite(s.beta_fast),
                                "yarn needs beta_fast > beta_slow > 0, got beta_fast ", s.beta_fast, ", beta_slow ",
                                s.beta_slow);
      require<InvalidParameter>(!s.mscale || std::isfinite(*s.mscale), "mscale must be finite");
      require<InvalidParameter>(!s.mscale_all_dim || std::isfinite(*s.mscale_all_dim), "mscale_all_dim must be finite");
      needs_positive_attention_factor();
      {
        // Derived from mscale / mscale_all_dim, it can still overflow float (or divide by 0).
        const double factor = yarn_attention_factor(s);
        require<InvalidParameter>(factor != 0.0 && std::isfinite(static_cast<float>(factor)),
                                  "yarn attention factor m(factor, mscale) / m(factor, mscale_all_dim) must be "
                                  "finite and non-zero in float, got ", factor);
      }
      break;
    case T::kLlama3:
      needs_factor_ge_1();
      needs_original_max();
      require<InvalidParameter>(s.low_freq_factor > 0.0 && s.high_freq_factor > s.low_freq_factor &&
                                    std::isfinite(s.high_freq_factor),
                                "llama3 needs high_freq_factor > low_freq_factor > 0, got high ", s.high_freq_factor,
                                ", low ", s.low_freq_factor);
      break;
    case T::kLongRope: {
      needs_original_max();
      require<InvalidParameter>(s.factor > 0.0 && std::isfinite(s.factor), "longrope factor must be > 0, got ",
                                s.factor);
      needs_positive_attention_factor();
      const auto pairs = static_cast<std::size_t>(rotary_dim / 2);
      for (const auto* list : {&s.short_factor, &s.long_factor}) {
        const char* name = list == &s.short_factor ? "short_factor" : "long_factor";
        require<InvalidParameter>(list->size() == pairs, name, " must hold rotary_dim/2 = ", pairs,
                                  " factors, got ", list->size());
        for (std::size_t i = 0; i < list->size(); ++i) {
          require<InvalidParameter>((*list)[i] > 0.0 && std::isfinite((*list)[i]), name, "[", i,
                                    "] must be > 0, got ", (*list)[i]);
        }
      }
      // sqrt(1 + ln(factor) / ln(orig)) is undefined for orig == 1.
      require<InvalidParameter>(s.attention_factor || s.factor <= 1.0 || s.original_max_position_embeddings > 1,
                                "longrope with factor > 1 and original_max_position_embeddings = 1 needs an "
                                "explicit attention_factor");
      break;
    }
  }
}

/// base^(-2i/r), i = 0 .. r/2 - 1: the unscaled RoPE frequencies (Su et al. 2021).
inline std::vector<double> default_inv_freq(double base, Index rotary_dim) {
  std::vector<double> inv_freq(static_cast<std::size_t>(rotary_dim / 2));
  for (std::size_t i = 0; i < inv_freq.size(); ++i) {
    inv_freq[i] = std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(rotary_dim));
  }
  return inv_freq;
}

inline RotaryFrequencies yarn_frequencies(const RopeScaling& s, double base, Index rotary_dim) {
  const double r = static_cast<double>(rotary_dim);
  const double orig = static_cast<double>(s.original_max_position_embeddings);
  // Pair index at which the wavelength equals orig / beta (HF find_correction_dim).
  const auto correction = [&](double beta) {
    return r * std::log(orig / (beta * 2.0 * std::numbers::pi)) / (2.0 * std::log(base));
  };
  double low = correction(s.beta_fast);
  double high = correction(s.beta_slow);
  if (s.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, r - 1.0);
  if (low == high) high += 0.001;  // HF linear_ramp_factor's guard against a zero width

  RotaryFrequencies f{default_inv_freq(base, rotary_dim), 1.0};
  for (std::size_t i = 0; i < f.inv_freq.size(); ++i) {
    const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
    const double extrapolated = f.inv_freq[i];
    f.inv_freq[i] = extrapolated / s.factor * ramp + extrapolated * (1.0 - ramp);
  }
  f.attention_factor = yarn_attention_factor(s);
  return f;
}

inline RotaryFrequencies llama3_frequencies(const RopeScaling& s, double base, Index rotary_dim) {
  const double orig = static_cast<double>(s.original_max_position_embeddings);
  const double low_freq_wavelength = orig / s.low_freq_factor;
  const double high_freq_wavelength = orig / s.high_freq_factor;
  RotaryFrequencies f{default_inv_freq(base, rotary_dim), 1.0};
  for (double& freq : f.inv_freq) {
    const double wavelength = 2.0 * std::numbers::pi / freq;
    if (wavelength < high_freq_wavelength) continue;  // high frequencies: unchanged
    if (wavelength > low_freq_wavelength) {
      freq /= s.factor;  // low frequencies: interpolated
    } else {
      const double smooth = (orig / wavelength - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      freq = (1.0 - smooth) * freq / s.factor + smooth * freq;
    }
  }
  return f;
}

inline RotaryFrequencies longrope_frequencies(const RopeScaling& s, double base, Index rotary_dim, Position seq_len) {
  const bool long_context = seq_len > s.original_max_position_embeddings;
  const std::vector<double>& ext = long_context ? s.long_factor : s.short_factor;
  RotaryFrequencies f{default_inv_freq(base, rotary_dim), 1.0};
  for (std::size_t i = 0; i < f.inv_freq.size(); ++i) f.inv_freq[i] /= ext[i];
  if (s.attention_factor) {
    f.attention_factor = *s.attention_factor;
  } else if (s.factor > 1.0) {
    f.attention_factor =
        std::sqrt(1.0 + std::log(s.factor) / std::log(static_cast<double>(s.original_max_position_embeddings)));
  }
  return f;
}

/// inv_freq and attention factor for a call whose positions reach seq_len - 1.
inline RotaryFrequencies rotary_frequencies(const RopeScaling& s, double base, Index rotary_dim, Position seq_len) {
  const double r = static_cast<double>(rotary_dim);
  switch (s.type) {
    case RopeScalingType::kNone:
      break;
    case RopeScalingType::kLinear: {
      RotaryFrequencies f{default_inv_freq(base, rotary_dim), 1.0};
      for (double& freq : f.inv_freq) freq /= s.factor;
      return f;
    }
    case RopeScalingType::kNtk:
      return {default_inv_freq(base * std::pow(s.factor, r / (r - 2.0)), rotary_dim), 1.0};
    case RopeScalingType::kDynamic: {
      const Position orig = s.original_max_position_embeddings;
      if (seq_len <= orig) break;
      const double grown = s.factor * static_cast<double>(seq_len) / static_cast<double>(orig) - (s.factor - 1.0);
      return {default_inv_freq(base * std::pow(grown, r / (r - 2.0)), rotary_dim), 1.0};
    }
    case RopeScalingType::kYarn:
      return yarn_frequencies(s, base, rotary_dim);
    case RopeScalingType::kLlama3:
      return llama3_frequencies(s, base, rotary_dim);
    case RopeScalingType::kLongRope:
      return longrope_frequencies(s, base, rotary_dim, seq_len);
  }
  return {default_inv_freq(base, rotary_dim), 1.0};
}

}  // namespace detail
}  // namespace posenc
