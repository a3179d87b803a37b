// File: server/durability/file_env.cc
#include "server/durability/file_env.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "server/durability/durability_options.h"

namespace kvsketch::server::durability {
namespace {

absl::Status ErrnoError(absl::string_view call, const std::string& path,
                        int err) {
  return absl::InternalError(
      absl::StrCat(call, " ", path, ": ", std::strerror(err)));
}

class PosixWritableFile : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd)
      : path_(std::move(path)), fd_(fd) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  absl::Status Append(absl::string_view data) override {
    size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::write(fd_, data.data() + done, data.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoError("write", path_, errno);
      }
      done += static_cast<size_t>(n);
    }
    return absl::OkStatus();
  }

  absl::Status Sync() override {
    // fdatasync would skip the inode times but must still persist the size
    // of an appended file; fsync is the portable statement of that.
    if (::fsync(fd_) != 0) return ErrnoError("fsync", path_, errno);
    return absl::OkStatus();
  }

  absl::Status Close() override {
    const int fd = fd_;
    fd_ = -1;
    if (fd >= 0 && ::close(fd) != 0) return ErrnoError("close", path_, errno);
    return absl::OkStatus();
  }

 private:
  const std::string path_;
  int fd_;
};

class PosixEnv : public Env {
 public:
  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path) override {
    const int fd =
        ::open(path.c_str(),
               O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoError("open", path, errno);
    return std::make_unique<PosixWritableFile>(path, fd);
  }

  absl::StatusOr<std::string> ReadFile(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      if (err == ENOENT) {
        return absl::NotFoundError(absl::StrCat("no file ", path));
      }
      return ErrnoError("open", path, err);
    }
    std::string out;
    struct stat st;
    if (::fstat(fd, &st) == 0 && st.st_size > 0) {
      out.reserve(static_cast<size_t>(st.st_size));
    }
    char buf[1 << 16];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        ::close(fd);
        return ErrnoError("read", path, err);
      }
      if (n == 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return out;
  }

  bool FileExists(const std::string& path) override {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0;
  }

  absl::StatusOr<std::vector<std::string>> ListDir(
      const std::string& dir) override {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) {
      const int err = errno;
      if (err == ENOENT) {
        return absl::NotFoundError(absl::StrCat("no directory ", dir));
      }
      return ErrnoError("opendir", dir, err);
    }
    std::vector<std::string> names;
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    ::closedir(d);
    return names;
  }

  absl::Status CreateDir(const std::string& dir) override {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("cannot create directory ", dir, ": ", ec.message()));
    }
    return absl::OkStatus();
  }

  absl::Status RenameFile(const std::string& from,
                          const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return ErrnoError("rename", absl::StrCat(from, " -> ", to), errno);
    }
    return absl::OkStatus();
  }

  absl::Status DeleteFile(const std::string& path) override {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return ErrnoError("unlink", path, errno);
    }
    return absl::OkStatus();
  }

  absl::Status TruncateFile(const std::string& path, uint64_t size) override {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoError("open", path, errno);
    absl::Status s;
    if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
      s = ErrnoError("ftruncate", path, errno);
    } else if (::fsync(fd) != 0) {
      s = ErrnoError("fsync", path, errno);
    }
    ::close(fd);
    return s;
  }

  absl::Status SyncDir(const std::string& dir) override {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ErrnoError("open", dir, errno);
    const int rc = ::fsync(fd);
    const int err = errno;
    ::close(fd);
    if (rc != 0) return ErrnoError("fsync", dir, err);
    return absl::OkStatus();
  }
};

class RealClock : public Clock {
 public:
  absl::Time Now() override { return absl::Now(); }
  void SleepUntil(absl::Time t) override {
    const absl::Duration d = t - absl::Now();
    if (d > absl::ZeroDuration()) absl::SleepFor(d);
  }
};

}  // namespace

Env* Env::Default() {
  static Env* const env = new PosixEnv();
  return env;
}

Clock* Clock::Real() {
  static Clock* const clock = new RealClock();
  return clock;
}

absl::Status WriteFileAtomically(Env* env, const std::string& path,
                                 absl::string_view bytes) {
  const std::string tmp = path + ".tmp";
  KVSKETCH_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file,
                            env->NewWritableFile(tmp));
  KVSKETCH_RETURN_IF_ERROR(file->Append(bytes));
  KVSKETCH_RETURN_IF_ERROR(file->Sync());
  KVSKETCH_RETURN_IF_ERROR(file->Close());
  KVSKETCH_RETURN_IF_ERROR(env->RenameFile(tmp, path));
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  return env->SyncDir(dir.empty() ? std::string(".") : dir.string());
}

absl::Time FakeClock::Now() {
  absl::MutexLock lock(&mu_);
  return now_;
}

void FakeClock::SleepUntil(absl::Time t) {
  absl::MutexLock lock(&mu_);
  if (t > now_) now_ = t;
}

void FakeClock::Advance(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  now_ += d;
}

// Forwards to the base file, consulting the env's counters and faults.
class FaultInjectionEnv::File : public WritableFile {
 public:
  File(FaultInjectionEnv* env, std::unique_ptr<WritableFile> base)
      : env_(env), base_(std::move(base)) {}
  absl::Status Append(absl::string_view data) override {
    KVSKETCH_RETURN_IF_ERROR(env_->BeforeWrite(data.size()));
    return base_->Append(data);
  }
  absl::Status Sync() override {
    KVSKETCH_RETURN_IF_ERROR(env_->BeforeSync());
    KVSKETCH_RETURN_IF_ERROR(base_->Sync());
    env_->AfterSync();
    return absl::OkStatus();
  }
  absl::Status Close() override { return base_->Close(); }

 private:
  FaultInjectionEnv* const env_;
  std::unique_ptr<WritableFile> base_;
};

absl::StatusOr<std::unique_ptr<WritableFile>>
FaultInjectionEnv::NewWritableFile(const std::string& path) {
  KVSKETCH_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> base,
                            ForwardingEnv::NewWritableFile(path));
  return std::make_unique<File>(this, std::move(base));
}

FaultInjectionEnv::Counters FaultInjectionEnv::counters() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

std::vector<absl::Time> FaultInjectionEnv::sync_times() const {
  absl::MutexLock lock(&mu_);
  return sync_times_;
}

void FaultInjectionEnv::FailWriteAfter(int64_t n) {
  absl::MutexLock lock(&mu_);
  fail_write_in_ = n;
}

void FaultInjectionEnv::FailSyncAfter(int64_t n) {
  absl::MutexLock lock(&mu_);
  fail_sync_in_ = n;
}

void FaultInjectionEnv::CloseSyncGate() {
  absl::MutexLock lock(&mu_);
  gate_closed_ = true;
}

void FaultInjectionEnv::OpenSyncGate() {
  absl::MutexLock lock(&mu_);
  gate_closed_ = false;
}

void FaultInjectionEnv::WaitForSyncEntered(int64_t count) {
  absl::MutexLock lock(&mu_);
  struct Arg {
    const int64_t* entered;
    int64_t count;
  } arg{&syncs_entered_, count};
  mu_.Await(absl::Condition(
      +[](Arg* a) { return *a->entered >= a->count; }, &arg));
}

absl::Status FaultInjectionEnv::BeforeWrite(size_t bytes) {
  absl::MutexLock lock(&mu_);
  if (fail_write_in_ > 0 && --fail_write_in_ == 0) {
    return absl::InternalError("injected write failure");
  }
  ++counters_.writes;
  counters_.bytes += static_cast<int64_t>(bytes);
  return absl::OkStatus();
}

absl::Status FaultInjectionEnv::BeforeSync() {
  absl::MutexLock lock(&mu_);
  ++syncs_entered_;
  mu_.Await(absl::Condition(
      +[](bool* closed) { return !*closed; }, &gate_closed_));
  if (fail_sync_in_ > 0 && --fail_sync_in_ == 0) {
    return absl::InternalError("injected fsync failure");
  }
  return absl::OkStatus();
}

void FaultInjectionEnv::AfterSync() {
  absl::MutexLock lock(&mu_);
  ++counters_.syncs;
  if (clock_ != nullptr) sync_times_.push_back(clock_->Now());
}

absl::Status FaultInjectionEnv::SyncDir(const std::string& dir) {
  {
    absl::MutexLock lock(&mu_);
    ++counters_.dir_syncs;
  }
  return ForwardingEnv::SyncDir(dir);
}

absl::StatusOr<FsyncPolicy> ParseFsyncPolicy(absl::string_view name) {
  if (name == "every_batch") return FsyncPolicy::kEveryBatch;
  if (name == "interval") return FsyncPolicy::kInterval;
  if (name == "off") return FsyncPolicy::kOff;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown fsync policy '", name,
                   "' (expected every_batch, interval or off)"));
}

std::string FsyncPolicyName(FsyncPolicy policy) {
  switch (policy) {
    case FsyncPolicy::kEveryBatch:
      return "every_batch";
    case FsyncPolicy::kInterval:
      return "interval";
    case FsyncPolicy::kOff:
      return "off";
  }
  return "unknown";
}

}  // namespace kvsketch::server::durability
