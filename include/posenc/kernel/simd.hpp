#pragma once
// Vector kernels with the signatures of kernel/scalar.hpp, which is their oracle (tests compare
// them at sizes 1, N-1, N, N+1, 4N+3). One vector abstraction: GCC/Clang vector extensions, whose
// width follows the user's compile flags (-mavx512f: 16 float lanes, -mavx: 8, otherwise 4), so the
// library stays portable and picks SIMD at compile time. Each loop is a main vector loop plus a
// scalar tail.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "posenc/config.hpp"
#include "posenc/kernel/scalar.hpp"

#if defined(__SSE__)
#include <immintrin.h>  // the non-temporal stores of stream_store
#endif

#if defined(__GNUC__) || defined(__clang__)
#define POSENC_HAS_VECTOR_KERNELS 1

namespace posenc::kernel::simd {

// The vector width in float lanes. POSENC_SIMD_FLOAT_LANES (4, 8 or 16) overrides it, for tests:
// GCC splits a vector wider than the target's registers into several, so a -mavx2 build with 16
// lanes runs the AVX-512 kernels' logic (tile shapes, tails, shuffles) on a CPU without AVX-512.
#if defined(POSENC_SIMD_FLOAT_LANES)
#define POSENC_FLOAT_LANES POSENC_SIMD_FLOAT_LANES
#elif defined(__AVX512F__)
#define POSENC_FLOAT_LANES 16
#elif defined(__AVX__)
#define POSENC_FLOAT_LANES 8
#else
#define POSENC_FLOAT_LANES 4
#endif
static_assert(POSENC_FLOAT_LANES == 4 || POSENC_FLOAT_LANES == 8 || POSENC_FLOAT_LANES == 16,
              "POSENC_SIMD_FLOAT_LANES must be 4, 8 or 16");
inline constexpr int kFloatLanes = POSENC_FLOAT_LANES;
inline constexpr int kDoubleLanes = kFloatLanes / 2;

using FloatVec = float __attribute__((vector_size(kFloatLanes * sizeof(float))));
using HalfFloatVec = float __attribute__((vector_size(kDoubleLanes * sizeof(float))));
using DoubleVec = double __attribute__((vector_size(kDoubleLanes * sizeof(double))));
using Int64Vec = std::int64_t __attribute__((vector_size(kDoubleLanes * sizeof(std::int64_t))));

template <class V>
POSENC_ALWAYS_INLINE V load(const void* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <class V>
POSENC_ALWAYS_INLINE void store(void* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

// The asm constraint for a vector register, and the widest vector one holds.
#if defined(__AVX512F__)
#define POSENC_VECTOR_REGISTER "+v"  // any of the 32 registers
#define POSENC_VECTOR_REGISTER_BYTES 64
#elif defined(__AVX__)
#define POSENC_VECTOR_REGISTER "+x"
#define POSENC_VECTOR_REGISTER_BYTES 32
#elif defined(__SSE__)
#define POSENC_VECTOR_REGISTER "+x"
#define POSENC_VECTOR_REGISTER_BYTES 16
#endif

/// Makes the compiler hold v in a register at this point: an empty asm that must see it there.
/// Without it GCC may fold a vector's load into every instruction that uses it (a memory operand
/// each time), or keep a computed vector on the stack when registers run short. (A wider, emulated
/// vector spans several registers and is left alone.)
template <class V>
POSENC_ALWAYS_INLINE void pin_to_register(V& v) {
#if defined(POSENC_VECTOR_REGISTER)
  if constexpr (sizeof(V) <= POSENC_VECTOR_REGISTER_BYTES) __asm__("" : POSENC_VECTOR_REGISTER(v));
#endif
}

/// pin_to_register for the N vectors of a and of b at once, one asm that must see all of them:
/// every load that produced them is issued before anything computed from them, a store included.
template <class V, Index N>
POSENC_ALWAYS_INLINE void pin_to_registers(V (&a)[N], V (&b)[N]) {
#if defined(POSENC_VECTOR_REGISTER)
  if constexpr (sizeof(V) <= POSENC_VECTOR_REGISTER_BYTES) {
    if constexpr (N == 1) {
      __asm__("" : POSENC_VECTOR_REGISTER(a[0]), POSENC_VECTOR_REGISTER(b[0]));
    } else if constexpr (N == 2) {
      __asm__(""
              : POSENC_VECTOR_REGISTER(a[0]), POSENC_VECTOR_REGISTER(a[1]),  //
                POSENC_VECTOR_REGISTER(b[0]), POSENC_VECTOR_REGISTER(b[1]));
    } else {
      static_assert(N == 4, "pin_to_registers takes 1, 2 or 4 vectors of each");
      __asm__(""
              : POSENC_VECTOR_REGISTER(a[0]), POSENC_VECTOR_REGISTER(a[1]), POSENC_VECTOR_REGISTER(a[2]),
                POSENC_VECTOR_REGISTER(a[3]), POSENC_VECTOR_REGISTER(b[0]), POSENC_VECTOR_REGISTER(b[1]),
                POSENC_VECTOR_REGISTER(b[2]), POSENC_VECTOR_REGISTER(b[3]));
    }
  }
#endif
}

/// A vector loaded once into a register for reuse: GCC otherwise folds the load into every FMA
/// that uses it (a memory operand each time), which on a block of R rows issues R loads per vector
/// and makes the micro-kernel load-bound instead of FMA-bound.
template <class V>
POSENC_ALWAYS_INLINE V load_once(const void* p) {
  V v = load<V>(p);
  pin_to_register(v);
  return v;
}

/// Bytes of one FloatVec, the alignment stream_store needs.
inline constexpr Index kVectorBytes = sizeof(FloatVec);

namespace detail {
// The widest register of the target and its non-temporal store.
#if defined(__AVX512F__)
using NativeVec = __m512;
POSENC_ALWAYS_INLINE void stream_native(float* p, NativeVec v) { _mm512_stream_ps(p, v); }
#elif defined(__AVX__)
using NativeVec = __m256;
POSENC_ALWAYS_INLINE void stream_native(float* p, NativeVec v) { _mm256_stream_ps(p, v); }
#elif defined(__SSE__)
using NativeVec = __m128;
POSENC_ALWAYS_INLINE void stream_native(float* p, NativeVec v) { _mm_stream_ps(p, v); }
#endif
}  // namespace detail

/// store() with a non-temporal hint: the lines go to memory without being read first or kept in
/// the caches (x86 `movntps`, in pieces of the widest register the target has). `p` must be
/// kVectorBytes-aligned. Without SSE (or for a vector narrower than the registers), a plain
/// store. Call stream_fence() after the last one.
POSENC_ALWAYS_INLINE void stream_store(float* p, const FloatVec& v) {
#if defined(__SSE__)
  if constexpr (sizeof(FloatVec) >= sizeof(detail::NativeVec)) {
    constexpr Index kPieces = sizeof(FloatVec) / sizeof(detail::NativeVec);
    constexpr Index kFloats = sizeof(detail::NativeVec) / sizeof(float);
    const auto* lanes = reinterpret_cast<const float*>(&v);
    for (Index i = 0; i < kPieces; ++i) {
      detail::stream_native(p + i * kFloats, load<detail::NativeVec>(lanes + i * kFloats));
    }
    return;
  }
#endif
  store(p, v);
}

/// Orders the non-temporal stores before every later store (`sfence`), so a thread that is
/// handed the output afterwards sees it.
POSENC_ALWAYS_INLINE void stream_fence() {
#if defined(__SSE__)
  _mm_sfence();
#endif
}

/// store(), or stream_store() when Stream.
template <bool Stream>
POSENC_ALWAYS_INLINE void put(float* p, const FloatVec& v) {
  if constexpr (Stream) {
    stream_store(p, v);
  } else {
    store(p, v);
  }
}

/// Every lane = x, in a register (`FloatVec{} + x` would add the zero, to keep -0).
POSENC_ALWAYS_INLINE FloatVec splat(float x) {
  FloatVec v = x - FloatVec{};
  pin_to_register(v);
  return v;
}

namespace detail {
template <std::size_t... I>
POSENC_ALWAYS_INLINE FloatVec duplicate_pairs(HalfFloatVec v, std::index_sequence<I...>) {
  return __builtin_shufflevector(v, v, static_cast<int>(I / 2)...);  // [v0 v0 v1 v1 ...]
}
template <std::size_t... I>
POSENC_ALWAYS_INLINE FloatVec swap_pairs(FloatVec v, std::index_sequence<I...>) {
  return __builtin_shufflevector(v, v, static_cast<int>(I ^ 1)...);  // [v1 v0 v3 v2 ...]
}
template <std::size_t... I>
constexpr FloatVec alternating_sign(std::index_sequence<I...>) {
  return FloatVec{(I % 2 == 0 ? -1.0f : 1.0f)...};  // [-1 +1 -1 +1 ...]
}
}  // namespace detail

// Horizontal sum and maximum, halving the vector log2(lanes) times.
using Float2 = float __attribute__((vector_size(8)));
using Float4 = float __attribute__((vector_size(16)));
#if POSENC_FLOAT_LANES >= 8
using Float8 = float __attribute__((vector_size(32)));
#endif
#if POSENC_FLOAT_LANES >= 16
using Float16 = float __attribute__((vector_size(64)));
#endif
POSENC_ALWAYS_INLINE float reduce_sum(Float2 v) { return v[0] + v[1]; }
POSENC_ALWAYS_INLINE float reduce_sum(Float4 v) {
  return reduce_sum(__builtin_shufflevector(v, v, 0, 1) + __builtin_shufflevector(v, v, 2, 3));
}
#if POSENC_FLOAT_LANES >= 8
POSENC_ALWAYS_INLINE float reduce_sum(Float8 v) {
  return reduce_sum(__builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7));
}
#endif
#if POSENC_FLOAT_LANES >= 16
POSENC_ALWAYS_INLINE float reduce_sum(Float16 v) {
  return reduce_sum(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                    __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15));
}
#endif
/// sums[i] = the horizontal sum of v[i], i < N. Eight 8-lane vectors (AVX), or eight or sixteen
/// 16-lane ones (AVX-512), are reduced together, transposing as they add (the hadd tree: for
/// eight, 6 pair-adds and one or two cross-quarter adds, instead of three or four halvings each);
/// otherwise one at a time.
template <int N>
POSENC_ALWAYS_INLINE void reduce_sums(const FloatVec (&v)[N], float* sums) {
#if POSENC_FLOAT_LANES == 8
  if constexpr (N == 8) {
    // [a0+a1 a2+a3 b0+b1 b2+b3 | a4+a5 a6+a7 b4+b5 b6+b7], as vhaddps does within each 128-bit half
    const auto pair_add = [](Float8 a, Float8 b) {
      return __builtin_shufflevector(a, b, 0, 2, 8, 10, 4, 6, 12, 14) +
             __builtin_shufflevector(a, b, 1, 3, 9, 11, 5, 7, 13, 15);
    };
    const Float8 low = pair_add(pair_add(v[0], v[1]), pair_add(v[2], v[3]));   // halves: sums of v0..v3
    const Float8 high = pair_add(pair_add(v[4], v[5]), pair_add(v[6], v[7]));  // halves: sums of v4..v7
    store(sums, __builtin_shufflevector(low, high, 0, 1, 2, 3, 8, 9, 10, 11) +
                    __builtin_shufflevector(low, high, 4, 5, 6, 7, 12, 13, 14, 15));
    return;
  }
#elif POSENC_FLOAT_LANES == 16
  if constexpr (N == 8 || N == 16) {
    // The same tree on 16 lanes: pair-adds within each 128-bit quarter (vshufps), after which
    // quarter i of group g holds the sums of quarter i of v[4g .. 4g + 3]; then the quarters of
    // each group are added across (vshuff32x4): group g's four sums end in quarter g.
    const auto pair_add = [](Float16 a, Float16 b) {
      return __builtin_shufflevector(a, b, 0, 2, 16, 18, 4, 6, 20, 22, 8, 10, 24, 26, 12, 14, 28, 30) +
             __builtin_shufflevector(a, b, 1, 3, 17, 19, 5, 7, 21, 23, 9, 11, 25, 27, 13, 15, 29, 31);
    };
    // [a.q0 a.q1 b.q0 b.q1] + [a.q2 a.q3 b.q2 b.q3]: quarters 0-1 hold a's halves, 2-3 b's
    const auto halves_add = [](Float16 a, Float16 b) {
      return __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
             __builtin_shufflevector(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    };
    Float16 group[N / 4];
#pragma GCC unroll 4
    for (int g = 0; g < N / 4; ++g) {
      group[g] = pair_add(pair_add(v[4 * g], v[4 * g + 1]), pair_add(v[4 * g + 2], v[4 * g + 3]));
    }
    const Float16 low = halves_add(group[0], group[1]);  // groups 0, 1: two quarters each
    if constexpr (N == 8) {
      store(sums, __builtin_shufflevector(low, low, 0, 1, 2, 3, 8, 9, 10, 11) +
                      __builtin_shufflevector(low, low, 4, 5, 6, 7, 12, 13, 14, 15));
    } else {
      const Float16 high = halves_add(group[2], group[3]);
      store(sums, __builtin_shufflevector(low, high, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
                      __builtin_shufflevector(low, high, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31));
    }
    return;
  }
#endif
#pragma GCC unroll 8
  for (int i = 0; i < N; ++i) sums[i] = reduce_sum(v[i]);
}

template <class V>
POSENC_ALWAYS_INLINE V max(V a, V b) {
  return a > b ? a : b;
}
POSENC_ALWAYS_INLINE float reduce_max(Float2 v) { return v[0] > v[1] ? v[0] : v[1]; }
POSENC_ALWAYS_INLINE float reduce_max(Float4 v) {
  return reduce_max(max(__builtin_shufflevector(v, v, 0, 1), __builtin_shufflevector(v, v, 2, 3)));
}
#if POSENC_FLOAT_LANES >= 8
POSENC_ALWAYS_INLINE float reduce_max(Float8 v) {
  return reduce_max(max(__builtin_shufflevector(v, v, 0, 1, 2, 3), __builtin_shufflevector(v, v, 4, 5, 6, 7)));
}
#endif
#if POSENC_FLOAT_LANES >= 16
POSENC_ALWAYS_INLINE float reduce_max(Float16 v) {
  return reduce_max(max(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7),
                        __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15)));
}
#endif

namespace detail {
/// One row of half-layout RoPE from `in` to `out`, which is either the same row (in place,
/// InPlace) or disjoint from it: each step reads its lanes before it writes them. With a rotary
/// width fixed at compile time (Pairs > 0) the loop unrolls and, inlined in a loop over heads, the
/// cos/sin vectors stay in registers; Pairs == 0 takes the width at run time. Stream (out of
/// place, Pairs a multiple of the lanes, `out` vector-aligned): non-temporal stores.
template <Index Pairs, bool InPlace, bool Stream = false>
POSENC_ALWAYS_INLINE void rotate_half_row(const float* in, float* out, const float* POSENC_RESTRICT cos,
                                          const float* POSENC_RESTRICT sin, Index runtime_pairs) {
  if constexpr (Pairs > 0 && Pairs % kFloatLanes == 0) {
    // A block of up to 4 vectors of each half at a time (with AVX-512 and head_dim 128, the whole
    // row): blocks of 4, 2 and 1 ran at 1.00, 0.99 and 0.92 of an in-place update of the same bytes
    // (Zen 4; 0.95-1.01 against 0.85-0.90 for blocks of 1 on Zen 5). In place, every load of the
    // block is issued first, the vectors held together in registers, then the stores: left to
    // itself GCC mixes them (it loaded line 4 of the row, then line 0, and stored line 0 before
    // loading line 3), and [4096, 32, 128] ran at 0.84-0.93 of the update in a harness that
    // alternates kernels, 0.95-0.99 loads first, as the interleaved layout (0.95-1.00). Out of
    // place, loads first ran slower (0.35-0.36 of the update against 0.40-0.41), so there the
    // first half's lanes are stored as soon as their pairs are read. (bench/NOTES.md, 2026-12-03.)
    constexpr Index kVectors = Pairs / kFloatLanes;
    constexpr Index kBlock = kVectors < 4 ? kVectors : 4;  // vectors of each half held at once
    for (Index v0 = 0; v0 < kVectors; v0 += kBlock) {
      FloatVec a[kBlock], b[kBlock];
#pragma GCC unroll 4
      for (Index v = 0; v < kBlock; ++v) a[v] = load_once<FloatVec>(in + (v0 + v) * kFloatLanes);
      if constexpr (InPlace) {
#pragma GCC unroll 4
        for (Index v = 0; v < kBlock; ++v) b[v] = load_once<FloatVec>(in + Pairs + (v0 + v) * kFloatLanes);
        pin_to_registers(a, b);
      }
#pragma GCC unroll 4
      for (Index v = 0; v < kBlock; ++v) {
        const Index i = (v0 + v) * kFloatLanes;
        if constexpr (!InPlace) b[v] = load_once<FloatVec>(in + Pairs + i);
        const FloatVec c = load<FloatVec>(cos + i), s = load<FloatVec>(sin + i);
        put<Stream>(out + i, a[v] * c - b[v] * s);  // lane i of the first half: its a and b are read
        b[v] = b[v] * c + a[v] * s;
      }
#pragma GCC unroll 4
      for (Index v = 0; v < kBlock; ++v) put<Stream>(out + Pairs + (v0 + v) * kFloatLanes, b[v]);
    }
    return;
  }
  const Index pairs = Pairs > 0 ? Pairs : runtime_pairs;
  const Index whole = pairs / kFloatLanes * kFloatLanes;
  for (Index i = 0; i < whole; i += kFloatLanes) {
    const FloatVec a = load<FloatVec>(in + i);
    const FloatVec b = load<FloatVec>(in + pairs + i);
    const FloatVec c = load<FloatVec>(cos + i);
    const FloatVec s = load<FloatVec>(sin + i);
    store(out + i, a * c - b * s);
    store(out + pairs + i, b * c + a * s);
  }
  for (Index i = whole; i < pairs; ++i) {
    const float a = in[i];
    const float b = in[pairs + i];
    out[i] = a * cos[i] - b * sin[i];
    out[pairs + i] = b * cos[i] + a * sin[i];
  }
}

/// One row of interleaved-layout RoPE, `in` to `out` as rotate_half_row:
/// y = x * [c c] + swap_pairs(x) * [-s s].
POSENC_ALWAYS_INLINE void rotate_interleaved_row(const float* in, float* out, const float* POSENC_RESTRICT cos,
                                                 const float* POSENC_RESTRICT sin, Index pairs) {
  constexpr auto lanes = std::make_index_sequence<kFloatLanes>{};
  constexpr FloatVec sign = alternating_sign(lanes);
  Index i = 0;
  for (; i + kDoubleLanes <= pairs; i += kDoubleLanes) {
    const FloatVec v = load<FloatVec>(in + 2 * i);
    const FloatVec c = duplicate_pairs(load<HalfFloatVec>(cos + i), lanes);
    const FloatVec s = duplicate_pairs(load<HalfFloatVec>(sin + i), lanes) * sign;
    store(out + 2 * i, v * c + swap_pairs(v, lanes) * s);
  }
  for (; i < pairs; ++i) {
    const float a = in[2 * i];
    const float b = in[2 * i + 1];
    out[2 * i] = a * cos[i] - b * sin[i];
    out[2 * i + 1] = b * cos[i] + a * sin[i];
  }
}
}  // namespace detail

/// RoPE, half layout: pair (x[i], x[i + pairs]). Same contract as scalar::rotate_half.
inline void rotate_half(float* x, const float* cos, const float* sin, Index pairs) {
  detail::rotate_half_row<0, true>(x, x, cos, sin, pairs);
}
/// Out of place: out = `in` rotated. `in` and `out` are the same row or do not overlap.
inline void rotate_half(const float* in, float* out, const float* cos, const float* sin, Index pairs) {
  detail::rotate_half_row<0, false>(in, out, cos, sin, pairs);
}

/// RoPE, interleaved layout: pair (x[2i], x[2i+1]).
inline void rotate_interleaved(float* x, const float* cos, const float* sin, Index pairs) {
  detail::rotate_interleaved_row(x, x, cos, sin, pairs);
}
/// Out of place, as rotate_half.
inline void rotate_interleaved(const float* in, float* out, const float* cos, const float* sin, Index pairs) {
  detail::rotate_interleaved_row(in, out, cos, sin, pairs);
}

namespace detail {
/// rotate_half_heads for a compile-time (Pairs > 0) or run-time rotary width.
template <Index Pairs, bool InPlace, bool Stream = false>
POSENC_ALWAYS_INLINE void rotate_half_heads(const float* in, float* out, Index heads, Index stride,
                                            const float* POSENC_RESTRICT cos, const float* POSENC_RESTRICT sin,
                                            Index runtime_pairs) {
  for (Index h = 0; h < heads; ++h) {
    rotate_half_row<Pairs, InPlace, Stream>(in + h * stride, out + h * stride, cos, sin, runtime_pairs);
  }
}

/// rotate_interleaved_heads. For a rotary width fixed at compile time (Pairs > 0, a multiple of
/// the lanes) the pair-duplicated cos and signed sin (a cross-lane shuffle each) are formed once
/// per token. Stream (Pairs > 0, `out` and `stride` vector-aligned): non-temporal stores.
template <Index Pairs, bool Stream = false>
POSENC_ALWAYS_INLINE void rotate_interleaved_heads(const float* in, float* out, Index heads, Index stride,
                                                   const float* POSENC_RESTRICT cos, const float* POSENC_RESTRICT sin,
                                                   Index runtime_pairs) {
  if constexpr (Pairs == 0) {
    for (Index h = 0; h < heads; ++h) rotate_interleaved_row(in + h * stride, out + h * stride, cos, sin, runtime_pairs);
  } else {
    static_assert(Pairs % kDoubleLanes == 0);
    constexpr auto lanes = std::make_index_sequence<kFloatLanes>{};
    constexpr FloatVec sign = alternating_sign(lanes);
    constexpr Index kVectors = Pairs / kDoubleLanes;
    FloatVec c[kVectors], s[kVectors];
#pragma GCC unroll 16
    for (Index v = 0; v < kVectors; ++v) {
      c[v] = duplicate_pairs(load<HalfFloatVec>(cos + v * kDoubleLanes), lanes);
      s[v] = duplicate_pairs(load<HalfFloatVec>(sin + v * kDoubleLanes), lanes) * sign;
    }
    for (Index h = 0; h < heads; ++h) {
      const float* row_in = in + h * stride;
      float* row_out = out + h * stride;
      // The 2 * kVectors cos/sin vectors outnumber AVX2's 16 registers, so about half come from the
      // stack; loaded once, x is one load per vector instead of two (GCC otherwise reads it for the
      // pair swap and again as the multiply's operand). On data in cache, where vector loads limit
      // the loop, that took it from 0.78-0.81 to 0.90-1.00 of an in-place update's rate
      // (bench rope_incache/, bench/NOTES.md).
#pragma GCC unroll 16
      for (Index v = 0; v < kVectors; ++v) {
        const FloatVec value = load_once<FloatVec>(row_in + v * kFloatLanes);
        put<Stream>(row_out + v * kFloatLanes, value * c[v] + swap_pairs(value, lanes) * s[v]);
      }
    }
  }
}

/// Calls rotate(std::integral_constant<Index, P>{}) with P = pairs for the common rotary widths
/// (head_dim 64, 128 and the partial 32), which then get a fully unrolled row, else P = 0.
template <class Rotate>
POSENC_ALWAYS_INLINE void with_fixed_pairs(Index pairs, Rotate&& rotate) {
  switch (pairs) {
    case 16: return rotate(std::integral_constant<Index, 16>{});
    case 32: return rotate(std::integral_constant<Index, 32>{});
    case 64: return rotate(std::integral_constant<Index, 64>{});
    default: return rotate(std::integral_constant<Index, 0>{});
  }
}
}  // namespace detail

/// RoPE of the `heads` rows at x + h * stride (the heads of one token), which share one cos/sin
/// row, in place; half layout. Rows are visited in memory order and nothing is requested ahead:
/// in-place RoPE is memory-bound, and the hardware prefetchers follow a stream in memory order.
/// Software requests for the next token's rows (a line each as each row is read) took
/// [4096, 32, 128] from 0.93-0.97 to 0.97-1.03 of an in-place update of the same bytes on Zen 5,
/// but on Zen 4 (32 KiB L1), whose prefetchers keep up alone, from 0.89 (half) and 0.95
/// (interleaved) down to 0.66 and 0.78 (bench/NOTES.md).
inline void rotate_half_heads(float* x, Index heads, Index stride, const float* cos, const float* sin, Index pairs) {
  detail::with_fixed_pairs(pairs, [&](auto fixed) {
    detail::rotate_half_heads<fixed(), true>(x, x, heads, stride, cos, sin, pairs);
  });
}
/// Out of place: the rows in + h * stride rotated into out + h * stride, which do not overlap them.
/// (A separate function from the in-place one, where the compiler knows that out is in.)
inline void rotate_half_heads(const float* in, float* out, Index heads, Index stride, const float* cos,
                              const float* sin, Index pairs) {
  detail::with_fixed_pairs(pairs, [&](auto fixed) {
    detail::rotate_half_heads<fixed(), false>(in, out, heads, stride, cos, sin, pairs);
  });
}

/// Interleaved layout of rotate_half_heads.
inline void rotate_interleaved_heads(float* x, Index heads, Index stride, const float* cos, const float* sin,
                                     Index pairs) {
  detail::with_fixed_pairs(pairs, [&](auto fixed) {
    detail::rotate_interleaved_heads<fixed()>(x, x, heads, stride, cos, sin, pairs);
  });
}
inline void rotate_interleaved_heads(const float* in, float* out, Index heads, Index stride, const float* cos,
                                     const float* sin, Index pairs) {
  detail::with_fixed_pairs(pairs, [&](auto fixed) {
    detail::rotate_interleaved_heads<fixed()>(in, out, heads, stride, cos, sin, pairs);
  });
}

/// The out-of-place rotate_half_heads / rotate_interleaved_heads with non-temporal stores
/// (stream_store), for outputs larger than the last-level cache: the copy reads `in` and writes
/// `out` without reading `out`'s lines first, 2 bytes of memory traffic per output byte instead
/// of 3. `out` and `stride` must be kVectorBytes-aligned; rotary widths the fixed-width loops do
/// not cover (with_fixed_pairs) take plain stores. Call stream_fence() after the last row.
inline void rotate_half_heads_streaming(const float* in, float* out, Index heads, Index stride, const float* cos,
                                        const float* sin, Index pairs) {
  detail::with_fixed_pairs(pairs, [&](auto fixed) {
    constexpr bool kWholeVectors = fixed() > 0 && fixed() % kFloatLanes == 0;
    detail::rotate_half_heads<fixed(), false, kWholeVectors>(in, out, heads, stride, cos, sin, pairs);
  });
}
inline void rotate_interleaved_heads_streaming(const float* in, float* out, Index heads, Index stride,
                                               const float* cos, const float* sin, Index pairs) {
  detail::with_fixed_pairs(pairs, [&](auto fixed) {
    detail::rotate_interleaved_heads<fixed(), (fixed() > 0)>(in, out, heads, stride, cos, sin, pairs);
  });
}

/// e^x for x <= 0 (softmax weights), relative error ~2e-7; x < -87 (incl. -inf) gives 0.
/// Cephes-style: x = n ln2 + r, |r| <= ln2/2, e^r by a degree-6 polynomial, 2^n via the exponent.
POSENC_ALWAYS_INLINE FloatVec exp_nonpositive(FloatVec x) {
  using Int32Vec = std::int32_t __attribute__((vector_size(kFloatLanes * sizeof(std::int32_t))));
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2High = 0.693359375f;  // ln 2 = high + low, high with few bits so n * high is exact
  constexpr float kLn2Low = -2.12194440e-4f;
  constexpr float kRoundMagic = 0x1.8p23f;
  const auto underflow = x < -87.0f;
  const FloatVec clamped = underflow ? FloatVec{} - 87.0f : x;
  const FloatVec n = (clamped * kLog2e + kRoundMagic) - kRoundMagic;
  const FloatVec r = (clamped - n * kLn2High) - n * kLn2Low;
  FloatVec p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const Int32Vec exponent = (__builtin_convertvector(n, Int32Vec) + 127) << 23;
  FloatVec scale;
  std::memcpy(&scale, &exponent, sizeof scale);
  return underflow ? FloatVec{} : p * scale;
}

/// ALiBi ramp: row[j] -= slope * |distance0 - j| (same contract as scalar::add_alibi_ramp).
inline void add_alibi_ramp(float* POSENC_RESTRICT row, double slope, Position distance0, Index n) {
  const float s = static_cast<float>(slope);
  const FloatVec lanes = [] {  // 0, 1, 2, ...: a constant, not built lane by lane per call
    FloatVec v{};
    for (int l = 0; l < kFloatLanes; ++l) v[l] = static_cast<float>(l);
    return v;
  }();
  FloatVec d = static_cast<float>(distance0) - lanes;  // d0 - j for the first lanes
  Index j = 0;
  for (; j + kFloatLanes <= n; j += kFloatLanes) {
    const FloatVec distance = d < 0.0f ? -d : d;
    store(row + j, load<FloatVec>(row + j) - s * distance);
    d -= static_cast<float>(kFloatLanes);
  }
  scalar::add_alibi_ramp(row + j, slope, distance0 - j, n - j);
}

/// scalar::largest_of, a vector of lanes at a time: each lane keeps the running rule, so a NaN
/// x[j] is passed over as there, and the order does not matter otherwise (a maximum).
inline float largest_of(const float* x, Index n, float init) {
  const auto keep_larger = [](auto largest, auto v) { return largest < v ? v : largest; };
  FloatVec lanes = splat(-std::numeric_limits<float>::infinity());
  Index j = 0;
  for (; j + kFloatLanes <= n; j += kFloatLanes) lanes = keep_larger(lanes, load<FloatVec>(x + j));
  // The lanes hold no NaN (each passed its NaN entries over), so reduce_max's own rule is safe.
  return scalar::largest_of(x + j, n - j, keep_larger(init, reduce_max(lanes)));
}

/// Largest |angle| that sincos() reduces exactly (k * 21-bit constant stays within 53 bits).
inline constexpr double kSinCosMaxAngle = 4294967296.0;  // 2^32
/// Whether sincos() may take angles up to `max_angle` (else libm's cos/sin must).
POSENC_ALWAYS_INLINE bool sincos_exact_up_to(double max_angle) { return max_angle <= kSinCosMaxAngle; }

/// sin and cos of double angles 0 <= |x| <= kSinCosMaxAngle, error ~1e-11 (float outputs need
/// 6e-8). Cody-Waite reduction by pi/2 split in three 21-bit parts and a tail, so k * part is exact
/// for |k| < 2^32; then Taylor polynomials on [-pi/4, pi/4] and a quadrant swap.
POSENC_ALWAYS_INLINE void sincos(DoubleVec x, DoubleVec& sin_out, DoubleVec& cos_out) {
  constexpr double kTwoOverPi = 0x1.45f306dc9c883p-1;
  constexpr double kPiOver2Part1 = 0x1.921fb00000000p+0;
  constexpr double kPiOver2Part2 = 0x1.5110b00000000p-22;
  constexpr double kPiOver2Part3 = 0x1.1846a00000000p-44;
  constexpr double kPiOver2Part4 = -0x1.d9cceba3f91f2p-66;
  constexpr double kRoundMagic = 0x1.8p52;  // (v + magic) - magic rounds v to an integer
  const DoubleVec k = (x * kTwoOverPi + kRoundMagic) - kRoundMagic;
  const DoubleVec r = (((x - k * kPiOver2Part1) - k * kPiOver2Part2) - k * kPiOver2Part3) - k * kPiOver2Part4;
  const DoubleVec r2 = r * r;
  // sin r = r (1 - r^2/3! + r^4/5! - ... - r^10/11!), cos r = 1 - r^2/2! + ... + r^12/12!
  const DoubleVec s =
      r + r * r2 *
              (-1.0 / 6 + r2 * (1.0 / 120 + r2 * (-1.0 / 5040 + r2 * (1.0 / 362880 + r2 * (-1.0 / 39916800.0)))));
  const DoubleVec c =
      1.0 + r2 * (-0.5 + r2 * (1.0 / 24 + r2 * (-1.0 / 720 + r2 * (1.0 / 40320 + r2 * (-1.0 / 3628800.0 +
                                                                                      r2 * (1.0 / 479001600.0))))));
  const Int64Vec quadrant = __builtin_convertvector(k, Int64Vec) & 3;
  const auto odd = (quadrant & 1) != 0;
  const DoubleVec sin_abs = odd ? c : s;
  const DoubleVec cos_abs = odd ? s : c;
  sin_out = (quadrant & 2) != 0 ? -sin_abs : sin_abs;
  cos_out = ((quadrant + 1) & 2) != 0 ? -cos_abs : cos_abs;
}

/// cos/sin of position * inv_freq[i] times the attention factor, for i < pairs, as float. The
/// caller guarantees position * max(inv_freq) <= kSinCosMaxAngle.
inline void rotary_cos_sin(Position position, const double* POSENC_RESTRICT inv_freq, double attention_factor,
                           Index pairs, float* POSENC_RESTRICT cos, float* POSENC_RESTRICT sin) {
  const double p = static_cast<double>(position);
  Index i = 0;
  for (; i + kDoubleLanes <= pairs; i += kDoubleLanes) {
    DoubleVec s, c;
    sincos(load<DoubleVec>(inv_freq + i) * p, s, c);
    store(cos + i, __builtin_convertvector(c * attention_factor, HalfFloatVec));
    store(sin + i, __builtin_convertvector(s * attention_factor, HalfFloatVec));
  }
  scalar::rotary_cos_sin(position, inv_freq + i, attention_factor, pairs - i, cos + i, sin + i);
}

}  // namespace posenc::kernel::simd

#endif  // vector extensions
