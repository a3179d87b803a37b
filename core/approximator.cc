// File: core/approximator.cc
#include "core/approximator.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace kvsketch {
namespace {

absl::Status CheckMatrix(absl::string_view op, absl::string_view name,
                         ConstMatrixView m, int64_t want_cols) {
  if (m.rows < 0 || m.cols != want_cols) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", name, " is ", m.rows, "x", m.cols, ", expected ",
                     want_cols, " columns"));
  }
  if (m.rows > 0 && m.data == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", name, " has ", m.rows, " rows but no data"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Approximator::CheckAppendArgs(ConstMatrixView keys,
                                           ConstMatrixView values) const {
  KVSKETCH_RETURN_IF_ERROR(
      CheckMatrix("append", "keys", keys, shape_.head_dim));
  KVSKETCH_RETURN_IF_ERROR(
      CheckMatrix("append", "values", values, shape_.value_dim));
  if (keys.rows != values.rows) {
    return absl::InvalidArgumentError(
        absl::StrCat("append: keys have ", keys.rows, " rows but values have ",
                     values.rows, "; expected the same number of tokens"));
  }
  return absl::OkStatus();
}

absl::Status Approximator::CheckQueryArgs(ConstMatrixView queries,
                                          MatrixView out) const {
  KVSKETCH_RETURN_IF_ERROR(
      CheckMatrix("query", "queries", queries, shape_.head_dim));
  KVSKETCH_RETURN_IF_ERROR(CheckMatrix("query", "out", out, shape_.value_dim));
  if (queries.rows != out.rows) {
    return absl::InvalidArgumentError(
        absl::StrCat("query: queries have ", queries.rows, " rows but out has ",
                     out.rows, "; expected one output row per query"));
  }
  return absl::OkStatus();
}

absl::Status Approximator::QueryDiagnostics(
    ConstMatrixView /*queries*/, std::vector<QueryDiagnostic>* /*out*/) const {
  return absl::UnimplementedError(
      absl::StrCat("diagnostics not supported by ", Spec()));
}

absl::Status Approximator::CheckPrefillArgs(ConstMatrixView queries, int group,
                                            ConstMatrixView keys,
                                            ConstMatrixView values,
                                            MatrixView out) const {
  KVSKETCH_RETURN_IF_ERROR(CheckAppendArgs(keys, values));
  if (group < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefill: group (", group, ") must be >= 1"));
  }
  KVSKETCH_RETURN_IF_ERROR(
      CheckMatrix("prefill", "queries", queries, shape_.head_dim));
  KVSKETCH_RETURN_IF_ERROR(
      CheckMatrix("prefill", "out", out, shape_.value_dim));
  const int64_t rows = static_cast<int64_t>(group) * keys.rows;
  if (queries.rows != rows || out.rows != rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prefill: queries have ", queries.rows, " rows and out ", out.rows,
        ", expected group*T = ", group, "*", keys.rows, " = ", rows));
  }
  return absl::OkStatus();
}

absl::Status Approximator::Prefill(ConstMatrixView queries, int group,
                                   ConstMatrixView keys, ConstMatrixView values,
                                   MatrixView out) {
  KVSKETCH_RETURN_IF_ERROR(CheckPrefillArgs(queries, group, keys, values, out));
  const int64_t t_new = keys.rows;
  const int d = shape_.head_dim;
  const int dv = shape_.value_dim;
  std::vector<float> q_rows(static_cast<size_t>(group) * d);
  std::vector<float> o_rows(static_cast<size_t>(group) * dv);
  for (int64_t t = 0; t < t_new; ++t) {
    KVSKETCH_RETURN_IF_ERROR(
        Append({keys.row(t), 1, d}, {values.row(t), 1, dv}));
    for (int h = 0; h < group; ++h) {
      const float* src = queries.row(h * t_new + t);
      std::copy(src, src + d, q_rows.data() + static_cast<size_t>(h) * d);
    }
    KVSKETCH_RETURN_IF_ERROR(
        Attend({q_rows.data(), group, d}, {o_rows.data(), group, dv}));
    for (int h = 0; h < group; ++h) {
      const float* src = o_rows.data() + static_cast<size_t>(h) * dv;
      std::copy(src, src + dv, out.row(h * t_new + t));
    }
  }
  return absl::OkStatus();
}

}  // namespace kvsketch
