// File: tests/core/count_sketch_test.cc
//
// CountSketch sparse recovery (papers/A_B.md §A.8.9) and the output-column
// sketch over an approximator's answers.
#include "core/sketch/count_sketch.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "core/registry.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/testing/reference_attention.h"

namespace kvsketch {
namespace {

using ::kvsketch::testing::RandomNormal;

// k nonzeros of magnitude in [1, 3] at random positions of [0, n).
std::vector<double> SparseVector(uint64_t seed, int n, int k) {
  std::mt19937_64 rng(seed);
  std::vector<double> x(n, 0.0);
  for (int placed = 0; placed < k;) {
    const int j = static_cast<int>(rng() % n);
    if (x[j] != 0) continue;
    x[j] = (1.0 + 2.0 * (rng() % 1000) / 1000.0) * ((rng() & 1) ? 1 : -1);
    ++placed;
  }
  return x;
}

// The decoder scans the whole universe of N coordinates, so a zero
// coordinate is reported whenever more than half of its r rows collide with
// nonzeros (probability ≈ C(r, r/2+1)·(k/b)^(r/2+1) each, times N). With
// N = 5000, k = 10 the §A.8.9 setting b = 4k, r = 5 fails in most seeds
// (measured: 0/200); b = 32k, r = 7 succeeds in 196/200.
TEST(CountSketchTest, RecoversExactlySparseVectorsInAlmostEverySeed) {
  const int n = 5000, k = 10;
  int exact = 0;
  const int trials = 200;
  for (int seed = 0; seed < trials; ++seed) {
    const auto x = SparseVector(1000 + seed, n, k);
    CountSketch cs(7, 32 * k, seed);
    for (int j = 0; j < n; ++j) {
      if (x[j] != 0) cs.Add(j, x[j]);
    }
    const auto top = cs.RecoverTopK(n, k);
    ASSERT_EQ(top.size(), static_cast<size_t>(k));
    bool ok = true;
    for (const RecoveredEntry& e : top) {
      ok = ok && std::fabs(e.value - x[e.index]) < 1e-12 && x[e.index] != 0;
    }
    exact += ok;
  }
  EXPECT_GE(exact, trials * 97 / 100);
}

TEST(CountSketchTest, NoisyRecoveryIsNearTheBestKSparse) {
  // ‖x − x̂‖₂ ≤ (1 + ε)‖x − x_k‖₂ in ≥ 95% of seeds with b = ⌈c·k/ε⌉.
  const int n = 4000, k = 8;
  const double eps = 0.5;
  int good = 0;
  const int trials = 100;
  for (int seed = 0; seed < trials; ++seed) {
    auto x = SparseVector(5000 + seed, n, k);
    for (double& v : x) v *= 10;
    const auto noise = RandomNormal(9000 + seed, n, 0.01);
    for (int j = 0; j < n; ++j) x[j] += noise[j];
    CountSketch cs(7, static_cast<int>(std::ceil(32 * k / eps)), seed);
    for (int j = 0; j < n; ++j) cs.Add(j, x[j]);
    std::vector<double> xhat(n, 0.0);
    for (const RecoveredEntry& e : cs.RecoverTopK(n, k))
      xhat[e.index] = e.value;
    std::vector<double> mags(n);
    for (int j = 0; j < n; ++j) mags[j] = std::fabs(x[j]);
    std::nth_element(mags.begin(), mags.begin() + k, mags.end(),
                     std::greater<>());
    double tail = 0, err = 0;
    for (int j = k; j < n; ++j) tail += mags[j] * mags[j];
    for (int j = 0; j < n; ++j) err += (x[j] - xhat[j]) * (x[j] - xhat[j]);
    good += std::sqrt(err) <= (1 + eps) * std::sqrt(tail);
  }
  EXPECT_GE(good, 95);
}

TEST(CountSketchTest, IsLinearAndMerges) {
  CountSketch a(5, 32, 3), b(5, 32, 3), both(5, 32, 3), other(5, 32, 4);
  std::mt19937_64 rng(1);
  for (int i = 0; i < 500; ++i) {
    const uint64_t j = rng() % 1000;
    const double v = static_cast<double>(rng() % 100) - 50;
    (i % 2 ? a : b).Add(j, v);
    both.Add(j, v);
  }
  ASSERT_TRUE(a.MergeFrom(b).ok());
  for (uint64_t j = 0; j < 1000; ++j)
    EXPECT_EQ(a.Estimate(j), both.Estimate(j));
  const absl::Status s = a.MergeFrom(other);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), ::testing::HasSubstr("seed"));
}

TEST(OutputColumnSketchTest, RecoversTheLargestOutputsOfEachColumn) {
  // 2000 queries against an exact head: a few queries point straight at one
  // key whose value is large, so a handful of output entries per column
  // dominate; the sketch (not the N × dv output) must find them.
  const int d = 16, dv = 4;
  const int64_t n = 1024, nq = 2000;
  auto a = CreateApproximator("exact", {d, dv, 1.0f});
  ASSERT_TRUE(a.ok());
  auto keys = RandomNormal(1, n * d, 0.05);
  std::vector<float> values(n * dv, 0.f);
  for (int c = 0; c < dv; ++c) {
    keys[c * d + c] = 6.f;  // key c is the needle of column c
    values[c * dv + c] = 10.f;
  }
  ASSERT_TRUE((*a)->Append({keys.data(), n, d}, {values.data(), n, dv}).ok());
  std::vector<float> queries = RandomNormal(2, nq * d, 0.05);
  const std::vector<int64_t> hot = {17, 400, 1234};
  for (int64_t i : hot) {
    for (int c = 0; c < dv; ++c) queries[i * d + c] = 2.f;  // hits keys 0..dv-1
  }
  OutputColumnSketch sk(dv, 5, 64, 9);
  ASSERT_TRUE(sk.SketchQueries(**a, {queries.data(), nq, d}, 0, 128).ok());
  std::vector<float> out(nq * dv);
  ASSERT_TRUE((*a)->Query({queries.data(), nq, d}, {out.data(), nq, dv}).ok());
  for (int c = 0; c < dv; ++c) {
    const auto top = sk.RecoverColumnTopK(c, nq, 3);
    ASSERT_EQ(top.size(), 3u);
    std::vector<int64_t> got;
    for (const RecoveredEntry& e : top) {
      got.push_back(static_cast<int64_t>(e.index));
      EXPECT_NEAR(e.value, out[e.index * dv + c],
                  0.05 * std::fabs(out[e.index * dv + c]));
    }
    EXPECT_THAT(got, ::testing::UnorderedElementsAreArray(hot))
        << "column " << c;
  }
}

}  // namespace
}  // namespace kvsketch
