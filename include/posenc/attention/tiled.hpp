#pragma once
// Tiled attention with a streaming softmax (FlashAttention-2, Dao 2023, on CPU): queries in tiles
// of kQueryTile rows, keys in tiles of kKeyTile; per key tile the scores S = scale Q K^T, the
// policy's bias row hook, the causal/padding mask, the running max/sum update and O += P V, all in
// cache-resident buffers. No [q, k] matrix is ever stored; key tiles wholly in a causal query
// tile's future are skipped. Query/key rotation is applied once per tile row.
//
// Two schedules:
//  * prefill (many queries): per (sequence, kv head) the keys are rotated once and packed into
//    tiles (K transposed, V padded, both in slabs of the micro-kernel width), then every query head
//    of the group streams its query tiles over them, the next key tile asked into the L2 while
//    the current one is weighed. Register-blocked micro-kernels:
//    S += q[r][d] * Kt[d][c..] and O[r][..] += P[r][j] * V[j][..].
//  * decode (few queries, e.g. one new token against a KV cache): K and V are streamed once, in
//    tiles of 64 or 256 KiB (by the L2's size) requested in memory order a cache line per
//    micro-kernel step ahead of use, with one softmax step per chunk of 256 keys; each vector is
//    shared by every query head of its group (GQA without copying K/V).
//
// The prefill buffers (packed keys, per-thread tiles) are kept by the calling thread between calls
// (see PrefillBuffers).
//
// Threads: work items are (query head, query tile) for prefill and kv heads for decode; the count
// comes from AttentionOptions::threads, else the POSENC_THREADS environment variable, else 1.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <thread>
#include <type_traits>
#include <vector>

#if __has_include(<unistd.h>)
#include <unistd.h>  // sysconf: the L2 size that sets the decode tile
#endif

#include "posenc/attention/checks.hpp"
#include "posenc/attention/options.hpp"
#include "posenc/concepts.hpp"
#include "posenc/kernel/simd.hpp"

#if defined(POSENC_HAS_VECTOR_KERNELS)

namespace posenc::detail {

namespace simd = kernel::simd;
using simd::FloatVec;
using simd::kFloatLanes;

inline constexpr Index kQueryTile = 64;
inline constexpr Index kKeyTile = 64;          // a multiple of 2 * kFloatLanes
inline constexpr Index kDecodeMaxQueries = 8;   // fewer queries than this: the decode schedule
// Decode key tiles hold about decode_tile_bytes() of K (and as many of V) across the kv heads a
// call streams; the tile in use and the tile being requested both stay in L2. Each query head's
// rows serve a whole tile of keys before the next head's are read, and they stay in L1 only if
// the tile is long: the requested stream of one tile passes through L1 before a head's rows are
// read again. With a 1 MiB L2 (Zen 5), GQA decode (Lk 4096, 32 heads on 8 kv heads; none, ALiBi,
// RoPE) ran at 25.7-29.5 GB/s with 16-key tiles (64 KiB), 28.0-32.8 with 32 and 30.1-35.3 with
// 64 (256 KiB) (bench/ decode, three alternating rounds); 128-key tiles (512 KiB) were slower
// than 64 in a harness. With a 512 KiB L2 (Zen 3), 32-key tiles lost ~10 % against 16, and
// multi-head decode (32 kv heads) ran 0.61-0.76 of read bandwidth with 16-key tiles (256 KiB)
// against 0.70-0.98 with 8.
inline constexpr Index kDecodeTileBytes = Index{64} << 10;       // an L2 under 1 MiB
inline constexpr Index kDecodeWideTileBytes = Index{256} << 10;  // an L2 of 1 MiB or more

/// Bytes of the calling core's L2 cache as the C library reports it (glibc reads CPUID), or 0
/// where it does not.
inline Index l2_cache_bytes() {
#if defined(_SC_LEVEL2_CACHE_SIZE)
  const long bytes = sysconf(_SC_LEVEL2_CACHE_SIZE);
  return bytes > 0 ? static_cast<Index>(bytes) : 0;
#else
  return 0;
#endif
}

/// The decode tile size for this machine (above), looked up once.
inline Index decode_tile_bytes() {
  static const Index bytes = l2_cache_bytes() >= (Index{1} << 20) ? kDecodeWideTileBytes : kDecodeTileBytes;
  return bytes;
}

// Keys per decode tile: compile-time widths, as the score rows and the softmax are vectorised over
// them; never narrower than one vector (8 floats on AVX2, 16 on AVX-512), so a tile may hold more
// than decode_tile_bytes() when a key is wide (32 kv heads at d = 128: 16 keys, 256 KiB).
inline constexpr Index kDecodeKeyTiles[] = {std::max<Index>(8, kFloatLanes), 16, 32, 64};
// Decode softmax chunks: the keys of one online-softmax step (decode_kv_heads), where the scores
// of all rows over them take at most kDecodeChunkScoreBytes (32 rows: 32 KiB).
inline constexpr Index kDecodeChunkKeys = 256;
inline constexpr Index kDecodeChunkScoreBytes = Index{64} << 10;
// Decode threads: each one streams at least this much K and V, or the call uses fewer. A thread
// is started and joined per call (~30 us on the 2-vCPU Zen 3 host), while 2 MiB take ~150 us to
// stream; a decode call over 32 cached keys ran 3x slower on two threads than on one.
inline constexpr Index kDecodeBytesPerThread = Index{2} << 20;
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

/// Thread count of a call: options.threads, else $POSENC_THREADS, else 1.
inline int attention_threads(const AttentionOptions& options) {
  if (options.threads > 0) return options.threads;
  if (const char* env = std::getenv("POSENC_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  return 1;
}

/// Runs body(item, worker) for item in [0, items) on `threads` threads (the caller is worker 0).
template <class Body>
void parallel_for(Index items, int threads, Body&& body) {
  threads = static_cast<int>(std::min<Index>(threads, items));
  if (threads <= 1) {
    for (Index i = 0; i < items; ++i) body(i, 0);
    return;
  }
  std::atomic<Index> next{0};
  const auto work = [&](int worker) {
    for (Index i = next++; i < items; i = next++) body(i, worker);
  };
  std::vector<std::thread> pool;
  for (int w = 1; w < threads; ++w) pool.emplace_back(work, w);
  work(0);
  for (auto& t : pool) t.join();
}

using simd::reduce_max;
using simd::reduce_sum;

/// s[r][c0 + c] = scale * sum_d q[r][d] kt[d][c0 + c] for kScoreRows rows and the
/// kScoreVectors vectors of columns from c0; when Biased, plus bias[c - r] (row r's bias starts r
/// floats before row 0's, see tile_bias).
template <bool Biased>
POSENC_ALWAYS_INLINE void score_block(const float* POSENC_RESTRICT q, Index q_stride, const float* POSENC_RESTRICT kt,
                                      Index d, float scale, const float* POSENC_RESTRICT bias,
                                      float* POSENC_RESTRICT s) {
  FloatVec acc[kScoreRows][kScoreVectors] = {};
#pragma GCC unroll 4
  for (Index dd = 0; dd < d; ++dd) {
    FloatVec k[kScoreVectors];
#pragma GCC unroll 8
    for (int x = 0; x < kScoreVectors; ++x) k[x] = simd::load<FloatVec>(kt + dd * kScoreSlab + x * kFloatLanes);
#pragma GCC unroll 8
    for (int r = 0; r < kScoreRows; ++r) {
      const float qv = q[r * q_stride + dd];
#pragma GCC unroll 8
      for (int x = 0; x < kScoreVectors; ++x) acc[r][x] += qv * k[x];
    }
  }
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
#pragma GCC unroll 4
  for (Index j = 0; j < keys; ++j) {
    FloatVec vv[Vectors];
#pragma GCC unroll 8
    for (int x = 0; x < Vectors; ++x) vv[x] = simd::load<FloatVec>(v + j * v_stride + x * kFloatLanes);
#pragma GCC unroll 8
    for (int r = 0; r < kOutputRows; ++r) {
      const float pr = p[r * kKeyTile + j];
#pragma GCC unroll 8
      for (int x = 0; x < Vectors; ++x) acc[r][x] += pr * vv[x];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kOutputRows; ++r) {
#pragma GCC unroll 8
    for (int x = 0; x < Vectors; ++x) simd::store(o + r * o_stride + x * kFloatLanes, acc[r][x]);
  }
}

/// Online-softmax bookkeeping of one query row (Milakov & Gimelshein 2018).
struct RowState {
  double max = -std::numeric_limits<double>::infinity();
  double sum = 0.0;
};

/// max of a tile row (Width values), in vectors.
template <Index Width, class T>
double tile_row_max(const T* row) {
  static_assert(Width % kFloatLanes == 0, "tile rows are whole vectors");
  using Vec = std::conditional_t<std::is_same_v<T, float>, FloatVec, simd::DoubleVec>;
  constexpr Index lanes = sizeof(Vec) / sizeof(T);
  Vec m = simd::load<Vec>(row);
  for (Index j = lanes; j < Width; j += lanes) m = simd::max(m, simd::load<Vec>(row + j));
  if constexpr (std::is_same_v<T, float>) {
    return simd::reduce_max(m);
  } else {
    double result = m[0];
    for (Index l = 1; l < lanes; ++l) result = std::max(result, m[l]);
    return result;
  }
}

/// Turns one tile row of scores (float, or double when a bias was added; masked entries -inf)
/// into weights exp(score - new max), updates the row's running max and sum, and returns the
/// factor that rescales the row's earlier output. Scores are shifted by the max in their own
/// precision, so only small numbers are rounded to float. `scores` hold logit - offset (offset 0
/// but for rows biased relative to a per-row constant, see weigh_tile_row); tile_max is the
/// largest logit itself.
template <Index Width, class T>
float softmax_tile_row(const T* scores, double tile_max, double offset, float* weights,
                       RowState& state) {  // may alias
  static_assert(Width % kFloatLanes == 0, "tile rows are whole vectors");
  using Vec = std::conditional_t<std::is_same_v<T, float>, FloatVec, simd::DoubleVec>;
  constexpr Index lanes = sizeof(Vec) / sizeof(T);
  const double new_max = std::max(state.max, tile_max);
  if (new_max == -std::numeric_limits<double>::infinity()) {  // nothing visible yet: weights 0
    std::fill(weights, weights + Width, 0.0f);
    return 1.0f;
  }
  // exp(old max - new max): 1 when the max stays (usual once the nearest keys are seen), 0 when
  // there was no old max; a one-lane vector exp avoids a libm call.
  const float correction =
      state.max == new_max ? 1.0f : simd::exp_nonpositive(FloatVec{} + static_cast<float>(state.max - new_max))[0];
  if constexpr (std::is_same_v<T, double>) {
    for (Index j = 0; j < Width; j += lanes) {
      simd::store(weights + j, __builtin_convertvector(simd::load<Vec>(scores + j) - (new_max - offset),
                                                       simd::HalfFloatVec));
    }
  }
  const float shift = std::is_same_v<T, double> ? 0.0f : static_cast<float>(new_max - offset);
  const float* shifted = std::is_same_v<T, double> ? weights : reinterpret_cast<const float*>(scores);
  FloatVec total{};
  for (Index j = 0; j < Width; j += kFloatLanes) {
    const FloatVec p = simd::exp_nonpositive(simd::load<FloatVec>(shifted + j) - shift);
    simd::store(weights + j, p);
    total += p;
  }
  state.sum = state.sum * correction + reduce_sum(total);
  state.max = new_max;
  return correction;
}

/// Positions and mask of one attention call, for one sequence.
struct SequenceView {
  const Position* q_positions;
  const Position* k_positions;
  const std::uint8_t* key_padding;  // may be null
  bool causal;
  bool visible(Position q, Index j) const {
    return (!causal || k_positions[j] <= q) && (key_padding == nullptr || key_padding[j] == 0);
  }
};

/// Largest |running max| at which float score rows are accurate enough for softmax (float
/// spacing 2e-6 at 16; the conformance tolerance is 2e-5).
inline constexpr float kFloatExactLogit = 16.0f;
/// Largest row constant (bias hooks' offset) the float rows are taken relative to. Past it the
/// logits' own rounding in double (2^-22 at 2^30) starts to show in FORMAT's reference, which
/// rounds bias + score as they are (a 1e20 table leaves no digit of the score: uniform weights),
/// so such rows are redone key by key in double, as the reference computes them.
inline constexpr double kLargestRowOffset = 1 << 30;

/// A tile row with the bias added key by key (weigh_tile_row): in float, and in double for rows
/// that need it.
template <Index Width>
struct BiasRows {
  float single[Width];
  double dual[Width];
};

/// The bias of a query tile by blocks of kScoreRows rows, each less its offset (tile_bias).
struct BlockBias {
  float rows[kPaddedQueryTile / kScoreRows][kBlockBiasLength];
  double offset[kPaddedQueryTile / kScoreRows];
};

/// How a tile row gets its score bias: key by key (add_bias_row), as keys at consecutive positions
/// (add_bias_row_consecutive), or already added to the scores (tile_bias), the row then holding
/// logit - offset.
struct RowBias {
  enum Form { kPerKey, kConsecutiveKeys, kInScores } form = kPerKey;
  double offset = 0.0;  // kInScores
};

/// The bias of a tile of query rows at consecutive positions q0, q0 + 1, ... (`rows` of them,
/// padding included) against kKeyTile keys at consecutive positions k0, k0 + 1, ..., for a bias
/// that depends on k - q only. In each block of kScoreRows rows, row r's bias is the slice
/// [kScoreRows - 1 - r, + kKeyTile) of one consecutive row: that of the block's last query against
/// kBlockBiasLength keys from k0. One hook call per row block instead of one per row (ALiBi and T5
/// prefill spent ~6 % of their time in per-row hooks); score_tile adds the slices as it stores the
/// scores. Per block, not per tile: each row's largest weights then stay near 0, where float is
/// finest (one row for a whole tile left some rows' largest ALiBi weights near -64 slope: errors
/// up to 1.7e-6 at 16 heads, against < 1e-6 with per-row offsets).
template <RelativeScoreBias P>
void tile_bias(const P& policy, Index head, Position q0, Position k0, Index rows, BlockBias& block) {
  for (Index r = 0; r < rows; r += kScoreRows) {
    float* bias = block.rows[r / kScoreRows];
    std::fill(bias, bias + kBlockBiasLength, 0.0f);
    block.offset[r / kScoreRows] =
        policy.add_bias_row_consecutive(head, q0 + r + kScoreRows - 1, k0, kBlockBiasLength, bias);
  }
}

/// Whether every key j0 .. j0 + n - 1 is visible to every query at position >= q_min (no
/// padding, none in the future): the tile's rows then need no mask.
inline bool tile_all_visible(const SequenceView& seq, Index j0, Index n, Position q_min) {
  for (Index j = j0; j < j0 + n; ++j) {
    if (!seq.visible(q_min, j)) return false;
  }
  return true;
}

/// Scores of one query row against one key tile (n real keys, the rest padding) to softmax
/// weights, in place: the policy's bias (unless tile_bias added it), the mask, the online
/// softmax. Keys at consecutive positions take the policy's consecutive hook, which adds the bias
/// less a per-row constant it returns (ALiBi: the bias of the tile's key nearest the query), so
/// the float row stays small at any distance; softmax is invariant under the shift. Otherwise the
/// bias is added in float while the row's running max stays small, and the row is redone in
/// double when it does not (every visible key far away, ALiBi biases in the millions), so large
/// positions lose no accuracy.
/// The constant of a consecutive or tile_bias row is taken over keys the row may not see (masked
/// keys, or a row block's other rows' keys). Where their biases lie far above those of the keys it
/// sees (a T5 table with a future bucket at +3000 and past ones at -3000), the row's running max
/// falls far below the constant, where float has lost the digits softmax needs: the row is then
/// redone key by key from its scores without bias, as it is when the constant exceeds
/// kLargestRowOffset. `rescore(row)` writes those scores for a kInScores row (they were never
/// stored).
/// The row may hold stale values where its keys are invisible (causal prefill skips the keys past
/// a row block's last query, see attend_query_tile): the mask overwrites them before anything
/// reads the row but the bias hooks, which only add to it.
template <Index Width, class P, class Rescore>
float weigh_tile_row(const P& policy, Index head, const SequenceView& seq, Position q, Index j0, Index n,
                     bool all_visible, RowBias bias, float* row, BiasRows<Width>& buffers, RowState& state,
                     Rescore&& rescore) {
  const auto mask = [&](auto* values, auto masked) {
    if (all_visible) return;
    for (Index j = 0; j < Width; ++j) {
      if (j >= n || !seq.visible(q, j0 + j)) values[j] = masked;
    }
  };
  if constexpr (P::kScoreBias) {
    // The row holds logit - offset, masked: its softmax step, unless the offset is huge or the
    // running max lies far below it (then false, the state untouched).
    const auto weigh_offset_row = [&](double offset, float& correction) {
      if (!(std::fabs(offset) <= kLargestRowOffset)) return false;  // NaN too
      const double largest = tile_row_max<Width>(row) + offset;
      const double new_max = std::max(state.max, largest);
      if (new_max != -std::numeric_limits<double>::infinity() && new_max - offset < -kFloatExactLogit) return false;
      correction = softmax_tile_row<Width>(row, largest, offset, row, state);
      return true;
    };
    float correction = 1.0f;
    if (bias.form == RowBias::kInScores) {
      mask(row, kMinusInfinity);
      if (weigh_offset_row(bias.offset, correction)) return correction;
      rescore(row);
    }
    if constexpr (ConsecutiveScoreBias<P>) {
      if (bias.form == RowBias::kConsecutiveKeys) {
        std::copy(row, row + Width, buffers.single);  // the scores without bias, should the row be redone
        const double offset = policy.add_bias_row_consecutive(head, q, seq.k_positions[j0], n, row);
        mask(row, kMinusInfinity);
        if (weigh_offset_row(offset, correction)) return correction;
        std::copy(buffers.single, buffers.single + Width, row);
      }
    }
    float* biased = buffers.single;
    std::copy(row, row + Width, biased);
    policy.add_bias_row(head, q, seq.k_positions + j0, n, biased);
    mask(biased, kMinusInfinity);
    const double tile_max = tile_row_max<Width>(biased);
    const double new_max = std::max(state.max, tile_max);
    if (std::fabs(new_max) > kFloatExactLogit && new_max != -std::numeric_limits<double>::infinity()) {
      double* precise = buffers.dual;
      std::copy(row, row + Width, precise);
      policy.add_bias_row(head, q, seq.k_positions + j0, n, precise);
      mask(precise, -std::numeric_limits<double>::infinity());
      return softmax_tile_row<Width>(precise, tile_row_max<Width>(precise), 0.0, row, state);
    }
    return softmax_tile_row<Width>(biased, tile_max, 0.0, row, state);
  } else {
    (void)policy, (void)head, (void)buffers, (void)bias, (void)rescore;
    mask(row, kMinusInfinity);
    return softmax_tile_row<Width>(row, tile_row_max<Width>(row), 0.0, row, state);
  }
}

/// Key tiles of one (sequence, kv head): rotated K transposed in key slabs
/// [tile][kKeyTile / kScoreSlab][d][kScoreSlab]; V padded to `width` columns, in column slabs
/// [tile][slab][kKeyTile][slab width] (kOutputSlab, the last one narrower); plus each tile's
/// position range and whether any key in it is padded.
struct PackedKeys {
  Index tiles = 0;
  Index width = 0;  // head_dim rounded up to whole vectors
  std::vector<float> kt;
  std::vector<float> v;
  std::vector<Position> min_position, max_position;
  std::vector<std::uint8_t> has_padding;
  std::vector<std::uint8_t> consecutive;  // positions k_first, k_first + 1, ... (the usual cache)
};

/// Asks the L2 for row `row`'s share (of `rows`) of key tile t's packed K and V, so that the
/// prefill's next tile arrives while the rows of the current one are weighed. At L 16384 (16 MiB
/// of packed K and V per kv head, far beyond the L2) causal prefill with ALiBi or T5 ran at 73-82
/// GFLOP/s without and 80-86 with, on Zen 4; at L 2048 no clear difference (bench/NOTES.md).
/// Always inlined: GCC 12 counts a prefetch as no side effect, takes a function of nothing else
/// for const, and drops a call to it.
POSENC_ALWAYS_INLINE void request_key_tile_share(const PackedKeys& keys, Index t, Index d, Index row, Index rows) {
  static_assert(kKeyTile * sizeof(float) % kCacheLineBytes == 0, "a packed tile's K and V are whole lines");
  const Index k_lines = d * kKeyTile * Index{sizeof(float)} / kCacheLineBytes;
  const Index lines = k_lines + kKeyTile * keys.width * Index{sizeof(float)} / kCacheLineBytes;
  const Index per_row = (lines + rows - 1) / rows;
  const auto* k = reinterpret_cast<const char*>(keys.kt.data() + t * d * kKeyTile);
  const auto* v = reinterpret_cast<const char*>(keys.v.data() + t * kKeyTile * keys.width);
  for (Index line = row * per_row; line < std::min((row + 1) * per_row, lines); ++line) {
    // into the L2
    __builtin_prefetch(line < k_lines ? k + line * kCacheLineBytes : v + (line - k_lines) * kCacheLineBytes, 0, 2);
  }
}

/// Whether positions[0, n) are p, p + 1, ..., p + n - 1.
inline bool consecutive_positions(const Position* positions, Index n) {
  for (Index j = 1; j < n; ++j) {
    if (positions[j] != positions[0] + j) return false;
  }
  return true;
}

/// out [tokens, heads, d] = the rows of `tokens` tokens, token t's `heads` rows at
/// in + t * in_stride (d apart), rotated by the policy's query/key rotation where it has one. A
/// policy that rotates out of place while gathering (RoPE) reads each row once; one that only
/// rotates in place (all QKRotation asks) gets a copy first.
template <class P, class Rotation>
void gather_rows(const P& policy, const Rotation* rotation, const float* in, Index in_stride, Index tokens,
                 Index heads, Index d, const Position* positions, float* out) {
  if constexpr (requires { policy.rotate_unchecked(in, in_stride, out, tokens, heads, positions, *rotation); }) {
    policy.rotate_unchecked(in, in_stride, out, tokens, heads, positions, *rotation);
  } else {
    for (Index t = 0; t < tokens; ++t) {
      std::copy(in + t * in_stride, in + t * in_stride + heads * d, out + t * heads * d);
    }
    if constexpr (P::kQKRotation) policy.rotate_unchecked(out, tokens, heads, positions, *rotation);
  }
}

template <class P, class Rotation>
void pack_keys(const AttentionShape& s, const float* k, const float* v, Index b, Index kv_head,
               const SequenceView& seq, const P& policy, const Rotation* rotation, PackedKeys& packed) {
  const Index d = s.head_dim;
  const Index kv_stride = s.kv_heads * d;  // floats between consecutive keys
  packed.tiles = (s.k_len + kKeyTile - 1) / kKeyTile;
  packed.width = round_up(d, kFloatLanes);
  // Not zero-filled here: each tile is written below, and zeroed first only where it has padding
  // (keys past k_len, columns past d). Padded V must be 0 (its weights are 0, and 0 * a stale
  // infinity is NaN); padded K only meets masked scores, zeroed all the same.
  packed.kt.resize(static_cast<std::size_t>(packed.tiles * d * kKeyTile));
  packed.v.resize(static_cast<std::size_t>(packed.tiles * kKeyTile * packed.width));
  packed.min_position.assign(static_cast<std::size_t>(packed.tiles), std::numeric_limits<Position>::max());
  packed.max_position.assign(static_cast<std::size_t>(packed.tiles), -1);
  packed.has_padding.assign(static_cast<std::size_t>(packed.tiles), 0);
  packed.consecutive.assign(static_cast<std::size_t>(packed.tiles), 0);
  std::vector<float> rotated(P::kQKRotation ? static_cast<std::size_t>(kKeyTile * d) : 0);
  for (Index t = 0; t < packed.tiles; ++t) {
    const Index j0 = t * kKeyTile;
    const Index n = std::min(kKeyTile, s.k_len - j0);
    const float* k_tile = k + ((b * s.k_len + j0) * s.kv_heads + kv_head) * d;
    const float* v_tile = v + ((b * s.k_len + j0) * s.kv_heads + kv_head) * d;
    float* kt = packed.kt.data() + t * d * kKeyTile;
    float* v_packed = packed.v.data() + t * kKeyTile * packed.width;
    if (n < kKeyTile) std::fill(kt, kt + d * kKeyTile, 0.0f);
    if (n < kKeyTile || packed.width != d) std::fill(v_packed, v_packed + kKeyTile * packed.width, 0.0f);
    for (Index j = 0; j < n; ++j) {
      const float* v_row = v_tile + j * kv_stride;
      for (Index c0 = 0; c0 < d; c0 += kOutputSlab) {
        const Index slab_width = std::min(kOutputSlab, packed.width - c0);
        std::copy(v_row + c0, v_row + std::min(d, c0 + slab_width), v_packed + c0 * kKeyTile + j * slab_width);
      }
      const Position p = seq.k_positions[j0 + j];
      packed.min_position[static_cast<std::size_t>(t)] = std::min(packed.min_position[static_cast<std::size_t>(t)], p);
      packed.max_position[static_cast<std::size_t>(t)] = std::max(packed.max_position[static_cast<std::size_t>(t)], p);
      if (seq.key_padding != nullptr && seq.key_padding[j0 + j] != 0) packed.has_padding[static_cast<std::size_t>(t)] = 1;
    }
    packed.consecutive[static_cast<std::size_t>(t)] = consecutive_positions(seq.k_positions + j0, n);
    const float* k_rows = k_tile;  // key j of the tile at k_rows + j * k_row_stride
    Index k_row_stride = kv_stride;
    if constexpr (P::kQKRotation) {
      if (rotates_keys(policy)) {
        gather_rows(policy, rotation, k_tile, kv_stride, n, 1, d, seq.k_positions + j0, rotated.data());
        k_rows = rotated.data();
        k_row_stride = d;
      }
    }
    for (Index j = 0; j < n; ++j) {
      float* slab = kt + (j / kScoreSlab) * d * kScoreSlab + j % kScoreSlab;
      for (Index c = 0; c < d; ++c) slab[c * kScoreSlab] = k_rows[j * k_row_stride + c];
    }
  }
}

/// Per-thread buffers of the prefill schedule.
struct QueryTileScratch {
  // output: the tile's unnormalised rows in V's column slabs, [slab][row][slab width], so the rows
  // a V slab updates are contiguous (4 KiB on AVX2). Rows of the full width (512 B apart at
  // d = 128) fell into 8 of the 64 L1 sets, and the micro-kernel's accumulator loads missed:
  // ~5 % of the P V samples in perf, gone with the slabs.
  std::vector<float> q, scores, output, correction;
  std::vector<RowState> rows;
  BiasRows<kKeyTile> bias_rows;
  BlockBias block_bias;
  void size_for(Index d, Index width) {
    q.assign(static_cast<std::size_t>(kPaddedQueryTile * d), 0.0f);
    scores.assign(static_cast<std::size_t>(kPaddedQueryTile * kKeyTile), 0.0f);
    output.resize(static_cast<std::size_t>(kPaddedQueryTile * width));
    correction.assign(static_cast<std::size_t>(kPaddedQueryTile), 1.0f);
    rows.resize(static_cast<std::size_t>(kPaddedQueryTile));
  }
};

/// The prefill schedule's buffers, kept by each calling thread from one call to the next (2 Lk D
/// floats of packed K and V, plus ~100 KiB per worker at d = 128). With fresh buffers, glibc
/// handed the freed megabytes back to the kernel and each causal L = 2048 call faulted ~500 pages
/// in again, ~6 % of its time on the 2-vCPU Zen 3 host (medians of 5 alternating runs, 21.0 vs
/// 19.7 ms). release_attention_buffers() frees them.
struct PrefillBuffers {
  PackedKeys keys;
  std::vector<QueryTileScratch> workers;
};

inline PrefillBuffers& thread_prefill_buffers() {
  static thread_local PrefillBuffers buffers;
  return buffers;
}

/// One query tile of one head against every visible key tile; writes its rows of `out`.
template <class P, class Rotation>
void attend_query_tile(const AttentionShape& s, const float* q, Index b, Index head, Index i0,
                       const SequenceView& seq, const PackedKeys& keys, const P& policy, const Rotation* rotation,
                       float scale, QueryTileScratch& scratch, float* out) {
  const Index d = s.head_dim;
  const Index width = keys.width;
  const Index n = std::min(kQueryTile, s.q_len - i0);
  const Position* qp = seq.q_positions + i0;
  gather_rows(policy, rotation, q + ((b * s.q_len + i0) * s.heads + head) * d, s.heads * d, n, 1, d, qp,
              scratch.q.data());
  std::fill(scratch.q.begin() + n * d, scratch.q.end(), 0.0f);
  std::fill(scratch.output.begin(), scratch.output.end(), 0.0f);
  std::fill(scratch.rows.begin(), scratch.rows.end(), RowState{});
  Position q_min = std::numeric_limits<Position>::max(), q_max = -1;
  for (Index i = 0; i < n; ++i) {
    q_min = std::min(q_min, qp[i]);
    q_max = std::max(q_max, qp[i]);
  }
  const Index rows = round_up(n, kScoreRows);
  const bool queries_consecutive = consecutive_positions(qp, n);

  // Last key tile first: with causal self-attention it holds the nearest keys, so the running max
  // is set by the largest scores early and later (far) tiles only add small weights.
  for (Index t = keys.tiles - 1; t >= 0; --t) {
    const auto tile = static_cast<std::size_t>(t);
    if (seq.causal && keys.min_position[tile] > q_max) continue;  // wholly in the future
    const Index j0 = t * kKeyTile;
    const Index keys_in_tile = std::min(kKeyTile, s.k_len - j0);
    const bool all_visible = keys_in_tile == kKeyTile && !keys.has_padding[tile] &&
                             (!seq.causal || keys.max_position[tile] <= q_min);
    const float* kt = keys.kt.data() + t * d * kKeyTile;
    bool bias_in_scores = false;
    if constexpr (RelativeScoreBias<P>) {
      // The block rows reach past the tile's last query and key: only within valid positions.
      if (queries_consecutive && keys.consecutive[tile] != 0 && qp[0] + rows - 1 <= kMaxPosition &&
          seq.k_positions[j0] + kBlockBiasLength - 1 <= kMaxPosition) {
        tile_bias(policy, head, qp[0], seq.k_positions[j0], rows, scratch.block_bias);
        bias_in_scores = true;
      }
    }
    // Keys a row block can see: causally, none after the last one at or before the block's last
    // query. Their scores are left unwritten and their P V terms skipped: on the diagonal tile of
    // causal self-attention ~40 % of its work (AVX2: 15 of its 44 score blocks and 44 % of the P V
    // terms skipped). Only where the tile is not all visible, so weigh_tile_row masks them (-inf)
    // before any max or exp reads the row.
    Index block_keys[kPaddedQueryTile / kScoreRows];
    for (Index r = 0; r < rows; r += kScoreRows) {
      Index keys_seen = kKeyTile;
      if (!all_visible && seq.causal) {
        const Position q_last = *std::max_element(qp + r, qp + std::min(r + kScoreRows, n));
        keys_seen = keys_in_tile;
        while (keys_seen > 0 && seq.k_positions[j0 + keys_seen - 1] > q_last) --keys_seen;
      }
      block_keys[r / kScoreRows] = keys_seen;
    }
    if (bias_in_scores) {
      score_tile<true>(scratch.q.data(), rows, kt, d, scale, scratch.block_bias.rows, block_keys,
                       scratch.scores.data());
    } else {
      score_tile<false>(scratch.q.data(), rows, kt, d, scale, nullptr, block_keys, scratch.scores.data());
    }
    for (Index i = 0; i < n; ++i) {
      if (t > 0) request_key_tile_share(keys, t - 1, d, i, n);  // the next tile of the walk
      const RowBias bias = bias_in_scores ? RowBias{RowBias::kInScores, scratch.block_bias.offset[i / kScoreRows]}
                           : keys.consecutive[tile] != 0 ? RowBias{RowBias::kConsecutiveKeys}
                                                         : RowBias{RowBias::kPerKey};
      // Row i's scores without bias, through the same kernel as the unbiased tiles (its whole block).
      const auto rescore = [&](float* row) {
        float block[kScoreRows * kKeyTile];
        const Index first = i / kScoreRows * kScoreRows;
        const Index every_key[1] = {kKeyTile};
        score_tile<false>(scratch.q.data() + first * d, kScoreRows, kt, d, scale, nullptr, every_key, block);
        std::copy(block + (i - first) * kKeyTile, block + (i - first + 1) * kKeyTile, row);
      };
      scratch.correction[static_cast<std::size_t>(i)] =
          weigh_tile_row<kKeyTile>(policy, head, seq, qp[i], j0, keys_in_tile, all_visible, bias,
                                   scratch.scores.data() + i * kKeyTile, scratch.bias_rows,
                                   scratch.rows[static_cast<std::size_t>(i)], rescore);
    }
    const float* v = keys.v.data() + t * kKeyTile * width;
    // V slab outermost (kKeyTile x kOutputSlab, 4 KiB on AVX2): it stays in L1 while every row
    // block passes over it.
    const auto rows_over_slab = [&](auto vectors, const float* v_columns, float* o_columns, Index stride) {
      for (Index i = 0; i < n; i += kOutputRows) {
        output_block<decltype(vectors)::value>(scratch.scores.data() + i * kKeyTile, block_keys[i / kOutputRows],
                                               v_columns, stride,
                                               scratch.correction.data() + i, o_columns + i * stride, stride);
      }
    };
    for (Index c0 = 0; c0 < width; c0 += kOutputSlab) {
      const Index slab_width = std::min(kOutputSlab, width - c0);
      const float* slab = v + c0 * kKeyTile;
      float* o_slab = scratch.output.data() + c0 * kPaddedQueryTile;
      if (slab_width == kOutputSlab) {
        rows_over_slab(std::integral_constant<int, kOutputVectors>{}, slab, o_slab, slab_width);
      } else {
        for (Index x = 0; x < slab_width; x += kFloatLanes) {
          rows_over_slab(std::integral_constant<int, 1>{}, slab + x, o_slab + x, slab_width);
        }
      }
    }
  }
  for (Index i = 0; i < n; ++i) {
    float* o = out + ((b * s.q_len + i0 + i) * s.heads + head) * d;
    const RowState& state = scratch.rows[static_cast<std::size_t>(i)];
    const float inverse = state.sum > 0.0 ? static_cast<float>(1.0 / state.sum) : 0.0f;  // no visible key: zeros
    for (Index c0 = 0; c0 < d; c0 += kOutputSlab) {
      const Index slab_width = std::min(kOutputSlab, width - c0);
      const float* o_slab = scratch.output.data() + c0 * kPaddedQueryTile + i * slab_width;
      for (Index c = c0; c < std::min(d, c0 + slab_width); ++c) o[c] = o_slab[c - c0] * inverse;
    }
  }
}

/// Requests a byte range (the next K or V tile) a little at a time: each micro-kernel step asks for
/// about as many bytes as it reads itself (whole lines, rounded up), so the requests are spread
/// over the arithmetic and the memory stream overlaps it. (When several row blocks share a kv
/// head, K is read once per block and the range is requested within the first block's reads.)
/// Requests in bursts (a row block's share of the tile at once) fill the core's miss buffers and
/// stall it: decode ran ~1.5x slower on Zen 3. Addresses are kept as integers: prefetches never
/// fault, and the walk may start before or end after the arrays it covers by less than a line.
/// Requests are also paced: each address waits on the one before through a multiply by one (3-4
/// cycles a line, ~16 bytes a cycle, above what one core streams from memory). Unpaced, the
/// kernels asked at the rate they compute on L2 data (~95 GB/s on Zen 5), the requests filled the
/// miss buffers the kernels' own L2 reads need, and decode streamed at 36-39 GB/s against 40-42
/// paced (GQA), 35-38 against 46-48 (multi-head), with the read probe at 51-54. A streaming loop
/// with a request per line read showed the same: 41-42 GB/s, 51-55 with the paced requests or with
/// its arithmetic slowed to 4 cycles a line, 34 at 7 cycles (bench/NOTES.md).
/// The lines are asked into the L2, not the L1 (`prefetcht1`); the tiles are several times the
/// L1 either way, and the kernels' L1 misses then hit the L2. On Zen 4 (32 KiB L1) GQA decode
/// streamed at 0.81-0.92 of the read probe so, against 0.47-0.56 asked into the L1 (multi-head
/// ~0.9 against ~0.65); on Zen 5 (48 KiB L1) the L1 had measured 10-15 % faster, unpaced.
class StreamPrefetcher {
 public:
  /// The range: `rows` runs of `run_floats` floats, `stride_floats` apart (one run when they
  /// touch: a thread that streams only some kv heads asks for only those). `first` is not
  /// dereferenced, and not used at all when rows is 0.
  void reset(const float* first, Index rows, Index run_floats, Index stride_floats) {
    if (rows <= 0) {
      runs_left_ = 0;
      next_ = run_end_ = 0;
      return;
    }
    if (run_floats == stride_floats) {
      run_floats *= rows;
      rows = 1;
    }
    runs_left_ = rows;
    run_bytes_ = static_cast<std::uintptr_t>(run_floats) * sizeof(float);
    stride_bytes_ = static_cast<std::uintptr_t>(stride_floats) * sizeof(float);
    const auto start = reinterpret_cast<std::uintptr_t>(first);
    run_end_ = start + run_bytes_;
    next_ = line_start(start);
    pace_ = 1;
    __asm__("" : "+r"(pace_));  // 1, but unknown to the compiler, which would drop the multiply in step()
  }
  /// One step that reads `Vectors` vectors of the current stream. The end of the run is tested
  /// per line, not once per step: with one test per step decode streamed slower (36-39 against
  /// 40-43 GB/s, Zen 5), as did the kernels with their arithmetic taken out. Spacing out the
  /// requests among other instructions seems to keep fewer in flight at once (bench/NOTES.md).
  template <int Vectors>
  POSENC_ALWAYS_INLINE void step() {
    constexpr std::uintptr_t kBytes = Vectors * kFloatLanes * sizeof(float);
    constexpr int kLines = static_cast<int>((kBytes + kCacheLine - 1) / kCacheLine);
#pragma GCC unroll 8
    for (int i = 0; i < kLines; ++i) {
      if (next_ >= run_end_) {
        if (runs_left_ <= 1) return;
        --runs_left_;
        run_end_ += stride_bytes_;
        next_ = line_start(run_end_ - run_bytes_);
      }
      __builtin_prefetch(reinterpret_cast<const void*>(next_), /*rw=*/0, /*locality=*/2);  // into the L2
      next_ = next_ * pace_ + kCacheLine;  // the pace: the next request waits on this multiply
    }
  }

 private:
  static constexpr auto kCacheLine = static_cast<std::uintptr_t>(kCacheLineBytes);
  static std::uintptr_t line_start(std::uintptr_t address) { return address & ~(kCacheLine - 1); }
  std::uintptr_t next_ = 0;
  std::uintptr_t run_end_ = 0;
  Index runs_left_ = 0;
  std::uintptr_t run_bytes_ = 0;
  std::uintptr_t stride_bytes_ = 0;
  std::uintptr_t pace_ = 1;  // always 1 (see reset)
};

/// o[c, c + Vectors * lanes) = correction * o + sum_j p[j] v_j[same columns]: accumulators stay
/// in registers across the keys (independent FMA chains).
template <int Vectors>
POSENC_ALWAYS_INLINE void accumulate_columns(const float* POSENC_RESTRICT p, Index n, const float* POSENC_RESTRICT v,
                                             Index stride, float correction, float* POSENC_RESTRICT o,
                                             StreamPrefetcher& ahead) {
  FloatVec acc[Vectors];
#pragma GCC unroll 8
  for (int x = 0; x < Vectors; ++x) acc[x] = simd::load<FloatVec>(o + x * kFloatLanes) * correction;
  for (Index j = 0; j < n; ++j) {
    ahead.step<Vectors>();
#pragma GCC unroll 8
    for (int x = 0; x < Vectors; ++x) acc[x] += p[j] * simd::load<FloatVec>(v + j * stride + x * kFloatLanes);
  }
#pragma GCC unroll 8
  for (int x = 0; x < Vectors; ++x) simd::store(o + x * kFloatLanes, acc[x]);
}

/// o[0, d) = correction * o + sum_j p[j] v_j, v_j at v + j * stride.
inline void accumulate_rows(const float* POSENC_RESTRICT p, Index n, const float* POSENC_RESTRICT v, Index stride,
                            Index d, float correction, float* POSENC_RESTRICT o, StreamPrefetcher& ahead) {
  constexpr Index kBlock = 8 * kFloatLanes;
  StreamPrefetcher cursor = ahead;  // a local copy stays in registers across the loop
  Index c = 0;
  for (; c + kBlock <= d; c += kBlock) accumulate_columns<8>(p, n, v + c, stride, correction, o + c, cursor);
  for (; c + kFloatLanes <= d; c += kFloatLanes) accumulate_columns<1>(p, n, v + c, stride, correction, o + c, cursor);
  for (; c < d; ++c) {
    float acc = o[c] * correction;
    for (Index j = 0; j < n; ++j) acc += p[j] * v[j * stride + c];
    o[c] = acc;
  }
  ahead = cursor;
}

/// Decode micro-kernels for R (1 .. kDecodeRowBlock) query rows that share a kv head (the query
/// heads of a GQA group): each K and V vector is loaded once per block and used by every row, so
/// the kernels are FMA-bound rather than load-bound (one row per pass loads a vector per FMA).
inline constexpr int kDecodeRowBlock = 4;

/// Keys per step of dot_keys_rows for R rows: R x J accumulators give 8 independent FMA chains
/// with 16 vector registers (6 for R = 3), enough to cover the FMA latency on two pipes; 16 with
/// 32 (AVX-512), where each key vector then serves 4 rows and each query vector 4 keys.
template <int R>
inline constexpr int kDecodeKeysPerStep = (kFloatLanes >= 16 ? 16 : 8) / R;

/// scores[r * score_stride + j] = scale * <q_r, k_j> for r < R, j < J; q rows d apart, k_j at
/// k + j * stride. With several rows each key vector is loaded once into a register; with several
/// keys, each query vector.
template <int R, int J>
POSENC_ALWAYS_INLINE void dot_key_block(const float* POSENC_RESTRICT q, const float* POSENC_RESTRICT k, Index stride,
                                        Index d, float scale, float* POSENC_RESTRICT scores, Index score_stride,
                                        StreamPrefetcher& ahead) {
  const Index whole = d / kFloatLanes * kFloatLanes;
  FloatVec acc[R * J] = {};
  for (Index c = 0; c < whole; c += kFloatLanes) {
    ahead.step<J>();
    FloatVec keys[J];
#pragma GCC unroll 16
    for (int j = 0; j < J; ++j) {
      keys[j] = R > 1 ? simd::load_once<FloatVec>(k + j * stride + c) : simd::load<FloatVec>(k + j * stride + c);
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const FloatVec qv = J > 1 ? simd::load_once<FloatVec>(q + r * d + c) : simd::load<FloatVec>(q + r * d + c);
#pragma GCC unroll 16
      for (int j = 0; j < J; ++j) acc[r * J + j] += qv * keys[j];
    }
  }
  float sums[R * J];
  simd::reduce_sums(acc, sums);
  if (whole < d) {  // a head size that is not a multiple of the vector width
    for (int i = 0; i < R * J; ++i) {
      for (Index c = whole; c < d; ++c) sums[i] += q[i / J * d + c] * k[i % J * stride + c];
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R * J; ++i) sums[i] *= scale;
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) std::memcpy(scores + r * score_stride, sums + r * J, J * sizeof(float));
}

/// scores[r * score_stride + j] = scale * <q_r, k_j> for r < R, j < n: kDecodeKeysPerStep<R> keys
/// at a time, then single keys.
template <int R>
void dot_keys_rows(const float* POSENC_RESTRICT q, const float* POSENC_RESTRICT k, Index stride, Index n, Index d,
                   float scale, float* POSENC_RESTRICT scores, Index score_stride, StreamPrefetcher& ahead) {
  constexpr int J = kDecodeKeysPerStep<R>;
  // A local copy: through the reference the compiler would store and reload the cursor every step.
  StreamPrefetcher cursor = ahead;
  Index j = 0;
  for (; j + J <= n; j += J) dot_key_block<R, J>(q, k + j * stride, stride, d, scale, scores + j, score_stride, cursor);
  for (; j < n; ++j) dot_key_block<R, 1>(q, k + j * stride, stride, d, scale, scores + j, score_stride, cursor);
  ahead = cursor;
}

/// Keys per pass of accumulate_rows_block over a column block. In a KV cache laid out [keys,
/// kv_heads, d], consecutive keys are kv_heads * d floats apart: 4 KiB for 8 kv heads at d = 128,
/// a multiple of the L1's set stride, so the lines of one column of every key fall into one L1
/// set, whose 8 ways a pass over 16 keys overflows. Timed alone (Zen 3, V in L2 or L3), the P V
/// kernel ran at 33-38 GFLOP/s with keys 4 KiB apart against 57-80 with keys 512 B apart and
/// 51-82 at 4 KiB + 64 B; in passes of 8 keys, at 41-61 with keys 4 KiB apart.
inline constexpr Index kDecodeValueKeysPerPass = 8;

/// Vectors per column block of accumulate_rows_block: R x C accumulators, 16 with 32 vector
/// registers (AVX-512), 8 with 16 (AVX2, SSE): enough FMA chains for two pipes, and each value
/// vector loaded serves the R rows, each weight broadcast C vectors.
inline constexpr int kDecodeValueVectors = kFloatLanes >= 16 ? 4 : 2;

/// o_r[c, c + C * lanes) (o_r at o + r * d) = rescale[r] * o_r + sum_{j0<=j<j_end} p_r[j] v_j for
/// r < R, over the same columns of v_j at v + j * stride.
template <int R, int C>
POSENC_ALWAYS_INLINE void accumulate_rows_columns(const float* POSENC_RESTRICT p, Index p_stride, Index j0, Index j_end,
                                                  const float* POSENC_RESTRICT v, Index stride,
                                                  const float* POSENC_RESTRICT rescale, float* POSENC_RESTRICT o,
                                                  Index d, StreamPrefetcher& cursor) {
  FloatVec acc[R][C];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int x = 0; x < C; ++x) acc[r][x] = simd::load<FloatVec>(o + r * d + x * kFloatLanes) * rescale[r];
  }
  for (Index j = j0; j < j_end; ++j) {
    cursor.step<C>();
    FloatVec weights[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) weights[r] = simd::splat(p[r * p_stride + j]);
#pragma GCC unroll 8
    for (int x = 0; x < C; ++x) {
      const FloatVec value = simd::load_once<FloatVec>(v + j * stride + x * kFloatLanes);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][x] += weights[r] * value;
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int x = 0; x < C; ++x) simd::store(o + r * d + x * kFloatLanes, acc[r][x]);
  }
}

/// o_r = correction[r] * o_r + sum_{j<n} p_r[j] v_j for r < R over d columns: o rows d apart, p
/// rows p_stride apart, v_j at v + j * stride. Column blocks of kDecodeValueVectors vectors (then
/// single vectors), kDecodeValueKeysPerPass keys at a time.
template <int R>
void accumulate_rows_block(const float* POSENC_RESTRICT p, Index p_stride, Index n, const float* POSENC_RESTRICT v,
                           Index stride, const float* POSENC_RESTRICT correction, float* POSENC_RESTRICT o, Index d,
                           StreamPrefetcher& ahead) {
  constexpr int C = kDecodeValueVectors;
  StreamPrefetcher cursor = ahead;  // a local copy stays in registers across the loop
  float ones[R];
  std::fill(ones, ones + R, 1.0f);
  for (Index j0 = 0; j0 < n; j0 += kDecodeValueKeysPerPass) {
    const Index j_end = std::min(n, j0 + kDecodeValueKeysPerPass);
    const float* rescale = j0 == 0 ? correction : ones;  // the earlier output is rescaled once
    Index c = 0;
    for (; c + C * kFloatLanes <= d; c += C * kFloatLanes) {
      accumulate_rows_columns<R, C>(p, p_stride, j0, j_end, v + c, stride, rescale, o + c, d, cursor);
    }
    for (; c + kFloatLanes <= d; c += kFloatLanes) {
      accumulate_rows_columns<R, 1>(p, p_stride, j0, j_end, v + c, stride, rescale, o + c, d, cursor);
    }
  }
  const Index whole = d / kFloatLanes * kFloatLanes;
  for (int r = 0; r < R; ++r) {
    if (whole < d) {
      accumulate_rows(p + r * p_stride, n, v + whole, stride, d - whole, correction[r], o + r * d + whole, cursor);
    }
  }
  ahead = cursor;
}

/// Decode schedule for one sequence and the kv heads [kv_begin, kv_end), in chunks of Chunk keys
/// (a multiple of KeyTile): the scores of each row block (its query rows stay in L1) against the
/// chunk's K, in KeyTile-key tiles; one online-softmax step per row for the whole chunk; then P V
/// per row block over the chunk's V, in tiles again. Each tile is requested while the one before
/// it is read (K tiles of a chunk, its V tiles, the next chunk's K), one cache line per
/// micro-kernel step, in memory order. Each K and V vector serves the query heads of its group and
/// the (few) queries at once.
/// Why chunks wider than the tiles: a softmax step costs about the same per row at 16 keys as at
/// 256 (reductions, the running-max correction, ALiBi's bias hook), and the memory stream waits
/// while it runs. Per 16-key tile it drew 8 % (NoPosition) and 13 % (ALiBi) of decode's perf
/// samples at Lk = 4096, 32 heads on 8 kv heads.
template <Index KeyTile, Index Chunk, class P, class Rotation>
void decode_kv_heads(const AttentionShape& s, const float* q, const float* k, const float* v, Index b, Index kv_begin,
                     Index kv_end, const SequenceView& seq, const P& policy, const Rotation* rotation, float scale,
                     float* out) {
  static_assert(Chunk % KeyTile == 0, "a chunk is whole key tiles");
  const Index d = s.head_dim;
  const Index group = s.heads / s.kv_heads;
  const Index kv_count = kv_end - kv_begin;
  const Index rows_per_kv = s.q_len * group;  // row r of kv head g: query r / group, head g * group + r % group
  const Index rows = kv_count * rows_per_kv;
  const auto query_of = [&](Index r) { return (r % rows_per_kv) / group; };
  const auto head_of = [&](Index r) { return (kv_begin + r / rows_per_kv) * group + r % group; };
  std::vector<float> q_rows(static_cast<std::size_t>(rows * d)), output(static_cast<std::size_t>(rows * d), 0.0f);
  constexpr Index kTile = KeyTile;
  std::vector<float> scores(static_cast<std::size_t>(rows * Chunk));  // row r at r * Chunk
  std::vector<float> rotated(P::kQKRotation ? static_cast<std::size_t>(kTile * kv_count * d) : 0);
  std::vector<RowState> state(static_cast<std::size_t>(rows));
  std::vector<float> correction(static_cast<std::size_t>(rows));
  BiasRows<Chunk> bias;
  StreamPrefetcher ahead;
  for (Index r = 0; r < rows; ++r) {
    const float* q_row = q + ((b * s.q_len + query_of(r)) * s.heads + head_of(r)) * d;
    gather_rows(policy, rotation, q_row, d, 1, 1, d, seq.q_positions + query_of(r), q_rows.data() + r * d);
  }
  const Position q_min = *std::min_element(seq.q_positions, seq.q_positions + s.q_len);
  // Decided once for the whole cache where they hold (the usual case), not per chunk: the stream
  // of K and V evicts the positions, and the first position load of each tile drew 10 % of this
  // function's perf samples (ALiBi). Only bias policies need to know whether keys are consecutive.
  const bool keys_consecutive = ConsecutiveScoreBias<P> && consecutive_positions(seq.k_positions, s.k_len);
  const bool keys_all_visible = tile_all_visible(seq, 0, s.k_len, q_min);
  const Index kv_stride = s.kv_heads * d;  // floats between consecutive keys
  const auto tile_start = [&](const float* base, Index j0) { return base + ((b * s.k_len + j0) * s.kv_heads + kv_begin) * d; };
  // Requests the tile of K or V (`base`) that starts at key j0 and ends at `end` at the latest.
  const auto request = [&](const float* base, Index j0, Index end) {
    ahead.reset(tile_start(base, j0), std::min(kTile, end - j0), kv_count * d, kv_stride);
  };
  // Rows in blocks of up to kDecodeRowBlock that share a kv head: block(r, count) with the
  // block's row count as a compile-time constant.
  const auto for_row_blocks = [&](auto&& block) {
    for (Index r = 0; r < rows;) {
      const Index end = std::min(r + kDecodeRowBlock, (r / rows_per_kv + 1) * rows_per_kv);
      switch (end - r) {
        case 1: block(r, std::integral_constant<int, 1>{}); break;
        case 2: block(r, std::integral_constant<int, 2>{}); break;
        case 3: block(r, std::integral_constant<int, 3>{}); break;
        default: block(r, std::integral_constant<int, kDecodeRowBlock>{}); break;
      }
      r = end;
    }
  };
  for (Index c0 = 0; c0 < s.k_len; c0 += Chunk) {
    const Index chunk_end = std::min(c0 + Chunk, s.k_len);
    const Index chunk_keys = chunk_end - c0;
    for (Index j0 = c0; j0 < chunk_end; j0 += kTile) {
      const Index n = std::min(kTile, chunk_end - j0);
      const float* k_tile = tile_start(k, j0);  // key j, kv head kv_begin + g at k_tile + j * k_stride + g * d
      Index k_stride = kv_stride;
      if constexpr (P::kQKRotation) {
        if (rotates_keys(policy)) {
          gather_rows(policy, rotation, k_tile, kv_stride, n, kv_count, d, seq.k_positions + j0, rotated.data());
          k_tile = rotated.data();
          k_stride = kv_count * d;
        }
      }
      if (j0 + kTile < chunk_end) {
        request(k, j0 + kTile, chunk_end);
      } else {
        request(v, c0, chunk_end);
      }
      for_row_blocks([&](Index r, auto count) {
        dot_keys_rows<count()>(q_rows.data() + r * d, k_tile + (r / rows_per_kv) * d, k_stride, n, d, scale,
                               scores.data() + r * Chunk + (j0 - c0), Chunk, ahead);
      });
    }
    RowBias row_bias{RowBias::kPerKey};
    if constexpr (ConsecutiveScoreBias<P>) {
      if (keys_consecutive || consecutive_positions(seq.k_positions + c0, chunk_keys)) {
        row_bias.form = RowBias::kConsecutiveKeys;
      }
    }
    const bool all_visible = keys_all_visible || tile_all_visible(seq, c0, chunk_keys, q_min);
    for (Index r = 0; r < rows; ++r) {
      float* row = scores.data() + r * Chunk;
      std::fill(row + chunk_keys, row + Chunk, 0.0f);
      correction[static_cast<std::size_t>(r)] =
          weigh_tile_row<Chunk>(policy, head_of(r), seq, seq.q_positions[query_of(r)], c0, chunk_keys,
                                all_visible && chunk_keys == Chunk, row_bias, row, bias, state[static_cast<std::size_t>(r)],
                                [](float*) {});  // decode rows never hold their bias in the scores (kInScores)
    }
    for (Index j0 = c0; j0 < chunk_end; j0 += kTile) {
      const Index n = std::min(kTile, chunk_end - j0);
      const float* v_tile = tile_start(v, j0);
      if (j0 + kTile < chunk_end) {
        request(v, j0 + kTile, chunk_end);
      } else if (chunk_end < s.k_len) {
        request(k, chunk_end, s.k_len);
      } else {
        ahead.reset(nullptr, 0, 0, 0);  // the last tile: nothing ahead
      }
      for_row_blocks([&](Index r, auto count) {
        const float* values = v_tile + (r / rows_per_kv) * d;
        const float* weights = scores.data() + r * Chunk + (j0 - c0);
        if constexpr (count() == 1) {  // one row: eight accumulators across the columns instead
          accumulate_rows(weights, n, values, kv_stride, d, correction[static_cast<std::size_t>(r)],
                          output.data() + r * d, ahead);
        } else {
          accumulate_rows_block<count()>(weights, Chunk, n, values, kv_stride, correction.data() + r,
                                         output.data() + r * d, d, ahead);
        }
      });
      // The first tile rescaled the rows' earlier output; the chunk's other tiles add to it.
      if (j0 == c0) std::fill(correction.begin(), correction.end(), 1.0f);
    }
  }
  for (Index r = 0; r < rows; ++r) {
    float* o = out + ((b * s.q_len + query_of(r)) * s.heads + head_of(r)) * d;
    const double sum = state[static_cast<std::size_t>(r)].sum;
    const float inverse = sum > 0.0 ? static_cast<float>(1.0 / sum) : 0.0f;
    for (Index c = 0; c < d; ++c) o[c] = output[static_cast<std::size_t>(r * d + c)] * inverse;
  }
}

/// decode_kv_heads with the key tile of about kDecodeTileBytes for these kv heads, and chunks of
/// kDecodeChunkKeys where the cache is that long and the rows' scores fit kDecodeChunkScoreBytes
/// (else one tile per chunk).
template <class P, class Rotation>
void decode_kv_heads(const AttentionShape& s, const float* q, const float* k, const float* v, Index b, Index kv_begin,
                     Index kv_end, const SequenceView& seq, const P& policy, const Rotation* rotation, float scale,
                     float* out) {
  const Index kv_count = kv_end - kv_begin;
  const Index rows = kv_count * s.q_len * (s.heads / s.kv_heads);
  const bool wide_chunks = s.k_len >= kDecodeChunkKeys &&
                           rows * kDecodeChunkKeys * static_cast<Index>(sizeof(float)) <= kDecodeChunkScoreBytes;
  const auto run = [&](auto key_tile) {
    constexpr Index kTile = decltype(key_tile)::value;
    if (wide_chunks) {
      decode_kv_heads<kTile, kDecodeChunkKeys>(s, q, k, v, b, kv_begin, kv_end, seq, policy, rotation, scale, out);
    } else {
      decode_kv_heads<kTile, kTile>(s, q, k, v, b, kv_begin, kv_end, seq, policy, rotation, scale, out);
    }
  };
  const Index keys = decode_tile_bytes() / (kv_count * s.head_dim * static_cast<Index>(sizeof(float)));
  if (keys >= kDecodeKeyTiles[3]) {
    run(std::integral_constant<Index, kDecodeKeyTiles[3]>{});
  } else if (keys >= kDecodeKeyTiles[2]) {
    run(std::integral_constant<Index, kDecodeKeyTiles[2]>{});
  } else if (keys >= kDecodeKeyTiles[1]) {
    run(std::integral_constant<Index, kDecodeKeyTiles[1]>{});
  } else {
    run(std::integral_constant<Index, kDecodeKeyTiles[0]>{});
  }
}

/// The per-call rotation state of a policy (a placeholder for policies without the hook).
template <class P, bool = P::kQKRotation>
struct RotationOf {
  using type = int;
};
template <class P>
struct RotationOf<P, true> {
  using type = typename P::Rotation;
};

/// Arguments validated by the caller (check_attention_inputs); `key_padding` may be null.
template <class P>
void tiled_attention_unchecked(const AttentionShape& s, const float* q, const float* k, const float* v,
                               const Position* q_positions, const Position* k_positions, const std::uint8_t* key_padding,
                               const P& policy, const AttentionOptions& options, float* out) {
  const float scale = static_cast<float>(options.scale.value_or(1.0 / std::sqrt(static_cast<double>(s.head_dim))));
  const int threads = attention_threads(options);
  using Rotation = typename RotationOf<P>::type;
  Rotation rotation{};
  if constexpr (P::kQKRotation) rotation = policy.rotation(call_sequence_length(s, q_positions, k_positions));
  const Rotation* rotation_ptr = &rotation;
  const auto sequence = [&](Index b) {
    return SequenceView{q_positions + b * s.q_len, k_positions + b * s.k_len,
                        key_padding != nullptr ? key_padding + b * s.k_len : nullptr, options.causal};
  };

  if (s.q_len < kDecodeMaxQueries) {
    // Work item: one sequence's kv heads split into `parts` contiguous ranges (one range, streamed
    // in memory order, when single-threaded).
    const Index kv_bytes = s.batch * 2 * s.k_len * s.kv_heads * s.head_dim * static_cast<Index>(sizeof(float));
    const int workers = static_cast<int>(std::clamp<Index>(kv_bytes / kDecodeBytesPerThread, 1, std::max(1, threads)));
    const Index parts = std::min<Index>(s.kv_heads, workers);
    parallel_for(s.batch * parts, workers, [&](Index item, int) {
      const Index b = item / parts, part = item % parts;
      decode_kv_heads(s, q, k, v, b, s.kv_heads * part / parts, s.kv_heads * (part + 1) / parts, sequence(b), policy,
                      rotation_ptr, scale, out);
    });
    return;
  }

  const Index group = s.heads / s.kv_heads;
  const Index query_tiles = (s.q_len + kQueryTile - 1) / kQueryTile;
  PrefillBuffers& buffers = thread_prefill_buffers();
  PackedKeys& keys = buffers.keys;
  std::vector<QueryTileScratch>& scratch = buffers.workers;
  const auto workers = static_cast<std::size_t>(std::max(threads, 1));
  if (scratch.size() < workers) scratch.resize(workers);  // an earlier call's extra workers stay unused
  for (Index b = 0; b < s.batch; ++b) {
    const SequenceView seq = sequence(b);
    for (Index g = 0; g < s.kv_heads; ++g) {
      pack_keys(s, k, v, b, g, seq, policy, rotation_ptr, keys);
      for (std::size_t w = 0; w < workers; ++w) scratch[w].size_for(s.head_dim, keys.width);
      // Largest query tiles first: under causal masking the last tiles see the most keys.
      parallel_for(group * query_tiles, threads, [&](Index item, int worker) {
        const Index head = g * group + item % group;
        const Index tile = query_tiles - 1 - item / group;
        attend_query_tile(s, q, b, head, tile * kQueryTile, seq, keys, policy, rotation_ptr, scale,
                          scratch[static_cast<std::size_t>(worker)], out);
      });
    }
  }
}

}  // namespace posenc::detail

#endif  // POSENC_HAS_VECTOR_KERNELS
