// File: server/server.cc
//
// Server::Start wires the parts together: metrics, memory budget, sessions
// (restored from data_dir), worker pool, the gRPC server (callback service,
// health, reflection) and the optional Prometheus exposer. Shutdown runs the
// same chain backwards: stop accepting and drain gRPC, drain the pool, then
// snapshot sessions to data_dir.
#include "server/server.h"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <memory>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "core/registry.h"
#include "core/status_macros.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "prometheus/exposer.h"
#include "server/attention_service.h"
#include "server/auth.h"
#include "server/metrics.h"
#include "server/session_manager.h"
#include "server/snapshot_store.h"
#include "server/wal_env.h"
#include "server/worker_pool.h"

namespace kvsketch::server {
namespace {

constexpr char kServiceName[] = "kvsketch.v1.Attention";

absl::Status ValidateOptions(const ServerOptions& o) {
  auto bad = [](absl::string_view field, auto value, absl::string_view want) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", value, " (", want, ")"));
  };
  if (o.listen_address.empty()) {
    return absl::InvalidArgumentError("listen_address: empty");
  }
  if (o.max_message_bytes < 4096) {
    return bad("max_message_bytes", o.max_message_bytes, "want >= 4096");
  }
  if (o.max_sessions < 1)
    return bad("max_sessions", o.max_sessions, "want >= 1");
  if (o.memory_budget_bytes < 1) {
    return bad("memory_budget", o.memory_budget_bytes, "want >= 1");
  }
  if (o.max_tokens_per_session < 1) {
    return bad("max_tokens_per_session", o.max_tokens_per_session, "want >= 1");
  }
  if (o.session_idle_ttl < absl::ZeroDuration()) {
    return bad("session_idle_ttl", absl::FormatDuration(o.session_idle_ttl),
               "want >= 0");
  }
  if (o.worker_threads < 0 || o.worker_threads > 1024) {
    return bad("worker_threads", o.worker_threads, "want 0..1024");
  }
  if (o.max_queued_tasks < 1) {
    return bad("max_queued_tasks", o.max_queued_tasks, "want >= 1");
  }
  if (o.stream_pipeline_depth < 1 || o.stream_pipeline_depth > 1024) {
    return bad("stream_pipeline_depth", o.stream_pipeline_depth,
               "want 1..1024");
  }
  if (o.fsync_interval <= absl::ZeroDuration() &&
      o.fsync_policy == durability::FsyncPolicy::kInterval) {
    return bad("fsync_interval", absl::FormatDuration(o.fsync_interval),
               "want > 0 with --fsync=interval");
  }
  if (o.checkpoint_log_bytes < 0) {
    return bad("checkpoint_log_bytes", o.checkpoint_log_bytes, "want >= 0");
  }
  if (o.decode_inline_work_limit < 0) {
    return bad("decode_inline_work_limit", o.decode_inline_work_limit,
               "want >= 0");
  }
  absl::StatusOr<std::string> spec = CanonicalizeSpec(o.default_spec);
  if (!spec.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("default_spec: ", spec.status().message()));
  }
  return absl::OkStatus();
}

class ServerImpl final : public Server {
 public:
  explicit ServerImpl(const ServerOptions& options)
      : options_(options),
        metrics_(options.memory_budget_bytes),
        budget_(options.memory_budget_bytes) {}

  ~ServerImpl() override {
    (void)Shutdown(absl::ZeroDuration());
    metrics_.pool_collector()->Attach(nullptr);  // the pool goes first
  }

  absl::Status Init() {
    SessionManagerOptions so;
    so.max_sessions = options_.max_sessions;
    so.max_tokens_per_session = options_.max_tokens_per_session;
    so.default_spec = options_.default_spec;
    so.idle_ttl = options_.session_idle_ttl;
    // Security files first: a bad one must fail Start before anything
    // (restored sessions, bound ports) exists.
    TlsFiles tls;
    tls.cert_file = options_.tls_cert_file;
    tls.key_file = options_.tls_key_file;
    tls.client_ca_file = options_.tls_client_ca_file;
    KVSKETCH_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> creds,
                              MakeServerCredentials(tls));
    if (!options_.auth_tokens_file.empty()) {
      KVSKETCH_ASSIGN_OR_RETURN(
          auth_, TokenAuthenticator::LoadFile(options_.auth_tokens_file));
    }
    const bool wal = !options_.data_dir.empty() && options_.wal;
    if (wal) {
      wal_env_ = std::make_unique<MeteredEnv>(options_.wal_env != nullptr
                                                  ? options_.wal_env
                                                  : durability::Env::Default(),
                                              &metrics_);
      so.wal_dir = options_.data_dir + "/wal";
      so.durability.fsync_policy = options_.fsync_policy;
      so.durability.fsync_interval = options_.fsync_interval;
      so.durability.checkpoint_log_bytes = options_.checkpoint_log_bytes;
      so.durability.env = wal_env_.get();
    }
    sessions_ = std::make_unique<SessionManager>(so, &budget_, &metrics_);
    if (wal) {
      // The log first: it is the newest state of every session it holds.
      KVSKETCH_ASSIGN_OR_RETURN(
          RecoverySummary summary,
          RecoverAllSessions(options_.data_dir, so.wal_dir, so.durability,
                             options_.skip_corrupt_snapshots, sessions_.get()));
      metrics_.Recovered(summary.sessions, summary.records, summary.tokens,
                         summary.torn_bytes);
      restored_ = summary.sessions;
    }
    if (!options_.data_dir.empty()) {
      KVSKETCH_ASSIGN_OR_RETURN(
          int from_snapshots,
          RestoreAllSessions(options_.data_dir, options_.skip_corrupt_snapshots,
                             sessions_.get(), /*migrate=*/wal));
      restored_ += from_snapshots;
    }
    const int threads =
        options_.worker_threads > 0
            ? options_.worker_threads
            : std::max(1,
                       static_cast<int>(std::thread::hardware_concurrency()));
    pool_ = std::make_unique<WorkerPool>(threads, options_.max_queued_tasks);
    metrics_.pool_collector()->Attach(pool_.get());

    ServiceOptions svc;
    svc.stream_pipeline_depth = options_.stream_pipeline_depth;
    svc.decode_inline_work_limit = options_.decode_inline_work_limit;
    svc.max_message_bytes = options_.max_message_bytes;
    // A snapshot is about as large as the state it holds, and no state may
    // exceed the budget; a little slack covers the envelope and config.
    svc.max_snapshot_bytes = options_.memory_budget_bytes + (int64_t{1} << 20);
    svc.auth = auth_.get();
    service_ = std::make_unique<AttentionService>(svc, sessions_.get(),
                                                  pool_.get(), &metrics_);

    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    grpc::ServerBuilder builder;
    builder.AddListeningPort(options_.listen_address, creds, &grpc_port_);
    builder.RegisterService(service_.get());
    // Reflection is a sync-API service, so gRPC starts sync poller threads
    // (by default a completion queue per core, up to 2 pollers each). Those
    // threads share the process's epoll set with the callback executor that
    // serves Attention, and every socket event they pick up costs a
    // hand-off; one poller is plenty for the rare reflection call.
    builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::NUM_CQS,
                                1);
    builder.SetSyncServerOption(
        grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, 1);
    builder.SetSyncServerOption(
        grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, 1);
    builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
    builder.SetMaxSendMessageSize(options_.max_message_bytes);
    server_ = builder.BuildAndStart();
    if (server_ == nullptr || grpc_port_ == 0) {
      return absl::UnavailableError(absl::StrCat(
          "listen: cannot bind gRPC address ", options_.listen_address));
    }
    grpc::HealthCheckServiceInterface* health =
        server_->GetHealthCheckService();
    if (health != nullptr) {
      health->SetServingStatus("", true);
      health->SetServingStatus(kServiceName, true);
    }

    if (!options_.metrics_address.empty()) {
      // prometheus-cpp reports a bind failure by throwing (civetweb); this is
      // the one place we catch it and turn it into a Status.
      try {
        exposer_ = std::make_unique<prometheus::Exposer>(
            options_.metrics_address, /*num_threads=*/1);
      } catch (const std::exception& e) {
        return absl::UnavailableError(
            absl::StrCat("metrics_listen: cannot bind ",
                         options_.metrics_address, ": ", e.what()));
      }
      exposer_->RegisterCollectable(metrics_.registry());
      exposer_->RegisterCollectable(metrics_.process_collector());
      exposer_->RegisterCollectable(metrics_.pool_collector());
      const std::vector<int> ports = exposer_->GetListeningPorts();
      metrics_port_ = ports.empty() ? 0 : ports.front();
    }
    sessions_->StartReaper();
    return absl::OkStatus();
  }

  int grpc_port() const override { return grpc_port_; }
  int metrics_port() const override { return metrics_port_; }
  std::string ScrapeMetrics() const override { return metrics_.Scrape(); }
  int restored() const { return restored_; }

  absl::Status Shutdown(absl::Duration drain) override {
    absl::MutexLock l(&shutdown_mu_);
    if (shutdown_done_.HasBeenNotified()) return shutdown_status_;
    const absl::Time start = absl::Now();
    const int sessions_at_stop = sessions_ != nullptr ? sessions_->size() : 0;
    if (server_ != nullptr) {
      if (auto* health = server_->GetHealthCheckService()) {
        health->SetServingStatus("", false);
        health->SetServingStatus(kServiceName, false);
      }
      // Stops accepting; in-flight calls get `drain`, then are cancelled.
      // Reactors still finish through the pool, so the pool runs until
      // gRPC's Shutdown has returned.
      server_->Shutdown(std::chrono::system_clock::now() +
                        absl::ToChronoNanoseconds(drain));
    }
    if (pool_ != nullptr) pool_->Stop();
    if (sessions_ != nullptr) sessions_->StopReaper();
    exposer_.reset();
    if (sessions_ != nullptr && !options_.data_dir.empty() && options_.wal &&
        started_ok_) {
      // Checkpoint every session so the next start replays no log; the
      // log is already complete without this, so a failure here loses
      // nothing (it is reported, and the next start replays instead).
      int checkpointed = 0;
      for (const auto& session : sessions_->All()) {
        absl::Status s = session->Checkpoint();
        if (s.ok()) {
          ++checkpointed;
        } else if (shutdown_status_.ok()) {
          shutdown_status_ = s;
        }
      }
      std::fprintf(stderr,
                   "kvsketch-server: checkpointed %d session(s) in %s\n",
                   checkpointed, options_.data_dir.c_str());
    } else if (sessions_ != nullptr && !options_.data_dir.empty() &&
               started_ok_) {
      absl::StatusOr<int> saved =
          SaveAllSessions(options_.data_dir, *sessions_);
      if (saved.ok()) {
        std::fprintf(stderr, "kvsketch-server: saved %d session(s) to %s\n",
                     *saved, options_.data_dir.c_str());
      } else {
        shutdown_status_ = saved.status();
      }
    }
    if (sessions_ != nullptr) sessions_->UnloadAll();
    if (server_ != nullptr) server_->Wait();
    if (started_ok_) {
      std::fprintf(
          stderr, "kvsketch-server: shut down in %s with %d session(s)%s\n",
          absl::FormatDuration(absl::Now() - start).c_str(), sessions_at_stop,
          shutdown_status_.ok() ? "" : " (snapshot or checkpoint failed)");
    }
    shutdown_done_.Notify();
    return shutdown_status_;
  }

  void Wait() override { shutdown_done_.WaitForNotification(); }

  void MarkStarted() { started_ok_ = true; }

 private:
  const ServerOptions options_;
  // Destroyed last-to-first: the gRPC server and service go before the
  // sessions, pool, budget and metrics they use.
  Metrics metrics_;
  MemoryBudget budget_;
  std::unique_ptr<TokenAuthenticator> auth_;  // null: no tokens
  std::unique_ptr<MeteredEnv> wal_env_;       // null: no write-ahead log
  std::unique_ptr<SessionManager> sessions_;
  std::unique_ptr<WorkerPool> pool_;
  std::unique_ptr<AttentionService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
  int restored_ = 0;
  // Only a server that started fully writes snapshots on shutdown: a failed
  // start must not overwrite data_dir with a partial set.
  bool started_ok_ = false;

  absl::Mutex shutdown_mu_;
  absl::Notification shutdown_done_;
  absl::Status shutdown_status_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Start(
    const ServerOptions& options) {
  KVSKETCH_RETURN_IF_ERROR(ValidateOptions(options));
  auto server = std::make_unique<ServerImpl>(options);
  KVSKETCH_RETURN_IF_ERROR(server->Init());
  server->MarkStarted();
  if (!options.data_dir.empty()) {
    std::fprintf(stderr, "kvsketch-server: restored %d session(s) from %s\n",
                 server->restored(), options.data_dir.c_str());
  }
  return std::unique_ptr<Server>(std::move(server));
}

}  // namespace kvsketch::server
