// File: server/worker_pool.h
//
// A fixed set of threads and a bounded FIFO of tasks. gRPC reactions hand all
// compute and all lock waits to this pool so they never block; TrySubmit
// refuses (returns false) instead of queueing without bound, and the caller
// answers RESOURCE_EXHAUSTED.
//
//   WorkerPool pool(/*num_threads=*/4, /*max_queued=*/1024);
//   if (!pool.TrySubmit([] { ... })) { /* busy */ }
//   pool.Stop();  // runs every queued task, then joins
#ifndef KVSKETCH_SERVER_WORKER_POOL_H_
#define KVSKETCH_SERVER_WORKER_POOL_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace kvsketch::server {

class WorkerPool {
 public:
  // REQUIRES: num_threads >= 1, max_queued >= 1.
  WorkerPool(int num_threads, int max_queued);
  ~WorkerPool();  // Stop()

  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues task unless max_queued tasks are already waiting or the pool is
  // stopped. Never blocks beyond the queue lock.
  [[nodiscard]] bool TrySubmit(std::function<void()> task);

  // Tasks waiting (not running).
  int64_t queued() const;
  int64_t rejected_total() const;

  // Refuses new tasks, runs the queued ones, joins the threads. Idempotent.
  void Stop();

 private:
  void Run();

  const int max_queued_;
  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int64_t rejected_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::thread> threads_;
};

}  // namespace kvsketch::server

#endif  // KVSKETCH_SERVER_WORKER_POOL_H_
