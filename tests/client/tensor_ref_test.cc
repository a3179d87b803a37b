#include "client/tensor_ref.h"

#include <vector>

#include "client/loadgen/loadgen.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"

namespace kvsketch::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(TensorRefTest, NumElementsAndChecks) {
  EXPECT_EQ(NumElements({2, 3, 4}), 24);
  EXPECT_EQ(NumElements({}), 1);
  EXPECT_EQ(NumElements({2, -1}), -1);
  EXPECT_EQ(NumElements({int64_t{1} << 40, int64_t{1} << 40}), -1);
  std::vector<float> five(5);
  absl::Status s = CheckTensorRef({{2, 3}, five}, "queries");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("queries: shape [2, 3] needs 6"));
}

TEST(TensorRefTest, SliceAxisCutsTokens) {
  // [2 heads, 4 tokens, 2 dims] with element value = 100h + 10t + j.
  std::vector<float> data;
  for (int h = 0; h < 2; ++h) {
    for (int t = 0; t < 4; ++t) {
      for (int j = 0; j < 2; ++j) data.push_back(100 * h + 10 * t + j);
    }
  }
  EXPECT_THAT(SliceAxis({2, 4, 2}, data, 1, 1, 2),
              ElementsAre(10, 11, 20, 21, 110, 111, 120, 121));
  EXPECT_THAT(SliceAxis({2, 4, 2}, data, 0, 1, 1),
              ElementsAre(100, 101, 110, 111, 120, 121, 130, 131));
}

TEST(TensorRefTest, AddDecodeEntryRoundTripsAndRejectsAtomically) {
  v1::DecodeRequest request;
  std::vector<float> k = {1, 2, 3, 4}, q = {0.5f, -0.25f, 2, 8};
  ASSERT_TRUE(AddDecodeEntry("s", 3, {{2, 2}, k}, {{2, 2}, k}, {{2, 2}, q},
                             v1::BF16, &request)
                  .ok());
  ASSERT_EQ(request.entries_size(), 1);
  const v1::DecodeEntry& e = request.entries(0);
  EXPECT_EQ(e.session_id(), "s");
  EXPECT_EQ(e.layer(), 3);
  EXPECT_EQ(e.queries().dtype(), v1::BF16);
  auto decoded = DecodeTensor(e.queries(), "q");
  ASSERT_TRUE(decoded.ok());
  EXPECT_THAT(decoded->shape, ElementsAre(2, 2));
  EXPECT_EQ(decoded->data, q);  // exactly representable in bf16

  std::vector<float> three(3);
  absl::Status bad = AddDecodeEntry("s", 0, {{2, 2}, k}, {{2, 2}, three}, {},
                                    v1::F32, &request);
  EXPECT_THAT(bad.message(), HasSubstr("values"));
  EXPECT_EQ(request.entries_size(), 1);  // untouched on error
}

TEST(TensorRefTest, ResultOutputMapsCodes) {
  v1::DecodeResult failed;
  failed.set_code(5);
  failed.set_message("session 'x' not found");
  auto r = ResultOutput(failed, "results[0]");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr("results[0]: session 'x'"));
  v1::DecodeResult empty;
  EXPECT_EQ(ResultOutput(empty, "r").status().code(),
            absl::StatusCode::kFailedPrecondition);
  v1::DecodeResult ok;
  std::vector<float> out = {1.5f, -2};
  EncodeTensor({1, 2}, out, v1::F32, ok.mutable_output());
  auto decoded = ResultOutput(ok, "r");
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->data, out);
}

TEST(TensorRefTest, ParseDType) {
  EXPECT_EQ(*ParseDType("F16"), v1::F16);
  EXPECT_EQ(*ParseDType("bf16"), v1::BF16);
  EXPECT_EQ(*ParseDType("float32"), v1::F32);
  EXPECT_THAT(ParseDType("int8").status().message(),
              HasSubstr("dtype: unknown value 'int8'"));
}

TEST(LoadgenReportTest, JsonIsValidAndEscaped) {
  LoadgenOptions options;
  options.spec = "odd\"spec\\";
  LoadgenReport report;
  report.seconds = 2;
  report.steps = 10;
  report.tokens = 10;
  report.errors["NOT_FOUND"] = 2;
  for (int v : {1'000'000, 2'000'000, 3'000'000}) report.latency_ns.Record(v);
  google::protobuf::Struct parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(
                  ReportToJson(options, report), &parsed)
                  .ok())
      << ReportToJson(options, report);
  EXPECT_EQ(parsed.fields().at("spec").string_value(), "odd\"spec\\");
  EXPECT_EQ(parsed.fields().at("steps_per_second").number_value(), 5);
  EXPECT_EQ(parsed.fields().at("errors_total").number_value(), 2);
  EXPECT_EQ(parsed.fields()
                .at("errors")
                .struct_value()
                .fields()
                .at("NOT_FOUND")
                .number_value(),
            2);
  // Within the histogram's resolution (1/kSubBuckets relative).
  EXPECT_NEAR(parsed.fields()
                  .at("latency_ms")
                  .struct_value()
                  .fields()
                  .at("p50")
                  .number_value(),
              2.0, 2.0 / LatencyHistogram::kSubBuckets);
  EXPECT_THAT(ReportToText(options, report), HasSubstr("NOT_FOUND=2"));
}

}  // namespace
}  // namespace kvsketch::client
