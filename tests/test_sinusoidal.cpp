// Sinusoidal absolute embedding (FORMAT.md §4.1; Vaswani et al. 2017 §3.5).

#include "test_util.hpp"

using namespace testutil;
using posenc::Sinusoidal;
using posenc::SinusoidalLayout;

namespace {

const SinusoidalLayout kLayouts[] = {SinusoidalLayout::kInterleaved, SinusoidalLayout::kSplit};

Index sin_index(SinusoidalLayout layout, Index /*dim*/, Index i) {
  return layout == SinusoidalLayout::kInterleaved ? 2 * i : i;
}
Index cos_index(SinusoidalLayout layout, Index dim, Index i) {
  return layout == SinusoidalLayout::kInterleaved ? 2 * i + 1 : dim / 2 + i;
}

}  // namespace

TEST_CASE("Sinusoidal: PE(p + k) is a fixed rotation of PE(p) for every frequency pair", "[sinusoidal]") {
  const Index dim = 32;
  for (const SinusoidalLayout layout : kLayouts) {
    for (const double base : {10000.0, 100.0}) {
      INFO("layout " << (layout == SinusoidalLayout::kSplit ? "split" : "interleaved") << ", base " << base);
      const Sinusoidal pe(dim, base, layout);
      for (const Position k : {Position{1}, Position{5}, Position{64}, Position{1000}}) {
        const std::vector<Position> p = {0, 1, 2, 10, 77, 500, 4095, 100000};
        std::vector<Position> shifted;
        for (Position x : p) shifted.push_back(x + k);
        const FTensor<2> a = pe.encode(p);
        const FTensor<2> b = pe.encode(shifted);
        for (Index i = 0; i < dim / 2; ++i) {
          // The rotation by k * w_i, written as the matrix that maps (sin pw, cos pw) of every p to
          // (sin (p+k)w, cos (p+k)w): w_i from the definition, not from the library.
          const double w = std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(dim));
          const double c = std::cos(static_cast<double>(k) * w), s = std::sin(static_cast<double>(k) * w);
          for (std::size_t l = 0; l < p.size(); ++l) {
            const auto row = static_cast<Index>(l);
            const double sp = a(row, sin_index(layout, dim, i)), cp = a(row, cos_index(layout, dim, i));
            INFO("k " << k << ", pair " << i << ", p " << p[l]);
            CHECK(b(row, sin_index(layout, dim, i)) == Approx(sp * c + cp * s).margin(1e-6));
            CHECK(b(row, cos_index(layout, dim, i)) == Approx(cp * c - sp * s).margin(1e-6));
          }
        }
      }
    }
  }
}

TEST_CASE("Sinusoidal values up to position 2^31-1 match a long-double evaluation within 2e-6", "[sinusoidal]") {
  const std::vector<Position> positions = {0,      1,       2,       250,      20000,
                                           100000, 1000000, 9999999, 10000000, posenc::kMaxPosition};
  for (const Index dim : {Index{2}, Index{16}, Index{512}}) {
    for (const double base : {10000.0, 1.25}) {
      for (const SinusoidalLayout layout : kLayouts) {
        INFO("dim " << dim << ", base " << base);
        const FTensor<2> got = Sinusoidal(dim, base, layout).encode(positions);
        REQUIRE(got.dimension(0) == static_cast<Index>(positions.size()));
        REQUIRE(got.dimension(1) == dim);
        DTensor<2> want(got.dimensions());
        for (std::size_t l = 0; l < positions.size(); ++l) {
          for (Index i = 0; i < dim / 2; ++i) {
            const long double w = std::pow(static_cast<long double>(base),
                                           -2.0L * static_cast<long double>(i) / static_cast<long double>(dim));
            const long double angle = static_cast<long double>(positions[l]) * w;
            want(static_cast<Index>(l), sin_index(layout, dim, i)) = static_cast<double>(std::sin(angle));
            want(static_cast<Index>(l), cos_index(layout, dim, i)) = static_cast<double>(std::cos(angle));
          }
        }
        check_close(got, want, 2e-6);
      }
    }
  }
}

TEST_CASE("Sinusoidal split and interleaved layouts are permutations of each other", "[sinusoidal]") {
  const Index dim = 20;
  const std::vector<Position> positions = {0, 3, 17, 1234, 9999999};
  const FTensor<2> inter = Sinusoidal(dim, 10000.0, SinusoidalLayout::kInterleaved).encode(positions);
  const FTensor<2> split = Sinusoidal(dim, 10000.0, SinusoidalLayout::kSplit).encode(positions);
  for (Index l = 0; l < static_cast<Index>(positions.size()); ++l) {
    for (Index i = 0; i < dim / 2; ++i) {
      CHECK(split(l, i) == inter(l, 2 * i));
      CHECK(split(l, dim / 2 + i) == inter(l, 2 * i + 1));
    }
  }
  // Position 0: sin 0 = 0 and cos 0 = 1 in the places the layout says.
  for (Index i = 0; i < dim / 2; ++i) {
    CHECK(inter(0, 2 * i) == 0.0f);
    CHECK(inter(0, 2 * i + 1) == 1.0f);
  }
}

TEST_CASE("Sinusoidal frequencies are base^(-2i/dim) (not fairseq's dim/2-1 spacing)", "[sinusoidal]") {
  const Sinusoidal pe(8, 10000.0);
  REQUIRE(pe.frequencies().size() == 4);
  CHECK(pe.frequencies()[0] == 1.0);
  CHECK(pe.frequencies()[1] == Approx(0.1).epsilon(1e-15));   // 10000^(-2/8)
  CHECK(pe.frequencies()[2] == Approx(0.01).epsilon(1e-15));  // 10000^(-4/8)
  CHECK(pe.frequencies()[3] == Approx(0.001).epsilon(1e-15));
  // Position 1, interleaved: [sin 1, cos 1, sin 0.1, cos 0.1, ...]
  const FTensor<2> row = pe.encode(std::vector<Position>{1});
  CHECK(row(0, 0) == Approx(std::sin(1.0)).margin(1e-7));
  CHECK(row(0, 1) == Approx(std::cos(1.0)).margin(1e-7));
  CHECK(row(0, 2) == Approx(std::sin(0.1)).margin(1e-7));
  CHECK(row(0, 7) == Approx(std::cos(0.001)).margin(1e-7));
}

TEST_CASE("Sinusoidal add_to adds the encoding to x", "[sinusoidal]") {
  std::mt19937 rng(31);
  for (const SinusoidalLayout layout : kLayouts) {
    const Sinusoidal pe(12, 10000.0, layout);
    const std::vector<Position> positions = {4, 0, 4, 100};  // need not be sorted or unique
    const FTensor<2> x = random_tensor<2>(rng, {4, 12});
    FTensor<2> y = x;
    pe.add_to(y, positions);
    const FTensor<2> e = pe.encode(positions);
    FTensor<2> want(4, 12);
    for (Index i = 0; i < want.size(); ++i) want.data()[i] = x.data()[i] + e.data()[i];
    check_close(y, want, 1e-6);
    // Rows of equal positions get equal encodings.
    for (Index c = 0; c < 12; ++c) CHECK(e(0, c) == e(2, c));
  }
}
