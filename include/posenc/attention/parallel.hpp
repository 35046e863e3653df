#pragma once
// Threads of an attention call: how many (AttentionOptions::threads, else $POSENC_THREADS, else 1)
// and a work-sharing loop over independent items (prefill's query tiles, decode's kv heads).

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <thread>
#include <vector>

#include "posenc/attention/options.hpp"
#include "posenc/config.hpp"

namespace posenc::detail {

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

}  // namespace posenc::detail
