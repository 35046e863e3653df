#pragma once
// Input setup shared by the posenc benchmarks. Everything here runs outside the timed loops.
//
// Inputs are random with fixed seeds (one seed per input, so a benchmark sees the same numbers
// whatever else the filter selects) and built lazily, once per process, on first use: a filter
// that skips a benchmark never pays for its inputs.
//
// Every large buffer (inputs, the probes' arrays, the tensors RoPE rotates in place; all but the
// K and V of decode_plain_alloc/) lies on whole transparent huge pages where Linux offers them
// (madvise mode included). With 4 KiB pages, the same in-place probe ran up to 35 % slower on one
// 64 MiB buffer than on another allocated in the same process, persistently (most likely TLB
// misses under the VM's nested paging, not measured directly): a kernel read against a probe on a
// different buffer measured its buffer's luck. With huge pages the spread between buffers fell
// under 5 %. Whole pages (BenchTensor): advised inside Eigen's storage, a 16 MiB K or V kept
// about 2 MiB on 4 KiB pages, and decode streamed them 1-7 % slower (bench/NOTES.md, second
// session of 2026-12-03).

#include <algorithm>
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <new>
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

/// How a benchmark buffer is allocated:
/// - kHuge: on whole transparent huge pages (2 MiB) where Linux offers them: 2 MiB-aligned,
///   rounded up to whole pages and advised before it is first written (the pages are chosen when
///   they fault in). Eigen's own storage is only 64-byte aligned, so a 16 MiB tensor advised
///   inside it kept about 2 MiB on 4 KiB pages at its two ends. Where THP is off (or off Linux)
///   the advice is a no-op.
/// - kPlain: 64-byte aligned, no advice: what a plain allocation (an Eigen tensor's, say) gets,
///   4 KiB pages unless THP is set to "always".
enum class Pages { kHuge, kPlain };

/// Owns one benchmark buffer, allocated as `Pages` says.
class PageStorage {
 protected:
  PageStorage(std::size_t bytes, Pages pages) {
    const std::size_t alignment = pages == Pages::kHuge ? std::size_t{2} << 20 : 64;
    const std::size_t rounded = std::max<std::size_t>((bytes + alignment - 1) / alignment, 1) * alignment;
    memory_.reset(static_cast<float*>(std::aligned_alloc(alignment, rounded)));
    if (!memory_) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (pages == Pages::kHuge) madvise(memory_.get(), rounded, MADV_HUGEPAGE);  // fails harmlessly without THP
#endif
  }
  float* memory() const { return memory_.get(); }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> memory_;
};

/// A row-major float tensor for benchmark inputs and buffers, on PageStorage: a posenc::TensorMap
/// over it, which binds to every posenc argument as an Eigen tensor does. Movable, not assignable
/// (TensorMap's assignment would copy the elements).
template <int Rank>
class BenchTensor : private PageStorage, public posenc::TensorMap<float, Rank> {
 public:
  /// Uninitialised.
  explicit BenchTensor(const std::array<Index, Rank>& dims, Pages pages = Pages::kHuge)
      : PageStorage(static_cast<std::size_t>(element_count(dims)) * sizeof(float), pages),
        posenc::TensorMap<float, Rank>(memory(), dims) {}
  BenchTensor(BenchTensor&&) noexcept = default;
  BenchTensor& operator=(BenchTensor&&) = delete;

 private:
  static Index element_count(const std::array<Index, Rank>& dims) {
    return std::accumulate(dims.begin(), dims.end(), Index{1}, std::multiplies<>());
  }
};

/// A random tensor.
template <int Rank>
BenchTensor<Rank> random_tensor(const std::array<Index, Rank>& dims, std::uint64_t seed, Pages pages = Pages::kHuge) {
  BenchTensor<Rank> t(dims, pages);
  fill_random(t.data(), t.size(), seed);
  return t;
}

/// A copy of `source` on huge pages (a tensor to mutate in place, or to write over).
template <int Rank>
BenchTensor<Rank> huge_page_copy(const BenchTensor<Rank>& source) {
  std::array<Index, Rank> dims;
  for (int i = 0; i < Rank; ++i) dims[static_cast<std::size_t>(i)] = source.dimension(i);
  BenchTensor<Rank> t(dims);
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
  BenchTensor<3> x;
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
/// positions 0 .. k_len - 1. K and V on `kv_pages`.
struct AttentionInputs {
  BenchTensor<3> q, k, v;
  std::vector<Position> q_positions, k_positions;

  Index q_len() const { return q.dimension(0); }
  Index k_len() const { return k.dimension(0); }
  Index heads() const { return q.dimension(1); }
  Index kv_heads() const { return k.dimension(1); }
  Index head_dim() const { return q.dimension(2); }
  /// Bytes of K plus V, what one decode step has to stream from memory.
  std::int64_t kv_bytes() const { return static_cast<std::int64_t>(k.size() + v.size()) * 4; }
};

inline const AttentionInputs& attention_inputs(Index q_len, Index k_len, Index heads, Index kv_heads, Index head_dim,
                                               Pages kv_pages = Pages::kHuge) {
  static std::map<std::array<Index, 6>, std::unique_ptr<const AttentionInputs>> cache;
  const std::array<Index, 6> key{q_len, k_len, heads, kv_heads, head_dim, static_cast<Index>(kv_pages)};
  return cached(cache, key, [&] {
    return AttentionInputs{random_tensor<3>({q_len, heads, head_dim}, 0x5eed0101),
                           random_tensor<3>({k_len, kv_heads, head_dim}, 0x5eed0102, kv_pages),
                           random_tensor<3>({k_len, kv_heads, head_dim}, 0x5eed0103, kv_pages),
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
