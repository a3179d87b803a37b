// File: core/eval/harness.h
//
// The accuracy harness behind `kvsketch eval` (issue #3 item 6): runs
// approximator specs over a Trace in-process (no gRPC), one Approximator per
// (layer, KV head), streaming the tokens and querying at the trace's query
// positions, and compares every output with softmax attention computed in
// double precision over the same prefix (O(pos·d) per query row).
//
// Two paths through an approximator:
//   stream   tokens are appended up to each query's position and the query
//            row goes through Attend (the decode path). Warm rows
//            (Trace::scored == 0) are passed to Attend in stream order but
//            neither scored nor timed.
//   prefill  the trace goes through Approximator::Prefill in chunks (the bulk
//            path of the Prefill RPC: exact blocked GEMMs, conv's FFT, zeta's
//            chunked index). Needs a dense trace (a query at every position);
//            every row is computed and the rows marked scored are scored.
//
// Needle retrieval (planted traces only): for a query row at a position after
// every needle, the "needle output" is softmax attention restricted to the
// needle keys (in double). The row retrieves the needles if the approximate
// output has cosine ≥ 0.9 with that needle output. The rate is over all such
// rows; the exact spec's rate is the ceiling for the trace.
#ifndef KVSKETCH_CORE_EVAL_HARNESS_H_
#define KVSKETCH_CORE_EVAL_HARNESS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/approximator.h"
#include "core/eval/trace.h"

namespace kvsketch::eval {

inline constexpr double kNeedleCosine = 0.9;

enum class EvalPath { kStream, kPrefill };

struct EvalOptions {
  EvalPath path = EvalPath::kStream;
  // prefill: tokens per Prefill call (0 = the whole trace in one call).
  int64_t chunk = 0;
};

// "stream" / "prefill".
const char* EvalPathName(EvalPath path);

struct EvalRow {
  std::string label;  // the spec as given (short, for tables and legends)
  std::string spec;   // canonical
  std::string trace;  // Trace::name
  std::string path;   // EvalPathName
  int64_t n = 0;
  int64_t query_rows = 0;  // query rows scored (all layers and heads)
  double rel_l2_mean = 0;  // mean over rows of ||o-r||/||r||
  double rel_l2_max = 0;
  double cosine_mean = 0;  // mean cos(o, r)
  double cosine_min = 0;
  double needle_rate = -1;          // -1: the trace has no needles
  int64_t state_bytes = 0;          // sum of MemoryBytes() after all n tokens
  double bytes_per_token = 0;       // state_bytes / n
  double append_us_per_token = 0;   // per (layer, KV head) token
  double query_us_per_row = 0;      // per query row (Attend call / rows)
  double prefill_us_per_token = 0;  // prefill path: Prefill time per token
                                    // per (layer, KV head)
  // The approximators' own sampled checks, summed over heads (see
  // SelfMeasurements in core/approximator.h): zeta's recall of the true
  // top-k, conv's fit error and fallbacks. -1: none made.
  double self_recall_mean = -1;
  double self_fit_error_mean = -1;
  int64_t self_fit_fallbacks = 0;
};

// True if the trace has a query row at every position 0..n-1 in order.
bool IsDenseTrace(const Trace& trace);

// Called after each (spec, layer, KV head) with a short description.
using ProgressFn = std::function<void(const std::string&)>;

// Optional decorator of one (layer, KV head)'s approximator: gets the
// registry-built base and returns what the harness runs instead (e.g. the
// fitted storage correction, core/regression/correction_file.h).
using HeadWrapper = std::function<absl::StatusOr<std::unique_ptr<Approximator>>(
    std::unique_ptr<Approximator> base, int layer, int kv_head)>;

// One row of a run: a registry spec, its label, and an optional wrapper.
struct EvalSpec {
  std::string label;  // EvalRow::label
  std::string spec;   // registry spec of the (base) approximator
  HeadWrapper wrap;   // null: run the registry's approximator as is
};

// Runs each spec over the trace. InvalidArgument for an unknown spec or a
// prefill run over a trace that is not dense (before any work); errors of
// the approximators are returned with the spec named. A wrapped spec's
// EvalRow::spec is the wrapper's Spec() (e.g. "<canonical>+correction").
absl::StatusOr<std::vector<EvalRow>> RunEval(
    const Trace& trace, absl::Span<const EvalSpec> specs,
    const EvalOptions& options, const ProgressFn& progress = nullptr);
// The same with label = spec and no wrapper.
absl::StatusOr<std::vector<EvalRow>> RunEval(
    const Trace& trace, absl::Span<const std::string> specs,
    const EvalOptions& options, const ProgressFn& progress = nullptr);
inline absl::StatusOr<std::vector<EvalRow>> RunEval(
    const Trace& trace, absl::Span<const std::string> specs) {
  return RunEval(trace, specs, EvalOptions{});
}

// Metric helpers (exposed for tests). out / ref have `size` entries.
double RelativeL2(const float* out, const double* ref, int size);
double Cosine(const float* out, const double* ref, int size);
// out (dv) = softmax(scale·q·k_j) · v_j over the rows j in `rows` (all of
// 0..count-1 if rows is empty), in double.
void ReferenceAttention(const float* q, const float* keys, const float* values,
                        int64_t count, int d, int dv, double scale,
                        absl::Span<const int64_t> rows, double* out);

}  // namespace kvsketch::eval

#endif  // KVSKETCH_CORE_EVAL_HARNESS_H_
