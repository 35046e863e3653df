#pragma once
// svg.hpp: just enough SVG to draw the figures of examples/visualize.cpp, with no dependency.
//
//   svg::Heatmap   a matrix as colored cells (viridis, or blue-white-red for signed data), with
//                  ticks on both axes and a color bar
//   svg::LinePlot  named series as lines (or steps; linear or log axes) with a legend
//   svg::Figure    a grid of such panels under a title, saved as one .svg file
//
// Not part of the library: a helper for the examples, kept small and dependency-free.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace svg {

struct Heatmap {
  std::string title, x_label, y_label;
  int rows = 0, cols = 0;
  std::vector<double> values;          // rows * cols, row-major; row 0 is drawn at the top
  double x_first = 0.0, x_step = 1.0;  // axis value of column c: x_first + c * x_step
  double y_first = 0.0, y_step = 1.0;  // axis value of row r:    y_first + r * y_step
  bool diverging = false;              // blue-white-red, symmetric about 0 (else viridis)
  std::optional<double> lo, hi;        // color range; default: the data's min and max
};

struct Series {
  std::string name;
  std::vector<double> x, y;
};

struct LinePlot {
  std::string title, x_label, y_label;
  std::vector<Series> series;
  bool log_x = false, log_y = false;
  bool steps = false;  // hold each y until the next x (integer-valued data such as buckets)
};

namespace detail {

// printf into a std::string (the pattern is always a literal at the call site).
template <class... Args>
std::string format(const char* pattern, Args... args) {
  const int size = std::snprintf(nullptr, 0, pattern, args...);
  std::string out(static_cast<std::size_t>(std::max(size, 0)), '\0');
  std::snprintf(out.data(), out.size() + 1, pattern, args...);
  return out;
}

struct Rgb {
  double r, g, b;
};

// Piecewise-linear color ramps, t in [0, 1].
inline std::string ramp(double t, bool diverging) {
  static constexpr std::array<Rgb, 11> kViridis{{{68, 1, 84},
                                                 {72, 35, 116},
                                                 {64, 67, 135},
                                                 {52, 94, 141},
                                                 {41, 120, 142},
                                                 {32, 144, 140},
                                                 {34, 167, 132},
                                                 {68, 190, 112},
                                                 {121, 209, 81},
                                                 {189, 222, 38},
                                                 {253, 231, 37}}};
  static constexpr std::array<Rgb, 5> kBlueRed{
      {{33, 102, 172}, {103, 169, 207}, {247, 247, 247}, {239, 138, 98}, {178, 24, 43}}};
  const Rgb* stops = diverging ? kBlueRed.data() : kViridis.data();
  const std::size_t n = diverging ? kBlueRed.size() : kViridis.size();
  t = std::isfinite(t) ? std::clamp(t, 0.0, 1.0) : 0.0;
  const double at = t * static_cast<double>(n - 1);
  const std::size_t i = std::min(static_cast<std::size_t>(at), n - 2);
  const double f = at - static_cast<double>(i);
  const auto mix = [&](double a, double b) { return static_cast<int>(std::lround(a + (b - a) * f)); };
  return format("#%02x%02x%02x", mix(stops[i].r, stops[i + 1].r), mix(stops[i].g, stops[i + 1].g),
                mix(stops[i].b, stops[i + 1].b));
}

inline constexpr std::array<const char*, 10> kPalette{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                                       "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

inline std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '&') out += "&amp;";
    else if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else out += c;
  }
  return out;
}

inline std::string num(double v) {  // tick labels: 0.25, 4096, 1e+06
  return format("%g", std::abs(v) < 1e-12 ? 0.0 : v);
}

// About `target` round-numbered ticks (1, 2, 5 x 10^k steps) covering [lo, hi].
inline std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / target;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = 10.0 * magnitude;
  for (double m : {1.0, 2.0, 5.0}) {
    if (raw <= m * magnitude) {
      step = m * magnitude;
      break;
    }
  }
  std::vector<double> ticks;
  for (double k = std::ceil(lo / step - 1e-9); k * step <= hi + 1e-9 * step; ++k) ticks.push_back(k * step);
  return ticks;
}

// Powers of ten in [lo, hi] (lo > 0), with 2x and 5x when the range spans few decades.
inline std::vector<double> log_ticks(double lo, double hi) {
  std::vector<double> ticks;
  const bool fine = std::log10(hi / lo) < 2.5;
  for (double p = std::pow(10.0, std::floor(std::log10(lo))); p <= hi * (1 + 1e-9); p *= 10.0) {
    for (double m : {1.0, 2.0, 5.0}) {
      if ((m == 1.0 || fine) && m * p >= lo * (1 - 1e-9) && m * p <= hi * (1 + 1e-9)) ticks.push_back(m * p);
    }
  }
  return ticks;
}

inline void text(std::ostream& out, double x, double y, const std::string& s, const char* anchor = "middle",
                 int size = 11, const char* extra = "") {
  out << format("<text x=\"%.1f\" y=\"%.1f\" font-size=\"%d\" text-anchor=\"%s\"%s>", x, y, size, anchor, extra)
      << escape(s) << "</text>\n";
}

inline void line(std::ostream& out, double x1, double y1, double x2, double y2, const char* style) {
  out << format("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" %s/>\n", x1, y1, x2, y2, style);
}

// Title above, x label below and rotated y label left of the plot area [left, left+w] x [top, top+h],
// clear of y tick labels up to `y_tick_chars` characters wide.
inline void labels(std::ostream& out, const std::string& title, const std::string& x_label,
                   const std::string& y_label, double left, double top, double w, double h, std::size_t y_tick_chars) {
  text(out, left + w / 2, top - 9, title, "middle", 13, " font-weight=\"bold\"");
  text(out, left + w / 2, top + h + 32, x_label, "middle", 12);
  const double x = left - 14 - 6.2 * static_cast<double>(y_tick_chars);
  const std::string rotate = format(" transform=\"rotate(-90 %.1f %.1f)\"", x, top + h / 2);
  text(out, x, top + h / 2, y_label, "middle", 12, rotate.c_str());
}

inline void draw(std::ostream& out, const Heatmap& m, double width, double height) {
  if (m.rows < 1 || m.cols < 1 || m.values.size() != static_cast<std::size_t>(m.rows * m.cols)) {
    throw std::invalid_argument("svg::Heatmap \"" + m.title + "\": values must hold rows * cols entries");
  }
  const double left = 52, right = 66, top = 26, bottom = 42;
  const double w = width - left - right, h = height - top - bottom;
  double lo = m.lo.value_or(*std::min_element(m.values.begin(), m.values.end()));
  double hi = m.hi.value_or(*std::max_element(m.values.begin(), m.values.end()));
  if (m.diverging && !m.lo && !m.hi) {  // symmetric, so that white is 0
    hi = std::max(std::abs(lo), std::abs(hi));
    lo = -hi;
  }
  if (!(hi > lo)) hi = lo + 1.0;

  // Cells, in kLevels colors: one <path> per color; a run of equal colors along a row (or along a
  // column, whichever makes fewer runs) is one rectangle of it, a little larger so no seams show.
  constexpr int kLevels = 64;
  const auto level = [&](int r, int c) {
    const double t = (m.values[static_cast<std::size_t>(r) * m.cols + c] - lo) / (hi - lo);
    return std::isfinite(t) ? std::clamp(static_cast<int>(std::lround(t * (kLevels - 1))), 0, kLevels - 1) : 0;
  };
  const auto for_each_run = [&](bool by_row, auto&& emit) {  // emit(level, row, col, rows, cols)
    const int outer = by_row ? m.rows : m.cols, inner = by_row ? m.cols : m.rows;
    for (int o = 0; o < outer; ++o) {
      for (int i = 0; i < inner;) {
        const auto at = [&](int k) { return by_row ? level(o, k) : level(k, o); };
        int end = i + 1;
        while (end < inner && at(end) == at(i)) ++end;
        if (by_row) emit(at(i), o, i, 1, end - i);
        else emit(at(i), i, o, end - i, 1);
        i = end;
      }
    }
  };
  int runs_by_row = 0, runs_by_col = 0;
  for_each_run(true, [&](int, int, int, int, int) { ++runs_by_row; });
  for_each_run(false, [&](int, int, int, int, int) { ++runs_by_col; });
  const double cw = w / m.cols, ch = h / m.rows;
  std::vector<std::string> paths(kLevels);
  for_each_run(runs_by_row <= runs_by_col, [&](int lv, int r, int c, int rows, int cols) {
    paths[static_cast<std::size_t>(lv)] +=
        format("M%.1f %.1fh%.1fv%.1fh%.1fz", left + c * cw, top + r * ch, cols * cw + 0.5, rows * ch + 0.5,
               -(cols * cw + 0.5));
  });
  for (int lv = 0; lv < kLevels; ++lv) {
    if (paths[static_cast<std::size_t>(lv)].empty()) continue;
    out << "<path fill=\"" << ramp(lv / (kLevels - 1.0), m.diverging) << "\" d=\""
        << paths[static_cast<std::size_t>(lv)] << "\"/>\n";
  }
  out << format("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n", left,
                top, w, h);

  // Axis ticks at round values of the axis coordinates (cell centers).
  const double x_last = m.x_first + (m.cols - 1) * m.x_step, y_last = m.y_first + (m.rows - 1) * m.y_step;
  const int x_ticks = std::max(2, static_cast<int>(w / 70)), y_ticks = std::max(2, static_cast<int>(h / 45));
  for (double v : nice_ticks(std::min(m.x_first, x_last), std::max(m.x_first, x_last), x_ticks)) {
    const double x = left + ((v - m.x_first) / m.x_step + 0.5) * cw;
    line(out, x, top + h, x, top + h + 4, "stroke=\"#333\"");
    text(out, x, top + h + 15, num(v));
  }
  std::size_t y_tick_chars = 1;
  for (double v : nice_ticks(std::min(m.y_first, y_last), std::max(m.y_first, y_last), y_ticks)) {
    const double y = top + ((v - m.y_first) / m.y_step + 0.5) * ch;
    line(out, left - 4, y, left, y, "stroke=\"#333\"");
    text(out, left - 6, y + 4, num(v), "end");
    y_tick_chars = std::max(y_tick_chars, num(v).size());
  }

  // Color bar.
  const double bar_x = left + w + 10, stripes = 64;
  for (int i = 0; i < stripes; ++i) {
    out << format("<rect x=\"%.1f\" y=\"%.2f\" width=\"12\" height=\"%.2f\" fill=\"%s\"/>\n", bar_x,
                  top + h - (i + 1) * h / stripes, h / stripes + 0.4, ramp((i + 0.5) / stripes, m.diverging).c_str());
  }
  for (double v : nice_ticks(lo, hi, 5)) {
    const double y = top + h - (v - lo) / (hi - lo) * h;
    line(out, bar_x + 12, y, bar_x + 15, y, "stroke=\"#333\"");
    text(out, bar_x + 17, y + 4, num(v), "start", 10);
  }
  labels(out, m.title, m.x_label, m.y_label, left, top, w, h, y_tick_chars);
}

inline void draw(std::ostream& out, const LinePlot& p, double width, double height, int id) {
  const double right = 14, top = 26, bottom = 42, h = height - top - bottom;
  const auto usable = [&](double x, double y) {
    return std::isfinite(x) && std::isfinite(y) && (!p.log_x || x > 0) && (!p.log_y || y > 0);
  };
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo, y_lo = x_lo, y_hi = -x_lo;
  for (const Series& s : p.series) {
    for (std::size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!usable(s.x[i], s.y[i])) continue;
      x_lo = std::min(x_lo, s.x[i]), x_hi = std::max(x_hi, s.x[i]);
      y_lo = std::min(y_lo, s.y[i]), y_hi = std::max(y_hi, s.y[i]);
    }
  }
  if (!(x_hi >= x_lo)) throw std::invalid_argument("svg::LinePlot \"" + p.title + "\": no drawable point");
  if (!(x_hi > x_lo)) x_hi = p.log_x ? 2.0 * x_lo : x_lo + 1.0;
  if (!(y_hi > y_lo)) y_hi = p.log_y ? 2.0 * y_lo : y_lo + 1.0;
  if (p.log_y) {
    y_lo /= 1.2, y_hi *= 1.2;
  } else {
    const double pad = 0.05 * (y_hi - y_lo);
    y_lo -= pad, y_hi += pad;
  }
  const std::vector<double> y_ticks =
      p.log_y ? log_ticks(y_lo, y_hi) : nice_ticks(y_lo, y_hi, std::max(2, static_cast<int>(h / 45)));
  std::size_t y_tick_chars = 1;
  for (double v : y_ticks) y_tick_chars = std::max(y_tick_chars, num(v).size());
  const double left = 34 + 6.2 * static_cast<double>(y_tick_chars), w = width - left - right;
  // Fraction of the way from lo to hi, on a linear or log axis.
  const auto fraction = [](double v, double lo, double hi, bool log) {
    return log ? std::log(v / lo) / std::log(hi / lo) : (v - lo) / (hi - lo);
  };
  const auto px = [&](double x) { return left + fraction(x, x_lo, x_hi, p.log_x) * w; };
  const auto py = [&](double y) { return top + h - fraction(y, y_lo, y_hi, p.log_y) * h; };

  // Grid and ticks.
  for (double v : p.log_x ? log_ticks(x_lo, x_hi) : nice_ticks(x_lo, x_hi, std::max(2, static_cast<int>(w / 80)))) {
    line(out, px(v), top, px(v), top + h, "stroke=\"#e4e4e4\"");
    text(out, px(v), top + h + 15, num(v));
  }
  for (double v : y_ticks) {
    line(out, left, py(v), left + w, py(v), "stroke=\"#e4e4e4\"");
    text(out, left - 6, py(v) + 4, num(v), "end");
  }

  // Series, clipped to the plot area. Points that fall in the same pixel column are reduced to
  // their first, lowest, highest and last value: the picture is unchanged, the file stays small.
  out << format("<clipPath id=\"plot%d\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/></clipPath>\n", id,
                left, top, w, h);
  std::vector<std::array<double, 2>> points;  // pixel coordinates, occupied by the legend test below
  for (std::size_t k = 0; k < p.series.size(); ++k) {
    const Series& s = p.series[k];
    std::vector<std::vector<std::array<double, 2>>> runs(1);  // broken at unusable points
    for (std::size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!usable(s.x[i], s.y[i])) {
        if (!runs.back().empty()) runs.emplace_back();
        continue;
      }
      if (p.steps && !runs.back().empty()) runs.back().push_back({px(s.x[i]), runs.back().back()[1]});
      runs.back().push_back({px(s.x[i]), py(s.y[i])});
    }
    for (const auto& run : runs) {
      if (run.empty()) continue;
      std::ostringstream coords;
      coords.precision(1);
      coords << std::fixed;
      std::array<double, 2> previous{-1.0, -1.0};
      for (std::size_t a = 0; a < run.size();) {
        std::size_t b = a;
        std::array<double, 2> low = run[a], high = run[a];
        while (b < run.size() && std::floor(run[b][0]) == std::floor(run[a][0])) {
          if (run[b][1] > low[1]) low = run[b];
          if (run[b][1] < high[1]) high = run[b];
          ++b;
        }
        const bool low_first = low[0] <= high[0];
        for (const auto& q : {run[a], low_first ? low : high, low_first ? high : low, run[b - 1]}) {
          if (q == previous) continue;
          coords << q[0] << ',' << q[1] << ' ';
          points.push_back(q);
          previous = q;
        }
        a = b;
      }
      out << "<polyline clip-path=\"url(#plot" << id << ")\" fill=\"none\" stroke-width=\"1.6\" stroke=\""
          << kPalette[k % kPalette.size()] << "\" points=\"" << coords.str() << "\"/>\n";
    }
  }
  out << format("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n", left,
                top, w, h);

  // Legend in the corner that hides the fewest points.
  if (!p.series.empty()) {
    std::size_t longest = 0;
    for (const Series& s : p.series) longest = std::max(longest, s.name.size());
    const double lw = 34 + 6.2 * static_cast<double>(longest), lh = 8 + 15.0 * static_cast<double>(p.series.size());
    double best_x = 0, best_y = 0;
    std::size_t best_hidden = std::numeric_limits<std::size_t>::max();
    for (double x : {left + w - lw - 6, left + 6}) {
      for (double y : {top + 6, top + h - lh - 6}) {
        const auto hidden = static_cast<std::size_t>(std::count_if(points.begin(), points.end(), [&](const auto& q) {
          return q[0] >= x && q[0] <= x + lw && q[1] >= y && q[1] <= y + lh;
        }));
        if (hidden < best_hidden) best_hidden = hidden, best_x = x, best_y = y;
      }
    }
    out << format("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"white\" fill-opacity=\"0.85\" "
                  "stroke=\"#bbb\"/>\n",
                  best_x, best_y, lw, lh);
    for (std::size_t k = 0; k < p.series.size(); ++k) {
      const double y = best_y + 12 + 15.0 * static_cast<double>(k);
      const std::string stroke = format("stroke=\"%s\" stroke-width=\"2.5\"", kPalette[k % kPalette.size()]);
      line(out, best_x + 6, y - 4, best_x + 24, y - 4, stroke.c_str());
      text(out, best_x + 28, y, p.series[k].name, "start", 11);
    }
  }
  labels(out, p.title, p.x_label, p.y_label, left, top, w, h, y_tick_chars);
}

}  // namespace detail

/// Panels laid out left to right, top to bottom, `columns` per row, under a title.
class Figure {
 public:
  explicit Figure(std::string title, int columns = 1, double panel_width = 420, double panel_height = 320)
      : title_(std::move(title)),
        columns_(std::max(1, columns)),
        panel_width_(panel_width),
        panel_height_(panel_height) {}

  Figure& add(const Heatmap& heatmap) {
    std::ostringstream out;
    detail::draw(out, heatmap, panel_width_, panel_height_);
    panels_.push_back(out.str());
    return *this;
  }
  Figure& add(const LinePlot& plot) {
    std::ostringstream out;
    detail::draw(out, plot, panel_width_, panel_height_, static_cast<int>(panels_.size()));
    panels_.push_back(out.str());
    return *this;
  }

  /// Writes the figure; throws std::runtime_error if the file cannot be written.
  void save(const std::string& path) const {
    const int n = static_cast<int>(panels_.size());
    const int columns = std::min(columns_, std::max(1, n));
    const int rows = (n + columns - 1) / columns;
    const double width = columns * panel_width_, title_height = 34, height = title_height + rows * panel_height_;
    std::ofstream file(path);
    file << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
         << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
         << "\" viewBox=\"0 0 " << width << ' ' << height << "\" font-family=\"Helvetica, Arial, sans-serif\">\n"
         << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    detail::text(file, width / 2, 23, title_, "middle", 16, " font-weight=\"bold\"");
    for (int i = 0; i < n; ++i) {
      file << "<g transform=\"translate(" << (i % columns) * panel_width_ << ' '
           << title_height + (i / columns) * panel_height_ << ")\">\n"
           << panels_[static_cast<std::size_t>(i)] << "</g>\n";
    }
    file << "</svg>\n";
    if (!file) throw std::runtime_error("cannot write " + path);
  }

 private:
  std::string title_;
  int columns_;
  double panel_width_, panel_height_;
  std::vector<std::string> panels_;
};

}  // namespace svg
