// File: tests/core/conv_basis_test.cc
//
// core/conv/conv_basis.h against planted matrices
// (papers/C_D_E_conv_regression_zeta.md §C.9): exact recovery of a k-conv
// matrix's starts and increments, with and without noise below the
// threshold (C.9.3); the FFT application equals the dense product; closure
// of k-conv under exp (C.9.4); k = n is exact on an arbitrary matrix
// (C.9.7); the segmented fit's error never grows as nested breakpoints are
// refined (C.9.9).
#include "core/conv/conv_basis.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/testing/reference_attention.h"

namespace kvsketch {
namespace {

using ::kvsketch::testing::RandomNormal;
using ::testing::ElementsAreArray;

// A dense n×n lower triangle as a ColumnSource.
class DenseSource : public ColumnSource {
 public:
  explicit DenseSource(int64_t n) : n_(n), a_(n * n, 0.0) {}
  int64_t size() const override { return n_; }
  void Column(int64_t j, int64_t len, double* out) const override {
    EXPECT_GE(j, 0);
    EXPECT_GE(len, 1);
    EXPECT_LE(j + len, n_);
    for (int64_t t = 0; t < len; ++t) out[t] = at(j + t, j);
  }
  double& at(int64_t i, int64_t j) { return a_[i * n_ + j]; }
  double at(int64_t i, int64_t j) const { return a_[i * n_ + j]; }

 private:
  int64_t n_;
  std::vector<double> a_;
};

// A random k-conv basis with the given starts. Every increment has
// |b_r[0]| >= 1, so each new basis changes the diagonal (non-degenerate
// for any probe length, §C.3).
ConvBasis PlantedBasis(int64_t n, const std::vector<int64_t>& starts,
                       uint64_t seed) {
  ConvBasis b;
  b.n = n;
  b.starts = starts;
  for (size_t r = 0; r < starts.size(); ++r) {
    const auto g = RandomNormal(seed + r, n - starts[r]);
    std::vector<double> inc(g.begin(), g.end());
    inc[0] = (inc[0] >= 0 ? 1.0 : -1.0) * (1.0 + std::abs(inc[0]));
    b.increments.push_back(std::move(inc));
  }
  return b;
}

DenseSource Densify(const ConvBasis& b) {
  DenseSource a(b.n);
  for (int64_t i = 0; i < b.n; ++i) {
    for (int64_t j = 0; j <= i; ++j) a.at(i, j) = ConvBasisEntry(b, i, j);
  }
  return a;
}

double MaxAbsIncrementDiff(const ConvBasis& a, const ConvBasis& b) {
  double err = 0;
  for (int r = 0; r < a.bases(); ++r) {
    for (size_t t = 0; t < a.increments[r].size(); ++t) {
      err = std::max(err, std::abs(a.increments[r][t] - b.increments[r][t]));
    }
  }
  return err;
}

TEST(ConvBasisSearchTest, RecoversAPlantedKConvMatrixExactly) {
  const int64_t n = 500;
  const std::vector<int64_t> starts = {0, 37, 120, 121, 333, 480};
  const ConvBasis planted = PlantedBasis(n, starts, 5);
  const DenseSource a = Densify(planted);
  const ConvBasis fit = FitConvBasisSearch(a, {16, 16, 1e-6});
  ASSERT_THAT(fit.starts, ElementsAreArray(starts));
  EXPECT_LE(MaxAbsIncrementDiff(fit, planted), 1e-12);

  // The FFT application (long segments) and direct sums (the last, 20
  // long) equal the dense product Â·x.
  const int channels = 7;
  const auto xf = RandomNormal(9, n * channels);
  const std::vector<double> x(xf.begin(), xf.end());
  std::vector<double> y(n * channels);
  ApplyConvBasis(fit, x.data(), channels, y.data());
  double err = 0, mag = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int c = 0; c < channels; ++c) {
      double want = 0;
      for (int64_t j = 0; j <= i; ++j) want += a.at(i, j) * x[j * channels + c];
      err = std::max(err, std::abs(y[i * channels + c] - want));
      mag = std::max(mag, std::abs(want));
    }
  }
  EXPECT_LE(err, 1e-12 * mag);
}

TEST(ConvBasisSearchTest, StartsSurviveNoiseBelowTheThreshold) {
  const int64_t n = 400;
  const std::vector<int64_t> starts = {0, 50, 210, 390};
  const ConvBasis planted = PlantedBasis(n, starts, 17);
  DenseSource a = Densify(planted);
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> noise(-1e-6, 1e-6);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j <= i; ++j) a.at(i, j) += noise(rng);
  }
  // Window ℓ1 noise <= 2·probe·1e-6 = 6.4e-5, far below tau·‖window‖₁.
  const ConvBasis fit = FitConvBasisSearch(a, {16, 32, 1e-3});
  EXPECT_THAT(fit.starts, ElementsAreArray(starts));
  EXPECT_LE(MaxAbsIncrementDiff(fit, planted), 4e-6);
}

TEST(ConvBasisSearchTest, BudgetKeepsTheFirstStarts) {
  const ConvBasis planted = PlantedBasis(300, {0, 40, 90, 200}, 23);
  const ConvBasis fit = FitConvBasisSearch(Densify(planted), {3, 16, 1e-6});
  EXPECT_THAT(fit.starts, ElementsAreArray({0, 40, 90}));
}

// max |Â − A| / max |A| over the lower triangle (the increments telescope,
// so rounding is relative to the largest entries, not each entry).
double MaxRelativeFitError(const ConvBasis& fit, const DenseSource& a) {
  double err = 0, mag = 0;
  for (int64_t i = 0; i < a.size(); ++i) {
    for (int64_t j = 0; j <= i; ++j) {
      err = std::max(err, std::abs(ConvBasisEntry(fit, i, j) - a.at(i, j)));
      mag = std::max(mag, std::abs(a.at(i, j)));
    }
  }
  return err / mag;
}

TEST(ConvBasisSearchTest, ExpOfKConvIsKPlusOneConv) {
  // §C.2 closure: H = Σ conv(b_r, m_r) with s_1 > 0 is zero left of s_1;
  // tril(exp(H)) adds the all-ones profile at column 0 (the mask).
  const int64_t n = 256;
  ConvBasis h = PlantedBasis(n, {30, 100, 180}, 41);
  for (auto& inc : h.increments) {
    for (double& v : inc) v *= 0.3;  // keep exp() well scaled
  }
  DenseSource a(n);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j <= i; ++j) {
      a.at(i, j) = std::exp(ConvBasisEntry(h, i, j));
    }
  }
  const ConvBasis fit = FitConvBasisSearch(a, {16, 8, 1e-9});
  EXPECT_THAT(fit.starts, ElementsAreArray({0, 30, 100, 180}));
  EXPECT_LE(MaxRelativeFitError(fit, a), 1e-13);
}

DenseSource RandomPositive(int64_t n, uint64_t seed) {
  DenseSource a(n);
  const auto g = RandomNormal(seed, n * n);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j <= i; ++j) a.at(i, j) = std::exp(g[i * n + j]);
  }
  return a;
}

TEST(ConvBasisSearchTest, KEqualsNIsExactOnAnyMatrix) {
  const DenseSource a = RandomPositive(64, 61);
  const ConvBasis fit = FitConvBasisSearch(a, {64, 8, 0.0});
  EXPECT_EQ(fit.bases(), 64);
  EXPECT_LE(MaxRelativeFitError(fit, a), 1e-12);
}

TEST(ConvBasisSegmentedTest, EverySegmentFullySampledIsExactAtKEqualsN) {
  const DenseSource a = RandomPositive(48, 67);
  const ConvBasis fit = FitConvBasisSegmented(a, {48, 1, 1});
  EXPECT_EQ(fit.bases(), 48);
  EXPECT_LE(MaxRelativeFitError(fit, a), 1e-12);
}

TEST(ConvBasisSegmentedTest, ErrorNeverGrowsAsNestedBreakpointsRefine) {
  // A recency-like matrix (decay with i − j) plus per-entry noise: no k fits
  // exactly, so each refinement has something to gain.
  const int64_t n = 256;
  DenseSource a(n);
  const auto g = RandomNormal(71, n * n);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j <= i; ++j) {
      a.at(i, j) =
          std::exp(-0.02 * (i - j) * (1 + j / 128.0) + 0.3 * g[i * n + j]);
    }
  }
  double prev = 1e300;
  for (int k : {1, 2, 4, 8, 16, 32, 64}) {
    // samples >= n: every column of every segment, the least-squares fit.
    const ConvBasis fit = FitConvBasisSegmented(a, {k, 1 << 20, 1});
    double sq = 0;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j <= i; ++j) {
        const double e = ConvBasisEntry(fit, i, j) - a.at(i, j);
        sq += e * e;
      }
    }
    EXPECT_LE(sq, prev * (1 + 1e-12)) << "k=" << k;
    prev = sq;
  }
}

TEST(ConvBasisSegmentedTest, SampledProfilesAreExactOnAKConvGrid) {
  // When the planted starts lie on the grid, any sample gives the exact
  // profiles (all columns of a segment are equal).
  const int64_t n = 400;
  const ConvBasis planted = PlantedBasis(n, {0, 100, 200, 300}, 83);
  const ConvBasis fit = FitConvBasisSegmented(Densify(planted), {4, 5, 9});
  EXPECT_THAT(fit.starts, ElementsAreArray(planted.starts));
  EXPECT_LE(MaxAbsIncrementDiff(fit, planted), 1e-12);
}

}  // namespace
}  // namespace kvsketch
