// Compile-time checks of the hook concepts (concepts.hpp), including broken policies that must be
// rejected, and a user-defined policy that plugs into attention through the score-bias hook.

#include <stdexcept>

#include "test_util.hpp"

using namespace testutil;
using posenc::InputEmbedding;
using posenc::PositionalEncoding;
using posenc::QKRotation;
using posenc::ScoreBias;

namespace {

// --- broken policies: each declares a hook it does not (fully) implement -----------------------

struct BiasWithoutRow : posenc::EncodingBase {
  static constexpr bool kScoreBias = true;
  void check_heads(Index) const {}
};

struct BiasWithoutCheck : posenc::EncodingBase {
  static constexpr bool kScoreBias = true;
  template <class T>
  void add_bias_row(Index, Position, const Position*, Index, T*) const {}
};

struct BiasFloatOnly : posenc::EncodingBase {  // no double row (the reference kernel needs it)
  static constexpr bool kScoreBias = true;
  void check_heads(Index) const {}
  void add_bias_row(Index, Position, const Position*, Index, float*) const {}
};

struct RotationWithoutRotate : posenc::EncodingBase {
  static constexpr bool kQKRotation = true;
  using Rotation = int;
  Index head_dim() const { return 4; }
  Rotation rotation(Position) const { return 0; }
};

struct RotationWithoutType : posenc::EncodingBase {
  static constexpr bool kQKRotation = true;
  Index head_dim() const { return 4; }
  int rotation(Position) const { return 0; }
  template <class T>
  void rotate_unchecked(T*, Index, Index, const Position*, int) const {}
};

struct EmbeddingWithoutAdd : posenc::EncodingBase {
  static constexpr bool kInputEmbedding = true;
  Index embedding_dim() const { return 4; }
  void check_embedding_positions(std::span<const Position>) const {}
};

/// Implements a complete score-bias hook but does not derive from EncodingBase.
/// (The flags are never read: the concepts reject it on the base class first.)
struct NotDerived {
  [[maybe_unused]] static constexpr bool kInputEmbedding = false;
  [[maybe_unused]] static constexpr bool kQKRotation = false;
  [[maybe_unused]] static constexpr bool kScoreBias = true;
  void check_heads(Index) const {}
  template <class T>
  void add_bias_row(Index, Position, const Position*, Index, T*) const {}
};

// --- a complete user-defined policy --------------------------------------------------------------

/// bias_h(q, k) = -(h + 1) * 0.25 * sqrt(|q - k|): a toy decay, unlike any built-in policy.
struct SqrtDecay : posenc::EncodingBase {
  static constexpr bool kScoreBias = true;
  Index heads = 0;
  static double value(Index h, Position q, Position k) {
    return -(static_cast<double>(h) + 1.0) * 0.25 * std::sqrt(static_cast<double>(q > k ? q - k : k - q));
  }
  void check_heads(Index n) const {
    if (n != heads) throw posenc::InvalidParameter("SqrtDecay: wrong number of heads");
  }
  template <class T>
  void add_bias_row(Index head, Position q_position, const Position* k_positions, Index n, T* row) const {
    for (Index j = 0; j < n; ++j) row[j] += static_cast<T>(value(head, q_position, k_positions[j]));
  }
};

/// SqrtDecay with the optional fast forms: a consecutive row (less the bias of its first key), and
/// the declaration that the bias depends on k - q only, so prefill may take the bias of a block of
/// queries from one row.
struct SqrtDecayRelative : SqrtDecay {
  static constexpr bool kRelativeScoreBias = true;
  double add_bias_row_consecutive(Index head, Position q_position, Position k_first, Index n, float* row) const {
    // Hooks may rely on positions in [0, kMaxPosition], also for the rows attention asks for itself.
    if (q_position > posenc::kMaxPosition || k_first + n - 1 > posenc::kMaxPosition) {
      throw std::logic_error("SqrtDecayRelative: hook called past kMaxPosition");
    }
    const double offset = value(head, q_position, k_first);
    for (Index j = 0; j < n; ++j) row[j] += static_cast<float>(value(head, q_position, k_first + j) - offset);
    return offset;
  }
};

/// A consecutive row of a bias that depends on the positions themselves, not on k - q (nor on
/// k - q plus a function of q alone, which softmax would not see): bias_h(q, k) = -1e-5 (h + 1) q k.
/// Not relative, so attention must not share a row's bias between queries.
struct AbsoluteProduct : posenc::EncodingBase {
  static constexpr bool kScoreBias = true;
  static double value(Index h, Position q, Position k) {
    return -1e-5 * (static_cast<double>(h) + 1.0) * static_cast<double>(q) * static_cast<double>(k);
  }
  void check_heads(Index) const {}
  template <class T>
  void add_bias_row(Index head, Position q_position, const Position* k_positions, Index n, T* row) const {
    for (Index j = 0; j < n; ++j) row[j] += static_cast<T>(value(head, q_position, k_positions[j]));
  }
  double add_bias_row_consecutive(Index head, Position q_position, Position k_first, Index n, float* row) const {
    for (Index j = 0; j < n; ++j) row[j] += static_cast<float>(value(head, q_position, k_first + j));
    return 0.0;
  }
};

/// ALiBi with its score bias switched off: not a relative score bias any more.
struct ALiBiSwitchedOff : posenc::ALiBi {
  using ALiBi::ALiBi;
  static constexpr bool kScoreBias = false;
};

/// A user-defined input embedding: x[t, c] += 0.01 * c * pos_t.
struct RampEmbedding : posenc::EncodingBase {
  static constexpr bool kInputEmbedding = true;
  Index dim = 0;
  Index embedding_dim() const { return dim; }
  void check_embedding_positions(std::span<const Position> positions) const {
    for (Position p : positions) {
      if (p > 1000) throw posenc::PositionOutOfRange("RampEmbedding: positions must be <= 1000");
    }
  }
  void add_embedding_unchecked(float* x, std::span<const Position> positions) const {
    for (std::size_t t = 0; t < positions.size(); ++t) {
      for (Index c = 0; c < dim; ++c) {
        x[static_cast<Index>(t) * dim + c] += 0.01f * static_cast<float>(c) * static_cast<float>(positions[t]);
      }
    }
  }
};

}  // namespace

TEST_CASE("every built-in policy satisfies PositionalEncoding and exactly its hook concepts", "[concepts]") {
  STATIC_REQUIRE(PositionalEncoding<posenc::NoPosition>);
  STATIC_REQUIRE_FALSE(InputEmbedding<posenc::NoPosition>);
  STATIC_REQUIRE_FALSE(QKRotation<posenc::NoPosition>);
  STATIC_REQUIRE_FALSE(ScoreBias<posenc::NoPosition>);

  STATIC_REQUIRE(PositionalEncoding<posenc::Sinusoidal>);
  STATIC_REQUIRE(InputEmbedding<posenc::Sinusoidal>);
  STATIC_REQUIRE_FALSE(QKRotation<posenc::Sinusoidal>);
  STATIC_REQUIRE_FALSE(ScoreBias<posenc::Sinusoidal>);
  STATIC_REQUIRE(posenc::Sinusoidal::kInputEmbedding);

  STATIC_REQUIRE(PositionalEncoding<posenc::LearnedAbsolute>);
  STATIC_REQUIRE(InputEmbedding<posenc::LearnedAbsolute>);
  STATIC_REQUIRE_FALSE(QKRotation<posenc::LearnedAbsolute>);
  STATIC_REQUIRE_FALSE(ScoreBias<posenc::LearnedAbsolute>);

  STATIC_REQUIRE(PositionalEncoding<posenc::RoPE>);
  STATIC_REQUIRE(QKRotation<posenc::RoPE>);
  STATIC_REQUIRE_FALSE(InputEmbedding<posenc::RoPE>);
  STATIC_REQUIRE_FALSE(ScoreBias<posenc::RoPE>);
  STATIC_REQUIRE(posenc::RoPE::kQKRotation);
  STATIC_REQUIRE_FALSE(posenc::RoPE::kScoreBias);

  STATIC_REQUIRE(PositionalEncoding<posenc::ALiBi>);
  STATIC_REQUIRE(ScoreBias<posenc::ALiBi>);
  STATIC_REQUIRE_FALSE(InputEmbedding<posenc::ALiBi>);
  STATIC_REQUIRE_FALSE(QKRotation<posenc::ALiBi>);

  STATIC_REQUIRE(PositionalEncoding<posenc::RelativeBias>);
  STATIC_REQUIRE(ScoreBias<posenc::RelativeBias>);
  STATIC_REQUIRE_FALSE(InputEmbedding<posenc::RelativeBias>);
  STATIC_REQUIRE_FALSE(QKRotation<posenc::RelativeBias>);

  // Policies are plain values: copyable, and (RoPE's frequencies) shareable between calls.
  STATIC_REQUIRE(std::is_copy_constructible_v<posenc::RoPE>);
  STATIC_REQUIRE(std::is_copy_constructible_v<posenc::RelativeBias>);
  STATIC_REQUIRE(std::is_copy_constructible_v<posenc::LearnedAbsolute>);
}

TEST_CASE("broken policies do not satisfy PositionalEncoding", "[concepts]") {
  STATIC_REQUIRE_FALSE(ScoreBias<BiasWithoutRow>);
  STATIC_REQUIRE_FALSE(PositionalEncoding<BiasWithoutRow>);
  STATIC_REQUIRE_FALSE(ScoreBias<BiasWithoutCheck>);
  STATIC_REQUIRE_FALSE(PositionalEncoding<BiasWithoutCheck>);
  STATIC_REQUIRE_FALSE(ScoreBias<BiasFloatOnly>);
  STATIC_REQUIRE_FALSE(PositionalEncoding<BiasFloatOnly>);
  STATIC_REQUIRE_FALSE(QKRotation<RotationWithoutRotate>);
  STATIC_REQUIRE_FALSE(PositionalEncoding<RotationWithoutRotate>);
  STATIC_REQUIRE_FALSE(QKRotation<RotationWithoutType>);
  STATIC_REQUIRE_FALSE(PositionalEncoding<RotationWithoutType>);
  STATIC_REQUIRE_FALSE(InputEmbedding<EmbeddingWithoutAdd>);
  STATIC_REQUIRE_FALSE(PositionalEncoding<EmbeddingWithoutAdd>);
  // The hook alone is not enough: a policy must derive from EncodingBase.
  STATIC_REQUIRE(ScoreBias<NotDerived>);
  STATIC_REQUIRE_FALSE(PositionalEncoding<NotDerived>);
  STATIC_REQUIRE_FALSE(PositionalEncoding<int>);
  // The user-defined policies below are complete.
  STATIC_REQUIRE(PositionalEncoding<SqrtDecay>);
  STATIC_REQUIRE(ScoreBias<SqrtDecay>);
  STATIC_REQUIRE(PositionalEncoding<RampEmbedding>);
  STATIC_REQUIRE(InputEmbedding<RampEmbedding>);
  // The optional fast forms of the score bias.
  STATIC_REQUIRE(posenc::RelativeScoreBias<posenc::ALiBi>);
  STATIC_REQUIRE(posenc::RelativeScoreBias<posenc::RelativeBias>);
  STATIC_REQUIRE(posenc::RelativeScoreBias<SqrtDecayRelative>);
  STATIC_REQUIRE_FALSE(posenc::ConsecutiveScoreBias<SqrtDecay>);
  STATIC_REQUIRE(posenc::ConsecutiveScoreBias<AbsoluteProduct>);
  STATIC_REQUIRE_FALSE(posenc::RelativeScoreBias<AbsoluteProduct>);
  STATIC_REQUIRE_FALSE(posenc::RelativeScoreBias<ALiBiSwitchedOff>);
}

TEST_CASE("a user-defined score-bias policy works in attention like the built-in ones", "[concepts][attention]") {
  std::mt19937 rng(81);
  const Index heads = 3, d = 5;
  SqrtDecay decay;
  decay.heads = heads;
  RefEncoding ref;
  ref.name = "sqrt_decay";
  ref.bias = &SqrtDecay::value;
  for (const Index lq : {Index{2}, Index{20}}) {  // both attention schedules
    const FTensor<3> q = random_tensor<3>(rng, {lq, heads, d});
    const FTensor<3> k = random_tensor<3>(rng, {30, heads, d});
    const FTensor<3> v = random_tensor<3>(rng, {30, heads, d});
    const std::vector<Position> kp = iota_positions(30, 1000);
    const std::vector<Position> qp = iota_positions(lq, 1030 - lq);
    for (const auto kernel : kKernels) {
      INFO("kernel " << kernel_name(kernel) << ", lq " << lq);
      check_close(posenc::attention(q, k, v, qp, kp, decay, attention_options(true, std::nullopt, kernel)),
                  reference_attention(ref, q, k, v, qp, kp, true, 1.0 / std::sqrt(5.0)), 2e-5, 2e-5);
    }
  }
  // Its own argument check runs at the boundary.
  decay.heads = 2;
  const FTensor<3> q = random_tensor<3>(rng, {1, heads, d});
  CHECK_THROWS_AS(posenc::attention(q, q, q, std::vector<Position>{0}, std::vector<Position>{0}, decay),
                  posenc::InvalidParameter);
}

TEST_CASE("user-defined consecutive score biases, relative or not, give the naive attention's results",
          "[concepts][attention]") {
  std::mt19937 rng(83);
  const Index heads = 2, d = 8, lk = 150;
  SqrtDecayRelative relative;
  relative.heads = heads;
  RefEncoding relative_ref;
  relative_ref.name = "sqrt_decay_relative";
  relative_ref.bias = &SqrtDecayRelative::value;
  RefEncoding absolute_ref;
  absolute_ref.name = "absolute_product";
  absolute_ref.bias = &AbsoluteProduct::value;
  const FTensor<3> k = random_tensor<3>(rng, {lk, heads, d});
  const FTensor<3> v = random_tensor<3>(rng, {lk, heads, d});
  // Keys from 500, and keys ending at the largest position (the hooks never see one past it).
  for (const Position k_first : {Position{500}, posenc::kMaxPosition - lk + 1}) {
    const std::vector<Position> kp = iota_positions(lk, k_first);
    for (const Index lq : {Index{20}, Index{70}}) {  // one query tile, and a full one plus a partial one
      const FTensor<3> q = random_tensor<3>(rng, {lq, heads, d});
      const std::vector<Position> qp = iota_positions(lq, k_first + lk - lq);
      for (const bool causal : {false, true}) {
        INFO("k_first " << k_first << ", lq " << lq << ", causal " << causal);
        const auto options = attention_options(causal);
        const double scale = 1.0 / std::sqrt(static_cast<double>(d));
        check_close(posenc::attention(q, k, v, qp, kp, relative, options),
                    reference_attention(relative_ref, q, k, v, qp, kp, causal, scale), 2e-5, 2e-5);
        if (k_first == 500) {  // (its float rows of q k are meant for small positions)
          check_close(posenc::attention(q, k, v, qp, kp, AbsoluteProduct{}, options),
                      reference_attention(absolute_ref, q, k, v, qp, kp, causal, scale), 2e-5, 2e-5);
        }
      }
    }
  }
}

TEST_CASE("a user-defined input embedding works in mha", "[concepts][mha]") {
  std::mt19937 rng(82);
  const Index l = 3, d_model = 4;
  RampEmbedding ramp;
  ramp.dim = d_model;
  const FTensor<2> x = random_tensor<2>(rng, {l, d_model});
  FTensor<2> identity(d_model, d_model);
  identity.setZero();
  for (Index i = 0; i < d_model; ++i) identity(i, i) = 1.0f;
  const std::vector<Position> positions = {0, 10, 20};
  // With identity projections and scale 0, every output row is the mean of the embedded rows.
  const FTensor<2> y = posenc::multi_head_attention(x, identity, identity, identity, identity, positions, 2, ramp,
                                                    attention_options(false, 0.0));
  for (Index c = 0; c < d_model; ++c) {
    double mean = 0.0;
    for (Index t = 0; t < l; ++t) {
      mean +=
          (x(t, c) + 0.01 * static_cast<double>(c) * static_cast<double>(positions[static_cast<std::size_t>(t)])) / 3.0;
    }
    for (Index t = 0; t < l; ++t) CHECK(y(t, c) == Approx(mean).margin(1e-6));
  }
  CHECK_THROWS_AS(posenc::multi_head_attention(x, identity, identity, identity, identity,
                                               std::vector<Position>{0, 1, 1001}, 2, ramp),
                  posenc::PositionOutOfRange);
}
