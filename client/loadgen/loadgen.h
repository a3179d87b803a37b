// File: client/loadgen/loadgen.h
//
// The load generator behind `kvsketch-loadgen`: N sessions decoding
// concurrently over Decode streams, each step one token for every layer of
// every session of the stream (one DecodeEntry per layer per session with
// k, v and q of all heads). Closed loop (rate 0: next step as soon as the
// previous answer arrives) or open loop (rate > 0: steps scheduled at fixed
// times, up to max_in_flight outstanding per stream).
//
// Latency of a step is measured from its *intended* send time to its
// response: in open loop a stalled server therefore shows up as latency
// instead of silently lowering the offered rate (coordinated omission).
#ifndef KVSKETCH_CLIENT_LOADGEN_LOADGEN_H_
#define KVSKETCH_CLIENT_LOADGEN_LOADGEN_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/attention_client.h"
#include "client/loadgen/histogram.h"
#include "kvsketch/v1/attention.pb.h"

namespace kvsketch::client {

struct LoadgenOptions {
  std::string server = "127.0.0.1:50051";
  // Transport and identity (TLS files, bearer token; docs/security.md).
  // Retries stay off: the report counts every refusal.
  ClientOptions client;
  int sessions = 64;
  // Sessions whose entries share one stream and one step (a batching
  // runtime); the number of streams is ceil(sessions / this).
  int sessions_per_stream = 1;
  int layers = 1;
  int kv_heads = 8;
  int query_heads = 8;
  int head_dim = 128;
  std::string spec = "exact";
  // Context tokens appended to every layer of every session before the run.
  int64_t prefill = 0;
  // Target steps/s per session, i.e. per stream (a stream step advances
  // every session of the stream by one token); 0 = closed loop.
  double rate = 0;
  // Steps outstanding per stream in open loop.
  int max_in_flight = 16;
  absl::Duration duration = absl::Seconds(30);
  // Run this long first without recording.
  absl::Duration warmup = absl::Seconds(1);
  v1::DType dtype = v1::F32;
  uint64_t seed = 1;
  bool keep_sessions = false;
  // Session ids are chosen here, `<prefix><i>`, so that CreateSession already
  // carries x-session-id and a hashing proxy (deploy/nginx) places the
  // session on the replica that will receive its Decode stream. "" picks a
  // random prefix "lg-<8 hex>-" per run.
  std::string session_prefix;
  // After a stream ends with RESOURCE_EXHAUSTED or UNAVAILABLE (a server
  // shedding load ends the whole Decode stream), open a new one on the same
  // sessions and go on until the run ends; each such end is still counted.
  // Off, the stream stays closed, so a storm against a shedding server
  // would soon stop offering load (scripts/overload-soak.sh).
  bool reopen_streams = false;
  // A progress line on stderr at this period; zero disables it.
  absl::Duration progress_interval = absl::Seconds(1);
};

struct LoadgenReport {
  int streams = 0;
  double seconds = 0;      // measured window (after warmup)
  int64_t steps = 0;       // answered steps in the window
  int64_t tokens = 0;      // session-tokens decoded (steps * sessions/step)
  int64_t queries = 0;     // query-head vectors answered
  int64_t bytes_sent = 0;  // serialized DecodeRequest bytes in the window
  int64_t bytes_received = 0;
  LatencyHistogram latency_ns;
  // Failed entries and failed streams by canonical code name.
  std::map<std::string, int64_t> errors;
  bool interrupted = false;  // stopped early by `stop`

  int64_t total_errors() const;
};

// Validates `options` (InvalidArgument naming the option), creates and
// prefills the sessions, runs, deletes the sessions (unless keep_sessions)
// and returns the report. Setting *stop ends the run early; the report
// still covers what ran. Errors during setup are returned; errors while
// running are counted in the report.
absl::StatusOr<LoadgenReport> RunLoadgen(const LoadgenOptions& options,
                                         const std::atomic<bool>* stop);

// One JSON object (no trailing newline).
std::string ReportToJson(const LoadgenOptions& options,
                         const LoadgenReport& report);
// The human summary.
std::string ReportToText(const LoadgenOptions& options,
                         const LoadgenReport& report);

}  // namespace kvsketch::client

#endif  // KVSKETCH_CLIENT_LOADGEN_LOADGEN_H_
