// `kvsketch llama` end to end (issue #6): --help, usage errors (exit 2),
// failures (exit 1) naming the checkpoint, generation locally and on an
// in-process server, --compare, and the --dump-trace round trip into
// `kvsketch eval` and `kvsketch calibrate`.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/attention_client.h"
#include "client/llama/backends.h"
#include "client/llama/checkpoint.h"
#include "client/llama/forward.h"
#include "client/llama/generate.h"
#include "core/io/npy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/client/test_server.h"
#include "tests/client/test_util.h"
#include "tests/core/testing/reference_attention.h"

namespace kvsketch::llama {
namespace {

using ::kvsketch::testing::ProcessResult;
using ::kvsketch::testing::RandomNormal;
using ::kvsketch::testing::RunProcess;
using ::testing::HasSubstr;
using ::testing::Not;

// A small random model: dim 32, 3 layers, 4 query heads over 2 KV heads,
// head_dim 8, vocab 40, seq_len 64.
LlamaCheckpoint RandomCheckpoint() {
  LlamaCheckpoint ck;
  LlamaConfig& c = ck.config;
  c.dim = 32;
  c.hidden_dim = 48;
  c.n_layers = 3;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.vocab_size = 40;
  c.seq_len = 64;
  c.shared_classifier = false;
  const int64_t d = c.dim, f = c.hidden_dim, l = c.n_layers, kv = c.kv_dim();
  const double s = 1 / std::sqrt(double(d));
  auto ones = [](int64_t n) { return std::vector<float>(n, 1.0f); };
  ck.token_embedding = RandomNormal(21, c.vocab_size * d);
  ck.rms_att = ones(l * d);
  ck.wq = RandomNormal(22, l * d * d, 2 * s);
  ck.wk = RandomNormal(23, l * kv * d, 2 * s);
  ck.wv = RandomNormal(24, l * kv * d, s);
  ck.wo = RandomNormal(25, l * d * d, s);
  ck.rms_ffn = ones(l * d);
  ck.w1 = RandomNormal(26, l * f * d, s);
  ck.w2 = RandomNormal(27, l * d * f, 1 / std::sqrt(double(f)));
  ck.w3 = RandomNormal(28, l * f * d, s);
  ck.rms_final = ones(d);
  ck.classifier = RandomNormal(29, c.vocab_size * d, 2 * s);
  return ck;
}

std::vector<int> ParseIds(const std::string& text) {
  std::vector<int> ids;
  for (absl::string_view p :
       absl::StrSplit(text, absl::ByAnyChar(" \n"), absl::SkipEmpty())) {
    int id = 0;
    EXPECT_TRUE(absl::SimpleAtoi(p, &id)) << p;
    ids.push_back(id);
  }
  return ids;
}

bool WriteFileForTest(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  return out.good();
}

class LlamaCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // The checkpoint default comes from $KVSKETCH_MODEL; the tests set it
    // per child process, which only works if the parent has none (getenv
    // returns the first of duplicate entries).
    for (const char* var : {"KVSKETCH_LLAMA_CHECKPOINT", "KVSKETCH_MODEL"}) {
      const char* p = std::getenv(var);
      if (stories_path_.empty() && p != nullptr && *p) stories_path_ = p;
    }
    if (stories_path_.empty()) stories_path_ = "../shared/data/stories260K.bin";
    ::unsetenv("KVSKETCH_MODEL");
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
  void SetUp() override {
    dir_ = testing::MakeTempDir();
    model_path_ = Path("tiny.bin");
    ASSERT_TRUE(WriteCheckpoint(model_path_, RandomCheckpoint()).ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  ProcessResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), KVSKETCH_CLI_PATH);
    return RunProcess(args);
  }
  // `kvsketch llama --checkpoint <tiny> args...`
  ProcessResult Llama(std::vector<std::string> args) {
    args.insert(args.begin(), {"llama", "--checkpoint", model_path_});
    return Cli(args);
  }
  std::string Path(const std::string& name) const {
    return absl::StrCat(dir_, "/", name);
  }

  static server::Server* server_;
  static std::string address_;
  static std::string stories_path_;
  std::string dir_, model_path_;
};

server::Server* LlamaCliTest::server_ = nullptr;
std::string LlamaCliTest::address_;
std::string LlamaCliTest::stories_path_;

TEST_F(LlamaCliTest, HelpDescribesTheCommand) {
  ProcessResult top = Cli({"--help"});
  EXPECT_EQ(top.exit_code, 0);
  EXPECT_THAT(top.out, HasSubstr("  llama "));
  ProcessResult help = Cli({"llama", "--help"});
  EXPECT_EQ(help.exit_code, 0) << help.err;
  EXPECT_THAT(help.out, HasSubstr("usage: kvsketch llama"));
  for (const char* opt :
       {"--checkpoint FILE", "--spec SPEC", "--tokens N", "--temperature T",
        "--seed S", "--prompt FILE", "--local", "--remote", "--compare LIST",
        "--dump-trace DIR", "--json", "--quiet", "--server HOST:PORT"}) {
    EXPECT_THAT(help.out, HasSubstr(opt)) << opt;
  }
  EXPECT_THAT(help.out, HasSubstr("$KVSKETCH_MODEL"));
  ProcessResult env = RunProcess({KVSKETCH_CLI_PATH, "llama", "--help"},
                                 {"KVSKETCH_MODEL=/models/x.bin"});
  EXPECT_THAT(env.out, HasSubstr("(default: /models/x.bin)"));
}

TEST_F(LlamaCliTest, UsageErrorsExitTwo) {
  const struct {
    std::vector<std::string> args;
    const char* message;
  } cases[] = {
      {{"--bogus"}, "unknown option '--bogus'"},
      {{"--tokens", "x"}, "--tokens: expected an integer"},
      {{"--tokens", "0"}, "--tokens must be at least 1"},
      {{"--temperature", "-1"}, "--temperature must be a finite value >= 0"},
      {{"--local", "--remote"}, "either --local or --remote"},
      {{"--local", "--server", "127.0.0.1:1"}, "--local and --server"},
      {{"--local", "--spec", "nope"}, "--spec: "},
      {{"--compare", "exact;nope"}, "--compare: "},
      {{"--compare", " ; "}, "--compare is empty"},
      {{"--compare", "exact", "--spec", "topk"},
       "--spec applies to generation"},
      // seq_len 64: BOS + 64 tokens is the most.
      {{"--local", "--tokens", "65"}, "--tokens: 65 after a prompt of 1"},
  };
  for (const auto& c : cases) {
    ProcessResult r = Llama(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.message << "\n" << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.message));
  }
}

TEST_F(LlamaCliTest, CheckpointAndPromptFailuresExitOne) {
  ProcessResult missing =
      Cli({"llama", "--local", "--checkpoint", Path("absent.bin")});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("NOT_FOUND"));
  EXPECT_THAT(missing.err, HasSubstr(Path("absent.bin")));
  // The default path is the documented one, relative to the working dir.
  ProcessResult dflt = RunProcess({KVSKETCH_CLI_PATH, "llama", "--local"},
                                  {"KVSKETCH_MODEL=" + Path("nowhere.bin")});
  EXPECT_EQ(dflt.exit_code, 1);
  EXPECT_THAT(dflt.err, HasSubstr(Path("nowhere.bin")));

  std::filesystem::resize_file(model_path_, 1000);
  ProcessResult truncated = Llama({"--local"});
  EXPECT_EQ(truncated.exit_code, 1);
  EXPECT_THAT(truncated.err, HasSubstr("DATA_LOSS"));
  EXPECT_THAT(truncated.err, HasSubstr("1000 bytes"));

  // No server listening: UNAVAILABLE from CreateSession, exit 1.
  ASSERT_TRUE(WriteCheckpoint(model_path_, RandomCheckpoint()).ok());
  ProcessResult down =
      Llama({"--server", "127.0.0.1:1", "--timeout", "5s", "--tokens", "2"});
  EXPECT_EQ(down.exit_code, 1);
  EXPECT_THAT(down.err, HasSubstr("UNAVAILABLE"));
}

TEST_F(LlamaCliTest, GeneratesLocallyAndOnTheServerAlike) {
  ProcessResult local =
      Llama({"--local", "--tokens", "40", "--seed", "3", "--quiet"});
  ASSERT_EQ(local.exit_code, 0) << local.err;
  EXPECT_EQ(local.err, "");
  const std::vector<int> ids = ParseIds(local.out);
  ASSERT_EQ(ids.size(), 41u);
  EXPECT_EQ(ids[0], kBosToken);
  for (int id : ids) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, 40);
  }
  ProcessResult remote =
      Llama({"--tokens", "40", "--seed", "3", "--server", address_});
  ASSERT_EQ(remote.exit_code, 0) << remote.err;
  EXPECT_EQ(ParseIds(remote.out), ids);
  EXPECT_THAT(remote.err, HasSubstr("generated 40 tokens after a prompt of 1"));
  EXPECT_THAT(remote.err, HasSubstr("tokens/s; attention exact:store=f32 "
                                    "(server " +
                                    address_ + ")"));
  // The session is gone.
  auto client = client::AttentionClient::Connect(address_);
  auto sessions = client->ListSessions();
  ASSERT_TRUE(sessions.ok());
  EXPECT_TRUE(sessions->empty());
  // A different seed gives a different sample.
  ProcessResult other =
      Llama({"--local", "--tokens", "40", "--seed", "4", "--quiet"});
  EXPECT_NE(ParseIds(other.out), ids);
}

TEST_F(LlamaCliTest, PromptIdsAndJson) {
  ASSERT_TRUE(WriteFileForTest(Path("prompt.txt"), "1 7 7\n9\n"));
  ProcessResult r =
      Llama({"--local", "--prompt", Path("prompt.txt"), "--tokens", "5",
             "--temperature", "0", "--json", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"prompt_len\": 4, \"tokens\": 5, "
                               "\"positions\": 8"));
  EXPECT_THAT(r.out, HasSubstr("\"ids\": [1, 7, 7, 9, "));
  EXPECT_THAT(r.out, HasSubstr("\"spec\": \"exact:store=f32\""));
  EXPECT_THAT(r.out, HasSubstr("\"n_kv_heads\": 2"));
  // Greedy decoding matches the library's argmax path.
  auto ck = LoadCheckpoint(model_path_);
  ASSERT_TRUE(ck.ok());
  LlamaModel model(std::move(*ck));
  auto backend = LocalBackend::Create(model.config(), "exact");
  GenerateOptions opt;
  opt.tokens = 5;
  opt.temperature = 0;
  auto g = Generate(model, **backend, {1, 7, 7, 9}, opt);
  ASSERT_TRUE(g.ok());
  std::string want = "\"ids\": [";
  for (size_t i = 0; i < g->ids.size(); ++i) {
    absl::StrAppend(&want, i ? ", " : "", g->ids[i]);
  }
  EXPECT_THAT(r.out, HasSubstr(want + "]"));

  ASSERT_TRUE(WriteFileForTest(Path("bad.txt"), "1 40"));
  ProcessResult bad = Llama({"--local", "--prompt", Path("bad.txt")});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.err, HasSubstr(Path("bad.txt")));
  EXPECT_THAT(bad.err, HasSubstr("item 2 (id 40) is outside the vocabulary"));
  // A 60-id prompt leaves room for 5 tokens only.
  std::string long_prompt;
  for (int i = 0; i < 60; ++i) absl::StrAppend(&long_prompt, "2 ");
  ASSERT_TRUE(WriteFileForTest(Path("long.txt"), long_prompt));
  ProcessResult too_long =
      Llama({"--local", "--prompt", Path("long.txt"), "--tokens", "6"});
  EXPECT_EQ(too_long.exit_code, 2);
  EXPECT_THAT(too_long.err, HasSubstr("at most 5 tokens"));
}

TEST_F(LlamaCliTest, CompareTableAndJson) {
  ProcessResult r = Llama({"--compare", "exact;exact:store=f16;topk:k=4",
                           "--tokens", "48", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("| spec | positions | greedy agreement | "
                               "mean KL (nats) | perplexity | state bytes | "
                               "tokens/s |"));
  EXPECT_THAT(r.out,
              HasSubstr("| `exact:store=f32` (reference) | 48 | 1.0000 | 0 |"));
  EXPECT_THAT(r.out, HasSubstr("| `exact:store=f32` | 48 | 1.0000 | 0 |"));
  EXPECT_THAT(r.out, HasSubstr("| `exact:store=f16` | 48 |"));
  EXPECT_THAT(r.out, HasSubstr("| `topk:alpha=1,c=0.5,k=4,"));
  EXPECT_THAT(r.out, HasSubstr("specs in-process"));
  ProcessResult j =
      Llama({"--compare", "exact;topk:k=4", "--tokens", "16", "--json",
             "--remote", "--server", address_, "--quiet"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  EXPECT_THAT(j.out, HasSubstr("\"attention\": \"server " + address_ + "\""));
  EXPECT_THAT(j.out, HasSubstr("\"rows\": [{\"spec\": \"exact:store=f32\", "
                               "\"reference\": true, \"positions\": 16, "
                               "\"greedy_agreement\": 1, \"mean_kl\": 0,"));
  EXPECT_THAT(j.out, HasSubstr("{\"spec\": \"exact:store=f32\", "
                               "\"reference\": false, \"positions\": 16, "
                               "\"greedy_agreement\": 1, \"mean_kl\": 0,"));
  EXPECT_THAT(j.out, Not(HasSubstr("nan")));
}

TEST_F(LlamaCliTest, DumpTraceRoundTripsIntoEvalAndCalibrate) {
  const std::string trace = Path("trace");
  ProcessResult r = Llama(
      {"--local", "--tokens", "30", "--seed", "9", "--dump-trace", trace});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err,
              HasSubstr("wrote " + trace + "/{q,k,v}.npy (30 positions)"));
  const std::vector<int> ids = ParseIds(r.out);
  ASSERT_EQ(ids.size(), 31u);
  auto q = ReadNpy(trace + "/q.npy");
  auto k = ReadNpy(trace + "/k.npy");
  auto v = ReadNpy(trace + "/v.npy");
  ASSERT_TRUE(q.ok() && k.ok() && v.ok());
  EXPECT_THAT(q->shape, ::testing::ElementsAre(3, 4, 30, 8));
  EXPECT_THAT(k->shape, ::testing::ElementsAre(3, 2, 30, 8));
  EXPECT_THAT(v->shape, ::testing::ElementsAre(3, 2, 30, 8));
  // Re-run the printed ids in process and check every q/k/v row the forward
  // hands to attention is the one in the files.
  auto ck = LoadCheckpoint(model_path_);
  ASSERT_TRUE(ck.ok());
  LlamaModel model(std::move(*ck));
  auto local = LocalBackend::Create(model.config(), "exact");
  RecordingBackend rec(model.config(), local->get());
  std::vector<float> logits(40);
  for (int pos = 0; pos < 30; ++pos) {
    ASSERT_TRUE(model.Forward(ids[pos], pos, rec, absl::MakeSpan(logits)).ok());
  }
  EXPECT_EQ(*rec.Queries(), q->data);
  EXPECT_EQ(*rec.Keys(), k->data);
  EXPECT_EQ(*rec.Values(), v->data);

  ProcessResult eval =
      Cli({"eval", "--trace", trace, "--specs", "exact;topk:k=4", "--quiet"});
  ASSERT_EQ(eval.exit_code, 0) << eval.err;
  EXPECT_THAT(eval.out,
              HasSubstr("| dir:" + trace + " | prefill | `exact` | 30 |"));
  EXPECT_THAT(eval.out, HasSubstr("`topk:k=4`"));
  ProcessResult calibrate =
      Cli({"calibrate", "--trace", trace, "--tau", "0.1", "--json"});
  ASSERT_EQ(calibrate.exit_code, 0) << calibrate.err;
  EXPECT_THAT(calibrate.out, HasSubstr("\"layer\""));

  // --compare writes the reference run's trace.
  ProcessResult cmp = Llama({"--compare", "exact", "--tokens", "12",
                             "--dump-trace", Path("trace2"), "--quiet"});
  ASSERT_EQ(cmp.exit_code, 0) << cmp.err;
  auto q2 = ReadNpy(Path("trace2/q.npy"));
  ASSERT_TRUE(q2.ok());
  EXPECT_THAT(q2->shape, ::testing::ElementsAre(3, 4, 12, 8));
}

TEST_F(LlamaCliTest, Stories260KOnTheServer) {
  const std::string path = stories_path_;
  if (!std::filesystem::exists(path)) {
    GTEST_SKIP() << path << " is absent (set KVSKETCH_LLAMA_CHECKPOINT)";
  }
  ProcessResult remote = Cli({"llama", "--checkpoint", path, "--tokens", "128",
                              "--seed", "2", "--server", address_});
  ASSERT_EQ(remote.exit_code, 0) << remote.err;
  ProcessResult local = Cli({"llama", "--checkpoint", path, "--tokens", "128",
                             "--seed", "2", "--local", "--quiet"});
  ASSERT_EQ(local.exit_code, 0) << local.err;
  EXPECT_EQ(ParseIds(remote.out), ParseIds(local.out));
  EXPECT_EQ(ParseIds(local.out).size(), 129u);
}

}  // namespace
}  // namespace kvsketch::llama
