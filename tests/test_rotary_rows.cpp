// kernel::RotaryRows (table-free RoPE rows by the angle-addition recurrence) against long-double
// cos/sin of position * inv_freq, over the position sequences attention and apply() feed it:
// long consecutive runs (many re-anchorings), jumps, repeats, going backwards, positions up to
// 2^31 - 1, and angles past the vector sincos range.

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

// Every row of `positions` from one generator, against long double. Allowed: the float rounding
// of the result (|value| <= attention factor), plus the rounding of the angle position * inv_freq
// to double that FORMAT.md's semantics carry (a direct row has half an ulp of the angle, a stepped
// row up to one: up to 2.4e-7 rad at position 2^31), plus 1e-12 for the recurrence.
void check_rows(const std::vector<double>& inv_freq, double attention_factor, const std::vector<Position>& positions) {
  const auto pairs = static_cast<Index>(inv_freq.size());
  const double max_inv_freq = *std::max_element(inv_freq.begin(), inv_freq.end());
  posenc::kernel::RotaryRows rows(inv_freq.data(), max_inv_freq, attention_factor, pairs);
  std::vector<float> cos(inv_freq.size()), sin(inv_freq.size());
  double worst = 0.0;
  for (std::size_t t = 0; t < positions.size(); ++t) {
    rows.row(positions[t], cos.data(), sin.data());
    for (std::size_t i = 0; i < inv_freq.size(); ++i) {
      const long double angle = static_cast<long double>(positions[t]) * static_cast<long double>(inv_freq[i]);
      const double angle_ulp = std::ldexp(1.0, std::ilogb(static_cast<double>(angle)) - 52);
      const double tolerance = attention_factor * (6e-8 + (angle > 0 ? angle_ulp : 0.0)) + 1e-12;
      const long double want_cos = static_cast<long double>(attention_factor) * std::cos(angle);
      const long double want_sin = static_cast<long double>(attention_factor) * std::sin(angle);
      const double error = static_cast<double>(
          std::max(std::fabs(cos[i] - want_cos), std::fabs(sin[i] - want_sin)));
      if (error > worst) worst = error;
      if (error > tolerance) {
        INFO("row " << t << " (position " << positions[t] << "), pair " << i << ": cos " << cos[i] << " vs "
                    << static_cast<double>(want_cos) << ", sin " << sin[i] << " vs " << static_cast<double>(want_sin));
        CHECK(error <= tolerance);
        return;
      }
    }
  }
  INFO("worst error " << worst);
  CHECK(worst <= 3e-7);
}

std::vector<Position> run(Position first, Index n) {
  std::vector<Position> positions(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) positions[static_cast<std::size_t>(i)] = first + i;
  return positions;
}

}  // namespace

TEST_CASE("table-free RoPE rows: long consecutive runs stay within a float rounding", "[kernels][rope]") {
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

TEST_CASE("table-free RoPE rows: angles past the vector sincos range", "[kernels][rope]") {
  // inv_freq 3 at positions near 2^31: angles above 2^32, where the anchor row must use libm.
  const std::vector<double> inv_freq = {3.0, 2.5, 1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625};
  check_rows(inv_freq, 1.0, run(posenc::kMaxPosition - 100, 101));
  check_rows(inv_freq, 1.0, run(1000, 100));
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
