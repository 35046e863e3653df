// RoPE: geometric properties of the rotation for every layout and scaling type, and values at
// large positions against a long-double evaluation (FORMAT.md §4.3).

#include "test_util.hpp"

using namespace testutil;
using posenc::RopeLayout;

namespace {

const RopeLayout kLayouts[] = {RopeLayout::kHalf, RopeLayout::kInterleaved};

const char* layout_name(RopeLayout layout) { return layout == RopeLayout::kHalf ? "half" : "interleaved"; }

/// Sum of squares of x[t, h, 0 .. r-1].
double rotary_norm2(const FTensor<3>& x, Index t, Index h, Index r) {
  double s = 0.0;
  for (Index c = 0; c < r; ++c) s += static_cast<double>(x(t, h, c)) * static_cast<double>(x(t, h, c));
  return s;
}

/// <a[ta, h, :r], b[tb, h, :r]>.
double rotary_dot(const FTensor<3>& a, Index ta, const FTensor<3>& b, Index tb, Index h, Index r) {
  double s = 0.0;
  for (Index c = 0; c < r; ++c) s += static_cast<double>(a(ta, h, c)) * static_cast<double>(b(tb, h, c));
  return s;
}

/// `tokens` copies of the single token of x [1, heads, d].
FTensor<3> repeat_token(const FTensor<3>& x, Index tokens) {
  FTensor<3> out(tokens, x.dimension(1), x.dimension(2));
  for (Index t = 0; t < tokens; ++t) std::copy(x.data(), x.data() + x.size(), out.data() + t * x.size());
  return out;
}

}  // namespace

TEST_CASE("RoPE preserves the norm of the rotated dims, scaled by the attention factor", "[rope]") {
  std::mt19937 rng(11);
  const Index d = 16;
  for (const Index r : {Index{16}, Index{12}}) {
    for (const auto& [name, scaling] : all_scalings(r)) {
      for (const RopeLayout layout : kLayouts) {
        INFO("scaling " << name << ", layout " << layout_name(layout) << ", rotary_dim " << r);
        const posenc::RoPE rope = make_rope(d, r, layout, scaling);
        const posenc::RotaryFrequencies f = rope.rotation(64);
        const RefFrequencies ref = ref_frequencies(scaling, 10000.0L, r, 64);
        CHECK(f.attention_factor == Approx(static_cast<double>(ref.attention_factor)).epsilon(1e-14));
        const bool scaled_af = name == "yarn" || name == "longrope";
        CHECK((f.attention_factor != 1.0) == scaled_af);

        const FTensor<3> x = random_tensor<3>(rng, {9, 3, d});
        const std::vector<Position> positions = {0, 1, 2, 17, 63, 1000, 4096, 123456, 9999999};
        FTensor<3> y = x;
        rope.apply(y, positions, f);
        const double af2 = f.attention_factor * f.attention_factor;
        for (Index t = 0; t < 9; ++t) {
          for (Index h = 0; h < 3; ++h) {
            CHECK(rotary_norm2(y, t, h, r) == Approx(af2 * rotary_norm2(x, t, h, r)).epsilon(1e-6));
          }
        }
      }
    }
  }
}

TEST_CASE("RoPE: <R(m)q, R(n)k> depends only on m - n, for every layout and scaling", "[rope]") {
  std::mt19937 rng(12);
  const Index d = 16;
  const Index r = 12;
  const std::vector<Position> shifts = {0, 1, 17, 1000, 65536, 1000000};
  const Index n_shifts = static_cast<Index>(shifts.size());
  // (m, n) pairs: query before, at and after the key.
  const std::vector<std::pair<Position, Position>> pairs = {{0, 5}, {5, 0}, {7, 7}, {100, 3}, {3, 40}};
  for (const auto& [name, scaling] : all_scalings(r)) {
    for (const RopeLayout layout : kLayouts) {
      INFO("scaling " << name << ", layout " << layout_name(layout));
      const posenc::RoPE rope = make_rope(d, r, layout, scaling);
      // One set of frequencies for the whole comparison (dynamic and longrope depend on seq_len).
      const posenc::RotaryFrequencies f = rope.rotation(100);
      const RefFrequencies ref = ref_frequencies(scaling, 10000.0L, r, 100);
      const FTensor<3> q0 = random_tensor<3>(rng, {1, 2, d});
      const FTensor<3> k0 = random_tensor<3>(rng, {1, 2, d});
      std::vector<double> dots_by_pair;
      for (const auto& [m, n] : pairs) {
        std::vector<Position> qp, kp;
        for (Position s : shifts) {
          qp.push_back(m + s);
          kp.push_back(n + s);
        }
        FTensor<3> q = repeat_token(q0, n_shifts);
        FTensor<3> k = repeat_token(k0, n_shifts);
        rope.apply(q, qp, f);
        rope.apply(k, kp, f);
        // The value at shift 0 from the long-double reference rotation.
        const DTensor<3> rq = ref_rope(to_double(q0), {m}, ref, layout == RopeLayout::kInterleaved);
        const DTensor<3> rk = ref_rope(to_double(k0), {n}, ref, layout == RopeLayout::kInterleaved);
        for (Index h = 0; h < 2; ++h) {
          double expected = 0.0;
          for (Index c = 0; c < r; ++c) expected += rq(0, h, c) * rk(0, h, c);
          for (Index t = 0; t < n_shifts; ++t) {
            INFO("m " << m << ", n " << n << ", shift " << shifts[static_cast<std::size_t>(t)] << ", head " << h);
            CHECK(rotary_dot(q, t, k, t, h, r) == Approx(expected).margin(2e-5));
          }
          if (h == 0) dots_by_pair.push_back(expected);
        }
      }
      // Not trivially constant: different offsets give different scores.
      CHECK(std::fabs(dots_by_pair[0] - dots_by_pair[1]) > 1e-3);
      CHECK(std::fabs(dots_by_pair[2] - dots_by_pair[3]) > 1e-3);
    }
  }
}

TEST_CASE("RoPE: rotating by p and then by the inverse rotation restores the input", "[rope]") {
  std::mt19937 rng(13);
  const Index d = 12;
  for (const Index r : {Index{12}, Index{8}}) {
    for (const auto& [name, scaling] : all_scalings(r)) {
      for (const RopeLayout layout : kLayouts) {
        INFO("scaling " << name << ", layout " << layout_name(layout) << ", rotary_dim " << r);
        const posenc::RoPE rope = make_rope(d, r, layout, scaling);
        const posenc::RotaryFrequencies f = rope.rotation(50);
        const std::vector<Position> positions = {0, 3, 49, 777, 31337, 5000000};
        const FTensor<3> x = random_tensor<3>(rng, {6, 2, d});
        FTensor<3> y = x;
        rope.apply(y, positions, f);
        // R(p)^-1 = R(-p) / af, computed here pair by pair in long double from the same frequencies.
        const Index pairs = r / 2;
        FTensor<3> back = y;
        for (Index t = 0; t < 6; ++t) {
          for (Index i = 0; i < pairs; ++i) {
            const long double angle = static_cast<long double>(positions[static_cast<std::size_t>(t)]) *
                                      static_cast<long double>(f.inv_freq[static_cast<std::size_t>(i)]);
            const long double c = std::cos(angle), s = std::sin(angle);
            const long double af = f.attention_factor;
            const Index ia = layout == RopeLayout::kHalf ? i : 2 * i;
            const Index ib = layout == RopeLayout::kHalf ? i + pairs : 2 * i + 1;
            for (Index h = 0; h < 2; ++h) {
              const long double a = y(t, h, ia), b = y(t, h, ib);
              back(t, h, ia) = static_cast<float>((a * c + b * s) / af);
              back(t, h, ib) = static_cast<float>((b * c - a * s) / af);
            }
          }
        }
        check_close(back, x, 1e-6);
      }
    }
  }
}

TEST_CASE("RoPE: R(b) R(a) = R(a + b) for a fixed set of frequencies", "[rope]") {
  std::mt19937 rng(14);
  const Index d = 8;
  for (const auto& [name, scaling] : all_scalings(d)) {
    for (const RopeLayout layout : kLayouts) {
      INFO("scaling " << name << ", layout " << layout_name(layout));
      const posenc::RoPE rope = make_rope(d, d, layout, scaling);
      posenc::RotaryFrequencies f = rope.rotation(40);
      f.attention_factor = 1.0;  // the group property holds for the pure rotation
      const std::vector<Position> a = {0, 5, 20, 1000, 70000};
      const std::vector<Position> b = {9, 0, 20, 24, 3};
      std::vector<Position> sum;
      for (std::size_t i = 0; i < a.size(); ++i) sum.push_back(a[i] + b[i]);
      const FTensor<3> x = random_tensor<3>(rng, {5, 3, d});
      FTensor<3> twice = x;
      rope.apply(twice, a, f);
      rope.apply(twice, b, f);
      FTensor<3> once = x;
      rope.apply(once, sum, f);
      check_close(twice, once, 2e-6);
    }
  }
}

TEST_CASE("RoPE leaves dims rotary_dim .. head_dim-1 untouched (also with an attention factor)", "[rope]") {
  std::mt19937 rng(15);
  const Index d = 10, r = 6;
  for (const auto& [name, scaling] : all_scalings(r)) {
    for (const RopeLayout layout : kLayouts) {
      INFO("scaling " << name << ", layout " << layout_name(layout));
      const posenc::RoPE rope = make_rope(d, r, layout, scaling);
      const FTensor<3> x = random_tensor<3>(rng, {4, 2, d});
      const std::vector<Position> positions = {1, 2, 100, 99999};
      const FTensor<3> y = rope.rotate(x, positions);
      bool rotated_changed = false;
      for (Index t = 0; t < 4; ++t) {
        for (Index h = 0; h < 2; ++h) {
          for (Index c = r; c < d; ++c) REQUIRE(y(t, h, c) == x(t, h, c));
          for (Index c = 0; c < r; ++c) rotated_changed = rotated_changed || y(t, h, c) != x(t, h, c);
        }
      }
      CHECK(rotated_changed);
    }
  }
}

TEST_CASE("RoPE at position 0 is the identity times the attention factor", "[rope]") {
  std::mt19937 rng(16);
  for (const auto& [name, scaling] : all_scalings(8)) {
    INFO("scaling " << name);
    const posenc::RoPE rope = make_rope(8, 8, RopeLayout::kHalf, scaling);
    const FTensor<3> x = random_tensor<3>(rng, {1, 2, 8});
    const posenc::RotaryFrequencies f = rope.rotation(1);
    FTensor<3> y = x;
    rope.apply(y, std::vector<Position>{0}, f);
    FTensor<3> want = x;
    for (Index i = 0; i < want.size(); ++i) want.data()[i] = static_cast<float>(f.attention_factor * x.data()[i]);
    check_close(y, want, 1e-7, 1e-7);
  }
}

TEST_CASE("RoPE half and interleaved layouts agree after permuting dims", "[rope]") {
  std::mt19937 rng(17);
  const Index d = 14, r = 10, pairs = r / 2;
  // interleaved dim 2i <-> half dim i, interleaved dim 2i+1 <-> half dim i + r/2; the rest fixed.
  std::vector<Index> half_of(static_cast<std::size_t>(d));
  for (Index i = 0; i < pairs; ++i) {
    half_of[static_cast<std::size_t>(2 * i)] = i;
    half_of[static_cast<std::size_t>(2 * i + 1)] = i + pairs;
  }
  for (Index c = r; c < d; ++c) half_of[static_cast<std::size_t>(c)] = c;
  auto to_interleaved = [&](const FTensor<3>& x) {
    FTensor<3> out(x.dimensions());
    for (Index t = 0; t < x.dimension(0); ++t) {
      for (Index h = 0; h < x.dimension(1); ++h) {
        for (Index c = 0; c < d; ++c) out(t, h, c) = x(t, h, half_of[static_cast<std::size_t>(c)]);
      }
    }
    return out;
  };
  for (const auto& [name, scaling] : all_scalings(r)) {
    INFO("scaling " << name);
    const posenc::RoPE half = make_rope(d, r, RopeLayout::kHalf, scaling);
    const posenc::RoPE interleaved = make_rope(d, r, RopeLayout::kInterleaved, scaling);
    const FTensor<3> x = random_tensor<3>(rng, {5, 3, d});
    const std::vector<Position> positions = {0, 7, 31, 500, 20000};
    const FTensor<3> y_half = half.rotate(x, positions);
    const FTensor<3> y_interleaved = interleaved.rotate(to_interleaved(x), positions);
    check_close(y_interleaved, to_interleaved(y_half), 1e-7, 1e-7);
    CHECK(finite_max_abs_diff(y_interleaved, to_interleaved(x)) > 1e-2);  // something was rotated
  }
}

TEST_CASE("RoPE values up to position 2^31-1 match a long-double evaluation within 2e-6", "[rope]") {
  std::mt19937 rng(18);
  const std::vector<Position> positions = {0,       1,       250,      20000,     100000,
                                           1000000, 9999999, 10000000, 123456789, posenc::kMaxPosition};
  const Index l = static_cast<Index>(positions.size());
  const Position seq_len = posenc::kMaxPosition + 1;
  for (const double base : {10000.0, 500000.0}) {
    for (const Index r : {Index{64}, Index{48}}) {
      for (const auto& [name, scaling] : all_scalings(r)) {
        for (const RopeLayout layout : kLayouts) {
          INFO("base " << base << ", rotary_dim " << r << ", scaling " << name << ", layout " << layout_name(layout));
          const posenc::RoPE rope = make_rope(64, r, layout, scaling, base);
          const FTensor<3> x = random_tensor<3>(rng, {l, 2, 64});
          const FTensor<3> y = rope.rotate(x, positions);
          const DTensor<3> want =
              ref_rope(to_double(x), positions, ref_frequencies(scaling, static_cast<long double>(base), r, seq_len),
                       layout == RopeLayout::kInterleaved);
          check_close(y, want, 2e-6, 2e-6);
        }
      }
    }
  }
}

TEST_CASE("RoPE rotate() and apply() agree and rotate() leaves its input alone", "[rope]") {
  std::mt19937 rng(19);
  const posenc::RoPE rope = make_rope(8, 8, RopeLayout::kInterleaved, posenc::RopeScaling::dynamic(2.0, 4));
  const FTensor<3> x = random_tensor<3>(rng, {3, 2, 8});
  const FTensor<3> x_copy = x;
  const std::vector<Position> positions = {2, 9, 5};
  const FTensor<3> y = rope.rotate(x, positions);
  CHECK(max_abs_diff(x, x_copy) == 0.0);
  FTensor<3> z = x;
  rope.apply(z, positions);
  CHECK(max_abs_diff(y, z) == 0.0);
  // apply(x, positions) uses seq_len = max(positions) + 1 = 10.
  FTensor<3> w = x;
  rope.apply(w, positions, rope.rotation(10));
  CHECK(max_abs_diff(y, w) == 0.0);
  FTensor<3> v = x;
  rope.apply(v, positions, rope.rotation(11));
  CHECK(finite_max_abs_diff(y, v) > 1e-4);
}

TEST_CASE("RoPE apply_into equals apply bit for bit in every form and leaves x alone", "[rope]") {
  // Widths with a compile-time kernel (rotary 128, 32) and without (8), whole and partial heads.
  std::mt19937 rng(23);
  const std::vector<Position> positions = {7, 0, 3, 4, 5, 6, 40};
  for (const auto& widths : {std::pair<Index, Index>{128, 128}, {64, 32}, {10, 8}}) {
    const Index head_dim = widths.first, rotary_dim = widths.second;  // (lambdas below capture them)
    for (const RopeLayout layout : kLayouts) {
      for (const bool attached : {false, true}) {
        INFO("head_dim " << head_dim << ", rotary_dim " << rotary_dim << ", layout " << layout_name(layout)
                         << (attached ? ", with_cache" : ""));
        posenc::RoPE rope = make_rope(head_dim, rotary_dim, layout, posenc::RopeScaling::yarn(4.0, 16));
        if (attached) rope = rope.with_cache(64);
        const FTensor<3> x = random_tensor<3>(rng, {7, 3, head_dim});
        const posenc::RotaryCache cache = rope.cache(64);
        const auto rotated_in_place = [&](auto&&... frequencies_or_cache) {
          FTensor<3> y = x;
          rope.apply(y, positions, frequencies_or_cache...);
          return y;
        };
        const auto rotated_into = [&](auto&&... frequencies_or_cache) {
          FTensor<3> out(7, 3, head_dim);
          out.setConstant(std::numeric_limits<float>::quiet_NaN());  // every entry must be written
          const FTensor<3> input = x;
          rope.apply_into(input, positions, frequencies_or_cache..., out);
          CHECK(max_abs_diff(input, x) == 0.0);
          return out;
        };
        CHECK(max_abs_diff(rotated_into(), rotated_in_place()) == 0.0);
        CHECK(max_abs_diff(rotated_into(rope.rotation(100)), rotated_in_place(rope.rotation(100))) == 0.0);
        CHECK(max_abs_diff(rotated_into(cache), rotated_in_place(cache)) == 0.0);
        CHECK(max_abs_diff(rope.rotate(x, positions), rotated_in_place()) == 0.0);
        // out may be x itself: then it is apply().
        FTensor<3> same = x;
        rope.apply_into(same, positions, same);
        CHECK(max_abs_diff(same, rotated_in_place()) == 0.0);
        // The attention hook's gathering form: heads 1 and 2 of each token (3 * head_dim apart)
        // rotated into a [7, 2, head_dim] tensor, as attention gathers its query and key tiles.
        FTensor<3> gathered(7, 2, head_dim);
        gathered.setConstant(std::numeric_limits<float>::quiet_NaN());
        rope.rotate_unchecked(x.data() + head_dim, 3 * head_dim, gathered.data(), 7, 2, positions.data(),
                              rope.rotation(41));
        const FTensor<3> want = rotated_in_place();
        double largest = 0.0;
        for (Index t = 0; t < 7; ++t) {
          for (Index h = 0; h < 2; ++h) {
            for (Index c = 0; c < head_dim; ++c) {
              largest = std::max(largest, std::fabs(static_cast<double>(gathered(t, h, c)) - want(t, h + 1, c)));
            }
          }
        }
        CHECK(largest == 0.0);
      }
    }
  }
}

TEST_CASE("RoPE on a whole tensor (1.2 MiB) equals the same rows rotated in small calls", "[rope]") {
  // One call over 300 tokens against calls of two: table lookups match bit for bit; the table-free
  // rows (a recurrence stepped across the long call, anchored anew in each short one) within 2e-6.
  std::mt19937 rng(29);
  const Index tokens = 300, heads = 8, head_dim = 128;  // 1.2 MiB
  std::vector<Position> positions(static_cast<std::size_t>(tokens));
  for (Index t = 0; t < tokens; ++t) positions[static_cast<std::size_t>(t)] = (t * 37) % 400;  // some past the table
  const FTensor<3> x = random_tensor<3>(rng, {tokens, heads, head_dim});
  for (const RopeLayout layout : kLayouts) {
    INFO("layout " << layout_name(layout));
    const posenc::RoPE rope = make_rope(head_dim, head_dim, layout).with_cache(256);
    const posenc::RotaryCache cache = rope.cache(400);
    const auto in_small_calls = [&](auto&&... with_cache) {
      FTensor<3> y = x;
      for (Index t = 0; t < tokens; t += 2) {
        const posenc::TensorRef<float, 3> rows(y.data() + t * heads * head_dim, {2, heads, head_dim});
        rope.apply(rows, std::vector<Position>(positions.begin() + t, positions.begin() + t + 2), with_cache...);
      }
      return y;
    };
    FTensor<3> whole = x;
    rope.apply(whole, positions, cache);
    CHECK(max_abs_diff(whole, in_small_calls(cache)) == 0.0);
    FTensor<3> into(tokens, heads, head_dim);
    rope.apply_into(x, positions, cache, into);
    CHECK(max_abs_diff(into, whole) == 0.0);
    FTensor<3> attached = x;  // the attached table (256) and, past it, rows computed on the fly
    rope.apply(attached, positions, rope.rotation(400));
    check_close(attached, in_small_calls(rope.rotation(400)), 2e-6, 2e-6);
    check_close(attached, whole, 2e-6, 2e-6);
  }
}

TEST_CASE("RoPE apply_into past kStreamingStoreMinBytes streams its output and equals apply bit for bit",
          "[rope]") {
  // An output of exactly the threshold ([1024, 32, 128] at 16 MiB): out of place it takes the
  // non-temporal stores where the vector kernels are built and the output lies on vector
  // boundaries, and plain stores otherwise.
  std::mt19937 rng(31);
  const Index heads = 32, head_dim = 128;
  const Index tokens = posenc::kernel::kStreamingStoreMinBytes / (heads * head_dim * 4);
  REQUIRE(tokens * heads * head_dim * 4 == posenc::kernel::kStreamingStoreMinBytes);
  const FTensor<3> x = random_tensor<3>(rng, {tokens, heads, head_dim});
  const std::vector<Position> positions = iota_positions(tokens, 5);
  AlignedFloats memory(tokens * heads * head_dim);
  const posenc::TensorMap<float, 3> out(memory.data(), tokens, heads, head_dim);
#if defined(POSENC_HAS_VECTOR_KERNELS)
  CHECK(posenc::kernel::streams_output(out.data(), out.size(), head_dim));
  CHECK_FALSE(posenc::kernel::streams_output(out.data() + 1, out.size() - 1, head_dim));  // off the vector grid
  CHECK_FALSE(posenc::kernel::streams_output(out.data(), Index{1} << 20, head_dim));     // 4 MiB: stays cached
  CHECK_FALSE(posenc::kernel::streams_output(out.data(), out.size() - head_dim, head_dim));  // a row short
#endif
  for (const auto& widths : {std::pair<Index, Index>{128, 128}, {128, 64}}) {
    for (const RopeLayout layout : kLayouts) {
      INFO("rotary_dim " << widths.second << ", layout " << layout_name(layout));
      const posenc::RoPE rope = make_rope(widths.first, widths.second, layout);
      const posenc::RotaryCache cache = rope.cache(tokens + 5);
      FTensor<3> want = x;
      rope.apply(want, positions, cache);
      std::fill(memory.data(), memory.data() + memory.size(), std::numeric_limits<float>::quiet_NaN());
      rope.apply_into(x, positions, cache, out);
      CHECK(max_abs_diff(out, want) == 0.0);
      std::fill(memory.data(), memory.data() + memory.size(), std::numeric_limits<float>::quiet_NaN());
      rope.apply_into(x, positions, out);  // angles on the fly
      FTensor<3> want_tablefree = x;
      rope.apply(want_tablefree, positions);
      CHECK(max_abs_diff(out, want_tablefree) == 0.0);
    }
  }
}

TEST_CASE("RoPE apply_into rejects an out of another shape or overlapping x", "[rope][errors]") {
  const posenc::RoPE rope = make_rope(8, 8, RopeLayout::kHalf);
  const std::vector<Position> positions = {0, 1};
  std::vector<float> buffer(3 * 8, 0.5f);
  const posenc::TensorRef<const float, 3> x(buffer.data(), {2, 1, 8});
  FTensor<3> wrong(2, 2, 8);
  POSENC_REQUIRE_THROWS_NAMING(posenc::ShapeMismatch, "out", rope.apply_into(x, positions, wrong));
  const posenc::TensorRef<float, 3> shifted(buffer.data() + 4, {2, 1, 8});  // shares 12 floats with x
  POSENC_REQUIRE_THROWS_NAMING(posenc::InvalidParameter, "out overlaps x", rope.apply_into(x, positions, shifted));
  const posenc::TensorRef<float, 3> after(buffer.data() + 16, {1, 1, 8});
  const posenc::TensorRef<const float, 3> first(buffer.data(), {1, 1, 8});
  CHECK_NOTHROW(rope.apply_into(first, std::vector<Position>{3}, after));  // adjacent, not overlapping
  const posenc::RotaryCache cache = rope.cache(1);
  FTensor<3> out(2, 1, 8);
  POSENC_REQUIRE_THROWS_NAMING(posenc::PositionOutOfRange, "positions", rope.apply_into(x, positions, cache, out));
}

TEST_CASE("RoPE cos/sin cache: apply(x, positions, cache) equals apply with the same frequencies", "[rope]") {
  std::mt19937 rng(20);
  for (const auto& [name, scaling] : all_scalings(8)) {
    for (const RopeLayout layout : kLayouts) {
      INFO("scaling " << name << ", layout " << layout_name(layout));
      const posenc::RoPE rope = make_rope(10, 8, layout, scaling);
      const posenc::RotaryCache cache = rope.cache(100);
      CHECK(cache.size() == 100);
      CHECK(cache.pairs() == 4);
      const std::vector<Position> positions = {0, 99, 50, 1, 98};
      const FTensor<3> x = random_tensor<3>(rng, {5, 3, 10});
      FTensor<3> with_cache = x, without = x;
      rope.apply(with_cache, positions, cache);
      rope.apply(without, positions, rope.rotation(100));
      check_close(with_cache, without, 1e-7, 1e-7);
      check_close(with_cache,
                  ref_rope(to_double(x), positions, ref_frequencies(scaling, 10000.0L, 8, 100),
                           layout == RopeLayout::kInterleaved),
                  2e-6, 2e-6);
      // A cache built with explicit frequencies.
      const posenc::RotaryCache other = rope.cache(100, rope.rotation(5000));
      FTensor<3> a = x, b = x;
      rope.apply(a, positions, other);
      rope.apply(b, positions, rope.rotation(5000));
      check_close(a, b, 1e-7, 1e-7);
    }
  }
}

TEST_CASE("RoPE cos/sin cache rejects positions past it and foreign tables", "[rope][errors]") {
  const posenc::RoPE rope = make_rope(8, 8, RopeLayout::kHalf);
  const posenc::RotaryCache cache = rope.cache(10);
  FTensor<3> x(2, 1, 8);
  x.setZero();
  POSENC_REQUIRE_THROWS_NAMING(posenc::PositionOutOfRange, "positions",
                               rope.apply(x, std::vector<Position>{3, 10}, cache));
  POSENC_REQUIRE_THROWS_NAMING(posenc::PositionOutOfRange, "positions",
                               rope.apply(x, std::vector<Position>{-1, 0}, cache));
  CHECK_NOTHROW(rope.apply(x, std::vector<Position>{9, 0}, cache));
  const posenc::RotaryCache foreign = make_rope(8, 6, RopeLayout::kHalf).cache(10);
  POSENC_REQUIRE_THROWS_NAMING(posenc::InvalidParameter, "cache", rope.apply(x, std::vector<Position>{1, 2}, foreign));
  POSENC_REQUIRE_THROWS_NAMING(posenc::PositionOutOfRange, "cache size", rope.cache(0));
  POSENC_REQUIRE_THROWS_NAMING(posenc::PositionOutOfRange, "cache size", rope.cache(-4));
}
