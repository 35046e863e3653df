#pragma once
// The decode schedule of the tiled attention (few queries, e.g. one new token against a KV cache):
// K and V streamed once, in tiles of 64 or 256 KiB (by the L2's size) requested in memory order a
// cache line per micro-kernel step ahead of use, one softmax step per chunk of 256 keys; each K
// and V vector serves every query head of its group (GQA without copying K/V) and every query.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if __has_include(<unistd.h>)
#include <unistd.h>  // sysconf: the L2 size that sets the decode tile
#endif

#include "posenc/attention/options.hpp"
#include "posenc/attention/sequence.hpp"
#include "posenc/attention/tile_kernels.hpp"
#include "posenc/attention/tile_softmax.hpp"
#include "posenc/concepts.hpp"

#if defined(POSENC_HAS_VECTOR_KERNELS)

namespace posenc::detail {

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

}  // namespace posenc::detail

#endif  // POSENC_HAS_VECTOR_KERNELS
