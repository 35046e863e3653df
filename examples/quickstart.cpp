// quickstart: positional encodings in a transformer block, one screen of code.
//
// Token ids [2, 4] -> embeddings [2, 4, 256] -> + positions -> causal multi-head self-attention
// (8 heads of 32 dims), once per positional encoding:
//
//   NoPosition        the baseline: attention sees a bag of tokens
//   Sinusoidal        sin/cos rows added to the embeddings        (Vaswani et al. 2017)
//   LearnedAbsolute   a trained [max_len, 256] table added instead (GPT-2 `wpe`)
//   RelativeBias      T5 buckets of key - query -> a learned bias per head, scale 1
//   RoPE              q and k rotated by position; base 500000 with Llama 3 scaling
//   ALiBi             -slope_h * |i - j| added to the scores
//
// Sequence 1 is sequence 0's first three tokens, left-padded to length 4. Padding is only
// positions and a key mask: the pad gets position 0 and key_padding 1, the real tokens count from
// 0. So under every encoding y[1, t + 1] equals y[0, t], which the last column checks.
//
// Run: cmake -S . -B build && cmake --build build && ./build/bin/quickstart

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <posenc/posenc.hpp>

using posenc::Index;

namespace {

constexpr Index kBatch = 2, kTokens = 4, kModel = 256, kHeads = 8, kVocab = 32, kMaxLen = 16;

// Deterministic values in [-scale, scale): a 32-bit LCG, so every platform prints the same numbers.
posenc::Tensor<float, 2> random_matrix(Index rows, Index cols, float scale, std::uint32_t seed) {
  posenc::Tensor<float, 2> t(rows, cols);
  for (Index i = 0; i < t.size(); ++i) {
    seed = seed * 1664525u + 1013904223u;
    t.data()[i] = scale * (static_cast<float>(seed >> 8) / 8388608.0f - 1.0f);
  }
  return t;
}

// max |e| over the elements of an Eigen tensor expression.
float max_abs(const auto& e) { return posenc::Tensor<float, 0>(e.abs().maximum())(); }

template <class T>
void print_2d(const char* name, const posenc::Tensor<T, 2>& t) {
  std::printf("%-12s [%td, %td]    ", name, t.dimension(0), t.dimension(1));
  for (Index b = 0; b < t.dimension(0); ++b) {
    std::printf("  [");
    for (Index l = 0; l < t.dimension(1); ++l) std::printf(l ? ", %2lld" : "%2lld", static_cast<long long>(t(b, l)));
    std::printf("]");
  }
  std::printf("\n");
}

}  // namespace

int main() {
  // Token ids [2, 4] (0 = padding), positions and key padding [2, 4].
  posenc::Tensor<int, 2> ids(kBatch, kTokens);
  ids.setValues({{5, 17, 2, 9}, {0, 5, 17, 2}});
  posenc::Tensor<posenc::Position, 2> positions(kBatch, kTokens);
  positions.setValues({{0, 1, 2, 3}, {0, 0, 1, 2}});
  posenc::Tensor<std::uint8_t, 2> key_padding(kBatch, kTokens);
  key_padding.setValues({{0, 0, 0, 0}, {1, 0, 0, 0}});

  // Embeddings [2, 4, 256]: rows of a (random, fixed) token table.
  const auto vocab = random_matrix(kVocab, kModel, 1.0f, 1);
  posenc::Tensor<float, 3> x(kBatch, kTokens, kModel);
  for (Index b = 0; b < kBatch; ++b) {
    for (Index t = 0; t < kTokens; ++t) x.chip(b, 0).chip(t, 0) = vocab.chip(ids(b, t), 0);
  }

  // Model weights [256, 256] (y = x W), and the learned tables of two encodings.
  const float w_scale = 1.0f / std::sqrt(static_cast<float>(kModel));
  const auto wq = random_matrix(kModel, kModel, w_scale, 2);
  const auto wk = random_matrix(kModel, kModel, w_scale, 3);
  const auto wv = random_matrix(kModel, kModel, w_scale, 4);
  const auto wo = random_matrix(kModel, kModel, w_scale, 5);
  const auto wpe = random_matrix(kMaxLen, kModel, 0.5f, 6);  // [max_len, d_model]
  const auto t5_table = random_matrix(32, kHeads, 1.0f, 7);  // [num_buckets, heads]

  print_2d("token ids", ids);
  print_2d("positions", positions);
  print_2d("key_padding", key_padding);
  std::printf("embeddings   [%td, %td, %td]\n", x.dimension(0), x.dimension(1), x.dimension(2));
  std::printf("attention    causal, %td heads x %td dims\n\n", kHeads, kModel / kHeads);

  posenc::AttentionOptions causal;
  causal.causal = true;
  posenc::AttentionOptions t5 = causal;
  t5.scale = 1.0;  // T5 does not scale q.k by 1/sqrt(head_dim)

  posenc::RelativeBucketConfig buckets;  // 32 buckets, max_distance 128
  buckets.bidirectional = false;         // decoder: all future keys share one bucket

  posenc::RopeConfig rope;
  rope.head_dim = kModel / kHeads;
  rope.base = 500000.0;
  rope.scaling = posenc::RopeScaling::llama3(8.0, 1.0, 4.0, 8192);

  // Every encoding goes through the same call; only the policy object (and T5's scale) changes.
  const auto attend = [&](const auto& encoding, const posenc::AttentionOptions& options) {
    return posenc::multi_head_attention(x, wq, wk, wv, wo, positions, kHeads, encoding, options, key_padding);
  };
  const posenc::Tensor<float, 3> baseline = attend(posenc::NoPosition{}, causal);
  const Eigen::array<Index, 3> seq0{0, 0, 0}, seq1{1, 1, 0}, three_tokens{1, kTokens - 1, kModel};

  std::printf("%-16s %-9s  %-35s%-15s%s\n", "encoding", "y shape", "y[0, 3, 0:4]", "vs NoPosition", "pad check");
  const auto run = [&](const char* name, const auto& encoding, const posenc::AttentionOptions& options) {
    const posenc::Tensor<float, 3> y = attend(encoding, options);
    std::printf("%-16s [%td,%td,%td]  %+.4f %+.4f %+.4f %+.4f    %-14.4f %.1e\n", name, y.dimension(0),
                y.dimension(1), y.dimension(2), y(0, 3, 0), y(0, 3, 1), y(0, 3, 2), y(0, 3, 3), max_abs(y - baseline),
                max_abs(y.slice(seq1, three_tokens) - y.slice(seq0, three_tokens)));
  };
  run("NoPosition", posenc::NoPosition{}, causal);
  run("Sinusoidal", posenc::Sinusoidal(kModel), causal);
  run("LearnedAbsolute", posenc::LearnedAbsolute(wpe), causal);
  run("RelativeBias", posenc::RelativeBias(buckets, t5_table), t5);
  run("RoPE", posenc::RoPE(rope), causal);
  run("ALiBi", posenc::ALiBi(kHeads), causal);
  std::printf("\nvs NoPosition: max |y - y_NoPosition|    pad check: max |y[1, t+1] - y[0, t]|\n");
}
