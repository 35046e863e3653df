#pragma once
// Input setup shared by the posenc benchmarks. Everything here runs outside the timed loops.
//
// Inputs are random with fixed seeds (one seed per input, so a benchmark sees the same numbers
// whatever else the filter selects) and built lazily, once per process, on first use: a filter
// that skips a benchmark never pays for its inputs.
//
// Every large buffer (inputs, the probes' arrays, the tensors RoPE rotates in place) is backed by
// transparent huge pages where Linux offers them (madvise mode included). With 4 KiB pages, the
// same in-place probe ran up to 35 % slower on one 64 MiB buffer than on another allocated in the
// same process, persistently (most likely TLB misses under the VM's nested paging, not measured
// directly): a kernel read against a probe on a different buffer measured its buffer's luck. With
// huge pages the spread between buffers fell under 5 %.

#include <algorithm>
#include <benchmark/benchmark.h>

#include <cstdint>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include <posenc/posenc.hpp>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#define BENCH_NOINLINE __attribute__((noinline))
#else
#define BENCH_NOINLINE
#endif

namespace posenc_bench {

using posenc::Index;
using posenc::Position;

/// Fills `n` floats with uniform values in [-1, 1) from a fixed seed.
inline void fill_random(float* data, Index n, std::uint64_t seed) {
  std::mt19937_64 engine(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (Index i = 0; i < n; ++i) data[i] = uniform(engine);
}

/// Asks for transparent huge pages over the whole 2 MiB pages inside [data, data + bytes). Call it
/// before the memory is first written: the pages are chosen when they fault in. A no-op off Linux
/// or when THP is disabled (the call then fails and is ignored).
inline void advise_huge_pages([[maybe_unused]] void* data, [[maybe_unused]] std::size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr std::uintptr_t kHugePage = std::uintptr_t{2} << 20;
  const std::uintptr_t begin = (reinterpret_cast<std::uintptr_t>(data) + kHugePage - 1) & ~(kHugePage - 1);
  const std::uintptr_t end = (reinterpret_cast<std::uintptr_t>(data) + bytes) & ~(kHugePage - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#endif
}

/// An uninitialised row-major tensor (Eigen storage, so aligned like every posenc tensor) on huge pages.
template <int Rank>
posenc::Tensor<float, Rank> huge_page_tensor(const std::array<Index, Rank>& dims) {
  posenc::Tensor<float, Rank> t(dims);
  advise_huge_pages(t.data(), static_cast<std::size_t>(t.size()) * sizeof(float));
  return t;
}

/// A random tensor on huge pages.
template <int Rank>
posenc::Tensor<float, Rank> random_tensor(const std::array<Index, Rank>& dims, std::uint64_t seed) {
  posenc::Tensor<float, Rank> t = huge_page_tensor<Rank>(dims);
  fill_random(t.data(), t.size(), seed);
  return t;
}

/// A copy of `source` on huge pages (a tensor to mutate: `Tensor x = source` would fault its pages in
/// as it copies, before they could be advised).
template <int Rank>
posenc::Tensor<float, Rank> huge_page_copy(const posenc::Tensor<float, Rank>& source) {
  posenc::Tensor<float, Rank> t = huge_page_tensor<Rank>(source.dimensions());
  std::copy(source.data(), source.data() + source.size(), t.data());
  return t;
}

/// Positions first, first + 1, ..., first + n - 1.
inline std::vector<Position> iota_positions(Index n, Position first = 0) {
  std::vector<Position> positions(static_cast<std::size_t>(n));
  std::iota(positions.begin(), positions.end(), first);
  return positions;
}

/// One shared, lazily built, never mutated value per key (inputs reused by several benchmarks).
template <class Key, class Value, class Build>
const Value& cached(std::map<Key, std::unique_ptr<const Value>>& cache, const Key& key, Build&& build) {
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, std::make_unique<const Value>(build())).first;
  return *it->second;
}

/// A [tokens, heads, head_dim] activation and its positions 0 .. tokens - 1.
struct Activations {
  posenc::Tensor<float, 3> x;
  std::vector<Position> positions;
};

/// Random activations [tokens, heads, head_dim], built once per shape; copy before mutating.
inline const Activations& activations(Index tokens, Index heads, Index head_dim) {
  static std::map<std::array<Index, 3>, std::unique_ptr<const Activations>> cache;
  return cached(cache, std::array<Index, 3>{tokens, heads, head_dim}, [&] {
    return Activations{random_tensor<3>({tokens, heads, head_dim}, 0x5eed0001), iota_positions(tokens)};
  });
}

/// q [q_len, heads, D] at positions k_len - q_len .. k_len - 1 (the last queries of the sequence:
/// a prefill when q_len == k_len, a decode step when q_len == 1); k, v [k_len, kv_heads, D] at
/// positions 0 .. k_len - 1.
struct AttentionInputs {
  posenc::Tensor<float, 3> q, k, v;
  std::vector<Position> q_positions, k_positions;

  Index q_len() const { return q.dimension(0); }
  Index k_len() const { return k.dimension(0); }
  Index heads() const { return q.dimension(1); }
  Index kv_heads() const { return k.dimension(1); }
  Index head_dim() const { return q.dimension(2); }
  /// Bytes of K plus V, what one decode step has to stream from memory.
  std::int64_t kv_bytes() const { return static_cast<std::int64_t>(k.size() + v.size()) * 4; }
};

inline const AttentionInputs& attention_inputs(Index q_len, Index k_len, Index heads, Index kv_heads, Index head_dim) {
  static std::map<std::array<Index, 5>, std::unique_ptr<const AttentionInputs>> cache;
  return cached(cache, std::array<Index, 5>{q_len, k_len, heads, kv_heads, head_dim}, [&] {
    return AttentionInputs{random_tensor<3>({q_len, heads, head_dim}, 0x5eed0101),
                           random_tensor<3>({k_len, kv_heads, head_dim}, 0x5eed0102),
                           random_tensor<3>({k_len, kv_heads, head_dim}, 0x5eed0103),
                           iota_positions(q_len, k_len - q_len), iota_positions(k_len)};
  });
}

/// Rate counter for a per-iteration count (e.g. FLOPs): shown per second of (real) time.
/// Adds a "min" aggregate to a benchmark's repetitions: on a shared machine the fastest of
/// several interleaved repetitions is the steadiest figure for comparing two kernels.
inline benchmark::internal::Benchmark* with_min(benchmark::internal::Benchmark* b) {
  return b->ComputeStatistics("min", [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); });
}

inline benchmark::Counter rate(double per_iteration, const benchmark::State& state) {
  return benchmark::Counter(per_iteration * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

}  // namespace posenc_bench
