// LearnedAbsolute (FORMAT.md §4.2; GPT-2 `wpe`).

#include "test_util.hpp"

using namespace testutil;
using posenc::LearnedAbsolute;

namespace {

/// table[p, c] = 1000 p + c: every row identifies its position.
FTensor<2> numbered_table(Index max_len, Index dim) {
  FTensor<2> t(max_len, dim);
  for (Index p = 0; p < max_len; ++p) {
    for (Index c = 0; c < dim; ++c) t(p, c) = static_cast<float>(1000 * p + c);
  }
  return t;
}

}  // namespace

TEST_CASE("LearnedAbsolute add_to with an offset adds table rows offset .. offset + L - 1", "[learned]") {
  const LearnedAbsolute wpe(numbered_table(10, 3));
  CHECK(wpe.max_len() == 10);
  CHECK(wpe.dim() == 3);
  FTensor<2> x(4, 3);
  x.setConstant(0.5f);
  wpe.add_to(x, Position{6});  // rows 6..9: the last rows of the table
  for (Index l = 0; l < 4; ++l) {
    for (Index c = 0; c < 3; ++c) CHECK(x(l, c) == static_cast<float>(1000 * (6 + l) + c) + 0.5f);
  }
  FTensor<2> y(1, 3);
  y.setZero();
  wpe.add_to(y, Position{0});
  CHECK(y(0, 2) == 2.0f);
}

TEST_CASE("LearnedAbsolute add_to with positions adds table[positions[l]]", "[learned]") {
  const LearnedAbsolute wpe(numbered_table(8, 2));
  FTensor<2> x(5, 2);
  x.setConstant(-1.0f);
  const std::vector<Position> positions = {7, 0, 0, 3, 5};  // any order, repeats allowed
  wpe.add_to(x, positions);
  for (Index l = 0; l < 5; ++l) {
    for (Index c = 0; c < 2; ++c) {
      CHECK(x(l, c) == static_cast<float>(1000 * positions[static_cast<std::size_t>(l)] + c) - 1.0f);
    }
  }
}

TEST_CASE("LearnedAbsolute copies its table: later changes to the source do not leak in", "[learned]") {
  FTensor<2> source = numbered_table(3, 2);
  const LearnedAbsolute wpe(source);
  source.setConstant(42.0f);
  const LearnedAbsolute copy = wpe;  // copies share the immutable table
  FTensor<2> x(1, 2);
  x.setZero();
  copy.add_to(x, std::vector<Position>{2});
  CHECK(x(0, 0) == 2000.0f);
  CHECK(x(0, 1) == 2001.0f);
}

TEST_CASE("LearnedAbsolute rejects offsets and positions past the table with std::out_of_range", "[learned][errors]") {
  const LearnedAbsolute wpe(numbered_table(6, 2));
  FTensor<2> x(3, 2);
  x.setZero();
  // offset + L > max_len
  POSENC_REQUIRE_THROWS_NAMING(posenc::PositionOutOfRange, "offset", wpe.add_to(x, Position{4}));
  POSENC_REQUIRE_THROWS_NAMING(std::out_of_range, "offset", wpe.add_to(x, Position{4}));
  POSENC_REQUIRE_THROWS_NAMING(posenc::PositionOutOfRange, "offset", wpe.add_to(x, Position{-1}));
  POSENC_REQUIRE_THROWS_NAMING(posenc::PositionOutOfRange, "offset",
                               wpe.add_to(x, std::numeric_limits<Position>::max()));
  CHECK_NOTHROW(wpe.add_to(x, Position{3}));  // rows 3..5: exactly fits
  // position >= max_len, or negative
  POSENC_REQUIRE_THROWS_NAMING(posenc::PositionOutOfRange, "positions", wpe.add_to(x, std::vector<Position>{0, 6, 1}));
  POSENC_REQUIRE_THROWS_NAMING(std::out_of_range, "positions", wpe.add_to(x, std::vector<Position>{0, 1, 600}));
  POSENC_REQUIRE_THROWS_NAMING(posenc::PositionOutOfRange, "positions", wpe.add_to(x, std::vector<Position>{-1, 1, 2}));
  CHECK_NOTHROW(wpe.add_to(x, std::vector<Position>{5, 5, 0}));
}

TEST_CASE("LearnedAbsolute rejects mismatched shapes", "[learned][errors]") {
  const LearnedAbsolute wpe(numbered_table(6, 4));
  FTensor<2> wrong_dim(2, 3);
  POSENC_REQUIRE_THROWS_NAMING(posenc::ShapeMismatch, "x", wpe.add_to(wrong_dim, Position{0}));
  POSENC_REQUIRE_THROWS_NAMING(posenc::ShapeMismatch, "x", wpe.add_to(wrong_dim, std::vector<Position>{0, 1}));
  FTensor<2> x(2, 4);
  POSENC_REQUIRE_THROWS_NAMING(posenc::ShapeMismatch, "x", wpe.add_to(x, std::vector<Position>{0, 1, 2}));
  POSENC_REQUIRE_THROWS_NAMING(posenc::ShapeMismatch, "table", LearnedAbsolute(posenc::TensorRef<const float, 2>{}));
}
