// File: core/eval/svg_plot.h
//
// A small self-contained SVG line-plot writer for the eval report: log-log
// (or log-x, linear-y) axes with decade ticks, a legend, one polyline
// <path> per series. No external plotting library.
#ifndef KVSKETCH_CORE_EVAL_SVG_PLOT_H_
#define KVSKETCH_CORE_EVAL_SVG_PLOT_H_

#include <string>
#include <utility>
#include <vector>

namespace kvsketch::eval {

struct PlotSeries {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (x, y); non-positive y
                                                  // are dropped on a log axis
};

struct LinePlot {
  std::string title, x_label, y_label;
  bool log_y = true;  // x is always log10
  std::vector<PlotSeries> series;
};

// The SVG document (UTF-8). Text is XML-escaped. Series with no drawable
// point still get a legend entry but no path.
std::string RenderSvg(const LinePlot& plot);

}  // namespace kvsketch::eval

#endif  // KVSKETCH_CORE_EVAL_SVG_PLOT_H_
