#pragma once
// The tile geometry of the tiled attention and its register-blocked micro-kernels:
// S += q[r][d] * Kt[d][c..] (score_block, score_tile) and O[r][..] += P[r][j] * V[j][..]
// (output_block), on K and V packed in slabs of the kernels' width.

#include <algorithm>
#include <limits>

#include "posenc/config.hpp"
#include "posenc/kernel/simd.hpp"

#if defined(POSENC_HAS_VECTOR_KERNELS)

namespace posenc::detail {

namespace simd = kernel::simd;
using simd::FloatVec;
using simd::kFloatLanes;

inline constexpr Index kQueryTile = 64;
inline constexpr Index kKeyTile = 64;          // a multiple of 2 * kFloatLanes
// Micro-kernel register blocks (rows x vectors of accumulators): 4 x 4 with 32 vector registers
// (AVX-512), 6 x 2 with 16 (AVX2, SSE): 12 accumulators hide the FMA latency on two pipes, and
// 6 broadcasts + 2 loads per 12 FMAs leave the load ports slack. Measured in isolation (score
// block, L1-resident): AVX-512 4 x 4 ~0.95 of FMA peak (8 x 2 ~0.75); AVX2 on Zen 3 6 x 2 ~1.0,
// 5 x 2 ~1.0, 3 x 4 ~0.78, 2 x 4 ~0.76, 4 x 3 ~0.73.
inline constexpr int kScoreRows = kFloatLanes >= 16 ? 4 : 6;
inline constexpr int kScoreVectors = kFloatLanes >= 16 ? 4 : 2;
inline constexpr int kOutputRows = kScoreRows;
inline constexpr int kOutputVectors = kScoreVectors;
// Packed K and V are stored in slabs of the micro-kernels' width, each slab contiguous: a strided
// slab (16 of 64 columns at 256 B per row) fell into a quarter of the L1 sets and thrashed them.
inline constexpr Index kScoreSlab = kScoreVectors * kFloatLanes;    // key columns per K slab
inline constexpr Index kOutputSlab = kOutputVectors * kFloatLanes;  // value columns per V slab
constexpr float kMinusInfinity = -std::numeric_limits<float>::infinity();

constexpr Index round_up(Index n, Index multiple) { return (n + multiple - 1) / multiple * multiple; }
/// Rows of the per-tile buffers: the query tile rounded up to whole register blocks (the padding
/// rows hold zero queries; their results are never written out).
inline constexpr Index kPaddedQueryTile = round_up(kQueryTile, kScoreRows);
/// Floats of the bias of one block of kScoreRows query rows against a key tile (tile_bias).
inline constexpr Index kBlockBiasLength = kScoreRows + kKeyTile - 1;

using simd::reduce_max;
using simd::reduce_sum;

/// acc[r][x] += sum_{j < n} a[r * a_stride + j] * b[j * b_stride + x * lanes, + lanes): a register
/// block of Rows x Vectors accumulators updated by n rank-1 products, each b vector loaded once and
/// each a value broadcast once per j (the inner loop of both micro-kernels below).
template <int Rows, int Vectors>
POSENC_ALWAYS_INLINE void accumulate_rank1(FloatVec (&acc)[Rows][Vectors], const float* POSENC_RESTRICT a, Index a_stride,
                                           const float* POSENC_RESTRICT b, Index b_stride, Index n) {
#pragma GCC unroll 4
  for (Index j = 0; j < n; ++j) {
    FloatVec bv[Vectors];
#pragma GCC unroll 8
    for (int x = 0; x < Vectors; ++x) bv[x] = simd::load<FloatVec>(b + j * b_stride + x * kFloatLanes);
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
      const float ar = a[r * a_stride + j];
#pragma GCC unroll 8
      for (int x = 0; x < Vectors; ++x) acc[r][x] += ar * bv[x];
    }
  }
}

/// s[r][c0 + c] = scale * sum_d q[r][d] kt[d][c0 + c] for kScoreRows rows and the
/// kScoreVectors vectors of columns from c0; when Biased, plus bias[c - r] (row r's bias starts r
/// floats before row 0's, see tile_bias).
template <bool Biased>
POSENC_ALWAYS_INLINE void score_block(const float* POSENC_RESTRICT q, Index q_stride, const float* POSENC_RESTRICT kt,
                                      Index d, float scale, const float* POSENC_RESTRICT bias,
                                      float* POSENC_RESTRICT s) {
  FloatVec acc[kScoreRows][kScoreVectors] = {};
  accumulate_rank1<kScoreRows, kScoreVectors>(acc, q, q_stride, kt, kScoreSlab, d);
#pragma GCC unroll 8
  for (int r = 0; r < kScoreRows; ++r) {
#pragma GCC unroll 8
    for (int x = 0; x < kScoreVectors; ++x) {
      if constexpr (Biased) {
        simd::store(s + r * kKeyTile + x * kFloatLanes,
                    acc[r][x] * scale + simd::load<FloatVec>(bias - r + x * kFloatLanes));
      } else {
        simd::store(s + r * kKeyTile + x * kFloatLanes, acc[r][x] * scale);
      }
    }
  }
}

/// Scores of `rows` query rows (a multiple of kScoreRows, q rows d apart) against one packed key
/// tile: s[r][c] = scale * q_r . k_c, plus bias[r / kScoreRows][kScoreRows - 1 - r % kScoreRows + c]
/// when Biased (tile_bias).
/// Slabs outermost: a K slab ([d][kScoreSlab], 8 KiB at d = 128 on AVX2) stays in L1 while every
/// query row block passes over it.
/// Row block b needs only the keys before block_keys[b]: slabs wholly past it are not computed.
template <bool Biased>
void score_tile(const float* POSENC_RESTRICT q, Index rows, const float* POSENC_RESTRICT kt, Index d, float scale,
                const float (*bias)[kBlockBiasLength], const Index* block_keys, float* POSENC_RESTRICT s) {
  for (Index c0 = 0; c0 < kKeyTile; c0 += kScoreSlab) {
    for (Index r = 0; r < rows; r += kScoreRows) {
      if (c0 >= block_keys[r / kScoreRows]) continue;
      score_block<Biased>(q + r * d, d, kt + c0 * d, d, scale,
                          Biased ? bias[r / kScoreRows] + kScoreRows - 1 + c0 : nullptr, s + r * kKeyTile + c0);
    }
  }
}

/// o[r][..] = correction[r] * o[r][..] + sum_{j < keys} p[r][j] v[j][..] for kOutputRows rows and
/// Vectors vectors of columns (o rows o_stride apart, v rows v_stride apart, p rows kKeyTile apart).
template <int Vectors>
POSENC_ALWAYS_INLINE void output_block(const float* POSENC_RESTRICT p, Index keys, const float* POSENC_RESTRICT v, Index v_stride,
                                       const float* POSENC_RESTRICT correction, float* POSENC_RESTRICT o,
                                       Index o_stride) {
  FloatVec acc[kOutputRows][Vectors];
#pragma GCC unroll 8
  for (int r = 0; r < kOutputRows; ++r) {
#pragma GCC unroll 8
    for (int x = 0; x < Vectors; ++x) acc[r][x] = simd::load<FloatVec>(o + r * o_stride + x * kFloatLanes) * correction[r];
  }
  accumulate_rank1<kOutputRows, Vectors>(acc, p, kKeyTile, v, v_stride, keys);
#pragma GCC unroll 8
  for (int r = 0; r < kOutputRows; ++r) {
#pragma GCC unroll 8
    for (int x = 0; x < Vectors; ++x) simd::store(o + r * o_stride + x * kFloatLanes, acc[r][x]);
  }
}

}  // namespace posenc::detail

#endif  // POSENC_HAS_VECTOR_KERNELS
