// File: server/snapshot_store.h
//
// Session snapshots on disk for --data_dir restarts:
//   <data_dir>/sessions/<id>.kvss   one snapshot blob per session
//   <data_dir>/sessions/<tenant>~<id>.kvss   ... of a tenant's session
//                                   ('~' is in neither name's alphabet)
//   <data_dir>/wal/                 write-ahead logs and checkpoints
//                                   (docs/durability.md; server/durability)
//   <data_dir>/corrupt/             unreadable files moved aside (opt-in)
// Files are written atomically (tmp file, fsync, rename, fsync directory), so
// a crash leaves either the old or the new snapshot, never a torn one.
#ifndef KVSKETCH_SERVER_SNAPSHOT_STORE_H_
#define KVSKETCH_SERVER_SNAPSHOT_STORE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/session_manager.h"

namespace kvsketch::server {

inline constexpr char kSnapshotExtension[] = ".kvss";
inline constexpr char kTenantSeparator[] = "~";

// Writes bytes to path atomically (path + ".tmp", fsync, rename, fsync dir).
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view bytes);

absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Writes every session of the manager to <data_dir>/sessions/, then removes
// .kvss files of sessions that no longer exist. Returns the count written.
absl::StatusOr<int> SaveAllSessions(const std::string& data_dir,
                                    const SessionManager& sessions);

// Imports every <data_dir>/sessions/*.kvss. A corrupt file fails with
// DataLoss naming it, unless skip_corrupt, which moves it to
// <data_dir>/corrupt/ and goes on. Without migrate, files stay in place:
// they are replaced (or removed) by the next SaveAllSessions. With migrate
// (the write-ahead log is on: Import has made the session's log and
// checkpoint durable) each imported file is removed, and a file whose
// session the log already recovered (a crash between those two steps) is
// removed without importing. Returns the count restored.
absl::StatusOr<int> RestoreAllSessions(const std::string& data_dir,
                                       bool skip_corrupt,
                                       SessionManager* sessions,
                                       bool migrate = false);

// What RecoverAllSessions found (summed over sessions).
struct RecoverySummary {
  int sessions = 0;        // recovered and serving
  int removed = 0;         // deleted or never durably created: files gone
  int corrupt = 0;         // moved to <data_dir>/corrupt/ (skip_corrupt)
  int64_t records = 0;     // log records replayed after checkpoints
  int64_t tokens = 0;      // token-layers replayed
  int64_t torn_bytes = 0;  // torn tails dropped
};

// Recovers every session with files in wal_dir (SessionLog::Recover:
// checkpoint + log replay, torn tail dropped) into the manager, printing
// one line per session and a summary to stderr. A corrupt log or
// checkpoint fails with DataLoss naming the file, unless skip_corrupt,
// which moves the session's files to <data_dir>/corrupt/ and goes on.
absl::StatusOr<RecoverySummary> RecoverAllSessions(
    const std::string& data_dir, const std::string& wal_dir,
    const durability::DurabilityOptions& options, bool skip_corrupt,
    SessionManager* sessions);

}  // namespace kvsketch::server

#endif  // KVSKETCH_SERVER_SNAPSHOT_STORE_H_
