// posenc::attention (FORMAT.md §4.8): against an independent naive attention, and the properties
// every attention must have (equivariance, causality, GQA, decode = prefill, masking, batching).

#include "test_util.hpp"

using namespace testutil;
using posenc::RopeLayout;
using posenc::RopeScaling;

namespace {

struct Shape {
  Index lq, lk, heads, kv_heads, d;
};

/// A T5 config and a random table [num_buckets, heads] (fixed seed per head count).
struct T5Setup {
  posenc::RelativeBucketConfig config;
  FTensor<2> table;
};
T5Setup t5_setup(Index heads, bool bidirectional) {
  std::mt19937 rng(static_cast<unsigned>(1000 + heads));
  T5Setup s;
  s.config.num_buckets = 16;
  s.config.max_distance = 20;
  s.config.bidirectional = bidirectional;
  s.table = random_tensor<2>(rng, {16, heads}, -2.0f, 2.0f);
  return s;
}

/// Calls f(policy, reference) for NoPosition, several RoPE variants (even head_dim), ALiBi and T5.
template <class F>
void for_each_policy(Index heads, Index d, F&& f) {
  f(posenc::NoPosition{}, ref_none());
  if (d % 2 == 0) {
    f(make_rope(d, d, RopeLayout::kHalf), ref_rope_encoding(RopeScaling::none(), 10000.0L, d, false));
    const Index partial = d >= 6 ? d - 2 : d;
    const RopeScaling yarn = RopeScaling::yarn(4.0, 8);
    f(make_rope(d, partial, RopeLayout::kInterleaved, yarn, 500.0), ref_rope_encoding(yarn, 500.0L, partial, true));
    if (d > 2) {
      const RopeScaling dynamic = RopeScaling::dynamic(3.0, 10);
      f(make_rope(d, d, RopeLayout::kHalf, dynamic), ref_rope_encoding(dynamic, 10000.0L, d, false));
      const RopeScaling llama3 = RopeScaling::llama3(8.0, 1.0, 4.0, 16);
      f(make_rope(d, d, RopeLayout::kInterleaved, llama3, 100.0), ref_rope_encoding(llama3, 100.0L, d, true));
    }
  }
  f(posenc::ALiBi(heads), ref_alibi(heads));
  for (const bool bidirectional : {true, false}) {
    const T5Setup t5 = t5_setup(heads, bidirectional);
    f(posenc::RelativeBias(t5.config, t5.table), ref_t5(t5.config, t5.table));
  }
}

FTensor<3> permute_tokens(const FTensor<3>& x, const std::vector<Index>& perm) {
  FTensor<3> out(x.dimensions());
  const Index row = x.dimension(1) * x.dimension(2);
  for (Index t = 0; t < x.dimension(0); ++t) {
    std::copy(x.data() + perm[static_cast<std::size_t>(t)] * row,
              x.data() + (perm[static_cast<std::size_t>(t)] + 1) * row, out.data() + t * row);
  }
  return out;
}

template <class T>
std::vector<T> permute(const std::vector<T>& x, const std::vector<Index>& perm) {
  std::vector<T> out;
  for (Index i : perm) out.push_back(x[static_cast<std::size_t>(i)]);
  return out;
}

/// Token t of x [tokens, heads, d] as a [1, heads, d] tensor.
FTensor<3> token(const FTensor<3>& x, Index t) {
  FTensor<3> out(1, x.dimension(1), x.dimension(2));
  std::copy(x.data() + t * out.size(), x.data() + (t + 1) * out.size(), out.data());
  return out;
}

bool all_finite(const FTensor<3>& x) {
  for (Index i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x.data()[i])) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("attention agrees with an independent naive attention for every policy and several shapes", "[attention]") {
  std::mt19937 rng(41);
  // Query counts on both sides of the tiled kernel's decode/prefill switch (8 queries).
  const std::vector<Shape> shapes = {{1, 1, 1, 1, 2}, {3, 5, 2, 1, 4},   {7, 7, 4, 2, 8}, {5, 9, 6, 3, 6},
                                     {4, 4, 3, 3, 5}, {2, 17, 8, 2, 16}, {8, 8, 2, 1, 6}, {11, 6, 3, 1, 10}};
  int runs = 0;
  for (const Shape& s : shapes) {
    for (const bool causal : {false, true}) {
      for (const bool padded : {false, true}) {
        const FTensor<3> q = random_tensor<3>(rng, {s.lq, s.heads, s.d}, -2.0f, 2.0f);
        const FTensor<3> k = random_tensor<3>(rng, {s.lk, s.kv_heads, s.d}, -2.0f, 2.0f);
        const FTensor<3> v = random_tensor<3>(rng, {s.lk, s.kv_heads, s.d});
        const std::vector<Position> qp = random_positions(rng, s.lq, 0, 30);
        const std::vector<Position> kp = random_positions(rng, s.lk, 0, 30);
        const std::vector<std::uint8_t> padding = padded ? random_padding(rng, s.lk, 0.3) : std::vector<std::uint8_t>{};
        const std::optional<double> scale = padded ? std::optional<double>(0.37) : std::nullopt;
        const double used_scale = scale.value_or(1.0 / std::sqrt(static_cast<double>(s.d)));
        for (const auto kernel : kKernels) {
          for_each_policy(s.heads, s.d, [&](const auto& policy, const RefEncoding& ref) {
            INFO("kernel " << kernel_name(kernel) << ", policy " << ref.name << ", shape lq " << s.lq << " lk " << s.lk
                           << " heads " << s.heads << "/" << s.kv_heads << " d " << s.d << ", causal " << causal
                           << ", padded " << padded);
            const auto options = attention_options(causal, scale, kernel);
            const FTensor<3> got = padded ? posenc::attention(q, k, v, qp, kp, policy, options, padding)
                                          : posenc::attention(q, k, v, qp, kp, policy, options);
            REQUIRE(got.dimension(0) == s.lq);
            REQUIRE(got.dimension(1) == s.heads);
            REQUIRE(got.dimension(2) == s.d);
            check_close(got, reference_attention(ref, q, k, v, qp, kp, causal, used_scale, padding), 2e-5, 2e-5);
            ++runs;
          });
        }
      }
    }
  }
  CHECK(runs > 200);
}

TEST_CASE("attention with NoPosition and no mask is permutation-equivariant", "[attention]") {
  std::mt19937 rng(42);
  const Index lq = 6, lk = 8, heads = 4, kv = 2, d = 8;
  const FTensor<3> q = random_tensor<3>(rng, {lq, heads, d}, -3.0f, 3.0f);
  const FTensor<3> k = random_tensor<3>(rng, {lk, kv, d}, -3.0f, 3.0f);
  const FTensor<3> v = random_tensor<3>(rng, {lk, kv, d});
  const std::vector<Position> qp = iota_positions(lq, 10);
  const std::vector<Position> kp = iota_positions(lk, 7);
  const posenc::NoPosition none;
  const std::vector<Index> q_perm = {3, 0, 5, 1, 4, 2};
  const std::vector<Index> k_perm = {7, 2, 0, 5, 1, 6, 3, 4};
  for (const auto kernel : kKernels) {
    INFO("kernel " << kernel_name(kernel));
    const auto o = attention_options(false, std::nullopt, kernel);
    const FTensor<3> base = posenc::attention(q, k, v, qp, kp, none, o);
    // Permute the query tokens: the output rows permute the same way.
    check_close(posenc::attention(permute_tokens(q, q_perm), k, v, qp, kp, none, o), permute_tokens(base, q_perm),
                2e-6);
    // Permute keys together with their values: nothing changes.
    check_close(posenc::attention(q, permute_tokens(k, k_perm), permute_tokens(v, k_perm), qp, kp, none, o), base,
                2e-6);
    // Permuting keys without their values does change the output (the check above can fail).
    CHECK(finite_max_abs_diff(posenc::attention(q, permute_tokens(k, k_perm), v, qp, kp, none, o), base) > 1e-3);
  }
}

TEST_CASE("attention is equivariant under permuting tokens together with their positions, for every policy",
          "[attention]") {
  std::mt19937 rng(43);
  const Index lq = 5, lk = 7, heads = 4, kv = 2, d = 8;
  const FTensor<3> q = random_tensor<3>(rng, {lq, heads, d}, -2.0f, 2.0f);
  const FTensor<3> k = random_tensor<3>(rng, {lk, kv, d}, -2.0f, 2.0f);
  const FTensor<3> v = random_tensor<3>(rng, {lk, kv, d});
  const std::vector<Position> qp = {4, 9, 0, 13, 6};
  const std::vector<Position> kp = {0, 2, 5, 6, 9, 11, 14};
  const std::vector<Index> q_perm = {2, 4, 0, 3, 1};
  const std::vector<Index> k_perm = {6, 3, 0, 5, 1, 2, 4};
  for (const auto& setting : {std::pair{false, kKernels[0]}, std::pair{true, kKernels[0]},
                              std::pair{false, kKernels[1]}, std::pair{true, kKernels[1]}}) {
    const bool causal = setting.first;  // named copies: clang before 16 cannot capture a structured binding
    const auto kernel = setting.second;
    for_each_policy(heads, d, [&](const auto& policy, const RefEncoding& ref) {
      INFO("kernel " << kernel_name(kernel) << ", policy " << ref.name << ", causal " << causal);
      const auto options = attention_options(causal, std::nullopt, kernel);
      const FTensor<3> base = posenc::attention(q, k, v, qp, kp, policy, options);
      check_close(posenc::attention(permute_tokens(q, q_perm), k, v, permute(qp, q_perm), kp, policy, options),
                  permute_tokens(base, q_perm), 2e-6);
      check_close(posenc::attention(q, permute_tokens(k, k_perm), permute_tokens(v, k_perm), qp, permute(kp, k_perm),
                                    policy, options),
                  base, 2e-6);
    });
  }
}

TEST_CASE("a causal query ignores future keys: changing future k and v changes nothing", "[attention]") {
  std::mt19937 rng(44);
  const Index l = 8, heads = 2, d = 6;
  const FTensor<3> q = random_tensor<3>(rng, {l, heads, d});
  const FTensor<3> k = random_tensor<3>(rng, {l, heads, d});
  const FTensor<3> v = random_tensor<3>(rng, {l, heads, d});
  const std::vector<Position> positions = {0, 1, 2, 3, 4, 5, 6, 7};
  const Index cut = 4;  // keys at positions >= 4 are the future of queries 0..3
  FTensor<3> k2 = k, v2 = v;
  for (Index j = cut; j < l; ++j) {
    for (Index h = 0; h < heads; ++h) {
      for (Index c = 0; c < d; ++c) {
        k2(j, h, c) = -5.0f * k(j, h, c) + 1.0f;
        v2(j, h, c) = 7.0f + v(j, h, c);
      }
    }
  }
  for (const auto kernel : kKernels) {
    for_each_policy(heads, d, [&](const auto& policy, const RefEncoding& ref) {
      INFO("kernel " << kernel_name(kernel) << ", policy " << ref.name);
      const auto causal = attention_options(true, std::nullopt, kernel);
      const auto full = attention_options(false, std::nullopt, kernel);
      const FTensor<3> a = posenc::attention(q, k, v, positions, positions, policy, causal);
      const FTensor<3> b = posenc::attention(q, k2, v2, positions, positions, policy, causal);
      for (Index i = 0; i < cut; ++i) {
        for (Index h = 0; h < heads; ++h) {
          for (Index c = 0; c < d; ++c) REQUIRE(a(i, h, c) == b(i, h, c));
        }
      }
      // Queries that do see the changed keys change, so the comparison above is meaningful.
      CHECK(finite_max_abs_diff(token(a, l - 1), token(b, l - 1)) > 1e-2);
      // Without the causal flag, every query sees them.
      const FTensor<3> c0 = posenc::attention(q, k, v, positions, positions, policy, full);
      const FTensor<3> c1 = posenc::attention(q, k2, v2, positions, positions, policy, full);
      CHECK(finite_max_abs_diff(token(c0, 0), token(c1, 0)) > 1e-2);
    });
  }
}

TEST_CASE("causality is decided by position values, not token indices", "[attention]") {
  std::mt19937 rng(45);
  const FTensor<3> q = random_tensor<3>(rng, {2, 1, 4});
  const FTensor<3> k = random_tensor<3>(rng, {3, 1, 4});
  const FTensor<3> v = random_tensor<3>(rng, {3, 1, 4});
  // Keys stored in reverse position order; query 0 at position 5 sees keys at 5 and 2 only.
  const std::vector<Position> qp = {5, 1};
  const std::vector<Position> kp = {9, 5, 2};
  for (const auto kernel : kKernels) {
    INFO("kernel " << kernel_name(kernel));
    const auto causal = attention_options(true, std::nullopt, kernel);
    const FTensor<3> got = posenc::attention(q, k, v, qp, kp, posenc::NoPosition{}, causal);
    check_close(got, reference_attention(ref_none(), q, k, v, qp, kp, true, 0.5), 1e-6);
    // Query 1 (position 1) sees no key at all.
    for (Index c = 0; c < 4; ++c) CHECK(got(1, 0, c) == 0.0f);
    // Query 0 only mixes keys 1 and 2: with v of key 0 changed the output stays.
    FTensor<3> v2 = v;
    for (Index c = 0; c < 4; ++c) v2(0, 0, c) = 100.0f;
    CHECK(max_abs_diff(posenc::attention(q, k, v2, qp, kp, posenc::NoPosition{}, causal), got) == 0.0);
  }
}

TEST_CASE("grouped-query attention equals multi-head attention with repeated K/V", "[attention]") {
  std::mt19937 rng(46);
  const Index lq = 4, lk = 6, heads = 6, d = 8;
  for (const Index kv : {Index{1}, Index{2}, Index{3}, Index{6}}) {
    const FTensor<3> q = random_tensor<3>(rng, {lq, heads, d}, -2.0f, 2.0f);
    const FTensor<3> k = random_tensor<3>(rng, {lk, kv, d}, -2.0f, 2.0f);
    const FTensor<3> v = random_tensor<3>(rng, {lk, kv, d});
    // HF repeat_kv: head h reads kv head h / (heads / kv).
    FTensor<3> k_full(lk, heads, d), v_full(lk, heads, d);
    for (Index j = 0; j < lk; ++j) {
      for (Index h = 0; h < heads; ++h) {
        for (Index c = 0; c < d; ++c) {
          k_full(j, h, c) = k(j, h / (heads / kv), c);
          v_full(j, h, c) = v(j, h / (heads / kv), c);
        }
      }
    }
    const std::vector<Position> qp = {3, 4, 5, 2};
    const std::vector<Position> kp = {0, 1, 2, 3, 4, 5};
    for (const auto kernel : kKernels) {
      for_each_policy(heads, d, [&](const auto& policy, const RefEncoding& ref) {
        INFO("kernel " << kernel_name(kernel) << ", kv_heads " << kv << ", policy " << ref.name);
        const auto options = attention_options(true, std::nullopt, kernel);
        check_close(posenc::attention(q, k, v, qp, kp, policy, options),
                    posenc::attention(q, k_full, v_full, qp, kp, policy, options), 2e-6);
      });
    }
  }
}

TEST_CASE("decoding the last token (1 query at position p over p+1 keys) equals the last prefill row", "[attention]") {
  std::mt19937 rng(47);
  const Index heads = 4, kv = 2, d = 8;
  for (const Position start : {Position{0}, Position{37}}) {
    const Index l = 12;  // > the dynamic RoPE's original max (10) when start = 0 as well
    const FTensor<3> q = random_tensor<3>(rng, {l, heads, d}, -2.0f, 2.0f);
    const FTensor<3> k = random_tensor<3>(rng, {l, kv, d}, -2.0f, 2.0f);
    const FTensor<3> v = random_tensor<3>(rng, {l, kv, d});
    const std::vector<Position> positions = iota_positions(l, start);
    for (const auto kernel : kKernels) {
      for_each_policy(heads, d, [&](const auto& policy, const RefEncoding& ref) {
        INFO("kernel " << kernel_name(kernel) << ", policy " << ref.name << ", start " << start);
        const auto options = attention_options(true, std::nullopt, kernel);
        const FTensor<3> prefill = posenc::attention(q, k, v, positions, positions, policy, options);
        const FTensor<3> decode =
            posenc::attention(token(q, l - 1), k, v, std::vector<Position>{start + l - 1}, positions, policy, options);
        check_close(decode, token(prefill, l - 1), 2e-6);
        // Chunked prefill of the last 3 tokens matches too.
        FTensor<3> chunk(3, heads, d);
        std::copy(q.data() + (l - 3) * heads * d, q.data() + l * heads * d, chunk.data());
        const std::vector<Position> chunk_positions = iota_positions(3, start + l - 3);
        const FTensor<3> chunked = posenc::attention(chunk, k, v, chunk_positions, positions, policy, options);
        for (Index t = 0; t < 3; ++t) check_close(token(chunked, t), token(prefill, l - 3 + t), 2e-6);
      });
    }
  }
}

TEST_CASE("inputs near float's range give the exact finite result, not an overflow", "[attention]") {
  // Values near FLT_MAX: with equal scores the output is their mean, though the sum of the
  // weighted values is far beyond float. Decode (1 query) and prefill (many) take different kernels.
  const Index heads = 2, d = 20, lk = 40;
  constexpr float kHuge = 3.0e38f;
  for (const Index lq : {Index{1}, Index{24}}) {
    std::mt19937 rng(57);
    FTensor<3> q(lq, heads, d), v(lk, heads, d);
    const FTensor<3> k = random_tensor<3>(rng, {lk, heads, d});
    q.setZero();  // every score 0
    v.setConstant(kHuge);
    const std::vector<Position> qp = iota_positions(lq, lk - lq), kp = iota_positions(lk);
    for (const auto kernel : kKernels) {
      INFO("kernel " << kernel_name(kernel) << ", lq " << lq);
      const auto options = attention_options(false, std::nullopt, kernel);
      const FTensor<3> o = posenc::attention(q, k, v, qp, kp, posenc::NoPosition{}, options);
      for (Index i = 0; i < o.size(); ++i) REQUIRE(o.data()[i] == Approx(kHuge).epsilon(1e-6));
    }
  }
  // An input that is not finite already: NaN where it reaches (that query's row), finite elsewhere.
  {
    const Index lq = 24;
    std::mt19937 rng(58);
    FTensor<3> q = random_tensor<3>(rng, {lq, heads, d});
    const FTensor<3> k = random_tensor<3>(rng, {lk, heads, d});
    const FTensor<3> v = random_tensor<3>(rng, {lk, heads, d});
    q(0, 0, 0) = std::numeric_limits<float>::infinity();
    const FTensor<3> o = posenc::attention(q, k, v, iota_positions(lq, lk - lq), iota_positions(lk),
                                           posenc::NoPosition{}, attention_options(false));
    CHECK(std::isnan(o(0, 0, 0)));
    CHECK(std::isfinite(o(1, 0, 0)));
  }
  // Scores beyond float: q.k = +-1e40 * scale. Keys 0 and 1 score +1e40 (equal), the rest -1e40:
  // weights 1/2, 1/2 and exp(-2e40) = 0, so the output is the mean of v_0 = 1 and v_1 = 3.
  for (const Index lq : {Index{1}, Index{24}}) {
    FTensor<3> q(lq, 1, 4), k(lk, 1, 4), v(lk, 1, 4);
    q.setZero();
    k.setZero();
    v.setConstant(100.0f);
    for (Index i = 0; i < lq; ++i) q(i, 0, 0) = 1e20f;
    for (Index j = 0; j < lk; ++j) k(j, 0, 0) = j < 2 ? 1e20f : -1e20f;
    for (Index c = 0; c < 4; ++c) {
      v(0, 0, c) = 1.0f;
      v(1, 0, c) = 3.0f;
    }
    const std::vector<Position> qp = iota_positions(lq, lk - lq), kp = iota_positions(lk);
    for (const auto kernel : kKernels) {
      INFO("kernel " << kernel_name(kernel) << ", lq " << lq);
      const auto options = attention_options(false, std::nullopt, kernel);
      const FTensor<3> o = posenc::attention(q, k, v, qp, kp, posenc::NoPosition{}, options);
      for (Index i = 0; i < o.size(); ++i) REQUIRE(o.data()[i] == 2.0f);
    }
  }
}

TEST_CASE("a row with no visible key outputs zeros, never NaN", "[attention]") {
  std::mt19937 rng(48);
  const Index heads = 2, d = 4;
  const FTensor<3> q = random_tensor<3>(rng, {3, heads, d});
  const FTensor<3> k = random_tensor<3>(rng, {4, heads, d});
  const FTensor<3> v = random_tensor<3>(rng, {4, heads, d}, 1.0f, 2.0f);  // any visible key gives output >= 1
  for (const auto kernel : kKernels) {
    for_each_policy(heads, d, [&](const auto& policy, const RefEncoding& ref) {
      INFO("kernel " << kernel_name(kernel) << ", policy " << ref.name);
      const auto causal_options = attention_options(true, std::nullopt, kernel);
      const auto full = attention_options(false, std::nullopt, kernel);
      const std::vector<Position> qp = {0, 2, 9};
      const std::vector<Position> kp = {3, 4, 5, 6};
      const FTensor<3> causal = posenc::attention(q, k, v, qp, kp, policy, causal_options);
      REQUIRE(all_finite(causal));
      for (Index i = 0; i < 2; ++i) {
        for (Index h = 0; h < heads; ++h) {
          for (Index c = 0; c < d; ++c) CHECK(causal(i, h, c) == 0.0f);
        }
      }
      for (Index c = 0; c < d; ++c) CHECK(causal(2, 0, c) >= 0.999f);  // sees every key

      const std::vector<std::uint8_t> all_padded = {1, 1, 1, 1};
      const FTensor<3> padded = posenc::attention(q, k, v, qp, kp, policy, full, all_padded);
      REQUIRE(all_finite(padded));
      for (Index i = 0; i < padded.size(); ++i) CHECK(padded.data()[i] == 0.0f);

      // One unmasked key: its value, exactly (weight 1).
      const std::vector<std::uint8_t> one_left = {1, 1, 0, 1};
      const FTensor<3> single = posenc::attention(q, k, v, qp, kp, policy, full, one_left);
      for (Index i = 0; i < 3; ++i) {
        for (Index h = 0; h < heads; ++h) {
          for (Index c = 0; c < d; ++c) CHECK(single(i, h, c) == v(2, h, c));
        }
      }
    });
  }
}

TEST_CASE("batched attention equals per-sequence attention (non-dynamic encodings)", "[attention][batch]") {
  std::mt19937 rng(49);
  const Index b = 3, lq = 5, lk = 5, heads = 4, kv = 2, d = 8;
  const FTensor<4> q = random_tensor<4>(rng, {b, lq, heads, d}, -2.0f, 2.0f);
  const FTensor<4> k = random_tensor<4>(rng, {b, lk, kv, d}, -2.0f, 2.0f);
  const FTensor<4> v = random_tensor<4>(rng, {b, lk, kv, d});
  // FORMAT.md §4.8 example: lengths 5, 3, 1 left-padded to 5; pads at position 0 and masked.
  const std::vector<Position> positions = {0, 1, 2, 3, 4, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0};
  const std::vector<std::uint8_t> padding = {0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0};
  posenc::Tensor<Position, 2> batch_positions(b, lq);
  std::copy(positions.begin(), positions.end(), batch_positions.data());
  posenc::Tensor<std::uint8_t, 2> batch_padding(b, lk);
  std::copy(padding.begin(), padding.end(), batch_padding.data());

  const auto run_with = [&](const auto& policy, const RefEncoding& ref, posenc::AttentionKernel kernel) {
    INFO("kernel " << kernel_name(kernel) << ", policy " << ref.name);
    const auto options = attention_options(true, std::nullopt, kernel);
    const FTensor<4> batched =
        posenc::attention(q, k, v, batch_positions, batch_positions, policy, options, batch_padding);
    REQUIRE(batched.dimension(0) == b);
    for (Index s = 0; s < b; ++s) {
      INFO("sequence " << s);
      const std::vector<Position> p = row(positions, s, lq);
      const FTensor<3> single = posenc::attention(slice_batch(q, s), slice_batch(k, s), slice_batch(v, s), p, p, policy,
                                                  options, row(padding, s, lk));
      check_close(slice_batch(batched, s), single, 1e-6);
    }
    // Pad rows of sequence 1 (position 0) see exactly one key, the real token at position 0 (slot 2):
    // their output is that token's v.
    for (Index i = 0; i < 2; ++i) {
      for (Index h = 0; h < heads; ++h) {
        for (Index c = 0; c < d; ++c) CHECK(batched(1, i, h, c) == v(1, 2, h / 2, c));
      }
    }
  };
  const auto run = [&](const auto& policy, const RefEncoding& ref) {
    for (const auto kernel : kKernels) run_with(policy, ref, kernel);
  };
  run(posenc::NoPosition{}, ref_none());
  run(make_rope(d, d, RopeLayout::kHalf, RopeScaling::linear(2.0)), ref_none());
  run(make_rope(d, 6, RopeLayout::kInterleaved, RopeScaling::yarn(4.0, 2)), ref_none());
  run(posenc::ALiBi(heads), ref_none());
  const T5Setup t5 = t5_setup(heads, false);
  run(posenc::RelativeBias(t5.config, t5.table), ref_none());
}

TEST_CASE("batched attention with dynamic RoPE uses one seq_len for the whole batch", "[attention][batch]") {
  std::mt19937 rng(50);
  const Index b = 2, l = 12, heads = 2, d = 8;
  const Position orig = 8;
  const RopeScaling dynamic = RopeScaling::dynamic(4.0, orig);
  const posenc::RoPE rope = make_rope(d, d, RopeLayout::kHalf, dynamic);
  const FTensor<4> q = random_tensor<4>(rng, {b, l, heads, d}, -2.0f, 2.0f);
  const FTensor<4> k = random_tensor<4>(rng, {b, l, heads, d}, -2.0f, 2.0f);
  const FTensor<4> v = random_tensor<4>(rng, {b, l, heads, d});
  // Sequence 0: 4 real tokens (positions 0..3, left-padded); alone it would stay unscaled (seq_len 4 <= 8).
  // Sequence 1: positions 0..11, seq_len 12 > 8: the whole call is scaled with seq_len 12.
  std::vector<Position> positions(static_cast<std::size_t>(b * l), 0);
  std::vector<std::uint8_t> padding(static_cast<std::size_t>(b * l), 0);
  for (Index t = 0; t < l; ++t) {
    positions[static_cast<std::size_t>(t)] = std::max<Position>(0, t - (l - 4));
    padding[static_cast<std::size_t>(t)] = t < l - 4 ? 1 : 0;
    positions[static_cast<std::size_t>(l + t)] = t;
  }
  posenc::Tensor<Position, 2> bp(b, l);
  std::copy(positions.begin(), positions.end(), bp.data());
  posenc::Tensor<std::uint8_t, 2> bpad(b, l);
  std::copy(padding.begin(), padding.end(), bpad.data());
  for (const auto kernel : kKernels) {
    INFO("kernel " << kernel_name(kernel));
    const auto options = attention_options(true, std::nullopt, kernel);
    const FTensor<4> batched = posenc::attention(q, k, v, bp, bp, rope, options, bpad);

    const RefEncoding ref = ref_rope_encoding(dynamic, 10000.0L, d, false);
    for (Index s = 0; s < b; ++s) {
      INFO("sequence " << s);
      const std::vector<Position> p = row(positions, s, l);
      const std::vector<std::uint8_t> m = row(padding, s, l);
      // The batch's seq_len (12) for every sequence.
      check_close(slice_batch(batched, s),
                  reference_attention(ref, slice_batch(q, s), slice_batch(k, s), slice_batch(v, s), p, p, true,
                                      1.0 / std::sqrt(8.0), m, 12),
                  2e-5, 2e-5);
    }
    // Sequence 0 on its own is unscaled, so it differs from its batched result.
    const std::vector<Position> p0 = row(positions, 0, l);
    const FTensor<3> alone = posenc::attention(slice_batch(q, 0), slice_batch(k, 0), slice_batch(v, 0), p0, p0, rope,
                                               options, row(padding, 0, l));
    check_close(alone,
                reference_attention(ref, slice_batch(q, 0), slice_batch(k, 0), slice_batch(v, 0), p0, p0, true,
                                    1.0 / std::sqrt(8.0), row(padding, 0, l), 4),
                2e-5, 2e-5);
    CHECK(finite_max_abs_diff(alone, slice_batch(batched, 0)) > 1e-4);
    // Sequence 1 alone has the batch's seq_len already.
    const std::vector<Position> p1 = row(positions, 1, l);
    check_close(posenc::attention(slice_batch(q, 1), slice_batch(k, 1), slice_batch(v, 1), p1, p1, rope, options),
                slice_batch(batched, 1), 1e-6);
  }
}

TEST_CASE("attention_into (raw pointers) equals the tensor form", "[attention]") {
  std::mt19937 rng(51);
  const Index b = 2, lq = 3, lk = 4, heads = 4, kv = 1, d = 6;
  const FTensor<4> q = random_tensor<4>(rng, {b, lq, heads, d});
  const FTensor<4> k = random_tensor<4>(rng, {b, lk, kv, d});
  const FTensor<4> v = random_tensor<4>(rng, {b, lk, kv, d});
  const std::vector<Position> qp = {3, 4, 5, 0, 1, 2};
  const std::vector<Position> kp = {0, 1, 2, 3, 0, 1, 2, 3};
  const std::vector<std::uint8_t> pad = {0, 1, 0, 0, 0, 0, 0, 1};
  posenc::Tensor<Position, 2> bqp(b, lq), bkp(b, lk);
  std::copy(qp.begin(), qp.end(), bqp.data());
  std::copy(kp.begin(), kp.end(), bkp.data());
  posenc::Tensor<std::uint8_t, 2> bpad(b, lk);
  std::copy(pad.begin(), pad.end(), bpad.data());
  const posenc::ALiBi alibi(heads);
  for (const auto kernel : kKernels) {
    INFO("kernel " << kernel_name(kernel));
    const auto options = attention_options(true, 0.25, kernel);
    const FTensor<4> want = posenc::attention(q, k, v, bqp, bkp, alibi, options, bpad);
    posenc::AttentionShape shape;
    shape.batch = b;
    shape.q_len = lq;
    shape.k_len = lk;
    shape.heads = heads;
    shape.kv_heads = kv;
    shape.head_dim = d;
    std::vector<float> out(static_cast<std::size_t>(want.size()), -1.0f);
    posenc::attention_into(shape, q.data(), k.data(), v.data(), qp.data(), kp.data(), pad.data(), alibi, options,
                           out.data());
    for (Index i = 0; i < want.size(); ++i) CHECK(out[static_cast<std::size_t>(i)] == want.data()[i]);
    // out may not overlap an input (the kernels read q, k, v after writing parts of out).
    FTensor<4> q_copy = q;
    POSENC_REQUIRE_THROWS_NAMING(posenc::InvalidParameter, "out overlaps q",
                                 posenc::attention_into(shape, q_copy.data(), k.data(), v.data(), qp.data(), kp.data(),
                                                        pad.data(), alibi, options, q_copy.data()));
    std::vector<float> kv_buffer(static_cast<std::size_t>(k.size() + want.size()));
    POSENC_REQUIRE_THROWS_NAMING(posenc::InvalidParameter, "out overlaps v",
                                 posenc::attention_into(shape, q.data(), k.data(), kv_buffer.data(), qp.data(),
                                                        kp.data(), pad.data(), alibi, options, kv_buffer.data() + 1));
    // And the per-sequence results against the naive reference.
    for (Index s = 0; s < b; ++s) {
      check_close(slice_batch(want, s),
                  reference_attention(ref_alibi(heads), slice_batch(q, s), slice_batch(k, s), slice_batch(v, s),
                                      row(qp, s, lq), row(kp, s, lk), true, 0.25, row(pad, s, lk)),
                  2e-5, 2e-5);
    }
  }
}

TEST_CASE("the scale option multiplies q.k and defaults to 1/sqrt(head_dim)", "[attention]") {
  std::mt19937 rng(52);
  const FTensor<3> q = random_tensor<3>(rng, {3, 2, 9}, -2.0f, 2.0f);
  const FTensor<3> k = random_tensor<3>(rng, {5, 2, 9}, -2.0f, 2.0f);
  const FTensor<3> v = random_tensor<3>(rng, {5, 2, 9});
  const std::vector<Position> qp = {0, 1, 2}, kp = {0, 1, 2, 3, 4};
  const posenc::NoPosition none;
  const FTensor<3> by_default = posenc::attention(q, k, v, qp, kp, none);
  check_close(by_default, posenc::attention(q, k, v, qp, kp, none, attention_options(false, 1.0 / 3.0)), 1e-7);
  // scale = 0: uniform weights, the mean of v.
  const FTensor<3> uniform = posenc::attention(q, k, v, qp, kp, none, attention_options(false, 0.0));
  for (Index h = 0; h < 2; ++h) {
    for (Index c = 0; c < 9; ++c) {
      double mean = 0.0;
      for (Index j = 0; j < 5; ++j) mean += v(j, h, c) / 5.0;
      for (Index i = 0; i < 3; ++i) CHECK(uniform(i, h, c) == Approx(mean).margin(1e-6));
    }
  }
  // T5 uses scale 1.
  const T5Setup t5 = t5_setup(2, true);
  const posenc::RelativeBias bias(t5.config, t5.table);
  check_close(posenc::attention(q, k, v, qp, kp, bias, attention_options(false, 1.0)),
              reference_attention(ref_t5(t5.config, t5.table), q, k, v, qp, kp, false, 1.0), 2e-5, 2e-5);
}

TEST_CASE("attention handles large positions and a large ALiBi distance without overflow", "[attention]") {
  std::mt19937 rng(53);
  const FTensor<3> q = random_tensor<3>(rng, {2, 2, 8});
  const FTensor<3> k = random_tensor<3>(rng, {3, 2, 8});
  const FTensor<3> v = random_tensor<3>(rng, {3, 2, 8});
  const std::vector<Position> qp = {posenc::kMaxPosition, 10000000};
  const std::vector<Position> kp = {0, 9999999, posenc::kMaxPosition - 1};
  for (const auto kernel : kKernels) {
    for_each_policy(2, 8, [&](const auto& policy, const RefEncoding& ref) {
      INFO("kernel " << kernel_name(kernel) << ", policy " << ref.name);
      const FTensor<3> got = posenc::attention(q, k, v, qp, kp, policy, attention_options(true, std::nullopt, kernel));
      REQUIRE(all_finite(got));
      check_close(got, reference_attention(ref, q, k, v, qp, kp, true, 1.0 / std::sqrt(8.0)), 2e-5, 2e-5);
    });
  }
}

TEST_CASE("tiled attention agrees with the naive attention across tile and vector boundaries", "[attention][tiled]") {
  std::mt19937 rng(54);
  // Query counts around the decode switch (8) and the 64-row tiles, key counts around the 64-key
  // tiles, head dims that are not whole vectors. Decode row blocks of 1, 2, 3 and 4 rows per kv
  // head (queries x group) with key counts that leave a remainder of the decode key tile and of
  // the keys taken per step; one row per kv head (multi-head decode) over column blocks of every
  // width. Decode key tiles of every width (one vector's keys, 16, 32, 64) whichever tile size the
  // host's L2 selects (64 or 256 KiB): K rows of 3 floats up to 8 x 400 and 6 x 700 per key;
  // softmax chunks of 256 keys (one, a partial second, a partial third) and, with 80 rows, of one
  // tile; P V in passes of 8 keys, with a partial last pass and head dims that leave single
  // vectors and columns after the column blocks (2 vectors wide, 4 with AVX-512).
  const std::vector<Shape> shapes = {{1, 64, 2, 1, 3},   {7, 65, 4, 2, 8},   {8, 63, 3, 3, 17},  {63, 64, 2, 2, 16},
                                     {64, 129, 4, 1, 5}, {65, 65, 2, 1, 12}, {130, 70, 2, 2, 4}, {9, 200, 6, 2, 33},
                                     {70, 1, 2, 1, 1},   {16, 70, 2, 1, 128}, {1, 37, 3, 1, 13}, {3, 37, 3, 3, 20},
                                     {1, 70, 8, 1, 128}, {1, 33, 2, 2, 24},  {2, 45, 6, 2, 11},  {1, 45, 2, 2, 131},
                                     {1, 45, 8, 8, 96},  {2, 29, 12, 6, 700}, {1, 256, 4, 2, 8},  {3, 300, 4, 1, 20},
                                     {7, 530, 8, 2, 16}, {2, 600, 40, 40, 8}, {1, 77, 8, 2, 48},  {1, 100, 16, 8, 160},
                                     {2, 100, 8, 8, 400}};
  for (const Shape& s : shapes) {
    const FTensor<3> q = random_tensor<3>(rng, {s.lq, s.heads, s.d}, -2.0f, 2.0f);
    const FTensor<3> k = random_tensor<3>(rng, {s.lk, s.kv_heads, s.d}, -2.0f, 2.0f);
    const FTensor<3> v = random_tensor<3>(rng, {s.lk, s.kv_heads, s.d});
    // Causal prefill over a cache: the queries are the last lq of lk + a few positions.
    const std::vector<Position> kp = iota_positions(s.lk, 3);
    const std::vector<Position> qp = iota_positions(s.lq, 3 + std::max<Index>(0, s.lk - s.lq));
    const std::vector<std::uint8_t> padding = random_padding(rng, s.lk, 0.2);
    for (const bool causal : {false, true}) {
      for_each_policy(s.heads, s.d, [&](const auto& policy, const RefEncoding& ref) {
        INFO("policy " << ref.name << ", shape lq " << s.lq << " lk " << s.lk << " heads " << s.heads << "/"
                       << s.kv_heads << " d " << s.d << ", causal " << causal);
        const auto options = attention_options(causal);
        const double scale = 1.0 / std::sqrt(static_cast<double>(s.d));
        check_close(posenc::attention(q, k, v, qp, kp, policy, options),
                    reference_attention(ref, q, k, v, qp, kp, causal, scale), 2e-5, 2e-5);
        check_close(posenc::attention(q, k, v, qp, kp, policy, options, padding),
                    reference_attention(ref, q, k, v, qp, kp, causal, scale, padding), 2e-5, 2e-5);
      });
    }
  }
}

TEST_CASE("tiled attention gives the same result on several threads", "[attention][tiled]") {
  std::mt19937 rng(55);
  // A decode step takes a thread per 2 MiB of K and V: the small one runs on one thread, the
  // 6 MiB one on three (one kv head each).
  for (const Shape& s : {Shape{3, 50, 4, 2, 8}, Shape{2, 4096, 6, 3, 64}, Shape{150, 150, 4, 2, 8}}) {
    const FTensor<3> q = random_tensor<3>(rng, {s.lq, s.heads, s.d});
    const FTensor<3> k = random_tensor<3>(rng, {s.lk, s.kv_heads, s.d});
    const FTensor<3> v = random_tensor<3>(rng, {s.lk, s.kv_heads, s.d});
    const std::vector<Position> qp = iota_positions(s.lq, s.lk - s.lq);
    const std::vector<Position> kp = iota_positions(s.lk);
    for_each_policy(s.heads, s.d, [&](const auto& policy, const RefEncoding& ref) {
      INFO("policy " << ref.name << ", lq " << s.lq);
      const FTensor<3> one = posenc::attention(
          q, k, v, qp, kp, policy, attention_options(true, std::nullopt, posenc::AttentionKernel::kTiled, 1));
      const FTensor<3> three = posenc::attention(
          q, k, v, qp, kp, policy, attention_options(true, std::nullopt, posenc::AttentionKernel::kTiled, 3));
      CHECK(max_abs_diff(one, three) == 0.0);
    });
  }
}

TEST_CASE("attention keeps precision with large scores and large ALiBi biases", "[attention]") {
  std::mt19937 rng(56);
  const Index lq = 10, lk = 80, heads = 2, d = 8;
  // Scores in the hundreds: a softmax without max subtraction would overflow.
  const FTensor<3> q = random_tensor<3>(rng, {lq, heads, d}, -12.0f, 12.0f);
  const FTensor<3> k = random_tensor<3>(rng, {lk, heads, d}, -12.0f, 12.0f);
  const FTensor<3> v = random_tensor<3>(rng, {lk, heads, d});
  // Positions near 10^7 with gaps: ALiBi biases up to ~1e6 in magnitude.
  std::vector<Position> kp;
  for (Index j = 0; j < lk; ++j) kp.push_back(10000000 + 37 * j - (j % 3 == 0 ? 5000000 : 0));
  std::vector<Position> qp;
  for (Index i = 0; i < lq; ++i) qp.push_back(10000000 + 300 * i);
  for (const auto kernel : kKernels) {
    INFO("kernel " << kernel_name(kernel));
    for (const bool causal : {false, true}) {
      const auto options = attention_options(causal, std::nullopt, kernel);
      const FTensor<3> none = posenc::attention(q, k, v, qp, kp, posenc::NoPosition{}, options);
      REQUIRE(all_finite(none));
      check_close(none, reference_attention(ref_none(), q, k, v, qp, kp, causal, 1.0 / std::sqrt(8.0)), 2e-5, 2e-5);
      const FTensor<3> alibi = posenc::attention(q, k, v, qp, kp, posenc::ALiBi(heads), options);
      REQUIRE(all_finite(alibi));
      check_close(alibi, reference_attention(ref_alibi(heads), q, k, v, qp, kp, causal, 1.0 / std::sqrt(8.0)), 2e-5,
                  2e-5);
    }
  }
}

TEST_CASE("RoPE with an attached cos/sin table gives the results of RoPE without it", "[attention][rope]") {
  std::mt19937 rng(57);
  const Index heads = 2, d = 8;
  const FTensor<3> q = random_tensor<3>(rng, {12, heads, d}, -2.0f, 2.0f);
  const FTensor<3> k = random_tensor<3>(rng, {40, heads, d}, -2.0f, 2.0f);
  const FTensor<3> v = random_tensor<3>(rng, {40, heads, d});
  const std::vector<Position> kp = iota_positions(40);
  const std::vector<Position> qp = iota_positions(12, 28);
  for (const auto& [name, scaling] : all_scalings(d)) {
    for (const Position cache_size : {Position{16}, Position{40}, Position{64}}) {
      INFO("scaling " << name << ", cache " << cache_size);
      const posenc::RoPE plain = make_rope(d, d, RopeLayout::kInterleaved, scaling);
      const posenc::RoPE cached = plain.with_cache(cache_size);
      REQUIRE(cached.attached_cache() != nullptr);
      CHECK(plain.attached_cache() == nullptr);
      const RefEncoding ref = ref_rope_encoding(scaling, 10000.0L, d, true);
      for (const auto kernel : kKernels) {
        const auto options = attention_options(true, std::nullopt, kernel);
        const FTensor<3> a = posenc::attention(q, k, v, qp, kp, plain, options);
        const FTensor<3> b = posenc::attention(q, k, v, qp, kp, cached, options);
        check_close(b, a, 1e-6);
        // A table built for another seq_len (dynamic, longrope) must not be used with the wrong angles.
        check_close(b, reference_attention(ref, q, k, v, qp, kp, true, 1.0 / std::sqrt(8.0)), 2e-5, 2e-5);
      }
    }
  }
}

TEST_CASE("RoPE over a cache of already-rotated keys equals RoPE rotating the raw keys", "[attention][rope]") {
  // for_rotated_key_cache(): the caller rotates keys once (RoPE::apply with the call's
  // frequencies) and attention rotates only the queries: a decode step (1 query) and a prefill
  // (many queries) over GQA heads, with and without an attached table, on both kernels.
  std::mt19937 rng(59);
  const Index heads = 4, kv_heads = 2, d = 16, lk = 70;
  const FTensor<3> k = random_tensor<3>(rng, {lk, kv_heads, d}, -2.0f, 2.0f);
  const FTensor<3> v = random_tensor<3>(rng, {lk, kv_heads, d});
  const std::vector<Position> kp = iota_positions(lk, 5);
  for (const auto layout : {RopeLayout::kHalf, RopeLayout::kInterleaved}) {
    for (const Index lq : {Index{1}, Index{20}}) {
      INFO("layout " << static_cast<int>(layout) << ", queries " << lq);
      const FTensor<3> q = random_tensor<3>(rng, {lq, heads, d}, -2.0f, 2.0f);
      const std::vector<Position> qp = iota_positions(lq, 5 + lk - lq);
      const posenc::RoPE rope = make_rope(d, d, layout, RopeScaling::none()).with_cache(128);
      const posenc::RoPE queries_only = rope.for_rotated_key_cache();
      CHECK(rope.rotates_keys());
      CHECK_FALSE(queries_only.rotates_keys());
      FTensor<3> rotated_k = k;
      rope.apply(rotated_k, kp);
      for (const auto kernel : kKernels) {
        const auto options = attention_options(true, std::nullopt, kernel);
        const FTensor<3> want = posenc::attention(q, k, v, qp, kp, rope, options);
        check_close(posenc::attention(q, rotated_k, v, qp, kp, queries_only, options), want, 1e-6);
        // And the raw keys under queries_only are not rotated: the result differs.
        const FTensor<3> raw = posenc::attention(q, k, v, qp, kp, queries_only, options);
        double largest = 0.0;
        for (Index i = 0; i < raw.size(); ++i) {
          largest = std::max(largest, std::fabs(static_cast<double>(raw.data()[i]) - want.data()[i]));
        }
        CHECK(largest > 1e-3);
      }
    }
  }
}

/// RoPE behind the minimal rotation hook QKRotation asks for (in place only): attention then
/// copies each tile's rows and rotates them, where RoPE itself is rotated as it is gathered.
struct InPlaceOnlyRoPE : posenc::EncodingBase {
  static constexpr bool kQKRotation = true;
  using Rotation = posenc::RotaryFrequencies;
  posenc::RoPE rope;
  Index head_dim() const { return rope.head_dim(); }
  Rotation rotation(Position seq_len) const { return rope.rotation(seq_len); }
  template <class T>
  void rotate_unchecked(T* x, Index tokens, Index heads, const Position* positions, const Rotation& r) const {
    rope.rotate_unchecked(x, tokens, heads, positions, r);
  }
};

TEST_CASE("a rotation policy with only the in-place hook gives the results of RoPE", "[attention][rope]") {
  std::mt19937 rng(61);
  const Index heads = 4, kv_heads = 2, d = 16, lk = 70;
  const FTensor<3> k = random_tensor<3>(rng, {lk, kv_heads, d}, -2.0f, 2.0f);
  const FTensor<3> v = random_tensor<3>(rng, {lk, kv_heads, d});
  const std::vector<Position> kp = iota_positions(lk, 3);
  for (const auto layout : {RopeLayout::kHalf, RopeLayout::kInterleaved}) {
    const posenc::RoPE rope = make_rope(d, d, layout, RopeScaling::none());
    const InPlaceOnlyRoPE in_place_only{{}, rope};
    for (const Index lq : {Index{1}, Index{3}, Index{70}}) {  // decode, a few queries, prefill
      INFO("layout " << static_cast<int>(layout) << ", queries " << lq);
      const FTensor<3> q = random_tensor<3>(rng, {lq, heads, d}, -2.0f, 2.0f);
      const std::vector<Position> qp = iota_positions(lq, 3 + lk - lq);
      for (const auto kernel : kKernels) {
        const auto options = attention_options(true, std::nullopt, kernel);
        check_close(posenc::attention(q, k, v, qp, kp, in_place_only, options),
                    posenc::attention(q, k, v, qp, kp, rope, options), 1e-6);
      }
    }
  }
}

TEST_CASE("batched prefill (many queries) equals per-sequence attention, ragged and left-padded",
          "[attention][batch]") {
  std::mt19937 rng(58);
  const Index b = 3, l = 20, heads = 4, kv = 2, d = 8;
  const std::vector<Index> lengths = {20, 13, 0};  // the last sequence is idle: every key padded
  const FTensor<4> q = random_tensor<4>(rng, {b, l, heads, d}, -2.0f, 2.0f);
  const FTensor<4> k = random_tensor<4>(rng, {b, l, kv, d}, -2.0f, 2.0f);
  const FTensor<4> v = random_tensor<4>(rng, {b, l, kv, d});
  std::vector<Position> positions;
  std::vector<std::uint8_t> padding;
  for (const Index n : lengths) {
    for (Index t = 0; t < l; ++t) {
      const Index real = t - (l - n);  // left padding
      positions.push_back(real < 0 ? 0 : real);
      padding.push_back(real < 0 ? 1 : 0);
    }
  }
  posenc::Tensor<Position, 2> bp(b, l);
  std::copy(positions.begin(), positions.end(), bp.data());
  posenc::Tensor<std::uint8_t, 2> bpad(b, l);
  std::copy(padding.begin(), padding.end(), bpad.data());
  for (const auto kernel : kKernels) {
    for_each_policy(heads, d, [&](const auto& policy, const RefEncoding& ref) {
      INFO("kernel " << kernel_name(kernel) << ", policy " << ref.name);
      const auto options = attention_options(true, std::nullopt, kernel);
      const FTensor<4> batched = posenc::attention(q, k, v, bp, bp, policy, options, bpad);
      const Position seq_len = 20;  // max over the batch + 1
      for (Index s = 0; s < b; ++s) {
        INFO("sequence " << s);
        const std::vector<Position> p = row(positions, s, l);
        const std::vector<std::uint8_t> m = row(padding, s, l);
        check_close(slice_batch(batched, s),
                    reference_attention(ref, slice_batch(q, s), slice_batch(k, s), slice_batch(v, s), p, p, true,
                                        1.0 / std::sqrt(8.0), m, seq_len),
                    2e-5, 2e-5);
      }
      // The idle sequence outputs zeros.
      const FTensor<3> idle = slice_batch(batched, 2);
      for (Index i = 0; i < idle.size(); ++i) REQUIRE(idle.data()[i] == 0.0f);
    });
  }
}

TEST_CASE("the thread count may come from POSENC_THREADS", "[attention][tiled]") {
  std::mt19937 rng(59);
  const FTensor<3> q = random_tensor<3>(rng, {70, 4, 8});
  const FTensor<3> k = random_tensor<3>(rng, {70, 4, 8});
  const FTensor<3> v = random_tensor<3>(rng, {70, 4, 8});
  const std::vector<Position> p = iota_positions(70);
  posenc::AttentionOptions options;  // threads = 0: from the environment
  options.causal = true;
  const FTensor<3> one = posenc::attention(q, k, v, p, p, posenc::ALiBi(4), attention_options(true));
  ::setenv("POSENC_THREADS", "2", 1);
  const FTensor<3> two = posenc::attention(q, k, v, p, p, posenc::ALiBi(4), options);
  ::setenv("POSENC_THREADS", "not a number", 1);
  const FTensor<3> fallback = posenc::attention(q, k, v, p, p, posenc::ALiBi(4), options);
  ::unsetenv("POSENC_THREADS");
  CHECK(max_abs_diff(one, two) == 0.0);
  CHECK(max_abs_diff(one, fallback) == 0.0);
}

TEST_CASE("buffers kept between calls carry nothing from one call to the next", "[attention][tiled]") {
  // The prefill buffers of the calling thread are reused: a large call (more keys, wider heads,
  // padded keys, three threads, infinite K and V) and then a smaller one must give the smaller
  // call's fresh result (a stale infinity in a padded slot would turn 0 * v into NaN).
  std::mt19937 rng(60);
  const auto run = [&](const Shape& s, int threads, bool padded) {
    const FTensor<3> q = random_tensor<3>(rng, {s.lq, s.heads, s.d});
    FTensor<3> k = random_tensor<3>(rng, {s.lk, s.kv_heads, s.d});
    FTensor<3> v = random_tensor<3>(rng, {s.lk, s.kv_heads, s.d});
    if (padded) {
      k.setConstant(std::numeric_limits<float>::infinity());
      v.setConstant(std::numeric_limits<float>::infinity());
    }
    const std::vector<Position> p = iota_positions(s.lk);
    const std::vector<std::uint8_t> padding = padded ? random_padding(rng, s.lk, 0.3) : std::vector<std::uint8_t>{};
    const auto options = attention_options(true, std::nullopt, posenc::AttentionKernel::kTiled, threads);
    return posenc::attention(q, k, v, p, p, posenc::ALiBi(s.heads), options,
                             padded ? posenc::KeyPaddingRef(padding) : posenc::KeyPaddingRef{});
  };
  const Shape large{200, 200, 4, 2, 40}, small{70, 70, 2, 1, 12};
  posenc::release_attention_buffers();
  rng.seed(61);
  const FTensor<3> fresh = run(small, 1, false);
  rng.seed(62);
  (void)run(large, 3, true);
  rng.seed(61);
  const FTensor<3> reused = run(small, 1, false);
  CHECK(max_abs_diff(fresh, reused) == 0.0);
  posenc::release_attention_buffers();  // and after a release, calls allocate afresh and still work
  rng.seed(61);
  CHECK(max_abs_diff(fresh, run(small, 1, false)) == 0.0);
}

TEST_CASE("score biases over a consecutive KV cache at large offsets match the naive attention", "[attention]") {
  std::mt19937 rng(60);
  const Index d = 8;
  // 16 heads: ALiBi slopes up to 2^-0.5, so a tile's bias spans ~90 (prefill adds a whole tile's
  // bias from one row, tile_bias) and a decode chunk's (256 keys, with 300 keys) ~180; with 150
  // keys decode takes a softmax step per 32-key tile.
  for (const auto& [lk, heads] : {std::pair<Index, Index>{150, 4}, {150, 16}, {300, 4}, {300, 16}}) {
    const FTensor<3> k = random_tensor<3>(rng, {lk, heads, d});
    const FTensor<3> v = random_tensor<3>(rng, {lk, heads, d});
    const T5Setup t5 = t5_setup(heads, false);
    // Keys at consecutive positions (the usual cache), queries at, inside and far past them:
    // distances beyond 2^24 cannot be represented exactly in float. Prefill chunks of 12 and of 70
    // queries (a full query tile and a partial one).
    for (const Position k_first : {Position{0}, Position{9999900}, posenc::kMaxPosition - lk + 1}) {
      const std::vector<Position> kp = iota_positions(lk, k_first);
      for (const std::vector<Position>& qp :
           {std::vector<Position>{k_first + lk - 1}, std::vector<Position>{k_first + 3, k_first + 70, k_first + lk - 40},
            std::vector<Position>{posenc::kMaxPosition}, iota_positions(12, k_first + 100),
            iota_positions(70, k_first + 80), iota_positions(70, k_first == 0 ? 100000 : k_first - 5000)}) {
        const FTensor<3> q = random_tensor<3>(rng, {static_cast<Index>(qp.size()), heads, d});
        for (const auto kernel : kKernels) {
          for (const bool causal : {false, true}) {
            INFO("heads " << heads << ", kernel " << kernel_name(kernel) << ", k_first " << k_first << ", first query "
                          << qp[0] << ", causal " << causal);
            const auto options = attention_options(causal, std::nullopt, kernel);
            const double scale = 1.0 / std::sqrt(8.0);
            check_close(posenc::attention(q, k, v, qp, kp, posenc::ALiBi(heads), options),
                        reference_attention(ref_alibi(heads), q, k, v, qp, kp, causal, scale), 2e-5, 2e-5);
            check_close(posenc::attention(q, k, v, qp, kp, posenc::RelativeBias(t5.config, t5.table), options),
                        reference_attention(ref_t5(t5.config, t5.table), q, k, v, qp, kp, causal, scale), 2e-5, 2e-5);
          }
        }
      }
    }
  }
}

TEST_CASE("T5 biases of large magnitude keep the softmax's precision", "[attention]") {
  // Table values near -1e4 (float spacing ~1e-3 there): only their differences, a few units,
  // matter to the softmax, and a score rounded to float after its bias is added loses them.
  std::mt19937 rng(62);
  const Index heads = 2, d = 8, lk = 300;
  const FTensor<3> k = random_tensor<3>(rng, {lk, heads, d});
  const FTensor<3> v = random_tensor<3>(rng, {lk, heads, d});
  T5Setup t5 = t5_setup(heads, false);
  for (Index i = 0; i < t5.table.size(); ++i) t5.table.data()[i] -= 10000.0f;
  const std::vector<Position> kp = iota_positions(lk, 5000);
  const std::vector<std::vector<Position>> query_sets = {{5000 + lk - 1}, iota_positions(70, 5000 + lk - 70)};
  // Biases too large for a score to register next to them, even in double (1e20): with a single
  // visible key its weight is 1 all the same, and the output is its value.
  for (const Index lq : {Index{1}, Index{12}}) {
    FTensor<2> huge_table(16, heads);
    huge_table.setConstant(1e20f);
    FTensor<3> q(lq, heads, d), k_unit(lk, heads, d);
    q.setZero();
    k_unit.setZero();
    for (Index i = 0; i < lq; ++i) {
      for (Index h = 0; h < heads; ++h) q(i, h, 0) = -100.0f;  // scale * q.k = -100
    }
    for (Index j = 0; j < lk; ++j) {
      for (Index h = 0; h < heads; ++h) k_unit(j, h, 0) = 1.0f;
    }
    std::vector<std::uint8_t> one_visible(static_cast<std::size_t>(lk), 1);
    one_visible[5] = 0;
    for (const auto kernel : kKernels) {
      INFO("huge table, kernel " << kernel_name(kernel) << ", queries " << lq);
      const FTensor<3> o = posenc::attention(q, k_unit, v, iota_positions(lq, 5000 + lk - lq), kp,
                                             posenc::RelativeBias(t5.config, huge_table),
                                             attention_options(false, 1.0, kernel), one_visible);
      for (Index i = 0; i < lq; ++i) {
        for (Index h = 0; h < heads; ++h) {
          for (Index c = 0; c < d; ++c) CHECK(o(i, h, c) == v(5, h, c));
        }
      }
    }
  }
  // Tables past 2^30 (float spacing 128 and more), whose logits double still resolves to 1e-4 or
  // better: the weights follow the scores as in the reference.
  for (const float magnitude : {1.5e9f, -1.5e9f, 1e12f}) {
    FTensor<2> large_table = t5.table;
    for (Index i = 0; i < large_table.size(); ++i) large_table.data()[i] = magnitude + 1024.0f * static_cast<float>(i % 3);
    const std::vector<Position> qp = iota_positions(70, 5000 + lk - 70);
    const FTensor<3> q = random_tensor<3>(rng, {70, heads, d});
    for (const auto kernel : kKernels) {
      INFO("table near " << magnitude << ", kernel " << kernel_name(kernel));
      check_close(posenc::attention(q, k, v, qp, kp, posenc::RelativeBias(t5.config, large_table),
                                    attention_options(true, std::nullopt, kernel)),
                  reference_attention(ref_t5(t5.config, large_table), q, k, v, qp, kp, true, 1.0 / std::sqrt(8.0)),
                  2e-5, 2e-5);
    }
  }
  // max_distance 20: the bias by offset; 10^5: past RelativeBias's offset table, a bucket per key.
  for (const Position max_distance : {Position{20}, Position{100000}}) {
    t5.config.max_distance = max_distance;
    const posenc::RelativeBias t5_bias(t5.config, t5.table);
    for (const std::vector<Position>& qp : query_sets) {
      const FTensor<3> q = random_tensor<3>(rng, {static_cast<Index>(qp.size()), heads, d});
      for (const auto kernel : kKernels) {
        for (const bool causal : {false, true}) {
          INFO("max_distance " << max_distance << ", kernel " << kernel_name(kernel) << ", queries " << qp.size()
                               << ", causal " << causal);
          const auto options = attention_options(causal, std::nullopt, kernel);
          check_close(posenc::attention(q, k, v, qp, kp, t5_bias, options),
                      reference_attention(ref_t5(t5.config, t5.table), q, k, v, qp, kp, causal, 1.0 / std::sqrt(8.0)),
                      2e-5, 2e-5);
        }
      }
    }
  }
}

TEST_CASE("a row keeps its precision when keys it cannot see carry far larger T5 biases", "[attention]") {
  // The tiled kernels subtract one bias per row (or per block of rows) before the softmax, taken
  // over keys some rows cannot see. Tables whose invisible buckets lie 6000 above the visible ones
  // would leave those rows' logits near -6000, where float spacing (5e-4) swamps the scores.
  std::mt19937 rng(63);
  const Index heads = 2, d = 8, lk = 300;
  const FTensor<3> k = random_tensor<3>(rng, {lk, heads, d});
  const FTensor<3> v = random_tensor<3>(rng, {lk, heads, d});
  const std::vector<Position> kp = iota_positions(lk, 0);
  struct Setting {
    const char* name;
    bool bidirectional;
    std::vector<std::uint8_t> padding;
  };
  std::vector<std::uint8_t> near_keys_padded(static_cast<std::size_t>(lk), 0);
  for (Index j = 100; j < 200; ++j) near_keys_padded[static_cast<std::size_t>(j)] = 1;
  const std::vector<Setting> settings = {
      // future keys (masked by causality) in buckets of their own, at +3000
      {"bidirectional table, causal", true, {}},
      // the farthest bucket at +3000: the keys a row block's last row sees beyond its first's
      {"unidirectional table, causal", false, {}},
      // bucket 0 (offsets >= 0) at +3000, and each query's own key padded for queries 100-199
      {"unidirectional table, causal, padded", false, near_keys_padded},
  };
  for (const Setting& setting : settings) {
    T5Setup t5 = t5_setup(heads, setting.bidirectional);
    const Index buckets = t5.config.num_buckets;
    for (Index b = 0; b < buckets; ++b) {
      const bool high = setting.bidirectional ? b >= buckets / 2 : setting.padding.empty() ? b == buckets - 1 : b == 0;
      for (Index h = 0; h < heads; ++h) t5.table(b, h) += high ? 3000.0f : -3000.0f;
    }
    const posenc::RelativeBias t5_bias(t5.config, t5.table);
    for (const std::vector<Position>& qp : {iota_positions(lk, 0), std::vector<Position>{150}, iota_positions(3, 20)}) {
      const FTensor<3> q = random_tensor<3>(rng, {static_cast<Index>(qp.size()), heads, d});
      for (const auto kernel : kKernels) {
        INFO(setting.name << ", kernel " << kernel_name(kernel) << ", queries " << qp.size());
        const FTensor<3> o = posenc::attention(q, k, v, qp, kp, t5_bias, attention_options(true, std::nullopt, kernel),
                                               setting.padding);
        check_close(o,
                    reference_attention(ref_t5(t5.config, t5.table), q, k, v, qp, kp, true, 1.0 / std::sqrt(8.0),
                                        setting.padding),
                    2e-5, 2e-5);
      }
    }
  }
}

TEST_CASE("empty calls: no queries give an empty result, no keys give zero rows", "[attention]") {
  std::mt19937 rng(61);
  const Index heads = 4, kv = 2, d = 8;
  const posenc::ALiBi alibi(heads);
  const posenc::RoPE rope = make_rope(d, d, posenc::RopeLayout::kHalf, posenc::RopeScaling::dynamic(2.0, 4));
  const std::vector<Position> none;
  for (const auto kernel : kKernels) {
    INFO("kernel " << kernel_name(kernel));
    const auto options = attention_options(true, 0.5, kernel);
    const FTensor<3> q = random_tensor<3>(rng, {3, heads, d});
    const FTensor<3> k = random_tensor<3>(rng, {5, kv, d});
    const FTensor<3> no_queries(0, heads, d), no_keys(0, kv, d);
    const std::vector<Position> qp = {7, 8, 9}, kp = {0, 1, 2, 3, 4};
    const FTensor<3> empty = posenc::attention(no_queries, k, k, none, kp, alibi, options);
    CHECK(empty.dimension(0) == 0);
    CHECK(empty.dimension(1) == heads);
    for (const FTensor<3>& zeros : {posenc::attention(q, no_keys, no_keys, qp, none, alibi, options),
                                    posenc::attention(q, no_keys, no_keys, qp, none, rope, options),
                                    posenc::attention(q, no_keys, no_keys, qp, none, posenc::NoPosition{}, options,
                                                      std::vector<std::uint8_t>{})}) {
      REQUIRE(zeros.dimension(0) == 3);
      for (Index i = 0; i < zeros.size(); ++i) CHECK(zeros.data()[i] == 0.0f);
    }
    const FTensor<4> no_sequences(0, 3, heads, d), no_sequence_keys(0, 5, kv, d);
    const posenc::Tensor<Position, 2> no_q_positions(0, 3), no_k_positions(0, 5);
    CHECK(posenc::attention(no_sequences, no_sequence_keys, no_sequence_keys, no_q_positions, no_k_positions, alibi,
                            options)
              .size() == 0);
  }
  // Sizes that are parameters stay >= 1, and an empty q still has to agree with k.
  const FTensor<3> no_queries_wrong_dim(0, heads, d + 1), k(5, kv, d);
  POSENC_REQUIRE_THROWS_NAMING(posenc::ShapeMismatch, "k",
                               posenc::attention(no_queries_wrong_dim, k, k, none, std::vector<Position>(5, 0),
                                                 posenc::NoPosition{}));
  FTensor<3> x(0, heads, d);
  CHECK_NOTHROW(rope.apply(x, none));  // rotating no tokens does nothing
  CHECK(rope.rotate(x, none).size() == 0);
}
