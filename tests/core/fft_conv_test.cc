// File: tests/core/fft_conv_test.cc
//
// core/conv/fft_conv.h: the FFT causal convolution equals the dense
// conv(b)·x (papers/C_D_E_conv_regression_zeta.md §C.9.1) for lengths that
// are and are not FFT-friendly, on one and many channels, from several
// threads at once (plan creation is serialised, execution is not).
#include "core/conv/fft_conv.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/core/testing/reference_attention.h"

namespace kvsketch {
namespace {

using ::kvsketch::testing::RandomNormal;

std::vector<double> ToDouble(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// y += conv(b)·x, term by term in long double.
std::vector<double> DenseConv(const std::vector<double>& b,
                              const std::vector<double>& x, int64_t m,
                              int channels, std::vector<double> y) {
  for (int64_t t = 0; t < m; ++t) {
    for (int c = 0; c < channels; ++c) {
      long double s = 0;
      for (int64_t l = 0; l <= t; ++l) {
        s += static_cast<long double>(b[l]) * x[(t - l) * channels + c];
      }
      y[t * channels + c] += static_cast<double>(s);
    }
  }
  return y;
}

bool OnlySmallPrimes(int64_t n) {
  for (int p : {2, 3, 5, 7}) {
    while (n % p == 0) n /= p;
  }
  return n == 1;
}

TEST(FftFriendlyLengthTest, IsTheSmallest7SmoothLengthAtLeastN) {
  for (int64_t n = 1; n <= 3000; ++n) {
    const int64_t l = FftFriendlyLength(n);
    ASSERT_GE(l, n);
    ASSERT_TRUE(OnlySmallPrimes(l)) << n << " -> " << l;
    for (int64_t smaller = n; smaller < l; ++smaller) {
      ASSERT_FALSE(OnlySmallPrimes(smaller)) << n << " -> " << l;
    }
  }
  EXPECT_EQ(FftFriendlyLength(8191), 8192);
  EXPECT_EQ(FftFriendlyLength(2 * 1000 - 1), 2000);
}

TEST(CausalConvTest, FftEqualsDenseForManyLengths) {
  for (int64_t m :
       {1, 2, 3, 7, 96, 97, 100, 127, 128, 129, 257, 1000, 1023, 4097}) {
    for (int channels : {1, 5, 17, 33}) {
      if (m == 4097 && channels > 5) continue;  // dense reference is O(m²C)
      const auto b = ToDouble(RandomNormal(m * 7 + channels, m));
      const auto x = ToDouble(RandomNormal(m * 11 + channels, m * channels));
      // Accumulates into a non-zero y.
      const auto y0 = ToDouble(RandomNormal(m * 13 + channels, m * channels));
      const auto want = DenseConv(b, x, m, channels, y0);
      double scale = 0;  // Σ|b| · max|x|: the size of the FFT's error
      for (double v : b) scale += std::abs(v);
      double xmax = 0;
      for (double v : x) xmax = std::max(xmax, std::abs(v));
      scale *= xmax;
      for (ConvMethod method :
           {ConvMethod::kFft, ConvMethod::kDirect, ConvMethod::kAuto}) {
        std::vector<double> y = y0;
        CausalConvAccumulate(b.data(), m, x.data(), channels, y.data(), method);
        double err = 0;
        for (size_t i = 0; i < y.size(); ++i) {
          err = std::max(err, std::abs(y[i] - want[i]));
        }
        EXPECT_LE(err, 1e-13 * scale) << "m=" << m << " channels=" << channels
                                      << " method=" << static_cast<int>(method);
      }
    }
  }
}

TEST(CausalConvTest, ZeroLengthIsANoOp) {
  std::vector<double> y = {1, 2, 3};
  CausalConvAccumulate(nullptr, 0, nullptr, 3, y.data(), ConvMethod::kFft);
  EXPECT_EQ(y, (std::vector<double>{1, 2, 3}));
}

TEST(CausalConvTest, ConcurrentCallsOnFreshLengthsAgree) {
  // Lengths no other test uses, so both threads create plans concurrently.
  const std::vector<int64_t> lengths = {1234, 1501, 2222, 3001};
  const int channels = 9;
  std::vector<std::vector<double>> got[2];
  auto run = [&](int id) {
    for (int64_t m : lengths) {
      const auto b = ToDouble(RandomNormal(m, m));
      const auto x = ToDouble(RandomNormal(m + 1, m * channels));
      std::vector<double> y(m * channels, 0.0);
      CausalConvAccumulate(b.data(), m, x.data(), channels, y.data(),
                           ConvMethod::kFft);
      got[id].push_back(std::move(y));
    }
  };
  std::thread t0(run, 0), t1(run, 1);
  t0.join();
  t1.join();
  for (size_t i = 0; i < lengths.size(); ++i) {
    const int64_t m = lengths[i];
    EXPECT_EQ(got[0][i], got[1][i]) << m;
    const auto b = ToDouble(RandomNormal(m, m));
    const auto x = ToDouble(RandomNormal(m + 1, m * channels));
    const auto want =
        DenseConv(b, x, m, channels, std::vector<double>(m * channels, 0.0));
    double err = 0, mag = 0;
    for (size_t j = 0; j < want.size(); ++j) {
      err = std::max(err, std::abs(got[0][i][j] - want[j]));
      mag = std::max(mag, std::abs(want[j]));
    }
    EXPECT_LE(err, 1e-12 * mag * std::sqrt(double(m))) << m;
  }
}

}  // namespace
}  // namespace kvsketch
