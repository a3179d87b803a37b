// File: server/snapshot_store.h
//
// Session snapshots on disk for --data_dir restarts:
//   <data_dir>/sessions/<id>.kvss   one snapshot blob per session
//   <data_dir>/sessions/<tenant>~<id>.kvss   ... of a tenant's session
//                                   ('~' is in neither name's alphabet)
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
// <data_dir>/corrupt/ and goes on. Files stay in place: they are replaced
// (or removed) by the next SaveAllSessions. Returns the count restored.
absl::StatusOr<int> RestoreAllSessions(const std::string& data_dir,
                                       bool skip_corrupt,
                                       SessionManager* sessions);

}  // namespace kvsketch::server

#endif  // KVSKETCH_SERVER_SNAPSHOT_STORE_H_
