// File: core/eval/trace.h
//
// An attention trace for the accuracy harness (DESIGN.md §7): the keys and
// values of every (layer, KV head) over n tokens, and a set of query rows,
// each tied to the position it decodes at (it attends to keys 0..pos).
//
// A trace comes from a directory of .npy files (q.npy [layers, q_heads, T, d],
// k.npy [layers, kv_heads, T, d], v.npy [layers, kv_heads, T, dv]; every
// position has a query) or from a synthetic generator of core/synthetic with
// planted structure, which keeps only the query rows the harness will use
// (a 1M-token trace with a query per position would triple its memory).
#ifndef KVSKETCH_CORE_EVAL_TRACE_H_
#define KVSKETCH_CORE_EVAL_TRACE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvsketch::eval {

struct Trace {
  std::string name;  // "dir:<path>" or "<generator>"
  int layers = 1, q_heads = 1, kv_heads = 1;
  int64_t n = 0;  // tokens per (layer, KV head)
  int d = 0, dv = 0;
  float scale = 0;                 // softmax temperature (1/√d)
  std::vector<int64_t> query_pos;  // m positions, ascending, each < n
  std::vector<float> q;            // [layers][q_heads][m][d]
  std::vector<float> k;            // [layers][kv_heads][n][d]
  std::vector<float> v;            // [layers][kv_heads][n][dv]
  std::vector<int64_t> needles;    // planted needle positions (may be empty)
  // Per query row: 1 if scored, 0 for a "warm" row that is only passed to
  // Attend (so policies that learn from queries, like evict, see a query
  // stream between the scored positions). Empty: every row is scored.
  std::vector<uint8_t> scored;

  bool is_scored(int64_t i) const { return scored.empty() || scored[i] != 0; }

  int64_t m() const { return static_cast<int64_t>(query_pos.size()); }
  const float* q_row(int l, int h, int64_t i) const {
    return q.data() + ((static_cast<int64_t>(l) * q_heads + h) * m() + i) * d;
  }
  const float* k_row(int l, int h, int64_t t) const {
    return k.data() + ((static_cast<int64_t>(l) * kv_heads + h) * n + t) * d;
  }
  const float* v_row(int l, int h, int64_t t) const {
    return v.data() + ((static_cast<int64_t>(l) * kv_heads + h) * n + t) * dv;
  }
};

// Reads dir/q.npy, dir/k.npy, dir/v.npy. InvalidArgument naming the file and
// dimension on a rank or shape mismatch (q_heads not a multiple of kv_heads,
// different T or d); NotFound for a missing file.
absl::StatusOr<Trace> LoadTraceDir(const std::string& dir);

// Writes the trace as q/k/v.npy. REQUIRES: query_pos is 0..n-1 (a dense
// trace), else InvalidArgument.
absl::Status SaveTraceDir(const Trace& trace, const std::string& dir);

// Keeps at most m scored query rows, evenly spaced over the trace's rows (the
// last row always kept), plus up to `warm` unscored rows evenly spaced over
// the rest. No-op if the trace has at most m + warm rows (all scored).
void SubsampleQueries(Trace* trace, int64_t m, int64_t warm = 0);

// Keeps every query row (the prefill path needs them all) and leaves m of the
// scored rows scored, evenly spaced over them with the last one kept; the
// others become unscored. No-op if at most m rows are scored.
void MarkScoredQueries(Trace* trace, int64_t m);

// The generator names MakeSyntheticTrace accepts.
const std::vector<std::string>& SyntheticKinds();

// One layer, one head, n tokens:
//   gaussian  GaussianLogits with spread GrowingSpread(n, c0): every query
//             sits at position n-1 (support about n^c0).
//   sinks     PlantedStructure with 4 sinks only; window: local boost only;
//   needles   8 needles only; planted: sinks + window + needles.
// For the planted kinds the m query rows are spread evenly over the second
// half of the stream (after every needle), the last at n-1, and `warm`
// unscored rows are spread evenly over the whole stream (gaussian: ignored).
// With dense = true (planted kinds only) every position keeps its query row,
// the m rows above are the scored ones and `warm` is ignored: a trace for the
// prefill path.
// InvalidArgument for an unknown kind (listing the valid ones), bad sizes or
// dense with gaussian (whose queries all sit at n-1).
absl::StatusOr<Trace> MakeSyntheticTrace(absl::string_view kind, int64_t n,
                                         int d, int64_t m, uint64_t seed,
                                         double c0 = 0.5, int64_t warm = 0,
                                         bool dense = false);

}  // namespace kvsketch::eval

#endif  // KVSKETCH_CORE_EVAL_TRACE_H_
