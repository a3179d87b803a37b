// File: server/memory_budget.h
//
// Global accounting of attention-state bytes against --memory_budget. An
// append first reserves a conservative estimate of its growth (TryReserve,
// refused when it would cross the budget), then, once applied, trades the
// estimate for the measured MemoryBytes() delta (Adjust). Lock-free: one
// atomic, O(1) per call.
#ifndef KVSKETCH_SERVER_MEMORY_BUDGET_H_
#define KVSKETCH_SERVER_MEMORY_BUDGET_H_

#include <atomic>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kvsketch::server {

class MemoryBudget {
 public:
  explicit MemoryBudget(int64_t budget_bytes) : budget_(budget_bytes) {}

  int64_t budget() const { return budget_; }
  int64_t used() const { return used_.load(std::memory_order_relaxed); }

  // Adds bytes unless the total would exceed the budget; then
  // ResourceExhausted with the figures, naming `what`.
  absl::Status TryReserve(int64_t bytes, const char* what) {
    int64_t cur = used_.load(std::memory_order_relaxed);
    do {
      if (bytes > 0 && cur + bytes > budget_) {
        return absl::ResourceExhaustedError(absl::StrCat(
            what, ": memory budget exhausted: ", cur, " bytes in use + ", bytes,
            " needed > budget ", budget_, " bytes"));
      }
    } while (!used_.compare_exchange_weak(cur, cur + bytes,
                                          std::memory_order_relaxed));
    return absl::OkStatus();
  }

  // Unconditional change (measured deltas, releases). May cross the budget
  // when an estimate was low; later reservations then fail.
  void Adjust(int64_t delta) {
    used_.fetch_add(delta, std::memory_order_relaxed);
  }

 private:
  const int64_t budget_;
  std::atomic<int64_t> used_{0};
};

}  // namespace kvsketch::server

#endif  // KVSKETCH_SERVER_MEMORY_BUDGET_H_
