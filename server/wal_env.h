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

class MeteredEnv final : public durability::ForwardingEnv {
 public:
  // base and metrics are not owned and must outlive the env.
  MeteredEnv(durability::Env* base, Metrics* metrics)
      : ForwardingEnv(base), metrics_(metrics) {}

  absl::StatusOr<std::unique_ptr<durability::WritableFile>> NewWritableFile(
      const std::string& path) override;

 private:
  Metrics* const metrics_;
};

}  // namespace kvsketch::server

#endif  // KVSKETCH_SERVER_WAL_ENV_H_
