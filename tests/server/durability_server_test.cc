// File: tests/server/durability_server_test.cc
//
// The write-ahead log wired into the server (issue #8 item 1,
// docs/durability.md): every acknowledged token survives an abrupt stop,
// recovered sessions answer bit-exactly like an uninterrupted twin, a torn
// tail is dropped, a corrupt middle record stops the start (or is moved
// aside), a failed log write is never acknowledged, tenancy survives.
//
// An abrupt stop is simulated by copying the data directory while the
// server runs (after the acknowledgements, with no call in flight): the
// copy holds exactly what a kill -9 leaves (the page cache), and no
// shutdown checkpoint has run. scripts/crash-test.sh does the real kill -9.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/durability/file_env.h"
#include "tests/server/server_test_util.h"

namespace kvsketch::server::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr int kHkv = 2, kHq = 2, kD = 8, kDv = 8;

// Directories of the running test, removed in TearDown: after the test
// body's servers are destroyed (their shutdown checkpoints write there).
std::vector<std::string>& CreatedDirs() {
  static auto* dirs = new std::vector<std::string>;
  return *dirs;
}

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/kvsketch_dur_" + name;
  fs::remove_all(dir);
  CreatedDirs().push_back(dir);
  return dir;
}

class DurableServerTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (const std::string& dir : CreatedDirs()) fs::remove_all(dir);
    CreatedDirs().clear();
  }
};

// The crash image: what kill -9 would leave right now.
std::string CopyDir(const std::string& from, const std::string& name) {
  const std::string to = FreshDir(name);
  fs::copy(from, to, fs::copy_options::recursive);
  return to;
}

ServerOptions DurableOptions(const std::string& dir) {
  ServerOptions o = TestOptions();
  o.data_dir = dir;
  return o;
}

// One Decode step over a fresh stream: each session appends one token
// (keys/values from seed) and asks one query; outputs[i] is entry i's.
struct EntryResult {
  int code = 0;
  std::string message;
  std::vector<float> output;
  int64_t num_tokens = 0;
};

std::vector<EntryResult> DecodeStep(v1::Attention::Stub& stub,
                                    const std::vector<std::string>& ids,
                                    uint64_t seed) {
  grpc::ClientContext ctx;
  auto stream = stub.Decode(&ctx);
  v1::DecodeRequest req;
  req.set_step_id(static_cast<int64_t>(seed));
  for (size_t i = 0; i < ids.size(); ++i) {
    v1::DecodeEntry* e = req.add_entries();
    e->set_session_id(ids[i]);
    e->set_layer(0);
    const uint64_t s = seed * 1000 + i * 10;
    *e->mutable_keys() =
        MakeTensor({kHkv, 1, kD}, RandomFloats(kHkv * kD, s + 1));
    *e->mutable_values() =
        MakeTensor({kHkv, 1, kDv}, RandomFloats(kHkv * kDv, s + 2));
    *e->mutable_queries() =
        MakeTensor({kHq, 1, kD}, RandomFloats(kHq * kD, s + 3));
  }
  std::vector<EntryResult> out;
  EXPECT_TRUE(stream->Write(req));
  v1::DecodeResponse resp;
  EXPECT_TRUE(stream->Read(&resp));
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  for (const v1::DecodeResult& r : resp.results()) {
    EntryResult e;
    e.code = r.code();
    e.message = r.message();
    if (r.code() == 0) e.output = TensorFloats(r.output());
    e.num_tokens = r.num_tokens();
    out.push_back(std::move(e));
  }
  return out;
}

int64_t Tokens(v1::Attention::Stub& stub, const std::string& id) {
  v1::SessionInfo info;
  grpc::Status s = GetSession(stub, id, &info);
  EXPECT_TRUE(s.ok()) << StatusText(s);
  return info.tokens_per_layer_size() > 0 ? info.tokens_per_layer(0) : -1;
}

bool BitEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<std::string> SegmentFiles(const std::string& wal_dir,
                                      const std::string& name) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(wal_dir)) {
    const std::string f = e.path().filename().string();
    if (absl::StartsWith(f, name + ".") && absl::EndsWith(f, ".wal")) {
      out.push_back(e.path().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The same operations on a durable server and an in-memory twin, then a
// crash image of the durable one restarted: every acknowledged token is
// there and every later answer equals the twin's bit for bit.
TEST_F(DurableServerTest, AbruptStopRecoversEveryAckedTokenBitExactly) {
  const std::string dir = FreshDir("abrupt");
  TestServer durable = StartServer(DurableOptions(dir));
  TestServer twin = StartServer(TestOptions());
  const std::vector<std::string> ids = {"ex", "ev", "f16"};
  const std::vector<std::string> specs = {
      "exact", "evict:budget=6,sinks=1,window=2", "exact:store=f16"};
  for (TestServer* t : {&durable, &twin}) {
    for (size_t i = 0; i < ids.size(); ++i) {
      ASSERT_TRUE(CreateSession(*t->stub, ids[i],
                                MakeConfig(1, kHkv, kHq, kD, kDv, specs[i]))
                      .ok());
    }
    // A prefix through Append, then decode steps (appends + queries, which
    // change evict's state), and query-only Attends in between.
    for (const std::string& id : ids) {
      ASSERT_TRUE(AppendTokens(*t->stub, id, 0, kHkv, 5, kD, kDv,
                               RandomFloats(kHkv * 5 * kD, 11),
                               RandomFloats(kHkv * 5 * kDv, 12))
                      .ok());
    }
  }
  for (uint64_t step = 1; step <= 12; ++step) {
    std::vector<EntryResult> a = DecodeStep(*durable.stub, ids, step);
    std::vector<EntryResult> b = DecodeStep(*twin.stub, ids, step);
    ASSERT_EQ(a.size(), ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      ASSERT_EQ(a[i].code, 0) << a[i].message;
      EXPECT_TRUE(BitEqual(a[i].output, b[i].output)) << ids[i];
    }
    if (step % 4 == 0) {
      for (const std::string& id : ids) {
        std::vector<float> qa, qb;
        const auto q = RandomFloats(kHq * kD, 500 + step);
        ASSERT_TRUE(
            AttendQueries(*durable.stub, id, 0, kHq, 1, kD, q, &qa).ok());
        ASSERT_TRUE(AttendQueries(*twin.stub, id, 0, kHq, 1, kD, q, &qb).ok());
        EXPECT_TRUE(BitEqual(qa, qb)) << id;
      }
    }
  }
  const std::string image = CopyDir(dir, "abrupt_image");
  TestServer recovered = StartServer(DurableOptions(image));
  const std::string metrics = recovered.server->ScrapeMetrics();
  EXPECT_EQ(MetricValue(metrics, "kvsketch_recovered_sessions"), 3);
  // 3 sessions x (create + 1 append + 12 decode records) + evict's 3
  // logged Attends (exact's query-only Attends change nothing: not logged).
  EXPECT_EQ(MetricValue(metrics, "kvsketch_recovered_records"), 3 * 14 + 3);
  EXPECT_EQ(MetricValue(metrics, "kvsketch_recovered_tokens"), 3 * 17);
  EXPECT_EQ(MetricValue(metrics, "kvsketch_recovered_torn_bytes"), 0);
  for (const std::string& id : ids) {
    EXPECT_EQ(Tokens(*recovered.stub, id), 17) << id;
  }
  for (uint64_t step = 13; step <= 15; ++step) {
    std::vector<EntryResult> a = DecodeStep(*recovered.stub, ids, step);
    std::vector<EntryResult> b = DecodeStep(*twin.stub, ids, step);
    ASSERT_EQ(a.size(), ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      ASSERT_EQ(a[i].code, 0) << a[i].message;
      EXPECT_TRUE(BitEqual(a[i].output, b[i].output))
          << ids[i] << " step " << step;
    }
  }
  ASSERT_TRUE(recovered.server->Shutdown(absl::Seconds(5)).ok());
  ASSERT_TRUE(durable.server->Shutdown(absl::Seconds(5)).ok());
}

// A clean shutdown checkpoints: the next start replays no record, and
// deleted sessions stay deleted (their delete record is durable at once).
TEST_F(DurableServerTest, CleanShutdownCheckpointsAndDeletesAreDurable) {
  const std::string dir = FreshDir("clean");
  std::vector<float> before;
  const auto q = RandomFloats(kHq * kD, 77);
  {
    TestServer t = StartServer(DurableOptions(dir));
    ASSERT_TRUE(CreateSession(*t.stub, "keep",
                              MakeConfig(1, kHkv, kHq, kD, kDv, "exact"))
                    .ok());
    ASSERT_TRUE(CreateSession(*t.stub, "gone", MakeConfig(1, 1, 1, 4, 4)).ok());
    ASSERT_TRUE(AppendTokens(*t.stub, "keep", 0, kHkv, 30, kD, kDv,
                             RandomFloats(kHkv * 30 * kD, 1),
                             RandomFloats(kHkv * 30 * kDv, 2))
                    .ok());
    ASSERT_TRUE(AttendQueries(*t.stub, "keep", 0, kHq, 1, kD, q, &before).ok());
    grpc::ClientContext ctx;
    v1::DeleteSessionRequest req;
    req.set_session_id("gone");
    v1::DeleteSessionResponse resp;
    ASSERT_TRUE(t.stub->DeleteSession(&ctx, req, &resp).ok());
    EXPECT_TRUE(SegmentFiles(dir + "/wal", "gone").empty());
    // No .kvss in the log's mode.
    ASSERT_TRUE(t.server->Shutdown(absl::Seconds(5)).ok());
  }
  EXPECT_TRUE(fs::exists(dir + "/wal/keep.ckpt"));
  EXPECT_FALSE(fs::exists(dir + "/sessions/keep.kvss"));
  TestServer t = StartServer(DurableOptions(dir));
  const std::string metrics = t.server->ScrapeMetrics();
  EXPECT_EQ(MetricValue(metrics, "kvsketch_recovered_sessions"), 1);
  EXPECT_EQ(MetricValue(metrics, "kvsketch_recovered_tokens"), 0);
  EXPECT_EQ(Tokens(*t.stub, "keep"), 30);
  v1::SessionInfo info;
  EXPECT_EQ(GetSession(*t.stub, "gone", &info).error_code(),
            grpc::StatusCode::NOT_FOUND);
  std::vector<float> after;
  ASSERT_TRUE(AttendQueries(*t.stub, "keep", 0, kHq, 1, kD, q, &after).ok());
  EXPECT_TRUE(BitEqual(before, after));
  ASSERT_TRUE(t.server->Shutdown(absl::Seconds(5)).ok());
}

// A small --checkpoint_log_bytes checkpoints while serving; a crash image
// taken after that recovers checkpoint + the log after it.
TEST_F(DurableServerTest, LogSizeTriggersCheckpointsThatRecover) {
  const std::string dir = FreshDir("ckpt");
  ServerOptions o = DurableOptions(dir);
  o.checkpoint_log_bytes = 4096;  // a 16-token append is ~1 KB
  TestServer t = StartServer(o);
  TestServer twin = StartServer(TestOptions());
  for (TestServer* s : {&t, &twin}) {
    ASSERT_TRUE(CreateSession(*s->stub, "ev",
                              MakeConfig(1, kHkv, kHq, kD, kDv,
                                         "evict:budget=6,sinks=1,window=2"))
                    .ok());
  }
  for (uint64_t step = 1; step <= 40; ++step) {
    std::vector<EntryResult> a = DecodeStep(*t.stub, {"ev"}, step);
    std::vector<EntryResult> b = DecodeStep(*twin.stub, {"ev"}, step);
    ASSERT_EQ(a[0].code, 0) << a[0].message;
    ASSERT_TRUE(BitEqual(a[0].output, b[0].output));
  }
  EXPECT_TRUE(fs::exists(dir + "/wal/ev.ckpt"));
  // Truncation: the live segments hold far less than 40 records' bytes.
  int64_t live = 0;
  for (const std::string& f : SegmentFiles(dir + "/wal", "ev")) {
    live += static_cast<int64_t>(fs::file_size(f));
  }
  EXPECT_LT(live, 4096 + 2048);
  const std::string image = CopyDir(dir, "ckpt_image");
  TestServer r = StartServer(DurableOptions(image));
  EXPECT_EQ(Tokens(*r.stub, "ev"), 40);
  for (uint64_t step = 41; step <= 43; ++step) {
    std::vector<EntryResult> a = DecodeStep(*r.stub, {"ev"}, step);
    std::vector<EntryResult> b = DecodeStep(*twin.stub, {"ev"}, step);
    ASSERT_EQ(a[0].code, 0) << a[0].message;
    EXPECT_TRUE(BitEqual(a[0].output, b[0].output));
  }
  ASSERT_TRUE(t.server->Shutdown(absl::Seconds(5)).ok());
}

TEST_F(DurableServerTest, TornTailRecordIsDropped) {
  const std::string dir = FreshDir("torn");
  TestServer t = StartServer(DurableOptions(dir));
  ASSERT_TRUE(
      CreateSession(*t.stub, "s", MakeConfig(1, kHkv, kHq, kD, kDv)).ok());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(AppendTokens(*t.stub, "s", 0, kHkv, 4, kD, kDv,
                             RandomFloats(kHkv * 4 * kD, 20 + i),
                             RandomFloats(kHkv * 4 * kDv, 30 + i))
                    .ok());
  }
  const std::string image = CopyDir(dir, "torn_image");
  std::vector<std::string> segs = SegmentFiles(image + "/wal", "s");
  ASSERT_EQ(segs.size(), 1u);
  const uint64_t size = fs::file_size(segs[0]);
  fs::resize_file(segs[0], size - 7);  // the last record loses its tail
  TestServer r = StartServer(DurableOptions(image));
  EXPECT_EQ(Tokens(*r.stub, "s"), 8);
  const std::string metrics = r.server->ScrapeMetrics();
  EXPECT_GT(MetricValue(metrics, "kvsketch_recovered_torn_bytes"), 0);
  // create + the 2 intact appends.
  EXPECT_EQ(MetricValue(metrics, "kvsketch_recovered_records"), 3);
  // The recovered log goes on: append more, restart again, all there.
  ASSERT_TRUE(AppendTokens(*r.stub, "s", 0, kHkv, 4, kD, kDv,
                           RandomFloats(kHkv * 4 * kD, 40),
                           RandomFloats(kHkv * 4 * kDv, 41))
                  .ok());
  const std::string image2 = CopyDir(image, "torn_image2");
  TestServer r2 = StartServer(DurableOptions(image2));
  EXPECT_EQ(Tokens(*r2.stub, "s"), 12);
  ASSERT_TRUE(t.server->Shutdown(absl::Seconds(5)).ok());
}

TEST_F(DurableServerTest, CorruptMiddleRecordStopsStartOrIsMovedAside) {
  const std::string dir = FreshDir("corrupt");
  TestServer t = StartServer(DurableOptions(dir));
  ASSERT_TRUE(CreateSession(*t.stub, "ok", MakeConfig(1, 1, 1, 4, 4)).ok());
  ASSERT_TRUE(
      CreateSession(*t.stub, "bad", MakeConfig(1, kHkv, kHq, kD, kDv)).ok());
  std::vector<uint64_t> ends;
  for (int i = 0; i < 3; ++i) {
    ends.push_back(fs::file_size(SegmentFiles(dir + "/wal", "bad")[0]));
    ASSERT_TRUE(AppendTokens(*t.stub, "bad", 0, kHkv, 4, kD, kDv,
                             RandomFloats(kHkv * 4 * kD, 50 + i),
                             RandomFloats(kHkv * 4 * kDv, 60 + i))
                    .ok());
  }
  const std::string image = CopyDir(dir, "corrupt_image");
  const std::string seg = SegmentFiles(image + "/wal", "bad")[0];
  {
    // A byte inside the first tokens record's payload: valid records
    // follow, so this is corruption, not a torn tail.
    std::fstream f(seg, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(ends[0] + 40));
    char c = 0;
    f.seekg(static_cast<std::streamoff>(ends[0] + 40));
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x5a);
    f.seekp(static_cast<std::streamoff>(ends[0] + 40));
    f.write(&c, 1);
  }
  ServerOptions o = DurableOptions(image);
  auto failed = Server::Start(o);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(failed.status().message()),
              HasSubstr(fs::path(seg).filename().string()));
  EXPECT_TRUE(fs::exists(seg));  // nothing changed on disk

  o.skip_corrupt_snapshots = true;
  TestServer r = StartServer(o);
  v1::SessionInfo info;
  EXPECT_TRUE(GetSession(*r.stub, "ok", &info).ok());
  EXPECT_EQ(GetSession(*r.stub, "bad", &info).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_FALSE(fs::exists(seg));
  EXPECT_TRUE(
      fs::exists(image + "/corrupt/" + fs::path(seg).filename().string()));
  ASSERT_TRUE(t.server->Shutdown(absl::Seconds(5)).ok());
}

// A failed log write or fsync is never acknowledged: the call fails with
// INTERNAL naming the log, the session refuses every later call, and a
// restart recovers exactly what the log holds.
TEST_F(DurableServerTest, LogFailureIsNotAcknowledgedAndPoisonsTheSession) {
  const std::string dir = FreshDir("fault");
  durability::FaultInjectionEnv env(durability::Env::Default());
  ServerOptions o = DurableOptions(dir);
  o.wal_env = &env;
  TestServer t = StartServer(o);
  for (const char* id : {"w", "d"}) {
    ASSERT_TRUE(
        CreateSession(*t.stub, id, MakeConfig(1, kHkv, kHq, kD, kDv)).ok());
    ASSERT_TRUE(AppendTokens(*t.stub, id, 0, kHkv, 3, kD, kDv,
                             RandomFloats(kHkv * 3 * kD, 70),
                             RandomFloats(kHkv * 3 * kDv, 71))
                    .ok());
  }
  // Append: the write fails.
  env.FailWriteAfter(1);
  grpc::Status s = AppendTokens(*t.stub, "w", 0, kHkv, 2, kD, kDv,
                                RandomFloats(kHkv * 2 * kD, 72),
                                RandomFloats(kHkv * 2 * kDv, 73));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_THAT(s.error_message(), HasSubstr("write-ahead log failed"));
  v1::SessionInfo info;
  EXPECT_EQ(GetSession(*t.stub, "w", &info).error_code(),
            grpc::StatusCode::INTERNAL);
  // Decode: the fsync fails; the entry gets the error, no output.
  env.FailSyncAfter(1);
  std::vector<EntryResult> r = DecodeStep(*t.stub, {"d"}, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].code, static_cast<int>(absl::StatusCode::kInternal));
  EXPECT_TRUE(r[0].output.empty());
  EXPECT_EQ(GetSession(*t.stub, "d", &info).error_code(),
            grpc::StatusCode::INTERNAL);
  EXPECT_EQ(
      MetricValue(t.server->ScrapeMetrics(), "kvsketch_wal_failures_total"), 2);
  const std::string image = CopyDir(dir, "fault_image");
  TestServer rec = StartServer(DurableOptions(image));
  // The failed write wrote nothing; the failed fsync's record did reach the
  // page cache (it was written, never acknowledged): either is allowed for
  // an unacknowledged step, fewer than the acknowledged 3 tokens is not.
  EXPECT_EQ(Tokens(*rec.stub, "w"), 3);
  const int64_t d_tokens = Tokens(*rec.stub, "d");
  EXPECT_TRUE(d_tokens == 3 || d_tokens == 4) << d_tokens;
  ASSERT_TRUE(t.server->Shutdown(absl::Seconds(5)).ok());
}

TEST_F(DurableServerTest, TenancySurvivesRecovery) {
  const std::string dir = FreshDir("tenants");
  fs::create_directories(dir);
  const std::string tokens = dir + "/tokens";
  std::ofstream(tokens)
      << "token-alpha-0123456789 alpha\ntoken-beta-0123456789 beta\n";
  ServerOptions o = DurableOptions(dir + "/data");
  o.auth_tokens_file = tokens;
  auto append_as = [](v1::Attention::Stub& stub, const std::string& token,
                      const std::string& id, int64_t t) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token);
    v1::AppendResponse resp;
    auto w = stub.Append(&ctx, &resp);
    v1::AppendRequest req;
    req.set_session_id(id);
    req.set_layer(0);
    *req.mutable_keys() =
        MakeTensor({1, t, 4}, RandomFloats(static_cast<size_t>(t) * 4, t));
    *req.mutable_values() =
        MakeTensor({1, t, 4}, RandomFloats(static_cast<size_t>(t) * 4, t + 1));
    EXPECT_TRUE(w->Write(req));
    w->WritesDone();
    return w->Finish();
  };
  auto create_as = [](v1::Attention::Stub& stub, const std::string& token,
                      const std::string& id) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token);
    v1::CreateSessionRequest req;
    req.set_session_id(id);
    *req.mutable_config() = MakeConfig(1, 1, 1, 4, 4);
    v1::CreateSessionResponse resp;
    return stub.CreateSession(&ctx, req, &resp);
  };
  auto tokens_as = [](v1::Attention::Stub& stub, const std::string& token,
                      const std::string& id) -> int64_t {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token);
    v1::GetSessionRequest req;
    req.set_session_id(id);
    v1::GetSessionResponse resp;
    grpc::Status s = stub.GetSession(&ctx, req, &resp);
    if (s.error_code() == grpc::StatusCode::NOT_FOUND) return -1;
    EXPECT_TRUE(s.ok()) << StatusText(s);
    return resp.session().tokens_per_layer(0);
  };
  TestServer t = StartServer(o);
  ASSERT_TRUE(create_as(*t.stub, "token-alpha-0123456789", "s").ok());
  ASSERT_TRUE(create_as(*t.stub, "token-beta-0123456789", "s").ok());
  ASSERT_TRUE(create_as(*t.stub, "token-beta-0123456789", "b-only").ok());
  ASSERT_TRUE(append_as(*t.stub, "token-alpha-0123456789", "s", 2).ok());
  ASSERT_TRUE(append_as(*t.stub, "token-beta-0123456789", "s", 5).ok());
  EXPECT_TRUE(fs::exists(dir + "/data/wal/alpha~s.ckpt") ||
              !SegmentFiles(dir + "/data/wal", "alpha~s").empty());
  const std::string image = CopyDir(dir + "/data", "tenants_image");
  o.data_dir = image;
  TestServer r = StartServer(o);
  EXPECT_EQ(tokens_as(*r.stub, "token-alpha-0123456789", "s"), 2);
  EXPECT_EQ(tokens_as(*r.stub, "token-beta-0123456789", "s"), 5);
  EXPECT_EQ(tokens_as(*r.stub, "token-alpha-0123456789", "b-only"), -1);
  EXPECT_EQ(tokens_as(*r.stub, "token-beta-0123456789", "b-only"), 0);
  ASSERT_TRUE(t.server->Shutdown(absl::Seconds(5)).ok());
}

// Snapshots of a server run without the log are migrated into it.
TEST_F(DurableServerTest, SnapshotsFromBeforeTheLogAreMigrated) {
  const std::string dir = FreshDir("migrate");
  ServerOptions legacy = DurableOptions(dir);
  legacy.wal = false;
  {
    TestServer t = StartServer(legacy);
    ASSERT_TRUE(
        CreateSession(*t.stub, "old", MakeConfig(1, kHkv, kHq, kD, kDv)).ok());
    ASSERT_TRUE(AppendTokens(*t.stub, "old", 0, kHkv, 6, kD, kDv,
                             RandomFloats(kHkv * 6 * kD, 80),
                             RandomFloats(kHkv * 6 * kDv, 81))
                    .ok());
    ASSERT_TRUE(t.server->Shutdown(absl::Seconds(5)).ok());
  }
  ASSERT_TRUE(fs::exists(dir + "/sessions/old.kvss"));
  {
    TestServer t = StartServer(DurableOptions(dir));
    EXPECT_EQ(Tokens(*t.stub, "old"), 6);
    EXPECT_FALSE(fs::exists(dir + "/sessions/old.kvss"));
    // Crash image right after the migration: the log has it.
    const std::string image = CopyDir(dir, "migrate_image");
    TestServer r = StartServer(DurableOptions(image));
    EXPECT_EQ(Tokens(*r.stub, "old"), 6);
  }
}

}  // namespace
}  // namespace kvsketch::server::testing
