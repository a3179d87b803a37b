// File: server/session.h
//
// One served session: a core SessionState behind a mutex, plus the server's
// bookkeeping (id, times, bytes charged to the memory budget per layer). All
// mutating operations go through here so the budget, the state_bytes gauge
// and the token/query counters stay equal to the state they describe.
//
// Locking: mu_ guards the state. Step needs it exclusively (even a query-only
// step goes through Approximator::Attend, which may update query
// statistics); Info and Save take it shared. A closed (deleted, evicted or
// unloaded) session refuses every operation with NotFound; callers that
// still hold the shared_ptr are safe.
#ifndef KVSKETCH_SERVER_SESSION_H_
#define KVSKETCH_SERVER_SESSION_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/session_state.h"
#include "kvsketch/v1/attention.pb.h"
#include "server/memory_budget.h"
#include "server/metrics.h"

namespace kvsketch::server {

class Session {
 public:
  // Charges the state's current bytes to budget and metrics (unconditionally:
  // callers check limits first). REQUIRES: state != nullptr, budget and
  // metrics outlive the session.
  // `tenant` owns the session ("" when the server runs without tokens); it
  // is not part of the snapshot payload (docs/security.md).
  Session(std::string id, std::unique_ptr<SessionState> state,
          absl::Time created, MemoryBudget* budget, Metrics* metrics,
          std::string tenant = "");
  ~Session();

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const std::string& id() const { return id_; }
  const std::string& tenant() const { return tenant_; }
  // Immutable after construction: safe without the lock.
  const SessionConfig& config() const { return config_; }
  // Approximator kind ("exact", "sketch", ...) of a layer, for metric labels.
  const std::string& layer_kind(int layer) const { return kinds_[layer]; }
  absl::Time created() const { return created_; }
  absl::Time last_used() const;
  void Touch(absl::Time now);

  // One step of one layer (SessionState::Step): appends num_new_tokens,
  // answers num_queries into out. With diagnostics != nullptr also fills one
  // QueryDiagnostic per query row (SessionState::QueryDiagnostics) and
  // observes kvsketch_topk_dropped_mass; checked before anything changes:
  // FailedPrecondition if the layer's approximator has no diagnostics,
  // InvalidArgument if num_new_tokens > 1. Reserves the growth estimate against
  // the memory budget first. REQUIRES: spans sized per the session's config
  // (the service validates with field names; SessionState re-checks).
  absl::Status Step(int layer, int64_t num_new_tokens,
                    absl::Span<const float> keys,
                    absl::Span<const float> values, int64_t num_queries,
                    absl::Span<const float> queries, absl::Span<float> out,
                    int64_t* tokens_after,
                    std::vector<QueryDiagnostic>* diagnostics = nullptr);

  // As Step, but never waits and never runs a large step: returns false,
  // having done nothing, if mu_ is held by another thread or if the step's
  // work estimate (tokens of the layer after the append) * (M + T) *
  // num_query_heads * (head_dim + value_dim) multiply-adds -- an upper bound
  // for exact attention, the costliest kind -- exceeds *work_budget.
  // Otherwise runs the step, subtracts its estimate from *work_budget (so a
  // caller running several steps bounds their total), stores its status in
  // *status and returns true. This lets
  // a gRPC reaction run a small decode step inline instead of paying two
  // thread hand-offs; see server/service_decode.cc.
  bool TryStep(int64_t* work_budget, int layer, int64_t num_new_tokens,
               absl::Span<const float> keys, absl::Span<const float> values,
               int64_t num_queries, absl::Span<const float> queries,
               absl::Span<float> out, int64_t* tokens_after,
               absl::Status* status,
               std::vector<QueryDiagnostic>* diagnostics = nullptr);

  // Appends T tokens to every layer, all or nothing: keys is
  // [num_layers, num_kv_heads, T, head_dim]. Token limits are checked for
  // every layer before the first is touched.
  absl::Status AppendAllLayers(int64_t num_new_tokens,
                               absl::Span<const float> keys,
                               absl::Span<const float> values);

  std::vector<int64_t> tokens_per_layer() const;
  int64_t state_bytes() const;
  absl::Status FillInfo(v1::SessionInfo* info) const;

  // The snapshot payload: session id, then SessionState::Save.
  absl::StatusOr<std::string> SavePayload() const;

  // Releases the session's bytes from budget and gauge and refuses further
  // operations. Idempotent; returns false if already closed.
  bool Close();

  // Conservative bytes an append of T tokens to `layers` layers may add:
  // f32 keys and values for every KV head.
  int64_t GrowthEstimate(int64_t num_new_tokens, int layers) const;

 private:
  absl::Status CheckOpen() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::Status StepLocked(int layer, int64_t num_new_tokens,
                          absl::Span<const float> keys,
                          absl::Span<const float> values, int64_t num_queries,
                          absl::Span<const float> queries,
                          absl::Span<float> out, int64_t* tokens_after,
                          std::vector<QueryDiagnostic>* diagnostics)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Re-measures a layer and moves budget and gauge by the difference.
  void Recharge(int layer) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Exports what the layer's approximators measured about themselves since
  // the last call (counter increments).
  void ReportMeasurements(int layer) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string id_;
  const std::string tenant_;
  const SessionConfig config_;
  const std::vector<std::string> kinds_;
  const absl::Time created_;
  MemoryBudget* const budget_;
  Metrics* const metrics_;
  std::atomic<int64_t> last_used_micros_;

  mutable absl::Mutex mu_;
  std::unique_ptr<SessionState> state_ ABSL_GUARDED_BY(mu_);
  std::vector<int64_t> charged_bytes_ ABSL_GUARDED_BY(mu_);  // per layer
  // Per layer: the SelfMeasurements already exported to the metrics.
  std::vector<SelfMeasurements> reported_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

// Kind of a canonical spec: the text before ':'.
std::string SpecKind(const std::string& spec);

}  // namespace kvsketch::server

#endif  // KVSKETCH_SERVER_SESSION_H_
