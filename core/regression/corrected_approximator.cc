// CorrectedApproximator (see header).
#include "core/regression/corrected_approximator.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace kvsketch::regression {
namespace {

constexpr uint32_t kStateVersion = 1;

absl::Status CheckSquare(const Matrix& m, int64_t size, const char* name,
                         size_t head) {
  if (m.rows() != size || m.cols() != size) {
    return absl::InvalidArgumentError(
        absl::StrCat("correction: ", name, " of query head ", head, " is ",
                     m.rows(), "x", m.cols(), ", expected ", size, "x", size));
  }
  for (int64_t i = 0; i < m.size(); ++i) {
    const float f = static_cast<float>(m.data()[i]);
    if (!std::isfinite(f)) {
      return absl::InvalidArgumentError(
          absl::StrCat("correction: ", name, " of query head ", head,
                       " has a non-finite entry (as float32)"));
    }
  }
  return absl::OkStatus();
}

void AppendRowMajor(const Matrix& m, std::vector<float>* out) {
  for (int64_t i = 0; i < m.rows(); ++i) {
    for (int64_t j = 0; j < m.cols(); ++j) {
      out->push_back(static_cast<float>(m(i, j)));
    }
  }
}

// out (n) = in (n) · a (n×n, row-major), accumulated in double.
void RowTimes(const float* in, const float* a, int64_t n, double* acc,
              float* out) {
  for (int64_t j = 0; j < n; ++j) acc[j] = 0;
  for (int64_t c = 0; c < n; ++c) {
    const double v = in[c];
    const float* row = a + c * n;
    for (int64_t j = 0; j < n; ++j) acc[j] += v * row[j];
  }
  for (int64_t j = 0; j < n; ++j) out[j] = static_cast<float>(acc[j]);
}

}  // namespace

absl::StatusOr<std::unique_ptr<CorrectedApproximator>>
CorrectedApproximator::Create(std::unique_ptr<Approximator> base,
                              absl::Span<const Matrix> x,
                              absl::Span<const Matrix> y) {
  if (base == nullptr) {
    return absl::InvalidArgumentError("correction: no base approximator");
  }
  if (x.empty()) {
    return absl::InvalidArgumentError(
        "correction: no query heads (x is empty)");
  }
  if (x.size() != y.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("correction: ", x.size(), " X matrices but ", y.size(),
                     " Y matrices; expected one of each per query head"));
  }
  if (x.size() > (1u << 16)) {
    return absl::InvalidArgumentError(
        absl::StrCat("correction: group of ", x.size(), " query heads"));
  }
  const int64_t d = base->shape().head_dim, dv = base->shape().value_dim;
  std::vector<float> xf, yf;
  xf.reserve(x.size() * d * d);
  yf.reserve(y.size() * dv * dv);
  for (size_t g = 0; g < x.size(); ++g) {
    KVSKETCH_RETURN_IF_ERROR(CheckSquare(x[g], d, "X", g));
    KVSKETCH_RETURN_IF_ERROR(CheckSquare(y[g], dv, "Y", g));
    AppendRowMajor(x[g], &xf);
    AppendRowMajor(y[g], &yf);
  }
  return std::unique_ptr<CorrectedApproximator>(
      new CorrectedApproximator(std::move(base), static_cast<int>(x.size()),
                                std::move(xf), std::move(yf)));
}

CorrectedApproximator::CorrectedApproximator(std::unique_ptr<Approximator> base,
                                             int group, std::vector<float> x,
                                             std::vector<float> y)
    : Approximator(base->shape()),
      base_(std::move(base)),
      group_(group),
      x_(std::move(x)),
      y_(std::move(y)) {}

std::string CorrectedApproximator::Spec() const {
  return absl::StrCat(base_->Spec(), "+correction");
}

int64_t CorrectedApproximator::MemoryBytes() const {
  return base_->MemoryBytes() +
         static_cast<int64_t>((x_.capacity() + y_.capacity()) * sizeof(float));
}

absl::Status CorrectedApproximator::Append(ConstMatrixView keys,
                                           ConstMatrixView values) {
  return base_->Append(keys, values);
}

absl::Status CorrectedApproximator::CheckRows(const char* op,
                                              int64_t rows) const {
  if (rows % group_ != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": ", rows, " query rows is not a multiple of the correction's ",
        "group of ", group_, " query heads (layout [g][M])"));
  }
  return absl::OkStatus();
}

void CorrectedApproximator::MapQueries(ConstMatrixView in, int64_t per_head,
                                       float* out) const {
  const int64_t d = shape().head_dim;
  std::vector<double> acc(d);
  for (int64_t r = 0; r < in.rows; ++r) {
    const int64_t g = r / per_head;
    RowTimes(in.row(r), x_.data() + g * d * d, d, acc.data(), out + r * d);
  }
}

void CorrectedApproximator::MapOutputs(MatrixView out, int64_t per_head) const {
  const int64_t dv = shape().value_dim;
  std::vector<double> acc(dv);
  std::vector<float> row(dv);
  for (int64_t r = 0; r < out.rows; ++r) {
    const int64_t g = r / per_head;
    std::copy_n(out.row(r), dv, row.data());
    RowTimes(row.data(), y_.data() + g * dv * dv, dv, acc.data(), out.row(r));
  }
}

absl::Status CorrectedApproximator::Query(ConstMatrixView queries,
                                          MatrixView out) const {
  KVSKETCH_RETURN_IF_ERROR(CheckQueryArgs(queries, out));
  KVSKETCH_RETURN_IF_ERROR(CheckRows("query", queries.rows));
  if (queries.rows == 0) return base_->Query(queries, out);
  const int64_t per_head = queries.rows / group_;
  std::vector<float> q(static_cast<size_t>(queries.size()));
  MapQueries(queries, per_head, q.data());
  KVSKETCH_RETURN_IF_ERROR(
      base_->Query({q.data(), queries.rows, queries.cols}, out));
  MapOutputs(out, per_head);
  return absl::OkStatus();
}

absl::Status CorrectedApproximator::Attend(ConstMatrixView queries,
                                           MatrixView out) {
  KVSKETCH_RETURN_IF_ERROR(CheckQueryArgs(queries, out));
  KVSKETCH_RETURN_IF_ERROR(CheckRows("attend", queries.rows));
  if (queries.rows == 0) return base_->Attend(queries, out);
  const int64_t per_head = queries.rows / group_;
  std::vector<float> q(static_cast<size_t>(queries.size()));
  MapQueries(queries, per_head, q.data());
  KVSKETCH_RETURN_IF_ERROR(
      base_->Attend({q.data(), queries.rows, queries.cols}, out));
  MapOutputs(out, per_head);
  return absl::OkStatus();
}

absl::Status CorrectedApproximator::Prefill(ConstMatrixView queries, int group,
                                            ConstMatrixView keys,
                                            ConstMatrixView values,
                                            MatrixView out) {
  KVSKETCH_RETURN_IF_ERROR(CheckPrefillArgs(queries, group, keys, values, out));
  if (group != group_) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefill: group (", group, ") differs from the ",
                     "correction's group of ", group_, " query heads"));
  }
  const int64_t per_head = keys.rows;
  std::vector<float> q(static_cast<size_t>(queries.size()));
  if (per_head > 0) MapQueries(queries, per_head, q.data());
  KVSKETCH_RETURN_IF_ERROR(base_->Prefill(
      {q.data(), queries.rows, queries.cols}, group, keys, values, out));
  if (per_head > 0) MapOutputs(out, per_head);
  return absl::OkStatus();
}

// State: u32 version, u32 group, u32 d, u32 dv, X floats, Y floats, then
// the base's state.
absl::Status CorrectedApproximator::SaveState(ByteWriter& writer) const {
  writer.PutU32(kStateVersion);
  writer.PutU32(static_cast<uint32_t>(group_));
  writer.PutU32(static_cast<uint32_t>(shape().head_dim));
  writer.PutU32(static_cast<uint32_t>(shape().value_dim));
  writer.PutFloats(x_);
  writer.PutFloats(y_);
  return base_->SaveState(writer);
}

absl::Status CorrectedApproximator::LoadState(ByteReader& reader) {
  uint32_t version = 0, group = 0, d = 0, dv = 0;
  KVSKETCH_RETURN_IF_ERROR(reader.GetU32(&version, "correction version"));
  if (version != kStateVersion) {
    return absl::DataLossError(absl::StrCat(
        "correction state version ", version, ", expected ", kStateVersion));
  }
  KVSKETCH_RETURN_IF_ERROR(reader.GetU32(&group, "correction group"));
  KVSKETCH_RETURN_IF_ERROR(reader.GetU32(&d, "correction d"));
  KVSKETCH_RETURN_IF_ERROR(reader.GetU32(&dv, "correction dv"));
  if (group != static_cast<uint32_t>(group_) ||
      d != static_cast<uint32_t>(shape().head_dim) ||
      dv != static_cast<uint32_t>(shape().value_dim)) {
    return absl::DataLossError(
        absl::StrCat("correction state for group ", group, ", d ", d, ", dv ",
                     dv, "; this approximator has group ", group_, ", d ",
                     shape().head_dim, ", dv ", shape().value_dim));
  }
  std::vector<float> x(x_.size()), y(y_.size());
  KVSKETCH_RETURN_IF_ERROR(
      reader.GetFloats(x.data(), x.size(), "correction X"));
  KVSKETCH_RETURN_IF_ERROR(
      reader.GetFloats(y.data(), y.size(), "correction Y"));
  for (const std::vector<float>* v : {&x, &y}) {
    for (float f : *v) {
      if (!std::isfinite(f)) {
        return absl::DataLossError("correction state has a non-finite entry");
      }
    }
  }
  KVSKETCH_RETURN_IF_ERROR(base_->LoadState(reader));
  x_ = std::move(x);
  y_ = std::move(y);
  return absl::OkStatus();
}

}  // namespace kvsketch::regression
