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
//
// Durability (docs/durability.md): with a SessionLog every state change is
// applied and then logged under mu_ (so log order is apply order), and
// acknowledged only after SessionLog::WaitDurable, which runs without mu_ so
// that steps of other streams join the same group commit. If logging or
// waiting fails the in-memory state may hold a step the log does not: the
// session is *poisoned* -- every later call answers INTERNAL naming the
// log error -- so nobody observes state that recovery would not rebuild.
// Restarting the server recovers the session as its log has it.
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
#include "server/durability/session_log.h"
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
  // `log` (may be null: no durability) already holds the session's create
  // record or checkpoint; once its live bytes exceed checkpoint_log_bytes
  // (> 0) a step that has become durable checkpoints and truncates it.
  Session(std::string id, std::unique_ptr<SessionState> state,
          absl::Time created, MemoryBudget* budget, Metrics* metrics,
          std::string tenant = "",
          std::unique_ptr<durability::SessionLog> log = nullptr,
          int64_t checkpoint_log_bytes = 0);
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
  // With a log, the step is logged and, when pending_seq is null, Step
  // returns once it is durable. With pending_seq, Step does not wait: it
  // stores the record's seq (0: nothing logged) and the caller must call
  // WaitDurable(seq) before acknowledging -- so a caller running several
  // steps pays one group commit for all of them.
  absl::Status Step(int layer, int64_t num_new_tokens,
                    absl::Span<const float> keys,
                    absl::Span<const float> values, int64_t num_queries,
                    absl::Span<const float> queries, absl::Span<float> out,
                    int64_t* tokens_after,
                    std::vector<QueryDiagnostic>* diagnostics = nullptr,
                    uint64_t* pending_seq = nullptr);

  // As Step, but never waits and never runs a large step: returns false,
  // having done nothing, if mu_ is held by another thread or if the step's
  // work estimate (tokens of the layer after the append) * (M + T) *
  // num_query_heads * (head_dim + value_dim) multiply-adds -- an upper bound
  // for exact attention, the costliest kind -- exceeds *work_budget.
  // Otherwise runs the step, subtracts its estimate from *work_budget (so a
  // caller running several steps bounds their total), stores its status in
  // *status and returns true. This lets
  // a gRPC reaction run a small decode step inline instead of paying two
  // thread hand-offs; see server/service_decode.cc. Never waits for the
  // log: REQUIRES pending_seq != nullptr when the session has a log.
  bool TryStep(int64_t* work_budget, int layer, int64_t num_new_tokens,
               absl::Span<const float> keys, absl::Span<const float> values,
               int64_t num_queries, absl::Span<const float> queries,
               absl::Span<float> out, int64_t* tokens_after,
               absl::Status* status,
               std::vector<QueryDiagnostic>* diagnostics = nullptr,
               uint64_t* pending_seq = nullptr);

  // Appends T tokens to every layer, all or nothing: keys is
  // [num_layers, num_kv_heads, T, head_dim]. Token limits are checked for
  // every layer before the first is touched.
  // pending_seq as for Step.
  absl::Status AppendAllLayers(int64_t num_new_tokens,
                               absl::Span<const float> keys,
                               absl::Span<const float> values,
                               uint64_t* pending_seq = nullptr);

  // Returns once log record seq (from Step/AppendAllLayers; 0: none) is
  // durable under the fsync policy; on failure poisons the session and
  // returns the poison. Then checkpoints if the live log is too large.
  absl::Status WaitDurable(uint64_t seq);
  // Checkpoints the log now (clean shutdown: restart then replays nothing).
  // OK without a log. O(state bytes) under the lock, the file I/O outside.
  absl::Status Checkpoint() { return CheckpointIf(/*only_if_large=*/false); }
  bool has_log() const { return has_log_; }

  std::vector<int64_t> tokens_per_layer() const;
  int64_t state_bytes() const;
  absl::Status FillInfo(v1::SessionInfo* info) const;

  // The snapshot payload: session id, then SessionState::Save.
  absl::StatusOr<std::string> SavePayload() const;

  // Releases the session's bytes from budget and gauge and refuses further
  // operations. Idempotent; returns false if already closed. The log is
  // closed (synced; recovery reopens it) or, with delete_log, deleted (a
  // durable delete record, then its files are removed); its status goes to
  // *log_status if given.
  bool Close(bool delete_log = false, absl::Status* log_status = nullptr);

 private:
  // Bytes an append of T tokens to `layer` (-1: every layer) may add to the
  // state, as the approximators allocate them (whole chunks for exact), so
  // the budget reservation covers the real growth. 0 for a layer out of
  // range or T outside [1, 2^32] (the state refuses those).
  int64_t GrowthEstimate(int layer, int64_t num_new_tokens) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);

  absl::Status CheckOpen() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Poisons the session with a log error (first one wins) and returns the
  // poison status.
  absl::Status Poison(const absl::Status& log_error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckpointIf(bool only_if_large);
  absl::Status StepLocked(int layer, int64_t num_new_tokens,
                          absl::Span<const float> keys,
                          absl::Span<const float> values, int64_t num_queries,
                          absl::Span<const float> queries,
                          absl::Span<float> out, int64_t* tokens_after,
                          std::vector<QueryDiagnostic>* diagnostics,
                          uint64_t* seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status AppendAllLayersLocked(int64_t num_new_tokens,
                                     absl::Span<const float> keys,
                                     absl::Span<const float> values,
                                     uint64_t* seq)
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
  const bool has_log_;
  const int64_t checkpoint_log_bytes_;
  // Per layer: whether queries must be logged. Only exact attention is
  // known to keep no query statistics (evict's heavy-hitter mass, and
  // possibly others', depend on the queries), so for exact layers a step is
  // logged with M = 0 and a query-only step is not logged at all.
  std::vector<bool> log_queries_;

  mutable absl::Mutex mu_;
  std::unique_ptr<SessionState> state_ ABSL_GUARDED_BY(mu_);
  std::vector<int64_t> charged_bytes_ ABSL_GUARDED_BY(mu_);  // per layer
  // Per layer: the SelfMeasurements already exported to the metrics.
  std::vector<SelfMeasurements> reported_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  // Shared so that WaitDurable can run without mu_ while Close may drop it.
  std::shared_ptr<durability::SessionLog> log_ ABSL_GUARDED_BY(mu_);
  absl::Status poison_ ABSL_GUARDED_BY(mu_);
  bool checkpointing_ ABSL_GUARDED_BY(mu_) = false;
};

// Kind of a canonical spec: the text before ':'.
std::string SpecKind(const std::string& spec);

}  // namespace kvsketch::server

#endif  // KVSKETCH_SERVER_SESSION_H_
