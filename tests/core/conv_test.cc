// File: tests/core/conv_test.cc
//
// The `conv` approximator (core/conv/conv.h) end to end against the
// double-precision reference (papers/C_D_E_conv_regression_zeta.md §C.9):
// a planted k-conv head is recovered with k bases and answered to 1e-4 of
// the value scale; Toeplitz Q/K (C.9.5) is 1-conv; outputs stay convex
// combinations even when the fit is approximate (C.9.6); k = n is exact on
// random data (C.9.7); random heads fall back to exact; n_prev > 0 merges
// the exact rectangle correctly; Prefill equals row-by-row streaming.
#include "core/conv/conv.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "core/registry.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/testing/reference_attention.h"

namespace kvsketch {
namespace {

using ::kvsketch::testing::AttentionTolerance;
using ::kvsketch::testing::kF32Unit;
using ::kvsketch::testing::MaxAbs;
using ::kvsketch::testing::MaxAbsDiff;
using ::kvsketch::testing::RandomNormal;
using ::kvsketch::testing::ReferenceCausalAttention;
using ::testing::HasSubstr;

constexpr int kD = 8;
constexpr int kDv = 12;
constexpr float kScale = 0.5f;
const HeadShape kShape{kD, kDv, kScale};

std::unique_ptr<ConvApproximator> MakeConv(const std::string& spec) {
  auto a = CreateApproximator(spec, kShape);
  EXPECT_TRUE(a.ok()) << a.status();
  if (!a.ok()) return nullptr;
  auto* raw = dynamic_cast<ConvApproximator*>(a->get());
  EXPECT_NE(raw, nullptr);
  a->release();
  return std::unique_ptr<ConvApproximator>(raw);
}

// Rotary-style rows: x_i = (a_p cos ω_p i, a_p sin ω_p i)_p, so
// q_i·k_j = Σ_p a_p b_p cos ω_p (i − j) depends on i − j only (C.9.5).
// `segment_starts` switches the key amplitudes b at those positions: the
// scores are then column-step (k-conv with those starts), and so is their
// exp (C.2 closure). Each query head gets its own amplitudes.
struct PositionalData {
  std::vector<float> q;  // [g][n] × d
  std::vector<float> k;  // n × d
  std::vector<float> v;  // n × dv
};

PositionalData Positional(int64_t n, int g,
                          const std::vector<int64_t>& segment_starts,
                          uint64_t seed, double noise = 0) {
  PositionalData data;
  const int pairs = kD / 2;
  const auto amp = RandomNormal(seed, (g + segment_starts.size()) * pairs);
  const auto jitter = RandomNormal(seed + 1, (g + 1) * n * kD, noise);
  auto omega = [](int p) { return 0.35 / (1 + 2 * p); };
  data.q.resize(g * n * kD);
  for (int h = 0; h < g; ++h) {
    for (int64_t i = 0; i < n; ++i) {
      for (int p = 0; p < pairs; ++p) {
        const double a = 1 + std::abs(amp[h * pairs + p]);
        float* row = data.q.data() + (h * n + i) * kD;
        row[2 * p] =
            a * std::cos(omega(p) * i) + jitter[(h * n + i) * kD + 2 * p];
        row[2 * p + 1] =
            a * std::sin(omega(p) * i) + jitter[(h * n + i) * kD + 2 * p + 1];
      }
    }
  }
  data.k.resize(n * kD);
  for (int64_t j = 0; j < n; ++j) {
    const int seg = static_cast<int>(
        std::upper_bound(segment_starts.begin(), segment_starts.end(), j) -
        segment_starts.begin() - 1);
    for (int p = 0; p < pairs; ++p) {
      const double b = 1 + std::abs(amp[(g + seg) * pairs + p]);
      float* row = data.k.data() + j * kD;
      row[2 * p] =
          b * std::cos(omega(p) * j) + jitter[(g * n + j) * kD + 2 * p];
      row[2 * p + 1] =
          b * std::sin(omega(p) * j) + jitter[(g * n + j) * kD + 2 * p + 1];
    }
  }
  data.v = RandomNormal(seed + 2, n * kDv);
  return data;
}

// Query rows [begin, begin + t) of head h of [g][n] data, as a [g][t] block
// when stacked by the caller.
std::vector<float> QueryBlock(const std::vector<float>& q, int64_t n, int g,
                              int64_t begin, int64_t t) {
  std::vector<float> out;
  for (int h = 0; h < g; ++h) {
    out.insert(out.end(), q.begin() + (h * n + begin) * kD,
               q.begin() + (h * n + begin + t) * kD);
  }
  return out;
}

// Runs Prefill of tokens [begin, begin + t) and checks every head against
// the reference within `tol_rel` · max|V| (plus the float tolerance).
std::vector<float> PrefillAndCheck(ConvApproximator& a,
                                   const PositionalData& data, int64_t n, int g,
                                   int64_t begin, int64_t t, double tol_rel) {
  const auto q = QueryBlock(data.q, n, g, begin, t);
  std::vector<float> out(g * t * kDv);
  EXPECT_TRUE(
      a.Prefill({q.data(), g * t, kD}, g, {data.k.data() + begin * kD, t, kD},
                {data.v.data() + begin * kDv, t, kDv}, {out.data(), g * t, kDv})
          .ok());
  for (int h = 0; h < g; ++h) {
    std::vector<float> qh(q.begin() + h * t * kD, q.begin() + (h + 1) * t * kD);
    const auto ref = ReferenceCausalAttention(qh, t, data.k, data.v, begin + t,
                                              kD, kDv, kScale);
    std::vector<float> got(out.begin() + h * t * kDv,
                           out.begin() + (h + 1) * t * kDv);
    const double tol = AttentionTolerance(qh, t, data.k, data.v, begin + t, kD,
                                          kDv, kScale, kF32Unit) +
                       tol_rel * MaxAbs(data.v);
    EXPECT_LE(MaxAbsDiff(got, ref), tol) << "head " << h << " begin " << begin;
  }
  return out;
}

TEST(ConvTest, RecoversAPlantedKConvHead) {
  const int64_t n = 1200;
  const int g = 2;
  const auto data = Positional(n, g, {0, 400, 900}, 11);
  auto a = MakeConv("conv");
  ASSERT_NE(a, nullptr);
  PrefillAndCheck(*a, data, n, g, 0, n, 1e-4);
  ASSERT_EQ(a->last_prefill_stats().size(), g);
  double error_sum = 0;
  for (const ConvHeadStats& s : a->last_prefill_stats()) {
    EXPECT_EQ(s.bases, 3);
    EXPECT_FALSE(s.fallback);
    EXPECT_LE(s.fit_error, 1e-4);
    error_sum += s.fit_error;
  }
  const SelfMeasurements m = a->Measurements();
  EXPECT_EQ(m.fit_checks, g);
  EXPECT_EQ(m.fit_fallbacks, 0);
  EXPECT_DOUBLE_EQ(m.fit_error_sum, error_sum);
}

TEST(ConvTest, ToeplitzScoresAreOneConvAndExact) {
  const int64_t n = 1500;
  const auto data = Positional(n, 1, {0}, 13);
  for (const char* spec : {"conv", "conv:fit=segmented,k=1"}) {
    auto a = MakeConv(spec);
    ASSERT_NE(a, nullptr);
    PrefillAndCheck(*a, data, n, 1, 0, n, 1e-5);
    ASSERT_EQ(a->last_prefill_stats().size(), 1u);
    EXPECT_EQ(a->last_prefill_stats()[0].bases, 1) << spec;
    EXPECT_FALSE(a->last_prefill_stats()[0].fallback) << spec;
  }
}

TEST(ConvTest, OutputIsAConvexCombinationEvenWhenTheFitIsApproximate) {
  const int64_t n = 1100;
  // Noisy positional data: not k-conv, so the fit has a real error; a huge
  // max_error keeps the fitted outputs.
  auto data = Positional(n, 1, {0, 500}, 17, /*noise=*/0.4);
  for (int64_t j = 0; j < n; ++j) data.v[j * kDv] = 1.0f;  // constant column
  for (const char* spec : {"conv:max_error=100",
                           "conv:max_error=100,"
                           "fit=segmented,k=8"}) {
    auto a = MakeConv(spec);
    ASSERT_NE(a, nullptr);
    std::vector<float> out(n * kDv);
    ASSERT_TRUE(a->Prefill({data.q.data(), n, kD}, 1, {data.k.data(), n, kD},
                           {data.v.data(), n, kDv}, {out.data(), n, kDv})
                    .ok());
    ASSERT_EQ(a->last_prefill_stats().size(), 1u);
    EXPECT_FALSE(a->last_prefill_stats()[0].fallback);
    EXPECT_GT(a->last_prefill_stats()[0].fit_error, 1e-4) << spec;
    std::vector<float> lo(kDv, 1e30f), hi(kDv, -1e30f);
    for (int64_t t = 0; t < n; ++t) {
      for (int c = 0; c < kDv; ++c) {
        lo[c] = std::min(lo[c], data.v[t * kDv + c]);
        hi[c] = std::max(hi[c], data.v[t * kDv + c]);
        const float o = out[t * kDv + c];
        ASSERT_GE(o, lo[c] - 1e-5f) << spec << " t=" << t << " c=" << c;
        ASSERT_LE(o, hi[c] + 1e-5f) << spec << " t=" << t << " c=" << c;
      }
      // Weights sum to 1: the normaliser comes from the same fitted matrix.
      ASSERT_NEAR(out[t * kDv], 1.0f, 1e-6f) << spec << " t=" << t;
    }
  }
}

TEST(ConvTest, KEqualsNIsExactOnRandomData) {
  const int64_t n = 300;
  PositionalData data;
  data.q = RandomNormal(21, n * kD);
  data.k = RandomNormal(22, n * kD);
  data.v = RandomNormal(23, n * kDv);
  for (const char* spec :
       {"conv:k=300,tau=0,max_error=100,min_tokens=1",
        "conv:k=300,fit=segmented,samples=300,max_error=100,min_tokens=1"}) {
    auto a = MakeConv(spec);
    ASSERT_NE(a, nullptr);
    PrefillAndCheck(*a, data, n, 1, 0, n, 0);
    ASSERT_EQ(a->last_prefill_stats().size(), 1u);
    EXPECT_EQ(a->last_prefill_stats()[0].bases, n) << spec;
    EXPECT_LE(a->last_prefill_stats()[0].fit_error, 1e-6) << spec;
  }
}

TEST(ConvTest, RandomHeadsFallBackToExact) {
  const int64_t n = 1100;
  const int g = 2;
  PositionalData data;
  data.q = RandomNormal(31, g * n * kD, 1.5);
  data.k = RandomNormal(32, n * kD, 1.5);
  data.v = RandomNormal(33, n * kDv);
  auto a = MakeConv("conv");
  ASSERT_NE(a, nullptr);
  PrefillAndCheck(*a, data, n, g, 0, n, 0);  // exact tolerance
  ASSERT_EQ(a->last_prefill_stats().size(), g);
  for (const ConvHeadStats& s : a->last_prefill_stats()) {
    EXPECT_TRUE(s.fallback);
    EXPECT_GT(s.fit_error, a->options().max_error);
  }
  EXPECT_EQ(a->Measurements().fit_fallbacks, g);
  EXPECT_EQ(a->Measurements().fit_checks, g);
}

TEST(ConvTest, SecondPrefillMergesTheExactRectangle) {
  const int64_t t1 = 1100, t2 = 1050, n = t1 + t2;
  const int g = 2;
  const auto data = Positional(n, g, {0, 700, 1500}, 41);
  auto a = MakeConv("conv");
  ASSERT_NE(a, nullptr);
  PrefillAndCheck(*a, data, n, g, 0, t1, 1e-4);
  PrefillAndCheck(*a, data, n, g, t1, t2, 1e-4);
  EXPECT_EQ(a->num_tokens(), n);
  ASSERT_EQ(a->last_prefill_stats().size(), g);
  for (const ConvHeadStats& s : a->last_prefill_stats()) {
    EXPECT_FALSE(s.fallback);
    EXPECT_EQ(s.bases, 2);  // the new block holds two key segments
  }
  // Decode afterwards is exact over all n tokens.
  std::vector<float> out(kDv);
  ASSERT_TRUE(
      a->Query({data.q.data() + (n - 1) * kD, 1, kD}, {out.data(), 1, kDv})
          .ok());
  const std::vector<float> q_last(data.q.begin() + (n - 1) * kD,
                                  data.q.begin() + n * kD);
  const auto ref =
      ReferenceCausalAttention(q_last, 1, data.k, data.v, n, kD, kDv, kScale);
  EXPECT_LE(MaxAbsDiff(out, ref),
            AttentionTolerance(q_last, 1, data.k, data.v, n, kD, kDv, kScale,
                               kF32Unit));
}

TEST(ConvTest, RowsWithATinyNormaliserAreRecomputedExactly) {
  // Scores grow with the lag (score += beta·(i − j)): Toeplitz, so the fit
  // is exact, but D_i ≈ e^{beta·i} spans a factor e^20 ≈ 5e8, so the first
  // ~8% of rows fall below 1e-8 · max D (§C.4) and must be recomputed.
  const int64_t n = 1100;
  const double beta = 20.0 / n;  // per token, after the scale
  PositionalData data = Positional(n, 1, {0}, 81);
  for (int64_t i = 0; i < n; ++i) {
    // Replace the last rotation pair by the bias pair.
    data.q[i * kD + 6] = 1.0f;
    data.q[i * kD + 7] = static_cast<float>(beta / kScale * i);
    data.k[i * kD + 6] = static_cast<float>(-beta / kScale * i);
    data.k[i * kD + 7] = 1.0f;
  }
  auto a = MakeConv("conv");
  ASSERT_NE(a, nullptr);
  PrefillAndCheck(*a, data, n, 1, 0, n, 1e-4);
  ASSERT_EQ(a->last_prefill_stats().size(), 1u);
  const ConvHeadStats& s = a->last_prefill_stats()[0];
  EXPECT_FALSE(s.fallback);
  EXPECT_EQ(s.bases, 1);
  // The rows below the threshold, from the exact normalisers (in double;
  // the fit's D agrees to ~1e-7, so a row or two at the edge may differ),
  // plus the 32 sampled rows, some of which may coincide.
  std::vector<double> norm(n, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j <= i; ++j) {
      double dot = 0;
      for (int c = 0; c < kD; ++c) {
        dot += double{data.q[i * kD + c]} * data.k[j * kD + c];
      }
      norm[i] += std::exp(kScale * dot);
    }
  }
  const double max_norm = *std::max_element(norm.begin(), norm.end());
  const int64_t tiny = std::count_if(
      norm.begin(), norm.end(), [&](double x) { return x <= 1e-8 * max_norm; });
  EXPECT_GE(tiny, n / 20);  // the data does exercise the path
  EXPECT_GE(s.exact_rows, tiny - 2);
  EXPECT_LE(s.exact_rows, tiny + 32 + 2);
}

TEST(ConvTest, PrefillEqualsRowByRowStreaming) {
  const int64_t n = 1100;
  const auto data = Positional(n, 1, {0, 300}, 51);
  auto bulk = MakeConv("conv");
  auto rows = MakeConv("conv");
  ASSERT_NE(bulk, nullptr);
  ASSERT_NE(rows, nullptr);
  const auto out = PrefillAndCheck(*bulk, data, n, 1, 0, n, 1e-4);
  const double fit_error = bulk->last_prefill_stats()[0].fit_error;
  std::vector<float> streamed(n * kDv);
  for (int64_t t = 0; t < n; ++t) {
    ASSERT_TRUE(rows->Append({data.k.data() + t * kD, 1, kD},
                             {data.v.data() + t * kDv, 1, kDv})
                    .ok());
    ASSERT_TRUE(rows->Attend({data.q.data() + t * kD, 1, kD},
                             {streamed.data() + t * kDv, 1, kDv})
                    .ok());
  }
  // Within the measured fit error (in units of max‖v‖₂, an upper bound on
  // max|v|) plus float rounding of both paths.
  double vnorm = 0;
  for (int64_t j = 0; j < n; ++j) {
    double s = 0;
    for (int c = 0; c < kDv; ++c)
      s += double{data.v[j * kDv + c]} * data.v[j * kDv + c];
    vnorm = std::max(vnorm, std::sqrt(s));
  }
  double err = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    err = std::max(err, double{std::abs(out[i] - streamed[i])});
  }
  EXPECT_LE(err, 2 * fit_error * vnorm + 1e-5 * MaxAbs(data.v));
  EXPECT_EQ(rows->Measurements().fit_checks, 0);  // decode never fits
}

TEST(ConvTest, BelowMinTokensRunsExactly) {
  const int64_t n = 200;
  const auto data = Positional(n, 2, {0}, 61);
  auto a = MakeConv("conv");
  ASSERT_NE(a, nullptr);
  PrefillAndCheck(*a, data, n, 2, 0, n, 0);
  EXPECT_TRUE(a->last_prefill_stats().empty());
  EXPECT_EQ(a->Measurements().fit_checks, 0);
}

TEST(ConvTest, PrefillIsDeterministic) {
  const int64_t n = 1100;
  const auto data = Positional(n, 1, {0, 600}, 71, 0.2);
  std::vector<float> out[2];
  for (auto& o : out) {
    auto a = MakeConv("conv:max_error=100,fit=segmented");
    ASSERT_NE(a, nullptr);
    o.resize(n * kDv);
    ASSERT_TRUE(a->Prefill({data.q.data(), n, kD}, 1, {data.k.data(), n, kD},
                           {data.v.data(), n, kDv}, {o.data(), n, kDv})
                    .ok());
  }
  EXPECT_EQ(out[0], out[1]);
}

TEST(ConvTest, SpecIsCanonicalAndParametersAreChecked) {
  auto canonical = CanonicalizeSpec("conv");
  ASSERT_TRUE(canonical.ok());
  EXPECT_EQ(*canonical,
            "conv:k=16,probe=32,tau=0.05,fit=search,samples=32,max_error=0.01,"
            "min_tokens=1024,seed=1");
  for (const char* bad : {"conv:k=0", "conv:fit=dense", "conv:tau=-1",
                          "conv:samples=0", "conv:max_error=-0.5"}) {
    auto a = CreateApproximator(bad, kShape);
    ASSERT_FALSE(a.ok()) << bad;
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  auto a = CreateApproximator("conv:k=0", kShape);
  EXPECT_THAT(a.status().message(), HasSubstr("k"));
}

}  // namespace
}  // namespace kvsketch
