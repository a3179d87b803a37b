// File: tests/core/morton_test.cc
//
// Morton codes and the quantiser of core/zeta/morton.h
// (papers/C_D_E_conv_regression_zeta.md §E.6 items 1–2).
#include "core/zeta/morton.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace kvsketch {
namespace {

uint64_t Encode2(int bits, uint32_t x1, uint32_t x2) {
  auto codec = MortonCodec::Create(2, bits);
  EXPECT_TRUE(codec.ok());
  const uint32_t c[2] = {x1, x2};
  return codec->Encode(c);
}

TEST(MortonTest, HandCheckedCodes) {
  // §E.2 step 3: the first coordinate takes the higher bit of each group.
  EXPECT_EQ(Encode2(1, 0, 0), 0u);
  EXPECT_EQ(Encode2(1, 0, 1), 1u);
  EXPECT_EQ(Encode2(1, 1, 0), 2u);
  EXPECT_EQ(Encode2(1, 1, 1), 3u);
  EXPECT_EQ(Encode2(2, 3, 0), 10u);  // 0b1010
  EXPECT_EQ(Encode2(2, 0, 3), 5u);   // 0b0101
  EXPECT_EQ(Encode2(2, 2, 1), 9u);   // x1=10, x2=01 -> 1001
  // Three coordinates, one bit each: x1 x2 x3.
  auto c3 = MortonCodec::Create(3, 2);
  ASSERT_TRUE(c3.ok());
  const uint32_t v[3] = {2, 1, 3};  // 10, 01, 11 -> 101 011
  EXPECT_EQ(c3->Encode(v), 0b101011u);
}

TEST(MortonTest, RoundTripsAtEveryLayout) {
  std::mt19937_64 rng(7);
  for (int dims = 1; dims <= 16; ++dims) {
    for (int bits = 1; bits <= 32 && dims * bits <= 64; ++bits) {
      auto codec = MortonCodec::Create(dims, bits);
      ASSERT_TRUE(codec.ok()) << dims << " " << bits;
      std::vector<uint32_t> x(dims), back(dims);
      for (int trial = 0; trial < 50; ++trial) {
        for (auto& c : x) {
          c = static_cast<uint32_t>(rng() & ((uint64_t{1} << bits) - 1));
        }
        const uint64_t code = codec->Encode(x.data());
        if (dims * bits < 64) {
          EXPECT_LT(code, uint64_t{1} << (dims * bits));
        }
        codec->Decode(code, back.data());
        ASSERT_EQ(back, x) << "dims=" << dims << " bits=" << bits;
      }
    }
  }
}

TEST(MortonTest, OrderFollowsTheLeadingBits) {
  // Codes compare like the interleaved bit strings: along one coordinate
  // with the others fixed, the code is strictly increasing.
  auto codec = MortonCodec::Create(3, 10);
  ASSERT_TRUE(codec.ok());
  uint32_t x[3] = {5, 0, 77};
  uint64_t last = 0;
  for (uint32_t v = 0; v < 1024; ++v) {
    x[1] = v;
    const uint64_t c = codec->Encode(x);
    if (v > 0) {
      EXPECT_GT(c, last);
    }
    last = c;
  }
}

TEST(MortonTest, RejectsLayoutsOver64Bits) {
  EXPECT_FALSE(MortonCodec::Create(3, 22).ok());
  EXPECT_FALSE(MortonCodec::Create(2, 33).ok());
  EXPECT_FALSE(MortonCodec::Create(0, 4).ok());
  EXPECT_FALSE(MortonCodec::Create(4, 0).ok());
  EXPECT_EQ(MortonCodec::Create(65, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MortonCodec::Create(3, 21).ok());
  EXPECT_TRUE(MortonCodec::Create(2, 32).ok());
  EXPECT_TRUE(MortonCodec::Create(64, 1).ok());
}

TEST(QuantizerTest, ClampsAtTheBounds) {
  auto q = Quantizer::Create(-1.0, 1.0, 4);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(*q->Quantize(-1.0), 0u);
  EXPECT_EQ(*q->Quantize(-5.0), 0u);
  EXPECT_EQ(*q->Quantize(-1e300), 0u);
  EXPECT_EQ(*q->Quantize(1.0), 15u);
  EXPECT_EQ(*q->Quantize(7.0), 15u);
  EXPECT_EQ(*q->Quantize(1e300), 15u);
  EXPECT_EQ(*q->Quantize(0.0), 8u);      // cell [0, 0.125)
  EXPECT_EQ(*q->Quantize(-0.0001), 7u);  // cell [-0.125, 0)
  EXPECT_EQ(*q->Quantize(0.999), 15u);
}

TEST(QuantizerTest, RejectsNonFiniteValuesAndBadBounds) {
  auto q = Quantizer::Create(0.0, 1.0, 8);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->Quantize(std::nan("")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(q->Quantize(std::numeric_limits<double>::infinity()).ok());
  EXPECT_FALSE(q->Quantize(-std::numeric_limits<double>::infinity()).ok());
  EXPECT_FALSE(Quantizer::Create(1.0, 1.0, 8).ok());
  EXPECT_FALSE(Quantizer::Create(2.0, 1.0, 8).ok());
  EXPECT_FALSE(Quantizer::Create(0.0, std::nan(""), 8).ok());
  EXPECT_FALSE(Quantizer::Create(0.0, 1.0, 0).ok());
  EXPECT_FALSE(Quantizer::Create(0.0, 1.0, 33).ok());
}

TEST(QuantizerTest, IsMonotoneAndUsesEveryCode) {
  auto q = Quantizer::Create(-3.0, 5.0, 10);
  ASSERT_TRUE(q.ok());
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> u(-4.0, 6.0);
  std::vector<double> xs(20000);
  for (double& x : xs) x = u(rng);
  std::sort(xs.begin(), xs.end());
  uint32_t last = 0;
  std::vector<bool> seen(1024, false);
  for (double x : xs) {
    const uint32_t c = q->QuantizeFinite(x);
    EXPECT_GE(c, last);
    last = c;
    seen[c] = true;
  }
  EXPECT_EQ(std::count(seen.begin(), seen.end(), true), 1024);
}

}  // namespace
}  // namespace kvsketch
