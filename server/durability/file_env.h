// File: server/durability/file_env.h
//
// The narrow file-system and clock interfaces the write-ahead log goes
// through, so that tests can count fsyncs, fail a write or an fsync on
// demand, and drive the kInterval policy with a fake clock instead of
// asserting on wall-clock time.
//
//   PosixEnv        open/write/fsync/rename/unlink/ftruncate, EINTR-safe;
//                   every error is Internal naming the call and the path.
//   FaultInjectionEnv  wraps another Env: counts writes, fsyncs and bytes,
//                   fails the n-th write or fsync, and can hold fsyncs at a
//                   gate (to make group commit observable deterministically).
//   FakeClock       time that moves only when something sleeps on it.
#ifndef KVSKETCH_SERVER_DURABILITY_FILE_ENV_H_
#define KVSKETCH_SERVER_DURABILITY_FILE_ENV_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kvsketch::server::durability {

// An append-only file. Not thread-safe: the log serialises calls.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  // Writes all of data (a short write is retried, never reported as OK).
  virtual absl::Status Append(absl::string_view data) = 0;
  // fsync(2): data and metadata (the file size) reach stable storage.
  virtual absl::Status Sync() = 0;
  virtual absl::Status Close() = 0;
};

class Env {
 public:
  virtual ~Env() = default;
  // Creates (truncating) path for appending.
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path) = 0;
  virtual absl::StatusOr<std::string> ReadFile(const std::string& path) = 0;
  virtual bool FileExists(const std::string& path) = 0;
  // File names (not paths) in dir; NotFound if dir does not exist.
  virtual absl::StatusOr<std::vector<std::string>> ListDir(
      const std::string& dir) = 0;
  virtual absl::Status CreateDir(const std::string& dir) = 0;
  virtual absl::Status RenameFile(const std::string& from,
                                  const std::string& to) = 0;
  virtual absl::Status DeleteFile(const std::string& path) = 0;
  // Shortens path to size bytes and fsyncs it.
  virtual absl::Status TruncateFile(const std::string& path, uint64_t size) = 0;
  // fsync of a directory: makes creates, renames and unlinks in it durable.
  virtual absl::Status SyncDir(const std::string& dir) = 0;

  // The process-wide POSIX implementation (never deleted).
  static Env* Default();
};

// An Env that forwards every call to another (not owned), for wrappers that
// change a few calls (fault injection, metering) and pass the rest through.
class ForwardingEnv : public Env {
 public:
  explicit ForwardingEnv(Env* base) : base_(base) {}

  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path) override {
    return base_->NewWritableFile(path);
  }
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

 protected:
  Env* base() const { return base_; }

 private:
  Env* const base_;
};

// tmp = path + ".tmp"; write, fsync, close, rename over path, fsync the
// directory. A crash at any point leaves either the old or the new file.
absl::Status WriteFileAtomically(Env* env, const std::string& path,
                                 absl::string_view bytes);

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() = 0;
  virtual void SleepUntil(absl::Time t) = 0;
  static Clock* Real();  // never deleted
};

// Now() starts at the Unix epoch and advances only in SleepUntil (to the
// requested time), so an interval policy runs without real waiting and
// every fsync's time is exact.
class FakeClock : public Clock {
 public:
  absl::Time Now() override;
  void SleepUntil(absl::Time t) override;
  void Advance(absl::Duration d);

 private:
  absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_) = absl::UnixEpoch();
};

class FaultInjectionEnv : public ForwardingEnv {
 public:
  // base is not owned; clock (may be nullptr) stamps each fsync.
  explicit FaultInjectionEnv(Env* base, Clock* clock = nullptr)
      : ForwardingEnv(base), clock_(clock) {}

  struct Counters {
    int64_t writes = 0;  // successful WritableFile::Append calls
    int64_t bytes = 0;
    int64_t syncs = 0;  // successful WritableFile::Sync calls
    int64_t dir_syncs = 0;
  };
  Counters counters() const;
  // Clock time of every successful file Sync, in order.
  std::vector<absl::Time> sync_times() const;

  // The n-th (1-based, counted from now) write or fsync fails with an
  // Internal error; 0 disables. A failed write writes nothing.
  void FailWriteAfter(int64_t n);
  void FailSyncAfter(int64_t n);
  // While closed, Sync blocks after announcing itself (WaitForSyncEntered).
  void CloseSyncGate();
  void OpenSyncGate();
  // Blocks until `count` Sync calls have entered since construction.
  void WaitForSyncEntered(int64_t count);

  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path) override;
  absl::Status SyncDir(const std::string& dir) override;

 private:
  class File;
  absl::Status BeforeWrite(size_t bytes);
  absl::Status BeforeSync();
  void AfterSync();

  Clock* const clock_;
  mutable absl::Mutex mu_;
  Counters counters_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::Time> sync_times_ ABSL_GUARDED_BY(mu_);
  int64_t fail_write_in_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t fail_sync_in_ ABSL_GUARDED_BY(mu_) = 0;
  bool gate_closed_ ABSL_GUARDED_BY(mu_) = false;
  int64_t syncs_entered_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kvsketch::server::durability

#endif  // KVSKETCH_SERVER_DURABILITY_FILE_ENV_H_
