// Rotates one query with RoPE and checks its norm is kept: proves the headers, Eigen and the
// C++20 requirement all arrive through the posenc::posenc target.
#include <cmath>
#include <cstdio>
#include <posenc/posenc.hpp>
#include <vector>

int main() {
  posenc::RopeConfig config;
  config.head_dim = 8;
  const posenc::RoPE rope(config);
  posenc::Tensor<float, 3> x(1, 1, 8);
  x.setConstant(1.0f);
  const std::vector<posenc::Position> positions{12345};
  const auto y = rope.rotate(x, positions);
  double norm = 0.0;
  for (posenc::Index i = 0; i < 8; ++i) norm += double{y(0, 0, i)} * double{y(0, 0, i)};
  std::printf("consumer: |R(p) x|^2 = %.6f (expected 8)\n", norm);
  return std::fabs(norm - 8.0) < 1e-4 ? 0 : 1;
}
