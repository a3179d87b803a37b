// File: tests/server/tensor_codec_test.cc
#include "wire/tensor_codec.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/util/half.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/server_test_util.h"

namespace kvsketch {
namespace {

using server::testing::MakeTensor;
using server::testing::RandomFloats;
using server::testing::RoundTo;
using ::testing::HasSubstr;

TEST(TensorCodecTest, F32RoundTripIsBitExact) {
  std::vector<float> data = RandomFloats(2 * 3 * 5, 1);
  data[0] = -0.0f;
  data[1] = std::numeric_limits<float>::denorm_min();
  v1::Tensor t;
  EncodeTensor({2, 3, 5}, data, v1::F32, &t);
  EXPECT_EQ(t.dtype(), v1::F32);
  EXPECT_EQ(t.data().size(), data.size() * 4);
  auto decoded = DecodeTensor(t, "x");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->shape, (std::vector<int64_t>{2, 3, 5}));
  ASSERT_EQ(decoded->data.size(), data.size());
  EXPECT_EQ(std::memcmp(decoded->data.data(), data.data(), data.size() * 4), 0);
}

TEST(TensorCodecTest, F32IsLittleEndianOnTheWire) {
  const float one = 1.0f;  // 0x3f800000
  v1::Tensor t;
  EncodeTensor({1}, absl::MakeConstSpan(&one, 1), v1::F32, &t);
  ASSERT_EQ(t.data().size(), 4u);
  EXPECT_EQ(static_cast<unsigned char>(t.data()[0]), 0x00);
  EXPECT_EQ(static_cast<unsigned char>(t.data()[3]), 0x3f);
}

class HalfCodecTest : public ::testing::TestWithParam<v1::DType> {};

TEST_P(HalfCodecTest, RoundTripEqualsScalarRounding) {
  const v1::DType dtype = GetParam();
  std::vector<float> data = RandomFloats(4 * 7, 2);
  data[3] = 65504.0f;  // largest finite half
  v1::Tensor t;
  EncodeTensor({4, 7}, data, dtype, &t);
  EXPECT_EQ(t.dtype(), dtype);
  EXPECT_EQ(t.data().size(), data.size() * 2);
  auto decoded = DecodeTensor(t, "x");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  const std::vector<float> want = RoundTo(data, dtype);
  ASSERT_EQ(decoded->data.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(decoded->data[i], want[i]) << i;
    // Rounding error at most half an ulp of the format.
    const double unit = dtype == v1::F16 ? 0x1p-11 : 0x1p-8;
    EXPECT_LE(std::abs(decoded->data[i] - data[i]),
              unit * std::abs(data[i]) + 1e-7)
        << i;
  }
  // Re-encoding the widened values reproduces the same bytes.
  v1::Tensor again;
  EncodeTensor({4, 7}, decoded->data, dtype, &again);
  EXPECT_EQ(again.data(), t.data());
}

INSTANTIATE_TEST_SUITE_P(Dtypes, HalfCodecTest,
                         ::testing::Values(v1::F16, v1::BF16));

TEST(TensorCodecTest, DecodesClientMadeHalfBytes) {
  // 1.0 in F16 is 0x3c00, in BF16 0x3f80; little-endian on the wire.
  v1::Tensor t;
  t.set_dtype(v1::F16);
  t.add_shape(1);
  t.set_data(std::string("\x00\x3c", 2));
  auto d = DecodeTensor(t, "x");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->data[0], 1.0f);
  t.set_dtype(v1::BF16);
  t.set_data(std::string("\x80\x3f", 2));
  d = DecodeTensor(t, "x");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->data[0], 1.0f);
}

TEST(TensorCodecTest, EmptyTensorDecodes) {
  v1::Tensor t;
  t.set_dtype(v1::F32);
  t.add_shape(2);
  t.add_shape(0);
  auto d = DecodeTensor(t, "x");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->data.empty());
}

void ExpectError(const v1::Tensor& t, const std::string& substr) {
  auto d = DecodeTensor(t, "entries[2].keys");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("entries[2].keys"));
  EXPECT_THAT(std::string(d.status().message()), HasSubstr(substr));
}

TEST(TensorCodecTest, UnspecifiedDtype) {
  v1::Tensor t = MakeTensor({1}, RandomFloats(1, 3));
  t.set_dtype(v1::DTYPE_UNSPECIFIED);
  ExpectError(t, ".dtype: unspecified");
}

TEST(TensorCodecTest, UnknownDtype) {
  v1::Tensor t = MakeTensor({1}, RandomFloats(1, 3));
  t.set_dtype(static_cast<v1::DType>(42));
  ExpectError(t, "unknown value 42");
}

TEST(TensorCodecTest, NegativeDimension) {
  v1::Tensor t = MakeTensor({2, -1}, {});
  ExpectError(t, ".shape[1]: negative dimension -1");
}

TEST(TensorCodecTest, ElementCountOverflow) {
  v1::Tensor t = MakeTensor({int64_t{1} << 31, int64_t{1} << 31, 4}, {});
  ExpectError(t, "too many elements");
  v1::Tensor u = MakeTensor({std::numeric_limits<int64_t>::max(), 2}, {});
  ExpectError(u, "too many elements");
}

TEST(TensorCodecTest, ByteSizeMismatchNamesBothSizes) {
  v1::Tensor t = MakeTensor({2, 4}, RandomFloats(8, 4));
  t.mutable_data()->resize(30);
  ExpectError(t, ".data: 30 bytes but shape [2,4] of F32 needs 32");
  v1::Tensor h = MakeTensor({2, 4}, RandomFloats(8, 4), v1::F16);
  h.mutable_data()->append("x");
  ExpectError(h, "17 bytes but shape [2,4] of F16 needs 16");
}

TEST(TensorCodecTest, NaNAndInfAreRejectedWithTheirIndex) {
  std::vector<float> data = RandomFloats(6, 5);
  data[4] = std::numeric_limits<float>::quiet_NaN();
  ExpectError(MakeTensor({6}, data), "element 4 is NaN");
  data[4] = 1.0f;
  data[2] = -std::numeric_limits<float>::infinity();
  ExpectError(MakeTensor({6}, data), "element 2 is Inf");
  // A finite float that overflows F16 arrives as Inf.
  data[2] = 1e6f;
  ExpectError(MakeTensor({6}, data, v1::F16), "element 2 is Inf");
}

TEST(TensorCodecTest, DTypeSizes) {
  EXPECT_EQ(DTypeSize(v1::F32), 4);
  EXPECT_EQ(DTypeSize(v1::F16), 2);
  EXPECT_EQ(DTypeSize(v1::BF16), 2);
  EXPECT_EQ(DTypeSize(v1::DTYPE_UNSPECIFIED), 0);
  EXPECT_EQ(DTypeSize(static_cast<v1::DType>(9)), 0);
}

}  // namespace
}  // namespace kvsketch
