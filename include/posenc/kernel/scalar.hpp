#pragma once
// Scalar kernels: plain loops over contiguous rows, no branches, no checks. They are the oracle
// for the vector kernels (kernel/simd.hpp), which share their signatures.

#include <cmath>

#include "posenc/config.hpp"

namespace posenc::kernel::scalar {

/// RoPE, half layout (GPT-NeoX, HF LLaMA `rotate_half`): pair (x[i], x[i + pairs]).
/// cos/sin hold one value per pair, already multiplied by the attention factor.
template <class T>
void rotate_half(T* POSENC_RESTRICT x, const T* POSENC_RESTRICT cos, const T* POSENC_RESTRICT sin,
                 Index pairs) {
  T* POSENC_RESTRICT second = x + pairs;
  for (Index i = 0; i < pairs; ++i) {
    const T a = x[i];
    const T b = second[i];
    x[i] = a * cos[i] - b * sin[i];
    second[i] = b * cos[i] + a * sin[i];
  }
}

/// RoPE, interleaved layout (GPT-J, RoFormer, Meta LLaMA complex form): pair (x[2i], x[2i + 1]).
template <class T>
void rotate_interleaved(T* POSENC_RESTRICT x, const T* POSENC_RESTRICT cos, const T* POSENC_RESTRICT sin,
                        Index pairs) {
  for (Index i = 0; i < pairs; ++i) {
    const T a = x[2 * i];
    const T b = x[2 * i + 1];
    x[2 * i] = a * cos[i] - b * sin[i];
    x[2 * i + 1] = b * cos[i] + a * sin[i];
  }
}

/// Out-of-place forms: out = `in` rotated, `in` unchanged; the two rows must not overlap.
template <class T>
void rotate_half(const T* POSENC_RESTRICT in, T* POSENC_RESTRICT out, const T* POSENC_RESTRICT cos,
                 const T* POSENC_RESTRICT sin, Index pairs) {
  for (Index i = 0; i < pairs; ++i) {
    out[i] = in[i] * cos[i] - in[i + pairs] * sin[i];
    out[i + pairs] = in[i + pairs] * cos[i] + in[i] * sin[i];
  }
}
template <class T>
void rotate_interleaved(const T* POSENC_RESTRICT in, T* POSENC_RESTRICT out, const T* POSENC_RESTRICT cos,
                        const T* POSENC_RESTRICT sin, Index pairs) {
  for (Index i = 0; i < pairs; ++i) {
    out[2 * i] = in[2 * i] * cos[i] - in[2 * i + 1] * sin[i];
    out[2 * i + 1] = in[2 * i + 1] * cos[i] + in[2 * i] * sin[i];
  }
}

/// cos/sin of position * inv_freq[i], times attention_factor, for i < pairs: angles in double
/// (positions reach 1e7; a float angle is off by up to 0.5 rad there), libm's cos/sin.
template <class T>
void rotary_cos_sin(Position position, const double* POSENC_RESTRICT inv_freq, double attention_factor, Index pairs,
                    T* POSENC_RESTRICT cos, T* POSENC_RESTRICT sin) {
  const double p = static_cast<double>(position);
  for (Index i = 0; i < pairs; ++i) {
    const double angle = p * inv_freq[i];
    cos[i] = static_cast<T>(attention_factor * std::cos(angle));
    sin[i] = static_cast<T>(attention_factor * std::sin(angle));
  }
}

/// ALiBi row: row[j] += -slope * |q_position - k_positions[j]| (Press et al. 2022), formed in
/// double so that distances up to 2^31 stay exact.
template <class T>
void add_alibi_row(T* POSENC_RESTRICT row, double slope, Position q_position,
                   const Position* POSENC_RESTRICT k_positions, Index n) {
  for (Index j = 0; j < n; ++j) {
    const Position delta = q_position - k_positions[j];
    const double distance = static_cast<double>(delta < 0 ? -delta : delta);
    row[j] += static_cast<T>(-slope * distance);
  }
}

/// ALiBi for keys at consecutive positions: row[j] += -slope * |distance0 - j|, where distance0 is
/// q - k_first (float arithmetic).
inline void add_alibi_ramp(float* POSENC_RESTRICT row, double slope, Position distance0, Index n) {
  const float s = static_cast<float>(slope);
  const float d0 = static_cast<float>(distance0);
  for (Index j = 0; j < n; ++j) row[j] -= s * std::fabs(d0 - static_cast<float>(j));
}

/// The largest of `init` and x[0, n), as `largest = largest < x[j] ? x[j] : largest` in order
/// (std::max's rule: a NaN x[j] is passed over, a NaN init stays).
inline float largest_of(const float* x, Index n, float init) {
  float largest = init;
  for (Index j = 0; j < n; ++j) largest = largest < x[j] ? x[j] : largest;
  return largest;
}

}  // namespace posenc::kernel::scalar
