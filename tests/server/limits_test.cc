// File: tests/server/limits_test.cc
//
// Server limits: each refusal is RESOURCE_EXHAUSTED with a message, changes
// nothing, and the server keeps serving other sessions.
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/server_test_util.h"

namespace kvsketch::server::testing {
namespace {

using ::testing::HasSubstr;

grpc::Status Delete(v1::Attention::Stub& stub, const std::string& id) {
  grpc::ClientContext ctx;
  v1::DeleteSessionRequest req;
  req.set_session_id(id);
  v1::DeleteSessionResponse resp;
  return stub.DeleteSession(&ctx, req, &resp);
}

// The snapshot bytes of session `id` (ExportSession, all chunks).
grpc::Status ExportBlob(v1::Attention::Stub& stub, const std::string& id,
                        std::string* blob) {
  grpc::ClientContext ctx;
  v1::ExportSessionRequest req;
  req.set_session_id(id);
  auto reader = stub.ExportSession(&ctx, req);
  v1::SnapshotChunk chunk;
  while (reader->Read(&chunk)) *blob += chunk.data();
  return reader->Finish();
}

// ImportSession of `blob` in one message.
grpc::Status ImportBlob(v1::Attention::Stub& stub, const std::string& blob) {
  grpc::ClientContext ctx;
  v1::ImportSessionResponse resp;
  auto w = stub.ImportSession(&ctx, &resp);
  v1::ImportSessionRequest req;
  req.set_data(blob);
  w->Write(req);
  w->WritesDone();
  return w->Finish();
}

TEST(LimitsTest, MaxSessions) {
  ServerOptions o = TestOptions();
  o.max_sessions = 2;
  TestServer t = StartServer(o);
  const auto c = MakeConfig(1, 1, 1, 4, 4);
  ASSERT_TRUE(CreateSession(*t.stub, "a", c).ok());
  ASSERT_TRUE(CreateSession(*t.stub, "b", c).ok());
  grpc::Status s = CreateSession(*t.stub, "c", c);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("max_sessions 2"));
  v1::SessionInfo info;
  EXPECT_EQ(GetSession(*t.stub, "c", &info).error_code(),
            grpc::StatusCode::NOT_FOUND);
  // The others still work, and a slot frees on delete.
  ASSERT_TRUE(AppendTokens(*t.stub, "a", 0, 1, 1, 4, 4, RandomFloats(4, 1),
                           RandomFloats(4, 2))
                  .ok());
  ASSERT_TRUE(Delete(*t.stub, "b").ok());
  EXPECT_TRUE(CreateSession(*t.stub, "c", c).ok());
  ASSERT_TRUE(t.server->Shutdown(absl::Seconds(5)).ok());
}

TEST(LimitsTest, MemoryBudgetRefusesAppendAndKeepsState) {
  ServerOptions o = TestOptions();
  o.memory_budget_bytes = 128 << 10;  // 128 KiB
  TestServer t = StartServer(o);
  const int Hkv = 2, d = 32, dv = 32;
  ASSERT_TRUE(
      CreateSession(*t.stub, "big", MakeConfig(1, Hkv, Hkv, d, dv)).ok());
  ASSERT_TRUE(CreateSession(*t.stub, "small", MakeConfig(1, 1, 1, 4, 4)).ok());
  // 100 tokens * 2 heads * 64 floats * 4 B = 51200 B: fits (the exact
  // cache allocates in chunks, so it is charged a little more).
  ASSERT_TRUE(AppendTokens(*t.stub, "big", 0, Hkv, 100, d, dv,
                           RandomFloats(Hkv * 100 * d, 1),
                           RandomFloats(Hkv * 100 * dv, 2))
                  .ok());
  // Another 300 (estimated 153600 B) do not.
  grpc::Status s = AppendTokens(*t.stub, "big", 0, Hkv, 300, d, dv,
                                RandomFloats(Hkv * 300 * d, 3),
                                RandomFloats(Hkv * 300 * dv, 4));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("memory budget"));
  EXPECT_THAT(s.error_message(), HasSubstr("budget 131072 bytes"));
  v1::SessionInfo info;
  ASSERT_TRUE(GetSession(*t.stub, "big", &info).ok());
  EXPECT_THAT(info.tokens_per_layer(), ::testing::ElementsAre(100));
  // A small session still appends and answers.
  s = AppendTokens(*t.stub, "small", 0, 1, 1, 4, 4, RandomFloats(4, 5),
                   RandomFloats(4, 6));
  ASSERT_TRUE(s.ok()) << StatusText(s) << " big=" << info.state_bytes();
  std::vector<float> out;
  EXPECT_TRUE(
      AttendQueries(*t.stub, "small", 0, 1, 1, 4, RandomFloats(4, 7), &out)
          .ok());
  // Deleting frees the budget.
  ASSERT_TRUE(Delete(*t.stub, "big").ok());
  ASSERT_TRUE(
      CreateSession(*t.stub, "big", MakeConfig(1, Hkv, Hkv, d, dv)).ok());
  EXPECT_TRUE(AppendTokens(*t.stub, "big", 0, Hkv, 100, d, dv,
                           RandomFloats(Hkv * 100 * d, 1),
                           RandomFloats(Hkv * 100 * dv, 2))
                  .ok());
  ASSERT_TRUE(t.server->Shutdown(absl::Seconds(5)).ok());
}

// The budget reserves what an append really allocates: the exact cache grows
// by whole chunks (16, 16, 32, 64, 128, ... tokens), so one token can need a
// chunk far larger than its own bytes. Appending one token at a time, the
// state never exceeds the budget, and the append that needs a chunk that
// does not fit is refused with the session unchanged.
TEST(LimitsTest, ChunkedGrowthStaysWithinTheBudget) {
  ServerOptions o = TestOptions();
  o.memory_budget_bytes = 100 << 10;  // 100 KiB
  TestServer t = StartServer(o);
  const int Hkv = 2, d = 32, dv = 32;  // 512 B per token of f32 K+V
  ASSERT_TRUE(CreateSession(*t.stub, "s", MakeConfig(1, Hkv, Hkv, d, dv)).ok());
  int64_t accepted = 0;
  grpc::Status refused;
  v1::SessionInfo info;
  for (int i = 0; i < 400 && refused.ok(); ++i) {
    grpc::Status s = AppendTokens(*t.stub, "s", 0, Hkv, 1, d, dv,
                                  RandomFloats(Hkv * d, 10 + i),
                                  RandomFloats(Hkv * dv, 1000 + i));
    if (!s.ok()) {
      refused = s;
      break;
    }
    ++accepted;
    ASSERT_TRUE(GetSession(*t.stub, "s", &info).ok());
    ASSERT_LE(info.state_bytes(), o.memory_budget_bytes)
        << "after " << accepted << " tokens";
  }
  // 128 tokens fill chunks 16+16+32+64 = 128 rows (64 KiB); the 129th
  // needs a 128-token chunk (64 KiB more), over 100 KiB.
  EXPECT_EQ(accepted, 128);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << StatusText(refused);
  EXPECT_THAT(refused.error_message(), HasSubstr("memory budget"));
  ASSERT_TRUE(GetSession(*t.stub, "s", &info).ok());
  EXPECT_THAT(info.tokens_per_layer(), ::testing::ElementsAre(128));
  EXPECT_LE(info.state_bytes(), o.memory_budget_bytes);
  ASSERT_TRUE(t.server->Shutdown(absl::Seconds(5)).ok());
}

// A session whose state before any token would not fit the free budget is
// refused while its heads are built, before it can exhaust memory: the
// largest config (1024 layers x 1024 KV heads) with a summary allocated up
// front would need ~40 GB. The server keeps serving, and nothing is charged.
TEST(LimitsTest, CreateSessionWhoseInitialStateExceedsTheBudget) {
  ServerOptions o = TestOptions();
  o.memory_budget_bytes = 64 << 20;  // 64 MiB
  TestServer t = StartServer(o);
  auto huge = MakeConfig(1024, 1024, 1024, 8, 8);
  huge.set_spec("sketch");
  grpc::Status s = CreateSession(*t.stub, "huge", huge);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << StatusText(s);
  EXPECT_THAT(s.error_message(), HasSubstr("memory budget"));
  EXPECT_THAT(s.error_message(), HasSubstr("before any token"));
  v1::SessionInfo info;
  EXPECT_EQ(GetSession(*t.stub, "huge", &info).error_code(),
            grpc::StatusCode::NOT_FOUND);
  const std::string m = t.server->ScrapeMetrics();
  EXPECT_EQ(MetricValue(m, "kvsketch_sessions"), 0);
  // The same spec at a size that fits is accepted.
  auto small = MakeConfig(2, 2, 2, 8, 8);
  small.set_spec("sketch");
  EXPECT_TRUE(CreateSession(*t.stub, "small", small).ok());
}

TEST(LimitsTest, MaxTokensPerSession) {
  ServerOptions o = TestOptions();
  o.max_tokens_per_session = 8;
  TestServer t = StartServer(o);
  auto c = MakeConfig(2, 1, 1, 4, 4);
  ASSERT_TRUE(CreateSession(*t.stub, "server_limit", c).ok());
  c.set_max_tokens(3);
  ASSERT_TRUE(CreateSession(*t.stub, "own_limit", c).ok());
  ASSERT_TRUE(AppendTokens(*t.stub, "own_limit", 0, 1, 3, 4, 4,
                           RandomFloats(12, 1), RandomFloats(12, 2))
                  .ok());
  grpc::Status s = AppendTokens(*t.stub, "own_limit", 0, 1, 1, 4, 4,
                                RandomFloats(4, 3), RandomFloats(4, 4));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << StatusText(s);
  s = AppendTokens(*t.stub, "server_limit", 1, 1, 9, 4, 4, RandomFloats(36, 3),
                   RandomFloats(36, 4));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << StatusText(s);
  // all_layers is all or nothing: layer 1 is full, so layer 0 stays empty.
  ASSERT_TRUE(AppendTokens(*t.stub, "server_limit", 1, 1, 8, 4, 4,
                           RandomFloats(32, 5), RandomFloats(32, 6))
                  .ok());
  {
    grpc::ClientContext ctx;
    v1::AppendResponse resp;
    auto w = t.stub->Append(&ctx, &resp);
    v1::AppendRequest r;
    r.set_session_id("server_limit");
    r.set_all_layers(true);
    *r.mutable_keys() = MakeTensor({2, 1, 1, 4}, RandomFloats(8, 7));
    *r.mutable_values() = MakeTensor({2, 1, 1, 4}, RandomFloats(8, 8));
    w->Write(r);
    w->WritesDone();
    s = w->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_THAT(s.error_message(), HasSubstr("layer 1"));
  }
  v1::SessionInfo info;
  ASSERT_TRUE(GetSession(*t.stub, "server_limit", &info).ok());
  EXPECT_THAT(info.tokens_per_layer(), ::testing::ElementsAre(0, 8));
  ASSERT_TRUE(GetSession(*t.stub, "own_limit", &info).ok());
  EXPECT_THAT(info.tokens_per_layer(), ::testing::ElementsAre(3, 0));
  ASSERT_TRUE(t.server->Shutdown(absl::Seconds(5)).ok());
}

TEST(LimitsTest, MessageOverSizeLimitIsRefusedByGrpc) {
  ServerOptions o = TestOptions();
  o.max_message_bytes = 64 << 10;
  TestServer t = StartServer(o);
  const int H = 4, d = 64;
  ASSERT_TRUE(CreateSession(*t.stub, "s", MakeConfig(1, H, H, d, d)).ok());
  // 100 tokens * 4 heads * 64 * 4 B = 100 KiB of keys alone.
  grpc::Status s =
      AppendTokens(*t.stub, "s", 0, H, 100, d, d, RandomFloats(H * 100 * d, 1),
                   RandomFloats(H * 100 * d, 2));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << StatusText(s);
  v1::SessionInfo info;
  ASSERT_TRUE(GetSession(*t.stub, "s", &info).ok());
  EXPECT_THAT(info.tokens_per_layer(), ::testing::ElementsAre(0));
  // Small messages still go through.
  EXPECT_TRUE(AppendTokens(*t.stub, "s", 0, H, 10, d, d,
                           RandomFloats(H * 10 * d, 1),
                           RandomFloats(H * 10 * d, 2))
                  .ok());
  ASSERT_TRUE(t.server->Shutdown(absl::Seconds(5)).ok());
}

TEST(LimitsTest, ImportOverBudgetIsResourceExhausted) {
  ServerOptions o = TestOptions();
  TestServer src = StartServer(o);
  const int H = 2, d = 32;
  ASSERT_TRUE(CreateSession(*src.stub, "s", MakeConfig(1, H, H, d, d)).ok());
  ASSERT_TRUE(AppendTokens(*src.stub, "s", 0, H, 200, d, d,
                           RandomFloats(H * 200 * d, 1),
                           RandomFloats(H * 200 * d, 2))
                  .ok());
  std::string blob;
  ASSERT_TRUE(ExportBlob(*src.stub, "s", &blob).ok());
  ServerOptions small = TestOptions();
  small.memory_budget_bytes = 16 << 10;
  TestServer dst = StartServer(small);
  grpc::Status s = ImportBlob(*dst.stub, blob);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << StatusText(s);
  v1::SessionInfo info;
  EXPECT_EQ(GetSession(*dst.stub, "s", &info).error_code(),
            grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(src.server->Shutdown(absl::Seconds(5)).ok());
  ASSERT_TRUE(dst.server->Shutdown(absl::Seconds(5)).ok());
}

// A snapshot is held to the importing server's --max_tokens_per_session:
// refused (nothing created) when a layer already holds more, else imported
// with the limit applied to later appends.
TEST(LimitsTest, ImportAppliesTheServersTokenLimit) {
  TestServer src = StartServer(TestOptions());
  const int H = 2, d = 16;
  ASSERT_TRUE(CreateSession(*src.stub, "s", MakeConfig(1, H, H, d, d)).ok());
  ASSERT_TRUE(AppendTokens(*src.stub, "s", 0, H, 200, d, d,
                           RandomFloats(H * 200 * d, 1),
                           RandomFloats(H * 200 * d, 2))
                  .ok());
  std::string blob;
  ASSERT_TRUE(ExportBlob(*src.stub, "s", &blob).ok());
  ServerOptions tight = TestOptions();
  tight.max_tokens_per_session = 100;
  TestServer small = StartServer(tight);
  grpc::Status s = ImportBlob(*small.stub, blob);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << StatusText(s);
  EXPECT_THAT(s.error_message(), HasSubstr("max_tokens_per_session"));
  EXPECT_THAT(s.error_message(), HasSubstr("200 tokens"));
  v1::SessionInfo info;
  EXPECT_EQ(GetSession(*small.stub, "s", &info).error_code(),
            grpc::StatusCode::NOT_FOUND);

  ServerOptions roomy = TestOptions();
  roomy.max_tokens_per_session = 250;
  TestServer fits = StartServer(roomy);
  s = ImportBlob(*fits.stub, blob);
  ASSERT_TRUE(s.ok()) << StatusText(s);
  s = AppendTokens(*fits.stub, "s", 0, H, 51, d, d, RandomFloats(H * 51 * d, 3),
                   RandomFloats(H * 51 * d, 4));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << StatusText(s);
  ASSERT_TRUE(GetSession(*fits.stub, "s", &info).ok());
  EXPECT_THAT(info.tokens_per_layer(), ::testing::ElementsAre(200));
  EXPECT_TRUE(AppendTokens(*fits.stub, "s", 0, H, 50, d, d,
                           RandomFloats(H * 50 * d, 3),
                           RandomFloats(H * 50 * d, 4))
                  .ok());
  ASSERT_TRUE(src.server->Shutdown(absl::Seconds(5)).ok());
  ASSERT_TRUE(small.server->Shutdown(absl::Seconds(5)).ok());
  ASSERT_TRUE(fits.server->Shutdown(absl::Seconds(5)).ok());
}

TEST(LimitsTest, BadOptionsFailStart) {
  ServerOptions o = TestOptions();
  o.default_spec = "nosuchkind";
  auto s = Server::Start(o);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("default_spec"));
  o = TestOptions();
  o.stream_pipeline_depth = 0;
  s = Server::Start(o);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()),
              HasSubstr("stream_pipeline_depth"));
  o = TestOptions();
  o.listen_address = "256.1.1.1:1";
  s = Server::Start(o);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace kvsketch::server::testing
