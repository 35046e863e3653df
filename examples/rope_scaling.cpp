// rope_scaling [head_dim] [base] [original_context] [target_context]: RoPE scalings side by side.
//
// For porters checking a RoPE implementation (HF `rope_scaling`, vLLM, llama.cpp) against posenc:
// per pair index i, the wavelength 2 pi / inv_freq[i] in tokens under every scaling type, and each
// type's attention factor (the multiplier HF applies to cos and sin, so logits scale by its square).
// A pair whose wavelength exceeds the context never completes a turn; the scalings differ in which
// pairs they stretch, and by how much.
//
//   none      inv_freq[i] = base^(-2i/d)
//   linear    position interpolation: every wavelength x factor
//   ntk       static NTK-aware: base' = base * factor^(d/(d-2))
//   dynamic   NTK with a base that grows with seq_len (here seq_len = target_context)
//   yarn      high frequencies kept, low ones interpolated, a ramp between; attention factor > 1
//   llama3    Llama 3.1 bands: wavelength < orig/4 kept, > orig/1 x8, smooth in between
//   longrope  per-pair factors (long_factor since seq_len > orig); these ones are illustrative
//
// factor = target_context / original_context for all but llama3 (factor 8, low 1, high 4, as
// Llama 3.1 ships). Defaults: head_dim 128, base 500000, original 8192, target 32768.
//
// Run: ./build/bin/rope_scaling                 ./build/bin/rope_scaling 128 10000 4096 16384

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <numbers>
#include <stdexcept>
#include <posenc/posenc.hpp>
#include <string>
#include <vector>

using posenc::Index;
using posenc::Position;
using posenc::RopeScaling;

namespace {

struct Column {
  const char* name;
  std::string detail;
  RopeScaling scaling;
};

// The frequencies a RoPE with this scaling uses in a call whose positions reach seq_len - 1.
posenc::RotaryFrequencies frequencies(Index head_dim, double base, const RopeScaling& scaling, Position seq_len) {
  posenc::RopeConfig config;
  config.head_dim = head_dim;
  config.base = base;
  config.scaling = scaling;
  return posenc::RoPE(config).rotation(seq_len);
}

// argv[k] as a number, `fallback` when absent.
double argument(int argc, char** argv, int k, double fallback) {
  if (argc <= k) return fallback;
  char* end = nullptr;
  const double value = std::strtod(argv[k], &end);
  if (end == argv[k] || *end != '\0') throw std::invalid_argument(std::string("not a number: \"") + argv[k] + "\"");
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const auto head_dim = static_cast<Index>(argument(argc, argv, 1, 128));
    const double base = argument(argc, argv, 2, 500000.0);
    const auto original = static_cast<Position>(argument(argc, argv, 3, 8192));
    const auto target = static_cast<Position>(argument(argc, argv, 4, 32768));
    if (argc > 5 || original < 1 || target < original) {
      std::fprintf(stderr, "usage: %s [head_dim=128] [base=500000] [original_context=8192] [target_context=32768]\n"
                   "       (target_context >= original_context >= 1)\n", argv[0]);
      return 2;
    }
    const double factor = static_cast<double>(target) / static_cast<double>(original);
    const Index pairs = head_dim / 2;

    // Illustrative LongRoPE factors (real models ship searched ones): short = 1 everywhere, long
    // rises linearly from 1 on the fastest pair to `factor` on the slowest. (A geometric rise,
    // factor^(i/(d/2-1)), would reproduce ntk exactly: ntk is a per-pair factor too.)
    std::vector<double> short_factor(static_cast<std::size_t>(pairs), 1.0), long_factor;
    for (Index i = 0; i < pairs; ++i) {
      const double t = pairs > 1 ? static_cast<double>(i) / static_cast<double>(pairs - 1) : 0.0;
      long_factor.push_back(1.0 + (factor - 1.0) * t);
    }

    char x[32];
    std::snprintf(x, sizeof x, "x%g", factor);
    const std::vector<Column> columns{
        {"none", "", RopeScaling::none()},
        {"linear", x, RopeScaling::linear(factor)},
        {"ntk", x, RopeScaling::ntk(factor)},
        {"dynamic", x, RopeScaling::dynamic(factor, original)},
        {"yarn", x, RopeScaling::yarn(factor, original)},
        {"llama3", "x8 (1, 4)", RopeScaling::llama3(8.0, 1.0, 4.0, original)},
        {"longrope", x, RopeScaling::longrope(short_factor, long_factor, original, factor)},
    };
    std::vector<posenc::RotaryFrequencies> f;
    for (const Column& c : columns) f.push_back(frequencies(head_dim, base, c.scaling, /*seq_len=*/target));

    std::printf("RoPE wavelengths 2*pi/inv_freq[i] in tokens: head_dim %td, base %g, original context %lld,\n"
                "target context %lld (= seq_len of the call, used by dynamic and longrope)\n\n",
                head_dim, base, static_cast<long long>(original), static_cast<long long>(target));
    std::printf("%6s", "pair");
    for (const Column& c : columns) std::printf(" %13s", c.name);
    std::printf("\n%6s", "i");
    for (const Column& c : columns) std::printf(" %13s", c.detail.c_str());
    std::printf("\n");
    for (Index i = 0; i < pairs; ++i) {
      if (i % 8 != 0 && i != pairs - 1) continue;  // every 8th pair, and the slowest
      std::printf("%6td", i);
      for (const auto& freq : f) {
        std::printf(" %13.1f", 2.0 * std::numbers::pi / freq.inv_freq[static_cast<std::size_t>(i)]);
      }
      std::printf("\n");
    }
    std::printf("%6s", "attn");
    for (const auto& freq : f) std::printf(" %13.6f", freq.attention_factor);
    std::printf("\n\nattn: attention factor (rotated dims of q and k are multiplied by it)\n");
  } catch (const std::exception& error) {
    std::fprintf(stderr, "rope_scaling: %s\n", error.what());
    return 1;
  }
}
