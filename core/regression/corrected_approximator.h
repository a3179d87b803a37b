// File: core/regression/corrected_approximator.h
//
// Applies a fitted storage correction (storage_correction.h, issue #5 item 3)
// to a live approximator: CorrectedApproximator owns a base Approximator for
// one (layer, KV head) and, for each query head g of that head's GQA group,
// a score map X_g (d×d) and a value map Y_g (dv×dv). It answers
//
//   out = softmax(s · (q X_g) K̃ᵀ) Ṽ Y_g
//
// by passing the transformed query row q' = q·X_g (row vector times X_g) to
// the base and multiplying the base's output row by Y_g. With X = Y = I it
// returns the base's answers bit for bit.
//
// Query-row layout (core/approximator.h): Query and Attend take g·M rows laid
// out [g][M] (the group's query heads, each with M rows; the decode path has
// M = 1, so row g is query head g); Prefill takes [g][T] with `group` equal
// to the group of the correction. Row r of an m-row call uses head
// r / (m / group). A row count that is not a multiple of the group, or a
// Prefill with another group, is InvalidArgument.
//
// A query-driven base (evict) sees the transformed queries, so its eviction
// decisions follow q·X rather than q: that is what serving the corrected
// model does.
//
// Cost: O(d² + dv²) extra per query row (two dense row-vector products,
// accumulated in double), on top of the base; memory: the base plus
// group·(d² + dv²) floats.
//
// Spec() is "<base spec>+correction": a label, NOT a registry spec (the
// registry cannot rebuild the matrices). SaveState writes the matrices and
// then the base's state; LoadState expects the same group, d and dv.
#ifndef KVSKETCH_CORE_REGRESSION_CORRECTED_APPROXIMATOR_H_
#define KVSKETCH_CORE_REGRESSION_CORRECTED_APPROXIMATOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/approximator.h"
#include "core/regression/regression.h"

namespace kvsketch::regression {

class CorrectedApproximator : public Approximator {
 public:
  // x[g] is d×d and y[g] dv×dv for query head g of the group (d and dv from
  // base->shape()); the group is x.size(). InvalidArgument for a null base,
  // an empty x, x and y of different counts, a wrong matrix size or a
  // non-finite entry (naming the head). The matrices are stored as float.
  static absl::StatusOr<std::unique_ptr<CorrectedApproximator>> Create(
      std::unique_ptr<Approximator> base, absl::Span<const Matrix> x,
      absl::Span<const Matrix> y);

  std::string Spec() const override;
  int64_t num_tokens() const override { return base_->num_tokens(); }
  int64_t MemoryBytes() const override;
  absl::Status Append(ConstMatrixView keys, ConstMatrixView values) override;
  absl::Status Query(ConstMatrixView queries, MatrixView out) const override;
  absl::Status Attend(ConstMatrixView queries, MatrixView out) override;
  absl::Status Prefill(ConstMatrixView queries, int group, ConstMatrixView keys,
                       ConstMatrixView values, MatrixView out) override;
  int64_t AppendGrowthBytes(int64_t n) const override {
    return base_->AppendGrowthBytes(n);
  }
  float MaxStorableMagnitude() const override {
    return base_->MaxStorableMagnitude();
  }
  SelfMeasurements Measurements() const override {
    return base_->Measurements();
  }
  absl::Status SaveState(ByteWriter& writer) const override;
  absl::Status LoadState(ByteReader& reader) override;

  int group() const { return group_; }
  const Approximator& base() const { return *base_; }

 private:
  CorrectedApproximator(std::unique_ptr<Approximator> base, int group,
                        std::vector<float> x, std::vector<float> y);

  // Row r of `in` (rows = group_·per_head) times X_{r / per_head} into `out`.
  void MapQueries(ConstMatrixView in, int64_t per_head, float* out) const;
  // Row r of `out` replaced by out_r · Y_{r / per_head}.
  void MapOutputs(MatrixView out, int64_t per_head) const;
  // InvalidArgument unless rows is a multiple of the group.
  absl::Status CheckRows(const char* op, int64_t rows) const;

  std::unique_ptr<Approximator> base_;
  int group_;
  std::vector<float> x_;  // [group][d][d], row-major
  std::vector<float> y_;  // [group][dv][dv], row-major
};

}  // namespace kvsketch::regression

#endif  // KVSKETCH_CORE_REGRESSION_CORRECTED_APPROXIMATOR_H_
