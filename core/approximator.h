// File: core/approximator.h
//
// The interface every attention algorithm implements (DESIGN.md §4). One
// Approximator holds the state of ONE attention head of one layer: the keys
// and values appended so far (exactly, or as a sketch), and answers softmax
// attention for queries against them.
//
// Data layout: every matrix is row-major float (core/tensor.h). d is the key
// / query dimension (HeadShape::head_dim), dv the value dimension.
//
// Thread safety (the faiss CPU-index rule): const methods may run
// concurrently with each other; every non-const method needs exclusive
// access. The server's Session enforces this with a reader/writer lock.
//
// Errors: methods return absl::Status. A method that returns an error leaves
// the state exactly as it was before the call.
//
// Instances are made only by the registry (core/registry.h) from a spec
// string; Spec() prints the canonical spec back, and
// CreateApproximator(a->Spec(), shape) makes an equivalent empty instance.
#ifndef KVSKETCH_CORE_APPROXIMATOR_H_
#define KVSKETCH_CORE_APPROXIMATOR_H_

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/io/byte_io.h"
#include "core/tensor.h"

namespace kvsketch {

// Dimensions of one head, fixed at creation.
struct HeadShape {
  int head_dim = 0;   // d: key and query width
  int value_dim = 0;  // dv: value and output width
  float scale = 0;    // softmax temperature: scores are scale * q·k
};

// Per query row: how much of the softmax an approximator that attends to a
// subset S of the keys left out (topk; DESIGN.md issue #3 item 2).
struct QueryDiagnostic {
  double dropped_mass = 0;    // tau = 1 - sum_{j in S} e^{s_j} / sum_j e^{s_j}
  double error_bound = 0;     // 2 tau max_j ||v_j||_2 >= ||o - o_hat||_2
  int64_t keys_selected = 0;  // |S|
};

// Running self-measurements an approximator may keep about its own accuracy
// (all counters only grow; the server exports them as Prometheus counters).
// An approximator never assumes its accuracy: these come from exact checks
// on sampled queries or rows, at a cost the approximator documents.
struct SelfMeasurements {
  // zeta: queries whose retrieval was checked against an exact top-k scan,
  // and the sum of their recall (fraction of the true top-k attended to).
  int64_t recall_checks = 0;
  double recall_sum = 0;
  // conv: bulk fits whose output error was estimated on sampled exact rows,
  // the sum of those relative errors, and the fits that exceeded the
  // threshold and were answered exactly instead.
  int64_t fit_checks = 0;
  double fit_error_sum = 0;
  int64_t fit_fallbacks = 0;

  SelfMeasurements& operator+=(const SelfMeasurements& o) {
    recall_checks += o.recall_checks;
    recall_sum += o.recall_sum;
    fit_checks += o.fit_checks;
    fit_error_sum += o.fit_error_sum;
    fit_fallbacks += o.fit_fallbacks;
    return *this;
  }
};

class Approximator {
 public:
  virtual ~Approximator() = default;

  // Canonical spec string, "kind:key=value,..." with every parameter in its
  // declared order. Parsing it gives an equivalent (empty) approximator.
  virtual std::string Spec() const = 0;

  const HeadShape& shape() const { return shape_; }

  // Tokens appended so far (including ones a sketch has summarised or an
  // eviction policy has dropped: this is the position counter).
  virtual int64_t num_tokens() const = 0;

  // Bytes of heap state this head holds now (keys, values, summaries,
  // indexes), as allocated: the figure the memory budget is charged.
  virtual int64_t MemoryBytes() const = 0;

  // The largest |x| of a key or value this head stores without it becoming
  // ±Inf (half-precision storage rounds larger floats to infinity, which
  // would turn every later answer into NaN). Callers that accept untrusted
  // input check it before Append/Prefill (SessionState does). Default: the
  // largest finite float.
  // An upper bound on how much MemoryBytes() grows when n more tokens are
  // appended (what a memory budget must reserve before the append). The
  // default, n·(d + dv) f32 values, is exact for a store that grows by
  // exactly the new rows; kinds that allocate in chunks (exact) or hold a
  // fixed-size state override it.
  virtual int64_t AppendGrowthBytes(int64_t n) const {
    return n * (int64_t{shape_.head_dim} + shape_.value_dim) *
           static_cast<int64_t>(sizeof(float));
  }

  virtual float MaxStorableMagnitude() const {
    return std::numeric_limits<float>::max();
  }

  // Appends n tokens. REQUIRES: keys is n×d, values is n×dv (checked:
  // InvalidArgument otherwise, and nothing is appended).
  virtual absl::Status Append(ConstMatrixView keys, ConstMatrixView values) = 0;

  // out (m×dv) = softmax(scale · queries · Kᵀ) · V over every token appended
  // so far, one row per query row (the m query heads of a GQA group, or
  // several queries of one head). FailedPrecondition if no token has been
  // appended. May run concurrently with other const calls.
  virtual absl::Status Query(ConstMatrixView queries, MatrixView out) const = 0;

  // As Query, but may also update state that depends on the queries seen
  // (e.g. the accumulated attention mass of a heavy-hitter eviction policy).
  // The serving path calls this one. Default: Query.
  virtual absl::Status Attend(ConstMatrixView queries, MatrixView out) {
    return Query(queries, out);
  }

  // Causal bulk path over T new tokens. keys is T×d, values T×dv; queries is
  // (g·T)×d laid out [g][T] (the g query heads of this KV head's group, each
  // with T rows), out the same layout with dv columns. Query row (h, t)
  // attends to every earlier token plus new tokens 0..t. Appends keys and
  // values. The default appends and attends row by row; algorithms override
  // it with a faster bulk method giving the same result (up to their error).
  virtual absl::Status Prefill(ConstMatrixView queries, int group,
                               ConstMatrixView keys, ConstMatrixView values,
                               MatrixView out);

  // Optional diagnostic: one QueryDiagnostic per query row (out is resized
  // to queries.rows), for the selection Query makes on the current state.
  // Typically O(n d) per row (a full scan), so callers ask only on request.
  // Default: Unimplemented for every argument, including zero rows, so a
  // caller can probe support with an empty queries matrix before mutating
  // anything. Implementations answer zero rows with OK.
  virtual absl::Status QueryDiagnostics(
      ConstMatrixView queries, std::vector<QueryDiagnostic>* out) const;

  // Self-measurements so far (see SelfMeasurements). Default: all zero.
  // Not part of the saved state. Safe to call concurrently with const calls
  // (implementations that update counters from const methods use atomics).
  virtual SelfMeasurements Measurements() const { return {}; }

  // Serialises the state (not the spec or shape, which the caller stores).
  virtual absl::Status SaveState(ByteWriter& writer) const = 0;

  // Replaces the state with one written by SaveState of an approximator with
  // the same spec and shape. DataLoss on malformed input, and then the state
  // is left as it was.
  virtual absl::Status LoadState(ByteReader& reader) = 0;

 protected:
  explicit Approximator(const HeadShape& shape) : shape_(shape) {}

  // Shape checks shared by implementations; errors name the argument.
  absl::Status CheckAppendArgs(ConstMatrixView keys,
                               ConstMatrixView values) const;
  absl::Status CheckQueryArgs(ConstMatrixView queries, MatrixView out) const;
  // Prefill's contract: CheckAppendArgs, group >= 1, queries and out each
  // (group·T) rows of head_dim / value_dim columns. Every bulk override calls
  // this first so all kinds reject the same input with the same message.
  absl::Status CheckPrefillArgs(ConstMatrixView queries, int group,
                                ConstMatrixView keys, ConstMatrixView values,
                                MatrixView out) const;

 private:
  HeadShape shape_;
};

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_APPROXIMATOR_H_
