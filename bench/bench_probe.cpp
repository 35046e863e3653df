// Machine probes: what this core can stream and compute, the roofline the kernels are read against.
//
//   probe/inplace_update/64MiB   a[i] = a[i]*s + t        read + write: the bound of an in-place RoPE
//   probe/inplace_update_twin/64MiB  the 64 MiB probe once more: identical code, so its ratio to
//                                the probe in one run is how far that run's ratios move by chance
//   probe/inplace_update/128KiB  the same on an array that stays in L2: the bound of RoPE on
//                                activations a projection has just written (rope_incache/)
//   probe/copy_update/64MiB      b[i] = a[i]*s + t        read one array, write another (b's lines
//                                                         read before they are written)
//   probe/copy_update_nt/64MiB   the same with non-temporal stores (b's lines not read): the bound
//                                of an out-of-place RoPE into a large output (apply_into)
//   probe/read/64MiB             sum of a[i]              read only: the bound of a decode step
//   probe/fma_peak               independent FMA chains   widest native vector (AVX-512 if present)
//   probe/fma256_peak            the same on 256-bit vectors, where AVX-512 is present (GCC's
//                                -march=native tuning prefers 256-bit vectors when autovectorizing)

#include <benchmark/benchmark.h>

#if defined(__SSE__)
#include <immintrin.h>
#endif

#include <cmath>

#include "bench_util.hpp"

namespace posenc_bench {
namespace {

constexpr Index kProbeBytes = Index{64} << 20;
constexpr Index kProbeFloats = kProbeBytes / Index{sizeof(float)};

BenchTensor<1> probe_array(Index floats = kProbeFloats) {
  return random_tensor<1>({floats}, 0x5eed0201);  // fresh copy: the update probe mutates it
}

BENCH_NOINLINE void inplace_update(float* POSENC_RESTRICT a, Index n, float s, float t) {
  for (Index i = 0; i < n; ++i) a[i] = a[i] * s + t;
}

void probe_inplace_update(benchmark::State& state, Index bytes) {
  BenchTensor<1> a = probe_array(bytes / Index{sizeof(float)});
  float s = 0.5f;  // a -> 2: bounded, never denormal
  float t = 1.0f;
  benchmark::DoNotOptimize(s);
  benchmark::DoNotOptimize(t);
  for (auto _ : state) {
    inplace_update(a.data(), a.size(), s, t);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(2 * bytes * state.iterations());
}

BENCH_NOINLINE void copy_update(const float* POSENC_RESTRICT a, float* POSENC_RESTRICT b, Index n, float s, float t) {
  for (Index i = 0; i < n; ++i) b[i] = a[i] * s + t;
}

// b = a*s + t, b written with non-temporal stores of the widest vectors (a and b are on huge
// pages, so aligned); a scalar loop where there is no SSE.
BENCH_NOINLINE void copy_update_nt(const float* POSENC_RESTRICT a, float* POSENC_RESTRICT b, Index n, float s,
                                   float t) {
  Index i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    _mm512_stream_ps(b + i, _mm512_add_ps(_mm512_mul_ps(_mm512_load_ps(a + i), _mm512_set1_ps(s)), _mm512_set1_ps(t)));
  }
#elif defined(__AVX__)
  for (; i + 8 <= n; i += 8) {
    _mm256_stream_ps(b + i, _mm256_add_ps(_mm256_mul_ps(_mm256_load_ps(a + i), _mm256_set1_ps(s)), _mm256_set1_ps(t)));
  }
#elif defined(__SSE__)
  for (; i + 4 <= n; i += 4) {
    _mm_stream_ps(b + i, _mm_add_ps(_mm_mul_ps(_mm_load_ps(a + i), _mm_set1_ps(s)), _mm_set1_ps(t)));
  }
#endif
  for (; i < n; ++i) b[i] = a[i] * s + t;
#if defined(__SSE__)
  _mm_sfence();
#endif
}

// One of the copy loops above over two 64 MiB arrays.
using CopyLoop = void (*)(const float*, float*, Index, float, float);
void probe_copy(benchmark::State& state, CopyLoop loop) {
  const BenchTensor<1> a = probe_array();
  BenchTensor<1> b = probe_array();  // written over; faulted in (and on huge pages) before timing
  float s = 0.5f;
  float t = 1.0f;
  benchmark::DoNotOptimize(s);
  benchmark::DoNotOptimize(t);
  for (auto _ : state) {
    loop(a.data(), b.data(), a.size(), s, t);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(2 * kProbeBytes * state.iterations());  // bytes read + bytes written
}

// 64 independent float accumulators: 4 zmm or 8 ymm chains after vectorization, enough to hide the
// add latency, so the loop is bound by loads.
BENCH_NOINLINE float sum(const float* POSENC_RESTRICT a, Index n) {
  constexpr Index kLanes = 64;
  float acc[kLanes] = {};
  Index i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (Index l = 0; l < kLanes; ++l) acc[l] += a[i + l];
  }
  for (; i < n; ++i) acc[0] += a[i];
  float total = 0.0f;
  for (Index l = 0; l < kLanes; ++l) total += acc[l];
  return total;
}

void probe_read(benchmark::State& state) {
  const BenchTensor<1> a = probe_array();
  for (auto _ : state) {
    float total = sum(a.data(), a.size());
    benchmark::DoNotOptimize(total);
    benchmark::ClobberMemory();  // the call only reads: make every iteration read again
  }
  state.SetBytesProcessed(kProbeBytes * state.iterations());
}

// --- FMA peak: kChains independent chains acc = acc*m + c, each a full vector register. FMA latency
// is 4 cycles on current x86 cores with 2 FMA ports, so 8 chains are the minimum; 12 leave margin.
constexpr int kChains = 12;
constexpr Index kRounds = 1 << 14;  // FMAs per chain per benchmark iteration

// One vector ISA: a register type and the four operations the chains need.
#if defined(__AVX512F__)
struct Avx512 {
  using Vec = __m512;
  static constexpr int kLanes = 16;
  static Vec set1(float x) { return _mm512_set1_ps(x); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static float lane0(Vec a) { return _mm512_cvtss_f32(a); }
};
#endif
#if defined(__FMA__)
struct Avx2 {
  using Vec = __m256;
  static constexpr int kLanes = 8;
  static Vec set1(float x) { return _mm256_set1_ps(x); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static float lane0(Vec a) { return _mm256_cvtss_f32(a); }
};
#else
struct Scalar {  // no x86 FMA: scalar std::fma chains, a lower bound rather than the vector peak
  using Vec = float;
  static constexpr int kLanes = 1;
  static Vec set1(float x) { return x; }
  static Vec fmadd(Vec a, Vec b, Vec c) { return std::fma(a, b, c); }
  static Vec add(Vec a, Vec b) { return a + b; }
  static float lane0(Vec a) { return a; }
};
#endif

template <class Isa>
BENCH_NOINLINE float fma_chains(float m, float c, Index rounds) {
  typename Isa::Vec acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = Isa::set1(1.0f + 0.01f * static_cast<float>(j));
  const typename Isa::Vec vm = Isa::set1(m);
  const typename Isa::Vec vc = Isa::set1(c);
  for (Index r = 0; r < rounds; ++r) {
#pragma GCC unroll 12
    for (int j = 0; j < kChains; ++j) acc[j] = Isa::fmadd(acc[j], vm, vc);
  }
  typename Isa::Vec total = acc[0];
  for (int j = 1; j < kChains; ++j) total = Isa::add(total, acc[j]);
  return Isa::lane0(total);
}

template <class Isa>
void probe_fma(benchmark::State& state) {
  float m = 0.999f;  // acc -> c / (1 - m) = 1: bounded, never denormal
  float c = 0.001f;
  for (auto _ : state) {
    benchmark::DoNotOptimize(m);  // inside the loop: the call is pure, keep it from being hoisted
    benchmark::DoNotOptimize(c);
    float result = fma_chains<Isa>(m, c, kRounds);
    benchmark::DoNotOptimize(result);
  }
  const double flops = 2.0 * Isa::kLanes * kChains * static_cast<double>(kRounds);  // 2 flops per FMA lane
  state.counters["FLOPS"] = rate(flops, state);
  state.counters["vector_bits"] = Isa::kLanes * 32;
}

}  // namespace

void register_probe_benchmarks() {
  with_min(benchmark::RegisterBenchmark("probe/inplace_update/64MiB", probe_inplace_update, kProbeBytes)->UseRealTime());
  with_min(benchmark::RegisterBenchmark("probe/inplace_update_twin/64MiB", probe_inplace_update, kProbeBytes)
               ->UseRealTime());
  with_min(benchmark::RegisterBenchmark("probe/inplace_update/128KiB", probe_inplace_update, Index{128} << 10)
               ->UseRealTime());
  with_min(benchmark::RegisterBenchmark("probe/copy_update/64MiB", probe_copy, copy_update)->UseRealTime());
  with_min(benchmark::RegisterBenchmark("probe/copy_update_nt/64MiB", probe_copy, copy_update_nt)->UseRealTime());
  with_min(benchmark::RegisterBenchmark("probe/read/64MiB", probe_read)->UseRealTime());
#if defined(__AVX512F__)
  with_min(benchmark::RegisterBenchmark("probe/fma_peak", probe_fma<Avx512>)->UseRealTime());
  with_min(benchmark::RegisterBenchmark("probe/fma256_peak", probe_fma<Avx2>)->UseRealTime());
#elif defined(__FMA__)
  with_min(benchmark::RegisterBenchmark("probe/fma_peak", probe_fma<Avx2>)->UseRealTime());
#else
  with_min(benchmark::RegisterBenchmark("probe/fma_peak", probe_fma<Scalar>)->UseRealTime());
#endif
}

}  // namespace posenc_bench
