// ALiBi (FORMAT.md §4.4-4.5; Press et al. 2022). Three independent reference formulas for the
// slopes, each written as its project's code computes them.

#include "test_util.hpp"

using namespace testutil;

namespace {

/// BLOOM `build_alibi_tensor`: base^powers for the closest power of two, then odd powers of the
/// base of twice as many heads.
std::vector<double> bloom_slopes(Index num_heads) {
  const Index closest = Index{1} << static_cast<int>(std::floor(std::log2(static_cast<double>(num_heads))));
  const double base = std::pow(2.0, -std::pow(2.0, -(std::log2(static_cast<double>(closest)) - 3.0)));
  std::vector<double> slopes;
  for (Index p = 1; p <= closest; ++p) slopes.push_back(std::pow(base, static_cast<double>(p)));
  if (closest != num_heads) {
    const double extra_base = std::pow(2.0, -std::pow(2.0, -(std::log2(static_cast<double>(2 * closest)) - 3.0)));
    const Index remaining = std::min(closest, num_heads - closest);
    for (Index p = 1; p < 1 + 2 * remaining; p += 2) slopes.push_back(std::pow(extra_base, static_cast<double>(p)));
  }
  return slopes;
}

/// MosaicML MPT `gen_slopes` (alibi_bias_max = 8): slopes of the next power of two, odd
/// entries first, then even entries, truncated.
std::vector<double> mpt_slopes(Index n_heads, double alibi_bias_max = 8.0) {
  const Index padded = Index{1} << static_cast<int>(std::ceil(std::log2(static_cast<double>(n_heads))));
  std::vector<double> slopes;
  for (Index m = 1; m <= padded; ++m) {
    slopes.push_back(1.0 / std::pow(2.0, static_cast<double>(m) * (alibi_bias_max / static_cast<double>(padded))));
  }
  if (padded != n_heads) {
    std::vector<double> reordered;
    for (std::size_t i = 1; i < slopes.size(); i += 2) reordered.push_back(slopes[i]);
    for (std::size_t i = 0; i < slopes.size(); i += 2) reordered.push_back(slopes[i]);
    reordered.resize(static_cast<std::size_t>(n_heads));
    slopes = reordered;
  }
  return slopes;
}

/// ggml `soft_max_ext` with max_bias = 8: m0^(h+1) for the first n_head_log2 heads, then
/// m1^(2(h - n_head_log2) + 1).
std::vector<double> ggml_slopes(Index n_head, double max_bias = 8.0) {
  const auto n_head_log2 =
      static_cast<std::uint32_t>(1u << static_cast<std::uint32_t>(std::floor(std::log2(static_cast<double>(n_head)))));
  const double m0 = std::pow(2.0, -max_bias / n_head_log2);
  const double m1 = std::pow(2.0, -(max_bias / 2.0) / n_head_log2);
  std::vector<double> slopes;
  for (Index h = 0; h < n_head; ++h) {
    slopes.push_back(h < static_cast<Index>(n_head_log2)
                         ? std::pow(m0, static_cast<double>(h + 1))
                         : std::pow(m1, static_cast<double>(2 * (h - n_head_log2) + 1)));
  }
  return slopes;
}

}  // namespace

TEST_CASE("ALiBi slopes for a power-of-two head count are geometric: 2^(-8k/H)", "[alibi]") {
  for (const Index h : {Index{1}, Index{2}, Index{4}, Index{8}, Index{16}, Index{32}, Index{64}, Index{128}}) {
    INFO("heads " << h);
    const std::vector<double> s = posenc::alibi_slopes(h);
    REQUIRE(static_cast<Index>(s.size()) == h);
    CHECK(s[0] == Approx(std::exp2(-8.0 / static_cast<double>(h))).epsilon(1e-15));
    for (std::size_t k = 1; k < s.size(); ++k) CHECK(s[k] / s[k - 1] == Approx(s[0]).epsilon(1e-13));
    CHECK(s.back() == Approx(1.0 / 256.0).epsilon(1e-13));  // 2^-8 always ends the sequence
  }
  // Hand values: H = 8 is 1/2, 1/4, ..., 1/256; H = 2 is 2^-4, 2^-8.
  const std::vector<double> h8 = posenc::alibi_slopes(8);
  for (int k = 0; k < 8; ++k) CHECK(h8[static_cast<std::size_t>(k)] == std::ldexp(1.0, -(k + 1)));
  CHECK(posenc::alibi_slopes(2) == std::vector<double>{0.0625, 0.00390625});
  CHECK(posenc::alibi_slopes(1) == std::vector<double>{0.00390625});
}

TEST_CASE("ALiBi slopes for other head counts, by hand (FORMAT.md §4.4 examples)", "[alibi]") {
  CHECK(posenc::alibi_slopes(3) == std::vector<double>{0.0625, 0.00390625, 0.25});
  const std::vector<double> h6 = {0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125};
  CHECK(posenc::alibi_slopes(6) == h6);
}

TEST_CASE("ALiBi slopes agree with the Press, BLOOM, MPT and ggml formulas for H = 1..256", "[alibi]") {
  for (Index h = 1; h <= 256; ++h) {
    INFO("heads " << h);
    const std::vector<double> got = posenc::alibi_slopes(h);
    const std::vector<double> press = press_slopes(h);
    const std::vector<double> bloom = bloom_slopes(h);
    const std::vector<double> mpt = mpt_slopes(h);
    const std::vector<double> ggml = ggml_slopes(h);
    REQUIRE(static_cast<Index>(got.size()) == h);
    REQUIRE(static_cast<Index>(press.size()) == h);
    REQUIRE(static_cast<Index>(bloom.size()) == h);
    REQUIRE(static_cast<Index>(mpt.size()) == h);
    REQUIRE(static_cast<Index>(ggml.size()) == h);
    bool all_agree = true;
    for (std::size_t k = 0; k < got.size(); ++k) {
      for (const double want : {press[k], bloom[k], mpt[k], ggml[k]}) {
        all_agree = all_agree && std::fabs(got[k] - want) <= 1e-12 * want;
      }
      if (!all_agree) {
        INFO("head " << k << ": got " << got[k] << ", press " << press[k] << ", bloom " << bloom[k] << ", mpt "
                     << mpt[k] << ", ggml " << ggml[k]);
        CHECK(all_agree);
        break;
      }
    }
    CHECK(all_agree);
  }
}

TEST_CASE("ALiBi bias is -slope * |q - k| per head", "[alibi]") {
  const posenc::ALiBi alibi(5);
  const std::vector<double> slopes = press_slopes(5);
  const std::vector<Position> q = {0, 7, 3, 100, posenc::kMaxPosition};
  const std::vector<Position> k = {0, 1, 2, 3, 7, 100, 2000000000};
  const FTensor<3> bias = alibi.bias(q, k);
  REQUIRE(bias.dimension(0) == 5);
  REQUIRE(bias.dimension(1) == 5);
  REQUIRE(bias.dimension(2) == 7);
  for (Index h = 0; h < 5; ++h) {
    for (Index i = 0; i < 5; ++i) {
      for (Index j = 0; j < 7; ++j) {
        const auto distance =
            static_cast<double>(std::llabs(q[static_cast<std::size_t>(i)] - k[static_cast<std::size_t>(j)]));
        CHECK(bias(h, i, j) == Approx(-slopes[static_cast<std::size_t>(h)] * distance).epsilon(1e-7).margin(1e-6));
      }
    }
  }
  // Symmetric in q and k, zero on equal positions.
  const FTensor<3> swapped = alibi.bias(k, q);
  for (Index h = 0; h < 5; ++h) {
    for (Index i = 0; i < 5; ++i) {
      for (Index j = 0; j < 7; ++j) CHECK(swapped(h, j, i) == bias(h, i, j));
    }
  }
  CHECK(bias(0, 0, 0) == 0.0f);
  CHECK(bias(4, 2, 3) == 0.0f);
}

TEST_CASE("ALiBi's consecutive-key hook adds the bias less the constant it returns", "[alibi]") {
  // row[j] + offset must be -slope * |q - (k_first + j)|, with the float part small (the key
  // nearest the query carries the offset), for queries before, inside and after the keys and at
  // positions up to 2^31 - 1.
  const posenc::ALiBi alibi(12);
  const Position large = posenc::kMaxPosition;
  const std::vector<std::pair<Position, Position>> cases = {
      {0, 0}, {5, 0}, {40, 0}, {0, 7}, {100, 37}, {10'000'000, 0}, {0, 10'000'000}, {large, 0}, {large - 20, large - 40}};
  for (const auto& [q, k_first] : cases) {
    for (const Index n : {Index{1}, Index{7}, Index{33}, Index{64}}) {
      for (Index head = 0; head < alibi.num_heads(); head += 5) {
        INFO("q " << q << ", k_first " << k_first << ", n " << n << ", head " << head);
        std::vector<float> row(static_cast<std::size_t>(n), 0.0f);
        const double offset = alibi.add_bias_row_consecutive(head, q, k_first, n, row.data());
        const long double slope = alibi.slopes()[static_cast<std::size_t>(head)];
        for (Index j = 0; j < n; ++j) {
          const long double distance = std::fabs(static_cast<long double>(q) - static_cast<long double>(k_first + j));
          const long double want = -slope * distance;
          CHECK(std::fabs(static_cast<long double>(row[static_cast<std::size_t>(j)]) + offset - want) <=
                1e-6L * (1.0L + std::fabs(want)) );
          CHECK(std::fabs(row[static_cast<std::size_t>(j)]) <= slope * static_cast<long double>(n) + 1e-6L);
        }
      }
    }
  }
}

TEST_CASE("ALiBi rejects a non-positive head count and negative positions", "[alibi][errors]") {
  POSENC_REQUIRE_THROWS_NAMING(posenc::InvalidParameter, "num_heads", posenc::alibi_slopes(0));
  POSENC_REQUIRE_THROWS_NAMING(posenc::InvalidParameter, "num_heads", posenc::ALiBi(-3));
  const posenc::ALiBi alibi(2);
  POSENC_REQUIRE_THROWS_NAMING(posenc::PositionOutOfRange, "q_positions",
                               alibi.bias(std::vector<Position>{-1}, std::vector<Position>{0}));
  POSENC_REQUIRE_THROWS_NAMING(
      std::out_of_range, "k_positions",
      alibi.bias(std::vector<Position>{0}, std::vector<Position>{0, posenc::kMaxPosition + 1}));
}
