// File: server/main.cc
//
// kvsketch-server: flags -> ServerOptions -> Server::Start, then wait for
// SIGTERM/SIGINT. The signals are blocked in every thread and taken by a
// dedicated sigwait() thread, which calls Shutdown as ordinary code (never
// from a signal handler).
#include <pthread.h>
#include <signal.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/registry.h"
#include "server/auth.h"
#include "server/server.h"

namespace {

// Byte sizes with an optional binary suffix: 1048576, 512K, 512M, 8G, 1T
// (also KiB/MiB/GiB/TiB and KB/MB/GB/TB, all powers of 1024).
struct ByteSize {
  int64_t bytes = 0;
};

bool AbslParseFlag(absl::string_view text, ByteSize* out, std::string* error) {
  std::string s = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(text));
  int shift = 0;
  for (const auto& [suffix, bits] : {std::pair<const char*, int>{"KIB", 10},
                                     {"MIB", 20},
                                     {"GIB", 30},
                                     {"TIB", 40},
                                     {"KB", 10},
                                     {"MB", 20},
                                     {"GB", 30},
                                     {"TB", 40},
                                     {"K", 10},
                                     {"M", 20},
                                     {"G", 30},
                                     {"T", 40},
                                     {"B", 0}}) {
    if (absl::EndsWith(s, suffix)) {
      s.resize(s.size() - std::string(suffix).size());
      shift = bits;
      break;
    }
  }
  int64_t value = 0;
  if (!absl::SimpleAtoi(s, &value) || value < 0) {
    *error = "want a non-negative byte count like 1048576, 512M or 8G";
    return false;
  }
  if (shift > 0 && value > (INT64_MAX >> shift)) {
    *error = "byte count overflows";
    return false;
  }
  out->bytes = value << shift;
  return true;
}

std::string AbslUnparseFlag(ByteSize size) {
  for (const auto& [suffix, bits] : {std::pair<const char*, int>{"T", 40},
                                     {"G", 30},
                                     {"M", 20},
                                     {"K", 10}}) {
    const int64_t unit = int64_t{1} << bits;
    if (size.bytes >= unit && size.bytes % unit == 0) {
      return absl::StrCat(size.bytes / unit, suffix);
    }
  }
  return absl::StrCat(size.bytes);
}

const kvsketch::server::ServerOptions kDefaults;

}  // namespace

ABSL_FLAG(std::string, listen, kDefaults.listen_address,
          "gRPC listen address (host:port; port 0 picks a free one)");
ABSL_FLAG(std::string, tls_cert, kDefaults.tls_cert_file,
          "PEM certificate chain: serve gRPC over TLS (with --tls_key)");
ABSL_FLAG(std::string, tls_key, kDefaults.tls_key_file,
          "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, kDefaults.tls_client_ca_file,
          "PEM CA bundle: mutual TLS, clients must present a certificate "
          "signed by it");
ABSL_FLAG(std::string, auth_tokens_file, kDefaults.auth_tokens_file,
          "file of 'token tenant' lines ('#' comments): every RPC needs "
          "'authorization: Bearer <token>' and sees only its tenant's "
          "sessions; empty disables");
ABSL_FLAG(std::string, metrics_listen, kDefaults.metrics_address,
          "Prometheus /metrics HTTP address; empty disables it");
ABSL_FLAG(int, max_sessions, kDefaults.max_sessions,
          "maximum live sessions; more are refused with RESOURCE_EXHAUSTED");
ABSL_FLAG(ByteSize, memory_budget, ByteSize{kDefaults.memory_budget_bytes},
          "budget for the sum of session state bytes (e.g. 512M, 8G); an "
          "append that would cross it is refused");
ABSL_FLAG(int64_t, max_tokens_per_session, kDefaults.max_tokens_per_session,
          "maximum tokens per layer of one session");
ABSL_FLAG(absl::Duration, session_idle_ttl, kDefaults.session_idle_ttl,
          "delete sessions unused this long (e.g. 30m, 24h); 0 disables");
ABSL_FLAG(int, worker_threads, kDefaults.worker_threads,
          "attention worker threads; 0 = hardware concurrency");
ABSL_FLAG(int, max_queued_tasks, kDefaults.max_queued_tasks,
          "queued tasks beyond which requests get RESOURCE_EXHAUSTED");
ABSL_FLAG(int, stream_pipeline_depth, kDefaults.stream_pipeline_depth,
          "Decode steps of one stream read ahead while earlier ones compute");
ABSL_FLAG(int64_t, decode_inline_work_limit, kDefaults.decode_inline_work_limit,
          "Decode entries up to this many multiply-adds run on the gRPC "
          "thread when their session is free; 0 = always on the workers");
ABSL_FLAG(ByteSize, max_message_bytes, ByteSize{kDefaults.max_message_bytes},
          "largest gRPC message received or sent (e.g. 64M)");
ABSL_FLAG(std::string, default_spec, kDefaults.default_spec,
          "approximator spec for sessions that name none (kinds listed above)");
ABSL_FLAG(std::string, data_dir, kDefaults.data_dir,
          "directory for session snapshots: written on shutdown, restored at "
          "start; empty keeps sessions in memory only");
ABSL_FLAG(bool, skip_corrupt_snapshots, kDefaults.skip_corrupt_snapshots,
          "at start, move corrupt snapshots to <data_dir>/corrupt/ instead "
          "of failing");
ABSL_FLAG(bool, wal, kDefaults.wal,
          "with --data_dir: a per-session write-ahead log in <data_dir>/wal "
          "(every acknowledged token survives kill -9; sessions recovered at "
          "start, checkpointed at shutdown); false: snapshots at shutdown "
          "only");
ABSL_FLAG(std::string, fsync, "every_batch",
          "write-ahead log fsync policy: every_batch (an ack waits for an "
          "fsync shared by concurrent steps), interval (at most one fsync "
          "per --fsync_interval per session), off (ack after write(2): "
          "survives kill -9, not power loss)");
ABSL_FLAG(absl::Duration, fsync_interval, kDefaults.fsync_interval,
          "with --fsync=interval: minimum time between two fsyncs of a log");
ABSL_FLAG(ByteSize, checkpoint_log_bytes,
          ByteSize{kDefaults.checkpoint_log_bytes},
          "checkpoint a session and truncate its log once the log exceeds "
          "this (bounds restart time and disk use); 0 = only at shutdown");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(10),
          "on SIGTERM/SIGINT, time in-flight calls get before cancellation");

int main(int argc, char** argv) {
  // --help lists the flags of this file (absl's default filter looks for a
  // file named after the binary).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view path) {
    return absl::EndsWith(path, "server/main.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage(absl::StrCat(
      "kvsketch streaming attention server.\n\nUsage: kvsketch-server "
      "[--flag=value ...]\n\nApproximator specs:\n",
      kvsketch::DescribeRegisteredKinds()));
  absl::ParseCommandLine(argc, argv);

  // Block the shutdown signals before any thread exists, so every thread
  // inherits the mask and only sigwait() below receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  kvsketch::server::ServerOptions o;
  o.listen_address = absl::GetFlag(FLAGS_listen);
  o.metrics_address = absl::GetFlag(FLAGS_metrics_listen);
  o.max_sessions = absl::GetFlag(FLAGS_max_sessions);
  o.memory_budget_bytes = absl::GetFlag(FLAGS_memory_budget).bytes;
  o.max_tokens_per_session = absl::GetFlag(FLAGS_max_tokens_per_session);
  o.session_idle_ttl = absl::GetFlag(FLAGS_session_idle_ttl);
  o.worker_threads = absl::GetFlag(FLAGS_worker_threads);
  o.max_queued_tasks = absl::GetFlag(FLAGS_max_queued_tasks);
  o.stream_pipeline_depth = absl::GetFlag(FLAGS_stream_pipeline_depth);
  o.decode_inline_work_limit = absl::GetFlag(FLAGS_decode_inline_work_limit);
  const int64_t max_message = absl::GetFlag(FLAGS_max_message_bytes).bytes;
  if (max_message > INT32_MAX) {
    std::fprintf(stderr,
                 "kvsketch-server: --max_message_bytes: %lld exceeds 2G-1\n",
                 static_cast<long long>(max_message));
    return 2;
  }
  o.max_message_bytes = static_cast<int>(max_message);
  o.default_spec = absl::GetFlag(FLAGS_default_spec);
  o.data_dir = absl::GetFlag(FLAGS_data_dir);
  o.skip_corrupt_snapshots = absl::GetFlag(FLAGS_skip_corrupt_snapshots);
  o.wal = absl::GetFlag(FLAGS_wal);
  {
    auto policy = kvsketch::server::durability::ParseFsyncPolicy(
        absl::GetFlag(FLAGS_fsync));
    if (!policy.ok()) {
      std::fprintf(stderr, "kvsketch-server: --fsync: %s\n",
                   std::string(policy.status().message()).c_str());
      return 2;
    }
    o.fsync_policy = *policy;
  }
  o.fsync_interval = absl::GetFlag(FLAGS_fsync_interval);
  o.checkpoint_log_bytes = absl::GetFlag(FLAGS_checkpoint_log_bytes).bytes;
  o.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  o.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  o.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  o.auth_tokens_file = absl::GetFlag(FLAGS_auth_tokens_file);
  const absl::Duration drain = absl::GetFlag(FLAGS_drain_timeout);

  auto server = kvsketch::server::Server::Start(o);
  if (!server.ok()) {
    std::fprintf(stderr, "kvsketch-server: cannot start: %s\n",
                 server.status().ToString().c_str());
    return 1;
  }
  std::fprintf(
      stderr,
      "kvsketch-server: serving gRPC on port %d (--listen=%s), metrics on "
      "%s; max_sessions=%d memory_budget=%s max_tokens_per_session=%lld "
      "session_idle_ttl=%s worker_threads=%d max_queued_tasks=%d "
      "stream_pipeline_depth=%d max_message_bytes=%d default_spec=%s "
      "data_dir=%s%s\n",
      (*server)->grpc_port(), o.listen_address.c_str(),
      o.metrics_address.empty()
          ? "(disabled)"
          : absl::StrCat("port ", (*server)->metrics_port(), "/metrics")
                .c_str(),
      o.max_sessions, AbslUnparseFlag(ByteSize{o.memory_budget_bytes}).c_str(),
      static_cast<long long>(o.max_tokens_per_session),
      absl::FormatDuration(o.session_idle_ttl).c_str(), o.worker_threads,
      o.max_queued_tasks, o.stream_pipeline_depth, o.max_message_bytes,
      o.default_spec.c_str(),
      o.data_dir.empty() ? "(none)" : o.data_dir.c_str(),
      o.data_dir.empty() || !o.wal
          ? ""
          : absl::StrCat(
                " wal=on fsync=",
                kvsketch::server::durability::FsyncPolicyName(o.fsync_policy),
                o.fsync_policy ==
                        kvsketch::server::durability::FsyncPolicy::kInterval
                    ? absl::StrCat(" fsync_interval=",
                                   absl::FormatDuration(o.fsync_interval))
                    : "",
                " checkpoint_log_bytes=",
                AbslUnparseFlag(ByteSize{o.checkpoint_log_bytes}))
                .c_str());
  const bool tls = !o.tls_cert_file.empty();
  const bool tokens = !o.auth_tokens_file.empty();
  std::fprintf(stderr, "kvsketch-server: security: tls=%s auth=%s\n",
               !tls                           ? "off"
               : o.tls_client_ca_file.empty() ? "on"
                                              : "mutual",
               tokens ? "bearer tokens" : "off");
  if (!kvsketch::server::IsLoopbackListenAddress(o.listen_address)) {
    if (!tls) {
      std::fprintf(stderr,
                   "kvsketch-server: WARNING: --listen=%s is not loopback and "
                   "TLS is off: session data%s travel in clear text\n",
                   o.listen_address.c_str(),
                   tokens ? " and bearer tokens" : "");
    }
    if (!tokens && o.tls_client_ca_file.empty()) {
      std::fprintf(stderr,
                   "kvsketch-server: WARNING: --listen=%s is not loopback and "
                   "no client authentication is configured "
                   "(--auth_tokens_file or --tls_client_ca)\n",
                   o.listen_address.c_str());
    }
  }

  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    std::fprintf(stderr, "kvsketch-server: %s received, draining for %s\n",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT",
                 absl::FormatDuration(drain).c_str());
    absl::Status s = (*server)->Shutdown(drain);
    if (!s.ok()) {
      std::fprintf(stderr, "kvsketch-server: shutdown: %s\n",
                   s.ToString().c_str());
    }
  });
  (*server)->Wait();
  signal_thread.join();
  std::fprintf(stderr, "kvsketch-server: stopped\n");
  return 0;
}
