// Vector kernels against their scalar oracles (kernel/scalar.hpp) lane for lane, at the sizes
// 1, N-1, N, N+1 and 4N+3 around the vector width N, and the vector math (sincos, exp) against
// long double.

#include "test_util.hpp"

using namespace testutil;

#if defined(POSENC_HAS_VECTOR_KERNELS)

namespace simd = posenc::kernel::simd;
namespace scalar = posenc::kernel::scalar;

namespace {

std::vector<Index> awkward_sizes(Index n) {
  std::vector<Index> sizes = {1, n - 1, n, n + 1, 4 * n + 3};
  sizes.erase(std::remove(sizes.begin(), sizes.end(), Index{0}), sizes.end());
  return sizes;
}

std::vector<float> random_floats(std::mt19937& rng, Index n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

void check_lanes(const std::vector<float>& got, const std::vector<float>& want, double abs) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("lane " << i);
    CHECK(std::fabs(static_cast<double>(got[i]) - static_cast<double>(want[i])) <= abs);
  }
}

}  // namespace

TEST_CASE("the vector width follows the compile flags, or POSENC_SIMD_FLOAT_LANES", "[kernels]") {
#if defined(POSENC_SIMD_FLOAT_LANES)
  constexpr int expected = POSENC_SIMD_FLOAT_LANES;
#elif defined(__AVX512F__)
  constexpr int expected = 16;
#elif defined(__AVX__)
  constexpr int expected = 8;
#else
  constexpr int expected = 4;
#endif
  STATIC_REQUIRE(simd::kFloatLanes == expected);
  STATIC_REQUIRE(sizeof(simd::FloatVec) == expected * sizeof(float));
  STATIC_REQUIRE(simd::kDoubleLanes * 2 == simd::kFloatLanes);
}

TEST_CASE("vector RoPE kernels match the scalar kernels at awkward sizes", "[kernels]") {
  std::mt19937 rng(101);
  std::vector<Index> sizes = awkward_sizes(simd::kFloatLanes);
  for (Index n : awkward_sizes(simd::kDoubleLanes)) sizes.push_back(n);
  for (const Index pairs : sizes) {
    INFO("pairs " << pairs << " (lanes " << simd::kFloatLanes << ")");
    // One row plus a guard region that must stay untouched.
    const std::vector<float> x = random_floats(rng, 2 * pairs + 3);
    const std::vector<float> cos = random_floats(rng, pairs), sin = random_floats(rng, pairs);
    {
      std::vector<float> a = x, b = x;
      simd::rotate_half(a.data(), cos.data(), sin.data(), pairs);
      scalar::rotate_half(b.data(), cos.data(), sin.data(), pairs);
      check_lanes(a, b, 2e-7);
      for (Index g = 2 * pairs; g < 2 * pairs + 3; ++g)
        CHECK(a[static_cast<std::size_t>(g)] == x[static_cast<std::size_t>(g)]);
      // And the scalar kernel against its definition.
      for (Index i = 0; i < pairs; ++i) {
        const double xa = x[static_cast<std::size_t>(i)], xb = x[static_cast<std::size_t>(i + pairs)];
        const double c = cos[static_cast<std::size_t>(i)], s = sin[static_cast<std::size_t>(i)];
        CHECK(b[static_cast<std::size_t>(i)] == Approx(xa * c - xb * s).margin(3e-7));
        CHECK(b[static_cast<std::size_t>(i + pairs)] == Approx(xb * c + xa * s).margin(3e-7));
      }
    }
    {
      std::vector<float> a = x, b = x;
      simd::rotate_interleaved(a.data(), cos.data(), sin.data(), pairs);
      scalar::rotate_interleaved(b.data(), cos.data(), sin.data(), pairs);
      check_lanes(a, b, 2e-7);
      for (Index g = 2 * pairs; g < 2 * pairs + 3; ++g)
        CHECK(a[static_cast<std::size_t>(g)] == x[static_cast<std::size_t>(g)]);
      for (Index i = 0; i < pairs; ++i) {
        const double xa = x[static_cast<std::size_t>(2 * i)], xb = x[static_cast<std::size_t>(2 * i + 1)];
        const double c = cos[static_cast<std::size_t>(i)], s = sin[static_cast<std::size_t>(i)];
        CHECK(b[static_cast<std::size_t>(2 * i)] == Approx(xa * c - xb * s).margin(3e-7));
        CHECK(b[static_cast<std::size_t>(2 * i + 1)] == Approx(xb * c + xa * s).margin(3e-7));
      }
    }
  }
}

TEST_CASE("per-token RoPE kernels equal the per-row scalar kernel on every head", "[kernels]") {
  // The *_heads kernels rotate the heads of one token with a shared cos/sin row; the widths 16,
  // 32, 64 take a compile-time unrolled path, the rest a run-time loop. Rows are head_dim =
  // 2 * pairs + 5 apart (partial rotary), and those 5 pass-through dims must stay untouched.
  std::mt19937 rng(103);
  std::vector<Index> sizes = awkward_sizes(simd::kFloatLanes);
  for (Index n : {16, 32, 64, 48}) sizes.push_back(n);
  for (const Index pairs : sizes) {
    for (const Index heads : {Index{1}, Index{3}}) {
      INFO("pairs " << pairs << ", heads " << heads);
      const Index stride = 2 * pairs + 5;
      const std::vector<float> x = random_floats(rng, heads * stride);
      const std::vector<float> cos = random_floats(rng, pairs), sin = random_floats(rng, pairs);
      std::vector<float> a = x, b = x;
      simd::rotate_half_heads(a.data(), heads, stride, cos.data(), sin.data(), pairs);
      for (Index h = 0; h < heads; ++h) scalar::rotate_half(b.data() + h * stride, cos.data(), sin.data(), pairs);
      check_lanes(a, b, 2e-7);
      a = x, b = x;
      simd::rotate_interleaved_heads(a.data(), heads, stride, cos.data(), sin.data(), pairs);
      for (Index h = 0; h < heads; ++h) scalar::rotate_interleaved(b.data() + h * stride, cos.data(), sin.data(), pairs);
      check_lanes(a, b, 2e-7);
      for (Index h = 0; h < heads; ++h) {
        for (Index g = 2 * pairs; g < stride; ++g) {
          CHECK(a[static_cast<std::size_t>(h * stride + g)] == x[static_cast<std::size_t>(h * stride + g)]);
        }
      }
    }
  }
}

TEST_CASE("out-of-place RoPE kernels equal the in-place ones and leave their input unchanged", "[kernels]") {
  // Rows head_dim = 2 * pairs + 5 apart; out of place, the 5 pass-through dims of `out` are the
  // caller's (RoPE copies them) and must stay as they were.
  std::mt19937 rng(104);
  std::vector<Index> sizes = awkward_sizes(simd::kFloatLanes);
  for (Index n : awkward_sizes(simd::kDoubleLanes)) sizes.push_back(n);
  for (Index n : {16, 32, 64, 48}) sizes.push_back(n);
  for (const Index pairs : sizes) {
    for (const Index heads : {Index{1}, Index{3}}) {
      INFO("pairs " << pairs << ", heads " << heads << " (lanes " << simd::kFloatLanes << ")");
      const Index stride = 2 * pairs + 5;
      const std::vector<float> x = random_floats(rng, heads * stride);
      const std::vector<float> cos = random_floats(rng, pairs), sin = random_floats(rng, pairs);
      const std::vector<float> untouched(x.size(), 7.0f);
      const auto check_out_of_place = [&](const std::vector<float>& in_place, const std::vector<float>& in,
                                          const std::vector<float>& out, double tolerance) {
        CHECK(in == x);
        for (Index h = 0; h < heads; ++h) {
          for (Index i = 0; i < stride; ++i) {
            const auto at = static_cast<std::size_t>(h * stride + i);
            if (i < 2 * pairs) {
              CHECK(std::fabs(double{out[at]} - double{in_place[at]}) <= tolerance);
            } else {
              CHECK(out[at] == 7.0f);
            }
          }
        }
      };
      {
        std::vector<float> in_place = x, in = x, out = untouched, scalar_out = untouched;
        simd::rotate_half_heads(in_place.data(), heads, stride, cos.data(), sin.data(), pairs);
        simd::rotate_half_heads(in.data(), out.data(), heads, stride, cos.data(), sin.data(), pairs);
        check_out_of_place(in_place, in, out, 0.0);  // the same arithmetic, bit for bit
        for (Index h = 0; h < heads; ++h)
          scalar::rotate_half(in.data() + h * stride, scalar_out.data() + h * stride, cos.data(), sin.data(), pairs);
        check_out_of_place(in_place, in, scalar_out, 2e-7);
        if (heads == 1) {
          std::vector<float> row_out = untouched;
          simd::rotate_half(in.data(), row_out.data(), cos.data(), sin.data(), pairs);
          check_out_of_place(in_place, in, row_out, 0.0);
        }
      }
      {
        std::vector<float> in_place = x, in = x, out = untouched, scalar_out = untouched;
        simd::rotate_interleaved_heads(in_place.data(), heads, stride, cos.data(), sin.data(), pairs);
        simd::rotate_interleaved_heads(in.data(), out.data(), heads, stride, cos.data(), sin.data(), pairs);
        check_out_of_place(in_place, in, out, 0.0);
        for (Index h = 0; h < heads; ++h)
          scalar::rotate_interleaved(in.data() + h * stride, scalar_out.data() + h * stride, cos.data(), sin.data(),
                                     pairs);
        check_out_of_place(in_place, in, scalar_out, 2e-7);
        if (heads == 1) {
          std::vector<float> row_out = untouched;
          simd::rotate_interleaved(in.data(), row_out.data(), cos.data(), sin.data(), pairs);
          check_out_of_place(in_place, in, row_out, 0.0);
        }
      }
    }
  }
}

TEST_CASE("streaming RoPE kernels write what the out-of-place kernels write, bit for bit", "[kernels]") {
  // Non-temporal stores change where the lines go, not their values. Rows on vector boundaries
  // (the kernels' precondition), pass-through dims after each rotated part left alone; rotary
  // widths without a fixed-width loop take plain stores.
  std::mt19937 rng(105);
  std::vector<Index> sizes = {16, 32, 64, 48};
  for (Index n : awkward_sizes(simd::kFloatLanes)) sizes.push_back(n);
  for (const Index pairs : sizes) {
    for (const Index heads : {Index{1}, Index{3}}) {
      INFO("pairs " << pairs << ", heads " << heads << " (lanes " << simd::kFloatLanes << ")");
      const Index stride = (2 * pairs + 5 + 15) / 16 * 16;  // 64-byte rows, some pass-through dims
      const std::vector<float> x = random_floats(rng, heads * stride);
      const std::vector<float> cos = random_floats(rng, pairs), sin = random_floats(rng, pairs);
      for (const bool half : {true, false}) {
        INFO((half ? "half" : "interleaved"));
        std::vector<float> plain(x.size(), 7.0f);
        AlignedFloats streamed(heads * stride, 7.0f);
        if (half) {
          simd::rotate_half_heads(x.data(), plain.data(), heads, stride, cos.data(), sin.data(), pairs);
          simd::rotate_half_heads_streaming(x.data(), streamed.data(), heads, stride, cos.data(), sin.data(), pairs);
        } else {
          simd::rotate_interleaved_heads(x.data(), plain.data(), heads, stride, cos.data(), sin.data(), pairs);
          simd::rotate_interleaved_heads_streaming(x.data(), streamed.data(), heads, stride, cos.data(), sin.data(),
                                                   pairs);
        }
        simd::stream_fence();
        CHECK(streamed.values() == plain);
        CHECK(plain[static_cast<std::size_t>(stride - 1)] == 7.0f);
      }
    }
  }
}

TEST_CASE("vector sincos is accurate to 1e-10 over [-2^32, 2^32]", "[kernels]") {
  std::mt19937_64 rng(102);
  std::vector<double> angles = {0.0,
                                1e-300,
                                0.5,
                                0.78539816339744828,
                                1.5707963267948966,
                                3.1415926535897931,
                                4.71238898038469,
                                6.283185307179586,
                                100.0,
                                1e7,
                                2147483647.0,
                                simd::kSinCosMaxAngle};
  std::uniform_real_distribution<double> small(0.0, 10.0), large(0.0, simd::kSinCosMaxAngle);
  for (int i = 0; i < 2000; ++i) angles.push_back(small(rng));
  for (int i = 0; i < 2000; ++i) angles.push_back(large(rng));
  for (int i = 0; i < 200; ++i) angles.push_back(std::ldexp(1.0, i % 33) * (1.0 + small(rng) * 1e-3));
  const std::size_t n = angles.size();
  for (std::size_t i = 0; i < n; ++i) angles.push_back(-angles[i]);
  double worst = 0.0, worst_angle = 0.0;
  for (std::size_t i = 0; i + simd::kDoubleLanes <= angles.size(); i += simd::kDoubleLanes) {
    const auto x = simd::load<simd::DoubleVec>(angles.data() + i);
    simd::DoubleVec s, c;
    simd::sincos(x, s, c);
    for (int lane = 0; lane < simd::kDoubleLanes; ++lane) {
      const long double a = angles[i + static_cast<std::size_t>(lane)];
      const double err = std::max(std::fabs(static_cast<double>(s[lane] - std::sin(a))),
                                  std::fabs(static_cast<double>(c[lane] - std::cos(a))));
      if (err > worst) {
        worst = err;
        worst_angle = static_cast<double>(a);
      }
    }
  }
  INFO("worst error " << worst << " at angle " << worst_angle);
  CHECK(worst <= 1e-10);
}

TEST_CASE("vector rotary cos/sin rows match the scalar rows and long double", "[kernels]") {
  for (const Index pairs : awkward_sizes(simd::kDoubleLanes)) {
    std::vector<double> inv_freq;
    for (Index i = 0; i < pairs; ++i)
      inv_freq.push_back(std::pow(10000.0, -2.0 * static_cast<double>(i) / (2.0 * static_cast<double>(pairs))));
    for (const Position p : {Position{0}, Position{1}, Position{777}, Position{10000000}, posenc::kMaxPosition}) {
      for (const double af : {1.0, 1.3}) {
        INFO("pairs " << pairs << ", position " << p << ", af " << af);
        std::vector<float> vc(static_cast<std::size_t>(pairs)), vs(vc.size()), sc(vc.size()), ss(vc.size());
        simd::rotary_cos_sin(p, inv_freq.data(), af, pairs, vc.data(), vs.data());
        scalar::rotary_cos_sin(p, inv_freq.data(), af, pairs, sc.data(), ss.data());
        // Both round a value within 1e-10 of the truth to float: at most one float ulp apart.
        check_lanes(vc, sc, 2.5e-7);
        check_lanes(vs, ss, 2.5e-7);
        for (Index i = 0; i < pairs; ++i) {
          const long double angle = static_cast<long double>(p) * inv_freq[static_cast<std::size_t>(i)];
          CHECK(vc[static_cast<std::size_t>(i)] == Approx(static_cast<double>(af * std::cos(angle))).margin(2e-7));
          CHECK(vs[static_cast<std::size_t>(i)] == Approx(static_cast<double>(af * std::sin(angle))).margin(2e-7));
        }
      }
    }
  }
}

TEST_CASE("cos/sin rows past the vector sincos range fall back to exact libm angles", "[kernels]") {
  // position * inv_freq = 3 (2^31 - 1) > 2^32: the dispatcher must not use the vector reduction.
  const std::vector<double> inv_freq = {3.0, 2.5, 1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625};
  const auto pairs = static_cast<Index>(inv_freq.size());
  std::vector<float> c(inv_freq.size()), s(inv_freq.size());
  posenc::kernel::rotary_cos_sin(posenc::kMaxPosition, inv_freq.data(), 3.0, 1.0, pairs, c.data(), s.data());
  for (std::size_t i = 0; i < inv_freq.size(); ++i) {
    const long double angle = static_cast<long double>(posenc::kMaxPosition) * inv_freq[i];
    INFO("pair " << i);
    CHECK(c[i] == Approx(static_cast<double>(std::cos(angle))).margin(2e-7));
    CHECK(s[i] == Approx(static_cast<double>(std::sin(angle))).margin(2e-7));
  }
}

TEST_CASE("vector exp of non-positive arguments: relative error 5e-7, 0 below -87, exact at 0", "[kernels]") {
  std::vector<float> xs = {0.0f, -0.0f, -1e-30f, -1e-7f, -0.5f, -0.6931472f, -1.0f, -10.0f, -50.0f, -86.9f, -87.0f};
  for (int i = 0; i <= 20000; ++i) xs.push_back(-87.0f * static_cast<float>(i) / 20000.0f);
  while (xs.size() % static_cast<std::size_t>(simd::kFloatLanes) != 0) xs.push_back(-1.0f);
  double worst = 0.0;
  for (std::size_t i = 0; i < xs.size(); i += static_cast<std::size_t>(simd::kFloatLanes)) {
    const simd::FloatVec e = simd::exp_nonpositive(simd::load<simd::FloatVec>(xs.data() + i));
    for (int lane = 0; lane < simd::kFloatLanes; ++lane) {
      const long double want = std::exp(static_cast<long double>(xs[i + static_cast<std::size_t>(lane)]));
      worst = std::max(worst, static_cast<double>(std::fabs((e[lane] - want) / want)));
    }
  }
  CHECK(worst <= 5e-7);
  float tail[16] = {-87.5f, -100.0f, -1e30f, -std::numeric_limits<float>::infinity(),
                    0.0f,   0.0f,    0.0f,   0.0f,
                    0.0f,   0.0f,    0.0f,   0.0f,
                    0.0f,   0.0f,    0.0f,   0.0f};
  const simd::FloatVec e = simd::exp_nonpositive(simd::load<simd::FloatVec>(tail));
  for (int lane = 0; lane < std::min(4, simd::kFloatLanes); ++lane) CHECK(e[lane] == 0.0f);
  for (int lane = 4; lane < simd::kFloatLanes; ++lane) CHECK(e[lane] == 1.0f);
}

namespace {
/// reduce_sums<N> on vectors whose lanes are small integers: every partial sum is exact, so the
/// result must equal the lane sum exactly whatever order the tree adds in.
template <int N>
void check_reduce_sums(std::mt19937& rng) {
  std::uniform_int_distribution<int> small(-1000, 1000);
  simd::FloatVec v[N];
  float want[N];
  for (int i = 0; i < N; ++i) {
    want[i] = 0.0f;
    for (int lane = 0; lane < simd::kFloatLanes; ++lane) {
      v[i][lane] = static_cast<float>(small(rng));
      want[i] += v[i][lane];
    }
  }
  float got[N];
  simd::reduce_sums(v, got);
  for (int i = 0; i < N; ++i) {
    INFO("N " << N << ", vector " << i);
    CHECK(got[i] == want[i]);
  }
}
}  // namespace

TEST_CASE("reduce_sums gives each vector's lane sum in order (the 8- and 16-vector trees and the loop)", "[kernels]") {
  std::mt19937 rng(107);
  for (int trial = 0; trial < 20; ++trial) {
    check_reduce_sums<16>(rng);
    check_reduce_sums<8>(rng);
    check_reduce_sums<6>(rng);
    check_reduce_sums<1>(rng);
  }
}

TEST_CASE("largest_of: the vector kernel returns std::max's answer, NaN entries passed over", "[kernels]") {
  std::mt19937 rng(109);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float minus_inf = -std::numeric_limits<float>::infinity();
  for (const Index n : awkward_sizes(simd::kFloatLanes)) {
    for (int trial = 0; trial < 20; ++trial) {
      INFO("n " << n << ", trial " << trial);
      std::vector<float> x = random_floats(rng, n, -3000.0f, 3000.0f);
      if (trial % 4 == 1) x[static_cast<std::size_t>(rng() % n)] = nan;  // passed over
      if (trial % 4 == 2) std::fill(x.begin(), x.end(), nan);          // nothing to take: init
      const float init = trial % 3 == 0 ? minus_inf : static_cast<float>(static_cast<int>(rng() % 2000) - 1000);
      float want = init;  // std::max in order, the rule the hooks had written out
      for (const float v : x) want = std::max(want, v);
      CHECK(simd::largest_of(x.data(), n, init) == want);
      CHECK(scalar::largest_of(x.data(), n, init) == want);
      CHECK(std::isnan(simd::largest_of(x.data(), n, nan)));  // a NaN start stays, as with std::max
    }
  }
  CHECK(simd::largest_of(nullptr, 0, 2.5f) == 2.5f);
}

#endif  // POSENC_HAS_VECTOR_KERNELS
