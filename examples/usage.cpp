// The README's usage example (kept compiling and passing by ctest: example_usage).
#include <posenc/posenc.hpp>
#include <vector>

int main() {
  // q [tokens, heads, head_dim], k and v [tokens, kv_heads, head_dim]: row-major Eigen tensors.
  posenc::Tensor<float, 3> q(6, 32, 128), k(6, 8, 128), v(6, 8, 128);  // GQA: 32 heads on 8 KV heads
  q.setRandom(), k.setRandom(), v.setRandom();
  const std::vector<posenc::Position> positions{0, 1, 2, 3, 4, 5};

  posenc::RopeConfig config;  // LLaMA 3.1: half layout, base 500000, llama3 scaling
  config.head_dim = 128;
  config.base = 500000.0;
  config.scaling = posenc::RopeScaling::llama3(8.0, 1.0, 4.0, 8192);
  const posenc::RoPE rope = posenc::RoPE(config).with_cache(8192);  // cos/sin table, built once

  posenc::AttentionOptions options;
  options.causal = true;  // by position value: query i sees key j iff k_pos[j] <= q_pos[i]
  const auto prefill = posenc::attention(q, k, v, positions, positions, rope, options);  // [6, 32, 128]

  // A decode step is the same call: the query at position 5 against the 6 cached keys.
  const posenc::TensorRef<const float, 3> last(q.data() + 5 * 32 * 128, {1, 32, 128});  // a view of row 5
  const auto step = posenc::attention(last, k, v, std::vector<posenc::Position>{5}, positions, rope, options);
  return std::abs(step(0, 0, 0) - prefill(5, 0, 0)) < 1e-5f ? 0 : 1;
}
