#pragma once
// The online softmax of the tiled attention (Milakov & Gimelshein 2018), one tile row at a time:
// the policy's score bias (key by key, by consecutive keys, or already in the scores), the mask,
// the running max and sum, computed in float where float is exact enough and in double where not.

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "posenc/attention/sequence.hpp"
#include "posenc/attention/tile_kernels.hpp"
#include "posenc/concepts.hpp"

#if defined(POSENC_HAS_VECTOR_KERNELS)

namespace posenc::detail {

/// Online-softmax bookkeeping of one query row (Milakov & Gimelshein 2018).
struct RowState {
  double max = -std::numeric_limits<double>::infinity();
  double sum = 0.0;
};

/// max of a tile row (Width values), in vectors.
template <Index Width, class T>
double tile_row_max(const T* row) {
  static_assert(Width % kFloatLanes == 0, "tile rows are whole vectors");
  using Vec = std::conditional_t<std::is_same_v<T, float>, FloatVec, simd::DoubleVec>;
  constexpr Index lanes = sizeof(Vec) / sizeof(T);
  Vec m = simd::load<Vec>(row);
  for (Index j = lanes; j < Width; j += lanes) m = simd::max(m, simd::load<Vec>(row + j));
  if constexpr (std::is_same_v<T, float>) {
    return simd::reduce_max(m);
  } else {
    double result = m[0];
    for (Index l = 1; l < lanes; ++l) result = std::max(result, m[l]);
    return result;
  }
}

/// Turns one tile row of scores (float, or double when a bias was added; masked entries -inf)
/// into weights exp(score - new max), updates the row's running max and sum, and returns the
/// factor that rescales the row's earlier output. Scores are shifted by the max in their own
/// precision, so only small numbers are rounded to float. `scores` hold logit - offset (offset 0
/// but for rows biased relative to a per-row constant, see weigh_tile_row); tile_max is the
/// largest logit itself.
template <Index Width, class T>
float softmax_tile_row(const T* scores, double tile_max, double offset, float* weights,
                       RowState& state) {  // may alias
  static_assert(Width % kFloatLanes == 0, "tile rows are whole vectors");
  using Vec = std::conditional_t<std::is_same_v<T, float>, FloatVec, simd::DoubleVec>;
  constexpr Index lanes = sizeof(Vec) / sizeof(T);
  const double new_max = std::max(state.max, tile_max);
  if (new_max == -std::numeric_limits<double>::infinity()) {  // nothing visible yet: weights 0
    std::fill(weights, weights + Width, 0.0f);
    return 1.0f;
  }
  // exp(old max - new max): 1 when the max stays (usual once the nearest keys are seen), 0 when
  // there was no old max; a one-lane vector exp avoids a libm call.
  const float correction =
      state.max == new_max ? 1.0f : simd::exp_nonpositive(FloatVec{} + static_cast<float>(state.max - new_max))[0];
  if constexpr (std::is_same_v<T, double>) {
    for (Index j = 0; j < Width; j += lanes) {
      simd::store(weights + j, __builtin_convertvector(simd::load<Vec>(scores + j) - (new_max - offset),
                                                       simd::HalfFloatVec));
    }
  }
  const float shift = std::is_same_v<T, double> ? 0.0f : static_cast<float>(new_max - offset);
  const float* shifted = std::is_same_v<T, double> ? weights : reinterpret_cast<const float*>(scores);
  FloatVec total{};
  for (Index j = 0; j < Width; j += kFloatLanes) {
    const FloatVec p = simd::exp_nonpositive(simd::load<FloatVec>(shifted + j) - shift);
    simd::store(weights + j, p);
    total += p;
  }
  state.sum = state.sum * correction + reduce_sum(total);
  state.max = new_max;
  return correction;
}

/// Largest |running max| at which float score rows are accurate enough for softmax (float
/// spacing 2e-6 at 16; the conformance tolerance is 2e-5).
inline constexpr float kFloatExactLogit = 16.0f;
/// Largest row constant (bias hooks' offset) the float rows are taken relative to. Past it the
/// logits' own rounding in double (2^-22 at 2^30) starts to show in FORMAT's reference, which
/// rounds bias + score as they are (a 1e20 table leaves no digit of the score: uniform weights),
/// so such rows are redone key by key in double, as the reference computes them.
inline constexpr double kLargestRowOffset = 1 << 30;

/// A tile row with the bias added key by key (weigh_tile_row): in float, and in double for rows
/// that need it.
template <Index Width>
struct BiasRows {
  float single[Width];
  double dual[Width];
};

/// The bias of a query tile by blocks of kScoreRows rows, each less its offset (tile_bias).
struct BlockBias {
  float rows[kPaddedQueryTile / kScoreRows][kBlockBiasLength];
  double offset[kPaddedQueryTile / kScoreRows];
};

/// How a tile row gets its score bias: key by key (add_bias_row), as keys at consecutive positions
/// (add_bias_row_consecutive), or already added to the scores (tile_bias), the row then holding
/// logit - offset.
struct RowBias {
  enum Form { kPerKey, kConsecutiveKeys, kInScores } form = kPerKey;
  double offset = 0.0;  // kInScores
};

/// The bias of a tile of query rows at consecutive positions q0, q0 + 1, ... (`rows` of them,
/// padding included) against kKeyTile keys at consecutive positions k0, k0 + 1, ..., for a bias
/// that depends on k - q only. In each block of kScoreRows rows, row r's bias is the slice
/// [kScoreRows - 1 - r, + kKeyTile) of one consecutive row: that of the block's last query against
/// kBlockBiasLength keys from k0. One hook call per row block instead of one per row (ALiBi and T5
/// prefill spent ~6 % of their time in per-row hooks); score_tile adds the slices as it stores the
/// scores. Per block, not per tile: each row's largest weights then stay near 0, where float is
/// finest (one row for a whole tile left some rows' largest ALiBi weights near -64 slope: errors
/// up to 1.7e-6 at 16 heads, against < 1e-6 with per-row offsets).
template <RelativeScoreBias P>
void tile_bias(const P& policy, Index head, Position q0, Position k0, Index rows, BlockBias& block) {
  for (Index r = 0; r < rows; r += kScoreRows) {
    float* bias = block.rows[r / kScoreRows];
    std::fill(bias, bias + kBlockBiasLength, 0.0f);
    block.offset[r / kScoreRows] =
        policy.add_bias_row_consecutive(head, q0 + r + kScoreRows - 1, k0, kBlockBiasLength, bias);
  }
}


/// Scores of one query row against one key tile (n real keys, the rest padding) to softmax
/// weights, in place: the policy's bias (unless tile_bias added it), the mask, the online
/// softmax. Keys at consecutive positions take the policy's consecutive hook, which adds the bias
/// less a per-row constant it returns (ALiBi: the bias of the tile's key nearest the query), so
/// the float row stays small at any distance; softmax is invariant under the shift. Otherwise the
/// bias is added in float while the row's running max stays small, and the row is redone in
/// double when it does not (every visible key far away, ALiBi biases in the millions), so large
/// positions lose no accuracy.
/// The constant of a consecutive or tile_bias row is taken over keys the row may not see (masked
/// keys, or a row block's other rows' keys). Where their biases lie far above those of the keys it
/// sees (a T5 table with a future bucket at +3000 and past ones at -3000), the row's running max
/// falls far below the constant, where float has lost the digits softmax needs: the row is then
/// redone key by key from its scores without bias, as it is when the constant exceeds
/// kLargestRowOffset. `rescore(row)` writes those scores for a kInScores row (they were never
/// stored).
/// The row may hold stale values where its keys are invisible (causal prefill skips the keys past
/// a row block's last query, see attend_query_tile): the mask overwrites them before anything
/// reads the row but the bias hooks, which only add to it.
template <Index Width, class P, class Rescore>
float weigh_tile_row(const P& policy, Index head, const SequenceView& seq, Position q, Index j0, Index n,
                     bool all_visible, RowBias bias, float* row, BiasRows<Width>& buffers, RowState& state,
                     Rescore&& rescore) {
  const auto mask = [&](auto* values, auto masked) {
    if (all_visible) return;
    for (Index j = 0; j < Width; ++j) {
      if (j >= n || !seq.visible(q, j0 + j)) values[j] = masked;
    }
  };
  if constexpr (P::kScoreBias) {
    // The row holds logit - offset, masked: its softmax step, unless the offset is huge or the
    // running max lies far below it (then false, the state untouched).
    const auto weigh_offset_row = [&](double offset, float& correction) {
      if (!(std::fabs(offset) <= kLargestRowOffset)) return false;  // NaN too
      const double largest = tile_row_max<Width>(row) + offset;
      const double new_max = std::max(state.max, largest);
      if (new_max != -std::numeric_limits<double>::infinity() && new_max - offset < -kFloatExactLogit) return false;
      correction = softmax_tile_row<Width>(row, largest, offset, row, state);
      return true;
    };
    float correction = 1.0f;
    if (bias.form == RowBias::kInScores) {
      mask(row, kMinusInfinity);
      if (weigh_offset_row(bias.offset, correction)) return correction;
      rescore(row);
    }
    if constexpr (ConsecutiveScoreBias<P>) {
      if (bias.form == RowBias::kConsecutiveKeys) {
        std::copy(row, row + Width, buffers.single);  // the scores without bias, should the row be redone
        const double offset = policy.add_bias_row_consecutive(head, q, seq.k_positions[j0], n, row);
        mask(row, kMinusInfinity);
        if (weigh_offset_row(offset, correction)) return correction;
        std::copy(buffers.single, buffers.single + Width, row);
      }
    }
    float* biased = buffers.single;
    std::copy(row, row + Width, biased);
    policy.add_bias_row(head, q, seq.k_positions + j0, n, biased);
    mask(biased, kMinusInfinity);
    const double tile_max = tile_row_max<Width>(biased);
    const double new_max = std::max(state.max, tile_max);
    if (std::fabs(new_max) > kFloatExactLogit && new_max != -std::numeric_limits<double>::infinity()) {
      double* precise = buffers.dual;
      std::copy(row, row + Width, precise);
      policy.add_bias_row(head, q, seq.k_positions + j0, n, precise);
      mask(precise, -std::numeric_limits<double>::infinity());
      return softmax_tile_row<Width>(precise, tile_row_max<Width>(precise), 0.0, row, state);
    }
    return softmax_tile_row<Width>(biased, tile_max, 0.0, row, state);
  } else {
    (void)policy, (void)head, (void)buffers, (void)bias, (void)rescore;
    mask(row, kMinusInfinity);
    return softmax_tile_row<Width>(row, tile_row_max<Width>(row), 0.0, row, state);
  }
}

}  // namespace posenc::detail

#endif  // POSENC_HAS_VECTOR_KERNELS
