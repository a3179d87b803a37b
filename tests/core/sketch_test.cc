// File: tests/core/sketch_test.cc
//
// `sketch` (core/sketch/): feature maps against their closed forms, the
// summary against brute-force kernel attention and the double reference,
// streaming/merge/snapshot invariants, constant memory, and the accuracy
// claims of papers/A_B.md §A.8 at test-sized n.
#include "core/sketch/sketch.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/registry.h"
#include "core/sketch/feature_maps.h"
#include "core/synthetic/synthetic.h"
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
using ::kvsketch::testing::ReferenceAttention;
using ::testing::HasSubstr;

std::unique_ptr<SketchApproximator> MakeSketch(const std::string& spec,
                                               const HeadShape& shape) {
  auto a = CreateApproximator(spec, shape);
  EXPECT_TRUE(a.ok()) << a.status();
  if (!a.ok()) return nullptr;
  auto* raw = dynamic_cast<SketchApproximator*>(a->get());
  EXPECT_NE(raw, nullptr);
  a->release();
  return std::unique_ptr<SketchApproximator>(raw);
}

std::vector<float> QueryAll(const Approximator& a, const std::vector<float>& q,
                            int64_t m) {
  std::vector<float> out(m * a.shape().value_dim);
  EXPECT_TRUE(a.Query({q.data(), m, a.shape().head_dim},
                      {out.data(), m, a.shape().value_dim})
                  .ok());
  return out;
}

// The baseline that ignores the logits: m output rows, each the plain mean
// of the n value rows (n×dv).
std::vector<float> MeanOfValuesRows(const std::vector<float>& values, int64_t n,
                                    int dv, int64_t m) {
  std::vector<float> mean(m * dv, 0.f);
  for (int c = 0; c < dv; ++c) {
    double s = 0;
    for (int64_t j = 0; j < n; ++j) s += values[j * dv + c];
    for (int64_t i = 0; i < m; ++i) {
      mean[i * dv + c] = static_cast<float>(s / n);
    }
  }
  return mean;
}

double RmsDiff(const std::vector<float>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (a[i] - b[i]) * (a[i] - b[i]);
  return std::sqrt(s / a.size());
}

TEST(ReproducibleNormalTest, UsesTheStandardEngineAndBoxMuller) {
  // The C++ standard fixes mt19937_64's 10000th output.
  std::mt19937_64 engine(5489u);
  engine.discard(9999);
  EXPECT_EQ(engine(), 9981545732273789042ULL);
  // Next() is Box–Muller over that engine's top 53 bits.
  std::mt19937_64 e(7);
  const double u1 = (static_cast<double>(e() >> 11) + 1) * 0x1p-53;
  const double u2 = (static_cast<double>(e() >> 11) + 1) * 0x1p-53;
  ReproducibleNormal rng(7);
  const double r = std::sqrt(-2 * std::log(u1));
  EXPECT_EQ(rng.Next(), r * std::cos(2 * M_PI * u2));
  EXPECT_EQ(rng.Next(), r * std::sin(2 * M_PI * u2));
}

TEST(ReproducibleNormalTest, MomentsAreStandardNormal) {
  ReproducibleNormal rng(3);
  const int n = 200000;
  double s1 = 0, s2 = 0, s4 = 0;
  for (int i = 0; i < n; ++i) {
    const double x = rng.Next();
    s1 += x;
    s2 += x * x;
    s4 += x * x * x * x;
  }
  EXPECT_NEAR(s1 / n, 0.0, 0.01);   // sd of the mean 0.0022
  EXPECT_NEAR(s2 / n, 1.0, 0.015);  // sd 0.0032
  EXPECT_NEAR(s4 / n, 3.0, 0.1);    // sd ~0.022
}

TEST(PositiveRandomFeaturesTest, BlocksAreOrthogonalAndSeeded) {
  const int d = 16, t = 48;
  PositiveRandomFeatures a(t, d, 0.25, 11), b(t, d, 0.25, 11),
      c(t, d, 0.25, 12);
  double norm2_mean = 0;
  for (int r = 0; r < t; ++r) {
    for (int i = 0; i < d; ++i) {
      EXPECT_EQ(a.direction(r)[i], b.direction(r)[i]);
    }
    double n2 = 0;
    for (int i = 0; i < d; ++i) n2 += a.direction(r)[i] * a.direction(r)[i];
    norm2_mean += n2 / t;
    // Orthogonal to the other rows of its block.
    for (int s = (r / d) * d; s < r; ++s) {
      double dot = 0;
      for (int i = 0; i < d; ++i) dot += a.direction(r)[i] * a.direction(s)[i];
      EXPECT_LT(std::fabs(dot), 1e-4 * n2 + 1e-4);
    }
  }
  EXPECT_NEAR(norm2_mean, d, 0.35 * d);  // E‖w‖² = d
  EXPECT_NE(a.direction(0)[0], c.direction(0)[0]);
}

// Regression (found by tests/fuzz/snapshot_fuzzer.cc): a partial block is
// built from its own rows only. Before, features=2 at d = 4096 took a d×d
// double buffer (128 MiB) and ~10^11 flops of Gram–Schmidt per head, and
// head_dim comes from the client. The rows must be those of the full block,
// bit for bit, or W (regenerated from the seed) would change under existing
// snapshots.
TEST(PositiveRandomFeaturesTest, PartialBlockIsTheFullBlocksFirstRows) {
  const int d = 64;
  PositiveRandomFeatures full(2 * d, d, 0.5, 3), part(d + 5, d, 0.5, 3);
  for (int r = 0; r < d + 5; ++r) {
    for (int i = 0; i < d; ++i) {
      ASSERT_EQ(part.direction(r)[i], full.direction(r)[i]) << r << "," << i;
    }
  }
  const int wide_d = 4096;
  PositiveRandomFeatures wide(2, wide_d, 1.0 / 64, 5);
  double dot = 0, n0 = 0, n1 = 0;
  for (int i = 0; i < wide_d; ++i) {
    const double a = wide.direction(0)[i], b = wide.direction(1)[i];
    dot += a * b;
    n0 += a * a;
    n1 += b * b;
  }
  // ‖w‖² is chi-squared with d degrees of freedom: sd sqrt(2d) = 90.
  EXPECT_NEAR(n0, wide_d, 0.2 * wide_d);
  EXPECT_NEAR(n1, wide_d, 0.2 * wide_d);
  EXPECT_LT(std::fabs(dot), 1e-6 * std::sqrt(n0 * n1));
  EXPECT_EQ(wide.MemoryBytes(), int64_t{2} * wide_d * sizeof(float));
}

TEST(PositiveRandomFeaturesTest, EstimatesTheExponentialKernel) {
  const int d = 8, t = 16384;
  const double scale = 1.0 / std::sqrt(8.0);
  PositiveRandomFeatures f(t, d, scale, 5);
  const auto x = RandomNormal(1, 2 * d, 0.5);
  std::vector<double> lq(t), lk(t);
  std::vector<int8_t> sq(t), sk(t);
  f.Compute(x.data(), lq.data(), sq.data());
  f.Compute(x.data() + d, lk.data(), sk.data());
  double est = 0, dot = 0;
  for (int r = 0; r < t; ++r) est += std::exp(lq[r] + lk[r]);
  for (int i = 0; i < d; ++i) dot += double{x[i]} * x[d + i];
  EXPECT_NEAR(est / std::exp(scale * dot), 1.0, 0.05);
}

TEST(TaylorFeaturesTest, InnerProductIsTheTruncatedExponential) {
  for (int d : {1, 3, 5}) {
    for (int g : {0, 1, 2, 5}) {
      const double scale = 0.7;
      auto f = TaylorFeatures::Create(d, g, scale);
      ASSERT_TRUE(f.ok());
      const int t = (*f)->num_features();
      EXPECT_EQ(t, TaylorFeatures::CountFeatures(d, g, 1 << 20));
      for (int trial = 0; trial < 5; ++trial) {
        const auto x = RandomNormal(100 * d + 10 * g + trial, 2 * d);
        std::vector<double> lq(t), lk(t);
        std::vector<int8_t> sq(t), sk(t);
        (*f)->Compute(x.data(), lq.data(), sq.data());
        (*f)->Compute(x.data() + d, lk.data(), sk.data());
        double got = 0, s = 0;
        for (int r = 0; r < t; ++r)
          got += sq[r] * sk[r] * std::exp(lq[r] + lk[r]);
        for (int i = 0; i < d; ++i) s += scale * x[i] * x[d + i];
        double want = 0, term = 1;
        for (int r = 0; r <= g; ++r) {
          want += term;
          term *= s / (r + 1);
        }
        EXPECT_NEAR(got, want, 1e-12 * std::max(1.0, std::fabs(want)))
            << "d=" << d << " g=" << g;
      }
    }
  }
  EXPECT_EQ(TaylorFeatures::CountFeatures(128, 2, 1 << 20), 8385);  // §A.5
  EXPECT_EQ(TaylorFeatures::CountFeatures(64, 3, 1 << 20), 47905);
}

TEST(SketchSpecTest, CanonicalFormAndErrors) {
  auto c = CanonicalizeSpec("sketch");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c,
            "sketch:map=prf,features=256,degree=2,sinks=4,window=128,seed=0");
  auto too_big =
      CreateApproximator("sketch:map=taylor,degree=4", {128, 128, 0.1f});
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_big.status().message(), HasSubstr("degree"));
  auto huge = CreateApproximator("sketch:window=4000000", {128, 128, 0.1f});
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(huge.status().message(), HasSubstr("2 GiB"));
  auto bad = CanonicalizeSpec("sketch:features=0");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("features"));
}

TEST(SketchTest, WindowCoveringEverythingIsExact) {
  const int d = 32, dv = 16;
  const float scale = 1 / std::sqrt(32.f);
  auto a = MakeSketch("sketch:sinks=4,window=2000", {d, dv, scale});
  const int64_t n = 2004;
  const auto k = RandomNormal(1, n * d), v = RandomNormal(2, n * dv);
  const auto q = RandomNormal(3, 4 * d, 2.0);
  ASSERT_TRUE(a->Append({k.data(), n, d}, {v.data(), n, dv}).ok());
  EXPECT_EQ(a->num_summarized(), 0);
  const auto out = QueryAll(*a, q, 4);
  const auto ref = ReferenceAttention(q, 4, k, v, n, d, dv, scale);
  EXPECT_LE(MaxAbsDiff(out, ref),
            AttentionTolerance(q, 4, k, v, n, d, dv, scale, kF32Unit));
}

// Brute-force attention under the degree-g polynomial kernel, in double.
std::vector<double> PolyKernelAttention(const std::vector<float>& q, int64_t m,
                                        const std::vector<float>& k,
                                        const std::vector<float>& v, int64_t n,
                                        int d, int dv, double scale, int g) {
  std::vector<double> out(m * dv, 0.0);
  for (int64_t i = 0; i < m; ++i) {
    double den = 0;
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int c = 0; c < d; ++c) s += double{q[i * d + c]} * k[j * d + c];
      s *= scale;
      double w = 0, term = 1;
      for (int r = 0; r <= g; ++r) {
        w += term;
        term *= s / (r + 1);
      }
      den += w;
      for (int c = 0; c < dv; ++c) out[i * dv + c] += w * v[j * dv + c];
    }
    for (int c = 0; c < dv; ++c) out[i * dv + c] /= den;
  }
  return out;
}

TEST(SketchTest, TaylorSummaryEqualsPolynomialKernelAttention) {
  // No exact part: the whole answer comes from the summary, which must equal
  // the polynomial-kernel attention for any n (§A.8.1).
  const int d = 4, dv = 6, g = 4;
  const float scale = 0.5f;
  auto a =
      MakeSketch("sketch:map=taylor,degree=4,sinks=0,window=0", {d, dv, scale});
  const auto q = RandomNormal(7, 3 * d);
  int64_t n = 0;
  const auto k = RandomNormal(5, 3000 * d), v = RandomNormal(6, 3000 * dv);
  for (int64_t upto : {1, 10, 500, 3000}) {
    ASSERT_TRUE(a->Append({k.data() + n * d, upto - n, d},
                          {v.data() + n * dv, upto - n, dv})
                    .ok());
    n = upto;
    const auto out = QueryAll(*a, q, 3);
    const auto ref = PolyKernelAttention(q, 3, k, v, n, d, dv, scale, g);
    EXPECT_LE(MaxAbsDiff(out, ref), 2e-6 * MaxAbs(v)) << "n=" << n;
  }
}

TEST(SketchTest, TaylorConvergesToExactWithDegree) {
  // Bounded logits (|s| ≲ 0.5): the error against softmax attention falls
  // with the degree (§A.8.5).
  const int d = 4, dv = 8;
  const float scale = 0.5f;
  const int64_t n = 1000;
  const auto k = RandomNormal(8, n * d, 0.5), v = RandomNormal(9, n * dv);
  const auto q = RandomNormal(10, 4 * d, 0.5);
  const auto ref = ReferenceAttention(q, 4, k, v, n, d, dv, scale);
  double last = 1e9;
  for (int g : {1, 2, 4, 6}) {
    auto a = MakeSketch(
        "sketch:map=taylor,degree=" + std::to_string(g) + ",sinks=0,window=0",
        {d, dv, scale});
    ASSERT_TRUE(a->Append({k.data(), n, d}, {v.data(), n, dv}).ok());
    const double err = MaxAbsDiff(QueryAll(*a, q, 4), ref);
    EXPECT_LT(err, last) << "degree " << g;
    last = err;
  }
  EXPECT_LT(last, 1e-5);
}

TEST(SketchTest, StreamingEqualsBulkAndSnapshotIsBitExact) {
  const int d = 16, dv = 8;
  const HeadShape shape{d, dv, 0.25f};
  const std::string spec = "sketch:features=64,sinks=3,window=20,seed=4";
  auto bulk = MakeSketch(spec, shape), one = MakeSketch(spec, shape);
  const int64_t n = 300;
  const auto k = RandomNormal(11, n * d), v = RandomNormal(12, n * dv);
  ASSERT_TRUE(bulk->Append({k.data(), n, d}, {v.data(), n, dv}).ok());
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_TRUE(
        one->Append({k.data() + i * d, 1, d}, {v.data() + i * dv, 1, dv}).ok());
  }
  ByteWriter wb, wo;
  ASSERT_TRUE(bulk->SaveState(wb).ok());
  ASSERT_TRUE(one->SaveState(wo).ok());
  EXPECT_EQ(wb.data(), wo.data());
  auto loaded = MakeSketch(spec, shape);
  ByteReader r(wb.data());
  ASSERT_TRUE(loaded->LoadState(r).ok());
  ByteWriter wl;
  ASSERT_TRUE(loaded->SaveState(wl).ok());
  EXPECT_EQ(wl.data(), wb.data());
  EXPECT_EQ(loaded->MemoryBytes(), bulk->MemoryBytes());
  const auto q = RandomNormal(13, 2 * d);
  EXPECT_EQ(QueryAll(*loaded, q, 2), QueryAll(*bulk, q, 2));
}

TEST(SketchTest, MergeEqualsUnion) {
  const int d = 12, dv = 10;
  const HeadShape shape{d, dv, 0.3f};
  const int64_t n = 400;
  const auto k = RandomNormal(21, n * d), v = RandomNormal(22, n * dv);
  const auto q = RandomNormal(23, 3 * d, 1.5);
  for (const std::string spec :
       {"sketch:features=128,sinks=4,window=32",
        "sketch:features=128,sinks=0,window=0",
        "sketch:map=taylor,degree=3,sinks=2,window=7"}) {
    auto whole = MakeSketch(spec, shape);
    ASSERT_TRUE(whole->Append({k.data(), n, d}, {v.data(), n, dv}).ok());
    const auto want = QueryAll(*whole, q, 3);
    const std::vector<double> want_d(want.begin(), want.end());
    for (int64_t split : {0, 1, 3, 20, 36, 37, 100, 380, 399, 400}) {
      auto a = MakeSketch(spec, shape), b = MakeSketch(spec, shape);
      ASSERT_TRUE(a->Append({k.data(), split, d}, {v.data(), split, dv}).ok());
      ASSERT_TRUE(b->Append({k.data() + split * d, n - split, d},
                            {v.data() + split * dv, n - split, dv})
                      .ok());
      ASSERT_TRUE(a->MergeFrom(*b).ok());
      EXPECT_EQ(a->num_tokens(), n);
      EXPECT_EQ(a->num_summarized(), whole->num_summarized()) << split;
      EXPECT_LE(MaxAbsDiff(QueryAll(*a, q, 3), want_d), 1e-5 * MaxAbs(v))
          << spec << " split " << split;
    }
  }
}

TEST(SketchTest, MergeRejectsOtherSpecAndLeavesStateAlone) {
  const HeadShape shape{8, 8, 0.3f};
  auto a = MakeSketch("sketch:seed=1", shape),
       b = MakeSketch("sketch:seed=2", shape);
  const auto k = RandomNormal(1, 8 * 8), v = RandomNormal(2, 8 * 8);
  ASSERT_TRUE(a->Append({k.data(), 8, 8}, {v.data(), 8, 8}).ok());
  ASSERT_TRUE(b->Append({k.data(), 8, 8}, {v.data(), 8, 8}).ok());
  ByteWriter before;
  ASSERT_TRUE(a->SaveState(before).ok());
  const absl::Status s = a->MergeFrom(*b);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("seed=2"));
  ByteWriter after;
  ASSERT_TRUE(a->SaveState(after).ok());
  EXPECT_EQ(before.data(), after.data());
}

TEST(SketchTest, MemoryIsConstantInN) {
  const int d = 64, dv = 64;
  auto a = MakeSketch("sketch", {d, dv, 0.125f});
  const int64_t bytes0 = a->MemoryBytes();
  const auto k = RandomNormal(31, 1024 * d), v = RandomNormal(32, 1024 * dv);
  int64_t at_1k = 0;
  for (int rep = 1; rep <= 64; ++rep) {
    ASSERT_TRUE(a->Append({k.data(), 1024, d}, {v.data(), 1024, dv}).ok());
    if (rep == 1) at_1k = a->MemoryBytes();
  }
  EXPECT_EQ(a->num_tokens(), 65536);
  EXPECT_EQ(at_1k, bytes0);
  EXPECT_EQ(a->MemoryBytes(), at_1k);
  // (sinks + window)·(d + dv)·4 + t·(dv + 3)·8 (S, z, shifts, scratch)
  // + t·d·4 (directions) + t (sign scratch).
  EXPECT_EQ(bytes0, 132 * 128 * 4 + 256 * 67 * 8 + 256 * 64 * 4 + 256);
}

TEST(SketchTest, BoundedLogitErrorFarBelowMeanOfValues) {
  // The paper's regime (§A.1): bounded entries, small d. The plain mean of V
  // ignores the logits; the Taylor summary captures them.
  const int d = 8, dv = 16;
  const int64_t n = 8192, m = 16;
  const auto data = BoundedLogits(n, d, dv, m, /*spread=*/0.5, /*seed=*/3);
  const HeadShape shape{d, dv, data.scale};
  const auto ref = ReferenceAttention(data.queries, m, data.keys, data.values,
                                      n, d, dv, data.scale);
  const double mean_err = RmsDiff(MeanOfValuesRows(data.values, n, dv, m), ref);
  for (const std::string spec :
       {"sketch:map=taylor,degree=4,sinks=4,window=64",
        "sketch:map=taylor,degree=3,sinks=4,window=64"}) {
    auto a = MakeSketch(spec, shape);
    ASSERT_TRUE(
        a->Append({data.keys.data(), n, d}, {data.values.data(), n, dv}).ok());
    const double err = RmsDiff(QueryAll(*a, data.queries, m), ref);
    EXPECT_LT(err * 10, mean_err) << spec << ": " << err << " vs " << mean_err;
  }
}

// The same regime at the head sizes of real models. Degree-2 Taylor
// features have t = C(d+2, 2) coordinates (2145 at d = 64, 8385 at d = 128:
// a state of t·(dv+1) floats, constant in n); the truncation error is
// O(|x|³/6) per logit (§A.7), so on this generator they stay well below the
// mean of V — measured 9.0× (d = 64) and 9.2× (d = 128), short of the 10×
// that degree 4 reaches at d = 8 above; degree 3 would need C(d+3, 3)
// features (366K at d = 128, over the map's limit). Positive random
// features do worse here (README "sketch" notes): their variance grows like
// exp(‖q‖² + ‖k‖²) and does not shrink with d.
TEST(SketchTest, BoundedLogitErrorFarBelowMeanOfValuesAtRealisticD) {
  for (const int d : {64, 128}) {
    const int dv = d;
    const int64_t n = 4096, m = 16;
    const auto data = BoundedLogits(n, d, dv, m, /*spread=*/0.5, /*seed=*/5);
    const HeadShape shape{d, dv, data.scale};
    const auto ref = ReferenceAttention(data.queries, m, data.keys, data.values,
                                        n, d, dv, data.scale);
    const double mean_err =
        RmsDiff(MeanOfValuesRows(data.values, n, dv, m), ref);
    auto a = MakeSketch("sketch:map=taylor,degree=2,sinks=4,window=64", shape);
    ASSERT_TRUE(
        a->Append({data.keys.data(), n, d}, {data.values.data(), n, dv}).ok());
    const double err = RmsDiff(QueryAll(*a, data.queries, m), ref);
    std::printf("d=%d taylor degree 2: rms %.3g vs mean of V %.3g (%.1fx)\n", d,
                err, mean_err, mean_err / err);
    EXPECT_LT(err * 5, mean_err)
        << "d=" << d << ": " << err << " vs " << mean_err;
  }
}

TEST(SketchTest, HybridBeatsPureSummaryOnPeakedAttention) {
  // Peaked attention on sinks and the local window (planted structure, no
  // needles): pure random features fail (§3.1), the exact sinks and window
  // of the hybrid hold the heavy tokens (§A.8.8).
  const int d = 32, dv = 16;
  const int64_t n = 4096;
  PlantedOptions opt;
  opt.needles = 0;
  opt.noise_std = 1.0;  // at 2 the noise tail alone carries ~2/3 of the mass
  const auto data = PlantedStructure(n, d, dv, opt, 17);
  const HeadShape shape{d, dv, data.scale};
  const int64_t m = 8;  // the last 8 positions' queries, over all n keys
  const std::vector<float> q(data.queries.end() - m * d, data.queries.end());
  const auto ref =
      ReferenceAttention(q, m, data.keys, data.values, n, d, dv, data.scale);
  auto pure = MakeSketch("sketch:sinks=0,window=0", shape);
  auto hybrid = MakeSketch("sketch:sinks=4,window=64", shape);
  for (auto* a : {pure.get(), hybrid.get()}) {
    ASSERT_TRUE(
        a->Append({data.keys.data(), n, d}, {data.values.data(), n, dv}).ok());
  }
  const double pure_err = RmsDiff(QueryAll(*pure, q, m), ref);
  const double hybrid_err = RmsDiff(QueryAll(*hybrid, q, m), ref);
  EXPECT_LT(3 * hybrid_err, pure_err) << hybrid_err << " vs " << pure_err;
}

TEST(SketchTest, LargeNormKeysDoNotOverflow) {
  // φ_r(k) = exp(w_r·k̃ − ‖k̃‖²/2) reaches e^±1000 here: without the
  // per-feature log shifts S and z would be inf or 0.
  const int d = 16, dv = 4;
  auto a = MakeSketch("sketch:sinks=0,window=0", {d, dv, 0.25f});
  auto k = RandomNormal(41, 200 * d, 60.0);
  const auto v = RandomNormal(42, 200 * dv);
  ASSERT_TRUE(a->Append({k.data(), 200, d}, {v.data(), 200, dv}).ok());
  const auto q = RandomNormal(43, 4 * d, 30.0);
  for (float x : QueryAll(*a, q, 4)) {
    EXPECT_TRUE(std::isfinite(x));
    EXPECT_LE(std::fabs(x), MaxAbs(v) * (1 + 1e-5));  // a convex combination
  }
}

TEST(SketchTest, BadInputLeavesStateUnchanged) {
  const HeadShape shape{8, 4, 0.3f};
  auto a = MakeSketch("sketch:sinks=1,window=2", shape);
  const auto k = RandomNormal(1, 10 * 8), v = RandomNormal(2, 10 * 4);
  ASSERT_TRUE(a->Append({k.data(), 10, 8}, {v.data(), 10, 4}).ok());
  ByteWriter before;
  ASSERT_TRUE(a->SaveState(before).ok());
  EXPECT_EQ(a->Append({k.data(), 10, 7}, {v.data(), 10, 4}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a->Append({k.data(), 3, 8}, {v.data(), 2, 4}).code(),
            absl::StatusCode::kInvalidArgument);
  std::string corrupt = before.data();
  corrupt[1] ^= 0x40;  // num_tokens no longer matches the counts
  ByteReader r(corrupt);
  const absl::Status s = a->LoadState(r);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("sketch"));
  ByteWriter after;
  ASSERT_TRUE(a->SaveState(after).ok());
  EXPECT_EQ(before.data(), after.data());
}

// Regression (found by tests/fuzz/snapshot_fuzzer.cc): a NaN window key
// loaded, reached z when its token left the window, and the state could
// then be exported but not imported again. Non-finite sink or window keys
// and values are DataLoss.
TEST(SketchTest, NonFiniteStoredKeyIsDataLoss) {
  const HeadShape shape{8, 4, 0.3f};
  const std::string spec = "sketch:features=16,sinks=1,window=2";
  auto a = MakeSketch(spec, shape);
  std::vector<float> k = RandomNormal(1, 5 * 8), v = RandomNormal(2, 5 * 4);
  const float marker = 0.8125f;  // exact in binary; the last key's first
  k[4 * 8] = marker;             // element, held in the window
  ASSERT_TRUE(a->Append({k.data(), 5, 8}, {v.data(), 5, 4}).ok());
  ByteWriter w;
  ASSERT_TRUE(a->SaveState(w).ok());
  std::string bad = w.data();
  const size_t at = bad.find(
      std::string(reinterpret_cast<const char*>(&marker), sizeof(marker)));
  ASSERT_NE(at, std::string::npos);
  const float nan = std::nanf("");
  std::memcpy(bad.data() + at, &nan, sizeof(nan));
  auto b = MakeSketch(spec, shape);
  ByteReader r(bad);
  const absl::Status st = b->LoadState(r);
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  ByteReader good(w.data());
  EXPECT_TRUE(b->LoadState(good).ok());
}

// Regression (found by tests/fuzz/request_fuzzer.cc): map=prf draws a
// head_dim² block per head whatever the feature count, so a 62-byte
// CreateSession with head_dim 60408 and features=1 took minutes. Above
// head_dim 8192 the spec is refused with a message naming the limit.
TEST(SketchSpecTest, PrfRefusesHugeHeadDim) {
  auto big = CreateApproximator("sketch:features=1", {8193, 4, 0.01f});
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(big.status().message(), HasSubstr("head_dim up to 8192"));
  EXPECT_TRUE(CreateApproximator("sketch:features=1", {256, 4, 0.06f}).ok());
}

}  // namespace
}  // namespace kvsketch
