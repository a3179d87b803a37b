// File: tests/server/decode_inline_test.cc
//
// Decode's inline fast path (service_decode.cc): small entries run on the
// gRPC thread, large ones on the pool, and a step may switch from one to the
// other between entries. Whatever the split, every output must match the
// double-precision reference in order, and options are validated.
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/server_test_util.h"

namespace kvsketch::server::testing {
namespace {

using ::testing::HasSubstr;

constexpr double kTol = 2e-5;

// Param: decode_inline_work_limit. 0 = pool only; 5000 = "small" (2-token)
// entries inline, "big" (100-token) ones deferred to the pool mid-step;
// default = everything here inline.
class DecodeInlineTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(DecodeInlineTest, MixedEntriesAnswerInOrderAndMatchReference) {
  ServerOptions options = TestOptions();
  options.decode_inline_work_limit = GetParam();
  TestServer t = StartServer(options);
  const int Hkv = 2, Hq = 4, d = 16, dv = 16;
  std::map<std::string, ReferenceSession> refs;
  uint64_t seed = 77;
  for (const auto& [id, n] :
       std::vector<std::pair<std::string, int>>{{"small", 2}, {"big", 100}}) {
    ASSERT_TRUE(CreateSession(*t.stub, id, MakeConfig(1, Hkv, Hq, d, dv)).ok());
    refs.emplace(id, ReferenceSession(1, Hkv, Hq, d, dv));
    auto k = RandomFloats(Hkv * n * d, ++seed);
    auto v = RandomFloats(Hkv * n * dv, ++seed);
    ASSERT_TRUE(AppendTokens(*t.stub, id, 0, Hkv, n, d, dv, k, v).ok());
    refs.at(id).Append(0, n, k, v);
  }
  grpc::ClientContext ctx;
  auto stream = t.stub->Decode(&ctx);
  constexpr int kSteps = 10;
  // Entry order alternates so that an inline entry follows a deferred one
  // and vice versa; the step after a deferral starts on the pool.
  std::vector<std::vector<std::vector<double>>> want(kSteps);
  std::vector<std::vector<int64_t>> want_tokens(kSteps);
  for (int step = 0; step < kSteps; ++step) {
    v1::DecodeRequest req;
    req.set_step_id(step);
    const std::vector<std::string> order =
        step % 2 == 0 ? std::vector<std::string>{"small", "big", "small"}
                      : std::vector<std::string>{"big", "small", "big"};
    for (const std::string& id : order) {
      auto k = RandomFloats(Hkv * d, ++seed);
      auto v = RandomFloats(Hkv * dv, ++seed);
      auto q = RandomFloats(Hq * d, ++seed);
      v1::DecodeEntry* e = req.add_entries();
      e->set_session_id(id);
      *e->mutable_keys() = MakeTensor({Hkv, d}, k);
      *e->mutable_values() = MakeTensor({Hkv, dv}, v);
      *e->mutable_queries() = MakeTensor({Hq, 1, d}, q);
      refs.at(id).Append(0, 1, k, v);
      want[step].push_back(refs.at(id).Attend(0, 1, q, 1));
      want_tokens[step].push_back(refs.at(id).tokens(0));
    }
    // A failing entry in the middle of the work: answered in place.
    v1::DecodeEntry* bad = req.add_entries();
    bad->set_session_id("small");
    *bad->mutable_queries() = MakeTensor({Hq, 1, d + 1}, RandomFloats(Hq, 1));
    ASSERT_TRUE(stream->Write(req));
  }
  stream->WritesDone();
  for (int step = 0; step < kSteps; ++step) {
    v1::DecodeResponse resp;
    ASSERT_TRUE(stream->Read(&resp)) << step;
    EXPECT_EQ(resp.step_id(), static_cast<uint64_t>(step));
    ASSERT_EQ(resp.results_size(), 4);
    for (int i = 0; i < 3; ++i) {
      const v1::DecodeResult& r = resp.results(i);
      ASSERT_EQ(r.code(), 0) << r.message();
      EXPECT_EQ(r.num_tokens(), want_tokens[step][i]);
      EXPECT_LT(MaxAbsDiff(TensorFloats(r.output()), want[step][i]), kTol)
          << "step " << step << " entry " << i;
    }
    EXPECT_EQ(resp.results(3).code(),
              static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
    EXPECT_THAT(resp.results(3).message(), HasSubstr("entries[3].queries"));
  }
  v1::DecodeResponse extra;
  EXPECT_FALSE(stream->Read(&extra));
  EXPECT_TRUE(stream->Finish().ok());
}

INSTANTIATE_TEST_SUITE_P(
    WorkLimits, DecodeInlineTest,
    ::testing::Values(int64_t{0}, int64_t{5000},
                      ServerOptions{}.decode_inline_work_limit),
    [](const ::testing::TestParamInfo<int64_t>& p) {
      return absl::StrCat("limit_", p.param);
    });

TEST(DecodeInlineOptionsTest, NegativeLimitRejected) {
  ServerOptions options = TestOptions();
  options.decode_inline_work_limit = -1;
  auto server = Server::Start(options);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(server.status().message()),
              HasSubstr("decode_inline_work_limit"));
}

}  // namespace
}  // namespace kvsketch::server::testing
