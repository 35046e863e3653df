// kernel::RotaryRows (table-free RoPE rows by the angle-addition recurrence) against long-double
// cos/sin of position * inv_freq, over the position sequences attention and apply() feed it:
// long consecutive runs (many re-anchorings), jumps, repeats, going backwards, positions up to
// 2^31 - 1, and angles past the vector sincos range. Allowed: the float rounding of the result
// plus one ulp of the angle in double (what FORMAT.md's double angles carry).

#include <posenc/kernel/rotary_rows.hpp>

#include "test_util.hpp"

using namespace testutil;

namespace {

std::vector<double> rope_inv_freq(Index pairs, double base) {
  std::vector<double> inv_freq;
  for (Index i = 0; i < pairs; ++i)
    inv_freq.push_back(std::pow(base, -2.0 * static_cast<double>(i) / (2.0 * static_cast<double>(pairs))));
  return inv_freq;
}

// Half a float ulp at magnitude v: the most that rounding a value near v to float moves it.
double float_half_ulp(double v) {
  v = std::fabs(v);
  return v < 1e-30 ? 1e-45 : std::ldexp(1.0, std::ilogb(v) - 24);
}

// One double ulp at magnitude a >= 0.
double double_ulp(double a) { return a > 0.0 ? std::ldexp(1.0, std::ilogb(a) - 52) : 0.0; }

// Every row of `positions` from one generator, against long double. Allowed per value: the error
// before rounding, delta = attention factor * (one ulp of the angle position * inv_freq, which
// FORMAT.md forms in double: a direct row carries half an ulp, a stepped row the anchor's half ulp
// plus the steps' ~1e-15; up to 2.4e-7 rad at position 2^31 + 1e-10 for the vector sincos),
// plus half a float ulp for the final rounding.
void check_rows(const std::vector<double>& inv_freq, double attention_factor, const std::vector<Position>& positions) {
  const auto pairs = static_cast<Index>(inv_freq.size());
  const double max_inv_freq = *std::max_element(inv_freq.begin(), inv_freq.end());
  posenc::kernel::RotaryRows rows(inv_freq.data(), max_inv_freq, attention_factor, pairs);
  std::vector<float> cos(inv_freq.size()), sin(inv_freq.size());
  double worst_excess = -1.0;  // largest error minus its allowance: must stay <= 0
  std::string worst;
  for (std::size_t t = 0; t < positions.size(); ++t) {
    rows.row(positions[t], cos.data(), sin.data());
    for (std::size_t i = 0; i < inv_freq.size(); ++i) {
      const long double angle = static_cast<long double>(positions[t]) * static_cast<long double>(inv_freq[i]);
      const double delta = attention_factor * (double_ulp(static_cast<double>(angle)) + 1e-10);
      const long double want[2] = {static_cast<long double>(attention_factor) * std::cos(angle),
                                   static_cast<long double>(attention_factor) * std::sin(angle)};
      const float got[2] = {cos[i], sin[i]};
      for (int k = 0; k < 2; ++k) {
        const double error = static_cast<double>(std::fabs(got[k] - want[k]));
        const double allowed = delta + float_half_ulp(static_cast<double>(std::fabs(want[k])) + delta);
        if (error - allowed > worst_excess) {
          worst_excess = error - allowed;
          std::ostringstream where;
          where << (k == 0 ? "cos" : "sin") << " of row " << t << " (position " << positions[t] << "), pair " << i
                << ": " << got[k] << " vs " << static_cast<double>(want[k]) << ", error " << error << ", allowed "
                << allowed;
          worst = where.str();
        }
      }
    }
  }
  INFO("closest to its bound: " << worst);
  CHECK(worst_excess <= 0.0);
}

std::vector<Position> run(Position first, Index n) {
  std::vector<Position> positions(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) positions[static_cast<std::size_t>(i)] = first + i;
  return positions;
}

}  // namespace

TEST_CASE("table-free RoPE rows: long consecutive runs stay within a float rounding of the double angles",
          "[kernels][rope]") {
  const Index steps = posenc::kernel::RotaryRows::kStepsPerAnchor;
  for (const Index pairs : {Index{1}, Index{3}, Index{4}, Index{5}, Index{8}, Index{32}, Index{64}, Index{67}}) {
    const std::vector<double> inv_freq = rope_inv_freq(pairs, 10000.0);
    for (const double attention_factor : {1.0, 1.3}) {
      INFO("pairs " << pairs << ", attention factor " << attention_factor);
      check_rows(inv_freq, attention_factor, run(0, 20 * steps + 7));
      check_rows(inv_freq, attention_factor, run(10000000 - 5 * steps, 10 * steps + 3));
      check_rows(inv_freq, attention_factor, run(posenc::kMaxPosition - 3 * steps - 1, 3 * steps + 2));
    }
  }
}

TEST_CASE("table-free RoPE rows: jumps, repeats and backward steps start afresh", "[kernels][rope]") {
  const std::vector<double> inv_freq = rope_inv_freq(64, 500000.0);
  // A packed batch (positions restart), a KV-cache step, repeats, a backward step, and the top.
  std::vector<Position> positions = run(0, 50);
  for (const Position p : run(0, 40)) positions.push_back(p);
  for (const Position p : {Position{7}, Position{7}, Position{8}, Position{6}, Position{5}, Position{4096}})
    positions.push_back(p);
  for (const Position p : run(123456789, 70)) positions.push_back(p);
  positions.push_back(posenc::kMaxPosition);
  positions.push_back(0);
  check_rows(inv_freq, 1.0, positions);
}

TEST_CASE("table-free RoPE rows: angles past the vector sincos range use libm", "[kernels][rope]") {
  // inv_freq up to 8 at positions near 2^31: angles up to 1.7e10, past the 2^32 that the vector
  // sincos reduces exactly (there it is off by up to ~1e-6). Every other position, so each row is
  // computed directly; compared with long-double cos/sin of the same double angle, so only the
  // float rounding (plus 1e-10) is allowed.
  const std::vector<double> inv_freq = {8.0, 7.3, 5.1, 4.0, 1.0, 0.37};
  const double max_inv_freq = 8.0;
  posenc::kernel::RotaryRows rows(inv_freq.data(), max_inv_freq, 1.0, static_cast<Index>(inv_freq.size()));
  std::vector<float> cos(inv_freq.size()), sin(inv_freq.size());
  double worst_excess = -1.0;
  for (Position p = posenc::kMaxPosition; p > posenc::kMaxPosition - 200; p -= 2) {
    rows.row(p, cos.data(), sin.data());
    for (std::size_t i = 0; i < inv_freq.size(); ++i) {
      const double angle = static_cast<double>(p) * inv_freq[i];  // FORMAT.md: the angle in double
      const long double want_cos = std::cos(static_cast<long double>(angle));
      const long double want_sin = std::sin(static_cast<long double>(angle));
      const double cos_error = static_cast<double>(std::fabs(cos[i] - want_cos));
      const double sin_error = static_cast<double>(std::fabs(sin[i] - want_sin));
      worst_excess = std::max({worst_excess, cos_error - float_half_ulp(static_cast<double>(want_cos)) - 1e-10,
                               sin_error - float_half_ulp(static_cast<double>(want_sin)) - 1e-10});
    }
  }
  CHECK(worst_excess <= 0.0);
  check_rows(inv_freq, 1.0, run(1000, 100));  // and the recurrence at these frequencies
}

TEST_CASE("table-free RoPE equals the cos/sin table within a float rounding", "[rope]") {
  // apply(x, positions) (rows generated on the fly) against apply(x, positions, cache) (the
  // table, computed directly per position), both layouts, on a long consecutive run.
  std::mt19937 rng(404);
  for (const auto layout : {posenc::RopeLayout::kHalf, posenc::RopeLayout::kInterleaved}) {
    const posenc::RoPE rope(posenc::RopeConfig{.head_dim = 128, .layout = layout});
    const Index tokens = 300;
    const FTensor<3> x = random_tensor<3>(rng, {tokens, 4, 128});
    std::vector<Position> positions = run(0, tokens);
    FTensor<3> on_the_fly = x, from_table = x;
    rope.apply(on_the_fly, positions);
    const posenc::RotaryCache table = rope.cache(tokens);
    rope.apply(from_table, positions, table);
    double worst = 0.0;
    for (Index i = 0; i < x.size(); ++i)
      worst = std::max(worst, static_cast<double>(std::fabs(on_the_fly.data()[i] - from_table.data()[i])));
    // |x| < 1 per component: a pair's two products each change by at most a float rounding of cos/sin.
    CHECK(worst <= 3e-7);
  }
}
