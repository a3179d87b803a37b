// File: core/zeta/zeta_native.cc
//
// mode=native of `zeta` (papers/C_D_E_conv_regression_zeta.md §E.2 steps
// 6–8, §E.5 "Native"): Euclidean k-nearest retrieval on the keys as they
// are, Cauchy weights and the history mean slot. See zeta.h.
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "Eigen/Core"
#include "core/status_macros.h"
#include "core/zeta/seeded_normal.h"
#include "core/zeta/zeta.h"

namespace kvsketch {
namespace {

double SquaredDistance(const float* q, const float* k, int d) {
  double s = 0;
  for (int j = 0; j < d; ++j) {
    const double diff = double{q[j]} - k[j];
    s += diff * diff;
  }
  return s;
}

}  // namespace

void ZetaApproximator::FitNative(State& s) const {
  // Per curve a random rotation of R^d (the zero last column ignores the
  // MIPS coordinate) and a random shift. ‖R k‖∞ <= ‖k‖ <= Φ, so bounds ±Φ
  // never clamp an indexed key.
  const int d = shape().head_dim, d1 = d + 1, L = opt_.curves;
  SeededNormal rng(opt_.seed);
  s.proj.assign(static_cast<size_t>(L) * d * d1, 0.0f);
  s.rel_centre.assign(L * d, 0.0);
  s.rel_bound.assign(L * d, 1.0);
  s.shift.resize(L * d);
  for (int c = 0; c < L; ++c) {
    Eigen::MatrixXd r(d, d);
    for (int i = 0; i < d; ++i) {
      for (int j = 0; j < d; ++j) r(i, j) = rng.Next();
      for (int p = 0; p < i; ++p) r.row(i) -= r.row(i).dot(r.row(p)) * r.row(p);
      r.row(i) /= r.row(i).norm();
    }
    for (int i = 0; i < d; ++i) {
      for (int j = 0; j < d; ++j) {
        s.proj[(static_cast<size_t>(c) * d + i) * d1 + j] =
            static_cast<float>(r(i, j));
      }
      s.shift[c * d + i] = rng.Uniform();
    }
  }
  s.fitted = true;
}

void ZetaApproximator::SelectNative(const float* q, int64_t end,
                                    Selection* sel) const {
  const State& s = st_;
  const int d = shape().head_dim;
  sel->pos.clear();
  sel->score.clear();
  sel->retrieved_begin = 0;
  sel->region_begin = 0;
  sel->region_end = end;
  const int64_t indexed_end = std::min(s.indexed, end);
  std::vector<int64_t> cand;
  if (indexed_end > 0) {
    std::vector<uint64_t> qcodes(opt_.curves);
    EncodeQuery(q, qcodes.data());
    s.index->Candidates(qcodes.data(), opt_.candidates, &cand);
    cand.erase(std::remove_if(cand.begin(), cand.end(),
                              [&](int64_t p) { return p >= indexed_end; }),
               cand.end());
    std::sort(cand.begin(), cand.end());
    cand.erase(std::unique(cand.begin(), cand.end()), cand.end());
  }
  // The unindexed positions (the current chunk) are candidates exactly.
  for (int64_t p = indexed_end; p < end; ++p) cand.push_back(p);
  std::vector<std::pair<double, int64_t>> near(cand.size());
  for (size_t i = 0; i < cand.size(); ++i) {
    near[i] = {SquaredDistance(q, s.keys.data() + cand[i] * d, d), cand[i]};
  }
  if (static_cast<int64_t>(near.size()) > opt_.k) {
    std::nth_element(near.begin(), near.begin() + opt_.k, near.end());
    near.resize(opt_.k);
  }
  std::sort(near.begin(), near.end(),
            [](const auto& x, const auto& y) { return x.second < y.second; });
  for (const auto& [dist, p] : near) {
    sel->pos.push_back(p);
    sel->score.push_back(dist);
  }
}

void ZetaApproximator::CauchyOutput(const float* q, int64_t end,
                                    const Selection& sel, float* out) const {
  const State& s = st_;
  const int d = shape().head_dim, dv = shape().value_dim;
  const double g2 = opt_.gamma * opt_.gamma;
  // History mean slot over positions < end: the running sums of the whole
  // chunks plus the current chunk's rows in order, so streaming and Prefill
  // round identically.
  KVSKETCH_CHECK(end > s.flushed);
  std::vector<double> km(s.key_sum), vm(s.value_sum);
  for (int64_t p = s.flushed; p < end; ++p) {
    for (int j = 0; j < d; ++j) km[j] += s.keys[p * d + j];
    for (int j = 0; j < dv; ++j) vm[j] += s.values[p * dv + j];
  }
  double mean_dist = 0;
  for (int j = 0; j < d; ++j) {
    km[j] /= static_cast<double>(end);
    const double diff = q[j] - km[j];
    mean_dist += diff * diff;
  }
  const double w_mean = 1.0 / (mean_dist + g2);
  double den = w_mean;
  std::vector<double> acc(dv);
  for (int j = 0; j < dv; ++j) {
    acc[j] = w_mean * vm[j] / static_cast<double>(end);
  }
  for (size_t i = 0; i < sel.pos.size(); ++i) {
    const double w = 1.0 / (sel.score[i] + g2);
    den += w;
    const float* v = s.values.data() + sel.pos[i] * dv;
    for (int j = 0; j < dv; ++j) acc[j] += w * v[j];
  }
  for (int j = 0; j < dv; ++j) out[j] = static_cast<float>(acc[j] / den);
}

}  // namespace kvsketch
