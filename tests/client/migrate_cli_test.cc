// `kvsketch migrate` end to end between two in-process servers: the moved
// session answers bit-identically (same Attend outputs, before and after
// further decoding) and is gone from the source; every failure leaves the
// source intact with a message saying so.
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/attention_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/client/test_server.h"
#include "tests/client/test_util.h"
#include "tests/core/testing/reference_attention.h"

namespace kvsketch::client {
namespace {

using ::kvsketch::testing::ProcessResult;
using ::kvsketch::testing::RandomNormal;
using ::kvsketch::testing::RunProcess;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int kLayers = 2;
constexpr int kKvHeads = 2;
constexpr int kQueryHeads = 4;  // GQA: two query heads per KV head
constexpr int kDim = 16;
constexpr int64_t kTokens = 48;

std::unique_ptr<server::Server> StartServer() {
  auto server = testing::StartTestServer(1);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

class MigrateCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = StartServer();
    b_ = StartServer();
    ASSERT_NE(a_, nullptr);
    ASSERT_NE(b_, nullptr);
    client_a_ = AttentionClient::Connect(testing::LoopbackAddress(*a_));
    client_b_ = AttentionClient::Connect(testing::LoopbackAddress(*b_));
  }
  void TearDown() override {
    for (auto* s : {&a_, &b_}) {
      if (*s != nullptr) (*s)->Shutdown(absl::Seconds(5)).IgnoreError();
    }
  }

  ProcessResult Migrate(std::vector<std::string> args) {
    args.insert(args.begin(), {KVSKETCH_CLI_PATH, "migrate"});
    return RunProcess(args);
  }
  ProcessResult MigrateAtoB(const std::string& id) {
    return Migrate({"--session", id, "--from", testing::LoopbackAddress(*a_),
                    "--to", testing::LoopbackAddress(*b_)});
  }

  // A session on `client` with kTokens random tokens in every layer (the
  // same data for the same seed).
  void MakeSession(AttentionClient* client, const std::string& id,
                   const std::string& spec, uint64_t seed) {
    v1::SessionConfig config;
    config.set_num_layers(kLayers);
    config.set_num_kv_heads(kKvHeads);
    config.set_num_query_heads(kQueryHeads);
    config.set_head_dim(kDim);
    config.set_spec(spec);
    ASSERT_TRUE(client->CreateSession(config, id).ok()) << spec;
    const std::vector<int64_t> shape = {kLayers, kKvHeads, kTokens, kDim};
    const int64_t n = kLayers * kKvHeads * kTokens * kDim;
    const std::vector<float> k = RandomNormal(seed, n);
    const std::vector<float> v = RandomNormal(seed + 1, n);
    auto appended = client->AppendTokens(id, AttentionClient::kAllLayers,
                                         {shape, k}, {shape, v}, {});
    ASSERT_TRUE(appended.ok()) << appended.status();
  }

  // Attend outputs of every layer for fixed queries (and, with `step`, one
  // new token per layer appended first), concatenated.
  std::vector<float> Outputs(AttentionClient* client, const std::string& id,
                             uint64_t seed, bool step) {
    std::vector<float> all;
    for (int layer = 0; layer < kLayers; ++layer) {
      const std::vector<float> q =
          RandomNormal(seed + layer, kQueryHeads * kDim);
      const std::vector<float> k =
          RandomNormal(seed + 100 + layer, kKvHeads * kDim);
      const std::vector<float> v =
          RandomNormal(seed + 200 + layer, kKvHeads * kDim);
      TensorRef keys, values;
      if (step) {
        keys = {{kKvHeads, kDim}, k};
        values = {{kKvHeads, kDim}, v};
      }
      auto r =
          client->Attend(id, layer, keys, values, {{kQueryHeads, kDim}, q});
      EXPECT_TRUE(r.ok()) << r.status();
      if (!r.ok()) return {};
      all.insert(all.end(), r->output.data.begin(), r->output.data.end());
    }
    return all;
  }

  std::unique_ptr<server::Server> a_, b_;
  std::unique_ptr<AttentionClient> client_a_, client_b_;
};

bool BitIdentical(const std::vector<float>& x, const std::vector<float>& y) {
  return !x.empty() && x.size() == y.size() &&
         std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

// Every kind with state beyond a plain KV cache (feature summaries, evicted
// sets and heavy-hitter scores, f16 storage) must survive the move exactly.
// A twin session with the same data and queries stays on A: after the move,
// the same queries and the same next token give bit-identical outputs on B
// and on the twin.
TEST_F(MigrateCliTest, MovedSessionAnswersBitIdenticallyAndLeavesSource) {
  int i = 0;
  for (const std::string spec :
       {"exact", "exact:store=f16", "sketch:window=8,sinks=2", "topk",
        "evict:budget=16,sinks=2,window=4"}) {
    SCOPED_TRACE(spec);
    const std::string id = absl::StrCat("mig-", i);
    const std::string twin = absl::StrCat("twin-", i);
    ++i;
    MakeSession(client_a_.get(), id, spec, 10 * i);
    MakeSession(client_a_.get(), twin, spec, 10 * i);
    // The same queries on both: evict's heavy-hitter scores depend on them,
    // so this also checks that query-dependent state moves.
    const std::vector<float> before = Outputs(client_a_.get(), id, 7, false);
    ASSERT_TRUE(BitIdentical(before, Outputs(client_a_.get(), twin, 7, false)));

    ProcessResult r = MigrateAtoB(id);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr(absl::StrCat("migrated ", id, " from ")));
    EXPECT_THAT(r.out, HasSubstr("tokens per layer [48 48]"));

    // Gone from A, present on B with the same shape.
    auto on_a = client_a_->GetSession(id);
    EXPECT_TRUE(absl::IsNotFound(on_a.status())) << on_a.status();
    auto on_b = client_b_->GetSession(id);
    ASSERT_TRUE(on_b.ok()) << on_b.status();
    EXPECT_THAT(on_b->tokens_per_layer(), ElementsAre(kTokens, kTokens));

    // Same queries: same bits. Then one more decode step on both copies.
    EXPECT_TRUE(BitIdentical(before, Outputs(client_b_.get(), id, 7, false)));
    EXPECT_TRUE(BitIdentical(Outputs(client_a_.get(), twin, 9, true),
                             Outputs(client_b_.get(), id, 9, true)));
  }
}

TEST_F(MigrateCliTest, RenameAndKeepSource) {
  MakeSession(client_a_.get(), "orig", "exact", 1);
  ProcessResult copy = Migrate(
      {"--session", "orig", "--from", testing::LoopbackAddress(*a_), "--to",
       testing::LoopbackAddress(*b_), "--id", "copy", "--keep-source"});
  ASSERT_EQ(copy.exit_code, 0) << copy.err;
  EXPECT_THAT(copy.out, HasSubstr("copied orig from"));
  EXPECT_THAT(copy.out, HasSubstr(" as copy:"));
  EXPECT_TRUE(client_a_->GetSession("orig").ok());
  EXPECT_TRUE(client_b_->GetSession("copy").ok());
  EXPECT_TRUE(BitIdentical(Outputs(client_a_.get(), "orig", 3, false),
                           Outputs(client_b_.get(), "copy", 3, false)));

  // A rename on one server is allowed (the ids differ).
  ProcessResult rename =
      Migrate({"--session", "orig", "--from", testing::LoopbackAddress(*a_),
               "--to", testing::LoopbackAddress(*a_), "--id", "renamed"});
  ASSERT_EQ(rename.exit_code, 0) << rename.err;
  EXPECT_TRUE(absl::IsNotFound(client_a_->GetSession("orig").status()));
  EXPECT_TRUE(client_a_->GetSession("renamed").ok());
}

// Import refused (the id is taken on B): A keeps the session, B's own
// session of that id is untouched, and the message says so.
TEST_F(MigrateCliTest, FailedImportLeavesSourceIntact) {
  MakeSession(client_a_.get(), "taken", "exact", 1);
  v1::SessionConfig other;
  other.set_num_layers(1);
  other.set_num_kv_heads(1);
  other.set_num_query_heads(1);
  other.set_head_dim(4);
  ASSERT_TRUE(client_b_->CreateSession(other, "taken").ok());
  const std::vector<float> before = Outputs(client_a_.get(), "taken", 5, false);

  ProcessResult r = MigrateAtoB("taken");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("error: ALREADY_EXISTS: importing taken into"));
  EXPECT_THAT(r.err, HasSubstr("the session is unchanged on " +
                               testing::LoopbackAddress(*a_)));

  auto on_a = client_a_->GetSession("taken");
  ASSERT_TRUE(on_a.ok()) << on_a.status();
  EXPECT_THAT(on_a->tokens_per_layer(), ElementsAre(kTokens, kTokens));
  EXPECT_TRUE(
      BitIdentical(before, Outputs(client_a_.get(), "taken", 5, false)));
  auto on_b = client_b_->GetSession("taken");
  ASSERT_TRUE(on_b.ok()) << on_b.status();
  EXPECT_EQ(on_b->config().num_layers(), 1);
}

TEST_F(MigrateCliTest, UnreachableDestinationLeavesSourceIntact) {
  MakeSession(client_a_.get(), "stay", "exact", 1);
  // Port 1 on loopback: connection refused, UNAVAILABLE at once.
  ProcessResult r =
      Migrate({"--session", "stay", "--from", testing::LoopbackAddress(*a_),
               "--to", "127.0.0.1:1", "--timeout", "10s"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("error: UNAVAILABLE: importing stay into"));
  EXPECT_TRUE(client_a_->GetSession("stay").ok());
}

TEST_F(MigrateCliTest, UnknownSessionAndUsageErrors) {
  ProcessResult missing = MigrateAtoB("nope");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("error: NOT_FOUND: exporting nope from"));
  auto listed = client_b_->ListSessions();
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(listed->empty());

  ProcessResult no_to =
      Migrate({"--session", "x", "--from", testing::LoopbackAddress(*a_)});
  EXPECT_EQ(no_to.exit_code, 2);
  EXPECT_THAT(no_to.err, HasSubstr("missing required option --to"));

  ProcessResult same =
      Migrate({"--session", "x", "--from", testing::LoopbackAddress(*a_),
               "--to", testing::LoopbackAddress(*a_)});
  EXPECT_EQ(same.exit_code, 2);
  EXPECT_THAT(same.err, HasSubstr("--from and --to are both"));

  ProcessResult help = Migrate({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, HasSubstr("--keep-source"));
  EXPECT_THAT(help.out, ::testing::Not(HasSubstr("--server")));
}

}  // namespace
}  // namespace kvsketch::client
