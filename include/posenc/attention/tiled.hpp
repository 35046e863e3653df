#pragma once
// Tiled attention with a streaming softmax (FlashAttention-2, Dao 2023, on CPU): queries in tiles
// of kQueryTile rows, keys in tiles of kKeyTile; per key tile the scores S = scale Q K^T, the
// policy's bias row hook, the causal/padding mask, the running max/sum update and O += P V, all in
// cache-resident buffers. No [q, k] matrix is ever stored; key tiles wholly in a causal query
// tile's future are skipped. Query/key rotation is applied once per tile row.
//
// Two schedules, each in its own header:
//  * prefill.hpp (many queries): per (sequence, kv head) the keys are rotated once and packed
//    into tiles, then every query head of the group streams its query tiles over them with the
//    register-blocked micro-kernels of tile_kernels.hpp. Its buffers (packed keys, per-thread
//    tiles) are kept by the calling thread between calls (PrefillBuffers).
//  * decode.hpp (few queries, e.g. one new token against a KV cache): K and V are streamed once,
//    each vector shared by every query head of its group (GQA without copying K/V).
// Both weigh their score rows with tile_softmax.hpp (the policy's bias, the mask, the online
// softmax) and read a sequence's positions and rows through sequence.hpp.
//
// Threads (parallel.hpp): work items are (query head, query tile) for prefill and kv heads for
// decode; the count comes from AttentionOptions::threads, else the POSENC_THREADS environment
// variable, else 1.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "posenc/attention/checks.hpp"
#include "posenc/attention/decode.hpp"
#include "posenc/attention/options.hpp"
#include "posenc/attention/parallel.hpp"
#include "posenc/attention/prefill.hpp"
#include "posenc/attention/sequence.hpp"
#include "posenc/concepts.hpp"

#if defined(POSENC_HAS_VECTOR_KERNELS)

namespace posenc::detail {

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
