#include "core/eval/report.h"

#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/eval/svg_plot.h"

namespace kvsketch::eval {
namespace {

std::string JsonString(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      o += absl::StrFormat("\\u%04x", c);
    } else {
      o += c;
    }
  }
  return o + "\"";
}

// JSON has no NaN/Inf: those become null.
std::string JsonNumber(double x) {
  if (!std::isfinite(x)) return "null";
  return absl::StrFormat("%.6g", x);
}

std::string HumanBytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB"};
  int u = 0;
  while (b >= 1024 && u < 3) b /= 1024, ++u;
  // Two literal formats: clang checks absl::StrFormat strings at compile
  // time and rejects a non-constant one.
  return u == 0 ? absl::StrFormat("%.0f %s", b, units[u])
                : absl::StrFormat("%.1f %s", b, units[u]);
}

std::string Needle(double r) {
  return r < 0 ? "–" : absl::StrFormat("%.0f%%", 100 * r);
}

// The approximators' own sampled checks, or "–".
std::string SelfCheck(const EvalRow& r) {
  std::string o;
  if (r.self_recall_mean >= 0) {
    o = absl::StrFormat("recall %.3f", r.self_recall_mean);
  }
  if (r.self_fit_error_mean >= 0) {
    absl::StrAppend(&o, o.empty() ? "" : ", ",
                    absl::StrFormat("fit err %.2e", r.self_fit_error_mean));
  }
  if (r.self_fit_fallbacks > 0) {
    absl::StrAppend(&o, o.empty() ? "" : ", ", r.self_fit_fallbacks,
                    " exact fallbacks");
  }
  return o.empty() ? "–" : o;
}

std::string SeriesName(const EvalRow& r, bool with_trace) {
  return with_trace ? absl::StrCat(r.label, " [", r.trace, "]") : r.label;
}

std::string Plot(absl::Span<const EvalRow> rows, bool memory) {
  std::map<std::string, size_t> index;
  std::map<std::string, int> traces;
  for (const EvalRow& r : rows) traces[r.trace]++;
  const bool with_trace = traces.size() > 1;
  LinePlot p;
  p.title = memory ? "State memory vs context length"
                   : "Relative L2 error of the attention output vs n";
  p.x_label = "n (tokens in context)";
  p.y_label = memory ? "state bytes (all heads)" : "mean ||o - o*|| / ||o*||";
  for (const EvalRow& r : rows) {
    const std::string name = SeriesName(r, with_trace);
    auto [it, inserted] = index.emplace(name, p.series.size());
    if (inserted) p.series.push_back({name, {}});
    p.series[it->second].points.emplace_back(
        static_cast<double>(r.n),
        memory ? static_cast<double>(r.state_bytes) : r.rel_l2_mean);
  }
  return RenderSvg(p);
}

}  // namespace

std::string FormatMarkdown(absl::Span<const EvalRow> rows) {
  std::string o =
      "| trace | path | spec | n | rows | rel L2 mean | rel L2 max | cos mean "
      "| cos min | needles | state | bytes/token | append µs/tok | "
      "query µs/row | prefill µs/tok | self-check |\n"
      "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
      "---:|---|\n";
  for (const EvalRow& r : rows) {
    absl::StrAppend(
        &o,
        absl::StrFormat(
            "| %s | %s | `%s` | %d | %d | %.2e | %.2e | %.5f | %.5f | %s | "
            "%s | %.1f | %.3f | %.1f | %.3f | %s |\n",
            r.trace, r.path, r.label, r.n, r.query_rows, r.rel_l2_mean,
            r.rel_l2_max, r.cosine_mean, r.cosine_min, Needle(r.needle_rate),
            HumanBytes(r.state_bytes), r.bytes_per_token, r.append_us_per_token,
            r.query_us_per_row, r.prefill_us_per_token, SelfCheck(r)));
  }
  return o;
}

std::string MarkdownLegend() {
  return "\n- **rows**: query rows scored (layers x query heads x queries); "
         "unscored warm rows (`--warm`) only feed `Attend`.\n"
         "- **rel L2**: ||o - o*|| / ||o*|| per row against softmax attention "
         "in double precision over the same prefix; mean and max over rows. "
         "**cos**: cosine(o, o*), mean and min.\n"
         "- **needles** (planted traces): fraction of rows after every needle "
         "whose output has cosine >= 0.9 with softmax attention restricted to "
         "the needle keys; exact's value is the ceiling for the trace.\n"
         "- **state**: sum of MemoryBytes() over heads after all n tokens; "
         "bytes/token = state / n.\n"
         "- **path**: `stream` appends up to each query and calls Attend (the "
         "decode path); `prefill` sends the trace through Prefill in chunks "
         "(the bulk path).\n"
         "- **append us/tok**: Append wall time per token per head; **query "
         "us/row**: Attend wall time per scored row; **prefill us/tok**: "
         "Prefill wall time per token per head (all query rows computed).\n"
         "- **self-check**: what the approximators measured about themselves "
         "on sampled exact checks (zeta: recall of the true top-k; conv: fit "
         "error on sampled rows, and heads answered exactly after a bad "
         "fit).\n";
}

std::string FormatCsv(absl::Span<const EvalRow> rows) {
  std::string o =
      "trace,path,label,spec,n,query_rows,rel_l2_mean,rel_l2_max,cosine_mean,"
      "cosine_min,needle_rate,state_bytes,bytes_per_token,append_us_per_token,"
      "query_us_per_row,prefill_us_per_token,self_recall_mean,"
      "self_fit_error_mean,self_fit_fallbacks\n";
  const auto optional_number = [](double x) {
    return x < 0 ? std::string() : absl::StrFormat("%.6g", x);
  };
  const auto quote = [](const std::string& s) {
    std::string q = "\"";
    for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
  };
  for (const EvalRow& r : rows) {
    absl::StrAppend(
        &o, absl::StrFormat(
                "%s,%s,%s,%s,%d,%d,%.6g,%.6g,%.8g,%.8g,%s,%d,%.6g,"
                "%.6g,%.6g,%.6g,%s,%s,%d\n",
                quote(r.trace), r.path, quote(r.label), quote(r.spec), r.n,
                r.query_rows, r.rel_l2_mean, r.rel_l2_max, r.cosine_mean,
                r.cosine_min,
                r.needle_rate < 0 ? std::string()
                                  : absl::StrFormat("%.6g", r.needle_rate),
                r.state_bytes, r.bytes_per_token, r.append_us_per_token,
                r.query_us_per_row, r.prefill_us_per_token,
                optional_number(r.self_recall_mean),
                optional_number(r.self_fit_error_mean), r.self_fit_fallbacks));
  }
  return o;
}

std::string FormatJson(absl::Span<const EvalRow> rows) {
  std::string o = "{\n  \"needle_cosine_threshold\": 0.9,\n  \"results\": [";
  for (size_t i = 0; i < rows.size(); ++i) {
    const EvalRow& r = rows[i];
    absl::StrAppend(
        &o, i == 0 ? "\n" : ",\n", "    {\"trace\": ", JsonString(r.trace),
        ", \"label\": ", JsonString(r.label),
        ", \"spec\": ", JsonString(r.spec), ", \"n\": ", r.n,
        ", \"query_rows\": ", r.query_rows,
        ", \"rel_l2_mean\": ", JsonNumber(r.rel_l2_mean),
        ", \"rel_l2_max\": ", JsonNumber(r.rel_l2_max),
        ", \"cosine_mean\": ", JsonNumber(r.cosine_mean),
        ", \"cosine_min\": ", JsonNumber(r.cosine_min), ", \"needle_rate\": ",
        r.needle_rate < 0 ? "null" : JsonNumber(r.needle_rate),
        ", \"state_bytes\": ", r.state_bytes,
        ", \"bytes_per_token\": ", JsonNumber(r.bytes_per_token),
        ", \"append_us_per_token\": ", JsonNumber(r.append_us_per_token),
        ", \"query_us_per_row\": ", JsonNumber(r.query_us_per_row),
        ", \"prefill_us_per_token\": ", JsonNumber(r.prefill_us_per_token),
        ", \"self_recall_mean\": ",
        r.self_recall_mean < 0 ? "null" : JsonNumber(r.self_recall_mean),
        ", \"self_fit_error_mean\": ",
        r.self_fit_error_mean < 0 ? "null" : JsonNumber(r.self_fit_error_mean),
        ", \"self_fit_fallbacks\": ", r.self_fit_fallbacks, "}");
  }
  absl::StrAppend(&o, rows.empty() ? "]\n}\n" : "\n  ]\n}\n");
  return o;
}

std::string ErrorPlotSvg(absl::Span<const EvalRow> rows) {
  return Plot(rows, false);
}
std::string MemoryPlotSvg(absl::Span<const EvalRow> rows) {
  return Plot(rows, true);
}

std::string FormatCalibrationText(absl::Span<const CalibrationFit> fits,
                                  double tau) {
  std::string o = absl::StrFormat(
      "# fit of log k_tau(n) = log alpha + C log n, tau = %g\n"
      "%-6s %-5s %8s %10s %7s %6s  %s\n",
      tau, "layer", "head", "C", "alpha", "R^2", "points", "suggested specs");
  for (const CalibrationFit& f : fits) {
    absl::StrAppend(
        &o, absl::StrFormat("%-6d %-5d %8.4f %10.4g %7.4f %6d  %s  %s\n",
                            f.layer, f.head, f.c, f.alpha, f.r2, f.points,
                            f.topk_spec, f.evict_spec));
  }
  return o;
}

std::string FormatCalibrationJson(absl::Span<const CalibrationFit> fits,
                                  absl::Span<const KTauSample> samples,
                                  double tau) {
  std::string o =
      absl::StrCat("{\n  \"tau\": ", JsonNumber(tau), ",\n  \"fits\": [");
  for (size_t i = 0; i < fits.size(); ++i) {
    const CalibrationFit& f = fits[i];
    absl::StrAppend(&o, i == 0 ? "\n" : ",\n", "    {\"layer\": ", f.layer,
                    ", \"head\": ", f.head, ", \"c\": ", JsonNumber(f.c),
                    ", \"alpha\": ", JsonNumber(f.alpha),
                    ", \"r2\": ", JsonNumber(f.r2), ", \"points\": ", f.points,
                    ", \"topk_spec\": ", JsonString(f.topk_spec),
                    ", \"evict_spec\": ", JsonString(f.evict_spec), "}");
  }
  absl::StrAppend(&o, fits.empty() ? "],\n" : "\n  ],\n", "  \"samples\": [");
  for (size_t i = 0; i < samples.size(); ++i) {
    const KTauSample& s = samples[i];
    absl::StrAppend(&o, i == 0 ? "\n" : ",\n", "    {\"layer\": ", s.layer,
                    ", \"head\": ", s.head, ", \"n\": ", s.n,
                    ", \"k_tau\": ", JsonNumber(s.k_tau),
                    ", \"rows\": ", s.rows, "}");
  }
  absl::StrAppend(&o, samples.empty() ? "]\n}\n" : "\n  ]\n}\n");
  return o;
}

}  // namespace kvsketch::eval
