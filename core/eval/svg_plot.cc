#include "core/eval/svg_plot.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvsketch::eval {
namespace {

constexpr double kWidth = 860, kHeight = 520;
constexpr double kLeft = 80, kRight = 250, kTop = 40, kBottom = 60;

// Distinguishable colours (Okabe-Ito, then a few more).
const char* const kColors[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                               "#E69F00", "#56B4E9", "#000000", "#F0E442",
                               "#7f7f7f", "#8c564b", "#17becf", "#bcbd22"};
const char* const kDashes[] = {"", "6,3", "2,3", "8,3,2,3"};

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string TickLabel(double v, bool log) {
  if (!log) return absl::StrFormat("%g", v);
  const int e = static_cast<int>(std::round(std::log10(v)));
  if (e >= -2 && e <= 2) return absl::StrFormat("%g", v);
  return absl::StrFormat("1e%d", e);
}

struct Axis {
  double lo, hi;  // in transformed units (log10 or linear)
  bool log;
  double T(double v) const { return log ? std::log10(v) : v; }
};

// A log axis spans the data plus 4% each side, and at least one decade so
// that it always holds a labelled decade tick.
Axis MakeAxis(double mn, double mx, bool log) {
  if (log) {
    double lo = std::log10(mn), hi = std::log10(mx);
    if (hi - lo < 1) {
      const double mid = (lo + hi) / 2;
      lo = mid - 0.5;
      hi = mid + 0.5;
    }
    const double pad = 0.04 * (hi - lo);
    return {lo - pad, hi + pad, true};
  }
  double lo = std::min(0.0, mn), hi = mx;
  if (hi <= lo) hi = lo + 1;
  return {lo, hi * 1.05, false};
}

}  // namespace

std::string RenderSvg(const LinePlot& plot) {
  double xmn = 1e300, xmx = -1e300, ymn = 1e300, ymx = -1e300;
  for (const PlotSeries& s : plot.series) {
    for (const auto& [x, y] : s.points) {
      if (x <= 0 || !std::isfinite(y) || (plot.log_y && y <= 0)) continue;
      xmn = std::min(xmn, x);
      xmx = std::max(xmx, x);
      ymn = std::min(ymn, y);
      ymx = std::max(ymx, y);
    }
  }
  if (xmn > xmx) xmn = 1, xmx = 10, ymn = 1, ymx = 10;
  const Axis ax = MakeAxis(xmn, xmx, true), ay = MakeAxis(ymn, ymx, plot.log_y);
  const double pw = kWidth - kLeft - kRight, ph = kHeight - kTop - kBottom;
  const auto px = [&](double x) {
    return kLeft + (ax.T(x) - ax.lo) / (ax.hi - ax.lo) * pw;
  };
  const auto py = [&](double y) {
    return kTop + ph - (ay.T(y) - ay.lo) / (ay.hi - ay.lo) * ph;
  };
  std::string o = absl::StrFormat(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" "
      "viewBox=\"0 0 %g %g\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
      kWidth, kHeight, kWidth, kHeight);
  absl::StrAppend(
      &o, absl::StrFormat("<text x=\"%g\" y=\"24\" text-anchor=\"middle\" "
                          "font-size=\"15\" font-weight=\"bold\">%s</text>\n",
                          kLeft + pw / 2, Escape(plot.title)));
  // Grid and ticks.
  const auto add_tick = [&](bool is_x, double v, bool major) {
    const std::string stroke = major ? "#cccccc" : "#eeeeee";
    if (is_x) {
      const double X = px(v);
      absl::StrAppend(
          &o,
          absl::StrFormat("<line x1=\"%.1f\" y1=\"%g\" x2=\"%.1f\" y2=\"%g\" "
                          "stroke=\"%s\"/>\n",
                          X, kTop, X, kTop + ph, stroke));
      if (major) {
        absl::StrAppend(
            &o,
            absl::StrFormat("<text x=\"%.1f\" y=\"%g\" text-anchor=\"middle\">"
                            "%s</text>\n",
                            X, kTop + ph + 18, TickLabel(v, true)));
      }
    } else {
      const double Y = py(v);
      absl::StrAppend(
          &o,
          absl::StrFormat("<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" "
                          "stroke=\"%s\"/>\n",
                          kLeft, Y, kLeft + pw, Y, stroke));
      if (major) {
        absl::StrAppend(
            &o, absl::StrFormat("<text x=\"%g\" y=\"%.1f\" text-anchor=\"end\">"
                                "%s</text>\n",
                                kLeft - 6, Y + 4, TickLabel(v, ay.log)));
      }
    }
  };
  // Decade ticks (labelled) and 2..9 minor ticks inside [lo, hi].
  const auto log_ticks = [&](const Axis& a, bool is_x) {
    const int step = a.hi - a.lo > 8 ? 2 : 1;
    for (int e = static_cast<int>(std::floor(a.lo)); e <= a.hi; ++e) {
      if (e >= a.lo && (e % step == 0)) add_tick(is_x, std::pow(10.0, e), true);
      for (int m = 2; m < 10 && step == 1; ++m) {
        const double v = std::log10(m) + e;
        if (v >= a.lo && v <= a.hi) add_tick(is_x, std::pow(10.0, v), false);
      }
    }
  };
  log_ticks(ax, true);
  if (ay.log) {
    log_ticks(ay, false);
  } else {
    for (int i = 0; i <= 5; ++i) {
      add_tick(false, ay.lo + (ay.hi - ay.lo) * i / 5, true);
    }
  }
  absl::StrAppend(
      &o, absl::StrFormat("<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" "
                          "fill=\"none\" stroke=\"#333333\"/>\n",
                          kLeft, kTop, pw, ph));
  absl::StrAppend(
      &o, absl::StrFormat("<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%s"
                          "</text>\n",
                          kLeft + pw / 2, kHeight - 16, Escape(plot.x_label)));
  absl::StrAppend(
      &o, absl::StrFormat("<text x=\"18\" y=\"%g\" text-anchor=\"middle\" "
                          "transform=\"rotate(-90 18 %g)\">%s</text>\n",
                          kTop + ph / 2, kTop + ph / 2, Escape(plot.y_label)));
  // Series and legend.
  const size_t ncol = sizeof(kColors) / sizeof(kColors[0]);
  for (size_t i = 0; i < plot.series.size(); ++i) {
    const PlotSeries& s = plot.series[i];
    const std::string color = kColors[i % ncol];
    const std::string dash = kDashes[(i / ncol + i / 4) % 4];
    const std::string dash_attr =
        dash.empty() ? "" : absl::StrCat(" stroke-dasharray=\"", dash, "\"");
    std::vector<std::pair<double, double>> pts;
    for (const auto& [x, y] : s.points) {
      if (x <= 0 || !std::isfinite(y) || (plot.log_y && y <= 0)) continue;
      pts.emplace_back(px(x), py(y));
    }
    std::sort(pts.begin(), pts.end());
    if (!pts.empty()) {
      std::string d;
      for (size_t j = 0; j < pts.size(); ++j) {
        absl::StrAppend(
            &d, j == 0 ? "M" : " L",
            absl::StrFormat("%.1f %.1f", pts[j].first, pts[j].second));
      }
      absl::StrAppend(
          &o, absl::StrFormat("<path d=\"%s\" fill=\"none\" stroke=\"%s\" "
                              "stroke-width=\"2\"%s/>\n",
                              d, color, dash_attr));
      for (const auto& [X, Y] : pts) {
        absl::StrAppend(
            &o, absl::StrFormat("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" "
                                "fill=\"%s\"/>\n",
                                X, Y, color));
      }
    }
    const double ly = kTop + 10 + 20 * static_cast<double>(i);
    const double lx = kLeft + pw + 14;
    absl::StrAppend(
        &o,
        absl::StrFormat("<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" "
                        "stroke=\"%s\" stroke-width=\"2\"%s/>\n"
                        "<text x=\"%g\" y=\"%g\" font-size=\"11\">%s</text>\n",
                        lx, ly, lx + 24, ly, color, dash_attr, lx + 30, ly + 4,
                        Escape(s.name)));
  }
  absl::StrAppend(&o, "</svg>\n");
  return o;
}

}  // namespace kvsketch::eval
