// posenc_bench: one binary, every benchmark. Inputs are built lazily (outside the timed loops), so
// --benchmark_filter also decides what gets allocated.
//
// CI smoke (well under a minute on 2 cores; skips the slow naive-attention prefill):
//   posenc_bench --benchmark_filter='probe|rope|decode' --benchmark_min_time=0.01

#include <benchmark/benchmark.h>

#include <posenc/version.hpp>
#include <string>

namespace posenc_bench {
void register_probe_benchmarks();
void register_rope_benchmarks();
void register_attention_benchmarks();
}  // namespace posenc_bench

int main(int argc, char** argv) {
  posenc_bench::register_probe_benchmarks();
  posenc_bench::register_rope_benchmarks();
  posenc_bench::register_attention_benchmarks();

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("posenc_version", std::to_string(POSENC_VERSION_MAJOR) + "." +
                                                     std::to_string(POSENC_VERSION_MINOR) + "." +
                                                     std::to_string(POSENC_VERSION_PATCH));
#if defined(__AVX512F__)
  benchmark::AddCustomContext("posenc_bench_isa", "avx512");
#elif defined(__AVX2__)
  benchmark::AddCustomContext("posenc_bench_isa", "avx2");
#else
  benchmark::AddCustomContext("posenc_bench_isa", "baseline");
#endif
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
