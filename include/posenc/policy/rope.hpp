#pragma once
// Rotary position embedding (Su et al. 2021, "RoFormer"): each pair of query/key dims is rotated
// by the angle position * inv_freq[i], so that <R(m)q, R(n)k> depends on m - n only.
//
// Layouts: kHalf pairs (x[i], x[i + r/2]) as GPT-NeoX and HF LLaMA's `rotate_half`;
//          kInterleaved pairs (x[2i], x[2i+1]) as GPT-J, RoFormer and Meta's complex form.
// Partial rotary (GPT-NeoX rotary_pct, Phi): dims rotary_dim .. head_dim-1 pass unchanged.
// Angles are formed and their cos/sin taken in double (positions reach 1e7), then stored as float.

#include <algorithm>
#include <memory>
#include <optional>
#include <type_traits>
#include <span>
#include <string_view>
#include <vector>

#include "posenc/concepts.hpp"
#include "posenc/kernel/dispatch.hpp"
#include "posenc/kernel/rotary_rows.hpp"
#include "posenc/policy/rope_scaling.hpp"
#include "posenc/positions.hpp"
#include "posenc/tensor.hpp"

namespace posenc {

enum class RopeLayout { kHalf, kInterleaved };

/// "half" | "interleaved"; throws InvalidParameter otherwise.
inline RopeLayout parse_rope_layout(std::string_view name) {
  if (name == "half") return RopeLayout::kHalf;
  if (name == "interleaved") return RopeLayout::kInterleaved;
  throw InvalidParameter(detail::concat("layout must be \"half\" or \"interleaved\", got \"", name, "\""));
}

/// Precomputed cos/sin rows (attention factor folded in) for positions [0, size()): see
/// RoPE::cache(). Immutable once built; share it between threads and calls.
class RotaryCache {
 public:
  Position size() const { return size_; }
  Index pairs() const { return pairs_; }
  const float* cos_row(Position p) const { return cos_.data() + p * pairs_; }
  const float* sin_row(Position p) const { return sin_.data() + p * pairs_; }
  /// The frequencies the table was built with.
  const RotaryFrequencies& frequencies() const { return frequencies_; }

 private:
  friend class RoPE;

  RotaryFrequencies frequencies_;
  Index pairs_ = 0;
  Position size_ = 0;
  std::vector<float> cos_;  // [size, pairs]
  std::vector<float> sin_;  // [size, pairs]
};

struct RopeConfig {
  Index head_dim = 0;
  std::optional<Index> rotary_dim = std::nullopt;  ///< unset: the whole head (rotary_dim = head_dim)
  double base = 10000.0;
  RopeLayout layout = RopeLayout::kHalf;
  RopeScaling scaling = RopeScaling::none();
};

class RoPE : public EncodingBase {
 public:
  static constexpr bool kQKRotation = true;
  using Rotation = RotaryFrequencies;

  explicit RoPE(RopeConfig config) : config_(std::move(config)) {
    const Index d = config_.head_dim;
    const Index r = config_.rotary_dim.value_or(d);
    config_.rotary_dim = r;
    detail::require<InvalidParameter>(d >= 1, "head_dim must be >= 1, got ", d);
    detail::require<InvalidParameter>(r >= 2 && r % 2 == 0 && r <= d,
                                      "rotary_dim must be even with 2 <= rotary_dim <= head_dim = ", d, ", got ", r,
                                      " (leave it unset for the whole head)");
    detail::require<InvalidParameter>(config_.base > 1.0 && std::isfinite(config_.base), "base must be > 1, got ",
                                      config_.base);
    detail::validate_rope_scaling(config_.scaling, r);
  }

  const RopeConfig& config() const { return config_; }
  Index head_dim() const { return config_.head_dim; }
  Index rotary_dim() const { return *config_.rotary_dim; }
  RopeLayout layout() const { return config_.layout; }

  /// Frequencies for a call whose largest position is seq_len - 1 (HF dynamic_rope_update).
  RotaryFrequencies rotation(Position seq_len) const {
    return detail::rotary_frequencies(config_.scaling, config_.base, rotary_dim(), seq_len);
  }

  /// Rotates x [tokens, heads, head_dim] in place; seq_len = max(positions) + 1.
  void apply(TensorRef<float, 3> x, PositionsRef positions) const { apply_into(x, positions, x); }

  /// Rotates x [tokens, heads, head_dim] in place with the frequencies of a larger call (e.g. the
  /// same `rotation` for queries and keys, or for every sequence of a batch).
  void apply(TensorRef<float, 3> x, PositionsRef positions, const RotaryFrequencies& frequencies) const {
    apply_into(x, positions, frequencies, x);
  }

  /// Out-of-place forms of apply(): out = x rotated, in one pass (x is read once, out written
  /// once); x is left as it is. out has x's shape and is either x itself (then this is apply())
  /// or disjoint from it. E.g. new keys rotated straight into a KV cache's slots.
  void apply_into(TensorRef<const float, 3> x, PositionsRef positions, TensorRef<float, 3> out) const {
    check_arguments(x, positions, out);
    const auto span = detail::as_span(positions);
    rotate_impl(x.data(), x.dim(1) * head_dim(), out.data(), x.dim(0), x.dim(1), positions.data(),
                rotation(detail::sequence_length(span)));
  }
  void apply_into(TensorRef<const float, 3> x, PositionsRef positions, const RotaryFrequencies& frequencies,
                  TensorRef<float, 3> out) const {
    check_arguments(x, positions, out);
    check_frequencies(frequencies);
    rotate_impl(x.data(), x.dim(1) * head_dim(), out.data(), x.dim(0), x.dim(1), positions.data(), frequencies);
  }
  void apply_into(TensorRef<const float, 3> x, PositionsRef positions, const RotaryCache& cache,
                  TensorRef<float, 3> out) const {
    check_arguments(x, positions, out);
    check_cache(cache, positions);
    rotate_rows(
        x.data(), x.dim(1) * head_dim(), out.data(), x.dim(0), x.dim(1),
        [&](Index t, const float*& cos, const float*& sin) {
          cos = cache.cos_row(positions.data()[t]);
          sin = cache.sin_row(positions.data()[t]);
        });
  }

  /// Out-of-place form of apply(): returns the rotated copy of x.
  Tensor<float, 3> rotate(TensorRef<const float, 3> x, PositionsRef positions) const {
    Tensor<float, 3> y(x.dim(0), x.dim(1), x.dim(2));
    apply_into(x, positions, y);
    return y;
  }

  /// A cos/sin table for positions [0, size) with the given frequencies (default: those of
  /// seq_len = size), built once and reused by apply(x, positions, cache), e.g. across the layers
  /// and decode steps of a model. Memory: 2 * size * rotary_dim/2 floats.
  RotaryCache cache(Position size) const { return cache(size, rotation(size)); }
  RotaryCache cache(Position size, const RotaryFrequencies& frequencies) const {
    detail::require<PositionOutOfRange>(size >= 1 && size <= kMaxPosition + 1, "cache size = ", size,
                                        " must lie in [1, 2^31]");
    check_frequencies(frequencies);
    RotaryCache table;
    table.frequencies_ = frequencies;
    table.pairs_ = rotary_dim() / 2;
    table.size_ = size;
    // size_t factors and assign(): with resize(size * pairs) in Index, GCC 12 warns
    // (-Wstringop-overflow, an error under -Werror) that the count may be negative.
    const std::size_t entries = static_cast<std::size_t>(size) * static_cast<std::size_t>(table.pairs_);
    table.cos_.assign(entries, 0.0f);
    table.sin_.assign(entries, 0.0f);
    const double max_inv_freq = max_frequency(frequencies);
    for (Position p = 0; p < size; ++p) {
      kernel::rotary_cos_sin(p, frequencies.inv_freq.data(), max_inv_freq, frequencies.attention_factor, table.pairs_,
                             table.cos_.data() + p * table.pairs_, table.sin_.data() + p * table.pairs_);
    }
    return table;
  }

  /// Rotates x [tokens, heads, head_dim] in place with cos/sin read from `cache`; every position
  /// must be < cache.size().
  void apply(TensorRef<float, 3> x, PositionsRef positions, const RotaryCache& cache) const {
    apply_into(x, positions, cache, x);
  }

  /// A copy of this policy carrying a cos/sin table for positions [0, size) (frequencies of
  /// seq_len = size). Attention and apply() read it whenever a call's frequencies equal the
  /// table's (always for none/linear/ntk/yarn/llama3; for dynamic and longrope while seq_len
  /// stays on the same side of original_max_position_embeddings), and compute other angles on the
  /// fly. Build it once per model, e.g. for the KV-cache capacity, and reuse it for every decode step.
  RoPE with_cache(Position size) const {
    RoPE copy = *this;
    copy.cache_ = std::make_shared<const RotaryCache>(cache(size));
    return copy;
  }
  /// The table attached by with_cache(), or null.
  const RotaryCache* attached_cache() const { return cache_.get(); }

  /// A copy of this policy for attention over a KV cache that holds keys already rotated:
  /// attention then rotates only the queries and reads the keys as they are. This is how decoders
  /// run (HF transformers caches key_states after apply_rotary_pos_emb; llama.cpp the same):
  /// rotate each new key once, with apply(k_new, positions) and the same frequencies, append it
  /// to the cache, and attend. A decode step then streams the cache without rotating it again.
  RoPE for_rotated_key_cache() const {
    RoPE copy = *this;
    copy.rotates_keys_ = false;
    return copy;
  }
  /// False for a copy made by for_rotated_key_cache(): attention leaves the keys as given.
  bool rotates_keys() const { return rotates_keys_; }

  // --- query/key-rotation hook ---
  /// Rotates x [tokens, heads, head_dim] in place, one cos/sin row per token shared by its heads:
  /// read from the attached table when it matches, else computed on the fly (no table needed: a
  /// 1e6-token context costs no memory; float rows of consecutive positions by the angle-addition
  /// recurrence of kernel::RotaryRows).
  template <class T>
  void rotate_unchecked(T* x, Index tokens, Index heads, const Position* positions,
                        const RotaryFrequencies& frequencies) const {
    rotate_impl(x, heads * head_dim(), x, tokens, heads, positions, frequencies);
  }
  /// Out of place and gathering: token t's heads read at in + t * in_token_stride, rotated into
  /// out [tokens, heads, head_dim], which overlaps no row read. Attention rotates its query and
  /// key tiles this way as it copies them out of the caller's tensors (one pass, not a copy and
  /// then a rotation in place).
  template <class T>
  void rotate_unchecked(const T* in, Index in_token_stride, T* out, Index tokens, Index heads,
                        const Position* positions, const RotaryFrequencies& frequencies) const {
    rotate_impl(in, in_token_stride, out, tokens, heads, positions, frequencies);
  }

 private:
  // rotate_unchecked from `in` (token t's heads at in + t * in_token_stride) to `out` [tokens,
  // heads, head_dim] (the same rows, or disjoint ones).
  template <class T>
  void rotate_impl(const T* in, Index in_token_stride, T* out, Index tokens, Index heads, const Position* positions,
                   const RotaryFrequencies& frequencies) const {
    const Index pairs = rotary_dim() / 2;
    const double max_inv_freq = max_frequency(frequencies);
    const RotaryCache* table = nullptr;
    if constexpr (std::is_same_v<T, float>) {
      if (cache_ && cache_->frequencies_.inv_freq == frequencies.inv_freq &&
          cache_->frequencies_.attention_factor == frequencies.attention_factor) {
        table = cache_.get();
      }
    }
    std::vector<T> cos_row(static_cast<std::size_t>(pairs));
    std::vector<T> sin_row(static_cast<std::size_t>(pairs));
    const auto direct_row = [&](Position p) {
      kernel::rotary_cos_sin(p, frequencies.inv_freq.data(), max_inv_freq, frequencies.attention_factor, pairs,
                             cos_row.data(), sin_row.data());
    };
    if constexpr (std::is_same_v<T, float>) {
      kernel::RotaryRows rows(frequencies.inv_freq.data(), max_inv_freq, frequencies.attention_factor, pairs);
      const auto in_table = [&](Index t) { return table != nullptr && positions[t] < table->size(); };
      rotate_rows(
          in, in_token_stride, out, tokens, heads,
          [&](Index t, const float*& cos, const float*& sin) {
            if (in_table(t)) {
              cos = table->cos_row(positions[t]);
              sin = table->sin_row(positions[t]);
              return;
            }
            if (tokens == 1) {
              direct_row(positions[t]);  // nothing to step to (a decode query row): no generator state
            } else {
              rows.row(positions[t], cos_row.data(), sin_row.data());
            }
            cos = cos_row.data();
            sin = sin_row.data();
          });
    } else {  // double: the reference path computes every row directly
      rotate_rows(
          in, in_token_stride, out, tokens, heads,
          [&](Index t, const T*& cos, const T*& sin) {
            direct_row(positions[t]);
            cos = cos_row.data();
            sin = sin_row.data();
          });
    }
  }

  // For each token t: cos_sin_of(t, cos, sin) points cos/sin at its row, then every head of the
  // token is rotated from in + t * in_token_stride into out + t * heads * head_dim (in place when
  // they are the same; out of place, the dims past rotary_dim are copied).
  template <class T, class CosSinOf>
  void rotate_rows(const T* in, Index in_token_stride, T* out, Index tokens, Index heads, CosSinOf&& cos_sin_of) const {
    const Index pairs = rotary_dim() / 2;
    const Index d = head_dim();
    const Index pass_through = d - 2 * pairs;
    const bool in_place = in == out;
    const auto each_token = [&](auto rotate_in_place, auto rotate_into) {
      for (Index t = 0; t < tokens; ++t) {
        const T* cos = nullptr;
        const T* sin = nullptr;
        cos_sin_of(t, cos, sin);
        const T* token_in = in + t * in_token_stride;
        T* token_out = out + t * heads * d;
        if (in_place) {
          rotate_in_place(token_out, heads, d, cos, sin, pairs);
          continue;
        }
        rotate_into(token_in, token_out, heads, d, cos, sin, pairs);
        for (Index h = 0; pass_through > 0 && h < heads; ++h) {
          std::copy(token_in + h * d + 2 * pairs, token_in + (h + 1) * d, token_out + h * d + 2 * pairs);
        }
      }
    };
    const bool half = layout() == RopeLayout::kHalf;
    const auto rotate_half = [](auto... args) { kernel::rotate_half_heads(args...); };
    const auto rotate_interleaved = [](auto... args) { kernel::rotate_interleaved_heads(args...); };
    if constexpr (std::is_same_v<T, float>) {
      // A large output bypasses the caches (kernel::streams_output); in place every line is read anyway.
      if (!in_place && kernel::streams_output(out, tokens * heads * d, d)) {
        if (half) {
          each_token(rotate_half, [](auto... args) { kernel::rotate_half_heads_streaming(args...); });
        } else {
          each_token(rotate_interleaved, [](auto... args) { kernel::rotate_interleaved_heads_streaming(args...); });
        }
        kernel::stream_fence();
        return;
      }
    }
    if (half) {
      each_token(rotate_half, rotate_half);
    } else {
      each_token(rotate_interleaved, rotate_interleaved);
    }
  }

  static double max_frequency(const RotaryFrequencies& frequencies) {
    return frequencies.inv_freq.empty() ? 0.0 : *std::max_element(frequencies.inv_freq.begin(), frequencies.inv_freq.end());
  }

  void check_frequencies(const RotaryFrequencies& frequencies) const {
    detail::require<InvalidParameter>(frequencies.inv_freq.size() == static_cast<std::size_t>(rotary_dim() / 2),
                                      "frequencies must hold rotary_dim/2 = ", rotary_dim() / 2, " entries, got ",
                                      frequencies.inv_freq.size());
  }

  void check_arguments(const TensorRef<const float, 3>& x, PositionsRef positions) const {
    detail::require_shape(x, "x", {-1, -1, head_dim()}, "[tokens, heads, head_dim]");
    detail::require<ShapeMismatch>(positions.dim(0) == x.dim(0), "positions has ", positions.dim(0),
                                   " entries, x has ", x.dim(0), " tokens");
    detail::check_positions(detail::as_span(positions), "positions");
  }
  void check_arguments(const TensorRef<const float, 3>& x, PositionsRef positions, const TensorRef<float, 3>& out) const {
    check_arguments(x, positions);
    detail::require_shape(out, "out", x.dims(), "x's shape");
    detail::require_disjoint(out, "out", x, "x", /*allow_same=*/true);
  }

  void check_cache(const RotaryCache& cache, PositionsRef positions) const {
    detail::require<InvalidParameter>(cache.pairs() == rotary_dim() / 2, "cache holds ", cache.pairs(),
                                      " pairs per position, rotary_dim/2 = ", rotary_dim() / 2);
    for (Index t = 0; t < positions.dim(0); ++t) {
      detail::require<PositionOutOfRange>(positions.data()[t] < cache.size(), "positions[", t, "] = ",
                                          positions.data()[t], " is past the cache (size ", cache.size(), ")");
    }
  }

  RopeConfig config_;
  std::shared_ptr<const RotaryCache> cache_;
  bool rotates_keys_ = true;
};

}  // namespace posenc
