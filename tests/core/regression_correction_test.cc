// File: tests/core/regression_correction_test.cc
//
// core/regression/storage_correction: the model of the stored state with
// X = Y = I is the approximator itself (evict and exact:store=f16), fitting
// never makes the training error worse, and bad traces / options / kinds
// give clear errors.
#include <cmath>
#include <random>

#include "core/eval/trace.h"
#include "core/regression/storage_correction.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvsketch::regression {
namespace {

using ::testing::HasSubstr;

// A trace with a query per position, GQA 2:1, and keys/values with a slow
// drift so that early and late tokens share structure.
eval::Trace MakeTrace(int64_t n, int d, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0, 1);
  eval::Trace tr;
  tr.name = "test";
  tr.layers = 1;
  tr.q_heads = 2;
  tr.kv_heads = 1;
  tr.n = n;
  tr.d = tr.dv = d;
  tr.scale = 1 / std::sqrt(float(d));
  for (int64_t i = 0; i < n; ++i) tr.query_pos.push_back(i);
  std::vector<float> dir(d);
  for (float& x : dir) x = nd(rng);
  tr.q.resize(static_cast<size_t>(tr.q_heads) * n * d);
  tr.k.resize(static_cast<size_t>(n) * d);
  tr.v.resize(static_cast<size_t>(n) * d);
  for (float& x : tr.q) x = 1.5f * nd(rng);
  for (int64_t t = 0; t < n; ++t) {
    for (int c = 0; c < d; ++c) {
      tr.k[t * d + c] = nd(rng) + 0.5f * dir[c];
      tr.v[t * d + c] = nd(rng) + 0.3f * dir[c];
    }
  }
  return tr;
}

TEST(StorageCorrectionTest, EvictModelIsExactAndFittingHelpsTraining) {
  const eval::Trace tr = MakeTrace(160, 8, 1);
  CorrectionOptions opt;
  opt.base_spec = "evict:budget=32,sinks=4,window=8";
  opt.train_fraction = 0.5;
  int seen = 0;
  auto res =
      FitStorageCorrection(tr, opt, [&](const HeadCorrection&) { ++seen; });
  ASSERT_TRUE(res.ok()) << res.status();
  ASSERT_EQ(res->size(), 2u);
  EXPECT_EQ(seen, 2);
  for (const HeadCorrection& h : *res) {
    EXPECT_EQ(h.train_rows, 80);
    EXPECT_EQ(h.held_rows, 80);
    // X = Y = I over the recorded visibility reproduces evict's answers.
    EXPECT_LT(h.model_check, 1e-5) << "head " << h.q_head;
    // Evict with a 32-token budget is lossy on held-out tokens.
    EXPECT_GT(h.held_untrained, 1e-3);
    // The fit starts at the untrained point and never increases the
    // anchored objective, so the training error cannot get worse.
    EXPECT_LE(h.train_fitted, h.train_untrained * (1 + 1e-12));
    EXPECT_GT(h.iterations, 0);
    EXPECT_TRUE(std::isfinite(h.held_fitted));
    EXPECT_EQ(h.x.rows(), 8);
    EXPECT_EQ(h.y.cols(), 8);
  }
}

TEST(StorageCorrectionTest, HalfPrecisionStoreIsModelledToo) {
  const eval::Trace tr = MakeTrace(64, 8, 2);
  CorrectionOptions opt;
  opt.base_spec = "exact:store=f16";
  auto res = FitStorageCorrection(tr, opt);
  ASSERT_TRUE(res.ok()) << res.status();
  for (const HeadCorrection& h : *res) {
    EXPECT_LT(h.model_check, 1e-5);
    // f16 rounding: ~1e-3 relative, far from zero and far from lossy.
    EXPECT_GT(h.held_untrained, 1e-6);
    EXPECT_LT(h.held_untrained, 1e-2);
  }
}

TEST(StorageCorrectionTest, BadInputsGiveClearErrors) {
  eval::Trace tr = MakeTrace(32, 4, 3);
  CorrectionOptions opt;
  opt.base_spec = "topk";
  auto st = FitStorageCorrection(tr, opt).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(st.message(), HasSubstr("keeps no key subset"));

  opt.base_spec = "evict";
  opt.train_fraction = 1.0;
  st = FitStorageCorrection(tr, opt).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);

  opt.train_fraction = 0.5;
  opt.lambda = 0;
  st = FitStorageCorrection(tr, opt).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("lambda"));

  opt.lambda = 1e-3;
  opt.base_spec = "evict:nosuchkey=1";
  st = FitStorageCorrection(tr, opt).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);

  opt.base_spec = "evict";
  eval::SubsampleQueries(&tr, 8);
  st = FitStorageCorrection(tr, opt).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("a query at every position"));
}

}  // namespace
}  // namespace kvsketch::regression
