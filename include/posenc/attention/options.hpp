#pragma once
// Options and shapes shared by every attention entry point.

#include <optional>

#include "posenc/config.hpp"

namespace posenc {

/// Which implementation computes attention; every one gives the same numbers within the
/// conformance tolerance.
enum class AttentionKernel {
  kTiled,      ///< tiled, streaming softmax, vector micro-kernels (attention/tiled.hpp); the default
  kReference,  ///< naive, double accumulation, obviously right: the yardstick (attention/reference.hpp)
};

struct AttentionOptions {
  /// Causal by position values: query i sees key j iff k_pos[j] <= q_pos[i].
  bool causal = false;
  /// Multiplies q.k; default 1/sqrt(head_dim). T5 uses 1.
  std::optional<double> scale;
  AttentionKernel kernel = AttentionKernel::kTiled;
  /// Threads for the tiled kernel; 0: $POSENC_THREADS if set, else 1 (engines usually own threading).
  /// An upper bound: a decode step with little K/V to stream (under 2 MiB a thread) uses fewer.
  int threads = 0;
};

/// Sizes of one attention call. q [batch, q_len, heads, head_dim]; k, v [batch, k_len, kv_heads,
/// head_dim]; positions [batch, q_len] / [batch, k_len]; key padding [batch, k_len]; out like q.
struct AttentionShape {
  Index batch = 1;
  Index q_len = 0;
  Index k_len = 0;
  Index heads = 0;
  Index kv_heads = 0;
  Index head_dim = 0;
};

}  // namespace posenc
