// File: core/zeta/zeta.h
//
// `zeta` (seed 004, papers/C_D_E_conv_regression_zeta.md §E): exact KV
// storage plus a streaming Z-order index over low-dimensional key
// projections that generates candidates for each query, rescored exactly.
// This is the §E.5 "retrofit" mode for ordinary dot-product models.
//
//   zeta:dims=8,bits=0,curves=8,candidates=64,k=32,sinks=4,window=64,
//        chunk=512,projection=pca,pca_tokens=4096,seed=1,recall_sample=0
//
// Per key (§E.5, MIPS → nearest neighbour): k' = [k, √(Φ² − ‖k‖²)] with Φ a
// running bound on ‖k‖, so ‖q' − k'‖² = ‖q'‖² + Φ² − 2q'·k for q' = [q̂, 0]
// and the nearest k' is the key of largest q·k. (q̂ = Φ·q/‖q‖: the ranking is
// scale-free and this puts q' on the sphere the k' live on.) Each of the L
// `curves` projects k' to `dims` coordinates (projection=random: a random
// orthonormal map; projection=pca: the top principal directions of the first
// pca_tokens keys, then a random rotation per curve), adds its own random
// shift, quantises (morton.h; bounds ∝ Φ, out-of-range values saturate)
// and Morton-encodes to one uint64 per curve (bits = ⌊63/dims⌋ when 0).
//
// Φ: set to 1.05 × the largest key norm seen when a chunk is indexed and a
// key exceeds it; all indexed codes are then recomputed and runs re-sorted
// (ZOrderIndex::Recode, O(n·L·(dims·d + log n))). With the 5% headroom that
// happens at most log_1.05(‖k‖max / ‖k‖first) times; on stationary data a
// few times, early.
//
// Token layout: positions [0, flushed) are whole chunks of `chunk` tokens;
// the rest (1..chunk tokens: a full tail is flushed only when the next token
// arrives) is the tail, always scored exactly. Flushed chunks are in the
// index (ZOrderIndex, LSM runs), except in pca mode before the fit: then the
// first ⌈pca_tokens/chunk⌉ chunks are kept out of the index and scored
// exactly until they are all there, the PCA is fitted on exactly those
// tokens, and they are indexed.
//
// Query row q at causal end e (it sees positions < e): forced set F =
// sinks [0, s) ∪ [h, e) where h = max(s, min(e − window, first unindexed
// position)), i.e. the recent window, the tail and any unindexed prefix; the
// index region is [s, h). Per curve per run a window of `candidates` codes
// around q's code (zorder_index.h), deduplicated, restricted to [s, h),
// rescored exactly (scale·q·k, full d) and cut to the best k. Output:
// exact stable softmax over F ∪ top-k. Costs per row: O(L·dims·d) to
// encode, O(L·log² n) to search, O(L·R·candidates·d) to rescore (R ≤
// log2(n/chunk) + 1 runs), O((chunk + window + sinks)·d) for F, O(|S|·dv)
// for the output. With candidates ≥ n and k ≥ n every position is attended:
// exact attention.
//
// Streaming == bulk: a row at position t sees the runs built from the whole
// chunks before t's chunk plus its own chunk up to t exactly, whether the
// tokens came through Append + Attend row by row or through Prefill, which
// appends chunk-aligned segments and then answers their rows with the same
// code (so outputs are bit-equal).
//
// recall_sample: that fraction of query rows (deterministic counter
// stride, not random) is also checked against an exact top-k scan of the
// index region (O(n·d) each); Measurements() reports recall_checks and
// recall_sum.
//
// Defaults (dims=8, curves=8, candidates=64, k=32, projection=pca): chosen
// on the seeded clustered keys of clustered_data.h (d = 128), where the
// attended set holds 0.98 of the true top-32 at n = 64K (tests/core/
// zeta_test.cc) and 0.95 at 256K (bench/core/zeta_faiss_bench.cc); 4
// curves give 0.89, 1 curve 0.46, projection=random 0.70. More curves with
// a shorter window beat fewer curves with a longer one at equal candidate
// count (§E.5: Z-order jumps are what loses neighbours). Keys without low
// intrinsic dimension get much lower recall (§E.3): measure it
// (recall_sample) rather than assume it.
//
// Append: O(d + dv) copy + O(L·dims·d) encode per token when its chunk is
// indexed + amortised O(L·log(n/chunk)) merge moves; non-finite keys are
// InvalidArgument. Memory: keys and values as f32 (capacity ≤ 2n tokens),
// 16·L bytes per indexed token, L·dims·(d+1) projection floats.
//
// mode=native (§E.5 "Native", for models trained with ZETA heads; §E.2 steps
// 6–8): keys and queries are used as they are (head_dim <= 16, the low d_K
// of such heads; `dims` is then head_dim and projection/sinks/window are
// unused), each curve a random rotation plus shift, bounds ±Φ. A row
// attends to the k nearest keys by Euclidean distance among the index
// candidates and every unindexed position (the current chunk, exactly),
// with Cauchy weights w_j = 1/(‖q − k_j‖² + γ²), plus a history mean slot
// (mean key and mean value of positions < e, weighted the same way);
// output Σ w_j v_j / Σ w_j. Not softmax attention, so QueryDiagnostics is
// Unimplemented there. Extra cost: O((chunk + k)·d) per row for the mean.
//
// Thread safety: as Approximator; the recall counters are mutex-protected.
#ifndef KVSKETCH_CORE_ZETA_ZETA_H_
#define KVSKETCH_CORE_ZETA_ZETA_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "core/approximator.h"
#include "core/registry.h"
#include "core/zeta/morton.h"
#include "core/zeta/zorder_index.h"

namespace kvsketch {

// The registry entry of the `zeta` kind.
const KindDef& ZetaKindDef();

struct ZetaOptions {
  int dims = 8;
  int bits = 0;  // 0: ⌊63/dims⌋
  int curves = 8;
  int64_t candidates = 64;
  int64_t k = 32;
  int64_t sinks = 4;
  int64_t window = 64;
  int64_t chunk = 512;
  bool pca = true;
  int64_t pca_tokens = 4096;
  uint64_t seed = 1;
  double recall_sample = 0;
  bool native = false;  // mode=native (see the file comment)
  double gamma = 0.5;   // native: Cauchy width γ
};

class ZetaApproximator : public Approximator {
 public:
  // InvalidArgument for inconsistent options (dims·bits > 64). dims is
  // capped at head_dim + 1 (options() shows the value used).
  static absl::StatusOr<std::unique_ptr<ZetaApproximator>> Create(
      const HeadShape& shape, const ZetaOptions& options,
      std::string canonical_spec);

  std::string Spec() const override { return spec_; }
  int64_t num_tokens() const override { return st_.n; }
  int64_t MemoryBytes() const override;
  absl::Status Append(ConstMatrixView keys, ConstMatrixView values) override;
  absl::Status Query(ConstMatrixView queries, MatrixView out) const override;
  absl::Status Prefill(ConstMatrixView queries, int group, ConstMatrixView keys,
                       ConstMatrixView values, MatrixView out) override;
  // τ over the attended set vs all keys, 2τ·max‖v‖, |S|. O(n·d) per row.
  absl::Status QueryDiagnostics(
      ConstMatrixView queries,
      std::vector<QueryDiagnostic>* out) const override;
  SelfMeasurements Measurements() const override;
  absl::Status SaveState(ByteWriter& writer) const override;
  absl::Status LoadState(ByteReader& reader) override;

  // The positions row q attends to at causal end `end` (<= num_tokens()),
  // ascending; top_k gets the retrieved part (the best k of the
  // candidates, ascending). For tests and benchmarks (recall, causality).
  void SelectedPositions(const float* q, int64_t end,
                         std::vector<int64_t>* attended,
                         std::vector<int64_t>* top_k) const;

  const ZetaOptions& options() const { return opt_; }
  const ZOrderIndex& index() const { return *st_.index; }
  // Positions kept exactly because the PCA is not fitted yet, then indexed.
  int64_t indexed_tokens() const { return st_.indexed; }

 private:
  // Everything SaveState/LoadState round-trips (rebuilt from keys on load),
  // separate from the counters so LoadState can swap it in one move.
  struct State {
    int64_t n = 0;
    int64_t flushed = 0;  // tokens in whole chunks, [0, flushed)
    int64_t indexed = 0;  // tokens in the index, 0 or flushed
    bool fitted = false;  // projections ready
    double phi = 0;       // norm bound Φ of the current codes (0: none yet)
    double max_value_norm = 0;
    // Native mode: sums of the keys and values of [0, flushed), in
    // position order, for the history mean slot.
    std::vector<double> key_sum, value_sum;
    std::vector<float> keys, values;  // n × d, n × dv
    // Per curve c, dims rows of d+1 floats: proj[(c·dims + i)·(d+1) + j].
    std::vector<float> proj;
    // Per (c, i): quantiser centre and half-width relative to Φ, and shift
    // in units of the half-width.
    std::vector<double> rel_centre, rel_bound, shift;
    std::vector<Quantizer> quant;  // per (c, i), for the current Φ
    std::unique_ptr<ZOrderIndex> index;
  };
  struct Selection {
    std::vector<int64_t> pos;   // forced then retrieved
    std::vector<double> score;  // scale·q·k, same order
    size_t retrieved_begin = 0;
    int64_t region_begin = 0, region_end = 0;  // index region [s, h)
  };

  ZetaApproximator(const HeadShape& shape, const ZetaOptions& options,
                   std::string canonical_spec);

  State EmptyState() const;
  // Appends tokens (already checked) to s.
  void AppendTo(State& s, const float* keys, const float* values,
                int64_t count) const;
  void FlushChunk(State& s) const;
  // Φ is set this much above the largest key norm so that slowly growing
  // norms do not trigger a re-encode of the whole index at every new maximum.
  static constexpr double kPhiHeadroom = 1.05;

  void FitRandom(State& s) const;
  void FitNative(State& s) const;
  void FitPca(State& s) const;
  void SetPhi(State& s, double phi) const;
  void EncodeKeys(const State& s, int64_t first, int64_t count,
                  uint64_t* codes) const;
  void EncodeQuery(const float* q, uint64_t* codes) const;
  void Select(const float* q, int64_t end, Selection* sel) const;
  // Native mode (zeta_native.cc): the k nearest (Euclidean) among the
  // candidates and every unindexed position < end; score = squared distance.
  void SelectNative(const float* q, int64_t end, Selection* sel) const;
  // Native output: Cauchy weights over sel plus the history mean slot.
  void CauchyOutput(const float* q, int64_t end, const Selection& sel,
                    float* out) const;
  void AttendRow(const float* q, int64_t end, float* out) const;
  void MaybeCheckRecall(const float* q, const Selection& sel) const;
  int64_t PcaPrefix() const;

  ZetaOptions opt_;
  std::string spec_;
  int bits_ = 0;
  std::unique_ptr<MortonCodec> codec_;
  State st_;

  mutable absl::Mutex mu_;
  mutable int64_t queries_seen_ ABSL_GUARDED_BY(mu_) = 0;
  mutable SelfMeasurements measured_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_ZETA_ZETA_H_
