#pragma once
// The prefill schedule of the tiled attention (many queries): per (sequence, kv head) the keys are
// rotated once and packed into tiles (K transposed, V padded, both in slabs of the micro-kernel
// width); then each query tile of each head of the group walks the key tiles, last first, asking
// the next tile into the L2 while the current one is weighed.

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "posenc/attention/options.hpp"
#include "posenc/attention/sequence.hpp"
#include "posenc/attention/tile_kernels.hpp"
#include "posenc/attention/tile_softmax.hpp"
#include "posenc/concepts.hpp"

#if defined(POSENC_HAS_VECTOR_KERNELS)

namespace posenc::detail {

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

/// Asks the L2 for one key tile's packed K and V a share at a time, so that the prefill's next
/// tile arrives while the rows of the current one are weighed (a share per row). At L 16384
/// (16 MiB of packed K and V per kv head, far beyond the L2) causal prefill with ALiBi or T5 ran
/// at 73-82 GFLOP/s without and 80-86 with, on Zen 4; at L 2048 no clear difference
/// (bench/NOTES.md). The shares are sized once per tile, not per row.
class KeyTileRequest {
 public:
  /// Nothing to ask for (no next tile).
  KeyTileRequest() = default;
  /// Tile t of `keys` in `shares` shares.
  KeyTileRequest(const PackedKeys& keys, Index t, Index d, Index shares)
      : k_(reinterpret_cast<const char*>(keys.kt.data() + t * d * kKeyTile)),
        v_(reinterpret_cast<const char*>(keys.v.data() + t * kKeyTile * keys.width)),
        k_lines_(d * kKeyTile * Index{sizeof(float)} / kCacheLineBytes),
        lines_(k_lines_ + kKeyTile * keys.width * Index{sizeof(float)} / kCacheLineBytes),
        per_share_((lines_ + shares - 1) / shares) {
    static_assert(kKeyTile * sizeof(float) % kCacheLineBytes == 0, "a packed tile's K and V are whole lines");
  }
  /// Asks for share i. Always inlined: GCC 12 counts a prefetch as no side effect, takes a
  /// function of nothing else for const, and drops a call to it.
  POSENC_ALWAYS_INLINE void share(Index i) const {
    const Index first = i * per_share_;
    const Index end = std::min(first + per_share_, lines_);
    for (Index line = first; line < std::min(end, k_lines_); ++line) {
      __builtin_prefetch(k_ + line * kCacheLineBytes, /*rw=*/0, /*locality=*/2);  // into the L2
    }
    for (Index line = std::max(first, k_lines_); line < end; ++line) {
      __builtin_prefetch(v_ + (line - k_lines_) * kCacheLineBytes, /*rw=*/0, /*locality=*/2);
    }
  }

 private:
  const char* k_ = nullptr;
  const char* v_ = nullptr;
  Index k_lines_ = 0;  // K's lines come first, then V's
  Index lines_ = 0;
  Index per_share_ = 0;
};


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
    const KeyTileRequest next_tile = t > 0 ? KeyTileRequest(keys, t - 1, d, n) : KeyTileRequest();  // of the walk
    for (Index i = 0; i < n; ++i) {
      next_tile.share(i);
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

}  // namespace posenc::detail

#endif  // POSENC_HAS_VECTOR_KERNELS
