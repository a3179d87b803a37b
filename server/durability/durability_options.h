// File: server/durability/durability_options.h
//
// Knobs of the per-session write-ahead log (docs/durability.md, issue #8
// item 1). An acknowledgement waits in SessionLog::WaitDurable until the
// record it covers is durable under `fsync_policy`:
//   kEveryBatch  write(2) + fsync(2) before any ack; concurrent appenders of
//                one session share one write and one fsync (group commit).
//   kInterval    at most one fsync per `fsync_interval`; an ack waits for the
//                next fsync, so a burst of appends pays one fsync per interval.
//   kOff         ack after write(2): survives kill -9 (the page cache keeps
//                the bytes), not power loss.
#ifndef KVSKETCH_SERVER_DURABILITY_DURABILITY_OPTIONS_H_
#define KVSKETCH_SERVER_DURABILITY_DURABILITY_OPTIONS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace kvsketch::server::durability {

class Env;
class Clock;

enum class FsyncPolicy { kEveryBatch, kInterval, kOff };

struct DurabilityOptions {
  FsyncPolicy fsync_policy = FsyncPolicy::kEveryBatch;
  // kInterval only: the minimum time between two fsyncs of one log.
  absl::Duration fsync_interval = absl::Milliseconds(10);
  // A hint for the caller (the server): checkpoint a session once its live
  // log segments exceed this many bytes, which bounds both recovery time
  // (replay is O(log bytes)) and disk use to about state + this.
  int64_t checkpoint_log_bytes = int64_t{256} << 20;
  // File and time layers; nullptr means the POSIX file system and the real
  // clock. Tests inject fakes to count fsyncs and fail I/O. Not owned.
  Env* env = nullptr;
  Clock* clock = nullptr;
};

// "every_batch" | "interval" | "off" (flag values); InvalidArgument otherwise.
absl::StatusOr<FsyncPolicy> ParseFsyncPolicy(absl::string_view name);
std::string FsyncPolicyName(FsyncPolicy policy);

}  // namespace kvsketch::server::durability

#endif  // KVSKETCH_SERVER_DURABILITY_DURABILITY_OPTIONS_H_
