// File: core/eval/calibrate.h
//
// Calibration of the top-k budget k(n) = α·n^C (papers/A_B.md §B.3; issue #3
// item 4). For each (layer, query head) and prefix length n, k_τ(n) is the
// smallest number of keys holding 1−τ of the softmax mass of a query at
// position n−1 (computed in double, O(n·d + n log n) per query). A least-
// squares line through (log n, log k_τ) gives log α + C·log n, with R².
#ifndef KVSKETCH_CORE_EVAL_CALIBRATE_H_
#define KVSKETCH_CORE_EVAL_CALIBRATE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/eval/trace.h"

namespace kvsketch::eval {

struct KTauSample {
  int layer = 0, head = 0;  // query head
  int64_t n = 0;            // prefix length (keys attended)
  double k_tau = 0;         // geometric mean over the query rows used
  int rows = 0;
};

struct CalibrationFit {
  int layer = 0, head = 0;
  double c = 0, alpha = 0, r2 = 0;
  int points = 0;
  std::string topk_spec, evict_spec;  // suggested specs
};

// Smallest k with the top-k softmax weights summing to ≥ 1−τ, for one query
// over `count` keys. REQUIRES: count ≥ 1, 0 ≤ tau < 1.
int64_t SmallestKForMass(const float* q, const float* keys, int64_t count,
                         int d, double scale, double tau);

// For each prefix p (ascending, ≤ n), uses up to rows_per_prefix query rows
// of the trace whose position is the largest ones ≤ p−1 and > p/2 (each row
// attends to its own prefix pos+1). InvalidArgument for tau outside [0, 1),
// a prefix outside [2, n], or a prefix with no query row.
absl::StatusOr<std::vector<KTauSample>> MeasureKTau(
    const Trace& trace, double tau, absl::Span<const int64_t> prefixes,
    int rows_per_prefix);

// One fit per (layer, head) found in `samples` (needs ≥ 2 distinct n per
// head, else InvalidArgument). Suggested specs use α rounded up (to 3
// significant digits) and C clamped to [0.01, 0.99].
absl::StatusOr<std::vector<CalibrationFit>> FitCalibration(
    absl::Span<const KTauSample> samples);

}  // namespace kvsketch::eval

#endif  // KVSKETCH_CORE_EVAL_CALIBRATE_H_
