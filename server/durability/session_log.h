// File: server/durability/session_log.h
//
// One session's durable storage in a directory DIR (docs/durability.md):
//   DIR/<name>.<generation:010>.wal   log segments (wal.h), oldest first
//   DIR/<name>.ckpt                   the last checkpoint: the snapshot
//                                     envelope (core/io/snapshot.h) around
//                                     tag, covered seq, name, SessionState
//   DIR/<name>.ckpt.tmp               a checkpoint being written (removed
//                                     by recovery)
// <name> is the session's file name (the server uses its snapshot naming,
// "id" or "tenant~id"); it must be 1-200 characters of [A-Za-z0-9._~-].
//
// How the server uses it (the wiring is a few lines in Session):
//   create:  SessionLog::Create(dir, name, config, options)
//   step:    under the session lock: state.Step(...) then
//            seq = log.LogStep(...) (so log order is apply order); release
//            the lock; log.WaitDurable(seq); only then answer. An error from
//            the log means the step must not be acknowledged (and the log
//            stays poisoned: the session answers errors until restarted).
//   checkpoint (e.g. when live_log_bytes() > checkpoint_log_bytes): under
//            the session lock PrepareCheckpoint(state); after releasing it
//            CommitCheckpoint(ticket) (the slow file I/O).
//   delete:  log.Delete()
//   start:   for every name in ListSessionNames(dir): Recover(...)
#ifndef KVSKETCH_SERVER_DURABILITY_SESSION_LOG_H_
#define KVSKETCH_SERVER_DURABILITY_SESSION_LOG_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "core/session_state.h"
#include "server/durability/durability_options.h"
#include "server/durability/file_env.h"
#include "server/durability/wal.h"

namespace kvsketch::server::durability {

inline constexpr char kWalExtension[] = ".wal";
inline constexpr char kCheckpointExtension[] = ".ckpt";

// What Recover found for one session.
struct RecoveryReport {
  enum class Outcome {
    kRecovered,     // state rebuilt; the log is open for appends
    kDeleted,       // the log ends with a delete record; files removed
    kNeverCreated,  // nothing durable (a torn create record); files removed
  };
  Outcome outcome = Outcome::kRecovered;
  uint64_t checkpoint_seq = 0;   // 0: no checkpoint file
  uint64_t last_seq = 0;         // of the last complete record
  int segments = 0;              // segment files read
  int64_t records_replayed = 0;  // records after the checkpoint applied
  int64_t tokens_replayed = 0;   // token-layers appended by them
  int64_t queries_replayed = 0;  // query rows re-run by them
  int64_t torn_bytes_dropped = 0;
  std::string torn_file;    // where the torn tail was cut, if anywhere
  std::string torn_reason;  // what was wrong with the first dropped bytes

  std::string ToString() const;
};

class SessionLog {
 public:
  // Starts the log of a new session: segment 1 with a durable kCreate
  // record (seq 1) of the normalised config. AlreadyExists if any file of
  // the name is in dir; InvalidArgument for a bad name.
  static absl::StatusOr<std::unique_ptr<SessionLog>> Create(
      const std::string& dir, const std::string& name,
      const SessionConfig& config, const DurabilityOptions& options);

  struct Recovered {
    std::unique_ptr<SessionLog> log;      // null unless kRecovered
    std::unique_ptr<SessionState> state;  // null unless kRecovered
    RecoveryReport report;
  };
  // Loads the checkpoint, replays every complete record after it, cuts a
  // torn tail (a bad frame with no valid record after it, in its segment or
  // any later one) and reports it, then continues in a new segment.
  // DataLoss naming the file and offset for: a corrupt record followed by
  // valid ones, a sequence gap, a corrupt checkpoint, a record that does
  // not apply to the state. NotFound if dir holds no file of the name.
  static absl::StatusOr<Recovered> Recover(const std::string& dir,
                                           const std::string& name,
                                           const DurabilityOptions& options);

  // Names with a log segment or checkpoint in dir (sorted, unique).
  static absl::StatusOr<std::vector<std::string>> ListSessionNames(
      const std::string& dir, Env* env = nullptr);

  ~SessionLog();
  SessionLog(const SessionLog&) = delete;
  SessionLog& operator=(const SessionLog&) = delete;

  const std::string& name() const { return name_; }

  // Logs one SessionState::Step (or Append when num_queries == 0) that has
  // been applied; returns its sequence number (no I/O happens here).
  absl::StatusOr<uint64_t> LogStep(int layer, int64_t num_new_tokens,
                                   absl::Span<const float> keys,
                                   absl::Span<const float> values,
                                   int64_t num_queries,
                                   absl::Span<const float> queries);
  // Logs an all-layers append (keys [layers, kv_heads, T, d]).
  absl::StatusOr<uint64_t> LogAppendAllLayers(int64_t num_new_tokens,
                                              absl::Span<const float> keys,
                                              absl::Span<const float> values);
  // Returns once record seq is durable under the fsync policy.
  absl::Status WaitDurable(uint64_t seq) { return writer_->WaitDurable(seq); }

  // A checkpoint in two phases so that the session lock is held only for
  // the in-memory part. Prepare: REQUIRES no LogStep of this session runs
  // concurrently (the caller holds the session lock); serialises the state
  // (O(state bytes) memcpy), notes the seq it covers, and moves the log to
  // a new segment (one file create + header fsync + directory fsync, and an
  // fsync of the old segment's unsynced tail). FailedPrecondition if a
  // prepared checkpoint is not committed yet.
  struct PendingCheckpoint {
    uint64_t seq = 0;
    std::string blob;                // the .ckpt file's bytes
    std::vector<uint64_t> obsolete;  // generations covered by it
  };
  absl::StatusOr<PendingCheckpoint> PrepareCheckpoint(
      const SessionState& state);
  // Commit (no session lock needed; appends may go on): writes .ckpt.tmp,
  // fsyncs, renames over .ckpt, fsyncs the directory, logs a kCheckpoint
  // marker, deletes the covered segments and fsyncs the directory again. A
  // crash anywhere leaves either the old checkpoint with every segment it
  // needs or the new one (segments it covers are skipped by seq).
  absl::Status CommitCheckpoint(PendingCheckpoint checkpoint);
  absl::Status Checkpoint(const SessionState& state);

  // Logs a durable kDelete record, then removes every file of the session.
  // The log is closed afterwards.
  absl::Status Delete();
  // Syncs and closes (a clean shutdown); Recover reopens.
  absl::Status Close();

  // Bytes in the live segments (what a recovery would read).
  int64_t live_log_bytes() const;
  uint64_t last_seq() const { return writer_->last_seq(); }
  WalWriter::Stats stats() const { return writer_->stats(); }

  static std::string SegmentFileName(const std::string& name,
                                     uint64_t generation);

 private:
  SessionLog(std::string dir, std::string name, DurabilityOptions options,
             Env* env);
  std::string PathOf(const std::string& file_name) const;
  // Creates segment `generation` with a durable header and dir entry.
  absl::StatusOr<std::unique_ptr<WritableFile>> NewSegment(uint64_t generation);

  const std::string dir_;
  const std::string name_;
  const DurabilityOptions options_;
  Env* const env_;
  std::unique_ptr<WalWriter> writer_;

  mutable absl::Mutex mu_;
  std::vector<uint64_t> live_generations_ ABSL_GUARDED_BY(mu_);
  // live_log_bytes() = writer bytes - live_base_: negative at open (the
  // bytes of the recovered segments and headers), the writer's byte count
  // at the last committed checkpoint's rotation afterwards.
  int64_t live_base_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t rotated_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool checkpoint_pending_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kvsketch::server::durability

#endif  // KVSKETCH_SERVER_DURABILITY_SESSION_LOG_H_
