#include <catch2/catch.hpp>
#include <posenc/posenc.hpp>

TEST_CASE("umbrella header builds every policy") {
  posenc::RoPE rope(posenc::RopeConfig{8, 0, 10000.0, posenc::RopeLayout::kHalf, posenc::RopeScaling::none()});
  CHECK(rope.rotary_dim() == 8);
}
