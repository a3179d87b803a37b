#include "client/llama/forward.h"

#include <cmath>
#include <utility>

#include "Eigen/Core"
#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace kvsketch::llama {
namespace {

using RowMajorMap =
    Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic,
                                   Eigen::RowMajor>>;

// out (rows) = W (rows × cols, row-major) · x (cols). Eigen's GEMV keeps
// float accumulators in SIMD lanes; O(rows·cols).
void MatVec(const float* w, int64_t rows, int64_t cols, const float* x,
            float* out) {
  Eigen::Map<Eigen::VectorXf>(out, rows).noalias() =
      RowMajorMap(w, rows, cols) * Eigen::Map<const Eigen::VectorXf>(x, cols);
}

}  // namespace

void RmsNorm(absl::Span<const float> x, absl::Span<const float> weight,
             absl::Span<float> out) {
  KVSKETCH_CHECK(x.size() == weight.size() && x.size() == out.size());
  // The sum of squares in double: run.c sums in float, which for d in the
  // thousands loses a few bits; the result is the same to float rounding.
  double ss = 0;
  for (float xi : x) ss += static_cast<double>(xi) * xi;
  const float inv =
      static_cast<float>(1.0 / std::sqrt(ss / x.size() + kRmsNormEps));
  for (size_t i = 0; i < x.size(); ++i) out[i] = weight[i] * (inv * x[i]);
}

void ApplyRope(int pos, int head_dim, absl::Span<float> vec) {
  KVSKETCH_CHECK(head_dim > 0 && head_dim % 2 == 0 &&
                 vec.size() % static_cast<size_t>(head_dim) == 0);
  // Angles in double: pos · freq in float (run.c) loses ~pos·2⁻²⁴ radians,
  // which matters only for positions in the thousands.
  for (int i = 0; i < head_dim; i += 2) {
    const double freq = std::pow(double{kRopeTheta}, -double(i) / head_dim);
    const double angle = pos * freq;
    const float c = static_cast<float>(std::cos(angle));
    const float s = static_cast<float>(std::sin(angle));
    for (size_t h = 0; h < vec.size(); h += head_dim) {
      const float v0 = vec[h + i], v1 = vec[h + i + 1];
      vec[h + i] = v0 * c - v1 * s;
      vec[h + i + 1] = v0 * s + v1 * c;
    }
  }
}

void SwiGlu(const float* w1, const float* w2, const float* w3, int dim,
            int hidden, absl::Span<const float> x, absl::Span<float> scratch,
            absl::Span<float> out) {
  KVSKETCH_CHECK(x.size() == static_cast<size_t>(dim) &&
                 out.size() == static_cast<size_t>(dim) &&
                 scratch.size() >= 2 * static_cast<size_t>(hidden));
  float* gate = scratch.data();
  float* up = scratch.data() + hidden;
  MatVec(w1, hidden, dim, x.data(), gate);
  MatVec(w3, hidden, dim, x.data(), up);
  for (int i = 0; i < hidden; ++i) {
    const float g = gate[i];
    gate[i] = g * (1.0f / (1.0f + std::exp(-g))) * up[i];
  }
  MatVec(w2, dim, hidden, gate, out.data());
}

LlamaModel::LlamaModel(LlamaCheckpoint checkpoint)
    : checkpoint_(std::move(checkpoint)) {
  const LlamaConfig& c = checkpoint_.config;
  x_.resize(c.dim);
  xb_.resize(c.dim);
  q_.resize(c.dim);
  att_.resize(c.dim);
  k_.resize(c.kv_dim());
  v_.resize(c.kv_dim());
  hb_.resize(2 * static_cast<size_t>(c.hidden_dim));
}

absl::Status LlamaModel::Forward(int token, int pos, AttentionBackend& backend,
                                 absl::Span<float> logits) {
  const LlamaConfig& c = checkpoint_.config;
  if (token < 0 || token >= c.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("token: ", token, " is outside the vocabulary [0, ",
                     c.vocab_size, ")"));
  }
  if (pos < 0 || pos >= c.seq_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pos: ", pos, " is outside the model's context [0, ", c.seq_len, ")"));
  }
  if (logits.size() != static_cast<size_t>(c.vocab_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat("logits: size ", logits.size(), ", expected vocab_size ",
                     c.vocab_size));
  }
  const int64_t dim = c.dim, kv_dim = c.kv_dim(), hidden = c.hidden_dim;
  const LlamaCheckpoint& w = checkpoint_;
  std::copy_n(w.token_embedding.data() + token * dim, dim, x_.data());
  for (int l = 0; l < c.n_layers; ++l) {
    RmsNorm(x_, absl::MakeConstSpan(w.rms_att.data() + l * dim, dim),
            absl::MakeSpan(xb_));
    MatVec(w.wq.data() + l * dim * dim, dim, dim, xb_.data(), q_.data());
    MatVec(w.wk.data() + l * kv_dim * dim, kv_dim, dim, xb_.data(), k_.data());
    MatVec(w.wv.data() + l * kv_dim * dim, kv_dim, dim, xb_.data(), v_.data());
    ApplyRope(pos, c.head_dim(), absl::MakeSpan(q_));
    ApplyRope(pos, c.head_dim(), absl::MakeSpan(k_));
    KVSKETCH_RETURN_IF_ERROR(
        backend.Attend(l, pos, q_, k_, v_, absl::MakeSpan(att_)));
    MatVec(w.wo.data() + l * dim * dim, dim, dim, att_.data(), xb_.data());
    for (int64_t i = 0; i < dim; ++i) x_[i] += xb_[i];
    RmsNorm(x_, absl::MakeConstSpan(w.rms_ffn.data() + l * dim, dim),
            absl::MakeSpan(xb_));
    // att_ is free again: the MLP output goes there before the residual.
    SwiGlu(w.w1.data() + l * hidden * dim, w.w2.data() + l * dim * hidden,
           w.w3.data() + l * hidden * dim, c.dim, c.hidden_dim, xb_,
           absl::MakeSpan(hb_), absl::MakeSpan(att_));
    for (int64_t i = 0; i < dim; ++i) x_[i] += att_[i];
  }
  RmsNorm(x_, w.rms_final, absl::MakeSpan(x_));
  MatVec(w.classifier_data(), c.vocab_size, dim, x_.data(), logits.data());
  return absl::OkStatus();
}

}  // namespace kvsketch::llama
