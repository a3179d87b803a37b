// File: core/sketch/sketch.h
//
// `sketch` (seed 000, papers/A_B.md §A.7): one-pass attention in memory that
// does not grow with n. Per head we keep
//   - the first `sinks` tokens exactly (attention sinks),
//   - the last `window` tokens exactly (a ring buffer),
//   - a feature-map summary of every token that has left the window:
//       S = Σ_j φ(k_j) v_jᵀ  (t × dv)   and   z = Σ_j φ(k_j)  (t),
// and answer a query under ONE normaliser (§A.7.2):
//   o = (Σ_{exact} e^{s_j} v_j + φ(q)ᵀS) / (Σ_{exact} e^{s_j} + φ(q)ᵀz),
//   s_j = scale · q·k_j.
//
//   sketch:map=prf,features=256,degree=2,sinks=4,window=128,seed=0
//     map=prf      positive orthogonal random features (FAVOR+), t = features
//     map=taylor   exact degree-`degree` Taylor features, t = C(d+g, g)
//                  (tiny d only; `features` is then unused)
//
// Numerics: S and z are double, and each feature row r carries a log-scale
// shift m_r = max_j log|φ_r(k_j)|: the stored row is Σ_j φ_r(k_j) e^{-m_r}
// v_j, rescaled by e^{m_old - m_new} when m_r rises (log-sum-exp per
// feature), so random features (exponentials) never overflow. A query
// combines exact and summary terms after subtracting the largest of their
// log-magnitudes.
//
// Costs: Append O(t·(d + dv)) per summarised token, O(d + dv) otherwise.
// Query O(t·(d + dv) + (sinks + window)·(d + dv)) per row, independent of n.
// Memory, allocated in full at construction and constant in n:
//   (sinks + window)·(d + dv)·4 + t·(dv + 3)·8 + t bytes, plus t·d·4 for the
//   random directions (prf) or ~16·t for the monomial table (taylor).
//
// Merge: summaries add, so MergeFrom(b) turns the state of stream A into the
// state of stream A·B (A then B), up to float rounding of the summary sums.
//
// Thread safety: as Approximator.
#ifndef KVSKETCH_CORE_SKETCH_SKETCH_H_
#define KVSKETCH_CORE_SKETCH_SKETCH_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/approximator.h"
#include "core/registry.h"
#include "core/sketch/feature_maps.h"

namespace kvsketch {

// The registry entry of the `sketch` kind.
const KindDef& SketchKindDef();

class SketchApproximator : public Approximator {
 public:
  // REQUIRES: map->input_dim() == shape.head_dim; sinks, window >= 0.
  SketchApproximator(const HeadShape& shape,
                     std::shared_ptr<const FeatureMap> map, int sinks,
                     int window, std::string canonical_spec);

  std::string Spec() const override { return spec_; }
  int64_t num_tokens() const override { return num_tokens_; }
  int64_t MemoryBytes() const override;
  absl::Status Append(ConstMatrixView keys, ConstMatrixView values) override;
  absl::Status Query(ConstMatrixView queries, MatrixView out) const override;
  absl::Status SaveState(ByteWriter& writer) const override;
  absl::Status LoadState(ByteReader& reader) override;

  // State of the concatenated stream (this one, then `other`). InvalidArgument
  // if the specs or shapes differ (nothing changes then). `other` may be
  // *this. Cost O(t·dv + (sinks + window)·t·(d + dv)).
  absl::Status MergeFrom(const SketchApproximator& other);

  // Tokens held in the summary (neither sink nor window).
  int64_t num_summarized() const { return num_summarized_; }
  const FeatureMap& feature_map() const { return *map_; }

 private:
  // Stores one token: fills the sinks, then the window; a token pushed out
  // of the full window (or any token when window == 0) goes to the summary.
  void AppendOne(const float* key, const float* value);
  void Summarize(const float* key, const float* value);
  // Adds a summary (shift, z, S) into ours, aligning the per-feature shifts.
  void AddSummary(const std::vector<double>& shift,
                  const std::vector<double>& z, const std::vector<double>& s);
  const float* WindowKey(int i) const;  // i-th oldest window token
  const float* WindowValue(int i) const;

  std::shared_ptr<const FeatureMap> map_;
  int max_sinks_;
  int max_window_;
  std::string spec_;

  int64_t num_tokens_ = 0;
  int64_t num_summarized_ = 0;
  int num_sinks_ = 0;
  int win_start_ = 0;  // ring index of the oldest window token
  int win_count_ = 0;
  std::vector<float> sink_k_, sink_v_;  // max_sinks × d, × dv
  std::vector<float> win_k_, win_v_;    // max_window × d, × dv (ring)
  std::vector<double> shift_;           // t; -inf until a feature is seen
  std::vector<double> z_;               // t
  std::vector<double> s_;               // t × dv
  // Append scratch (Append is non-const, so a member is safe).
  std::vector<double> feat_log_;
  std::vector<int8_t> feat_sign_;
};

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_SKETCH_SKETCH_H_
