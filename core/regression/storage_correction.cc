// Storage correction fitted with the attention regression (see header).
#include "core/regression/storage_correction.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/evict/evict.h"
#include "core/exact/exact.h"
#include "core/registry.h"
#include "core/status_macros.h"
#include "core/util/half.h"

namespace kvsketch::regression {
namespace {

// What one KV head's approximator held and answered over the replay.
struct Replay {
  Matrix keys, values;  // n×d, n×dv: as stored (rounded for f16/bf16)
  BoolArray visible;    // n×n: row t = keys held when query t was answered
  std::vector<Matrix> outputs;  // per query head of the group: n×dv
};

float Round(float x, StoreType store) {
  switch (store) {
    case StoreType::kF16:
      return HalfToFloat(FloatToHalf(x));
    case StoreType::kBf16:
      return Bf16ToFloat(FloatToBf16(x));
    case StoreType::kF32:
      break;
  }
  return x;
}

// Decode-style replay (Append token t, Attend the group's queries at t), the
// path that feeds evict's heavy-hitter masses.
absl::StatusOr<Replay> ReplayHead(const eval::Trace& tr, int layer, int kv,
                                  const std::string& spec) {
  const int group = tr.q_heads / tr.kv_heads;
  const HeadShape shape{tr.d, tr.dv, tr.scale};
  KVSKETCH_ASSIGN_OR_RETURN(std::unique_ptr<Approximator> approx,
                            CreateApproximator(spec, shape));
  auto* evict = dynamic_cast<EvictApproximator*>(approx.get());
  auto* exact = dynamic_cast<ExactApproximator*>(approx.get());
  if (evict == nullptr && exact == nullptr) {
    return absl::UnimplementedError(
        absl::StrCat("storage correction models the stored keys of evict and "
                     "exact:store=...; '",
                     approx->Spec(), "' keeps no key subset to correct"));
  }
  const int64_t n = tr.n;
  Replay r;
  r.keys.resize(n, tr.d);
  r.values.resize(n, tr.dv);
  r.visible = BoolArray::Constant(n, n, false);
  r.outputs.assign(group, Matrix(n, tr.dv));
  const StoreType store = exact ? exact->store() : StoreType::kF32;
  std::vector<float> q(static_cast<size_t>(group) * tr.d);
  std::vector<float> out(static_cast<size_t>(group) * tr.dv);
  for (int64_t t = 0; t < n; ++t) {
    const float* k = tr.k_row(layer, kv, t);
    const float* v = tr.v_row(layer, kv, t);
    for (int c = 0; c < tr.d; ++c) r.keys(t, c) = Round(k[c], store);
    for (int c = 0; c < tr.dv; ++c) r.values(t, c) = Round(v[c], store);
    KVSKETCH_RETURN_IF_ERROR(approx->Append({k, 1, tr.d}, {v, 1, tr.dv}));
    for (int g = 0; g < group; ++g) {
      std::copy_n(tr.q_row(layer, kv * group + g, t), tr.d,
                  q.data() + static_cast<size_t>(g) * tr.d);
    }
    KVSKETCH_RETURN_IF_ERROR(
        approx->Attend({q.data(), group, tr.d}, {out.data(), group, tr.dv}));
    for (int g = 0; g < group; ++g) {
      for (int c = 0; c < tr.dv; ++c) r.outputs[g](t, c) = out[g * tr.dv + c];
    }
    if (evict != nullptr) {
      for (int64_t j : evict->StoredPositions()) r.visible(t, j) = true;
    } else {
      r.visible.row(t).head(t + 1).setConstant(true);
    }
  }
  return r;
}

// Exact causal attention in double against the original keys and values.
Matrix ExactOutputs(const eval::Trace& tr, int layer, int qh,
                    const Matrix& a1) {
  const int kv = qh / (tr.q_heads / tr.kv_heads);
  Matrix k(tr.n, tr.d), v(tr.n, tr.dv);
  for (int64_t t = 0; t < tr.n; ++t) {
    for (int c = 0; c < tr.d; ++c) k(t, c) = tr.k_row(layer, kv, t)[c];
    for (int c = 0; c < tr.dv; ++c) v(t, c) = tr.v_row(layer, kv, t)[c];
  }
  Matrix out(tr.n, tr.dv);
  for (int64_t t = 0; t < tr.n; ++t) {
    Eigen::VectorXd s = k.topRows(t + 1) * a1.row(t).transpose();
    s = (s.array() - s.maxCoeff()).exp().matrix();
    out.row(t) = (s.transpose() * v.topRows(t + 1)) / s.sum();
  }
  return out;
}

double RelativeError(const AttentionRegression& prob, const Matrix& x,
                     const Matrix& y) {
  return std::sqrt(prob.ResidualLoss(x, y) /
                   std::max(1e-300, prob.data().b.squaredNorm()));
}

}  // namespace

absl::StatusOr<std::vector<HeadCorrection>> FitStorageCorrection(
    const eval::Trace& tr, const CorrectionOptions& opt,
    const std::function<void(const HeadCorrection&)>& on_head) {
  if (tr.m() != tr.n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "storage correction needs a query at every position (a trace "
        "directory); this trace has ",
        tr.m(), " query rows for ", tr.n, " tokens"));
  }
  for (int64_t i = 0; i < tr.m(); ++i) {
    if (tr.query_pos[i] != i) {
      return absl::InvalidArgumentError("trace query positions are not 0..n-1");
    }
  }
  if (!(opt.train_fraction > 0 && opt.train_fraction < 1)) {
    return absl::InvalidArgumentError("train fraction must be in (0, 1)");
  }
  if (!(opt.lambda > 0) || !std::isfinite(opt.lambda)) {
    return absl::InvalidArgumentError(
        "lambda must be > 0 (the correction is anchored at identity)");
  }
  if (opt.layer < -1 || opt.layer >= tr.layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer ", opt.layer, " out of range [0, ", tr.layers, ")"));
  }
  const int64_t n = tr.n;
  const int64_t n_train = static_cast<int64_t>(opt.train_fraction * n);
  if (n_train < 1 || n_train >= n) {
    return absl::InvalidArgumentError(
        absl::StrCat("train fraction ", opt.train_fraction, " of ", n,
                     " tokens leaves an empty training or held-out part"));
  }
  const int64_t n_held = n - n_train;
  const int group = tr.q_heads / tr.kv_heads;
  std::vector<HeadCorrection> results;
  for (int layer = 0; layer < tr.layers; ++layer) {
    if (opt.layer >= 0 && layer != opt.layer) continue;
    for (int kv = 0; kv < tr.kv_heads; ++kv) {
      KVSKETCH_ASSIGN_OR_RETURN(Replay rep,
                                ReplayHead(tr, layer, kv, opt.base_spec));
      for (int g = 0; g < group; ++g) {
        const int qh = kv * group + g;
        Matrix a1(n, tr.d);
        for (int64_t t = 0; t < n; ++t) {
          for (int c = 0; c < tr.d; ++c) {
            a1(t, c) = double(tr.scale) * tr.q_row(layer, qh, t)[c];
          }
        }
        const Matrix b = ExactOutputs(tr, layer, qh, a1);
        // Training rows see only earlier keys: keep the first n_train columns.
        RegressionData train{
            .a1 = a1.topRows(n_train),
            .a2 = rep.keys.topRows(n_train),
            .a3 = rep.values.topRows(n_train),
            .b = b.topRows(n_train),
            .causal = true,
            .allowed = rep.visible.topLeftCorner(n_train, n_train)};
        RegressionData held{.a1 = a1.bottomRows(n_held),
                            .a2 = rep.keys,
                            .a3 = rep.values,
                            .b = b.bottomRows(n_held),
                            .causal = true,
                            .row_offset = n_train,
                            .allowed = rep.visible.bottomRows(n_held)};
        const Matrix eye_x = Matrix::Identity(tr.d, tr.d);
        const Matrix eye_y = Matrix::Identity(tr.dv, tr.dv);
        const double lambda = opt.lambda * train.b.squaredNorm();
        RegressionPenalty pen{.lambda_x = lambda,
                              .lambda_y = lambda,
                              .x_anchor = eye_x,
                              .y_anchor = eye_y};
        KVSKETCH_ASSIGN_OR_RETURN(
            AttentionRegression train_prob,
            AttentionRegression::Create(std::move(train), pen));
        KVSKETCH_ASSIGN_OR_RETURN(
            AttentionRegression held_prob,
            AttentionRegression::Create(std::move(held), pen));
        HeadCorrection hc;
        hc.layer = layer;
        hc.q_head = qh;
        hc.train_rows = n_train;
        hc.held_rows = n_held;
        // The untrained model must be the approximator itself.
        const Matrix model = held_prob.Attention(eye_x) * rep.values;
        const Matrix& own = rep.outputs[g];
        const double mx = std::max(1e-30, own.cwiseAbs().maxCoeff());
        hc.model_check =
            (model - own.bottomRows(n_held)).cwiseAbs().maxCoeff() / mx;
        RegressionOptions ro;
        ro.x_init = eye_x;
        ro.y_init = eye_y;
        ro.max_iterations = opt.max_iterations;
        ro.rel_tol = opt.rel_tol;
        KVSKETCH_ASSIGN_OR_RETURN(RegressionResult fit, Solve(train_prob, ro));
        hc.iterations = static_cast<int>(fit.history.size()) - 1;
        hc.train_untrained = RelativeError(train_prob, eye_x, eye_y);
        hc.train_fitted = RelativeError(train_prob, fit.x, fit.y);
        hc.held_untrained = RelativeError(held_prob, eye_x, eye_y);
        hc.held_fitted = RelativeError(held_prob, fit.x, fit.y);
        hc.x = std::move(fit.x);
        hc.y = std::move(fit.y);
        if (on_head) on_head(hc);
        results.push_back(std::move(hc));
      }
    }
  }
  return results;
}

}  // namespace kvsketch::regression
