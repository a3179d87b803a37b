// File: core/eval/report.h
//
// Renders `kvsketch eval` results: a Markdown table, a legend that defines
// every column (appended to eval.md), CSV, JSON, and two SVG plots (error and
// memory vs n, one curve per spec and trace).
#ifndef KVSKETCH_CORE_EVAL_REPORT_H_
#define KVSKETCH_CORE_EVAL_REPORT_H_

#include <string>
#include <vector>

#include "absl/types/span.h"
#include "core/eval/calibrate.h"
#include "core/eval/harness.h"

namespace kvsketch::eval {

std::string FormatMarkdown(absl::Span<const EvalRow> rows);
std::string MarkdownLegend();
std::string FormatCsv(absl::Span<const EvalRow> rows);
std::string FormatJson(absl::Span<const EvalRow> rows);
// Mean relative L2 error vs n (log-log).
std::string ErrorPlotSvg(absl::Span<const EvalRow> rows);
// State bytes vs n (log-log).
std::string MemoryPlotSvg(absl::Span<const EvalRow> rows);

std::string FormatCalibrationText(absl::Span<const CalibrationFit> fits,
                                  double tau);
std::string FormatCalibrationJson(absl::Span<const CalibrationFit> fits,
                                  absl::Span<const KTauSample> samples,
                                  double tau);

}  // namespace kvsketch::eval

#endif  // KVSKETCH_CORE_EVAL_REPORT_H_
