// File: server/wal_env.h
//
// A durability::Env that forwards to another (the POSIX one, or a test's
// FaultInjectionEnv) and exports what the write-ahead log costs:
// kvsketch_wal_bytes_total per write, kvsketch_wal_fsyncs_total and the
// kvsketch_wal_fsync_seconds histogram per file fsync (server/metrics.h).
// Measuring at the file layer covers log segments and checkpoint files
// alike, without the log library knowing about Prometheus. Overhead: one
// clock read pair per fsync (~50 ns against a ~ms fsync), one counter add
// per write.
#ifndef KVSKETCH_SERVER_WAL_ENV_H_
#define KVSKETCH_SERVER_WAL_ENV_H_

#include <memory>
#include <string>
#include <vector>

#include "server/durability/file_env.h"
#include "server/metrics.h"

namespace kvsketch::server {

class MeteredEnv final : public durability::Env {
 public:
  // base and metrics are not owned and must outlive the env.
  MeteredEnv(durability::Env* base, Metrics* metrics)
      : base_(base), metrics_(metrics) {}

  absl::StatusOr<std::unique_ptr<durability::WritableFile>> NewWritableFile(
      const std::string& path) override;
  absl::StatusOr<std::string> ReadFile(const std::string& path) override {
    return base_->ReadFile(path);
  }
  bool FileExists(const std::string& path) override {
    return base_->FileExists(path);
  }
  absl::StatusOr<std::vector<std::string>> ListDir(
      const std::string& dir) override {
    return base_->ListDir(dir);
  }
  absl::Status CreateDir(const std::string& dir) override {
    return base_->CreateDir(dir);
  }
  absl::Status RenameFile(const std::string& from,
                          const std::string& to) override {
    return base_->RenameFile(from, to);
  }
  absl::Status DeleteFile(const std::string& path) override {
    return base_->DeleteFile(path);
  }
  absl::Status TruncateFile(const std::string& path, uint64_t size) override {
    return base_->TruncateFile(path, size);
  }
  absl::Status SyncDir(const std::string& dir) override {
    return base_->SyncDir(dir);
  }

 private:
  durability::Env* const base_;
  Metrics* const metrics_;
};

}  // namespace kvsketch::server

#endif  // KVSKETCH_SERVER_WAL_ENV_H_
