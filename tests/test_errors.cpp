// Every error path of the public boundary: the exception type (posenc::InvalidParameter,
// ShapeMismatch, PositionOutOfRange, catchable as std::invalid_argument / std::out_of_range) and a
// message that names the argument (FORMAT.md §2 error classes).

#include "test_util.hpp"

using namespace testutil;
using posenc::InvalidParameter;
using posenc::PositionOutOfRange;
using posenc::RopeLayout;
using posenc::RopeScaling;
using posenc::ShapeMismatch;

TEST_CASE("error types derive from the standard exceptions a caller catches", "[errors]") {
  STATIC_REQUIRE(std::is_base_of_v<std::invalid_argument, InvalidParameter>);
  STATIC_REQUIRE(std::is_base_of_v<std::invalid_argument, ShapeMismatch>);
  STATIC_REQUIRE(std::is_base_of_v<std::out_of_range, PositionOutOfRange>);
  STATIC_REQUIRE(std::is_base_of_v<std::logic_error, PositionOutOfRange>);
  // The three kinds are distinct: a shape error is not a parameter error and vice versa.
  STATIC_REQUIRE_FALSE(std::is_base_of_v<InvalidParameter, ShapeMismatch>);
  STATIC_REQUIRE_FALSE(std::is_base_of_v<ShapeMismatch, InvalidParameter>);
  STATIC_REQUIRE_FALSE(std::is_base_of_v<std::invalid_argument, PositionOutOfRange>);
  STATIC_REQUIRE_FALSE(std::is_base_of_v<std::out_of_range, InvalidParameter>);
}

TEST_CASE("RoPE rejects bad head_dim, rotary_dim and base", "[errors][rope]") {
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "rotary_dim", make_rope(8, 5, RopeLayout::kHalf));
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "got 5", make_rope(8, 5, RopeLayout::kHalf));  // names the value
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "rotary_dim",
                               make_rope(5, std::nullopt, RopeLayout::kHalf));  // default = odd head
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "got 0", make_rope(8, 0, RopeLayout::kHalf));  // 0 is not "all"
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "rotary_dim", make_rope(8, 10, RopeLayout::kInterleaved));
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "rotary_dim", make_rope(8, -2, RopeLayout::kHalf));
  POSENC_REQUIRE_THROWS_NAMING(std::invalid_argument, "rotary_dim", make_rope(1, 1, RopeLayout::kHalf));
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "head_dim", make_rope(0, 0, RopeLayout::kHalf));
  for (const double base :
       {1.0, 0.5, 0.0, -10000.0, std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN()}) {
    INFO("base " << base);
    POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "base",
                                 make_rope(8, 8, RopeLayout::kHalf, RopeScaling::none(), base));
  }
  CHECK_NOTHROW(make_rope(8, 8, RopeLayout::kHalf, RopeScaling::none(), 1.0000001));
  CHECK_NOTHROW(make_rope(3, 2, RopeLayout::kHalf));  // partial rotary of an odd head
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "layout", posenc::parse_rope_layout("neox"));
  CHECK(posenc::parse_rope_layout("half") == RopeLayout::kHalf);
  CHECK(posenc::parse_rope_layout("interleaved") == RopeLayout::kInterleaved);
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "type", posenc::parse_rope_scaling_type("cubic"));
  // HF spells no scaling "default"; FORMAT.md lists only "none" (and an unknown type is invalid_param)
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "default", posenc::parse_rope_scaling_type("default"));
  CHECK(posenc::parse_rope_scaling_type("yarn") == posenc::RopeScalingType::kYarn);
}

TEST_CASE("RoPE scaling parameters are validated", "[errors][rope]") {
  const auto rope = [](RopeScaling s, Index r = 8) { return make_rope(r, r, RopeLayout::kHalf, std::move(s)); };
  // factor < 1
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "factor", rope(RopeScaling::linear(0.5)));
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "factor", rope(RopeScaling::ntk(0.99)));
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "factor", rope(RopeScaling::dynamic(0.0, 16)));
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "factor", rope(RopeScaling::yarn(0.9, 16)));
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "factor", rope(RopeScaling::llama3(0.5, 1.0, 4.0, 16)));
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "factor",
                               rope(RopeScaling::linear(std::numeric_limits<double>::quiet_NaN())));
  CHECK_NOTHROW(rope(RopeScaling::linear(1.0)));
  // ntk / dynamic need rotary_dim > 2
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "rotary_dim", rope(RopeScaling::ntk(2.0), 2));
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "rotary_dim", rope(RopeScaling::dynamic(2.0, 16), 2));
  CHECK_NOTHROW(rope(RopeScaling::linear(2.0), 2));
  // original_max_position_embeddings >= 1
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "original_max_position_embeddings",
                               rope(RopeScaling::dynamic(2.0, 0)));
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "original_max_position_embeddings", rope(RopeScaling::yarn(2.0, 0)));
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "original_max_position_embeddings",
                               rope(RopeScaling::llama3(2.0, 1.0, 4.0, -5)));
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "original_max_position_embeddings",
                               rope(RopeScaling::longrope({1, 1, 1, 1}, {1, 1, 1, 1}, 0)));

  SECTION("yarn betas and attention factor") {
    RopeScaling s = RopeScaling::yarn(4.0, 64);
    s.beta_fast = 1.0;
    s.beta_slow = 1.0;  // beta_fast must exceed beta_slow
    POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "beta_fast", rope(s));
    s.beta_fast = 0.5;
    POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "beta_slow", rope(s));
    s.beta_fast = 32.0;
    s.beta_slow = 0.0;  // beta_slow must be > 0
    POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "beta_slow", rope(s));
    s.beta_slow = 1.0;
    CHECK_NOTHROW(rope(s));
    s.attention_factor = 0.0;
    POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "attention_factor", rope(s));
    s.attention_factor = -1.0;
    POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "attention_factor", rope(s));
    // cos and sin are scaled by the factor in float: one past FLT_MAX would make them infinite.
    s.attention_factor = 1e39;
    POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "attention_factor", rope(s));
    s.attention_factor = 1e38;
    CHECK_NOTHROW(rope(s));
    // ... and so is a factor derived from mscale / mscale_all_dim: m(4, 1e40) = 0.1 * 1e40 * ln 4 + 1.
    s.attention_factor.reset();
    s.mscale = 1e40;
    s.mscale_all_dim = 1.0;
    POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "yarn attention factor", rope(s));
    s.mscale_all_dim = 1e40;  // the ratio is 1 again
    CHECK_NOTHROW(rope(s));
  }
  SECTION("llama3 frequency factors") {
    POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "high_freq_factor", rope(RopeScaling::llama3(8.0, 4.0, 4.0, 64)));
    POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "high_freq_factor", rope(RopeScaling::llama3(8.0, 4.0, 1.0, 64)));
    POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "low_freq_factor", rope(RopeScaling::llama3(8.0, 0.0, 4.0, 64)));
    CHECK_NOTHROW(rope(RopeScaling::llama3(8.0, 1.0, 4.0, 64)));
  }
  SECTION("longrope factor lists") {
    POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "short_factor",
                                 rope(RopeScaling::longrope({1, 1, 1}, {1, 1, 1, 1}, 64)));
    POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "long_factor",
                                 rope(RopeScaling::longrope({1, 1, 1, 1}, {1, 1, 1, 1, 1}, 64)));
    POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "long_factor", rope(RopeScaling::longrope({1, 1, 1, 1}, {}, 64)));
    POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "short_factor",
                                 rope(RopeScaling::longrope({1, 1, 0, 1}, {1, 1, 1, 1}, 64)));
    POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "long_factor",
                                 rope(RopeScaling::longrope({1, 1, 1, 1}, {1, -2, 1, 1}, 64)));
    POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "factor",
                                 rope(RopeScaling::longrope({1, 1, 1, 1}, {1, 1, 1, 1}, 64, 0.0)));
    RopeScaling s = RopeScaling::longrope({1, 1, 1, 1}, {1, 1, 1, 1}, 64);
    s.attention_factor = 0.0;
    POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "attention_factor", rope(s));
    CHECK_NOTHROW(rope(RopeScaling::longrope({1, 1, 1, 1}, {1, 2, 3, 4}, 64, 0.5)));  // factor < 1 is allowed
  }
}

TEST_CASE("RoPE apply rejects bad positions and shapes", "[errors][rope]") {
  const posenc::RoPE rope = make_rope(8, 8, RopeLayout::kHalf);
  FTensor<3> x(3, 2, 8);
  x.setZero();
  POSENC_REQUIRE_THROWS_NAMING(PositionOutOfRange, "positions", rope.apply(x, std::vector<Position>{0, -1, 2}));
  POSENC_REQUIRE_THROWS_NAMING(std::out_of_range, "-1", rope.apply(x, std::vector<Position>{0, -1, 2}));
  POSENC_REQUIRE_THROWS_NAMING(PositionOutOfRange, "positions",
                               rope.apply(x, std::vector<Position>{0, 1, posenc::kMaxPosition + 1}));
  CHECK_NOTHROW(rope.apply(x, std::vector<Position>{0, 1, posenc::kMaxPosition}));
  POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "positions", rope.apply(x, std::vector<Position>{0, 1}));
  POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "positions", rope.rotate(x, std::vector<Position>{0, 1, 2, 3}));
  FTensor<3> wrong_dim(3, 2, 6);
  POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "x", rope.apply(wrong_dim, std::vector<Position>{0, 1, 2}));
  POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "head_dim", rope.apply(wrong_dim, std::vector<Position>{0, 1, 2}));
  posenc::RotaryFrequencies short_frequencies = rope.rotation(3);
  short_frequencies.inv_freq.pop_back();
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "frequencies",
                               rope.apply(x, std::vector<Position>{0, 1, 2}, short_frequencies));
  // The input is untouched when the call is rejected.
  std::mt19937 rng(5);
  FTensor<3> y = random_tensor<3>(rng, {3, 2, 8});
  const FTensor<3> y0 = y;
  CHECK_THROWS(rope.apply(y, std::vector<Position>{0, 1, -7}));
  CHECK(max_abs_diff(y, y0) == 0.0);
}

TEST_CASE("Sinusoidal rejects bad dim, base and positions", "[errors][sinusoidal]") {
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "dim", posenc::Sinusoidal(15));
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "15", posenc::Sinusoidal(15));
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "dim", posenc::Sinusoidal(0));
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "dim", posenc::Sinusoidal(-4));
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "base", posenc::Sinusoidal(8, 1.0));
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "base", posenc::Sinusoidal(8, -3.0));
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "layout", posenc::parse_sinusoidal_layout("concat"));
  CHECK(posenc::parse_sinusoidal_layout("split") == posenc::SinusoidalLayout::kSplit);
  const posenc::Sinusoidal pe(8);
  POSENC_REQUIRE_THROWS_NAMING(PositionOutOfRange, "positions", pe.encode(std::vector<Position>{3, -2}));
  FTensor<2> x(2, 6);
  POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "x", pe.add_to(x, std::vector<Position>{0, 1}));
  FTensor<2> x8(2, 8);
  POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "x", pe.add_to(x8, std::vector<Position>{0, 1, 2}));
}

namespace {

struct AttentionInputs {
  FTensor<3> q, k, v;
  std::vector<Position> qp, kp;
};
AttentionInputs inputs(Index lq, Index lk, Index heads, Index kv, Index d) {
  std::mt19937 rng(71);
  return {random_tensor<3>(rng, {lq, heads, d}), random_tensor<3>(rng, {lk, kv, d}), random_tensor<3>(rng, {lk, kv, d}),
          iota_positions(lq), iota_positions(lk)};
}

}  // namespace

TEST_CASE("attention rejects inconsistent shapes, positions, padding and policies", "[errors][attention]") {
  const AttentionInputs a = inputs(3, 4, 4, 2, 8);
  const posenc::NoPosition none;
  for (const auto kernel : kKernels) {
    INFO("kernel " << kernel_name(kernel));
    const auto options = attention_options(false, std::nullopt, kernel);
    CHECK_NOTHROW(posenc::attention(a.q, a.k, a.v, a.qp, a.kp, none, options));

    // heads % kv_heads != 0
    const AttentionInputs bad_groups = inputs(3, 4, 4, 3, 8);
    POSENC_REQUIRE_THROWS_NAMING(
        InvalidParameter, "kv_heads",
        posenc::attention(bad_groups.q, bad_groups.k, bad_groups.v, bad_groups.qp, bad_groups.kp, none, options));
    POSENC_REQUIRE_THROWS_NAMING(
        std::invalid_argument, "heads",
        posenc::attention(bad_groups.q, bad_groups.k, bad_groups.v, bad_groups.qp, bad_groups.kp, none, options));
    // k / v shapes
    FTensor<3> v_short(3, 2, 8), v_heads(4, 1, 8), k_dim(4, 2, 6);
    POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "v", posenc::attention(a.q, a.k, v_short, a.qp, a.kp, none, options));
    POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "v", posenc::attention(a.q, a.k, v_heads, a.qp, a.kp, none, options));
    POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "k", posenc::attention(a.q, k_dim, a.v, a.qp, a.kp, none, options));
    // positions
    POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "q_positions",
                                 posenc::attention(a.q, a.k, a.v, iota_positions(2), a.kp, none, options));
    POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "k_positions",
                                 posenc::attention(a.q, a.k, a.v, a.qp, iota_positions(5), none, options));
    POSENC_REQUIRE_THROWS_NAMING(
        PositionOutOfRange, "q_positions",
        posenc::attention(a.q, a.k, a.v, std::vector<Position>{0, -1, 2}, a.kp, none, options));
    POSENC_REQUIRE_THROWS_NAMING(
        std::out_of_range, "k_positions",
        posenc::attention(a.q, a.k, a.v, a.qp, std::vector<Position>{0, 1, -2, 3}, none, options));
    // key padding: values other than 0/1, wrong length
    POSENC_REQUIRE_THROWS_NAMING(
        InvalidParameter, "key_padding",
        posenc::attention(a.q, a.k, a.v, a.qp, a.kp, none, options, std::vector<std::uint8_t>{0, 2, 0, 0}));
    POSENC_REQUIRE_THROWS_NAMING(
        ShapeMismatch, "key_padding",
        posenc::attention(a.q, a.k, a.v, a.qp, a.kp, none, options, std::vector<std::uint8_t>{0, 0, 0}));
    // non-finite scale, also one finite in double but not in float (the kernels' type)
    for (const double scale : {std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN(),
                               1e300, -1e39}) {
      INFO("scale " << scale);
      POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "scale",
                                   posenc::attention(a.q, a.k, a.v, a.qp, a.kp, none,
                                                     attention_options(false, scale, kernel)));
    }
    CHECK_NOTHROW(posenc::attention(a.q, a.k, a.v, a.qp, a.kp, none, attention_options(false, 1e-300, kernel)));
    // missing inputs (empty ones are valid: see "empty calls" in test_attention.cpp), and a
    // pointer without data
    POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "q is required",
                                 posenc::attention(posenc::TensorRef<const float, 3>{}, a.k, a.v, a.qp, a.kp, none,
                                                   options));
    POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "k is required",
                                 posenc::attention(a.q, posenc::TensorRef<const float, 3>(nullptr, {3, 2, 8}), a.v,
                                                   a.qp, a.kp, none, options));
    // policies that do not fit the call
    POSENC_REQUIRE_THROWS_NAMING(
        ShapeMismatch, "head_dim",
        posenc::attention(a.q, a.k, a.v, a.qp, a.kp, make_rope(6, 6, RopeLayout::kHalf), options));
    POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "num_heads",
                                 posenc::attention(a.q, a.k, a.v, a.qp, a.kp, posenc::ALiBi(3), options));
    posenc::RelativeBucketConfig t5;
    FTensor<2> table_for_2_heads(32, 2);
    table_for_2_heads.setZero();
    POSENC_REQUIRE_THROWS_NAMING(
        ShapeMismatch, "table",
        posenc::attention(a.q, a.k, a.v, a.qp, a.kp, posenc::RelativeBias(t5, table_for_2_heads), options));
  }
}

TEST_CASE("batched attention rejects positions and padding of the wrong batch shape", "[errors][attention]") {
  std::mt19937 rng(72);
  const FTensor<4> q = random_tensor<4>(rng, {2, 3, 2, 4});
  const FTensor<4> k = random_tensor<4>(rng, {2, 5, 2, 4});
  const FTensor<4> v = random_tensor<4>(rng, {2, 5, 2, 4});
  posenc::Tensor<Position, 2> qp(2, 3), kp(2, 5), kp_batch(3, 5);
  qp.setZero();
  kp.setZero();
  kp_batch.setZero();
  const posenc::NoPosition none;
  CHECK_NOTHROW(posenc::attention(q, k, v, qp, kp, none));
  POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "k_positions", posenc::attention(q, k, v, qp, kp_batch, none));
  POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "q_positions", posenc::attention(q, k, v, kp, kp, none));
  const FTensor<4> k_other_batch = random_tensor<4>(rng, {3, 5, 2, 4});
  POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "k", posenc::attention(q, k_other_batch, k_other_batch, qp, kp, none));
  posenc::Tensor<std::uint8_t, 2> pad(2, 5), pad_short(2, 4);
  pad.setZero();
  pad_short.setZero();
  pad(1, 4) = 7;
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "key_padding", posenc::attention(q, k, v, qp, kp, none, {}, pad));
  POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "key_padding", posenc::attention(q, k, v, qp, kp, none, {}, pad_short));
}

TEST_CASE("mha rejects bad weights, head counts, positions and padding", "[errors][mha]") {
  std::mt19937 rng(73);
  const Index l = 4, d_model = 8;
  const FTensor<2> x = random_tensor<2>(rng, {l, d_model});
  const FTensor<2> w = random_tensor<2>(rng, {d_model, d_model});
  const FTensor<2> w_bad = random_tensor<2>(rng, {d_model, d_model + 1});
  const std::vector<Position> p = iota_positions(l);
  const posenc::NoPosition none;
  CHECK_NOTHROW(posenc::multi_head_attention(x, w, w, w, w, p, 2, none));
  POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "wq", posenc::multi_head_attention(x, w_bad, w, w, w, p, 2, none));
  POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "wk", posenc::multi_head_attention(x, w, w_bad, w, w, p, 2, none));
  POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "wv", posenc::multi_head_attention(x, w, w, w_bad, w, p, 2, none));
  POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "wo", posenc::multi_head_attention(x, w, w, w, w_bad, p, 2, none));
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "num_heads", posenc::multi_head_attention(x, w, w, w, w, p, 3, none));
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "d_model", posenc::multi_head_attention(x, w, w, w, w, p, 3, none));
  POSENC_REQUIRE_THROWS_NAMING(InvalidParameter, "num_heads", posenc::multi_head_attention(x, w, w, w, w, p, 0, none));
  POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "positions",
                               posenc::multi_head_attention(x, w, w, w, w, iota_positions(3), 2, none));
  POSENC_REQUIRE_THROWS_NAMING(
      PositionOutOfRange, "positions",
      posenc::multi_head_attention(x, w, w, w, w, std::vector<Position>{0, 1, -1, 3}, 2, none));
  POSENC_REQUIRE_THROWS_NAMING(
      InvalidParameter, "key_padding",
      posenc::multi_head_attention(x, w, w, w, w, p, 2, none, {}, std::vector<std::uint8_t>{0, 0, 2, 0}));
  POSENC_REQUIRE_THROWS_NAMING(
      ShapeMismatch, "key_padding",
      posenc::multi_head_attention(x, w, w, w, w, p, 2, none, {}, std::vector<std::uint8_t>{0}));
  // Embedding policy of another width.
  POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "d_model",
                               posenc::multi_head_attention(x, w, w, w, w, p, 2, posenc::Sinusoidal(6)));
  // T5 table of the wrong head count, RoPE of the wrong head size.
  FTensor<2> table(32, 3);
  table.setZero();
  POSENC_REQUIRE_THROWS_NAMING(
      ShapeMismatch, "table",
      posenc::multi_head_attention(x, w, w, w, w, p, 2, posenc::RelativeBias(posenc::RelativeBucketConfig{}, table)));
  POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "head_dim",
                               posenc::multi_head_attention(x, w, w, w, w, p, 2, make_rope(8, 8, RopeLayout::kHalf)));
  // Batched: positions of the wrong batch shape.
  const FTensor<3> xb = random_tensor<3>(rng, {2, l, d_model});
  posenc::Tensor<Position, 2> pb(2, l), pb_bad(1, l);
  pb.setZero();
  pb_bad.setZero();
  CHECK_NOTHROW(posenc::multi_head_attention(xb, w, w, w, w, pb, 2, none));
  POSENC_REQUIRE_THROWS_NAMING(ShapeMismatch, "positions",
                               posenc::multi_head_attention(xb, w, w, w, w, pb_bad, 2, none));
}
