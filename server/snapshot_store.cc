// File: server/snapshot_store.cc
#include "server/snapshot_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <system_error>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/status_macros.h"
#include "server/durability/session_log.h"

namespace kvsketch::server {
namespace {

namespace fs = std::filesystem;

absl::Status ErrnoError(absl::string_view what, const std::string& path) {
  return absl::InternalError(
      absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status FsyncPath(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open", path);
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return ErrnoError("fsync", path);
  return absl::OkStatus();
}

absl::Status MakeDirs(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot create directory ",
                                            dir.string(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view bytes) {
  const std::string tmp = path + ".tmp";
  const int fd =
      ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("open", tmp);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status s = ErrnoError("write", tmp);
      ::close(fd);
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    absl::Status s = ErrnoError("fsync", tmp);
    ::close(fd);
    return s;
  }
  if (::close(fd) != 0) return ErrnoError("close", tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return ErrnoError("rename", tmp);
  }
  return FsyncPath(fs::path(path).parent_path().string(),
                   O_RDONLY | O_DIRECTORY);
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return ErrnoError("open", path);
  std::string out;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return absl::InternalError(absl::StrCat("read ", path));
  return out;
}

absl::StatusOr<int> SaveAllSessions(const std::string& data_dir,
                                    const SessionManager& sessions) {
  const fs::path dir = fs::path(data_dir) / "sessions";
  KVSKETCH_RETURN_IF_ERROR(MakeDirs(dir));
  absl::flat_hash_set<std::string> written;
  for (const auto& session : sessions.All()) {
    absl::StatusOr<std::string> blob = SessionManager::ExportSnapshot(*session);
    if (!blob.ok()) {
      if (absl::IsNotFound(blob.status())) continue;  // deleted meanwhile
      return blob.status();
    }
    const std::string name =
        session->tenant().empty()
            ? absl::StrCat(session->id(), kSnapshotExtension)
            : absl::StrCat(session->tenant(), kTenantSeparator, session->id(),
                           kSnapshotExtension);
    KVSKETCH_RETURN_IF_ERROR(WriteFileAtomically((dir / name).string(), *blob));
    written.insert(name);
  }
  // Only now drop snapshots of sessions that are gone: a failure above keeps
  // the previous generation on disk.
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (absl::EndsWith(name, kSnapshotExtension) && !written.contains(name)) {
      fs::remove(entry.path(), ec);
    }
  }
  return static_cast<int>(written.size());
}

absl::StatusOr<int> RestoreAllSessions(const std::string& data_dir,
                                       bool skip_corrupt,
                                       SessionManager* sessions, bool migrate) {
  const fs::path dir = fs::path(data_dir) / "sessions";
  KVSKETCH_RETURN_IF_ERROR(MakeDirs(dir));
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (absl::EndsWith(entry.path().filename().string(), kSnapshotExtension)) {
      files.push_back(entry.path());
    }
  }
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot list ", dir.string(), ": ", ec.message()));
  }
  std::sort(files.begin(), files.end());
  int restored = 0;
  for (const fs::path& file : files) {
    KVSKETCH_ASSIGN_OR_RETURN(std::string blob,
                              ReadFileToString(file.string()));
    // The owner is in the file name, not the blob (the blob is the same
    // bytes ExportSession hands to clients, which must not carry it).
    const std::string stem = file.stem().string();
    const size_t sep = stem.find(kTenantSeparator);
    const std::string tenant =
        sep == std::string::npos ? "" : stem.substr(0, sep);
    if (migrate) {
      const std::string id =
          sep == std::string::npos ? stem : stem.substr(sep + 1);
      if (sessions->Find(id, tenant).ok()) {
        fs::remove(file, ec);
        continue;
      }
    }
    absl::StatusOr<std::shared_ptr<Session>> session =
        sessions->Import("", blob, /*newly_created=*/false, tenant);
    if (session.ok()) {
      ++restored;
      if (migrate) {
        fs::remove(file, ec);
        if (ec) {
          return absl::InternalError(
              absl::StrCat("cannot remove migrated snapshot ", file.string(),
                           ": ", ec.message()));
        }
      }
      continue;
    }
    if (absl::IsDataLoss(session.status()) && skip_corrupt) {
      const fs::path corrupt_dir = fs::path(data_dir) / "corrupt";
      KVSKETCH_RETURN_IF_ERROR(MakeDirs(corrupt_dir));
      fs::rename(file, corrupt_dir / file.filename(), ec);
      std::fprintf(stderr,
                   "kvsketch-server: corrupt snapshot %s moved to %s: %s\n",
                   file.c_str(), corrupt_dir.c_str(),
                   std::string(session.status().message()).c_str());
      continue;
    }
    return absl::Status(session.status().code(),
                        absl::StrCat("restoring snapshot ", file.string(), ": ",
                                     session.status().message()));
  }
  return restored;
}

namespace {

// Files of one session in the log directory (session_log.h's layout):
// <name>.<10 digits>.wal, <name>.ckpt, <name>.ckpt.tmp.
bool IsFileOfSession(const std::string& file, const std::string& name) {
  if (file == name + durability::kCheckpointExtension ||
      file == absl::StrCat(name, durability::kCheckpointExtension, ".tmp")) {
    return true;
  }
  const std::string prefix = name + ".";
  const std::string ext = durability::kWalExtension;
  if (file.size() != prefix.size() + 10 + ext.size() ||
      !absl::StartsWith(file, prefix) || !absl::EndsWith(file, ext)) {
    return false;
  }
  for (size_t i = prefix.size(); i < prefix.size() + 10; ++i) {
    if (file[i] < '0' || file[i] > '9') return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<RecoverySummary> RecoverAllSessions(
    const std::string& data_dir, const std::string& wal_dir,
    const durability::DurabilityOptions& options, bool skip_corrupt,
    SessionManager* sessions) {
  KVSKETCH_RETURN_IF_ERROR(MakeDirs(wal_dir));
  const absl::Time start = absl::Now();
  KVSKETCH_ASSIGN_OR_RETURN(
      std::vector<std::string> names,
      durability::SessionLog::ListSessionNames(wal_dir, options.env));
  RecoverySummary summary;
  for (const std::string& name : names) {
    // The owner is in the name (tenant~id), as for snapshots.
    const size_t sep = name.find(kTenantSeparator);
    const std::string tenant =
        sep == std::string::npos ? "" : name.substr(0, sep);
    const std::string id =
        sep == std::string::npos ? name : name.substr(sep + 1);
    absl::StatusOr<durability::SessionLog::Recovered> recovered =
        durability::SessionLog::Recover(wal_dir, name, options);
    if (!recovered.ok()) {
      if (absl::IsDataLoss(recovered.status()) && skip_corrupt) {
        const fs::path corrupt_dir = fs::path(data_dir) / "corrupt";
        KVSKETCH_RETURN_IF_ERROR(MakeDirs(corrupt_dir));
        std::error_code ec;
        for (const auto& entry : fs::directory_iterator(wal_dir, ec)) {
          const std::string file = entry.path().filename().string();
          if (IsFileOfSession(file, name)) {
            fs::rename(entry.path(), corrupt_dir / file, ec);
          }
        }
        std::fprintf(stderr,
                     "kvsketch-server: corrupt log of session %s moved to "
                     "%s: %s\n",
                     name.c_str(), corrupt_dir.c_str(),
                     std::string(recovered.status().message()).c_str());
        ++summary.corrupt;
        continue;
      }
      return absl::Status(
          recovered.status().code(),
          absl::StrCat("recovering session ", name, " from ", wal_dir, ": ",
                       recovered.status().message()));
    }
    const durability::RecoveryReport& report = recovered->report;
    std::fprintf(stderr, "kvsketch-server: recovery of %s: %s\n", name.c_str(),
                 report.ToString().c_str());
    summary.records += report.records_replayed;
    summary.tokens += report.tokens_replayed;
    summary.torn_bytes += report.torn_bytes_dropped;
    if (report.outcome != durability::RecoveryReport::Outcome::kRecovered) {
      ++summary.removed;
      continue;
    }
    absl::StatusOr<std::shared_ptr<Session>> session = sessions->Adopt(
        id, tenant, std::move(recovered->state), std::move(recovered->log));
    if (!session.ok()) {
      return absl::Status(session.status().code(),
                          absl::StrCat("recovering session ", name, ": ",
                                       session.status().message()));
    }
    ++summary.sessions;
  }
  std::fprintf(stderr,
               "kvsketch-server: recovered %d session(s) from %s in %s: %lld "
               "record(s), %lld token-layer(s) replayed, %lld torn byte(s) "
               "dropped, %d removed (deleted or never created), %d corrupt\n",
               summary.sessions, wal_dir.c_str(),
               absl::FormatDuration(absl::Now() - start).c_str(),
               static_cast<long long>(summary.records),
               static_cast<long long>(summary.tokens),
               static_cast<long long>(summary.torn_bytes), summary.removed,
               summary.corrupt);
  return summary;
}

}  // namespace kvsketch::server
