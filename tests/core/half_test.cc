// File: tests/core/half_test.cc
//
// binary16 / bfloat16 conversions: exhaustive over all 65536 bit patterns,
// round-to-nearest-even ties, overflow, and bulk (F16C/AVX2) == scalar.
#include "core/util/half.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace kvsketch {
namespace {

bool IsHalfNan(uint16_t h) {
  return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0;
}
bool IsBf16Nan(uint16_t b) { return (b & 0x7f80) == 0x7f80 && (b & 0x7f) != 0; }

// Value of a half computed independently of the code under test.
double HalfValue(uint16_t h) {
  const int sign = (h & 0x8000) ? -1 : 1;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  if (exp == 0) return sign * std::ldexp(mant, -24);
  if (exp == 31) return mant ? NAN : sign * INFINITY;
  return sign * std::ldexp(1024 + mant, exp - 25);
}

TEST(HalfTest, ExhaustiveHalfToFloatToHalf) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t h = static_cast<uint16_t>(i);
    const float f = HalfToFloat(h);
    if (IsHalfNan(h)) {
      EXPECT_TRUE(std::isnan(f)) << i;
      EXPECT_TRUE(IsHalfNan(FloatToHalf(f))) << i;
      continue;
    }
    EXPECT_EQ(double{f}, HalfValue(h)) << i;
    EXPECT_EQ(FloatToHalf(f), h) << i;
  }
}

TEST(HalfTest, ExhaustiveBf16ToFloatToBf16) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t b = static_cast<uint16_t>(i);
    const float f = Bf16ToFloat(b);
    EXPECT_EQ(std::bit_cast<uint32_t>(f), i << 16);
    if (IsBf16Nan(b)) {
      EXPECT_TRUE(IsBf16Nan(FloatToBf16(f))) << i;
    } else {
      EXPECT_EQ(FloatToBf16(f), b) << i;
    }
  }
}

TEST(HalfTest, RoundsToNearestEven) {
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1).
  EXPECT_EQ(FloatToHalf(1.0f + 0x1p-11f), 0x3c00);
  // 1 + 3·2^-11 is halfway between 1+2^-10 (odd) and 1+2^-9 (even).
  EXPECT_EQ(FloatToHalf(1.0f + 3 * 0x1p-11f), 0x3c02);
  // Just above the tie rounds up.
  EXPECT_EQ(FloatToHalf(std::nextafter(1.0f + 0x1p-11f, 2.0f)), 0x3c01);
  // Subnormal ties: 0.5 and 1.5 units of 2^-24.
  EXPECT_EQ(FloatToHalf(0x1p-25f), 0x0000);
  EXPECT_EQ(FloatToHalf(3 * 0x1p-25f), 0x0002);
  EXPECT_EQ(FloatToHalf(-3 * 0x1p-25f), 0x8002);
  // Overflow: 65504 is the largest half; 65520 is the tie and rounds to Inf.
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65519.99f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);
  EXPECT_EQ(FloatToHalf(-1e10f), 0xfc00);
  EXPECT_EQ(FloatToHalf(INFINITY), 0x7c00);
  EXPECT_EQ(FloatToHalf(-INFINITY), 0xfc00);
  EXPECT_TRUE(IsHalfNan(FloatToHalf(NAN)));
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  // bf16: 1 + 2^-8 ties to 1; 1 + 3·2^-8 ties up to 1 + 2^-6.
  EXPECT_EQ(FloatToBf16(1.0f + 0x1p-8f), 0x3f80);
  EXPECT_EQ(FloatToBf16(1.0f + 3 * 0x1p-8f), 0x3f82);
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_TRUE(IsBf16Nan(FloatToBf16(NAN)));
  // A NaN whose payload lies only in the low 16 bits stays a NaN.
  EXPECT_TRUE(IsBf16Nan(FloatToBf16(std::bit_cast<float>(0x7f800001u))));
  EXPECT_TRUE(IsHalfNan(FloatToHalf(std::bit_cast<float>(0x7f800001u))));
}

// Random floats across the whole range, plus every half/bf16 value widened,
// plus the exact ties; bulk and scalar must agree bit for bit.
std::vector<float> InterestingFloats() {
  std::vector<float> v;
  std::mt19937_64 rng(1);
  for (int i = 0; i < 200000; ++i) {
    v.push_back(std::bit_cast<float>(static_cast<uint32_t>(rng())));
  }
  for (uint32_t i = 0; i < 65536; ++i) {
    const float h = HalfToFloat(static_cast<uint16_t>(i));
    v.push_back(h);
    v.push_back(std::nextafter(h, INFINITY));
    v.push_back(std::nextafter(h, -INFINITY));
    v.push_back(std::bit_cast<float>(i << 16));
    v.push_back(std::bit_cast<float>((i << 16) | 0x8000));  // bf16 ties
    v.push_back(std::bit_cast<float>((i << 16) | 0x7fff));
  }
  for (uint32_t i = 0; i < 1024; ++i) {
    // Half ties in the normal range: mantissa bit 12 set, below zero.
    v.push_back(std::bit_cast<float>(0x3f800000u | (i << 13) | 0x1000));
    v.push_back(std::bit_cast<float>(0x33000000u | (i << 13) | 0x1000));
  }
  v.push_back(65520.0f);
  v.push_back(-65520.0f);
  return v;
}

TEST(HalfTest, BulkEqualsScalar) {
  const std::vector<float> in = InterestingFloats();
  // Odd sizes and offsets exercise the vector body and the scalar tail.
  for (size_t n : {in.size(), in.size() - 3, size_t{7}, size_t{0}}) {
    std::vector<uint16_t> h(n), b(n);
    FloatToHalfN(in.data(), h.data(), n);
    FloatToBf16N(in.data(), b.data(), n);
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(h[i], FloatToHalf(in[i]))
          << std::hex << std::bit_cast<uint32_t>(in[i]);
      ASSERT_EQ(b[i], FloatToBf16(in[i]))
          << std::hex << std::bit_cast<uint32_t>(in[i]);
    }
  }
  std::vector<uint16_t> all(65536 + 5);
  for (size_t i = 0; i < all.size(); ++i)
    all[i] = static_cast<uint16_t>(i * 7919);
  for (uint32_t i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<float> f(all.size()), g(all.size());
  HalfToFloatN(all.data(), f.data(), all.size());
  Bf16ToFloatN(all.data(), g.data(), all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    ASSERT_EQ(std::bit_cast<uint32_t>(f[i]),
              std::bit_cast<uint32_t>(HalfToFloat(all[i])))
        << std::hex << all[i];
    ASSERT_EQ(std::bit_cast<uint32_t>(g[i]),
              std::bit_cast<uint32_t>(Bf16ToFloat(all[i])));
  }
}

}  // namespace
}  // namespace kvsketch
