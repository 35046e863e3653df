#pragma once
// Picks the kernel for a scalar type: the vector kernels for float where the compiler has vector
// extensions (GCC, Clang), the scalar ones otherwise and for double (the reference path).

#include <type_traits>

#include "posenc/config.hpp"
#include "posenc/kernel/scalar.hpp"
#include "posenc/kernel/simd.hpp"

namespace posenc::kernel {

#if defined(POSENC_HAS_VECTOR_KERNELS)
template <class T>
inline constexpr bool kVectorized = std::is_same_v<T, float>;
#else
template <class T>
inline constexpr bool kVectorized = false;
#endif

template <class T>
POSENC_ALWAYS_INLINE void rotate_half(T* x, const T* cos, const T* sin, Index pairs) {
#if defined(POSENC_HAS_VECTOR_KERNELS)
  if constexpr (kVectorized<T>) return simd::rotate_half(x, cos, sin, pairs);
#endif
  scalar::rotate_half(x, cos, sin, pairs);
}

template <class T>
POSENC_ALWAYS_INLINE void rotate_interleaved(T* x, const T* cos, const T* sin, Index pairs) {
#if defined(POSENC_HAS_VECTOR_KERNELS)
  if constexpr (kVectorized<T>) return simd::rotate_interleaved(x, cos, sin, pairs);
#endif
  scalar::rotate_interleaved(x, cos, sin, pairs);
}

/// rotate_half of the rows x + h * stride, h < heads, all with the same cos/sin (one token).
template <class T>
POSENC_ALWAYS_INLINE void rotate_half_heads(T* x, Index heads, Index stride, const T* cos, const T* sin, Index pairs) {
#if defined(POSENC_HAS_VECTOR_KERNELS)
  if constexpr (kVectorized<T>) return simd::rotate_half_heads(x, heads, stride, cos, sin, pairs);
#endif
  for (Index h = 0; h < heads; ++h) scalar::rotate_half(x + h * stride, cos, sin, pairs);
}

/// rotate_interleaved of the rows x + h * stride, h < heads, all with the same cos/sin.
template <class T>
POSENC_ALWAYS_INLINE void rotate_interleaved_heads(T* x, Index heads, Index stride, const T* cos, const T* sin,
                                                   Index pairs) {
#if defined(POSENC_HAS_VECTOR_KERNELS)
  if constexpr (kVectorized<T>) return simd::rotate_interleaved_heads(x, heads, stride, cos, sin, pairs);
#endif
  for (Index h = 0; h < heads; ++h) scalar::rotate_interleaved(x + h * stride, cos, sin, pairs);
}

/// Out of place: the rows in + h * stride rotated into out + h * stride. `out` must not overlap `in`.
template <class T>
POSENC_ALWAYS_INLINE void rotate_half_heads(const T* in, T* out, Index heads, Index stride, const T* cos, const T* sin,
                                            Index pairs) {
#if defined(POSENC_HAS_VECTOR_KERNELS)
  if constexpr (kVectorized<T>) return simd::rotate_half_heads(in, out, heads, stride, cos, sin, pairs);
#endif
  for (Index h = 0; h < heads; ++h) scalar::rotate_half(in + h * stride, out + h * stride, cos, sin, pairs);
}
template <class T>
POSENC_ALWAYS_INLINE void rotate_interleaved_heads(const T* in, T* out, Index heads, Index stride, const T* cos,
                                                   const T* sin, Index pairs) {
#if defined(POSENC_HAS_VECTOR_KERNELS)
  if constexpr (kVectorized<T>) return simd::rotate_interleaved_heads(in, out, heads, stride, cos, sin, pairs);
#endif
  for (Index h = 0; h < heads; ++h) scalar::rotate_interleaved(in + h * stride, out + h * stride, cos, sin, pairs);
}

inline void add_alibi_ramp(float* row, double slope, Position distance0, Index n) {
#if defined(POSENC_HAS_VECTOR_KERNELS)
  simd::add_alibi_ramp(row, slope, distance0, n);
#else
  scalar::add_alibi_ramp(row, slope, distance0, n);
#endif
}

/// The largest of `init` and x[0, n) by std::max's rule (scalar::largest_of).
inline float largest_of(const float* x, Index n, float init) {
#if defined(POSENC_HAS_VECTOR_KERNELS)
  return simd::largest_of(x, n, init);
#else
  return scalar::largest_of(x, n, init);
#endif
}

/// cos/sin of position * inv_freq[i] (times attention_factor) for i < pairs. `max_inv_freq`
/// bounds the angles, so the vector sincos is used only where its range reduction is exact.
template <class T>
void rotary_cos_sin(Position position, const double* inv_freq, double max_inv_freq, double attention_factor,
                    Index pairs, T* cos, T* sin) {
#if defined(POSENC_HAS_VECTOR_KERNELS)
  if constexpr (kVectorized<T>) {
    if (simd::sincos_exact_up_to(static_cast<double>(position) * max_inv_freq)) {
      return simd::rotary_cos_sin(position, inv_freq, attention_factor, pairs, cos, sin);
    }
  }
#endif
  scalar::rotary_cos_sin(position, inv_freq, attention_factor, pairs, cos, sin);
}

}  // namespace posenc::kernel
