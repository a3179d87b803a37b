// File: server/metrics.h
//
// The server's Prometheus metrics (DESIGN.md §6): one prometheus-cpp Registry
// with every kvsketch_* family, plus a collector of process_* metrics read
// from /proc/self at scrape time. Label sets are small and bounded (RPC
// method x gRPC code name, approximator kind, eviction reason); a session id
// is never a label.
//
// Thread safety: every method may be called from any thread.
#ifndef KVSKETCH_SERVER_METRICS_H_
#define KVSKETCH_SERVER_METRICS_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "core/approximator.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/worker_pool.h"

namespace kvsketch::server {

// process_resident_memory_bytes, process_virtual_memory_bytes,
// process_cpu_seconds_total, process_open_fds, process_start_time_seconds,
// read from /proc/self on every Collect (a few small file reads).
class ProcessCollector : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

// kvsketch_worker_queue_depth (gauge) and kvsketch_worker_rejected_total
// (counter), read from the worker pool at scrape time.
class WorkerPoolCollector : public prometheus::Collectable {
 public:
  // pool may be null (nothing exported) and must outlive its attachment.
  void Attach(const WorkerPool* pool);
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  std::atomic<const WorkerPool*> pool_{nullptr};
};

class Metrics {
 public:
  explicit Metrics(int64_t memory_budget_bytes);

  // Sessions: the gauge follows created/removed; reason is "deleted",
  // "idle_ttl", ...
  void SessionAdded(bool newly_created);
  void SessionRemoved(absl::string_view reason);
  // Shutdown and restarts move sessions without counting them as evicted.
  void SessionUnloaded();

  void AddStateBytes(absl::string_view approximator, int64_t delta);
  void TokensAppended(absl::string_view approximator, int64_t n);
  void QueriesAnswered(absl::string_view approximator, int64_t n);
  void AttendCompute(absl::string_view approximator, double seconds);
  // Every finished RPC: duration, and an error count when code != 0.
  void RpcFinished(absl::string_view method, int code, double seconds);
  // An error count only (Decode entries, which are not RPCs of their own).
  void RpcError(absl::string_view method, int code);
  void DecodeStep();
  // kvsketch_topk_dropped_mass{approximator}: tau of one diagnosed query row.
  void DroppedMass(absl::string_view approximator, double tau);
  // The approximators' own sampled accuracy checks (SelfMeasurements in
  // core/approximator.h), as increments: kvsketch_sampled_recall_checks_total
  // and kvsketch_sampled_recall_total (sum of recall, so the mean is their
  // rate ratio), kvsketch_fit_checks_total, kvsketch_fit_error_total and
  // kvsketch_fit_fallbacks_total, all by approximator kind.
  void SelfMeasured(absl::string_view approximator,
                    const SelfMeasurements& delta);

  // Write-ahead log (server/wal_env.h counts every log and checkpoint
  // file): kvsketch_wal_bytes_total, kvsketch_wal_fsyncs_total and the
  // kvsketch_wal_fsync_seconds histogram; kvsketch_wal_failures_total counts
  // sessions poisoned by a failed write or fsync.
  void WalWrite(int64_t bytes);
  void WalFsync(double seconds);
  void WalFailure();
  // What the last start recovered from the log (gauges):
  // kvsketch_recovered_sessions, _records, _tokens, _torn_bytes.
  void Recovered(int64_t sessions, int64_t records, int64_t tokens,
                 int64_t torn_bytes);

  // The registry (for an HTTP Exposer) and the process collector.
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  std::shared_ptr<ProcessCollector> process_collector() const {
    return process_;
  }
  std::shared_ptr<WorkerPoolCollector> pool_collector() const { return pool_; }

  // Text exposition of everything, as /metrics serves it.
  std::string Scrape() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<ProcessCollector> process_;
  std::shared_ptr<WorkerPoolCollector> pool_;
  prometheus::Gauge* sessions_;
  prometheus::Counter* sessions_created_;
  prometheus::Family<prometheus::Counter>* sessions_evicted_;
  prometheus::Family<prometheus::Counter>* tokens_appended_;
  prometheus::Family<prometheus::Counter>* queries_;
  prometheus::Family<prometheus::Histogram>* rpc_duration_;
  prometheus::Family<prometheus::Histogram>* attend_compute_;
  prometheus::Family<prometheus::Gauge>* state_bytes_;
  prometheus::Family<prometheus::Counter>* rpc_errors_;
  prometheus::Counter* decode_steps_;
  prometheus::Counter* wal_fsyncs_;
  prometheus::Counter* wal_bytes_;
  prometheus::Histogram* wal_fsync_seconds_;
  prometheus::Counter* wal_failures_;
  prometheus::Gauge* recovered_sessions_;
  prometheus::Gauge* recovered_records_;
  prometheus::Gauge* recovered_tokens_;
  prometheus::Gauge* recovered_torn_bytes_;
  prometheus::Family<prometheus::Histogram>* dropped_mass_;
  prometheus::Family<prometheus::Counter>* recall_checks_;
  prometheus::Family<prometheus::Counter>* recall_sum_;
  prometheus::Family<prometheus::Counter>* fit_checks_;
  prometheus::Family<prometheus::Counter>* fit_error_sum_;
  prometheus::Family<prometheus::Counter>* fit_fallbacks_;
};

}  // namespace kvsketch::server

#endif  // KVSKETCH_SERVER_METRICS_H_
