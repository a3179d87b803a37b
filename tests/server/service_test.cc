// File: tests/server/service_test.cc
//
// Every RPC's happy path end to end through a real gRPC channel, outputs
// checked against the double-precision ReferenceSession.
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "tests/server/server_test_util.h"

namespace kvsketch::server::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;

// Exact attention in f32 vs the double reference: inputs in [-1, 1], short
// sequences, so 1e-5 absolute is loose enough for float rounding and tight
// enough to catch any wrong head, token or scale.
constexpr double kTol = 1e-5;

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { t_ = StartServer(TestOptions()); }
  void TearDown() override {
    ASSERT_TRUE(t_.server->Shutdown(absl::Seconds(5)).ok());
  }
  v1::Attention::Stub& stub() { return *t_.stub; }
  TestServer t_;
};

TEST_F(ServiceTest, CreateGetListDelete) {
  v1::SessionInfo info;
  v1::SessionConfig c = MakeConfig(3, 2, 0, 16, 0, "");
  ASSERT_TRUE(CreateSession(stub(), "alpha", c, &info).ok());
  EXPECT_EQ(info.session_id(), "alpha");
  // Defaults filled in and the spec canonical.
  EXPECT_EQ(info.config().num_query_heads(), 2);
  EXPECT_EQ(info.config().value_dim(), 16);
  EXPECT_FLOAT_EQ(info.config().scale(), 0.25f);
  EXPECT_EQ(info.config().max_tokens(), TestOptions().max_tokens_per_session);
  ASSERT_EQ(info.canonical_layer_specs_size(), 3);
  EXPECT_EQ(info.canonical_layer_specs(0), "exact:store=f32");
  EXPECT_THAT(info.tokens_per_layer(), ::testing::ElementsAre(0, 0, 0));
  EXPECT_GT(info.created_unix_micros(), 0);

  // A server-made id: 32 hex digits.
  v1::SessionInfo random;
  ASSERT_TRUE(CreateSession(stub(), "", c, &random).ok());
  EXPECT_THAT(random.session_id(), MatchesRegex("[0-9a-f]{32}"));

  v1::SessionInfo got;
  ASSERT_TRUE(GetSession(stub(), "alpha", &got).ok());
  EXPECT_EQ(got.config().head_dim(), 16);

  // Pagination in id order.
  for (const char* id : {"b1", "b2", "b3"}) {
    ASSERT_TRUE(CreateSession(stub(), id, c).ok());
  }
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    grpc::ClientContext ctx;
    v1::ListSessionsRequest req;
    req.set_page_size(2);
    req.set_page_token(token);
    v1::ListSessionsResponse resp;
    ASSERT_TRUE(stub().ListSessions(&ctx, req, &resp).ok());
    EXPECT_LE(resp.sessions_size(), 2);
    for (const auto& s : resp.sessions()) seen.push_back(s.session_id());
    token = resp.next_page_token();
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  std::vector<std::string> want = {"alpha", "b1", "b2", "b3",
                                   random.session_id()};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(seen, want);

  grpc::ClientContext dctx;
  v1::DeleteSessionRequest dreq;
  dreq.set_session_id("alpha");
  v1::DeleteSessionResponse dresp;
  ASSERT_TRUE(stub().DeleteSession(&dctx, dreq, &dresp).ok());
  grpc::Status s = GetSession(stub(), "alpha", &got);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("alpha"));
}

TEST_F(ServiceTest, AppendThenAttendMatchesReferenceWithGqa) {
  const int L = 2, Hkv = 2, Hq = 6, d = 16, dv = 8;
  ASSERT_TRUE(CreateSession(stub(), "s", MakeConfig(L, Hkv, Hq, d, dv)).ok());
  ReferenceSession ref(L, Hkv, Hq, d, dv);

  // One stream: 5 tokens to layer 1, then 7 tokens to every layer.
  grpc::ClientContext ctx;
  v1::AppendResponse resp;
  auto w = stub().Append(&ctx, &resp);
  auto k1 = RandomFloats(Hkv * 5 * d, 10), v1_ = RandomFloats(Hkv * 5 * dv, 11);
  v1::AppendRequest r1;
  r1.set_session_id("s");
  r1.set_layer(1);
  *r1.mutable_keys() = MakeTensor({Hkv, 5, d}, k1);
  *r1.mutable_values() = MakeTensor({Hkv, 5, dv}, v1_);
  ASSERT_TRUE(w->Write(r1));
  ref.Append(1, 5, k1, v1_);
  auto k2 = RandomFloats(L * Hkv * 7 * d, 12),
       v2 = RandomFloats(L * Hkv * 7 * dv, 13);
  v1::AppendRequest r2;  // session id left empty: the stream's
  r2.set_all_layers(true);
  *r2.mutable_keys() = MakeTensor({L, Hkv, 7, d}, k2);
  *r2.mutable_values() = MakeTensor({L, Hkv, 7, dv}, v2);
  ASSERT_TRUE(w->Write(r2));
  for (int l = 0; l < L; ++l) {
    ref.Append(l, 7, absl::MakeSpan(k2).subspan(l * Hkv * 7 * d, Hkv * 7 * d),
               absl::MakeSpan(v2).subspan(l * Hkv * 7 * dv, Hkv * 7 * dv));
  }
  w->WritesDone();
  ASSERT_TRUE(w->Finish().ok());
  EXPECT_EQ(resp.tokens_appended(), 5 + 2 * 7);
  EXPECT_THAT(resp.tokens_per_layer(), ::testing::ElementsAre(7, 12));
  EXPECT_GT(resp.state_bytes(), 0);

  for (int layer = 0; layer < L; ++layer) {
    auto q = RandomFloats(Hq * 3 * d, 20 + layer);
    std::vector<float> out;
    ASSERT_TRUE(AttendQueries(stub(), "s", layer, Hq, 3, d, q, &out).ok());
    EXPECT_LT(MaxAbsDiff(out, ref.Attend(layer, 3, q)), kTol) << layer;
  }
}

TEST_F(ServiceTest, AttendWithNewTokenIsCausalAndRank2Works) {
  const int Hkv = 1, Hq = 2, d = 8, dv = 4;
  ASSERT_TRUE(CreateSession(stub(), "s", MakeConfig(1, Hkv, Hq, d, dv)).ok());
  ReferenceSession ref(1, Hkv, Hq, d, dv);
  for (int step = 0; step < 4; ++step) {
    auto k = RandomFloats(Hkv * d, 100 + step),
         v = RandomFloats(Hkv * dv, 200 + step);
    auto q = RandomFloats(Hq * d, 300 + step);
    grpc::ClientContext ctx;
    v1::AttendRequest req;
    req.set_session_id("s");
    *req.mutable_keys() = MakeTensor({Hkv, d}, k);  // rank 2: T = 1
    *req.mutable_values() = MakeTensor({Hkv, dv}, v);
    *req.mutable_queries() = MakeTensor({Hq, d}, q);
    v1::AttendResponse resp;
    ASSERT_TRUE(stub().Attend(&ctx, req, &resp).ok());
    ref.Append(0, 1, k, v);
    EXPECT_EQ(resp.num_tokens(), step + 1);
    EXPECT_THAT(resp.output().shape(), ::testing::ElementsAre(Hq, 1, dv));
    EXPECT_EQ(resp.output().dtype(), v1::F32);
    EXPECT_LT(MaxAbsDiff(TensorFloats(resp.output()), ref.Attend(0, 1, q, 1)),
              kTol);
  }
}

class DtypeTest : public ServiceTest,
                  public ::testing::WithParamInterface<v1::DType> {};

TEST_P(DtypeTest, HalfInputsAttendTheRoundedValues) {
  const v1::DType dtype = GetParam();
  const int Hkv = 2, Hq = 4, d = 8, dv = 8, T = 9;
  ASSERT_TRUE(CreateSession(stub(), "s", MakeConfig(1, Hkv, Hq, d, dv)).ok());
  auto k = RandomFloats(Hkv * T * d, 1), v = RandomFloats(Hkv * T * dv, 2);
  ASSERT_TRUE(
      AppendTokens(stub(), "s", 0, Hkv, T, d, dv, k, v, nullptr, dtype).ok());
  ReferenceSession ref(1, Hkv, Hq, d, dv);
  ref.Append(0, T, RoundTo(k, dtype), RoundTo(v, dtype));
  auto q = RandomFloats(Hq * 2 * d, 3);
  grpc::ClientContext ctx;
  v1::AttendRequest req;
  req.set_session_id("s");
  *req.mutable_queries() = MakeTensor({Hq, 2, d}, q, dtype);
  v1::AttendResponse resp;
  ASSERT_TRUE(stub().Attend(&ctx, req, &resp).ok());
  EXPECT_LT(MaxAbsDiff(TensorFloats(resp.output()),
                       ref.Attend(0, 2, RoundTo(q, dtype))),
            kTol);
}

INSTANTIATE_TEST_SUITE_P(HalfTypes, DtypeTest,
                         ::testing::Values(v1::F16, v1::BF16));

TEST_F(ServiceTest, PrefillIsCausalAndIngests) {
  const int Hkv = 2, Hq = 4, d = 8, dv = 8, T = 6;
  ASSERT_TRUE(CreateSession(stub(), "s", MakeConfig(2, Hkv, Hq, d, dv)).ok());
  ReferenceSession ref(2, Hkv, Hq, d, dv);
  // Two existing tokens first, so the causal mask includes history.
  auto k0 = RandomFloats(Hkv * 2 * d, 5), v0 = RandomFloats(Hkv * 2 * dv, 6);
  ASSERT_TRUE(AppendTokens(stub(), "s", 1, Hkv, 2, d, dv, k0, v0).ok());
  ref.Append(1, 2, k0, v0);
  auto q = RandomFloats(Hq * T * d, 7), k = RandomFloats(Hkv * T * d, 8),
       v = RandomFloats(Hkv * T * dv, 9);
  grpc::ClientContext ctx;
  v1::PrefillRequest req;
  req.set_session_id("s");
  req.set_layer(1);
  *req.mutable_queries() = MakeTensor({Hq, T, d}, q);
  *req.mutable_keys() = MakeTensor({Hkv, T, d}, k);
  *req.mutable_values() = MakeTensor({Hkv, T, dv}, v);
  v1::PrefillResponse resp;
  ASSERT_TRUE(stub().Prefill(&ctx, req, &resp).ok());
  ref.Append(1, T, k, v);
  EXPECT_EQ(resp.num_tokens(), 2 + T);
  EXPECT_THAT(resp.output().shape(), ::testing::ElementsAre(Hq, T, dv));
  EXPECT_LT(MaxAbsDiff(TensorFloats(resp.output()), ref.Attend(1, T, q, T)),
            kTol);
  v1::SessionInfo info;
  ASSERT_TRUE(GetSession(stub(), "s", &info).ok());
  EXPECT_THAT(info.tokens_per_layer(), ::testing::ElementsAre(0, 2 + T));
}

TEST_F(ServiceTest, DecodeStreamsManySessionsInOrder) {
  const int L = 2, Hkv = 2, Hq = 4, d = 8, dv = 8;
  const std::vector<std::string> ids = {"s0", "s1", "s2"};
  std::map<std::string, ReferenceSession> refs;
  for (const auto& id : ids) {
    ASSERT_TRUE(CreateSession(stub(), id, MakeConfig(L, Hkv, Hq, d, dv)).ok());
    refs.emplace(id, ReferenceSession(L, Hkv, Hq, d, dv));
  }
  grpc::ClientContext ctx;
  auto stream = stub().Decode(&ctx);
  constexpr int kSteps = 12;
  // The expected output of every (step, entry), computed as the client
  // sends: the server must apply steps in order for these to match.
  std::vector<std::vector<std::vector<double>>> want(kSteps);
  std::vector<std::vector<int64_t>> want_tokens(kSteps);
  uint64_t seed = 1000;
  for (int step = 0; step < kSteps; ++step) {
    v1::DecodeRequest req;
    req.set_step_id(500 + step);
    for (const auto& id : ids) {
      for (int layer = 0; layer < L; ++layer) {
        // Every third step of s1 carries 3 causal tokens; s2 layer 1 only
        // appends on odd steps.
        const int64_t T = (id == "s1" && step % 3 == 0) ? 3 : 1;
        const bool queries = !(id == "s2" && layer == 1 && step % 2 == 1);
        auto k = RandomFloats(Hkv * T * d, ++seed);
        auto v = RandomFloats(Hkv * T * dv, ++seed);
        auto q = RandomFloats(Hq * T * d, ++seed);
        v1::DecodeEntry* e = req.add_entries();
        e->set_session_id(id);
        e->set_layer(layer);
        *e->mutable_keys() = MakeTensor({Hkv, T, d}, k);
        *e->mutable_values() = MakeTensor({Hkv, T, dv}, v);
        refs.at(id).Append(layer, T, k, v);
        if (queries) {
          *e->mutable_queries() = MakeTensor({Hq, T, d}, q);
          want[step].push_back(refs.at(id).Attend(layer, T, q, T));
        } else {
          want[step].push_back({});
        }
        want_tokens[step].push_back(refs.at(id).tokens(layer));
      }
    }
    // One bad entry per step: unknown session; the others are unaffected.
    v1::DecodeEntry* bad = req.add_entries();
    bad->set_session_id("nope");
    *bad->mutable_queries() = MakeTensor({Hq, 1, d}, RandomFloats(Hq * d, 1));
    ASSERT_TRUE(stream->Write(req));
  }
  stream->WritesDone();
  for (int step = 0; step < kSteps; ++step) {
    v1::DecodeResponse resp;
    ASSERT_TRUE(stream->Read(&resp)) << step;
    EXPECT_EQ(resp.step_id(), 500u + step);
    ASSERT_EQ(resp.results_size(), static_cast<int>(want[step].size()) + 1);
    for (size_t i = 0; i < want[step].size(); ++i) {
      const v1::DecodeResult& r = resp.results(i);
      ASSERT_EQ(r.code(), 0) << r.message();
      EXPECT_EQ(r.num_tokens(), want_tokens[step][i]);
      if (want[step][i].empty()) {
        EXPECT_FALSE(r.has_output());
      } else {
        EXPECT_LT(MaxAbsDiff(TensorFloats(r.output()), want[step][i]), kTol)
            << "step " << step << " entry " << i;
      }
    }
    const v1::DecodeResult& b = resp.results(want[step].size());
    EXPECT_EQ(b.code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
    EXPECT_THAT(
        b.message(),
        HasSubstr(absl::StrCat("entries[", want[step].size(), "].session_id")));
  }
  v1::DecodeResponse extra;
  EXPECT_FALSE(stream->Read(&extra));
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(ServiceTest, SessionIdFromMetadata) {
  ASSERT_TRUE(CreateSession(stub(), "meta", MakeConfig(1, 1, 1, 4, 4)).ok());
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("x-session-id", "meta");
    v1::GetSessionRequest req;  // no id in the body
    v1::GetSessionResponse resp;
    ASSERT_TRUE(stub().GetSession(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.session().session_id(), "meta");
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("x-session-id", "other");
    v1::GetSessionRequest req;
    req.set_session_id("meta");
    v1::GetSessionResponse resp;
    grpc::Status s = stub().GetSession(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("session_id"));
    EXPECT_THAT(s.error_message(), HasSubstr("x-session-id"));
  }
}

// Export -> Import under a new id: same tokens, same bytes, and bit-identical
// outputs for the same query.
TEST_F(ServiceTest, ExportImportRoundTripIsBitExact) {
  const int Hkv = 2, Hq = 4, d = 16, dv = 16, T = 40;
  ASSERT_TRUE(CreateSession(stub(), "src", MakeConfig(2, Hkv, Hq, d, dv)).ok());
  for (int layer = 0; layer < 2; ++layer) {
    ASSERT_TRUE(AppendTokens(stub(), "src", layer, Hkv, T, d, dv,
                             RandomFloats(Hkv * T * d, 1 + layer),
                             RandomFloats(Hkv * T * dv, 3 + layer))
                    .ok());
  }
  std::string blob;
  {
    grpc::ClientContext ctx;
    v1::ExportSessionRequest req;
    req.set_session_id("src");
    auto reader = stub().ExportSession(&ctx, req);
    v1::SnapshotChunk chunk;
    int64_t total = -1;
    while (reader->Read(&chunk)) {
      if (total < 0) total = chunk.total_bytes();
      EXPECT_LE(chunk.data().size(), size_t{1} << 20);
      blob += chunk.data();
    }
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_EQ(total, static_cast<int64_t>(blob.size()));
  }
  {
    grpc::ClientContext ctx;
    v1::ImportSessionResponse resp;
    auto writer = stub().ImportSession(&ctx, &resp);
    // Several chunks; the id only on the first.
    const size_t chunk = blob.size() / 3 + 1;
    for (size_t off = 0; off < blob.size(); off += chunk) {
      v1::ImportSessionRequest req;
      if (off == 0) req.set_session_id("dst");
      req.set_data(blob.substr(off, chunk));
      ASSERT_TRUE(writer->Write(req));
    }
    writer->WritesDone();
    ASSERT_TRUE(writer->Finish().ok());
    EXPECT_EQ(resp.session().session_id(), "dst");
  }
  v1::SessionInfo a, b;
  ASSERT_TRUE(GetSession(stub(), "src", &a).ok());
  ASSERT_TRUE(GetSession(stub(), "dst", &b).ok());
  EXPECT_THAT(b.tokens_per_layer(), ::testing::ElementsAre(T, T));
  // MemoryBytes counts allocated capacity, which depends on how the state
  // grew (appends vs one load), so only the order of magnitude must agree.
  EXPECT_GT(b.state_bytes(), a.state_bytes() / 2);
  EXPECT_LT(b.state_bytes(), a.state_bytes() * 2);
  EXPECT_EQ(a.canonical_layer_specs(1), b.canonical_layer_specs(1));
  auto q = RandomFloats(Hq * d, 77);
  for (int layer = 0; layer < 2; ++layer) {
    std::vector<float> oa, ob;
    ASSERT_TRUE(AttendQueries(stub(), "src", layer, Hq, 1, d, q, &oa).ok());
    ASSERT_TRUE(AttendQueries(stub(), "dst", layer, Hq, 1, d, q, &ob).ok());
    ASSERT_EQ(oa.size(), ob.size());
    EXPECT_EQ(std::memcmp(oa.data(), ob.data(), oa.size() * 4), 0);
  }
  // The stored id is the default: importing again without an id collides.
  grpc::ClientContext ctx;
  v1::ImportSessionResponse resp;
  auto writer = stub().ImportSession(&ctx, &resp);
  v1::ImportSessionRequest req;
  req.set_data(blob);
  ASSERT_TRUE(writer->Write(req));
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(s.error_message(), HasSubstr("'src' already exists"));
}

// Per-layer kinds: layer 0 exact, layer 1 a sketch whose exact window covers
// every token (so it must match the reference too). Metrics are labelled by
// the kind of the layer they concern, and export/import keeps both layers.
TEST_F(ServiceTest, MixedApproximatorKindsPerLayer) {
  const int L = 2, Hkv = 2, Hq = 4, d = 8, dv = 8, T = 20;
  auto cfg = MakeConfig(L, Hkv, Hq, d, dv);
  (*cfg.mutable_layer_specs())[1] = "sketch:window=64";
  v1::SessionInfo info;
  ASSERT_TRUE(CreateSession(stub(), "mixed", cfg, &info).ok());
  ASSERT_EQ(info.canonical_layer_specs_size(), 2);
  EXPECT_EQ(info.canonical_layer_specs(0), "exact:store=f32");
  EXPECT_THAT(info.canonical_layer_specs(1), ::testing::StartsWith("sketch:"));
  EXPECT_THAT(info.canonical_layer_specs(1), HasSubstr("window=64"));
  ReferenceSession ref(L, Hkv, Hq, d, dv);
  for (int layer = 0; layer < L; ++layer) {
    auto k = RandomFloats(Hkv * T * d, 30 + layer);
    auto v = RandomFloats(Hkv * T * dv, 40 + layer);
    ASSERT_TRUE(AppendTokens(stub(), "mixed", layer, Hkv, T, d, dv, k, v).ok());
    ref.Append(layer, T, k, v);
  }
  auto q = RandomFloats(Hq * d, 50);
  for (int layer = 0; layer < L; ++layer) {
    std::vector<float> out;
    ASSERT_TRUE(AttendQueries(stub(), "mixed", layer, Hq, 1, d, q, &out).ok());
    EXPECT_LT(MaxAbsDiff(out, ref.Attend(layer, 1, q)),
              layer == 0 ? kTol : 1e-4)
        << layer;
  }
  ASSERT_TRUE(GetSession(stub(), "mixed", &info).ok());
  const std::string m = t_.server->ScrapeMetrics();
  EXPECT_EQ(MetricValue(m,
                        "kvsketch_tokens_appended_total{approximator="
                        "\"exact\"}"),
            T);
  EXPECT_EQ(MetricValue(m,
                        "kvsketch_tokens_appended_total{approximator="
                        "\"sketch\"}"),
            T);
  EXPECT_EQ(MetricValue(m, "kvsketch_queries_total{approximator=\"sketch\"}"),
            Hq);
  const double exact_bytes =
      MetricValue(m, "kvsketch_state_bytes{approximator=\"exact\"}");
  const double sketch_bytes =
      MetricValue(m, "kvsketch_state_bytes{approximator=\"sketch\"}");
  EXPECT_GT(exact_bytes, 0);
  EXPECT_GT(sketch_bytes, 0);
  EXPECT_EQ(exact_bytes + sketch_bytes,
            static_cast<double>(info.state_bytes()));
}

// Health: "" and the service are SERVING while up. The health proto is not
// installed, so the call is made with the generic stub on raw bytes:
// HealthCheckRequest{service} is field 1 (string); the response
// HealthCheckResponse{status: SERVING} is the bytes 08 01.
grpc::Status HealthCheck(grpc::Channel* channel, const std::string& service,
                         std::string* response_bytes) {
  grpc::GenericStub generic(channel->shared_from_this());
  std::string req_bytes;
  if (!service.empty()) {
    req_bytes.push_back(0x0a);
    req_bytes.push_back(static_cast<char>(service.size()));
    req_bytes += service;
  }
  grpc::Slice slice(req_bytes);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::ClientContext ctx;
  absl::Notification done;
  grpc::Status status;
  generic.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(),
                    &request, &response, [&](grpc::Status s) {
                      status = std::move(s);
                      done.Notify();
                    });
  done.WaitForNotification();
  std::vector<grpc::Slice> slices;
  if (status.ok() && response.Dump(&slices).ok()) {
    for (const auto& sl : slices) {
      response_bytes->append(reinterpret_cast<const char*>(sl.begin()),
                             sl.size());
    }
  }
  return status;
}

TEST_F(ServiceTest, HealthServiceReportsServing) {
  for (const std::string service : {"", "kvsketch.v1.Attention"}) {
    std::string bytes;
    grpc::Status s = HealthCheck(t_.channel.get(), service, &bytes);
    ASSERT_TRUE(s.ok()) << StatusText(s);
    EXPECT_EQ(bytes, std::string("\x08\x01", 2)) << service;
  }
}

TEST_F(ServiceTest, DecodeCancelledByClientLeavesServerHealthy) {
  ASSERT_TRUE(CreateSession(stub(), "s", MakeConfig(1, 1, 1, 4, 4)).ok());
  {
    grpc::ClientContext ctx;
    auto stream = stub().Decode(&ctx);
    for (int step = 0; step < 3; ++step) {
      v1::DecodeRequest req;
      req.set_step_id(step);
      auto* e = req.add_entries();
      e->set_session_id("s");
      *e->mutable_keys() = MakeTensor({1, 1, 4}, RandomFloats(4, step));
      *e->mutable_values() = MakeTensor({1, 1, 4}, RandomFloats(4, step + 5));
      ASSERT_TRUE(stream->Write(req));
    }
    v1::DecodeResponse resp;
    ASSERT_TRUE(stream->Read(&resp));
    EXPECT_EQ(resp.step_id(), 0u);
    ctx.TryCancel();
    while (stream->Read(&resp)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  // Steps are applied whole or not at all, in order: the token count is
  // the number of steps that ran, between the one we saw and all three.
  v1::SessionInfo info;
  ASSERT_TRUE(GetSession(stub(), "s", &info).ok());
  EXPECT_GE(info.tokens_per_layer(0), 1);
  EXPECT_LE(info.tokens_per_layer(0), 3);
  std::vector<float> out;
  EXPECT_TRUE(
      AttendQueries(stub(), "s", 0, 1, 1, 4, RandomFloats(4, 9), &out).ok());
}

TEST(ServerShutdownTest, OpenStreamIsCancelledAfterDrain) {
  TestServer t = StartServer(TestOptions());
  ASSERT_TRUE(CreateSession(*t.stub, "s", MakeConfig(1, 1, 1, 4, 4)).ok());
  grpc::ClientContext ctx;
  auto stream = t.stub->Decode(&ctx);
  v1::DecodeRequest req;
  auto* e = req.add_entries();
  e->set_session_id("s");
  *e->mutable_keys() = MakeTensor({1, 1, 4}, RandomFloats(4, 1));
  *e->mutable_values() = MakeTensor({1, 1, 4}, RandomFloats(4, 2));
  ASSERT_TRUE(stream->Write(req));
  v1::DecodeResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  // The client never half-closes: Shutdown must still return once the
  // drain deadline cancels the stream.
  const absl::Time start = absl::Now();
  ASSERT_TRUE(t.server->Shutdown(absl::Milliseconds(300)).ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  while (stream->Read(&resp)) {
  }
  EXPECT_FALSE(stream->Finish().ok());
  t.server->Wait();  // returns at once after Shutdown
  EXPECT_TRUE(t.server->Shutdown(absl::Seconds(1)).ok());  // idempotent
}

TEST(ServerRestartTest, DataDirRestoresSessionsBitExactly) {
  const std::string dir = ::testing::TempDir() + "/kvsketch_restart_test";
  std::filesystem::remove_all(dir);
  ServerOptions o = TestOptions();
  o.data_dir = dir;
  // The snapshot-only mode (--wal=false); the write-ahead log's restarts
  // are tested in durability_server_test.cc.
  o.wal = false;
  const int Hkv = 2, Hq = 2, d = 8, dv = 8;
  auto q = RandomFloats(Hq * d, 9);
  std::vector<float> before;
  {
    TestServer t = StartServer(o);
    ASSERT_TRUE(CreateSession(*t.stub, "keep",
                              MakeConfig(1, Hkv, Hq, d, dv, "exact:store=f16"))
                    .ok());
    ASSERT_TRUE(CreateSession(*t.stub, "gone", MakeConfig(1, 1, 1, 4, 4)).ok());
    ASSERT_TRUE(AppendTokens(*t.stub, "keep", 0, Hkv, 30, d, dv,
                             RandomFloats(Hkv * 30 * d, 1),
                             RandomFloats(Hkv * 30 * dv, 2))
                    .ok());
    ASSERT_TRUE(AttendQueries(*t.stub, "keep", 0, Hq, 1, d, q, &before).ok());
    ASSERT_TRUE(t.server->Shutdown(absl::Seconds(5)).ok());
  }
  EXPECT_TRUE(std::filesystem::exists(dir + "/sessions/keep.kvss"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/sessions/gone.kvss"));
  {
    TestServer t = StartServer(o);
    v1::SessionInfo info;
    ASSERT_TRUE(GetSession(*t.stub, "keep", &info).ok());
    EXPECT_THAT(info.tokens_per_layer(), ::testing::ElementsAre(30));
    EXPECT_EQ(info.canonical_layer_specs(0), "exact:store=f16");
    std::vector<float> after;
    ASSERT_TRUE(AttendQueries(*t.stub, "keep", 0, Hq, 1, d, q, &after).ok());
    ASSERT_EQ(before.size(), after.size());
    EXPECT_EQ(std::memcmp(before.data(), after.data(), before.size() * 4), 0);
    // Deleted now: its file goes at the next shutdown, not before.
    grpc::ClientContext ctx;
    v1::DeleteSessionRequest req;
    req.set_session_id("gone");
    v1::DeleteSessionResponse resp;
    ASSERT_TRUE(t.stub->DeleteSession(&ctx, req, &resp).ok());
    EXPECT_TRUE(std::filesystem::exists(dir + "/sessions/gone.kvss"));
    ASSERT_TRUE(t.server->Shutdown(absl::Seconds(5)).ok());
  }
  EXPECT_TRUE(std::filesystem::exists(dir + "/sessions/keep.kvss"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/sessions/gone.kvss"));
  std::filesystem::remove_all(dir);
}

TEST(ServerRestartTest, CorruptSnapshotFailsStartOrIsMovedAside) {
  const std::string dir = ::testing::TempDir() + "/kvsketch_corrupt_test";
  std::filesystem::remove_all(dir);
  ServerOptions o = TestOptions();
  o.data_dir = dir;
  // The snapshot-only mode (--wal=false); the write-ahead log's restarts
  // are tested in durability_server_test.cc.
  o.wal = false;
  {
    TestServer t = StartServer(o);
    ASSERT_TRUE(CreateSession(*t.stub, "a", MakeConfig(1, 1, 1, 4, 4)).ok());
    ASSERT_TRUE(CreateSession(*t.stub, "b", MakeConfig(1, 1, 1, 4, 4)).ok());
    ASSERT_TRUE(t.server->Shutdown(absl::Seconds(5)).ok());
  }
  const std::string bad = dir + "/sessions/b.kvss";
  {
    std::FILE* f = std::fopen(bad.c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    std::fseek(f, 20, SEEK_SET);
    std::fputc(0x5a, f);
    std::fclose(f);
  }
  auto failed = Server::Start(o);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(failed.status().message()), HasSubstr("b.kvss"));
  // The failed start wrote nothing: the corrupt file is still there.
  EXPECT_TRUE(std::filesystem::exists(bad));

  o.skip_corrupt_snapshots = true;
  TestServer t = StartServer(o);
  v1::SessionInfo info;
  EXPECT_TRUE(GetSession(*t.stub, "a", &info).ok());
  EXPECT_EQ(GetSession(*t.stub, "b", &info).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_FALSE(std::filesystem::exists(bad));
  EXPECT_TRUE(std::filesystem::exists(dir + "/corrupt/b.kvss"));
  ASSERT_TRUE(t.server->Shutdown(absl::Seconds(5)).ok());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvsketch::server::testing
