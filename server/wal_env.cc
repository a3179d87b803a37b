// File: server/wal_env.cc
#include "server/wal_env.h"

#include <utility>

#include "absl/time/clock.h"
#include "core/status_macros.h"

namespace kvsketch::server {
namespace {

class MeteredFile final : public durability::WritableFile {
 public:
  MeteredFile(std::unique_ptr<durability::WritableFile> base, Metrics* metrics)
      : base_(std::move(base)), metrics_(metrics) {}

  absl::Status Append(absl::string_view data) override {
    KVSKETCH_RETURN_IF_ERROR(base_->Append(data));
    metrics_->WalWrite(static_cast<int64_t>(data.size()));
    return absl::OkStatus();
  }
  absl::Status Sync() override {
    const absl::Time start = absl::Now();
    KVSKETCH_RETURN_IF_ERROR(base_->Sync());
    metrics_->WalFsync(absl::ToDoubleSeconds(absl::Now() - start));
    return absl::OkStatus();
  }
  absl::Status Close() override { return base_->Close(); }

 private:
  std::unique_ptr<durability::WritableFile> base_;
  Metrics* const metrics_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<durability::WritableFile>>
MeteredEnv::NewWritableFile(const std::string& path) {
  KVSKETCH_ASSIGN_OR_RETURN(std::unique_ptr<durability::WritableFile> file,
                            ForwardingEnv::NewWritableFile(path));
  return std::unique_ptr<durability::WritableFile>(
      std::make_unique<MeteredFile>(std::move(file), metrics_));
}

}  // namespace kvsketch::server
