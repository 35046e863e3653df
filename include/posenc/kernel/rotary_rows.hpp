#pragma once
// RoPE cos/sin rows without a table, one position after another (FORMAT.md: cos and sin of
// position * inv_freq[i] in double, times the attention factor, stored as float).
//
// A direct row costs a double sin and cos per pair: for 64 pairs about as many instructions as
// rotating the 32 heads of a token, and in-place RoPE is memory-bound, so the row is pure
// overhead. Positions of a sequence mostly advance by one, and angle(p + 1) = angle(p) + inv_freq,
// so the next row follows from the last by the angle-addition formulas,
//   cos(a + f) = cos a cos f - sin a sin f,   sin(a + f) = sin a cos f + cos a sin f,
// four double multiply-adds per pair. A stepped row carries the angle rounding of the row it
// started from (half an ulp of the double angle, as a direct row does) plus the steps' own
// roundings (~1e-16 each); after at most kStepsPerAnchor steps a row is computed directly again,
// and after every jump. Against a direct row, a stepped one differs by at most about one ulp of
// the angle: 2e-9 at position 1e7, 2.4e-7 at 2^31, inside FORMAT.md's 2e-6.

#include <cmath>
#include <cstddef>
#include <vector>

#include "posenc/config.hpp"
#include "posenc/kernel/simd.hpp"

namespace posenc::kernel {

class RotaryRows {
 public:
  /// The most rows stepped from one directly computed row.
  static constexpr Index kStepsPerAnchor = 32;

  /// inv_freq: `pairs` frequencies, borrowed (must outlive this object); max_inv_freq: their
  /// maximum, which bounds the angles (the vector sincos reduces angles up to 2^32 exactly).
  RotaryRows(const double* inv_freq, double max_inv_freq, double attention_factor, Index pairs)
      : inv_freq_(inv_freq), max_inv_freq_(max_inv_freq), attention_factor_(attention_factor), pairs_(pairs) {}

  /// Writes the row of `position` (0 <= position <= kMaxPosition): cos[i], sin[i] (times the
  /// attention factor) for i < pairs.
  /// The state is allocated, and the step's cos/sin of inv_freq computed, on first need: a call
  /// whose rows all come from a table allocates nothing, one that rotates a single token computes
  /// no step (decode rotates its query rows one at a time).
  void row(Position position, float* POSENC_RESTRICT cos, float* POSENC_RESTRICT sin) {
    if (has_row_ && position - 1 == previous_ && steps_ < kStepsPerAnchor) {
      if (!has_step_) prepare_step();
      step(cos, sin);
      ++steps_;
    } else {
      if (state_.empty()) state_.resize(static_cast<std::size_t>(4 * pairs_));
      anchor(position, cos, sin);
      steps_ = 0;
    }
    has_row_ = true;
    previous_ = position;
  }

 private:
  // cos and sin of position * inv_freq, in double, kept as the state the next steps start from.
  void anchor(Position position, float* POSENC_RESTRICT cos, float* POSENC_RESTRICT sin) {
    cos_sin_of_multiple(static_cast<double>(position), state_.data(), state_.data() + pairs_);
    write(cos, sin);
  }

  // cos and sin of inv_freq, the step. Through libm this drew ~1 % of RoPE prefill's perf samples:
  // attention rotates Q and K tile by tile, and each tile's call prepares the step again. The
  // vector sincos's ~1e-11 error, compounded over kStepsPerAnchor steps, stays far below half a
  // float ulp (6e-8).
  void prepare_step() {
    cos_sin_of_multiple(1.0, state_.data() + 2 * pairs_, state_.data() + 3 * pairs_);
    has_step_ = true;
  }

  // cos[i], sin[i] of multiple * inv_freq[i], in double: the vector sincos where it reduces the
  // angles exactly, else libm.
  void cos_sin_of_multiple(double multiple, double* POSENC_RESTRICT cos, double* POSENC_RESTRICT sin) const {
    Index i = 0;
#if defined(POSENC_HAS_VECTOR_KERNELS)
    if (simd::sincos_exact_up_to(multiple * max_inv_freq_)) {
      using simd::DoubleVec;
      for (; i + simd::kDoubleLanes <= pairs_; i += simd::kDoubleLanes) {
        DoubleVec s, c;
        simd::sincos(simd::load<DoubleVec>(inv_freq_ + i) * multiple, s, c);
        simd::store(cos + i, c);
        simd::store(sin + i, s);
      }
    }
#endif
    for (; i < pairs_; ++i) {
      const double angle = multiple * inv_freq_[i];
      cos[i] = std::cos(angle);
      sin[i] = std::sin(angle);
    }
  }

  // The state advanced by one position.
  void step(float* POSENC_RESTRICT cos, float* POSENC_RESTRICT sin) {
    double* POSENC_RESTRICT state_cos = state_.data();
    double* POSENC_RESTRICT state_sin = state_.data() + pairs_;
    const double* POSENC_RESTRICT step_cos = state_.data() + 2 * pairs_;
    const double* POSENC_RESTRICT step_sin = state_.data() + 3 * pairs_;
    Index i = 0;
#if defined(POSENC_HAS_VECTOR_KERNELS)
    using simd::DoubleVec;
    using simd::load;
    for (; i + simd::kDoubleLanes <= pairs_; i += simd::kDoubleLanes) {
      const DoubleVec c = load<DoubleVec>(state_cos + i);
      const DoubleVec s = load<DoubleVec>(state_sin + i);
      const DoubleVec fc = load<DoubleVec>(step_cos + i);
      const DoubleVec fs = load<DoubleVec>(step_sin + i);
      simd::store(state_cos + i, c * fc - s * fs);
      simd::store(state_sin + i, s * fc + c * fs);
    }
#endif
    for (; i < pairs_; ++i) {
      const double c = state_cos[i];
      const double s = state_sin[i];
      state_cos[i] = c * step_cos[i] - s * step_sin[i];
      state_sin[i] = s * step_cos[i] + c * step_sin[i];
    }
    write(cos, sin);
  }

  // The state times the attention factor, rounded to float.
  void write(float* POSENC_RESTRICT cos, float* POSENC_RESTRICT sin) const {
    const double* POSENC_RESTRICT state_cos = state_.data();
    const double* POSENC_RESTRICT state_sin = state_.data() + pairs_;
    Index i = 0;
#if defined(POSENC_HAS_VECTOR_KERNELS)
    using simd::DoubleVec;
    using simd::HalfFloatVec;
    for (; i + simd::kDoubleLanes <= pairs_; i += simd::kDoubleLanes) {
      simd::store(cos + i, __builtin_convertvector(simd::load<DoubleVec>(state_cos + i) * attention_factor_, HalfFloatVec));
      simd::store(sin + i, __builtin_convertvector(simd::load<DoubleVec>(state_sin + i) * attention_factor_, HalfFloatVec));
    }
#endif
    for (; i < pairs_; ++i) {
      cos[i] = static_cast<float>(attention_factor_ * state_cos[i]);
      sin[i] = static_cast<float>(attention_factor_ * state_sin[i]);
    }
  }

  const double* inv_freq_;
  double max_inv_freq_;
  double attention_factor_;
  Index pairs_;
  std::vector<double> state_;  // [cos | sin | cos(inv_freq) | sin(inv_freq)], `pairs` each
  bool has_row_ = false;
  bool has_step_ = false;
  Position previous_ = 0;
  Index steps_ = 0;
};

}  // namespace posenc::kernel
