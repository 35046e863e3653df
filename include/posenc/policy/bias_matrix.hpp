#pragma once
// The full [heads, Lq, Lk] bias of a score-bias policy, for inspection, plots and tests
// (attention itself never builds it: it asks for one row of one tile at a time).

#include "posenc/positions.hpp"
#include "posenc/tensor.hpp"

namespace posenc::detail {

/// bias[h, i, j] = b_h(q_positions[i], k_positions[j]) through the policy's row hook.
template <class P>
Tensor<float, 3> bias_matrix(const P& policy, Index heads, PositionsRef q_positions, PositionsRef k_positions) {
  check_positions(as_span(q_positions), "q_positions");
  check_positions(as_span(k_positions), "k_positions");
  const Index lq = q_positions.dim(0);
  const Index lk = k_positions.dim(0);
  Tensor<float, 3> out(heads, lq, lk);
  out.setZero();
  for (Index h = 0; h < heads; ++h) {
    for (Index i = 0; i < lq; ++i) {
      policy.add_bias_row(h, q_positions.data()[i], k_positions.data(), lk, out.data() + (h * lq + i) * lk);
    }
  }
  return out;
}

}  // namespace posenc::detail
