// File: tests/core/zeta_native_test.cc
//
// `zeta` mode=native (core/zeta/zeta_native.cc): Cauchy weights over the k
// nearest keys plus the history mean slot, checked against a double
// reference of that formula (papers/C_D_E_conv_regression_zeta.md §E.6
// items 5, 8, 9).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/registry.h"
#include "core/zeta/zeta.h"
#include "gtest/gtest.h"
#include "tests/core/testing/reference_attention.h"

namespace kvsketch {
namespace {

using ::kvsketch::testing::RandomNormal;

std::unique_ptr<Approximator> Make(const std::string& spec,
                                   const HeadShape& shape) {
  auto a = CreateApproximator(spec, shape);
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? *std::move(a) : nullptr;
}

// Σ_j w_j v_j / Σ_j w_j over the k nearest of keys [0, end) (ties: lower
// position) and the mean slot (mean key, mean value), w = 1/(dist² + γ²).
std::vector<double> CauchyReference(const float* q, const std::vector<float>& k,
                                    const std::vector<float>& v, int64_t end,
                                    int d, int dv, int64_t top, double gamma) {
  auto dist = [&](const double* x) {
    double s = 0;
    for (int j = 0; j < d; ++j) s += (q[j] - x[j]) * (q[j] - x[j]);
    return s;
  };
  std::vector<std::pair<double, int64_t>> all(end);
  std::vector<double> row(d), km(d, 0.0), vm(dv, 0.0);
  for (int64_t p = 0; p < end; ++p) {
    for (int j = 0; j < d; ++j) {
      row[j] = k[p * d + j];
      km[j] += row[j] / end;
    }
    for (int j = 0; j < dv; ++j) vm[j] += double{v[p * dv + j]} / end;
    all[p] = {dist(row.data()), p};
  }
  std::sort(all.begin(), all.end());
  const double g2 = gamma * gamma;
  double den = 1.0 / (dist(km.data()) + g2);
  std::vector<double> out(dv);
  for (int j = 0; j < dv; ++j) out[j] = den * vm[j];
  for (int64_t i = 0; i < std::min(top, end); ++i) {
    const double w = 1.0 / (all[i].first + g2);
    den += w;
    for (int j = 0; j < dv; ++j) out[j] += w * v[all[i].second * dv + j];
  }
  for (double& o : out) o /= den;
  return out;
}

double MaxDiff(const float* a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < b.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

TEST(ZetaNativeTest, MatchesCauchyReferenceWhenEveryCodeIsACandidate) {
  constexpr int d = 3, dv = 5;
  for (int64_t n : {1, 50, 700, 3000}) {
    auto z = Make("zeta:mode=native,candidates=100000,k=8,chunk=64,gamma=0.5",
                  {d, dv, 1.0f});
    ASSERT_NE(z, nullptr);
    const auto k = RandomNormal(n, n * d), v = RandomNormal(n + 1, n * dv);
    ASSERT_TRUE(z->Append({k.data(), n, d}, {v.data(), n, dv}).ok());
    const auto q = RandomNormal(n + 2, 4 * d);
    std::vector<float> out(4 * dv);
    ASSERT_TRUE(z->Query({q.data(), 4, d}, {out.data(), 4, dv}).ok());
    for (int r = 0; r < 4; ++r) {
      const auto ref =
          CauchyReference(q.data() + r * d, k, v, n, d, dv, 8, 0.5);
      EXPECT_LE(MaxDiff(out.data() + r * dv, ref), 1e-5) << "n=" << n;
    }
  }
}

TEST(ZetaNativeTest, CausalPrefillMatchesTheReferenceRowByRow) {
  constexpr int d = 2, dv = 3;
  const int64_t prev = 100, t = 150;
  auto z =
      Make("zeta:mode=native,candidates=100000,k=4,chunk=32", {d, dv, 1.0f});
  const auto k = RandomNormal(1, (prev + t) * d),
             v = RandomNormal(2, (prev + t) * dv), q = RandomNormal(3, t * d);
  ASSERT_TRUE(z->Append({k.data(), prev, d}, {v.data(), prev, dv}).ok());
  std::vector<float> out(t * dv);
  ASSERT_TRUE(z->Prefill({q.data(), t, d}, 1, {k.data() + prev * d, t, d},
                         {v.data() + prev * dv, t, dv}, {out.data(), t, dv})
                  .ok());
  for (int64_t r = 0; r < t; ++r) {
    const auto ref =
        CauchyReference(q.data() + r * d, k, v, prev + r + 1, d, dv, 4, 0.5);
    EXPECT_LE(MaxDiff(out.data() + r * dv, ref), 1e-5) << "row " << r;
  }
}

TEST(ZetaNativeTest, GammaLimits) {
  constexpr int d = 3, dv = 4;
  const int64_t n = 500;
  const auto k = RandomNormal(5, n * d), v = RandomNormal(6, n * dv);
  // γ → 0: a query equal to a stored key gets (almost) exactly its value.
  auto sharp = Make("zeta:mode=native,gamma=0.000001,chunk=64", {d, dv, 1.0f});
  ASSERT_TRUE(sharp->Append({k.data(), n, d}, {v.data(), n, dv}).ok());
  for (int64_t p : {3, 200, 499}) {
    std::vector<float> out(dv);
    ASSERT_TRUE(
        sharp->Query({k.data() + p * d, 1, d}, {out.data(), 1, dv}).ok());
    for (int j = 0; j < dv; ++j) EXPECT_NEAR(out[j], v[p * dv + j], 1e-5);
  }
  // γ → ∞: uniform weights over the k nearest and the mean slot.
  auto flat = Make(
      "zeta:mode=native,gamma=1000000,k=6,candidates=100000,"
      "chunk=64",
      {d, dv, 1.0f});
  ASSERT_TRUE(flat->Append({k.data(), n, d}, {v.data(), n, dv}).ok());
  const auto q = RandomNormal(7, d);
  std::vector<float> out(dv);
  ASSERT_TRUE(flat->Query({q.data(), 1, d}, {out.data(), 1, dv}).ok());
  const auto near = CauchyReference(q.data(), k, v, n, d, dv, 6, 1e6);
  std::vector<std::pair<double, int64_t>> all(n);
  for (int64_t p = 0; p < n; ++p) {
    double s = 0;
    for (int j = 0; j < d; ++j) s += std::pow(q[j] - k[p * d + j], 2);
    all[p] = {s, p};
  }
  std::sort(all.begin(), all.end());
  for (int j = 0; j < dv; ++j) {
    double mean = 0, sum = 0;
    for (int64_t p = 0; p < n; ++p) mean += double{v[p * dv + j]} / n;
    for (int i = 0; i < 6; ++i) sum += v[all[i].second * dv + j];
    EXPECT_NEAR(out[j], (sum + mean) / 7.0, 1e-5);
    EXPECT_NEAR(out[j], near[j], 1e-6);
  }
}

TEST(ZetaNativeTest, RecallOfNearestNeighboursInThreeDimensions) {
  // §E.5/E.6 item 5: d_K = 3, N = 4096, a window of ±64 codes. Measured
  // when written: 1 curve 0.73, 4 curves 0.98 (the numpy check of §E.5 got
  // 0.58 / 0.97 with one sorted array; our LSM runs give each run its own
  // window, so more candidates).
  constexpr int d = 3, dv = 2;
  const int64_t n = 4096, m = 200;
  const auto k = RandomNormal(41, n * d), v = RandomNormal(42, n * dv);
  const auto q = RandomNormal(43, m * d);
  double recall[5] = {};
  for (int curves : {1, 4}) {
    auto z = Make(absl::StrCat("zeta:mode=native,recall_sample=1,chunk=256,"
                               "candidates=128,curves=",
                               curves),
                  {d, dv, 1.0f});
    ASSERT_TRUE(z->Append({k.data(), n, d}, {v.data(), n, dv}).ok());
    std::vector<float> out(m * dv);
    ASSERT_TRUE(z->Query({q.data(), m, d}, {out.data(), m, dv}).ok());
    const SelfMeasurements s = z->Measurements();
    ASSERT_EQ(s.recall_checks, m);
    recall[curves] = s.recall_sum / m;
    std::printf("zeta native recall@32, d=3 n=4096 +-64: curves=%d: %.3f\n",
                curves, recall[curves]);
  }
  EXPECT_GE(recall[1], 0.5);
  EXPECT_GE(recall[4], 0.9);
  EXPECT_GE(recall[4], recall[1]);
}

TEST(ZetaNativeTest, RejectsWideHeadsAndHasNoSoftmaxDiagnostics) {
  auto wide = CreateApproximator("zeta:mode=native", {17, 4, 1.0f});
  ASSERT_FALSE(wide.ok());
  EXPECT_EQ(wide.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wide.status().message().find("head_dim"), std::string::npos);
  auto z = Make("zeta:mode=native", {16, 4, 1.0f});
  ASSERT_NE(z, nullptr);
  std::vector<QueryDiagnostic> diag;
  EXPECT_EQ(z->QueryDiagnostics({nullptr, 0, 16}, &diag).code(),
            absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace kvsketch
