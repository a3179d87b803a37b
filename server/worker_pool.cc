// File: server/worker_pool.cc
#include "server/worker_pool.h"

#include <utility>

#include "core/status_macros.h"

namespace kvsketch::server {

WorkerPool::WorkerPool(int num_threads, int max_queued)
    : max_queued_(max_queued) {
  KVSKETCH_CHECK(num_threads >= 1);
  KVSKETCH_CHECK(max_queued >= 1);
  threads_.reserve(num_threads);
  for (int i = 0; i < num_threads; ++i)
    threads_.emplace_back([this] { Run(); });
}

WorkerPool::~WorkerPool() { Stop(); }

bool WorkerPool::TrySubmit(std::function<void()> task) {
  absl::MutexLock l(&mu_);
  if (stopping_ || static_cast<int64_t>(queue_.size()) >= max_queued_) {
    ++rejected_;
    return false;
  }
  queue_.push_back(std::move(task));
  return true;
}

int64_t WorkerPool::queued() const {
  absl::MutexLock l(&mu_);
  return static_cast<int64_t>(queue_.size());
}

int64_t WorkerPool::rejected_total() const {
  absl::MutexLock l(&mu_);
  return rejected_;
}

void WorkerPool::Stop() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

void WorkerPool::Run() {
  for (;;) {
    std::function<void()> task;
    {
      absl::MutexLock l(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !queue_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping and drained
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

}  // namespace kvsketch::server
