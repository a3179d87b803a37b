// kvsketch-loadgen end to end against an in-process server: its --json
// report parses, counts steps, has no errors and ordered percentiles.
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/attention_client.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/client/test_server.h"
#include "tests/client/test_util.h"

namespace kvsketch::client {
namespace {

using ::kvsketch::testing::ProcessResult;
using ::kvsketch::testing::RunProcess;
using ::testing::HasSubstr;

class LoadgenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = testing::StartTestServer();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    address_ = testing::LoopbackAddress(*server_);
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(5)).IgnoreError();
  }

  ProcessResult Loadgen(std::vector<std::string> args) {
    args.insert(args.begin(), KVSKETCH_LOADGEN_PATH);
    args.push_back("--server=" + address_);
    return RunProcess(args);
  }

  size_t SessionsOnServer() {
    auto client = AttentionClient::Connect(address_);
    auto list = client->ListSessions();
    EXPECT_TRUE(list.ok()) << list.status();
    return list.ok() ? list->size() : 0;
  }

  std::unique_ptr<server::Server> server_;
  std::string address_;
};

double Number(const google::protobuf::Struct& s, const std::string& key) {
  auto it = s.fields().find(key);
  EXPECT_NE(it, s.fields().end()) << key;
  return it == s.fields().end() ? -1 : it->second.number_value();
}

TEST_F(LoadgenTest, ClosedLoopJsonReport) {
  ProcessResult r = Loadgen({"--sessions=4", "--head-dim=32", "--layers=2",
                             "--kv-heads=2", "--query-heads=4", "--prefill=16",
                             "--duration=2s", "--warmup=200ms", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("steps/s"));  // the progress line
  google::protobuf::Struct report;
  auto status = google::protobuf::util::JsonStringToMessage(r.out, &report);
  ASSERT_TRUE(status.ok()) << status.ToString() << "\n" << r.out;

  const double steps = Number(report, "steps");
  EXPECT_GT(steps, 0);
  EXPECT_EQ(Number(report, "errors_total"), 0) << r.out;
  EXPECT_EQ(Number(report, "streams"), 4);
  // Each step decodes one token of one session: 2 layers x 4 query heads.
  EXPECT_EQ(Number(report, "tokens"), steps);
  EXPECT_EQ(Number(report, "queries"), steps * 2 * 4);
  EXPECT_GT(Number(report, "bytes_sent"), steps * 2 * (2 + 2 + 4) * 32 * 4);
  EXPECT_NEAR(Number(report, "seconds"), 2.0, 0.25);

  const auto& lat = report.fields().at("latency_ms").struct_value();
  const double p50 = Number(lat, "p50"), p90 = Number(lat, "p90"),
               p99 = Number(lat, "p99"), p999 = Number(lat, "p99_9"),
               max = Number(lat, "max");
  EXPECT_GT(p50, 0);
  EXPECT_LE(p50, p90);
  EXPECT_LE(p90, p99);
  EXPECT_LE(p99, p999);
  EXPECT_LE(p999, max);
  // Sessions are deleted at the end.
  EXPECT_EQ(SessionsOnServer(), 0u);
}

TEST_F(LoadgenTest, OpenLoopBatchedStreamsKeepSessions) {
  // 4 sessions, 2 per stream, 20 steps/s per stream for 1 s.
  ProcessResult r =
      Loadgen({"--sessions=4", "--sessions-per-stream=2", "--head-dim=16",
               "--rate=20", "--duration=1s", "--warmup=0s", "--dtype=f16",
               "--json", "--quiet", "--keep-sessions"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");  // --quiet
  google::protobuf::Struct report;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &report).ok())
      << r.out;
  EXPECT_EQ(Number(report, "streams"), 2);
  EXPECT_EQ(Number(report, "errors_total"), 0);
  // Open loop: about 20 steps per stream in the second (the schedule, not
  // the server, sets the count; a slack of a few steps for start-up).
  const double steps = Number(report, "steps");
  EXPECT_GE(steps, 30);
  EXPECT_LE(steps, 42);
  EXPECT_EQ(Number(report, "tokens"), steps * 2);
  EXPECT_EQ(SessionsOnServer(), 4u);
}

// A server that sheds (1 worker, 1 queued task, every entry on the pool)
// ends a Decode stream with RESOURCE_EXHAUSTED. Without --reopen-streams
// each stream can fail at most once; with it the streams come back, so the
// count exceeds the stream count and steps still get answered.
TEST_F(LoadgenTest, ReopenStreamsKeepsLoadOnASheddingServer) {
  server::ServerOptions options = testing::TestServerOptions(1);
  options.max_queued_tasks = 1;
  options.decode_inline_work_limit = 0;
  auto shedding = server::Server::Start(options);
  ASSERT_TRUE(shedding.ok()) << shedding.status();
  const std::string address = testing::LoopbackAddress(**shedding);
  auto run = [&](bool reopen) {
    std::vector<std::string> args = {KVSKETCH_LOADGEN_PATH,
                                     "--sessions=16",
                                     "--head-dim=64",
                                     "--duration=1s",
                                     "--warmup=0s",
                                     "--json",
                                     "--quiet",
                                     "--server=" + address};
    if (reopen) args.push_back("--reopen-streams");
    ProcessResult r = RunProcess(args);
    EXPECT_EQ(r.exit_code, 1) << r.err;  // refusals were counted
    google::protobuf::Struct report;
    EXPECT_TRUE(
        google::protobuf::util::JsonStringToMessage(r.out, &report).ok())
        << r.out;
    return report;
  };
  google::protobuf::Struct once = run(false);
  const double once_errors = Number(once, "errors_total");
  EXPECT_GE(once_errors, 1);
  EXPECT_LE(once_errors, 16);  // at most one end per stream
  google::protobuf::Struct reopened = run(true);
  const auto& errors = reopened.fields().at("errors").struct_value().fields();
  ASSERT_TRUE(errors.contains("RESOURCE_EXHAUSTED")) << reopened.DebugString();
  EXPECT_GT(errors.at("RESOURCE_EXHAUSTED").number_value(), 16);
  EXPECT_EQ(Number(reopened, "errors_total"),
            errors.at("RESOURCE_EXHAUSTED").number_value());
  EXPECT_GT(Number(reopened, "steps"), 0);
  (*shedding)->Shutdown(absl::Seconds(5)).IgnoreError();
}

TEST_F(LoadgenTest, BadFlagsAreUsageErrors) {
  ProcessResult r = Loadgen({"--sessions=0"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--sessions"));
  ProcessResult q = Loadgen({"--kv-heads=3", "--query-heads=4"});
  EXPECT_EQ(q.exit_code, 2);
  EXPECT_THAT(q.err, HasSubstr("--query-heads: 4 is not a multiple"));
  ProcessResult d = Loadgen({"--duration=forever"});
  EXPECT_EQ(d.exit_code, 2);
  EXPECT_THAT(d.err, HasSubstr("--duration"));
}

}  // namespace
}  // namespace kvsketch::client
