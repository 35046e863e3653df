// RoPE frequency scaling (FORMAT.md §4.3): each scaling type's frequencies and attention factor,
// checked against formulas written out here, and the seq_len switches of dynamic and longrope.

#include "test_util.hpp"

using namespace testutil;
using posenc::RopeLayout;
using posenc::RopeScaling;

namespace {

/// base^(-2i/r) in double, written directly.
std::vector<double> default_freq(double base, Index r) {
  std::vector<double> f;
  for (Index i = 0; i < r / 2; ++i)
    f.push_back(1.0 / std::pow(base, static_cast<double>(2 * i) / static_cast<double>(r)));
  return f;
}

void check_freq(const std::vector<double>& got, const std::vector<double>& want, double rel = 1e-13) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("pair " << i);
    CHECK(got[i] == Approx(want[i]).epsilon(rel).margin(0));
  }
}

std::vector<double> as_double(const std::vector<long double>& v) { return {v.begin(), v.end()}; }

}  // namespace

TEST_CASE("RoPE scaling none: inv_freq = base^(-2i/r), attention factor 1", "[rope][scaling]") {
  for (const double base : {10000.0, 500000.0, 1.5}) {
    for (const Index r : {Index{2}, Index{8}, Index{128}}) {
      const posenc::RoPE rope = make_rope(r, r, RopeLayout::kHalf, RopeScaling::none(), base);
      const posenc::RotaryFrequencies f = rope.rotation(1000);
      check_freq(f.inv_freq, default_freq(base, r));
      CHECK(f.attention_factor == 1.0);
      CHECK(f.inv_freq[0] == 1.0);
    }
  }
}

TEST_CASE("RoPE linear scaling divides every frequency by the factor", "[rope][scaling]") {
  for (const double factor : {1.0, 2.0, 4.0, 32.0}) {
    const posenc::RoPE rope = make_rope(64, 64, RopeLayout::kHalf, RopeScaling::linear(factor));
    std::vector<double> want = default_freq(10000.0, 64);
    for (double& w : want) w /= factor;
    for (const Position seq_len : {Position{1}, Position{100000}}) {
      const posenc::RotaryFrequencies f = rope.rotation(seq_len);
      check_freq(f.inv_freq, want);
      CHECK(f.attention_factor == 1.0);
    }
  }
}

TEST_CASE("RoPE ntk scaling changes the base to base * factor^(r/(r-2))", "[rope][scaling]") {
  for (const Index r : {Index{4}, Index{32}, Index{128}}) {
    for (const double factor : {1.0, 2.0, 8.0}) {
      const posenc::RoPE rope = make_rope(r, r, RopeLayout::kHalf, RopeScaling::ntk(factor));
      const double new_base = 10000.0 * std::pow(factor, static_cast<double>(r) / static_cast<double>(r - 2));
      const posenc::RotaryFrequencies f = rope.rotation(10);
      check_freq(f.inv_freq, default_freq(new_base, r));
      CHECK(f.attention_factor == 1.0);
      if (factor > 1.0) CHECK(f.inv_freq.back() < default_freq(10000.0, r).back());
    }
  }
}

TEST_CASE("RoPE dynamic NTK switches on at seq_len > original_max_position_embeddings", "[rope][scaling]") {
  const Index r = 16;
  const Position orig = 32;
  const double factor = 4.0;
  const posenc::RoPE rope = make_rope(r, r, RopeLayout::kHalf, RopeScaling::dynamic(factor, orig));
  const std::vector<double> plain = default_freq(10000.0, r);
  for (const Position seq_len : {Position{1}, Position{31}, orig}) {
    INFO("seq_len " << seq_len);
    check_freq(rope.rotation(seq_len).inv_freq, plain);
  }
  for (const Position seq_len : {orig + 1, Position{100}, Position{1000000}}) {
    INFO("seq_len " << seq_len);
    const double grown = factor * static_cast<double>(seq_len) / static_cast<double>(orig) - (factor - 1.0);
    const double new_base = 10000.0 * std::pow(grown, static_cast<double>(r) / static_cast<double>(r - 2));
    const posenc::RotaryFrequencies f = rope.rotation(seq_len);
    check_freq(f.inv_freq, default_freq(new_base, r));
    CHECK(f.inv_freq.back() < plain.back());
    CHECK(f.attention_factor == 1.0);
  }

  SECTION("apply() derives seq_len from max(positions) + 1") {
    std::mt19937 rng(21);
    const FTensor<3> x = random_tensor<3>(rng, {3, 1, r});
    // max position orig - 1: seq_len = orig, unscaled.
    const std::vector<Position> at_limit = {5, orig - 1, 0};
    const FTensor<3> y = rope.rotate(x, at_limit);
    RefFrequencies unscaled{ref_default_inv_freq(10000.0L, r), 1.0L};
    check_close(y, ref_rope(to_double(x), at_limit, unscaled, false), 2e-6, 2e-6);
    // max position orig: seq_len = orig + 1, scaled; token 0 (position 5) changes with it.
    const std::vector<Position> past_limit = {5, orig, 0};
    const FTensor<3> z = rope.rotate(x, past_limit);
    const long double grown = 4.0L * static_cast<long double>(orig + 1) / static_cast<long double>(orig) - 3.0L;
    RefFrequencies scaled{ref_default_inv_freq(10000.0L * std::pow(grown, 16.0L / 14.0L), r), 1.0L};
    check_close(z, ref_rope(to_double(x), past_limit, scaled, false), 2e-6, 2e-6);
    double token0_change = 0.0;
    for (Index c = 0; c < r; ++c)
      token0_change = std::max(token0_change, static_cast<double>(std::fabs(z(0, 0, c) - y(0, 0, c))));
    CHECK(token0_change > 1e-4);
  }
}

TEST_CASE("RoPE llama3 scaling: high-frequency pairs unchanged, low-frequency divided, a smooth band between",
          "[rope][scaling]") {
  // Llama 3.1 8B: rope_theta 500000, head_dim 128, factor 8, low 1, high 4, orig 8192.
  const double base = 500000.0, factor = 8.0, low = 1.0, high = 4.0;
  const Position orig = 8192;
  const Index r = 128;
  const posenc::RoPE rope = make_rope(r, r, RopeLayout::kHalf, RopeScaling::llama3(factor, low, high, orig), base);
  const posenc::RotaryFrequencies f = rope.rotation(100);
  const std::vector<double> plain = default_freq(base, r);
  int n_high = 0, n_low = 0, n_mid = 0;
  for (std::size_t i = 0; i < plain.size(); ++i) {
    INFO("pair " << i);
    const double wavelength = 2.0 * std::numbers::pi / plain[i];
    if (wavelength < static_cast<double>(orig) / high) {
      ++n_high;
      CHECK(f.inv_freq[i] == Approx(plain[i]).epsilon(1e-14));
    } else if (wavelength > static_cast<double>(orig) / low) {
      ++n_low;
      CHECK(f.inv_freq[i] == Approx(plain[i] / factor).epsilon(1e-14));
    } else {
      ++n_mid;
      const double s = (static_cast<double>(orig) / wavelength - low) / (high - low);
      CHECK(s >= 0.0);
      CHECK(s <= 1.0);
      CHECK(f.inv_freq[i] == Approx((1.0 - s) * plain[i] / factor + s * plain[i]).epsilon(1e-13));
      CHECK(f.inv_freq[i] < plain[i]);
      CHECK(f.inv_freq[i] > plain[i] / factor);
    }
  }
  CHECK(n_high > 0);
  CHECK(n_low > 0);
  CHECK(n_mid > 0);
  CHECK(f.attention_factor == 1.0);
  // Independent of seq_len.
  CHECK(rope.rotation(1).inv_freq == rope.rotation(1000000).inv_freq);
}

TEST_CASE("RoPE yarn attention factor is 0.1 ln(s) + 1 unless overridden", "[rope][scaling]") {
  for (const double s : {1.0, 2.0, 4.0, 8.0, 16.0, 40.0}) {
    INFO("factor " << s);
    RopeScaling scaling = RopeScaling::yarn(s, 4096);
    const double plain_af = s <= 1.0 ? 1.0 : 0.1 * std::log(s) + 1.0;
    CHECK(make_rope(64, 64, RopeLayout::kHalf, scaling).rotation(10).attention_factor ==
          Approx(plain_af).epsilon(1e-15));

    // mscale alone is ignored (as HF).
    scaling.mscale = 0.707;
    CHECK(make_rope(64, 64, RopeLayout::kHalf, scaling).rotation(10).attention_factor ==
          Approx(plain_af).epsilon(1e-15));

    // mscale and mscale_all_dim: the ratio m(s, mscale) / m(s, mscale_all_dim) (DeepSeek-V2).
    scaling.mscale_all_dim = 0.5;
    const double m1 = s <= 1.0 ? 1.0 : 0.1 * 0.707 * std::log(s) + 1.0;
    const double m2 = s <= 1.0 ? 1.0 : 0.1 * 0.5 * std::log(s) + 1.0;
    CHECK(make_rope(64, 64, RopeLayout::kHalf, scaling).rotation(10).attention_factor ==
          Approx(m1 / m2).epsilon(1e-14));
    scaling.mscale = 1.0;
    scaling.mscale_all_dim = 1.0;
    CHECK(make_rope(64, 64, RopeLayout::kHalf, scaling).rotation(10).attention_factor == Approx(1.0).epsilon(1e-15));

    // An explicit attention_factor wins.
    scaling.attention_factor = 0.625;
    CHECK(make_rope(64, 64, RopeLayout::kHalf, scaling).rotation(10).attention_factor == 0.625);
  }
}

TEST_CASE("RoPE yarn frequencies: extrapolated below the ramp, interpolated above it", "[rope][scaling]") {
  // r = 128, base 10000, orig 4096, betas 32/1: corr(32) = 128 ln(4096/(64 pi)) / (2 ln 10000) = 20.94..,
  // corr(1) = 128 ln(4096/(2 pi)) / (2 ln 10000) = 45.03..; truncated: low 20, high 46.
  const Index r = 128;
  const double factor = 16.0;
  const posenc::RoPE rope = make_rope(r, r, RopeLayout::kHalf, RopeScaling::yarn(factor, 4096));
  const posenc::RotaryFrequencies f = rope.rotation(10);
  const std::vector<double> plain = default_freq(10000.0, r);
  const double low = 20.0, high = 46.0;
  for (std::size_t i = 0; i < plain.size(); ++i) {
    INFO("pair " << i);
    const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
    CHECK(f.inv_freq[i] == Approx(plain[i] * (1.0 - ramp) + plain[i] / factor * ramp).epsilon(1e-13));
    if (i <= 20) CHECK(f.inv_freq[i] == Approx(plain[i]).epsilon(1e-14));
    if (i >= 46) CHECK(f.inv_freq[i] == Approx(plain[i] / factor).epsilon(1e-14));
  }

  SECTION("without truncation the ramp starts and ends at the real correction dims") {
    RopeScaling scaling = RopeScaling::yarn(factor, 4096);
    scaling.truncate = false;
    const posenc::RotaryFrequencies g = make_rope(r, r, RopeLayout::kHalf, scaling).rotation(10);
    const double pi = std::numbers::pi;
    const double lo = 128.0 * std::log(4096.0 / (32.0 * 2.0 * pi)) / (2.0 * std::log(10000.0));
    const double hi = 128.0 * std::log(4096.0 / (1.0 * 2.0 * pi)) / (2.0 * std::log(10000.0));
    for (std::size_t i = 0; i < plain.size(); ++i) {
      const double ramp = std::clamp((static_cast<double>(i) - lo) / (hi - lo), 0.0, 1.0);
      CHECK(g.inv_freq[i] == Approx(plain[i] * (1.0 - ramp) + plain[i] / factor * ramp).epsilon(1e-13));
    }
    CHECK(g.inv_freq[21] != Approx(f.inv_freq[21]).epsilon(1e-6));
  }

  SECTION("custom betas and partial rotary against the reference formulas") {
    for (const Index rd : {Index{8}, Index{24}, Index{96}}) {
      RopeScaling scaling = RopeScaling::yarn(5.0, 2048);
      scaling.beta_fast = 16.0;
      scaling.beta_slow = 2.0;
      const posenc::RoPE partial = make_rope(128, rd, RopeLayout::kInterleaved, scaling, 50000.0);
      check_freq(partial.rotation(3).inv_freq, as_double(ref_frequencies(scaling, 50000.0L, rd, 3).inv_freq));
    }
  }
}

TEST_CASE("RoPE longrope switches from short to long factors at max(positions) + 1 > orig", "[rope][scaling]") {
  const Index r = 8;
  const Position orig = 64;
  const std::vector<double> short_factor = {1.0, 1.25, 1.5, 2.0};
  const std::vector<double> long_factor = {1.0, 3.0, 9.0, 27.0};
  const double factor = 16.0;
  const posenc::RoPE rope =
      make_rope(r, r, RopeLayout::kHalf, RopeScaling::longrope(short_factor, long_factor, orig, factor));
  const double af = std::sqrt(1.0 + std::log(factor) / std::log(static_cast<double>(orig)));
  const std::vector<double> plain = default_freq(10000.0, r);
  auto expected = [&](const std::vector<double>& ext) {
    std::vector<double> w;
    for (std::size_t i = 0; i < plain.size(); ++i) w.push_back(plain[i] / ext[i]);
    return w;
  };
  for (const Position seq_len : {Position{1}, orig - 1, orig}) {
    INFO("seq_len " << seq_len);
    const posenc::RotaryFrequencies f = rope.rotation(seq_len);
    check_freq(f.inv_freq, expected(short_factor));
    CHECK(f.attention_factor == Approx(af).epsilon(1e-15));
  }
  for (const Position seq_len : {orig + 1, Position{100000}}) {
    INFO("seq_len " << seq_len);
    const posenc::RotaryFrequencies f = rope.rotation(seq_len);
    check_freq(f.inv_freq, expected(long_factor));
    CHECK(f.attention_factor == Approx(af).epsilon(1e-15));
  }

  SECTION("through apply(): position orig - 1 keeps the short factors, position orig takes the long ones") {
    std::mt19937 rng(22);
    const FTensor<3> x = random_tensor<3>(rng, {2, 1, r});
    std::vector<long double> short_freq, long_freq;
    for (std::size_t i = 0; i < plain.size(); ++i) {
      const long double p = std::pow(10000.0L, 2.0L * static_cast<long double>(i) / 8.0L);
      short_freq.push_back(1.0L / (static_cast<long double>(short_factor[i]) * p));
      long_freq.push_back(1.0L / (static_cast<long double>(long_factor[i]) * p));
    }
    const long double af_l = std::sqrt(1.0L + std::log(16.0L) / std::log(64.0L));
    const std::vector<Position> short_positions = {3, orig - 1};
    const std::vector<Position> long_positions = {3, orig};
    check_close(rope.rotate(x, short_positions),
                ref_rope(to_double(x), short_positions, RefFrequencies{short_freq, af_l}, false), 2e-6, 2e-6);
    check_close(rope.rotate(x, long_positions),
                ref_rope(to_double(x), long_positions, RefFrequencies{long_freq, af_l}, false), 2e-6, 2e-6);
  }

  SECTION("attention factor 1 when factor <= 1, explicit attention_factor wins") {
    RopeScaling s = RopeScaling::longrope(short_factor, long_factor, orig);
    CHECK(make_rope(r, r, RopeLayout::kHalf, s).rotation(1).attention_factor == 1.0);
    s.attention_factor = 1.75;
    CHECK(make_rope(r, r, RopeLayout::kHalf, s).rotation(1000).attention_factor == 1.75);
  }
}

TEST_CASE("RoPE frequencies of every scaling match the reference formulas across seq_len", "[rope][scaling]") {
  for (const Index r : {Index{4}, Index{10}, Index{64}}) {
    for (const auto& [name, scaling] : all_scalings(r)) {
      for (const Position seq_len : {Position{1}, Position{15}, Position{16}, Position{17}, Position{64}, Position{65},
                                     Position{5000}, posenc::kMaxPosition + 1}) {
        INFO("scaling " << name << ", rotary_dim " << r << ", seq_len " << seq_len);
        const posenc::RoPE rope = make_rope(r + 2, r, RopeLayout::kHalf, scaling, 20000.0);
        const RefFrequencies ref = ref_frequencies(scaling, 20000.0L, r, seq_len);
        const posenc::RotaryFrequencies f = rope.rotation(seq_len);
        check_freq(f.inv_freq, as_double(ref.inv_freq), 1e-12);
        CHECK(f.attention_factor == Approx(static_cast<double>(ref.attention_factor)).epsilon(1e-14));
      }
    }
  }
}
