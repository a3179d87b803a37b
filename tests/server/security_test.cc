// Security rules of docs/security.md, each proved here (issue #8 item 5):
// loopback default, the token file format, UNAUTHENTICATED without a valid
// bearer token on every RPC, tenant isolation on every RPC (another
// tenant's session answers exactly like a nonexistent one), import into the
// importer's tenant, ownership kept across a data_dir restart, unguessable
// server-made ids, and TLS configuration errors at start.
#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "client/attention_client.h"
#include "client/health_check.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/auth.h"
#include "server/server.h"
#include "server/session_manager.h"
#include "tests/server/server_test_util.h"
#include "tests/server/tls_test_certs.h"

namespace kvsketch::server {
namespace {

using ::kvsketch::client::AttentionClient;
using ::kvsketch::client::ClientOptions;
using ::kvsketch::client::TensorRef;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kTokenA[] = "tokA-0123456789abcdef0123456789";
constexpr char kTokenA2[] = "tokA2-fedcba9876543210fedcba98";
constexpr char kTokenB[] = "tokB-00112233445566778899aabbcc";

constexpr int kKvHeads = 1, kQueryHeads = 2, kDim = 4;

// Two tenants; alpha has two tokens (rotation), with comments, a blank
// line, a tab and padding spaces.
std::string TokensFile(const std::string& dir) {
  return kvsketch::testing::WriteTestFile(
      dir, "tokens",
      absl::StrCat("# tenant tokens\n\n", kTokenA, " alpha\n", kTokenA2,
                   "\talpha\n  ", kTokenB, "  beta  \n"));
}

v1::SessionConfig Config() {
  return testing::MakeConfig(/*layers=*/1, kKvHeads, kQueryHeads, kDim, kDim);
}

// --- Loopback default and address classification -------------------------

TEST(SecurityDefaultsTest, DefaultListenAddressIsLoopback) {
  const ServerOptions defaults;
  EXPECT_EQ(defaults.listen_address, "127.0.0.1:50051");
  EXPECT_TRUE(IsLoopbackListenAddress(defaults.listen_address));
  EXPECT_TRUE(IsLoopbackListenAddress(defaults.metrics_address));
  // Nothing is enabled that would need files the operator did not give.
  EXPECT_TRUE(defaults.tls_cert_file.empty());
  EXPECT_TRUE(defaults.auth_tokens_file.empty());
}

TEST(SecurityDefaultsTest, LoopbackClassification) {
  for (const char* yes : {"127.0.0.1:1", "127.3.2.1:50051", "[::1]:50051",
                          "localhost:80", "LOCALHOST:80", "unix:/tmp/s"}) {
    EXPECT_TRUE(IsLoopbackListenAddress(yes)) << yes;
  }
  for (const char* no :
       {"0.0.0.0:50051", "[::]:50051", ":50051", "10.0.0.1:50051",
        "[2001:db8::1]:1", "example.com:1", "128.0.0.1:1", "[::1:50051"}) {
    EXPECT_FALSE(IsLoopbackListenAddress(no)) << no;
  }
}

// --- Token file ---------------------------------------------------------

TEST(TokenFileTest, ParsesCommentsBlanksTabsAndRotation) {
  auto auth = TokenAuthenticator::Parse(
      absl::StrCat("# comment\n\n", kTokenA, " alpha\n", kTokenA2,
                   "\talpha\n   ", kTokenB, "   beta   \n"),
      "t");
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_EQ((*auth)->num_tokens(), 3);
  EXPECT_EQ((*auth)->num_tenants(), 2);
  EXPECT_EQ(*(*auth)->Authenticate(absl::StrCat("Bearer ", kTokenA)), "alpha");
  EXPECT_EQ(*(*auth)->Authenticate(absl::StrCat("Bearer ", kTokenA2)), "alpha");
  // RFC 7235: the scheme is case-insensitive.
  EXPECT_EQ(*(*auth)->Authenticate(absl::StrCat("bearer ", kTokenB)), "beta");
}

TEST(TokenFileTest, MalformedLinesAreNamedWithoutEchoingTokens) {
  const std::string long_enough = "0123456789abcdefXYZ";
  struct Case {
    std::string text;
    std::string want;  // substring of the message
  };
  const std::vector<Case> cases = {
      {"", "no tokens"},
      {"# only a comment\n", "no tokens"},
      {long_enough + "\n", "t:1: want 'token tenant', got 1"},
      {"\n" + long_enough + " a b\n", "t:2: want 'token tenant', got 3"},
      {"short1234 alpha\n", "t:1: token must be 16-4096 characters, got 9"},
      {long_enough + " al/pha\n", "t:1: tenant name 'al/pha'"},
      {long_enough + " alpha\n" + long_enough + " beta\n",
       "t:2: token repeats"},
      {long_enough + "\x01 alpha\n", "printable ASCII"},
  };
  for (const Case& c : cases) {
    auto auth = TokenAuthenticator::Parse(c.text, "t");
    ASSERT_FALSE(auth.ok()) << c.text;
    EXPECT_EQ(auth.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(auth.status().message(), HasSubstr(c.want));
    EXPECT_THAT(auth.status().message(), Not(HasSubstr(long_enough)));
  }
  auto missing = TokenAuthenticator::LoadFile("/nonexistent/kvsketch-tokens");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

TEST(TokenFileTest, RejectsMissingWrongSchemeAndUnknownTokens) {
  auto auth = TokenAuthenticator::Parse(absl::StrCat(kTokenA, " alpha\n"), "t");
  ASSERT_TRUE(auth.ok());
  const std::string wrong = "tokA-0123456789abcdef012345678X";  // 1 char off
  for (const std::string& header :
       {std::string(), std::string("Basic dXNlcjpwYXNz"), std::string("Bearer"),
        std::string("Bearer "), "Bearer " + wrong,
        absl::StrCat("Bearer ", kTokenA, "0"), std::string(kTokenA)}) {
    absl::StatusOr<std::string> tenant = (*auth)->Authenticate(header);
    ASSERT_FALSE(tenant.ok()) << header;
    EXPECT_EQ(tenant.status().code(), absl::StatusCode::kUnauthenticated);
    EXPECT_THAT(tenant.status().message(), Not(HasSubstr(wrong)));
    EXPECT_THAT(tenant.status().message(), Not(HasSubstr(kTokenA)));
  }
}

TEST(TokenFileTest, ServerRefusesToStartWithAMalformedFile) {
  const std::string dir =
      kvsketch::testing::MakeUniqueDir(::testing::TempDir());
  ServerOptions o = testing::TestOptions();
  o.auth_tokens_file = kvsketch::testing::WriteTestFile(
      dir, "bad-tokens", "0123456789abcdef alpha extra\n");
  auto server = Server::Start(o);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(server.status().message(), HasSubstr("bad-tokens:1:"));
  o.auth_tokens_file = dir + "/no-such-tokens-file";
  EXPECT_EQ(Server::Start(o).status().code(), absl::StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

// --- Unguessable ids ------------------------------------------------------

TEST(SessionIdTest, ServerIdsAre128BitHexAndDoNotRepeat) {
  absl::flat_hash_set<std::string> seen;
  constexpr int kIds = 100000;
  // Bit balance over all ids: each of the 128 bit positions should be set
  // in about half of them (a stuck or low-entropy generator fails this).
  std::vector<int> ones(128, 0);
  for (int i = 0; i < kIds; ++i) {
    const std::string id = SessionManager::NewSessionId();
    ASSERT_EQ(id.size(), 32u) << id;
    for (int j = 0; j < 32; ++j) {
      const char c = id[j];
      ASSERT_TRUE((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) << id;
      const int nibble = c <= '9' ? c - '0' : c - 'a' + 10;
      for (int b = 0; b < 4; ++b) ones[j * 4 + b] += (nibble >> b) & 1;
    }
    ASSERT_TRUE(seen.insert(id).second) << "repeated id " << id;
  }
  // 6 sigma of a Binomial(100000, 1/2): 948.
  for (int b = 0; b < 128; ++b) {
    EXPECT_NEAR(ones[b], kIds / 2, 948) << "bit " << b;
  }
}

// --- Tokens and tenants end to end ----------------------------------------

class TenancyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = kvsketch::testing::MakeUniqueDir(::testing::TempDir());
    Start("");
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(5)).IgnoreError();
    server_.reset();
    std::filesystem::remove_all(dir_);
  }

  void Start(const std::string& data_dir) {
    ServerOptions o = testing::TestOptions();
    o.auth_tokens_file = TokensFile(dir_);
    o.data_dir = data_dir;
    auto server = Server::Start(o);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    const std::string target = absl::StrCat("127.0.0.1:", server_->grpc_port());
    alpha_ = Client(target, kTokenA);
    alpha2_ = Client(target, kTokenA2);
    beta_ = Client(target, kTokenB);
    anonymous_ = Client(target, "");
    wrong_ = Client(target, "tokA-0123456789abcdef0123456788");
  }

  static std::unique_ptr<AttentionClient> Client(const std::string& target,
                                                 const std::string& token) {
    ClientOptions o;
    o.bearer_token = token;
    auto c = AttentionClient::Open(target, o);
    EXPECT_TRUE(c.ok()) << c.status();
    return *std::move(c);
  }

  // Appends `t` tokens to layer 0 of `id` as `client`.
  absl::Status Append(AttentionClient& client, const std::string& id, int t,
                      uint64_t seed) {
    const std::vector<float> k =
        testing::RandomFloats(kKvHeads * t * kDim, seed);
    const std::vector<float> v =
        testing::RandomFloats(kKvHeads * t * kDim, seed + 1);
    return client
        .AppendTokens(id, 0, TensorRef{{kKvHeads, t, kDim}, k},
                      TensorRef{{kKvHeads, t, kDim}, v}, {})
        .status();
  }

  absl::StatusOr<std::vector<float>> Attend(AttentionClient& client,
                                            const std::string& id) {
    const std::vector<float> q = testing::RandomFloats(kQueryHeads * kDim, 9);
    auto r = client.Attend(id, 0, {}, {}, TensorRef{{kQueryHeads, 1, kDim}, q});
    if (!r.ok()) return r.status();
    return r->output.data;
  }

  int64_t Tokens(AttentionClient& client, const std::string& id) {
    auto info = client.GetSession(id);
    EXPECT_TRUE(info.ok()) << info.status();
    return info.ok() ? info->tokens_per_layer(0) : -1;
  }

  std::string dir_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<AttentionClient> alpha_, alpha2_, beta_, anonymous_, wrong_;
};

// Every Attention RPC, as `client`, against session `id`: the code of each.
std::vector<std::pair<std::string, absl::StatusCode>> EveryRpc(
    AttentionClient& client, const std::string& id) {
  std::vector<std::pair<std::string, absl::StatusCode>> codes;
  auto add = [&](const char* name, const absl::Status& s) {
    codes.push_back({name, s.code()});
  };
  const std::vector<float> k = testing::RandomFloats(kKvHeads * kDim, 1);
  const std::vector<float> q = testing::RandomFloats(kQueryHeads * kDim, 2);
  add("CreateSession", client.CreateSession(Config(), id + "-new").status());
  add("GetSession", client.GetSession(id).status());
  add("ListSessions", client.ListSessions().status());
  add("Append", client
                    .AppendTokens(id, 0, TensorRef{{kKvHeads, 1, kDim}, k},
                                  TensorRef{{kKvHeads, 1, kDim}, k}, {})
                    .status());
  add("Attend",
      client.Attend(id, 0, {}, {}, TensorRef{{kQueryHeads, 1, kDim}, q})
          .status());
  {
    // Prefill of one token (queries, keys, values all [heads, 1, d]).
    add("Prefill", client
                       .Prefill(id, 0, TensorRef{{kQueryHeads, 1, kDim}, q},
                                TensorRef{{kKvHeads, 1, kDim}, k},
                                TensorRef{{kKvHeads, 1, kDim}, k})
                       .status());
  }
  add("ExportSession", client.ExportSession(id).status());
  add("ImportSession", client.ImportSession("not a snapshot").status());
  {
    auto stream = client.OpenDecodeStream(id);
    v1::DecodeRequest step;
    step.add_entries()->set_session_id(id);
    absl::Status s = stream->Send(step);
    absl::StatusOr<v1::DecodeResponse> r = stream->Receive();
    if (r.ok()) {
      s = absl::Status(static_cast<absl::StatusCode>(r->results(0).code()),
                       r->results(0).message());
      stream->WritesDone().IgnoreError();
      while (stream->Receive().ok()) {
      }
      absl::Status fin = stream->Finish();
      if (s.ok()) s = fin;
    } else {
      s = stream->Finish();
    }
    add("Decode", s);
  }
  add("DeleteSession", client.DeleteSession(id));
  return codes;
}

TEST_F(TenancyTest, EveryRpcNeedsAValidToken) {
  ASSERT_TRUE(beta_->CreateSession(Config(), "b1").ok());
  for (AttentionClient* c : {anonymous_.get(), wrong_.get()}) {
    for (const auto& [rpc, code] : EveryRpc(*c, "b1")) {
      EXPECT_EQ(code, absl::StatusCode::kUnauthenticated) << rpc;
    }
  }
  // Nothing happened to beta's session, and health stays open.
  EXPECT_EQ(Tokens(*beta_, "b1"), 0);
  auto health =
      client::CheckHealth(anonymous_->channel(), "", absl::Seconds(5));
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, client::ServingStatus::kServing);
  // The refusals are counted like any other error.
  EXPECT_GE(
      testing::MetricValue(server_->ScrapeMetrics(),
                           "kvsketch_rpc_errors_total{code=\"UNAUTHENTICATED\","
                           "method=\"Decode\"}"),
      2);
}

TEST_F(TenancyTest, AnotherTenantsSessionIsIndistinguishableFromNone) {
  ASSERT_TRUE(beta_->CreateSession(Config(), "shared-name").ok());
  ASSERT_TRUE(Append(*beta_, "shared-name", 5, 1).ok());
  absl::StatusOr<std::vector<float>> before = Attend(*beta_, "shared-name");
  ASSERT_TRUE(before.ok()) << before.status();

  // Alpha on beta's id: every RPC that names a session answers NOT_FOUND.
  auto codes = EveryRpc(*alpha_, "shared-name");
  for (const auto& [rpc, code] : codes) {
    if (rpc == "CreateSession" || rpc == "ListSessions") {
      EXPECT_EQ(code, absl::StatusCode::kOk) << rpc;  // own namespace
    } else if (rpc == "ImportSession") {
      EXPECT_EQ(code, absl::StatusCode::kDataLoss) << rpc;  // bad bytes
    } else {
      EXPECT_EQ(code, absl::StatusCode::kNotFound) << rpc;
    }
  }
  // ... with the same message as for an id nobody holds.
  const absl::Status taken = alpha_->GetSession("shared-name").status();
  const absl::Status free = alpha_->GetSession("never-made").status();
  EXPECT_EQ(absl::StrReplaceAll(taken.message(), {{"shared-name", "X"}}),
            absl::StrReplaceAll(free.message(), {{"never-made", "X"}}));
  // Listing shows alpha only its own session.
  auto listed = alpha_->ListSessions();
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].session_id(), "shared-name-new");

  // Beta's session is untouched: same tokens, same attention output.
  EXPECT_EQ(Tokens(*beta_, "shared-name"), 5);
  absl::StatusOr<std::vector<float>> after = Attend(*beta_, "shared-name");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*after, *before);
  auto beta_list = beta_->ListSessions();
  ASSERT_TRUE(beta_list.ok());
  ASSERT_EQ(beta_list->size(), 1u);
  EXPECT_EQ((*beta_list)[0].session_id(), "shared-name");
  // And beta can still delete it.
  EXPECT_TRUE(beta_->DeleteSession("shared-name").ok());
}

TEST_F(TenancyTest, SameIdInTwoTenantsAreTwoSessions) {
  ASSERT_TRUE(alpha_->CreateSession(Config(), "s").ok());
  ASSERT_TRUE(beta_->CreateSession(Config(), "s").ok());
  ASSERT_TRUE(Append(*alpha_, "s", 3, 10).ok());
  ASSERT_TRUE(Append(*beta_, "s", 7, 20).ok());
  EXPECT_EQ(Tokens(*alpha_, "s"), 3);
  EXPECT_EQ(Tokens(*beta_, "s"), 7);
  // Two tokens of one tenant share its namespace.
  EXPECT_EQ(Tokens(*alpha2_, "s"), 3);
  EXPECT_EQ(alpha_->CreateSession(Config(), "s").status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST_F(TenancyTest, DecodeEntriesOfAnotherTenantFailLikeNonexistent) {
  ASSERT_TRUE(alpha_->CreateSession(Config(), "mine").ok());
  ASSERT_TRUE(beta_->CreateSession(Config(), "theirs").ok());
  const std::vector<float> k = testing::RandomFloats(kKvHeads * kDim, 3);
  auto stream = alpha_->OpenDecodeStream("mine");
  v1::DecodeRequest step;
  for (const char* id : {"mine", "theirs", "nobody"}) {
    ASSERT_TRUE(client::AddDecodeEntry(id, 0, TensorRef{{kKvHeads, 1, kDim}, k},
                                       TensorRef{{kKvHeads, 1, kDim}, k}, {},
                                       v1::F32, &step)
                    .ok());
  }
  ASSERT_TRUE(stream->Send(step).ok());
  auto r = stream->Receive();
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->results_size(), 3);
  EXPECT_EQ(r->results(0).code(), 0);
  EXPECT_EQ(r->results(1).code(),
            static_cast<int>(absl::StatusCode::kNotFound));
  EXPECT_EQ(r->results(2).code(),
            static_cast<int>(absl::StatusCode::kNotFound));
  EXPECT_EQ(absl::StrReplaceAll(r->results(1).message(),
                                {{"theirs", "X"}, {"entries[1]", "E"}}),
            absl::StrReplaceAll(r->results(2).message(),
                                {{"nobody", "X"}, {"entries[2]", "E"}}));
  ASSERT_TRUE(stream->WritesDone().ok());
  EXPECT_EQ(stream->Receive().status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(Tokens(*alpha_, "mine"), 1);
  EXPECT_EQ(Tokens(*beta_, "theirs"), 0);  // beta's entry was not applied
}

TEST_F(TenancyTest, ImportCreatesTheSessionInTheImportersTenant) {
  ASSERT_TRUE(beta_->CreateSession(Config(), "src").ok());
  ASSERT_TRUE(Append(*beta_, "src", 6, 30).ok());
  auto blob = beta_->ExportSession("src");
  ASSERT_TRUE(blob.ok()) << blob.status();
  // The snapshot carries no owner: alpha, handed the bytes, imports its own
  // copy (same id, alpha's namespace) ...
  auto imported = alpha_->ImportSession(*blob);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->session_id(), "src");
  EXPECT_EQ(Tokens(*alpha_, "src"), 6);
  auto a_out = Attend(*alpha_, "src");
  auto b_out = Attend(*beta_, "src");
  ASSERT_TRUE(a_out.ok() && b_out.ok());
  EXPECT_EQ(*a_out, *b_out);
  // ... which is independent of beta's.
  ASSERT_TRUE(Append(*alpha_, "src", 2, 40).ok());
  EXPECT_EQ(Tokens(*alpha_, "src"), 8);
  EXPECT_EQ(Tokens(*beta_, "src"), 6);
  ASSERT_TRUE(beta_->DeleteSession("src").ok());
  EXPECT_EQ(Tokens(*alpha_, "src"), 8);
  EXPECT_EQ(beta_->GetSession("src").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(TenancyTest, ServerMadeIdsAreUnguessableAndOwned) {
  absl::flat_hash_set<std::string> ids;
  for (int i = 0; i < 20; ++i) {
    auto info = alpha_->CreateSession(Config());
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->session_id().size(), 32u);
    EXPECT_TRUE(ids.insert(info->session_id()).second);
    EXPECT_EQ(beta_->GetSession(info->session_id()).status().code(),
              absl::StatusCode::kNotFound);
  }
}

TEST_F(TenancyTest, OwnershipSurvivesADataDirRestart) {
  server_->Shutdown(absl::Seconds(5)).IgnoreError();
  const std::string data_dir = dir_ + "/data";
  Start(data_dir);
  ASSERT_TRUE(alpha_->CreateSession(Config(), "s").ok());
  ASSERT_TRUE(beta_->CreateSession(Config(), "s").ok());
  ASSERT_TRUE(beta_->CreateSession(Config(), "b-only").ok());
  ASSERT_TRUE(Append(*alpha_, "s", 2, 50).ok());
  ASSERT_TRUE(Append(*beta_, "s", 4, 60).ok());
  ASSERT_TRUE(server_->Shutdown(absl::Seconds(5)).ok());
  Start(data_dir);
  EXPECT_EQ(Tokens(*alpha_, "s"), 2);
  EXPECT_EQ(Tokens(*beta_, "s"), 4);
  EXPECT_EQ(alpha_->GetSession("b-only").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Tokens(*beta_, "b-only"), 0);
}

// --- TLS configuration errors at start ------------------------------------

TEST(TlsConfigTest, BadFilesFailStartWithTheFlagNamed) {
  auto certs = kvsketch::testing::MakeTestCerts(::testing::TempDir());
  ASSERT_TRUE(certs.ok()) << certs.status();
  const std::string not_pem =
      kvsketch::testing::WriteTestFile(certs->dir, "not.pem", "hello\n");
  struct Case {
    std::string cert, key, ca;
    absl::StatusCode code;
    std::string want;
  };
  const std::vector<Case> cases = {
      {certs->server_cert, "", "", absl::StatusCode::kInvalidArgument,
       "tls_cert: given without --tls_key"},
      {"", certs->server_key, "", absl::StatusCode::kInvalidArgument,
       "tls_key: given without --tls_cert"},
      {"", "", certs->ca_cert, absl::StatusCode::kInvalidArgument,
       "tls_client_ca: mutual TLS needs"},
      {certs->dir + "/missing.crt", certs->server_key, "",
       absl::StatusCode::kNotFound, "tls_cert: cannot read"},
      {not_pem, certs->server_key, "", absl::StatusCode::kInvalidArgument,
       "tls_cert: '" + not_pem + "' holds no PEM certificate"},
      {certs->server_cert, not_pem, "", absl::StatusCode::kInvalidArgument,
       "tls_key:"},
      {certs->server_cert, certs->client_key, "",
       absl::StatusCode::kInvalidArgument, "does not match the certificate"},
      {certs->server_cert, certs->server_key, not_pem,
       absl::StatusCode::kInvalidArgument, "tls_client_ca:"},
  };
  for (const Case& c : cases) {
    ServerOptions o = testing::TestOptions();
    o.tls_cert_file = c.cert;
    o.tls_key_file = c.key;
    o.tls_client_ca_file = c.ca;
    auto server = Server::Start(o);
    ASSERT_FALSE(server.ok()) << c.want;
    EXPECT_EQ(server.status().code(), c.code) << server.status();
    EXPECT_THAT(server.status().message(), HasSubstr(c.want));
  }
  ServerOptions good = testing::TestOptions();
  good.tls_cert_file = certs->server_cert;
  good.tls_key_file = certs->server_key;
  good.tls_client_ca_file = certs->ca_cert;
  auto server = Server::Start(good);
  ASSERT_TRUE(server.ok()) << server.status();
  (*server)->Shutdown(absl::Seconds(1)).IgnoreError();
  std::filesystem::remove_all(certs->dir);
}

}  // namespace
}  // namespace kvsketch::server
