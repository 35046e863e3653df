#pragma once
// Picks the kernel for a scalar type: the vector kernels for float where the compiler has vector
// extensions (GCC, Clang), the scalar ones otherwise and for double (the reference path).

#include <cstdint>
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

/// Outputs of at least this many bytes are written with non-temporal stores: half a Zen 3/4/5 L3
/// (32 MiB per 8 cores), where input and output together fill it, so a plain store's line would
/// mostly leave the cache before anything read it. (The C library's figure is no guide: glibc
/// reported 320 MiB of L3 on a 32 MiB Zen 4.) Into fresh memory such a copy moves 2 bytes per
/// output byte instead of 3, no read of the destination's lines first: RoPE out of place on
/// [4096, 32, 128] ran at ~1.4x the rate of a plain `b = a·s + t` copy loop, against ~0.9x with
/// plain stores. At 16 MiB, rotation plus a read of the output right after ran at 1.23x the rate
/// of plain stores when x and out came from memory (an engine between layers), and 0.98x when the
/// same buffers were rotated over and over, the one case where plain stores find out's lines in
/// the L3 (rope_into_read*/ in posenc_bench, ten runs; bench/NOTES.md, third session of 2026-12-04).
inline constexpr Index kStreamingStoreMinBytes = Index{16} << 20;

/// Whether an out-of-place rotation of `floats` values into `out`, rows `row_floats` apart,
/// takes the *_heads_streaming kernels: vector float kernels, an output of
/// kStreamingStoreMinBytes or more, and rows on vector boundaries.
template <class T>
bool streams_output(const T* out, Index floats, Index row_floats) {
#if defined(POSENC_HAS_VECTOR_KERNELS)
  if constexpr (kVectorized<T>) {
    return floats * static_cast<Index>(sizeof(T)) >= kStreamingStoreMinBytes &&
           reinterpret_cast<std::uintptr_t>(out) % simd::kVectorBytes == 0 &&
           row_floats * static_cast<Index>(sizeof(T)) % simd::kVectorBytes == 0;
  }
#endif
  (void)out, (void)floats, (void)row_floats;
  return false;
}

/// rotate_half_heads / rotate_interleaved_heads out of place with non-temporal stores, where
/// streams_output() said so; then stream_fence() once the last row is written.
inline void rotate_half_heads_streaming(const float* in, float* out, Index heads, Index stride, const float* cos,
                                        const float* sin, Index pairs) {
#if defined(POSENC_HAS_VECTOR_KERNELS)
  simd::rotate_half_heads_streaming(in, out, heads, stride, cos, sin, pairs);
#else
  rotate_half_heads(in, out, heads, stride, cos, sin, pairs);
#endif
}
inline void rotate_interleaved_heads_streaming(const float* in, float* out, Index heads, Index stride,
                                               const float* cos, const float* sin, Index pairs) {
#if defined(POSENC_HAS_VECTOR_KERNELS)
  simd::rotate_interleaved_heads_streaming(in, out, heads, stride, cos, sin, pairs);
#else
  rotate_interleaved_heads(in, out, heads, stride, cos, sin, pairs);
#endif
}
inline void stream_fence() {
#if defined(POSENC_HAS_VECTOR_KERNELS)
  simd::stream_fence();
#endif
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
