// The `kvsketch` binary end to end against an in-process server.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/attention_client.h"
#include "core/io/npy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/client/test_server.h"
#include "tests/client/test_util.h"
#include "tests/core/testing/reference_attention.h"

namespace kvsketch::client {
namespace {

using ::kvsketch::testing::MaxAbsDiff;
using ::kvsketch::testing::MultiHeadReference;
using ::kvsketch::testing::ProcessResult;
using ::kvsketch::testing::RandomNormal;
using ::kvsketch::testing::RunProcess;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto server = testing::StartTestServer();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
    address_ = testing::LoopbackAddress(*server_);
  }
  static void TearDownTestSuite() {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(5)).IgnoreError();
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { dir_ = testing::MakeTempDir(); }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Runs `kvsketch args... --server <in-process server>`.
  ProcessResult Cli(std::vector<std::string> args, bool add_server = true) {
    args.insert(args.begin(), KVSKETCH_CLI_PATH);
    if (add_server) {
      args.push_back("--server");
      args.push_back(address_);
    }
    return RunProcess(args);
  }

  std::string Path(const std::string& name) const {
    return absl::StrCat(dir_, "/", name);
  }

  static server::Server* server_;
  static std::string address_;
  std::string dir_;
};

server::Server* CliTest::server_ = nullptr;
std::string CliTest::address_;

std::string Trimmed(const std::string& s) {
  return std::string(absl::StripAsciiWhitespace(s));
}

TEST_F(CliTest, HelpListsCommandsAndOptions) {
  ProcessResult top = Cli({"--help"}, /*add_server=*/false);
  EXPECT_EQ(top.exit_code, 0) << top.err;
  for (const char* cmd : {"create", "list", "get", "delete", "append", "attend",
                          "export", "import", "health"}) {
    EXPECT_THAT(top.out, HasSubstr(absl::StrCat("  ", cmd, " "))) << cmd;
  }
  ProcessResult append = Cli({"append", "--help"}, /*add_server=*/false);
  EXPECT_EQ(append.exit_code, 0) << append.err;
  EXPECT_THAT(append.out, HasSubstr("usage: kvsketch append"));
  EXPECT_THAT(append.out, HasSubstr("--chunk-tokens N"));
  EXPECT_THAT(append.out, HasSubstr("(default: f32)"));
  EXPECT_THAT(append.out, HasSubstr("(default: 127.0.0.1:50051)"));
}

TEST_F(CliTest, EnvironmentSetsDefaultServer) {
  ProcessResult r = RunProcess({KVSKETCH_CLI_PATH, "list", "--help"},
                               {"KVSKETCH_SERVER=example.test:7000"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("(default: example.test:7000)"));
}

TEST_F(CliTest, UsageErrorsExitTwo) {
  ProcessResult none = Cli({}, /*add_server=*/false);
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_THAT(none.err, HasSubstr("usage: kvsketch"));

  ProcessResult unknown_cmd = Cli({"frobnicate"});
  EXPECT_EQ(unknown_cmd.exit_code, 2);
  EXPECT_THAT(unknown_cmd.err, HasSubstr("unknown command 'frobnicate'"));

  ProcessResult unknown_opt = Cli({"list", "--bogus=1"});
  EXPECT_EQ(unknown_opt.exit_code, 2);
  EXPECT_THAT(unknown_opt.err, HasSubstr("unknown option '--bogus'"));
  EXPECT_THAT(unknown_opt.err, HasSubstr("--page-size"));

  ProcessResult missing = Cli({"create", "--layers", "1"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_THAT(missing.err, HasSubstr("missing required option --kv-heads"));

  ProcessResult bad_int =
      Cli({"create", "--layers=x", "--kv-heads=1", "--head-dim=4"});
  EXPECT_EQ(bad_int.exit_code, 2);
  EXPECT_THAT(bad_int.err, HasSubstr("--layers: expected an integer"));

  ProcessResult positional = Cli({"get"});
  EXPECT_EQ(positional.exit_code, 2);
  EXPECT_THAT(positional.err, HasSubstr("expected ID"));

  ProcessResult dtype = Cli(
      {"attend", "--session=s", "--layer=0", "--queries=q.npy", "--dtype=f8"});
  EXPECT_EQ(dtype.exit_code, 2);
  EXPECT_THAT(dtype.err, HasSubstr("dtype: unknown value 'f8'"));
}

TEST_F(CliTest, UnknownSessionExitsOneWithCode) {
  ProcessResult get = Cli({"get", "no-such-session"});
  EXPECT_EQ(get.exit_code, 1);
  EXPECT_THAT(get.err, HasSubstr("error: NOT_FOUND: "));
  ProcessResult del = Cli({"delete", "no-such-session"});
  EXPECT_EQ(del.exit_code, 1);
  EXPECT_THAT(del.err, HasSubstr("error: NOT_FOUND: "));
}

TEST_F(CliTest, CreateAppendAttendMatchesReference) {
  constexpr int kKv = 2, kQ = 4, kD = 8, kDv = 8;
  constexpr int64_t kT = 40;
  ProcessResult create =
      Cli({"create", "--layers=2", "--kv-heads", "2", "--query-heads=4",
           "--head-dim=8", "--spec=exact", "--id=cli-e2e"});
  ASSERT_EQ(create.exit_code, 0) << create.err;
  EXPECT_EQ(Trimmed(create.out), "cli-e2e");

  std::vector<float> k = RandomNormal(31, kKv * kT * kD);
  std::vector<float> v = RandomNormal(32, kKv * kT * kDv);
  std::vector<float> q = RandomNormal(33, kQ * 1 * kD);
  ASSERT_TRUE(WriteNpy(Path("k.npy"), {kKv, kT, kD}, k).ok());
  ASSERT_TRUE(WriteNpy(Path("v.npy"), {kKv, kT, kDv}, v).ok());
  ASSERT_TRUE(WriteNpy(Path("q.npy"), {kQ, 1, kD}, q).ok());

  ProcessResult append =
      Cli({"append", "--session=cli-e2e", "--keys", Path("k.npy"), "--values",
           Path("v.npy"), "--layer=1", "--chunk-tokens=9"});
  ASSERT_EQ(append.exit_code, 0) << append.err;
  EXPECT_THAT(append.out, HasSubstr("appended 40 tokens to layer 1"));

  ProcessResult attend =
      Cli({"attend", "--session=cli-e2e", "--layer=1", "--queries",
           Path("q.npy"), "--out", Path("out.npy")});
  ASSERT_EQ(attend.exit_code, 0) << attend.err;
  EXPECT_THAT(attend.out, HasSubstr("output [4, 1, 8], layer tokens 40"));
  EXPECT_THAT(attend.out, HasSubstr("per-head norms:"));

  auto out = ReadNpy(Path("out.npy"));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(out->shape, ElementsAre(kQ, 1, kDv));
  std::vector<double> ref =
      MultiHeadReference(q, kQ, 1, k, v, kKv, kT, kD, kDv, 1.0 / std::sqrt(kD));
  EXPECT_LT(MaxAbsDiff(out->data, ref), 2e-5);

  // attend --keys/--values appends this step's token first, then attends.
  std::vector<float> k1 = RandomNormal(34, kKv * kD);
  std::vector<float> v1 = RandomNormal(35, kKv * kDv);
  ASSERT_TRUE(WriteNpy(Path("k1.npy"), {kKv, 1, kD}, k1).ok());
  ASSERT_TRUE(WriteNpy(Path("v1.npy"), {kKv, 1, kDv}, v1).ok());
  ProcessResult step =
      Cli({"attend", "--session=cli-e2e", "--layer=1", "--queries",
           Path("q.npy"), "--keys", Path("k1.npy"), "--values", Path("v1.npy"),
           "--out", Path("out1.npy")});
  ASSERT_EQ(step.exit_code, 0) << step.err;
  EXPECT_THAT(step.out, HasSubstr("layer tokens 41"));
  auto out1 = ReadNpy(Path("out1.npy"));
  ASSERT_TRUE(out1.ok()) << out1.status();
  std::vector<double> ref1 = MultiHeadReference(
      q, kQ, 1, testing::ConcatTokens(k, kT, k1, 1, kKv, kD),
      testing::ConcatTokens(v, kT, v1, 1, kKv, kDv), kKv, kT + 1, kD, kDv,
      1.0 / std::sqrt(kD), /*causal_new=*/1);
  EXPECT_LT(MaxAbsDiff(out1->data, ref1), 2e-5);
  ProcessResult half =
      Cli({"attend", "--session=cli-e2e", "--layer=1", "--queries",
           Path("q.npy"), "--keys", Path("k1.npy")});
  EXPECT_EQ(half.exit_code, 2);
  EXPECT_THAT(half.err, HasSubstr("--keys and --values go together"));

  ProcessResult get = Cli({"get", "cli-e2e", "--json"});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  EXPECT_THAT(get.out, HasSubstr("\"session_id\": \"cli-e2e\""));
  EXPECT_THAT(get.out, HasSubstr("\"tokens_per_layer\""));

  ProcessResult list = Cli({"list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_THAT(list.out, HasSubstr("SESSION_ID"));
  EXPECT_THAT(list.out, HasSubstr("cli-e2e"));

  ProcessResult del = Cli({"delete", "cli-e2e"});
  EXPECT_EQ(del.exit_code, 0) << del.err;
  ProcessResult list_after = Cli({"list"});
  EXPECT_THAT(list_after.out, Not(HasSubstr("cli-e2e")));
}

TEST_F(CliTest, RankFourTraceFillsEveryLayerAndSnapshotsRoundTrip) {
  constexpr int kL = 3, kKv = 2, kD = 4;
  constexpr int64_t kT = 10;
  ProcessResult create =
      Cli({"create", "--layers=3", "--kv-heads=2", "--head-dim=4", "--json"});
  ASSERT_EQ(create.exit_code, 0) << create.err;
  // --json prints the SessionInfo; pull the id out of it.
  const size_t at = create.out.find("\"session_id\": \"");
  ASSERT_NE(at, std::string::npos) << create.out;
  const size_t begin = at + std::string("\"session_id\": \"").size();
  const std::string id =
      create.out.substr(begin, create.out.find('"', begin) - begin);
  ASSERT_FALSE(id.empty());

  std::vector<float> k = RandomNormal(41, kL * kKv * kT * kD);
  std::vector<float> v = RandomNormal(42, kL * kKv * kT * kD);
  ASSERT_TRUE(WriteNpy(Path("k4.npy"), {kL, kKv, kT, kD}, k).ok());
  ASSERT_TRUE(WriteNpy(Path("v4.npy"), {kL, kKv, kT, kD}, v).ok());
  ProcessResult with_layer =
      Cli({"append", "--session", id, "--keys", Path("k4.npy"), "--values",
           Path("v4.npy"), "--layer=1"});
  EXPECT_EQ(with_layer.exit_code, 2);
  EXPECT_THAT(with_layer.err, HasSubstr("--layer"));
  ProcessResult append =
      Cli({"append", "--session", id, "--keys", Path("k4.npy"), "--values",
           Path("v4.npy"), "--dtype=bf16", "--chunk-tokens=3"});
  ASSERT_EQ(append.exit_code, 0) << append.err;
  EXPECT_THAT(append.out, HasSubstr("tokens per layer: 10 10 10"));

  ProcessResult exported =
      Cli({"export", "--session", id, "--out", Path("snap.bin")});
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  ProcessResult imported =
      Cli({"import", "--in", Path("snap.bin"), "--id=cli-copy"});
  ASSERT_EQ(imported.exit_code, 0) << imported.err;
  EXPECT_EQ(Trimmed(imported.out), "cli-copy");

  // The copy answers exactly like the original.
  std::vector<float> q = RandomNormal(43, kKv * kD);
  ASSERT_TRUE(WriteNpy(Path("q2.npy"), {kKv, kD}, q).ok());
  ProcessResult a = Cli({"attend", "--session", id, "--layer=2", "--queries",
                         Path("q2.npy"), "--out", Path("a.npy")});
  ProcessResult b = Cli({"attend", "--session=cli-copy", "--layer=2",
                         "--queries", Path("q2.npy"), "--out", Path("b.npy")});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  auto out_a = ReadNpy(Path("a.npy"));
  auto out_b = ReadNpy(Path("b.npy"));
  ASSERT_TRUE(out_a.ok() && out_b.ok());
  EXPECT_EQ(out_a->data, out_b->data);

  ProcessResult missing_file =
      Cli({"import", "--in", Path("does-not-exist.bin")});
  EXPECT_EQ(missing_file.exit_code, 1);
  EXPECT_THAT(missing_file.err, HasSubstr("does-not-exist.bin"));
}

TEST_F(CliTest, LargeAppendIsChunkedWithProgress) {
  // 2 x 8.4 MB of f32: above the 16 MiB progress threshold, and cut into
  // ~2 MiB messages by the automatic chunk size.
  constexpr int64_t kT = 8200;
  constexpr int kD = 256;
  ProcessResult create = Cli({"create", "--layers=1", "--kv-heads=1",
                              "--head-dim=256", "--id=cli-large"});
  ASSERT_EQ(create.exit_code, 0) << create.err;
  std::vector<float> k = RandomNormal(51, kT * kD);
  ASSERT_TRUE(WriteNpy(Path("kl.npy"), {1, kT, kD}, k).ok());
  ProcessResult append = Cli({"append", "--session=cli-large", "--keys",
                              Path("kl.npy"), "--values", Path("kl.npy")});
  ASSERT_EQ(append.exit_code, 0) << append.err;
  EXPECT_THAT(append.err, HasSubstr("append: 8200/8200 tokens (100%)"));
  // More than one message went out (a partial count was reported).
  EXPECT_THAT(append.err, HasSubstr("/8200 tokens ("));
  EXPECT_GT(append.err.find("/8200 tokens (100%)"), append.err.find("/8200"));
  EXPECT_THAT(append.out, HasSubstr("tokens per layer: 8200"));
  EXPECT_EQ(Cli({"delete", "cli-large"}).exit_code, 0);
}

TEST_F(CliTest, HealthReportsServing) {
  ProcessResult ok = Cli({"health"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(Trimmed(ok.out), "SERVING");
  ProcessResult unknown = Cli({"health", "--service=no.such.Service"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_THAT(unknown.err, HasSubstr("error: NOT_FOUND"));
  // Nothing listens on port 1: the check fails with exit 1.
  ProcessResult down = Cli({"health", "--server=127.0.0.1:1", "--timeout=2s"},
                           /*add_server=*/false);
  EXPECT_EQ(down.exit_code, 1);
  EXPECT_THAT(down.err, HasSubstr("error: UNAVAILABLE"));
}

}  // namespace
}  // namespace kvsketch::client
