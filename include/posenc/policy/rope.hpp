#pragma once
// Rotary position embedding (Su et al. 2021, "RoFormer"): each pair of query/key dims is rotated
// by the angle position * inv_freq[i], so that <R(m)q, R(n)k> depends on m - n only.
//
// Layouts: kHalf pairs (x[i], x[i + r/2]) as GPT-NeoX and HF LLaMA's `rotate_half`;
//          kInterleaved pairs (x[2i], x[2i+1]) as GPT-J, RoFormer and Meta's complex form.
// Partial rotary (GPT-NeoX rotary_pct, Phi): dims rotary_dim .. head_dim-1 pass unchanged.
// Angles are formed and their cos/sin taken in double (positions reach 1e7), then stored as float.

#include <span>
#include <string_view>
#include <vector>

#include "posenc/concepts.hpp"
#include "posenc/kernel/scalar.hpp"
#include "posenc/policy/rope_scaling.hpp"
#include "posenc/positions.hpp"
#include "posenc/tensor.hpp"

namespace posenc {

enum class RopeLayout { kHalf, kInterleaved };

/// "half" | "interleaved"; throws InvalidParameter otherwise.
inline RopeLayout parse_rope_layout(std::string_view name) {
  if (name == "half") return RopeLayout::kHalf;
  if (name == "interleaved") return RopeLayout::kInterleaved;
  throw InvalidParameter(detail::concat("layout must be \"half\" or \"interleaved\", got \"", name, "\""));
}

struct RopeConfig {
  Index head_dim = 0;
  Index rotary_dim = 0;  ///< 0: the whole head (rotary_dim = head_dim)
  double base = 10000.0;
  RopeLayout layout = RopeLayout::kHalf;
  RopeScaling scaling = RopeScaling::none();
};

class RoPE : public EncodingBase {
 public:
  static constexpr bool kQKRotation = true;
  using Rotation = RotaryFrequencies;

  explicit RoPE(RopeConfig config) : config_(std::move(config)) {
    if (config_.rotary_dim == 0) config_.rotary_dim = config_.head_dim;
    const Index d = config_.head_dim;
    const Index r = config_.rotary_dim;
    detail::require<InvalidParameter>(d >= 1, "head_dim must be >= 1, got ", d);
    detail::require<InvalidParameter>(r >= 2 && r % 2 == 0 && r <= d,
                                      "rotary_dim must be even with 2 <= rotary_dim <= head_dim = ", d, ", got ", r);
    detail::require<InvalidParameter>(config_.base > 1.0 && std::isfinite(config_.base), "base must be > 1, got ",
                                      config_.base);
    detail::validate_rope_scaling(config_.scaling, r);
  }

  const RopeConfig& config() const { return config_; }
  Index head_dim() const { return config_.head_dim; }
  Index rotary_dim() const { return config_.rotary_dim; }
  RopeLayout layout() const { return config_.layout; }

  /// Frequencies for a call whose largest position is seq_len - 1 (HF dynamic_rope_update).
  RotaryFrequencies rotation(Position seq_len) const {
    return detail::rotary_frequencies(config_.scaling, config_.base, config_.rotary_dim, seq_len);
  }

  /// Rotates x [tokens, heads, head_dim] in place; seq_len = max(positions) + 1.
  void apply(TensorRef<float, 3> x, PositionsRef positions) const {
    check_arguments(x, positions);
    const auto span = detail::as_span(positions);
    rotate_unchecked(x.data(), x.dim(0), x.dim(1), positions.data(), rotation(detail::sequence_length(span)));
  }

  /// Rotates x [tokens, heads, head_dim] in place with the frequencies of a larger call (e.g. the
  /// same `rotation` for queries and keys, or for every sequence of a batch).
  void apply(TensorRef<float, 3> x, PositionsRef positions, const RotaryFrequencies& frequencies) const {
    check_arguments(x, positions);
    detail::require<InvalidParameter>(frequencies.inv_freq.size() == static_cast<std::size_t>(rotary_dim() / 2),
                                      "frequencies must hold rotary_dim/2 = ", rotary_dim() / 2, " entries, got ",
                                      frequencies.inv_freq.size());
    rotate_unchecked(x.data(), x.dim(0), x.dim(1), positions.data(), frequencies);
  }

  /// Out-of-place form of apply(): returns the rotated copy of x.
  Tensor<float, 3> rotate(TensorRef<const float, 3> x, PositionsRef positions) const {
    Tensor<float, 3> y = x.map();
    apply(y, positions);
    return y;
  }

  // --- query/key-rotation hook ---
  template <class T>
  void rotate_unchecked(T* x, Index tokens, Index heads, const Position* positions,
                        const RotaryFrequencies& frequencies) const {
    const Index pairs = rotary_dim() / 2;
    std::vector<T> cos(static_cast<std::size_t>(pairs));
    std::vector<T> sin(static_cast<std::size_t>(pairs));
    for (Index t = 0; t < tokens; ++t) {
      fill_cos_sin(positions[t], frequencies, cos.data(), sin.data());
      for (Index h = 0; h < heads; ++h) {
        T* row = x + (t * heads + h) * head_dim();
        if (layout() == RopeLayout::kHalf) {
          kernel::scalar::rotate_half(row, cos.data(), sin.data(), pairs);
        } else {
          kernel::scalar::rotate_interleaved(row, cos.data(), sin.data(), pairs);
        }
      }
    }
  }

  /// cos/sin of one position's angles, times the attention factor (one value per pair).
  template <class T>
  static void fill_cos_sin(Position position, const RotaryFrequencies& frequencies, T* cos, T* sin) {
    const double p = static_cast<double>(position);
    const double af = frequencies.attention_factor;
    for (std::size_t i = 0; i < frequencies.inv_freq.size(); ++i) {
      const double angle = p * frequencies.inv_freq[i];
      cos[i] = static_cast<T>(af * std::cos(angle));
      sin[i] = static_cast<T>(af * std::sin(angle));
    }
  }

 private:
  void check_arguments(const TensorRef<float, 3>& x, PositionsRef positions) const {
    detail::require_shape(x, "x", {-1, -1, head_dim()}, "[tokens, heads, head_dim]");
    detail::require<ShapeMismatch>(positions.dim(0) == x.dim(0), "positions has ", positions.dim(0),
                                   " entries, x has ", x.dim(0), " tokens");
    detail::check_positions(detail::as_span(positions), "positions");
  }

  RopeConfig config_;
};

}  // namespace posenc
