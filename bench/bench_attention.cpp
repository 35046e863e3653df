// posenc::attention with each score hook, through the public call with default options (so the
// default kernel) except causal = true.
//
//   attention/causal/<policy>/L<L>_H1_D128      prefill: q, k, v [L, 1, 128] at positions 0 .. L-1;
//                                               FLOPS counts 4*D*L*(L+1)/2 per head (the causal
//                                               half of QK^T and PV, 2 flops per multiply-add).
//                                               rope: cos/sin from a table built once (as engines
//                                               do); rope_tablefree: rows generated on the fly
//   decode/<policy>/Lk4096_H32_KV8_D128         one query at position 4095, 32 heads on 8 KV heads,
//                                               4096 cached keys; bytes = K + V bytes per call.
//                                               decode/rope: a cache of rotated keys (as engines
//                                               keep it), only the query rotated per step;
//                                               decode/rope_rerotate: every key rotated each call
//   decode_mha/none/Lk1024_H32_KV32_D128        the same 32 MiB of K and V without GQA (32 kv heads)
//   decode_incache/none/Lk256_H32_KV8_D128      a short context: 2 MiB of K and V, which stay in the
//                                               L3 cache from call to call; read against
//                                               probe/fma_peak (FLOPS: 4*D*Lk per head)
//   decode_plain_alloc/none/Lk4096_H32_KV8_D128 decode/none with K and V in plain 64-byte aligned
//                                               allocations (4 KiB pages unless THP is "always");
//                                               every other large buffer here is on 2 MiB pages

#include <benchmark/benchmark.h>

#include <string>

#include "bench_util.hpp"

namespace posenc_bench {
namespace {

constexpr Index kHeadDim = 128;

posenc::AttentionOptions causal_options() {
  posenc::AttentionOptions options;  // kernel, scale: defaults
  options.causal = true;
  return options;
}

/// T5 decoder self-attention bias: 32 buckets, max_distance 128, causal buckets, random table.
posenc::RelativeBias make_t5(Index heads) {
  posenc::Tensor<float, 2> table(32, heads);  // small: ordinary pages
  fill_random(table.data(), table.size(), 0x5eed0301);
  return posenc::RelativeBias(posenc::RelativeBucketConfig{.num_buckets = 32, .max_distance = 128, .bidirectional = false},
                              table);
}

posenc::RoPE make_rope() { return posenc::RoPE(posenc::RopeConfig{.head_dim = kHeadDim}); }

template <class P>
void run_attention(benchmark::State& state, const AttentionInputs& in, const P& policy) {
  const posenc::AttentionOptions options = causal_options();
  for (auto _ : state) {
    posenc::Tensor<float, 3> out = posenc::attention(in.q, in.k, in.v, in.q_positions, in.k_positions, policy, options);
    float* result = out.data();
    benchmark::DoNotOptimize(result);
    benchmark::ClobberMemory();
  }
}

template <class P>
void bench_causal(benchmark::State& state, Index length, const P& policy) {
  const AttentionInputs& in = attention_inputs(length, length, 1, 1, kHeadDim);
  run_attention(state, in, policy);
  const double l = static_cast<double>(length);
  const double flops = 4.0 * static_cast<double>(kHeadDim) * l * (l + 1.0) / 2.0 * static_cast<double>(in.heads());
  state.counters["FLOPS"] = rate(flops, state);
}

template <class P>
void bench_decode(benchmark::State& state, Index k_len, Index kv_heads, Pages kv_pages, const P& policy) {
  const AttentionInputs& in = attention_inputs(1, k_len, 32, kv_heads, kHeadDim, kv_pages);
  run_attention(state, in, policy);
  state.SetBytesProcessed(in.kv_bytes() * state.iterations());
  const double flops = 4.0 * static_cast<double>(kHeadDim * in.k_len() * in.heads());  // every key visible
  state.counters["FLOPS"] = rate(flops, state);
}

template <class P>
void register_causal(const std::string& policy_name, Index length, const P& policy) {
  const std::string name = "attention/causal/" + policy_name + "/L" + std::to_string(length) + "_H1_D128";
  with_min(benchmark::RegisterBenchmark(name.c_str(), bench_causal<P>, length, policy)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime());
}

template <class P>
void register_decode(const std::string& policy_name, const P& policy, const std::string& prefix = "decode",
                     Index k_len = 4096, Index kv_heads = 8, Pages kv_pages = Pages::kHuge) {
  const std::string name = prefix + "/" + policy_name + "/Lk" + std::to_string(k_len) + "_H32_KV" +
                           std::to_string(kv_heads) + "_D128";
  with_min(benchmark::RegisterBenchmark(name.c_str(), bench_decode<P>, k_len, kv_heads, kv_pages, policy)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime());
}

}  // namespace

void register_attention_benchmarks() {
  for (const Index length : {Index{2048}, Index{16384}}) {
    if (length == 2048) register_causal("none", length, posenc::NoPosition{});
    register_causal("alibi", length, posenc::ALiBi(1));
    register_causal("t5", length, make_t5(1));
    if (length == 2048) {
      // A prefill as engines run it (HF transformers computes cos/sin once per forward pass, for
      // every layer; the README's example builds the table once): rows read from the table.
      register_causal("rope", length, make_rope().with_cache(length));
      // The same without a table: every cos/sin row generated on the fly, for each Q and K tile.
      register_causal("rope_tablefree", length, make_rope());
    }
  }
  register_decode("none", posenc::NoPosition{});
  register_decode("alibi", posenc::ALiBi(32));
  // A decode step as engines run it (HF transformers, llama.cpp): the KV cache holds keys rotated
  // once, when they were appended; the step rotates its query from the cos/sin table built once
  // for the cache capacity, then streams K and V.
  register_decode("rope", make_rope().with_cache(4096).for_rotated_key_cache());
  // The same step with every cached key rotated again from the table on each call.
  register_decode("rope_rerotate", make_rope().with_cache(4096));
  // Multi-head attention without GQA (GPT-2, GPT-J, NeoX, BLOOM, MPT): one query head per kv head,
  // the same 32 MiB of K and V (1024 keys of 32 kv heads), a quarter of the arithmetic per byte.
  register_decode("none", posenc::NoPosition{}, "decode_mha", 1024, 32);
  // A short context, whose K and V stay in cache: bound by the arithmetic rather than by memory.
  register_decode("none", posenc::NoPosition{}, "decode_incache", 256, 8);
  // The KV cache as a plain allocation gets it: what huge pages are worth to a decode step.
  register_decode("none", posenc::NoPosition{}, "decode_plain_alloc", 4096, 8, Pages::kPlain);
}

}  // namespace posenc_bench
