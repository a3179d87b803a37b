// The client library against an in-process kvsketch server: every RPC's
// results are checked against the double-precision reference.
#include "client/attention_client.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/util/half.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/client/test_server.h"
#include "tests/client/test_util.h"
#include "tests/core/testing/reference_attention.h"

namespace kvsketch::client {
namespace {

using ::kvsketch::testing::ConcatTokens;
using ::kvsketch::testing::MaxAbsDiff;
using ::kvsketch::testing::MultiHeadReference;
using ::kvsketch::testing::RandomNormal;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int kLayers = 2;
constexpr int kKvHeads = 2;
constexpr int kQueryHeads = 4;
constexpr int kDim = 16;
constexpr int kValueDim = 8;
const double kScale = 1.0 / std::sqrt(static_cast<double>(kDim));
// f32 end to end: float accumulation over a few dozen tokens.
constexpr double kTol = 2e-5;

class AttentionClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = testing::StartTestServer();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = AttentionClient::Connect(testing::LoopbackAddress(*server_));
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(5)).IgnoreError();
  }

  v1::SessionConfig Config() const {
    v1::SessionConfig c;
    c.set_num_layers(kLayers);
    c.set_num_kv_heads(kKvHeads);
    c.set_num_query_heads(kQueryHeads);
    c.set_head_dim(kDim);
    c.set_value_dim(kValueDim);
    c.set_spec("exact");
    return c;
  }

  std::string NewSession() {
    auto info = client_->CreateSession(Config());
    EXPECT_TRUE(info.ok()) << info.status();
    return info.ok() ? info->session_id() : "";
  }

  std::unique_ptr<server::Server> server_;
  std::unique_ptr<AttentionClient> client_;
};

TEST(FromGrpcStatusTest, KeepsCodeAndMessage) {
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  absl::Status s =
      FromGrpcStatus(grpc::Status(grpc::StatusCode::NOT_FOUND, "no such"));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "no such");
  EXPECT_EQ(
      FromGrpcStatus(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "full"))
          .code(),
      absl::StatusCode::kResourceExhausted);
}

TEST_F(AttentionClientTest, LifecycleAndPagedListing) {
  auto a = client_->CreateSession(Config(), "client-test-a");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->session_id(), "client-test-a");
  EXPECT_EQ(a->config().num_query_heads(), kQueryHeads);
  EXPECT_EQ(a->config().value_dim(), kValueDim);
  EXPECT_NEAR(a->config().scale(), kScale, 1e-7);
  EXPECT_THAT(a->tokens_per_layer(), ElementsAre(0, 0));

  auto dup = client_->CreateSession(Config(), "client-test-a");
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kAlreadyExists);

  std::vector<std::string> ids = {"client-test-a"};
  for (int i = 0; i < 4; ++i) ids.push_back(NewSession());
  std::sort(ids.begin(), ids.end());
  // Page size 2 forces three pages for five sessions.
  auto listed = client_->ListSessions(/*page_size=*/2);
  ASSERT_TRUE(listed.ok()) << listed.status();
  std::vector<std::string> got;
  for (const auto& s : *listed) got.push_back(s.session_id());
  EXPECT_EQ(got, ids);

  ASSERT_TRUE(client_->DeleteSession("client-test-a").ok());
  auto gone = client_->GetSession("client-test-a");
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->DeleteSession("client-test-a").code(),
            absl::StatusCode::kNotFound);
  auto after = client_->ListSessions();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->size(), 4u);
}

TEST_F(AttentionClientTest, ChunkedAppendThenAttendMatchesReference) {
  const std::string id = NewSession();
  constexpr int64_t kTokens = 30;
  std::vector<float> k = RandomNormal(1, kKvHeads * kTokens * kDim);
  std::vector<float> v = RandomNormal(2, kKvHeads * kTokens * kValueDim);
  std::vector<std::pair<int64_t, int64_t>> progress;
  AppendOptions options;
  options.chunk_tokens = 7;  // 5 messages: 7+7+7+7+2
  options.progress = [&](int64_t sent, int64_t total) {
    progress.emplace_back(sent, total);
  };
  auto appended =
      client_->AppendTokens(id, /*layer=*/1, {{kKvHeads, kTokens, kDim}, k},
                            {{kKvHeads, kTokens, kValueDim}, v}, options);
  ASSERT_TRUE(appended.ok()) << appended.status();
  EXPECT_EQ(appended->tokens_appended(), kTokens);
  EXPECT_THAT(appended->tokens_per_layer(), ElementsAre(0, kTokens));
  EXPECT_EQ(progress.size(), 5u);
  EXPECT_EQ(progress.back(), std::make_pair(kTokens, kTokens));

  std::vector<float> q = RandomNormal(3, kQueryHeads * kDim);
  auto result = client_->Attend(id, 1, {}, {}, {{kQueryHeads, 1, kDim}, q});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->output.shape, ElementsAre(kQueryHeads, 1, kValueDim));
  EXPECT_EQ(result->num_tokens, kTokens);
  std::vector<double> ref = MultiHeadReference(
      q, kQueryHeads, 1, k, v, kKvHeads, kTokens, kDim, kValueDim, kScale);
  EXPECT_LT(MaxAbsDiff(result->output.data, ref), kTol);
}

TEST_F(AttentionClientTest, AllLayersAppendInHalfPrecision) {
  const std::string id = NewSession();
  constexpr int64_t kTokens = 12;
  const int64_t per_layer_k = kKvHeads * kTokens * kDim;
  const int64_t per_layer_v = kKvHeads * kTokens * kValueDim;
  std::vector<float> k = RandomNormal(4, kLayers * per_layer_k);
  std::vector<float> v = RandomNormal(5, kLayers * per_layer_v);
  AppendOptions options;
  options.dtype = v1::F16;
  options.chunk_tokens = 5;
  auto appended = client_->AppendTokens(
      id, AttentionClient::kAllLayers, {{kLayers, kKvHeads, kTokens, kDim}, k},
      {{kLayers, kKvHeads, kTokens, kValueDim}, v}, options);
  ASSERT_TRUE(appended.ok()) << appended.status();
  EXPECT_THAT(appended->tokens_per_layer(), ElementsAre(kTokens, kTokens));

  // The server sees the f16-rounded values; the reference uses them too.
  for (float& x : k) x = HalfToFloat(FloatToHalf(x));
  for (float& x : v) x = HalfToFloat(FloatToHalf(x));
  std::vector<float> q = RandomNormal(6, kQueryHeads * kDim);
  for (int layer = 0; layer < kLayers; ++layer) {
    auto result = client_->Attend(id, layer, {}, {}, {{kQueryHeads, kDim}, q});
    ASSERT_TRUE(result.ok()) << result.status();
    std::vector<double> ref = MultiHeadReference(
        q, kQueryHeads, 1,
        absl::MakeConstSpan(k).subspan(layer * per_layer_k, per_layer_k),
        absl::MakeConstSpan(v).subspan(layer * per_layer_v, per_layer_v),
        kKvHeads, kTokens, kDim, kValueDim, kScale);
    EXPECT_LT(MaxAbsDiff(result->output.data, ref), kTol) << layer;
  }
}

TEST_F(AttentionClientTest, AttendWithNewTokensIsCausal) {
  const std::string id = NewSession();
  constexpr int64_t kPrev = 9, kNew = 3;
  std::vector<float> k0 = RandomNormal(7, kKvHeads * kPrev * kDim);
  std::vector<float> v0 = RandomNormal(8, kKvHeads * kPrev * kValueDim);
  ASSERT_TRUE(client_
                  ->AppendTokens(id, 0, {{kKvHeads, kPrev, kDim}, k0},
                                 {{kKvHeads, kPrev, kValueDim}, v0}, {})
                  .ok());
  std::vector<float> k1 = RandomNormal(9, kKvHeads * kNew * kDim);
  std::vector<float> v1 = RandomNormal(10, kKvHeads * kNew * kValueDim);
  std::vector<float> q = RandomNormal(11, kQueryHeads * kNew * kDim);
  auto result = client_->Attend(id, 0, {{kKvHeads, kNew, kDim}, k1},
                                {{kKvHeads, kNew, kValueDim}, v1},
                                {{kQueryHeads, kNew, kDim}, q});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->num_tokens, kPrev + kNew);
  std::vector<float> k = ConcatTokens(k0, kPrev, k1, kNew, kKvHeads, kDim);
  std::vector<float> v = ConcatTokens(v0, kPrev, v1, kNew, kKvHeads, kValueDim);
  std::vector<double> ref =
      MultiHeadReference(q, kQueryHeads, kNew, k, v, kKvHeads, kPrev + kNew,
                         kDim, kValueDim, kScale, /*causal_new=*/kNew);
  EXPECT_LT(MaxAbsDiff(result->output.data, ref), kTol);
}

TEST_F(AttentionClientTest, PrefillMatchesCausalReference) {
  const std::string id = NewSession();
  constexpr int64_t kT = 20;
  std::vector<float> q = RandomNormal(12, kQueryHeads * kT * kDim);
  std::vector<float> k = RandomNormal(13, kKvHeads * kT * kDim);
  std::vector<float> v = RandomNormal(14, kKvHeads * kT * kValueDim);
  auto result = client_->Prefill(id, 1, {{kQueryHeads, kT, kDim}, q},
                                 {{kKvHeads, kT, kDim}, k},
                                 {{kKvHeads, kT, kValueDim}, v});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->num_tokens, kT);
  EXPECT_THAT(result->output.shape, ElementsAre(kQueryHeads, kT, kValueDim));
  std::vector<double> ref =
      MultiHeadReference(q, kQueryHeads, kT, k, v, kKvHeads, kT, kDim,
                         kValueDim, kScale, /*causal_new=*/kT);
  EXPECT_LT(MaxAbsDiff(result->output.data, ref), kTol);
  auto info = client_->GetSession(id);
  ASSERT_TRUE(info.ok());
  EXPECT_THAT(info->tokens_per_layer(), ElementsAre(0, kT));
}

TEST_F(AttentionClientTest, ErrorsComeBackWithCodeAndField) {
  std::vector<float> q(kQueryHeads * kDim, 0.5f);
  auto missing =
      client_->Attend("no-such-session", 0, {}, {}, {{kQueryHeads, kDim}, q});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);

  const std::string id = NewSession();
  // Wrong head count: rejected by the server naming the field.
  std::vector<float> bad_q(3 * kDim, 0.5f);
  auto bad = client_->Attend(id, 0, {}, {}, {{3, kDim}, bad_q});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("queries"));

  // Inconsistent host tensors: rejected before anything is sent.
  std::vector<float> k(kKvHeads * 4 * kDim, 1.0f);
  std::vector<float> v(kKvHeads * 3 * kValueDim, 1.0f);
  auto mismatch = client_->AppendTokens(id, 0, {{kKvHeads, 4, kDim}, k},
                                        {{kKvHeads, 3, kValueDim}, v}, {});
  EXPECT_EQ(mismatch.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(mismatch.status().message(), HasSubstr("values"));
  auto short_buffer = client_->AppendTokens(id, 0, {{kKvHeads, 5, kDim}, k},
                                            {{kKvHeads, 5, kValueDim}, v}, {});
  EXPECT_THAT(short_buffer.status().message(), HasSubstr("keys"));
  auto info = client_->GetSession(id);
  ASSERT_TRUE(info.ok());
  EXPECT_THAT(info->tokens_per_layer(), ElementsAre(0, 0));
}

TEST_F(AttentionClientTest, StreamDeadlineEndsAnIdleStream) {
  // A Decode stream that never sends waits for a response until the
  // deadline set from ClientOptions::stream_timeout expires.
  ClientOptions options;
  options.stream_timeout = absl::Milliseconds(300);
  auto hurried =
      AttentionClient::Connect(testing::LoopbackAddress(*server_), options);
  const std::string id = NewSession();
  auto stream = hurried->OpenDecodeStream(id);
  const absl::Time start = absl::Now();
  auto response = stream->Receive();
  EXPECT_EQ(response.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(250));
  EXPECT_EQ(stream->Finish().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(AttentionClientTest, DecodeStreamPipelinedStepsMatchReference) {
  const std::string a = NewSession();
  const std::string b = NewSession();
  constexpr int kSteps = 6;
  // Host copies of everything appended to layer 0 of each session.
  std::vector<float> ka, va, kb, vb;
  std::vector<std::vector<float>> queries;
  auto stream = client_->OpenDecodeStream(a);
  for (int s = 0; s < kSteps; ++s) {
    v1::DecodeRequest request;
    request.set_step_id(100 + s);
    for (int which = 0; which < 2; ++which) {
      std::vector<float> k =
          RandomNormal(1000 + 10 * s + which, kKvHeads * kDim);
      std::vector<float> v =
          RandomNormal(2000 + 10 * s + which, kKvHeads * kValueDim);
      std::vector<float> q =
          RandomNormal(3000 + 10 * s + which, kQueryHeads * kDim);
      ASSERT_TRUE(AddDecodeEntry(which == 0 ? a : b, 0, {{kKvHeads, kDim}, k},
                                 {{kKvHeads, kValueDim}, v},
                                 {{kQueryHeads, kDim}, q}, v1::F32, &request)
                      .ok());
      queries.push_back(q);
      auto& kall = which == 0 ? ka : kb;
      auto& vall = which == 0 ? va : vb;
      const int64_t n = static_cast<int64_t>(kall.size()) / (kKvHeads * kDim);
      kall = ConcatTokens(kall, n, k, 1, kKvHeads, kDim);
      vall = ConcatTokens(vall, n, v, 1, kKvHeads, kValueDim);
    }
    // A third entry with a wrong key dimension fails alone.
    std::vector<float> bad(kKvHeads * (kDim + 1), 1.0f);
    ASSERT_TRUE(AddDecodeEntry(b, 1, {{kKvHeads, kDim + 1}, bad},
                               {{kKvHeads, kDim + 1}, bad}, {}, v1::F32,
                               &request)
                    .ok());
    ASSERT_TRUE(stream->Send(request).ok());
  }
  // All six steps are in flight before the first Receive.
  for (int s = 0; s < kSteps; ++s) {
    auto response = stream->Receive();
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(response->step_id(), 100u + s);
    ASSERT_EQ(response->results_size(), 3);
    for (int which = 0; which < 2; ++which) {
      const v1::DecodeResult& r = response->results(which);
      ASSERT_EQ(r.code(), 0) << r.message();
      EXPECT_EQ(r.num_tokens(), s + 1);
      auto out = DecodeTensor(r.output(), "output");
      ASSERT_TRUE(out.ok()) << out.status();
      // Token s of this session sees tokens 0..s: the first s+1 of each head.
      const auto& kall = which == 0 ? ka : kb;
      const auto& vall = which == 0 ? va : vb;
      std::vector<float> kp, vp;
      for (int h = 0; h < kKvHeads; ++h) {
        kp.insert(kp.end(), kall.begin() + h * kSteps * kDim,
                  kall.begin() + (h * kSteps + s + 1) * kDim);
        vp.insert(vp.end(), vall.begin() + h * kSteps * kValueDim,
                  vall.begin() + (h * kSteps + s + 1) * kValueDim);
      }
      std::vector<double> ref =
          MultiHeadReference(queries[2 * s + which], kQueryHeads, 1, kp, vp,
                             kKvHeads, s + 1, kDim, kValueDim, kScale);
      EXPECT_LT(MaxAbsDiff(out->data, ref), kTol) << s << " " << which;
    }
    EXPECT_EQ(response->results(2).code(),
              static_cast<int>(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(response->results(2).message(), HasSubstr("keys"));
  }
  ASSERT_TRUE(stream->WritesDone().ok());
  EXPECT_EQ(stream->Receive().status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(stream->Finish().ok());
  auto info = client_->GetSession(b);
  ASSERT_TRUE(info.ok());
  EXPECT_THAT(info->tokens_per_layer(), ElementsAre(kSteps, 0));
}

TEST_F(AttentionClientTest, DecodeEntryWithoutIdUsesRoutingMetadata) {
  // The entry leaves session_id empty: only the stream's x-session-id
  // metadata names the session, so this passes only if it was sent.
  const std::string id = NewSession();
  auto stream = client_->OpenDecodeStream(id);
  v1::DecodeRequest request;
  std::vector<float> k(kKvHeads * kDim, 0.25f), v(kKvHeads * kValueDim, 1.0f);
  ASSERT_TRUE(AddDecodeEntry("", 1, {{kKvHeads, kDim}, k},
                             {{kKvHeads, kValueDim}, v}, {}, v1::F32, &request)
                  .ok());
  ASSERT_TRUE(stream->Send(request).ok());
  auto response = stream->Receive();
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_EQ(response->results_size(), 1);
  EXPECT_EQ(response->results(0).code(), 0) << response->results(0).message();
  EXPECT_TRUE(stream->Finish().ok());
  auto info = client_->GetSession(id);
  ASSERT_TRUE(info.ok());
  EXPECT_THAT(info->tokens_per_layer(), ElementsAre(0, 1));
}

TEST_F(AttentionClientTest, ExportImportRoundTrip) {
  const std::string id = NewSession();
  constexpr int64_t kTokens = 25;
  std::vector<float> k = RandomNormal(20, kKvHeads * kTokens * kDim);
  std::vector<float> v = RandomNormal(21, kKvHeads * kTokens * kValueDim);
  ASSERT_TRUE(client_
                  ->AppendTokens(id, 0, {{kKvHeads, kTokens, kDim}, k},
                                 {{kKvHeads, kTokens, kValueDim}, v}, {})
                  .ok());
  auto blob = client_->ExportSession(id);
  ASSERT_TRUE(blob.ok()) << blob.status();
  EXPECT_EQ(blob->substr(0, 8), "KVSKSNAP");

  // Small chunks exercise the multi-message import path.
  auto copy = client_->ImportSession(*blob, "imported-copy", /*chunk=*/1000);
  ASSERT_TRUE(copy.ok()) << copy.status();
  EXPECT_EQ(copy->session_id(), "imported-copy");
  EXPECT_THAT(copy->tokens_per_layer(), ElementsAre(kTokens, 0));

  std::vector<float> q = RandomNormal(22, kQueryHeads * kDim);
  auto original = client_->Attend(id, 0, {}, {}, {{kQueryHeads, kDim}, q});
  auto imported =
      client_->Attend("imported-copy", 0, {}, {}, {{kQueryHeads, kDim}, q});
  ASSERT_TRUE(original.ok() && imported.ok());
  EXPECT_EQ(original->output.data, imported->output.data);

  // Importing again under the original id collides.
  EXPECT_EQ(client_->ImportSession(*blob).status().code(),
            absl::StatusCode::kAlreadyExists);
  // A flipped byte fails the checksum and creates nothing.
  std::string corrupt = *blob;
  corrupt[corrupt.size() / 2] ^= 0x5a;
  auto bad = client_->ImportSession(corrupt, "corrupt-copy");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(client_->GetSession("corrupt-copy").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->ExportSession("no-such").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvsketch::client
