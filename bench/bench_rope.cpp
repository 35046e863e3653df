// RoPE in place on x [4096, 32, 128] (64 MiB) at positions 0 .. 4095. Each iteration reads and
// writes x once: bytes = 2 x tensor bytes, to be read against probe/inplace_update/64MiB.
//
//   rope/<layout>/...            RoPE::apply(x, positions, cache): the cos/sin table (RotaryCache
//                                for positions 0 .. 4095) is built once, outside the timed loop
//   rope_tablefree/<layout>/...  RoPE::apply(x, positions): angles and cos/sin computed per call,
//                                one row per token shared by its 32 heads
//   rope_into/<layout>/...       RoPE::apply_into(x, positions, cache, out): out of place, x read and
//                                out written once (bytes = 2 x tensor bytes); a 64 MiB output is
//                                written with non-temporal stores, so against
//                                probe/copy_update_nt/64MiB
//   rope_into_read/half/L1024_H32_D128
//                                apply_into on [1024, 32, 128] (16 MiB: the smallest output written
//                                with non-temporal stores), then a sum over out, as attention reads
//                                rotated keys right after (bytes = 3 x tensor bytes); the same buffers
//                                every iteration, so plain stores find them in the L3 where they can
//   rope_into_read_cold/half/L1024_H32_D128
//                                the same, with 64 MiB of other data read between iterations (not
//                                timed): x and out come from memory, as in an engine between layers
//   rope_into_read{,_cold}/half_plain_stores/L1024_H32_D128
//                                the same two with the plain-store kernel (kernel::rotate_half_heads
//                                per token): what apply_into did at 16 MiB before its threshold fell
//   rope_reference/half/...      the same table as rope/, then kernel::scalar::rotate_half per
//                                (token, head) row: the plain loop the vector kernel is checked against
//   rope_incache/<layout>/L8_H32_D128
//                                rope/ on 8 tokens (128 KiB, stays in L2), as an engine rotates the
//                                Q or K a projection has just written: against probe/inplace_update/128KiB
//
// Each call sits in one small function (rope_cached, rope_tablefree_*): switching what a family
// measures is a one-line change there.

#include <benchmark/benchmark.h>
#include <Eigen/Core>

#include <string>
#include <utility>

#include "bench_util.hpp"

namespace posenc_bench {
namespace {

constexpr Index kTokens = 4096;
constexpr Index kHeads = 32;
constexpr Index kHeadDim = 128;
const std::string kShape = "L4096_H32_D128";

posenc::RoPE make_rope(posenc::RopeLayout layout) {
  return posenc::RoPE(posenc::RopeConfig{.head_dim = kHeadDim, .layout = layout});
}

// The calls under test, one per benchmark family and layout.
using RopeCall = void (*)(const posenc::RoPE&, posenc::TensorRef<float, 3>, posenc::PositionsRef,
                          const posenc::RotaryCache&);

void rope_cached(const posenc::RoPE& rope, posenc::TensorRef<float, 3> x, posenc::PositionsRef positions,
                 const posenc::RotaryCache& cache) {
  rope.apply(x, positions, cache);
}
void rope_tablefree_half(const posenc::RoPE& rope, posenc::TensorRef<float, 3> x, posenc::PositionsRef positions,
                         const posenc::RotaryCache& /*unused*/) {
  rope.apply(x, positions);
}
void rope_tablefree_interleaved(const posenc::RoPE& rope, posenc::TensorRef<float, 3> x,
                                posenc::PositionsRef positions, const posenc::RotaryCache& /*unused*/) {
  rope.apply(x, positions);
}

std::int64_t tensor_bytes(const BenchTensor<3>& x) { return static_cast<std::int64_t>(x.size()) * 4; }

void bench_rope(benchmark::State& state, posenc::RopeLayout layout, RopeCall call, Index tokens) {
  const Activations& input = activations(tokens, kHeads, kHeadDim);
  BenchTensor<3> x = huge_page_copy(input.x);  // rotated in place, iteration after iteration (norms stay put)
  const posenc::RoPE rope = make_rope(layout);
  const posenc::RotaryCache cache = rope.cache(kTokens);
  for (auto _ : state) {
    call(rope, x, input.positions, cache);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(2 * tensor_bytes(x) * state.iterations());
}

void bench_rope_into(benchmark::State& state, posenc::RopeLayout layout) {
  const Activations& input = activations(kTokens, kHeads, kHeadDim);
  const BenchTensor<3> x = huge_page_copy(input.x);
  BenchTensor<3> out = huge_page_copy(input.x);  // written over; its pages faulted in before timing
  const posenc::RoPE rope = make_rope(layout);
  const posenc::RotaryCache cache = rope.cache(kTokens);
  for (auto _ : state) {
    rope.apply_into(x, input.positions, cache, out);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(2 * tensor_bytes(x) * state.iterations());
}

// apply_into on kIntoReadTokens tokens, then out read once: with non-temporal stores (the library's
// choice at this size) or, for `plain_stores`, the same rotation through the plain-store kernel.
// `cold`: 64 MiB of other data read before each iteration, outside the timing.
constexpr Index kIntoReadTokens = 1024;
void bench_rope_into_read(benchmark::State& state, bool plain_stores, bool cold) {
  const Activations& input = activations(kIntoReadTokens, kHeads, kHeadDim);
  const BenchTensor<3> x = huge_page_copy(input.x);
  BenchTensor<3> out = huge_page_copy(input.x);
  const BenchTensor<3> other = huge_page_copy(activations(kTokens, kHeads, kHeadDim).x);
  const auto sum = [](const BenchTensor<3>& t) { return Eigen::Map<const Eigen::ArrayXf>(t.data(), t.size()).sum(); };
  const posenc::RoPE rope = make_rope(posenc::RopeLayout::kHalf);
  const posenc::RotaryCache cache = rope.cache(kIntoReadTokens);
  const Index token_floats = kHeads * kHeadDim;
  for (auto _ : state) {
    if (cold) {
      state.PauseTiming();
      benchmark::DoNotOptimize(sum(other));
      state.ResumeTiming();
    }
    if (plain_stores) {
      for (Index t = 0; t < kIntoReadTokens; ++t) {
        const Position p = input.positions[static_cast<std::size_t>(t)];
        posenc::kernel::rotate_half_heads(x.data() + t * token_floats, out.data() + t * token_floats, kHeads,
                                          kHeadDim, cache.cos_row(p), cache.sin_row(p), kHeadDim / 2);
      }
    } else {
      rope.apply_into(x, input.positions, cache, out);
    }
    benchmark::ClobberMemory();
    benchmark::DoNotOptimize(sum(out));
  }
  state.SetBytesProcessed(3 * tensor_bytes(x) * state.iterations());
}

void bench_rope_reference_half(benchmark::State& state) {
  const Activations& input = activations(kTokens, kHeads, kHeadDim);
  BenchTensor<3> x = huge_page_copy(input.x);
  const posenc::RoPE rope = make_rope(posenc::RopeLayout::kHalf);
  const Index pairs = kHeadDim / 2;
  const posenc::RotaryCache cache = rope.cache(kTokens);  // cos/sin table [4096, 64]
  for (auto _ : state) {
    for (Index t = 0; t < kTokens; ++t) {
      const Position p = input.positions[static_cast<std::size_t>(t)];
      const float* c = cache.cos_row(p);
      const float* s = cache.sin_row(p);
      for (Index h = 0; h < kHeads; ++h) {
        posenc::kernel::scalar::rotate_half(x.data() + (t * kHeads + h) * kHeadDim, c, s, pairs);
      }
    }
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(2 * tensor_bytes(x) * state.iterations());
}

void register_rope(const std::string& name, posenc::RopeLayout layout, RopeCall call) {
  with_min(benchmark::RegisterBenchmark((name + "/" + kShape).c_str(), bench_rope, layout, call, kTokens)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime());
}

}  // namespace

void register_rope_benchmarks() {
  using posenc::RopeLayout;
  register_rope("rope/half", RopeLayout::kHalf, rope_cached);
  register_rope("rope/interleaved", RopeLayout::kInterleaved, rope_cached);
  register_rope("rope_tablefree/half", RopeLayout::kHalf, rope_tablefree_half);
  register_rope("rope_tablefree/interleaved", RopeLayout::kInterleaved, rope_tablefree_interleaved);
  for (const auto& [name, layout] : {std::pair{"rope_into/half/", RopeLayout::kHalf},
                                     std::pair{"rope_into/interleaved/", RopeLayout::kInterleaved}}) {
    with_min(benchmark::RegisterBenchmark((name + kShape).c_str(), bench_rope_into, layout)
                 ->Unit(benchmark::kMillisecond)
                 ->UseRealTime());
  }
  for (const bool cold : {false, true}) {
    for (const bool plain_stores : {false, true}) {
      const std::string name = std::string(cold ? "rope_into_read_cold/" : "rope_into_read/") +
                               (plain_stores ? "half_plain_stores/" : "half/") + "L1024_H32_D128";
      with_min(benchmark::RegisterBenchmark(name.c_str(), bench_rope_into_read, plain_stores, cold)
                   ->Unit(benchmark::kMillisecond)
                   ->UseRealTime());
    }
  }
  constexpr Index kInCacheTokens = 8;
  for (const auto& [name, layout] : {std::pair{"rope_incache/half/L8_H32_D128", RopeLayout::kHalf},
                                     std::pair{"rope_incache/interleaved/L8_H32_D128", RopeLayout::kInterleaved}}) {
    with_min(benchmark::RegisterBenchmark(name, bench_rope, layout, rope_cached, kInCacheTokens)->UseRealTime());
  }
  with_min(benchmark::RegisterBenchmark(("rope_reference/half/" + kShape).c_str(), bench_rope_reference_half)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime());
}

}  // namespace posenc_bench
