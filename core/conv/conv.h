// File: core/conv/conv.h
//
// `conv` (seed 002, papers/C_D_E_conv_regression_zeta.md §C): the full KV
// cache, exact decode, and a Conv-Basis bulk prefill. Per query head, the
// causal new×new block of M∘exp(scale·QKᵀ − c) is fitted by k Toeplitz
// bases (conv_basis.h) and applied to [V | 1] with FFTs (fft_conv.h), so the
// block costs O(k·T·(d + dv)·log T) instead of O(T²·(d + dv)) — a win only
// on heads whose scores depend mostly on i − j (positional / recency
// heads); elsewhere the sampled error check sends the head to the exact
// path.
//
//   conv:k=16,probe=32,tau=0.05,fit=search,samples=32,max_error=0.01,
//        min_tokens=1024,seed=1
//     k           basis budget (search: most starts found; segmented: the
//                 uniform grid's segments)
//     probe, tau  the window length and relative change threshold of the
//                 §C.3 binary search (fit=search)
//     fit         search (§C.3) | segmented (§C.8, profiles averaged over
//                 `samples` columns per segment)
//     samples     S: exact rows sampled per head for the error estimate
//                 (and columns per segment for fit=segmented)
//     max_error   the fallback threshold on the estimate below
//     min_tokens  prefills of fewer new tokens run exactly (the FFT's fixed
//                 costs win only at long T)
//     seed        sampling seed (rows are drawn from seed, head and n)
//
// Decode (Append, Query, Attend) is exact over the stored cache (§C.5(a)):
// a per-token Conv-Basis step does not beat the O(n·d) exact scan. Keys and
// values are stored as f32 in growable arrays (capacity <= 2n tokens);
// Query runs the `exact` kind's kernel (exact_kernels.h) on them. They are
// held here rather than in a composed ExactApproximator because the bulk
// path needs the old cache's per-row log-sum-exp normalisers, which the
// exact kind neither returns nor exposes its storage to compute.
//
// Prefill of T new tokens after n_prev stored ones, per query head h:
//  1. Global shift c = the largest score among the diagonal and the S
//     sampled rows (§C.4: one constant for the whole block; a row max would
//     break the Toeplitz structure). Cost O((T + S·T)·d).
//  2. Fit (C.3 or C.8) on A[i][j] = exp(scale·q_i·k_j − c), i >= j, new
//     tokens only. Search: O(k·(probe·log T + T)·d); segmented:
//     O(k·samples·T·d).
//  3. Error estimate (§C.8), before any FFT: on the S sampled rows, exact
//     new-block outputs o_i against the fitted rows ô_i (formed from the
//     increments, O(S·T·(k + dv)));
//       fit_error = max_i ‖ô_i − o_i‖₂ / max_j ‖v_j‖₂   (new tokens j)
//     i.e. in units of the value scale, the form of the conformance
//     bounds. Above max_error the head's whole prefill runs exactly (the
//     blocked exact path, exact_prefill.h), having spent only steps 1–3.
//     Otherwise apply to X = [V_new | 1] → Y = Â·V, D = Â·1 with FFTs,
//     O(k·T·log T·(dv + 1)). Rows with D_i <= 1e-8 · max D (or not
//     finite) are recomputed exactly (double FFT error is absolute, §C.4);
//     more than T/8 of them also sends the head to the exact path.
//     Sampled rows keep their exact values.
//  4. With n_prev > 0, the new×old rectangle is computed exactly in
//     blocked GEMMs (O(T·n_prev·(d + dv))) and merged with the new block
//     by their log-sum-exp normalisers.
// Measurements() counts fitted heads (fit_checks), the sum of their
// fit_error, and fallbacks. last_prefill_stats() gives the per-head detail
// of the last Prefill (bases used, error, fallback).
//
// Memory: keys and values f32, O(n·(d + dv)); Prefill scratch
// O(T·(dv + 1)) doubles per head plus the FFT buffers.
//
// Thread safety: as Approximator; Measurements() is safe concurrently with
// anything (mutex).
#ifndef KVSKETCH_CORE_CONV_CONV_H_
#define KVSKETCH_CORE_CONV_CONV_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "core/approximator.h"
#include "core/registry.h"

namespace kvsketch {

// The registry entry of the `conv` kind.
const KindDef& ConvKindDef();

enum class ConvFit { kSearch, kSegmented };

struct ConvOptions {
  int k = 16;
  int probe = 32;
  double tau = 0.05;
  ConvFit fit = ConvFit::kSearch;
  int samples = 32;
  double max_error = 0.01;
  int64_t min_tokens = 1024;
  uint64_t seed = 1;
};

// One query head of one Prefill that took the conv path.
struct ConvHeadStats {
  int bases = 0;           // k used by the fit
  double fit_error = 0;    // the sampled estimate (file comment, step 3)
  bool fallback = false;   // answered exactly instead
  int64_t exact_rows = 0;  // rows recomputed exactly (sampled + tiny D)
};

class ConvApproximator : public Approximator {
 public:
  ConvApproximator(const HeadShape& shape, const ConvOptions& options,
                   std::string canonical_spec);

  std::string Spec() const override { return spec_; }
  int64_t num_tokens() const override { return n_; }
  int64_t MemoryBytes() const override;
  absl::Status Append(ConstMatrixView keys, ConstMatrixView values) override;
  absl::Status Query(ConstMatrixView queries, MatrixView out) const override;
  absl::Status Prefill(ConstMatrixView queries, int group, ConstMatrixView keys,
                       ConstMatrixView values, MatrixView out) override;
  SelfMeasurements Measurements() const override;
  absl::Status SaveState(ByteWriter& writer) const override;
  absl::Status LoadState(ByteReader& reader) override;

  const ConvOptions& options() const { return opt_; }
  // Per query head of the last Prefill; empty if it ran exactly because T
  // was below min_tokens.
  const std::vector<ConvHeadStats>& last_prefill_stats() const {
    return last_stats_;
  }

 private:
  // The conv path for one query head (rows t of q_h, T = n_ − n_prev new
  // tokens already appended). Writes out_h (T×dv) and returns its stats.
  ConvHeadStats PrefillHead(const float* q_h, int head, int64_t n_prev,
                            float* out_h) const;

  ConvOptions opt_;
  std::string spec_;
  int64_t n_ = 0;
  std::vector<float> keys_, values_;  // n×d, n×dv
  std::vector<ConvHeadStats> last_stats_;

  mutable absl::Mutex mu_;
  SelfMeasurements measured_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_CONV_CONV_H_
