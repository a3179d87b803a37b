// File: core/evict/evict.h
//
// `evict` (seed 001, papers/A_B.md §B.3 eviction variant): a KV cache that
// really holds at most b(n) tokens, so memory grows as O(n^c·d), not O(n·d):
//   b(n) = ⌈alpha · n^c⌉ + sinks + window      (budget = 0), or
//   b(n) = budget                              (a fixed budget in tokens,
//                                               sinks and window included)
// When a new token would exceed b(n), the stored token with the lowest
// accumulated attention mass is dropped (heavy-hitter / H2O style), never a
// sink or one of the last `window` tokens; ties go to the oldest. The mass
// of token j is updated by every Attend (the serving path):
//   acc_j ← decay · acc_j + Σ_{rows of the call} p_j
// Query (const) does not update it; a stream that only appends (never
// attends) thus evicts oldest-first, a sliding window beyond the sinks.
//
//   evict:alpha=1,c=0.5,budget=0,sinks=4,window=64,decay=1
//
// Costs: Append O(d + dv + log b) per token (a binary heap over evictable
// tokens, rebuilt in O(b) after an Attend changed the masses). Query and
// Attend O(m·b·(d + dv)). Memory: slot arrays of capacity ≤ 1.25·b(n) + 16
// tokens, each (d + dv)·4 + 16 bytes, plus the window ring and the heap;
// evicted slots are reused, so nothing grows beyond the budget.
//
// Thread safety: as Approximator.
#ifndef KVSKETCH_CORE_EVICT_EVICT_H_
#define KVSKETCH_CORE_EVICT_EVICT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "core/approximator.h"
#include "core/registry.h"

namespace kvsketch {

const KindDef& EvictKindDef();

struct EvictOptions {
  double alpha = 1.0;
  double c = 0.5;
  int64_t budget = 0;  // > 0: fixed total budget
  int64_t sinks = 4;
  int64_t window = 64;
  double decay = 1.0;
};

// b(n) of the file comment.
int64_t EvictBudget(const EvictOptions& opt, int64_t n);

class EvictApproximator : public Approximator {
 public:
  EvictApproximator(const HeadShape& shape, const EvictOptions& options,
                    std::string canonical_spec);

  std::string Spec() const override { return spec_; }
  int64_t num_tokens() const override { return n_; }
  int64_t MemoryBytes() const override;
  absl::Status Append(ConstMatrixView keys, ConstMatrixView values) override;
  absl::Status Query(ConstMatrixView queries, MatrixView out) const override;
  absl::Status Attend(ConstMatrixView queries, MatrixView out) override;
  absl::Status SaveState(ByteWriter& writer) const override;
  absl::Status LoadState(ByteReader& reader) override;

  // Tokens held now (≤ b(num_tokens())).
  int64_t num_stored() const { return stored_; }
  // Positions of the held tokens, ascending (tests and diagnostics).
  std::vector<int64_t> StoredPositions() const;

 private:
  void AppendOne(const float* key, const float* value);
  // Grows the slot arrays to hold `tokens` (capacity a function of the
  // token count only).
  void Reserve(int64_t tokens);
  // Pops the evictable slot with the least mass (ties: oldest); returns it.
  int64_t EvictOne();
  void PushEvictable(int64_t slot);
  // Softmax over the held tokens; weights (stored_ doubles) if non-null.
  void AttendRow(const float* q, float* out, double* weights) const;
  bool HeapLess(int64_t a, int64_t b) const;  // "a evicts before b"

  EvictOptions opt_;
  std::string spec_;
  int64_t n_ = 0;
  int64_t stored_ = 0;
  int64_t capacity_ = 0;              // slots
  std::vector<float> keys_, values_;  // capacity × d, × dv; slots [0, stored_)
  std::vector<double> acc_;           // accumulated attention mass per slot
  std::vector<int64_t> pos_;          // position per slot
  std::vector<int64_t> win_;          // ring of window slots, oldest first
  int64_t win_head_ = 0, win_count_ = 0;
  std::vector<int64_t> heap_;  // evictable slots, min-heap by (acc, pos)
  bool heap_dirty_ = false;
};

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_EVICT_EVICT_H_
