#pragma once
// Sinusoidal absolute position embedding (Vaswani et al. 2017, "Attention Is All You Need" §3.5),
// added to the input embeddings.
//
//   w_i = base^(-2i/dim), i = 0 .. dim/2 - 1
//   interleaved: pe[2i] = sin(p w_i), pe[2i+1] = cos(p w_i)      (the paper, tensor2tensor order)
//   split:       pe[i]  = sin(p w_i), pe[dim/2 + i] = cos(p w_i) (HF / many PyTorch ports)
//
// Angles are formed in double: at p = 1e7 a float angle is off by up to 0.5 rad.

#include <cmath>
#include <span>
#include <string_view>
#include <vector>

#include "posenc/concepts.hpp"
#include "posenc/positions.hpp"
#include "posenc/tensor.hpp"

namespace posenc {

enum class SinusoidalLayout { kInterleaved, kSplit };

/// "interleaved" | "split"; throws InvalidParameter otherwise.
inline SinusoidalLayout parse_sinusoidal_layout(std::string_view name) {
  if (name == "interleaved") return SinusoidalLayout::kInterleaved;
  if (name == "split") return SinusoidalLayout::kSplit;
  throw InvalidParameter(detail::concat("layout must be \"interleaved\" or \"split\", got \"", name, "\""));
}

class Sinusoidal : public EncodingBase {
 public:
  static constexpr bool kInputEmbedding = true;

  explicit Sinusoidal(Index dim, double base = 10000.0, SinusoidalLayout layout = SinusoidalLayout::kInterleaved)
      : dim_(dim), base_(base), layout_(layout) {
    detail::require<InvalidParameter>(dim >= 2 && dim % 2 == 0, "dim must be even and >= 2, got ", dim);
    detail::require<InvalidParameter>(base > 1.0 && std::isfinite(base), "base must be > 1, got ", base);
    frequencies_.resize(static_cast<std::size_t>(dim / 2));
    for (Index i = 0; i < dim / 2; ++i) {
      frequencies_[static_cast<std::size_t>(i)] = std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(dim));
    }
  }

  Index dim() const { return dim_; }
  double base() const { return base_; }
  SinusoidalLayout layout() const { return layout_; }
  /// w_i, i = 0 .. dim/2 - 1.
  const std::vector<double>& frequencies() const { return frequencies_; }

  /// The embedding rows of `positions`: [positions, dim].
  Tensor<float, 2> encode(PositionsRef positions) const {
    detail::check_positions(detail::as_span(positions), "positions");
    Tensor<float, 2> pe(positions.dim(0), dim_);
    pe.setZero();
    add_embedding_unchecked(pe.data(), detail::as_span(positions));
    return pe;
  }

  /// x[l, :] += PE(positions[l]); x is [positions, dim].
  void add_to(TensorRef<float, 2> x, PositionsRef positions) const {
    detail::require_shape(x, "x", {positions.dim(0), dim_}, "[positions, dim]");
    detail::check_positions(detail::as_span(positions), "positions");
    add_embedding_unchecked(x.data(), detail::as_span(positions));
  }

  // --- input-embedding hook ---
  Index embedding_dim() const { return dim_; }
  void check_embedding_positions(std::span<const Position> positions) const {
    detail::check_positions(positions, "positions");
  }
  void add_embedding_unchecked(float* x, std::span<const Position> positions) const {
    const Index half = dim_ / 2;
    const bool interleaved = layout_ == SinusoidalLayout::kInterleaved;
    for (std::size_t l = 0; l < positions.size(); ++l) {
      float* row = x + static_cast<Index>(l) * dim_;
      const double p = static_cast<double>(positions[l]);
      for (Index i = 0; i < half; ++i) {
        const double angle = p * frequencies_[static_cast<std::size_t>(i)];
        const Index sin_at = interleaved ? 2 * i : i;
        const Index cos_at = interleaved ? 2 * i + 1 : half + i;
        row[sin_at] = static_cast<float>(static_cast<double>(row[sin_at]) + std::sin(angle));
        row[cos_at] = static_cast<float>(static_cast<double>(row[cos_at]) + std::cos(angle));
      }
    }
  }

 private:
  Index dim_;
  double base_;
  SinusoidalLayout layout_;
  std::vector<double> frequencies_;
};

}  // namespace posenc
