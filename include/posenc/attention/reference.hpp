#pragma once
// Reference attention: per (sequence, head, query) the scores, a max-subtracted softmax and the
// weighted sum, all in double. Naive on purpose: the yardstick every other kernel is tested against.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "posenc/attention/checks.hpp"
#include "posenc/attention/options.hpp"
#include "posenc/concepts.hpp"

namespace posenc::detail {

/// Arguments validated by the caller (check_attention_inputs); `key_padding` may be null.
template <class P>
void reference_attention_unchecked(const AttentionShape& s, const float* q, const float* k, const float* v,
                                   const Position* q_positions, const Position* k_positions,
                                   const std::uint8_t* key_padding, const P& policy, const AttentionOptions& options,
                                   float* out) {
  const Index d = s.head_dim;
  const Index group = s.heads / s.kv_heads;  // HF repeat_kv: head h reads kv head h / group
  const double scale = options.scale.value_or(1.0 / std::sqrt(static_cast<double>(d)));

  std::vector<double> qd(q, q + s.batch * s.q_len * s.heads * d);
  std::vector<double> kd(k, k + s.batch * s.k_len * s.kv_heads * d);
  if constexpr (P::kQKRotation) {
    const auto rotation = policy.rotation(call_sequence_length(s, q_positions, k_positions));
    for (Index b = 0; b < s.batch; ++b) {
      policy.rotate_unchecked(qd.data() + b * s.q_len * s.heads * d, s.q_len, s.heads, q_positions + b * s.q_len,
                              rotation);
      if (detail::rotates_keys(policy)) {
        policy.rotate_unchecked(kd.data() + b * s.k_len * s.kv_heads * d, s.k_len, s.kv_heads,
                                k_positions + b * s.k_len, rotation);
      }
    }
  }

  std::vector<double> scores(static_cast<std::size_t>(s.k_len));
  std::vector<double> accumulator(static_cast<std::size_t>(d));
  for (Index b = 0; b < s.batch; ++b) {
    const Position* qp = q_positions + b * s.q_len;
    const Position* kp = k_positions + b * s.k_len;
    const std::uint8_t* padding = key_padding != nullptr ? key_padding + b * s.k_len : nullptr;
    for (Index i = 0; i < s.q_len; ++i) {
      for (Index h = 0; h < s.heads; ++h) {
        const Index kv_head = h / group;
        const double* q_row = qd.data() + ((b * s.q_len + i) * s.heads + h) * d;
        for (Index j = 0; j < s.k_len; ++j) {
          const double* k_row = kd.data() + ((b * s.k_len + j) * s.kv_heads + kv_head) * d;
          double dot = 0.0;
          for (Index c = 0; c < d; ++c) dot += q_row[c] * k_row[c];
          scores[static_cast<std::size_t>(j)] = scale * dot;
        }
        if constexpr (P::kScoreBias) policy.add_bias_row(h, qp[i], kp, s.k_len, scores.data());

        const auto visible = [&](Index j) {
          return (!options.causal || kp[j] <= qp[i]) && (padding == nullptr || padding[j] == 0);
        };
        double max_score = -std::numeric_limits<double>::infinity();
        for (Index j = 0; j < s.k_len; ++j) {
          if (visible(j)) max_score = std::max(max_score, scores[static_cast<std::size_t>(j)]);
        }
        float* o = out + ((b * s.q_len + i) * s.heads + h) * d;
        if (max_score == -std::numeric_limits<double>::infinity()) {  // no visible key: zeros, not NaN
          std::fill(o, o + d, 0.0f);
          continue;
        }
        std::fill(accumulator.begin(), accumulator.end(), 0.0);
        double denominator = 0.0;
        for (Index j = 0; j < s.k_len; ++j) {
          if (!visible(j)) continue;
          const double weight = std::exp(scores[static_cast<std::size_t>(j)] - max_score);
          denominator += weight;
          const float* v_row = v + ((b * s.k_len + j) * s.kv_heads + kv_head) * d;
          for (Index c = 0; c < d; ++c) accumulator[static_cast<std::size_t>(c)] += weight * v_row[c];
        }
        for (Index c = 0; c < d; ++c) o[c] = static_cast<float>(accumulator[static_cast<std::size_t>(c)] / denominator);
      }
    }
  }
}

}  // namespace posenc::detail
