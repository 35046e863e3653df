// TensorRef: the non-owning view every public function takes (tensor.hpp).

#include <list>
#include <span>

#include "test_util.hpp"

using namespace testutil;
using posenc::TensorRef;

TEST_CASE("TensorRef binds to Eigen tensors, TensorMaps, vectors and raw pointers without copying", "[tensor]") {
  SECTION("row-major Eigen::Tensor, mutable and const") {
    Eigen::Tensor<float, 3, Eigen::RowMajor> t(2, 3, 4);
    const TensorRef<float, 3> ref(t);
    CHECK(ref.data() == t.data());
    CHECK(ref.dim(0) == 2);
    CHECK(ref.dim(1) == 3);
    CHECK(ref.dim(2) == 4);
    CHECK(ref.size() == 24);
    CHECK(ref.present());
    const auto& ct = t;
    const TensorRef<const float, 3> cref(ct);
    CHECK(cref.data() == t.data());
    // A mutable view converts to a const one.
    const TensorRef<const float, 3> converted = ref;
    CHECK(converted.data() == t.data());
    CHECK(converted.dims() == ref.dims());
    // map() views the same memory.
    ref.map()(1, 2, 3) = 42.0f;
    CHECK(t(1, 2, 3) == 42.0f);
    CHECK(cref.map()(1, 2, 3) == 42.0f);
  }
  SECTION("TensorMap and const TensorMap over a buffer") {
    std::vector<float> buffer(12, 0.0f);
    posenc::TensorMap<float, 2> map(buffer.data(), 3, 4);
    const TensorRef<float, 2> ref(map);
    CHECK(ref.data() == buffer.data());
    CHECK(ref.dim(0) == 3);
    CHECK(ref.dim(1) == 4);
    posenc::ConstTensorMap<float, 2> cmap(buffer.data(), 4, 3);
    const TensorRef<const float, 2> cref(cmap);
    CHECK(cref.data() == buffer.data());
    CHECK(cref.dim(0) == 4);
    // Eigen's own spelling of the map types works too.
    Eigen::TensorMap<Eigen::Tensor<float, 2, Eigen::RowMajor>> eigen_map(buffer.data(), 2, 6);
    CHECK(TensorRef<const float, 2>(eigen_map).dim(1) == 6);
  }
  SECTION("contiguous ranges of positions (rank 1)") {
    const std::vector<Position> positions = {4, 5, 6};
    const posenc::PositionsRef ref(positions);
    CHECK(ref.data() == positions.data());
    CHECK(ref.dim(0) == 3);
    const std::array<Position, 2> fixed = {7, 8};
    CHECK(posenc::PositionsRef(fixed).data() == fixed.data());
    const std::span<const Position> span(positions);
    CHECK(posenc::PositionsRef(span).dim(0) == 3);
    const std::vector<std::uint8_t> padding = {0, 1};
    CHECK(posenc::KeyPaddingRef(padding).dim(0) == 2);
  }
  SECTION("raw pointer plus dims") {
    float raw[6] = {1, 2, 3, 4, 5, 6};
    const TensorRef<float, 2> ref(raw, {2, 3});
    CHECK(ref.data() == raw);
    CHECK(ref.map()(1, 0) == 4.0f);  // row-major
    const TensorRef<const float, 3> cref(raw, {1, 2, 3});
    CHECK(cref.size() == 6);
  }
  SECTION("default-constructed: absent") {
    const TensorRef<const float, 2> none;
    CHECK_FALSE(none.present());
    CHECK(none.data() == nullptr);
  }
}

TEST_CASE("TensorRef refuses mismatched ranks and element types at compile time", "[tensor]") {
  using Float3 = Eigen::Tensor<float, 3, Eigen::RowMajor>;
  using Float2 = Eigen::Tensor<float, 2, Eigen::RowMajor>;
  STATIC_REQUIRE(std::is_constructible_v<TensorRef<float, 3>, Float3&>);
  STATIC_REQUIRE(std::is_constructible_v<TensorRef<const float, 3>, const Float3&>);
  STATIC_REQUIRE_FALSE(std::is_constructible_v<TensorRef<float, 3>, Float2&>);
  STATIC_REQUIRE_FALSE(std::is_constructible_v<TensorRef<float, 2>, std::vector<float>&>);  // rank 1 only
  STATIC_REQUIRE(std::is_constructible_v<TensorRef<float, 1>, std::vector<float>&>);
  STATIC_REQUIRE_FALSE(std::is_constructible_v<posenc::PositionsRef, std::vector<int>&>);         // not int64
  STATIC_REQUIRE_FALSE(std::is_constructible_v<TensorRef<float, 1>, const std::vector<float>&>);  // const data
  STATIC_REQUIRE_FALSE(std::is_constructible_v<posenc::PositionsRef, std::list<Position>&>);      // not contiguous
  STATIC_REQUIRE_FALSE(std::is_convertible_v<TensorRef<const float, 2>, TensorRef<float, 2>>);    // no const drop
}

TEST_CASE("the public API accepts every binding and gives the same result", "[tensor][attention]") {
  std::mt19937 rng(91);
  const Index l = 4, heads = 2, d = 4;
  const FTensor<3> q = random_tensor<3>(rng, {l, heads, d});
  const FTensor<3> k = random_tensor<3>(rng, {l, heads, d});
  const FTensor<3> v = random_tensor<3>(rng, {l, heads, d});
  const std::vector<Position> p = iota_positions(l);
  const posenc::ALiBi alibi(heads);
  const FTensor<3> want = posenc::attention(q, k, v, p, p, alibi);

  // Tensors held in other containers: raw buffers, TensorMaps.
  std::vector<float> qb(q.data(), q.data() + q.size()), kb(k.data(), k.data() + k.size()),
      vb(v.data(), v.data() + v.size());
  const posenc::ConstTensorMap<float, 3> qm(qb.data(), l, heads, d);
  posenc::TensorMap<float, 3> km(kb.data(), l, heads, d);
  const TensorRef<const float, 3> vr(vb.data(), {l, heads, d});
  const Position raw_positions[] = {0, 1, 2, 3};
  const posenc::PositionsRef pr(raw_positions, {l});
  CHECK(max_abs_diff(posenc::attention(qm, km, vr, pr, p, alibi), want) == 0.0);

  // RoPE apply on a TensorMap over a std::vector writes through the view.
  const posenc::RoPE rope = make_rope(d, d, posenc::RopeLayout::kHalf);
  std::vector<float> buffer(q.data(), q.data() + q.size());
  rope.apply(posenc::TensorMap<float, 3>(buffer.data(), l, heads, d), p);
  const FTensor<3> rotated = rope.rotate(q, p);
  for (Index i = 0; i < q.size(); ++i) CHECK(buffer[static_cast<std::size_t>(i)] == rotated.data()[i]);
  CHECK(finite_max_abs_diff(rotated, q) > 1e-3);
}
