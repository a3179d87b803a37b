// File: server/metrics.cc
#include "server/metrics.h"

#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "prometheus/text_serializer.h"
#include "server/grpc_status.h"

namespace kvsketch::server {
namespace {

// Latency buckets from 50 µs to 10 s, roughly 1-2-5 per decade.
prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2,
          5e-2, 0.1,  0.2,  0.5,  1.0,  2.0,  5.0,  10.0};
}

prometheus::MetricFamily GaugeFamily(
    const std::string& name, const std::string& help, double value,
    prometheus::MetricType type = prometheus::MetricType::Gauge) {
  prometheus::MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type;
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(metric);
  return family;
}

// Fields of /proc/self/stat after the parenthesised command name (which may
// itself contain spaces), so fields[0] is field 3 ("state") of proc(5).
std::vector<std::string> ReadStatFields(const char* path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  const size_t close = line.rfind(')');
  if (close == std::string::npos || close + 2 > line.size()) return {};
  return absl::StrSplit(line.substr(close + 2), ' ', absl::SkipEmpty());
}

double BootTimeSeconds() {
  std::ifstream in("/proc/stat");
  std::string key;
  double value = 0;
  while (in >> key) {
    if (key == "btime") {
      in >> value;
      return value;
    }
    std::string rest;
    std::getline(in, rest);
  }
  return 0;
}

int CountOpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  int n = 0;
  while (struct dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n - 1;  // the descriptor opendir itself holds
}

}  // namespace

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  std::vector<prometheus::MetricFamily> out;
  const std::vector<std::string> f = ReadStatFields("/proc/self/stat");
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  // proc(5) field numbers: utime 14, stime 15, starttime 22, vsize 23, rss 24;
  // f[i] is field i + 3.
  if (f.size() >= 22 && ticks > 0) {
    double utime = 0, stime = 0, start = 0, vsize = 0, rss = 0;
    (void)absl::SimpleAtod(f[11], &utime);
    (void)absl::SimpleAtod(f[12], &stime);
    (void)absl::SimpleAtod(f[19], &start);
    (void)absl::SimpleAtod(f[20], &vsize);
    (void)absl::SimpleAtod(f[21], &rss);
    out.push_back(GaugeFamily("process_cpu_seconds_total",
                              "Total user and system CPU time in seconds.",
                              (utime + stime) / ticks,
                              prometheus::MetricType::Counter));
    out.push_back(GaugeFamily("process_virtual_memory_bytes",
                              "Virtual memory size in bytes.", vsize));
    out.push_back(GaugeFamily("process_resident_memory_bytes",
                              "Resident memory size in bytes.", rss * page));
    out.push_back(
        GaugeFamily("process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    BootTimeSeconds() + start / ticks));
  }
  out.push_back(GaugeFamily(
      "process_open_fds", "Number of open file descriptors.", CountOpenFds()));
  return out;
}

void WorkerPoolCollector::Attach(const WorkerPool* pool) {
  pool_.store(pool, std::memory_order_release);
}

std::vector<prometheus::MetricFamily> WorkerPoolCollector::Collect() const {
  const WorkerPool* pool = pool_.load(std::memory_order_acquire);
  if (pool == nullptr) return {};
  return {GaugeFamily("kvsketch_worker_queue_depth",
                      "Tasks waiting for a worker thread.",
                      static_cast<double>(pool->queued())),
          GaugeFamily("kvsketch_worker_rejected_total",
                      "Tasks refused because the worker queue was full "
                      "(answered RESOURCE_EXHAUSTED).",
                      static_cast<double>(pool->rejected_total()),
                      prometheus::MetricType::Counter)};
}

Metrics::Metrics(int64_t memory_budget_bytes)
    : registry_(std::make_shared<prometheus::Registry>()),
      process_(std::make_shared<ProcessCollector>()),
      pool_(std::make_shared<WorkerPoolCollector>()) {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  sessions_ = &BuildGauge()
                   .Name("kvsketch_sessions")
                   .Help("Sessions currently held.")
                   .Register(*registry_)
                   .Add({});
  sessions_created_ = &BuildCounter()
                           .Name("kvsketch_sessions_created_total")
                           .Help("Sessions created or imported.")
                           .Register(*registry_)
                           .Add({});
  sessions_evicted_ = &BuildCounter()
                           .Name("kvsketch_sessions_evicted_total")
                           .Help("Sessions removed, by reason.")
                           .Register(*registry_);
  // Export the known reasons at 0 from the start so rate() works at once.
  for (const char* reason : {"deleted", "idle_ttl"}) {
    sessions_evicted_->Add({{"reason", reason}});
  }
  tokens_appended_ = &BuildCounter()
                          .Name("kvsketch_tokens_appended_total")
                          .Help("Layer-tokens appended, by approximator kind.")
                          .Register(*registry_);
  queries_ = &BuildCounter()
                  .Name("kvsketch_queries_total")
                  .Help(
                      "Query rows answered (per query head and token), by "
                      "approximator kind.")
                  .Register(*registry_);
  rpc_duration_ = &BuildHistogram()
                       .Name("kvsketch_rpc_duration_seconds")
                       .Help("RPC wall time from start to finish, by method.")
                       .Register(*registry_);
  attend_compute_ = &BuildHistogram()
                         .Name("kvsketch_attend_compute_seconds")
                         .Help(
                             "Compute time of one attention operation on "
                             "one layer, by approximator kind.")
                         .Register(*registry_);
  dropped_mass_ = &BuildHistogram()
                       .Name("kvsketch_topk_dropped_mass")
                       .Help(
                           "Softmax mass tau left out by a subset-attention "
                           "approximator, per diagnosed query row (requests "
                           "with want_diagnostics only).")
                       .Register(*registry_);
  recall_checks_ = &BuildCounter()
                        .Name("kvsketch_sampled_recall_checks_total")
                        .Help(
                            "Queries whose retrieval an approximator checked "
                            "against an exact top-k scan (zeta's "
                            "recall_sample), by approximator kind.")
                        .Register(*registry_);
  recall_sum_ = &BuildCounter()
                     .Name("kvsketch_sampled_recall_total")
                     .Help(
                         "Sum of the measured recall of the true top-k over "
                         "the checked queries; mean recall = rate of this / "
                         "rate of kvsketch_sampled_recall_checks_total.")
                     .Register(*registry_);
  fit_checks_ = &BuildCounter()
                     .Name("kvsketch_fit_checks_total")
                     .Help(
                         "Bulk fits (conv Prefill) whose output error was "
                         "estimated on sampled exact rows.")
                     .Register(*registry_);
  fit_error_sum_ = &BuildCounter()
                        .Name("kvsketch_fit_error_total")
                        .Help(
                            "Sum of the sampled relative output errors of "
                            "the checked fits; mean = rate of this / rate of "
                            "kvsketch_fit_checks_total.")
                        .Register(*registry_);
  fit_fallbacks_ = &BuildCounter()
                        .Name("kvsketch_fit_fallbacks_total")
                        .Help(
                            "Fits whose sampled error exceeded the threshold "
                            "and were answered exactly instead.")
                        .Register(*registry_);
  state_bytes_ = &BuildGauge()
                      .Name("kvsketch_state_bytes")
                      .Help(
                          "Bytes of attention state held, by approximator "
                          "kind.")
                      .Register(*registry_);
  BuildGauge()
      .Name("kvsketch_memory_budget_bytes")
      .Help("Configured budget for the sum of state bytes.")
      .Register(*registry_)
      .Add({})
      .Set(static_cast<double>(memory_budget_bytes));
  rpc_errors_ = &BuildCounter()
                     .Name("kvsketch_rpc_errors_total")
                     .Help(
                         "RPCs that failed (method DecodeEntry: single "
                         "entries of Decode steps), by method "
                         "and gRPC code.")
                     .Register(*registry_);
  decode_steps_ = &BuildCounter()
                       .Name("kvsketch_decode_steps_total")
                       .Help("Decode steps answered.")
                       .Register(*registry_)
                       .Add({});
  // Write-ahead log (docs/durability.md): exported from the start at 0 so
  // rate() works at once, and so a server without --data_dir shows them
  // flat rather than absent.
  wal_fsyncs_ = &BuildCounter()
                     .Name("kvsketch_wal_fsyncs_total")
                     .Help(
                         "fsync(2) calls on write-ahead log and checkpoint "
                         "files.")
                     .Register(*registry_)
                     .Add({});
  wal_bytes_ = &BuildCounter()
                    .Name("kvsketch_wal_bytes_total")
                    .Help(
                        "Bytes written to write-ahead log and checkpoint "
                        "files.")
                    .Register(*registry_)
                    .Add({});
  wal_fsync_seconds_ = &BuildHistogram()
                            .Name("kvsketch_wal_fsync_seconds")
                            .Help(
                                "Duration of one fsync(2) of a log or "
                                "checkpoint file.")
                            .Register(*registry_)
                            .Add({}, LatencyBuckets());
  wal_failures_ = &BuildCounter()
                       .Name("kvsketch_wal_failures_total")
                       .Help(
                           "Sessions poisoned by a failed log write or "
                           "fsync (they answer INTERNAL until restart).")
                       .Register(*registry_)
                       .Add({});
  auto gauge = [this](const char* name, const char* help) {
    return &BuildGauge().Name(name).Help(help).Register(*registry_).Add({});
  };
  recovered_sessions_ = gauge("kvsketch_recovered_sessions",
                              "Sessions recovered from the write-ahead log "
                              "at the last start.");
  recovered_records_ = gauge("kvsketch_recovered_records",
                             "Log records replayed at the last start.");
  recovered_tokens_ = gauge("kvsketch_recovered_tokens",
                            "Layer-tokens replayed from the log at the "
                            "last start.");
  recovered_torn_bytes_ = gauge("kvsketch_recovered_torn_bytes",
                                "Bytes of torn log tails dropped at the "
                                "last start.");
}

void Metrics::WalWrite(int64_t bytes) {
  wal_bytes_->Increment(static_cast<double>(bytes));
}

void Metrics::WalFsync(double seconds) {
  wal_fsyncs_->Increment();
  wal_fsync_seconds_->Observe(seconds);
}

void Metrics::WalFailure() { wal_failures_->Increment(); }

void Metrics::Recovered(int64_t sessions, int64_t records, int64_t tokens,
                        int64_t torn_bytes) {
  recovered_sessions_->Set(static_cast<double>(sessions));
  recovered_records_->Set(static_cast<double>(records));
  recovered_tokens_->Set(static_cast<double>(tokens));
  recovered_torn_bytes_->Set(static_cast<double>(torn_bytes));
}

void Metrics::SessionAdded(bool newly_created) {
  sessions_->Increment();
  if (newly_created) sessions_created_->Increment();
}

void Metrics::SessionRemoved(absl::string_view reason) {
  sessions_->Decrement();
  sessions_evicted_->Add({{"reason", std::string(reason)}}).Increment();
}

void Metrics::SessionUnloaded() { sessions_->Decrement(); }

void Metrics::AddStateBytes(absl::string_view approximator, int64_t delta) {
  if (delta == 0) return;
  state_bytes_->Add({{"approximator", std::string(approximator)}})
      .Increment(static_cast<double>(delta));
}

void Metrics::TokensAppended(absl::string_view approximator, int64_t n) {
  if (n <= 0) return;
  tokens_appended_->Add({{"approximator", std::string(approximator)}})
      .Increment(static_cast<double>(n));
}

void Metrics::QueriesAnswered(absl::string_view approximator, int64_t n) {
  if (n <= 0) return;
  queries_->Add({{"approximator", std::string(approximator)}})
      .Increment(static_cast<double>(n));
}

void Metrics::AttendCompute(absl::string_view approximator, double seconds) {
  attend_compute_
      ->Add({{"approximator", std::string(approximator)}}, LatencyBuckets())
      .Observe(seconds);
}

void Metrics::DroppedMass(absl::string_view approximator, double tau) {
  // tau in [0, 1]; the small buckets matter (a good selection drops < 1%).
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0};
  dropped_mass_->Add({{"approximator", std::string(approximator)}}, kBuckets)
      .Observe(tau);
}

void Metrics::SelfMeasured(absl::string_view approximator,
                           const SelfMeasurements& delta) {
  const prometheus::Labels labels = {
      {"approximator", std::string(approximator)}};
  if (delta.recall_checks > 0) {
    recall_checks_->Add(labels).Increment(
        static_cast<double>(delta.recall_checks));
    recall_sum_->Add(labels).Increment(delta.recall_sum);
  }
  if (delta.fit_checks > 0) {
    fit_checks_->Add(labels).Increment(static_cast<double>(delta.fit_checks));
    fit_error_sum_->Add(labels).Increment(delta.fit_error_sum);
  }
  if (delta.fit_fallbacks > 0) {
    fit_fallbacks_->Add(labels).Increment(
        static_cast<double>(delta.fit_fallbacks));
  }
}

void Metrics::RpcFinished(absl::string_view method, int code, double seconds) {
  rpc_duration_->Add({{"method", std::string(method)}}, LatencyBuckets())
      .Observe(seconds);
  if (code != 0) RpcError(method, code);
}

void Metrics::RpcError(absl::string_view method, int code) {
  rpc_errors_
      ->Add({{"method", std::string(method)},
             {"code", std::string(GrpcCodeName(code))}})
      .Increment();
}

void Metrics::DecodeStep() { decode_steps_->Increment(); }

std::string Metrics::Scrape() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  for (const prometheus::Collectable* c :
       {static_cast<const prometheus::Collectable*>(pool_.get()),
        static_cast<const prometheus::Collectable*>(process_.get())}) {
    std::vector<prometheus::MetricFamily> more = c->Collect();
    families.insert(families.end(), more.begin(), more.end());
  }
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace kvsketch::server
