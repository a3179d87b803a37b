// File: core/topk/topk.h
//
// `topk` (seed 001, papers/A_B.md §B.3): the full KV cache, and per query a
// softmax over only the k(n) highest-scoring keys plus the sink tokens and
// the recent window:
//   k(n) = clamp(⌈alpha · n^c⌉, max(k_min, ⌈4·log2 n⌉), n)
// (the floor keeps the budget above the paper's o(log n) failure regime,
// Thm 6.2), or a fixed k when k > 0 (the fixed-budget baseline of §B.2;
// no floor applies then).
//
//   topk:alpha=1,c=0.5,k=0,k_min=16,sinks=4,window=64,select=exact,block=32,
//        oversample=2
//     select=exact   score every key (O(n·d)), std::nth_element (O(n)): the
//                    true top-k; saves only the value reads.
//     select=blocks  Quest-style: per block of `block` keys the per-dimension
//                    key min and max give an upper bound of q·k over the
//                    block, Σ_i max(q_i·min_i, q_i·max_i) (O(n/block · d));
//                    only the keys of the best-bounded blocks are scored,
//                    until oversample·k keys are; the top k among them win.
//                    Approximate selection, O(n·d/block + oversample·k·d).
//
// Diagnostic (QueryWithStats): the dropped softmax mass
// τ = 1 − Σ_{j∈S} e^{s_j} / Σ_all e^{s_j} and the exact error bound
// ‖o − ô‖₂ ≤ 2τ·max_j‖v_j‖₂ (§B.1). It scores every key, so in blocks mode it
// costs as much as exact mode.
//
// Memory: keys and values as f32 in growable arrays (capacity ≤ 2n tokens),
// plus 2·d floats per block: O(n·d).
//
// Thread safety: as Approximator.
#ifndef KVSKETCH_CORE_TOPK_TOPK_H_
#define KVSKETCH_CORE_TOPK_TOPK_H_

#include <cstdint>
#include <string>
#include <vector>

#include "core/approximator.h"
#include "core/registry.h"

namespace kvsketch {

const KindDef& TopkKindDef();

struct TopkOptions {
  double alpha = 1.0;
  double c = 0.5;
  int64_t k = 0;  // > 0: fixed budget
  int64_t k_min = 16;
  int64_t sinks = 4;
  int64_t window = 64;
  bool blocks = false;
  int block = 32;
  double oversample = 2.0;
};

// k(n) of the file comment. REQUIRES: n >= 1.
int64_t TopkBudget(const TopkOptions& opt, int64_t n);

// Per query row.
struct TopkQueryStats {
  int64_t budget = 0;    // k(n)
  int64_t selected = 0;  // |S|: top-k plus sinks and window (≤ n)
  int64_t scored = 0;    // keys whose score was computed for the selection
  double tau = 0;        // dropped softmax mass
  double bound = 0;      // 2·tau·max_j ‖v_j‖₂
};

class TopkApproximator : public Approximator {
 public:
  TopkApproximator(const HeadShape& shape, const TopkOptions& options,
                   std::string canonical_spec);

  std::string Spec() const override { return spec_; }
  int64_t num_tokens() const override { return n_; }
  int64_t MemoryBytes() const override;
  absl::Status Append(ConstMatrixView keys, ConstMatrixView values) override;
  absl::Status Query(ConstMatrixView queries, MatrixView out) const override;
  absl::Status SaveState(ByteWriter& writer) const override;
  absl::Status LoadState(ByteReader& reader) override;

  // Query, plus one TopkQueryStats per query row when stats != nullptr
  // (resized to queries.rows). This is the route for the server to expose
  // τ: call it instead of Query when the client asks for diagnostics.
  absl::Status QueryWithStats(ConstMatrixView queries, MatrixView out,
                              std::vector<TopkQueryStats>* stats) const;

  // Approximator's hook: QueryWithStats' tau, bound and |S| per row (the
  // output it also computes is discarded). O(n d) per row.
  absl::Status QueryDiagnostics(
      ConstMatrixView queries,
      std::vector<QueryDiagnostic>* out) const override;

  const TopkOptions& options() const { return opt_; }

 private:
  // Positions of the selected set S for query q (forced + top-k), and the
  // number of keys scored. scores_all is filled for every position if
  // non-null (stats); otherwise only as needed.
  void Select(const float* q, std::vector<int64_t>* chosen,
              std::vector<double>* chosen_scores, int64_t* scored) const;
  void UpdateBlocks(int64_t first_new);

  TopkOptions opt_;
  std::string spec_;
  int64_t n_ = 0;
  std::vector<float> keys_, values_;  // n × d, n × dv (capacity grows ×2)
  std::vector<float> bmin_, bmax_;    // blocks × d (blocks mode)
  double max_value_norm_ = 0;
};

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_TOPK_TOPK_H_
