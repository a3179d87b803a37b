// File: server/server.h
//
// The kvsketch gRPC server as a library: main.cc parses flags into
// ServerOptions and calls Start; tests start it on port 0 in-process.
//
//   ServerOptions opts;
//   opts.listen_address = "127.0.0.1:0";
//   opts.metrics_address = "";            // no HTTP exposer in a test
//   auto server = Server::Start(opts);    // StatusOr<unique_ptr<Server>>
//   auto channel = grpc::CreateChannel(
//       absl::StrCat("127.0.0.1:", (*server)->grpc_port()),
//       grpc::InsecureChannelCredentials());
//   ...
//   (*server)->Shutdown(absl::Seconds(5));  // drain, snapshot to data_dir
#ifndef KVSKETCH_SERVER_SERVER_H_
#define KVSKETCH_SERVER_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/durability/durability_options.h"

namespace grpc {
class Channel;
}

namespace kvsketch::server {

struct ServerOptions {
  // --- Network ---
  // gRPC listen address; port 0 picks a free port (see grpc_port()).
  // Loopback by default: reaching the server from another host is an
  // explicit choice (docs/security.md).
  std::string listen_address = "127.0.0.1:50051";
  // Prometheus /metrics HTTP address; "" disables the HTTP exposer (the
  // registry still exists and ScrapeMetrics() works).
  std::string metrics_address = "127.0.0.1:9464";
  // Largest gRPC message accepted or sent.
  int max_message_bytes = 64 << 20;

  // --- Security (server/auth.h, docs/security.md) ---
  // PEM certificate chain and private key: serve gRPC over TLS. Both or
  // neither. The metrics endpoint stays plain HTTP.
  std::string tls_cert_file;
  std::string tls_key_file;
  // PEM CA bundle: mutual TLS, every client must present a certificate it
  // signed. Requires tls_cert_file.
  std::string tls_client_ca_file;
  // `token tenant` lines: every Attention RPC needs `authorization: Bearer
  // <token>` and sees only its tenant's sessions. "" disables.
  std::string auth_tokens_file;

  // --- Limits (over a limit: RESOURCE_EXHAUSTED with a message) ---
  int max_sessions = 4096;
  // Sum of state bytes over all sessions.
  int64_t memory_budget_bytes = int64_t{8} << 30;
  // Tokens per layer of one session (a session's own max_tokens may be lower).
  int64_t max_tokens_per_session = int64_t{1} << 22;
  // A session unused this long is deleted; zero disables.
  absl::Duration session_idle_ttl = absl::Hours(24);

  // --- Execution ---
  // Worker threads computing attention; 0 -> hardware concurrency.
  int worker_threads = 0;
  // Tasks waiting for a worker beyond which new work is refused.
  int max_queued_tasks = 4096;
  // Decode steps of one stream read ahead while earlier ones compute.
  int stream_pipeline_depth = 4;
  // Decode entries estimated at most this many multiply-adds (tokens x
  // queries x query heads x (head_dim + value_dim)) run inline on the gRPC
  // thread when their session is not locked, saving two thread hand-offs
  // (~2^21: well under a millisecond); 0 sends every step to the workers.
  int64_t decode_inline_work_limit = int64_t{1} << 21;

  // --- State ---
  // Approximator spec for sessions that do not name one.
  std::string default_spec = "exact";
  // With a directory: sessions are snapshotted there on Shutdown and restored
  // by Start. "" keeps everything in memory only.
  std::string data_dir;
  // A corrupt snapshot in data_dir fails Start with DataLoss naming the file;
  // with this set it is moved to <data_dir>/corrupt/ instead and Start goes on.
  // The same holds for a corrupt write-ahead log or checkpoint.
  bool skip_corrupt_snapshots = false;

  // --- Durability (with data_dir; docs/durability.md) ---
  // A per-session write-ahead log in <data_dir>/wal/: every state change is
  // durable (under fsync_policy) before it is acknowledged, sessions are
  // recovered at Start, and Shutdown checkpoints them instead of writing
  // .kvss snapshots (old .kvss files are migrated into the log at Start).
  // false: the snapshot-only behaviour (a crash loses everything since the
  // last clean shutdown).
  bool wal = true;
  durability::FsyncPolicy fsync_policy = durability::FsyncPolicy::kEveryBatch;
  absl::Duration fsync_interval = absl::Milliseconds(10);
  // Checkpoint a session (and truncate its log) once its live log exceeds
  // this many bytes; 0 never (only at Shutdown).
  int64_t checkpoint_log_bytes =
      durability::DurabilityOptions{}.checkpoint_log_bytes;
  // Tests: the file layer under the log (e.g. a FaultInjectionEnv); null is
  // the POSIX one. Not owned.
  durability::Env* wal_env = nullptr;
};

class Server {
 public:
  virtual ~Server() = default;

  // Restores sessions from data_dir (if set), binds, starts serving.
  // InvalidArgument for bad options (including unusable TLS or token files;
  // NotFound for unreadable ones), Unavailable if a port cannot be bound,
  // DataLoss if a stored snapshot is corrupt (named in the message).
  static absl::StatusOr<std::unique_ptr<Server>> Start(
      const ServerOptions& options);

  virtual int grpc_port() const = 0;
  // 0 when metrics_address is "".
  virtual int metrics_port() const = 0;
  // The Prometheus text exposition of every metric, as /metrics serves it.
  virtual std::string ScrapeMetrics() const = 0;

  // Stops accepting calls, lets in-flight ones finish for up to `drain`,
  // cancels the rest, then (with data_dir) snapshots every session.
  // Idempotent.
  virtual absl::Status Shutdown(absl::Duration drain) = 0;
  // Blocks until Shutdown has completed.
  virtual void Wait() = 0;
};

}  // namespace kvsketch::server

#endif  // KVSKETCH_SERVER_SERVER_H_
