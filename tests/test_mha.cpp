// posenc::multi_head_attention (FORMAT.md §4.9): against the projections, embeddings and
// attention written out by hand, and batched against per-sequence.

#include "test_util.hpp"

using namespace testutil;
using posenc::RopeLayout;
using posenc::RopeScaling;

namespace {

/// y = x @ w for x [rows, n], w [n, m], in double.
DTensor<2> matmul(const DTensor<2>& x, const DTensor<2>& w) {
  DTensor<2> y(x.dimension(0), w.dimension(1));
  y.setZero();
  for (Index r = 0; r < x.dimension(0); ++r) {
    for (Index c = 0; c < w.dimension(1); ++c) {
      double s = 0.0;
      for (Index i = 0; i < x.dimension(1); ++i) s += x(r, i) * w(i, c);
      y(r, c) = s;
    }
  }
  return y;
}

/// [L, H*D] <-> [L, H, D]: head h owns columns h*D .. h*D + D - 1.
DTensor<3> split_heads(const DTensor<2>& x, Index heads) {
  const Index d = x.dimension(1) / heads;
  DTensor<3> out(x.dimension(0), heads, d);
  for (Index l = 0; l < x.dimension(0); ++l) {
    for (Index h = 0; h < heads; ++h) {
      for (Index c = 0; c < d; ++c) out(l, h, c) = x(l, h * d + c);
    }
  }
  return out;
}
DTensor<2> merge_heads(const DTensor<3>& x) {
  DTensor<2> out(x.dimension(0), x.dimension(1) * x.dimension(2));
  for (Index l = 0; l < x.dimension(0); ++l) {
    for (Index h = 0; h < x.dimension(1); ++h) {
      for (Index c = 0; c < x.dimension(2); ++c) out(l, h * x.dimension(2) + c) = x(l, h, c);
    }
  }
  return out;
}

struct Weights {
  FTensor<2> wq, wk, wv, wo;
};
Weights random_weights(std::mt19937& rng, Index d_model) {
  const float a = 1.0f / std::sqrt(static_cast<float>(d_model));
  return {random_tensor<2>(rng, {d_model, d_model}, -a, a), random_tensor<2>(rng, {d_model, d_model}, -a, a),
          random_tensor<2>(rng, {d_model, d_model}, -a, a), random_tensor<2>(rng, {d_model, d_model}, -a, a)};
}

/// The whole of §4.9 by hand: x' = x + pe, projections, attention, output projection.
DTensor<2> reference_mha(const DTensor<2>& x_embedded, const Weights& w, const std::vector<Position>& positions,
                         Index heads, const RefEncoding& encoding, bool causal,
                         const std::vector<std::uint8_t>& padding = {}, Position seq_len = 0) {
  const DTensor<2> q = matmul(x_embedded, to_double(w.wq));
  const DTensor<2> k = matmul(x_embedded, to_double(w.wk));
  const DTensor<2> v = matmul(x_embedded, to_double(w.wv));
  const double scale = 1.0 / std::sqrt(static_cast<double>(x_embedded.dimension(1) / heads));
  const DTensor<3> o =
      reference_attention(encoding, split_heads(q, heads), split_heads(k, heads), split_heads(v, heads), positions,
                          positions, causal, scale, padding, seq_len);
  return matmul(merge_heads(o), to_double(w.wo));
}

/// Sinusoidal rows written from the definition, long double.
DTensor<2> sinusoidal_rows(const std::vector<Position>& positions, Index dim, bool split) {
  DTensor<2> pe(static_cast<Index>(positions.size()), dim);
  for (std::size_t l = 0; l < positions.size(); ++l) {
    for (Index i = 0; i < dim / 2; ++i) {
      const long double angle = static_cast<long double>(positions[l]) *
                                std::pow(10000.0L, -2.0L * static_cast<long double>(i) / static_cast<long double>(dim));
      pe(static_cast<Index>(l), split ? i : 2 * i) = static_cast<double>(std::sin(angle));
      pe(static_cast<Index>(l), split ? dim / 2 + i : 2 * i + 1) = static_cast<double>(std::cos(angle));
    }
  }
  return pe;
}

}  // namespace

TEST_CASE("mha with a score-bias or rotary policy equals projecting and attending by hand", "[mha]") {
  std::mt19937 rng(61);
  const Index l = GENERATE(7, 12), d_model = 16, heads = 4, d = 4;  // both attention schedules
  const FTensor<2> x = random_tensor<2>(rng, {l, d_model});
  const Weights w = random_weights(rng, d_model);
  const std::vector<Position> positions = iota_positions(l);
  const DTensor<2> xd = to_double(x);
  FTensor<2> table = random_tensor<2>(rng, {32, heads});
  posenc::RelativeBucketConfig t5;  // 32 / 128 / bidirectional
  for (const bool causal : {false, true}) {
    INFO("causal " << causal);
    const auto options = attention_options(causal);
    check_close(
        posenc::multi_head_attention(x, w.wq, w.wk, w.wv, w.wo, positions, heads, posenc::NoPosition{}, options),
        reference_mha(xd, w, positions, heads, ref_none(), causal), 1e-4, 1e-4);
    check_close(
        posenc::multi_head_attention(x, w.wq, w.wk, w.wv, w.wo, positions, heads, posenc::ALiBi(heads), options),
        reference_mha(xd, w, positions, heads, ref_alibi(heads), causal), 1e-4, 1e-4);
    check_close(posenc::multi_head_attention(x, w.wq, w.wk, w.wv, w.wo, positions, heads,
                                             posenc::RelativeBias(t5, table), options),
                reference_mha(xd, w, positions, heads, ref_t5(t5, table), causal), 1e-4, 1e-4);
    const RopeScaling dynamic = RopeScaling::dynamic(2.0, 4);
    check_close(posenc::multi_head_attention(x, w.wq, w.wk, w.wv, w.wo, positions, heads,
                                             make_rope(d, d, RopeLayout::kInterleaved, dynamic), options),
                reference_mha(xd, w, positions, heads, ref_rope_encoding(dynamic, 10000.0L, d, true), causal), 1e-4,
                1e-4);
  }
}

TEST_CASE("mha with Sinusoidal equals adding the embedding, then projecting by hand", "[mha]") {
  std::mt19937 rng(62);
  const Index l = 6, d_model = 12, heads = 3;
  const FTensor<2> x = random_tensor<2>(rng, {l, d_model});
  const Weights w = random_weights(rng, d_model);
  const std::vector<Position> positions = {3, 4, 5, 6, 100, 9999999};
  for (const bool split : {false, true}) {
    const posenc::Sinusoidal pe(d_model, 10000.0,
                                split ? posenc::SinusoidalLayout::kSplit : posenc::SinusoidalLayout::kInterleaved);
    DTensor<2> embedded = to_double(x);
    const DTensor<2> rows = sinusoidal_rows(positions, d_model, split);
    for (Index i = 0; i < embedded.size(); ++i) embedded.data()[i] += rows.data()[i];
    INFO("split " << split);
    const FTensor<2> got = posenc::multi_head_attention(x, w.wq, w.wk, w.wv, w.wo, positions, heads, pe);
    check_close(got, reference_mha(embedded, w, positions, heads, ref_none(), false), 1e-4, 1e-4);
    // The embedding matters: without it the result differs.
    CHECK(finite_max_abs_diff(got, reference_mha(to_double(x), w, positions, heads, ref_none(), false)) > 1e-3);
  }
}

TEST_CASE("mha with LearnedAbsolute equals adding table[positions], then projecting by hand", "[mha]") {
  std::mt19937 rng(63);
  const Index l = 5, d_model = 8, heads = 2, max_len = 12;
  const FTensor<2> x = random_tensor<2>(rng, {l, d_model});
  const FTensor<2> table = random_tensor<2>(rng, {max_len, d_model});
  const Weights w = random_weights(rng, d_model);
  const std::vector<Position> positions = {7, 8, 9, 10, 11};  // the last rows of the table
  const posenc::LearnedAbsolute wpe(table);
  DTensor<2> embedded = to_double(x);
  for (Index t = 0; t < l; ++t) {
    for (Index c = 0; c < d_model; ++c) embedded(t, c) += table(positions[static_cast<std::size_t>(t)], c);
  }
  for (const bool causal : {false, true}) {
    check_close(
        posenc::multi_head_attention(x, w.wq, w.wk, w.wv, w.wo, positions, heads, wpe, attention_options(causal)),
        reference_mha(embedded, w, positions, heads, ref_none(), causal), 1e-4, 1e-4);
  }
  // Position past the table.
  POSENC_REQUIRE_THROWS_NAMING(
      posenc::PositionOutOfRange, "positions",
      posenc::multi_head_attention(x, w.wq, w.wk, w.wv, w.wo, std::vector<Position>{8, 9, 10, 11, 12}, heads, wpe));
}

TEST_CASE("batched mha equals per-sequence mha, with left padding", "[mha][batch]") {
  std::mt19937 rng(64);
  const Index b = 3, l = 4, d_model = 8, heads = 2;
  const FTensor<3> x = random_tensor<3>(rng, {b, l, d_model});
  const Weights w = random_weights(rng, d_model);
  const FTensor<2> table = random_tensor<2>(rng, {6, d_model});
  const std::vector<Position> positions = {0, 1, 2, 3, 0, 0, 0, 1, 0, 0, 0, 0};
  const std::vector<std::uint8_t> padding = {0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0};
  posenc::Tensor<Position, 2> bp(b, l);
  std::copy(positions.begin(), positions.end(), bp.data());
  posenc::Tensor<std::uint8_t, 2> bpad(b, l);
  std::copy(padding.begin(), padding.end(), bpad.data());
  const auto options = attention_options(true);
  const auto run = [&](const auto& policy, const char* name) {
    INFO("policy " << name);
    const FTensor<3> batched =
        posenc::multi_head_attention(x, w.wq, w.wk, w.wv, w.wo, bp, heads, policy, options, bpad);
    REQUIRE(batched.dimension(0) == b);
    REQUIRE(batched.dimension(1) == l);
    REQUIRE(batched.dimension(2) == d_model);
    for (Index s = 0; s < b; ++s) {
      const FTensor<2> single = posenc::multi_head_attention(
          slice_batch(x, s), w.wq, w.wk, w.wv, w.wo, row(positions, s, l), heads, policy, options, row(padding, s, l));
      check_close(slice_batch(batched, s), single, 1e-6, 1e-6);
    }
  };
  run(posenc::NoPosition{}, "none");
  run(posenc::LearnedAbsolute(table), "learned_absolute");
  run(posenc::Sinusoidal(d_model), "sinusoidal");
  run(make_rope(d_model / heads, d_model / heads, RopeLayout::kHalf), "rope");
  run(posenc::ALiBi(heads), "alibi");
  // Batched learned positions are checked over every sequence, pads included.
  posenc::Tensor<Position, 2> too_far = bp;
  too_far(2, 0) = 6;
  POSENC_REQUIRE_THROWS_NAMING(posenc::PositionOutOfRange, "positions",
                               posenc::multi_head_attention(x, w.wq, w.wk, w.wv, w.wo, too_far, heads,
                                                            posenc::LearnedAbsolute(table), options, bpad));
}
