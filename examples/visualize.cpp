// visualize <out_dir>: pictures of the positional encodings, written as plain SVG files.
//
//   sinusoidal.svg        Sinusoidal::encode, positions x dims, in both layouts, and a few columns
//   rope_decay.svg        RoFormer §3.4.3 long-term decay: the relative upper bound
//                           (1/(d/2)) sum_j |S_j|,  S_j = sum_{k<j} exp(i (m - n) theta_k),
//                         against m - n, for two bases and four scalings (RoPE::rotation().inv_freq)
//   rope_wavelengths.svg  2 pi / inv_freq per pair for the same bases and scalings
//   alibi.svg             ALiBi::bias, -m_h |i - j|, for each of 8 heads
//   t5.svg                RelativeBuckets::bucket against k - q (bidirectional and causal), the bucket
//                         maps, and RelativeBias::bias of 4 heads from a smooth synthetic table
//
// Every number comes from posenc's public API; svg.hpp only draws.
//
// Run:  ./build/bin/visualize /tmp/posenc-svg      then open the .svg files in a browser
//       (PNG: rsvg-convert -o rope_decay.png /tmp/posenc-svg/rope_decay.svg)

#include <cmath>
#include <complex>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <numbers>
#include <posenc/posenc.hpp>
#include <string>
#include <vector>

#include "svg.hpp"

using posenc::Index;
using posenc::Position;

namespace {

std::vector<Position> range(Position first, Position last) {
  std::vector<Position> positions;
  for (Position p = first; p <= last; ++p) positions.push_back(p);
  return positions;
}

// A heatmap of the row-major matrix at `data` [rows, cols].
template <class T>
svg::Heatmap heatmap(const std::string& title, const T* data, Index rows, Index cols) {
  svg::Heatmap m;
  m.title = title;
  m.rows = static_cast<int>(rows);
  m.cols = static_cast<int>(cols);
  m.values.assign(data, data + rows * cols);
  return m;
}

std::string format(const char* pattern, double value) {
  char text[96];
  std::snprintf(text, sizeof text, pattern, value);
  return text;
}

// --- Sinusoidal ---------------------------------------------------------------------------------

std::string sinusoidal(const std::filesystem::path& dir) {
  constexpr Index kDim = 128;
  const std::vector<Position> positions = range(0, 127);
  svg::Figure figure("Sinusoidal position embedding (Vaswani et al. 2017): dim 128, base 10000", 3, 420, 360);

  for (const auto layout : {posenc::SinusoidalLayout::kInterleaved, posenc::SinusoidalLayout::kSplit}) {
    const posenc::Tensor<float, 2> pe = posenc::Sinusoidal(kDim, 10000.0, layout).encode(positions);
    const bool interleaved = layout == posenc::SinusoidalLayout::kInterleaved;
    svg::Heatmap m = heatmap(interleaved ? "interleaved: sin, cos, sin, cos, ..." : "split: sin ... sin | cos ... cos",
                             pe.data(), pe.dimension(0), pe.dimension(1));
    m.x_label = "dimension";
    m.y_label = "position";
    m.diverging = true;
    figure.add(m);
  }

  const posenc::Sinusoidal encoding(kDim);
  const posenc::Tensor<float, 2> pe = encoding.encode(positions);
  svg::LinePlot columns;
  columns.title = "interleaved columns 2i = sin(p w_i)";
  columns.x_label = "position p";
  columns.y_label = "PE[p, 2i]";
  for (Index i : {4, 8, 16, 24}) {
    const double wavelength = 2.0 * std::numbers::pi / encoding.frequencies()[static_cast<std::size_t>(i)];
    svg::Series s;
    s.name = "dim " + std::to_string(2 * i) + format(", wavelength %.1f", wavelength);
    for (Index p = 0; p < pe.dimension(0); ++p) {
      s.x.push_back(static_cast<double>(p));
      s.y.push_back(pe(p, 2 * i));
    }
    columns.series.push_back(s);
  }
  figure.add(columns);

  const auto path = dir / "sinusoidal.svg";
  figure.save(path);
  return path;
}

// --- RoPE ---------------------------------------------------------------------------------------

struct RopeVariant {
  std::string name;
  double base;
  posenc::RopeScaling scaling;
};

const std::vector<RopeVariant>& rope_variants() {
  using S = posenc::RopeScaling;
  static const std::vector<RopeVariant> variants{
      {"base 10k", 1e4, S::none()},
      {"base 500k", 5e5, S::none()},
      {"base 10k, linear x4", 1e4, S::linear(4.0)},
      {"base 10k, ntk x8", 1e4, S::ntk(8.0)},
      {"base 10k, yarn x4 (orig 4096)", 1e4, S::yarn(4.0, 4096)},
      {"base 500k, llama3 x8 (orig 8192)", 5e5, S::llama3(8.0, 1.0, 4.0, 8192)},
  };
  return variants;
}

// inv_freq of a RoPE with this base and scaling (these scalings do not depend on seq_len).
std::vector<double> inv_freq(const RopeVariant& variant, Index head_dim) {
  posenc::RopeConfig config;
  config.head_dim = head_dim;
  config.base = variant.base;
  config.scaling = variant.scaling;
  return posenc::RoPE(config).rotation(/*seq_len=*/1).inv_freq;
}

// RoFormer §3.4.3: (1/(d/2)) sum_{j=1..d/2} |S_j| with S_j = sum_{k<j} exp(i (m - n) theta_k).
double relative_upper_bound(const std::vector<double>& theta, double distance) {
  std::complex<double> partial_sum = 0.0;
  double total = 0.0;
  for (double t : theta) {
    partial_sum += std::polar(1.0, distance * t);
    total += std::abs(partial_sum);
  }
  return total / static_cast<double>(theta.size());
}

std::string rope_decay(const std::filesystem::path& dir) {
  constexpr Index kHeadDim = 128;
  svg::Figure figure("RoPE long-term decay (RoFormer §3.4.3), head_dim 128", 2, 620, 440);
  svg::LinePlot near, far;
  near.title = "relative distance 0 .. 512";
  far.title = "relative distance 1 .. 65536 (log scale)";
  far.log_x = true;
  for (svg::LinePlot* plot : {&near, &far}) {
    plot->x_label = "relative distance m - n";
    plot->y_label = "relative upper bound (1/(d/2)) sum |S_j|";
  }
  for (const RopeVariant& variant : rope_variants()) {
    const std::vector<double> theta = inv_freq(variant, kHeadDim);
    svg::Series a, b;
    a.name = b.name = variant.name;
    for (int distance = 0; distance <= 65536; ++distance) {
      const double bound = relative_upper_bound(theta, distance);
      if (distance <= 512) a.x.push_back(distance), a.y.push_back(bound);
      if (distance >= 1) b.x.push_back(distance), b.y.push_back(bound);
    }
    near.series.push_back(a);
    far.series.push_back(b);
  }
  figure.add(near).add(far);
  const auto path = dir / "rope_decay.svg";
  figure.save(path);
  return path;
}

std::string rope_wavelengths(const std::filesystem::path& dir) {
  constexpr Index kHeadDim = 128;
  svg::Figure figure("RoPE wavelengths 2 pi / inv_freq[i], head_dim 128", 1, 720, 460);
  svg::LinePlot plot;
  plot.title = "wavelength of each rotary pair (log scale)";
  plot.x_label = "pair index i";
  plot.y_label = "wavelength (tokens)";
  plot.log_y = true;
  for (const RopeVariant& variant : rope_variants()) {
    svg::Series s;
    s.name = variant.name;
    const std::vector<double> theta = inv_freq(variant, kHeadDim);
    for (std::size_t i = 0; i < theta.size(); ++i) {
      s.x.push_back(static_cast<double>(i));
      s.y.push_back(2.0 * std::numbers::pi / theta[i]);
    }
    plot.series.push_back(s);
  }
  figure.add(plot);
  const auto path = dir / "rope_wavelengths.svg";
  figure.save(path);
  return path;
}

// --- ALiBi --------------------------------------------------------------------------------------

std::string alibi(const std::filesystem::path& dir) {
  constexpr Index kHeads = 8;
  const posenc::ALiBi encoding(kHeads);
  svg::Figure figure("ALiBi (Press et al. 2022): score bias -m_h |i - j|, 8 heads", 3, 340, 310);

  svg::LinePlot rows;
  rows.title = "bias of query 32 against keys 0 .. 64";
  rows.x_label = "key position j";
  rows.y_label = "bias";
  const posenc::Tensor<float, 3> row = encoding.bias(std::vector<Position>{32}, range(0, 64));  // [8, 1, 65]
  for (Index h = 0; h < kHeads; ++h) {
    svg::Series s;
    s.name = "head " + std::to_string(h) + format(": m = 1/%g", 1.0 / encoding.slopes()[static_cast<std::size_t>(h)]);
    for (Index j = 0; j < row.dimension(2); ++j) s.x.push_back(static_cast<double>(j)), s.y.push_back(row(h, 0, j));
    rows.series.push_back(s);
  }
  figure.add(rows);

  const std::vector<Position> positions = range(0, 31);
  const posenc::Tensor<float, 3> bias = encoding.bias(positions, positions);  // [8, 32, 32]
  for (Index h = 0; h < kHeads; ++h) {
    const double slope = encoding.slopes()[static_cast<std::size_t>(h)];
    svg::Heatmap m = heatmap("head " + std::to_string(h) + format(", m = 1/%g", 1.0 / slope),
                             bias.data() + h * 32 * 32, 32, 32);
    m.x_label = "key position j";
    m.y_label = "query position i";
    m.lo = -0.5 * 31;  // one color scale for all heads: the steepest head's farthest key
    m.hi = 0.0;
    figure.add(m);
  }
  const auto path = dir / "alibi.svg";
  figure.save(path);
  return path;
}

// --- T5 relative bias ---------------------------------------------------------------------------

std::string t5(const std::filesystem::path& dir) {
  posenc::RelativeBucketConfig bidirectional;  // T5 defaults: 32 buckets, max_distance 128
  posenc::RelativeBucketConfig causal;
  causal.bidirectional = false;
  svg::Figure figure("T5 relative position buckets and bias (Raffel et al. 2020): 32 buckets, max_distance 128", 4,
                     380, 340);

  svg::LinePlot plot;
  plot.title = "bucket of k - q";
  plot.x_label = "relative distance k - q";
  plot.y_label = "bucket";
  plot.steps = true;
  for (const auto& [name, config] : {std::pair{"bidirectional", bidirectional}, std::pair{"causal", causal}}) {
    const posenc::RelativeBuckets buckets(config);
    svg::Series s;
    s.name = name;
    for (Position rel = -200; rel <= 200; ++rel) {
      s.x.push_back(static_cast<double>(rel));
      s.y.push_back(static_cast<double>(buckets.bucket(rel)));
    }
    plot.series.push_back(s);
  }
  figure.add(plot);

  const std::vector<Position> positions = range(0, 95);
  for (const auto& [name, config] : {std::pair{"bidirectional", bidirectional}, std::pair{"causal", causal}}) {
    const posenc::Tensor<Index, 2> map = posenc::RelativeBuckets(config).buckets(positions, positions);
    svg::Heatmap m = heatmap(std::string("bucket map, ") + name, map.data(), map.dimension(0), map.dimension(1));
    m.x_label = "key position";
    m.y_label = "query position";
    figure.add(m);
  }

  // A smooth synthetic [32 buckets, 4 heads] table. Bucket b covers the past (b < 16, b = 0 is the
  // token itself) or the future (b >= 16); s is a signed "log distance" coordinate.
  constexpr Index kHeads = 4;
  posenc::Tensor<float, 2> table(32, kHeads);
  for (Index b = 0; b < 32; ++b) {
    const double s = b < 16 ? -static_cast<double>(b) : static_cast<double>(b - 16 + 1);
    table(b, 0) = static_cast<float>(1.5 * std::exp(-s * s / 6.0) - 0.5);                // local
    table(b, 1) = static_cast<float>(1.5 * std::exp(-(s + 10) * (s + 10) / 8.0) - 0.5);  // far past
    table(b, 2) = static_cast<float>(1.5 * std::exp(-(s - 6) * (s - 6) / 8.0) - 0.5);    // near future
    table(b, 3) = static_cast<float>(1.0 - 0.15 * std::abs(s));                          // decays with distance
  }
  svg::Heatmap table_map = heatmap("synthetic table [bucket, head]", table.data(), 32, kHeads);
  table_map.x_label = "head";
  table_map.y_label = "bucket";
  table_map.diverging = true;
  figure.add(table_map);

  const posenc::RelativeBias encoding(bidirectional, table);
  const posenc::Tensor<float, 3> bias = encoding.bias(positions, positions);  // [4, 96, 96]
  const char* kinds[kHeads] = {"local", "far past", "near future", "decays with distance"};
  for (Index h = 0; h < kHeads; ++h) {
    svg::Heatmap m = heatmap("bias, head " + std::to_string(h) + " (" + kinds[h] + ")",
                             bias.data() + h * bias.dimension(1) * bias.dimension(2), bias.dimension(1),
                             bias.dimension(2));
    m.x_label = "key position";
    m.y_label = "query position";
    m.diverging = true;
    m.lo = -1.5;
    m.hi = 1.5;
    figure.add(m);
  }
  const auto path = dir / "t5.svg";
  figure.save(path);
  return path;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <out_dir>\n  writes SVG figures of the positional encodings into out_dir\n",
                 argv[0]);
    return 2;
  }
  try {
    const std::filesystem::path dir = argv[1];
    std::filesystem::create_directories(dir);
    for (const auto write : {sinusoidal, rope_decay, rope_wavelengths, alibi, t5}) {
      std::printf("wrote %s\n", write(dir).c_str());
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "visualize: %s\n", error.what());
    return 1;
  }
}
