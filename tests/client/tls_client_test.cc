// The C++ client and the CLI over TLS and mutual TLS (issue #8 item 5,
// docs/security.md): a TLS session computes the same attention as the
// double-precision reference; plaintext, the wrong CA, a missing or foreign
// client certificate are refused with UNAVAILABLE; bearer tokens ride on
// TLS; client-side option errors never echo the token.
#include <atomic>
#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/attention_client.h"
#include "client/health_check.h"
#include "client/loadgen/loadgen.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/client/test_util.h"
#include "tests/server/tls_test_certs.h"

namespace kvsketch::client {
namespace {

using ::kvsketch::testing::ProcessResult;
using ::kvsketch::testing::RunProcess;
using ::kvsketch::testing::TestCerts;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr int kDim = 8;
constexpr int kTokens = 12;
constexpr char kToken[] = "tls-test-token-00112233445566778899";

v1::SessionConfig Config() {
  v1::SessionConfig c;
  c.set_num_layers(1);
  c.set_num_kv_heads(1);
  c.set_num_query_heads(1);
  c.set_head_dim(kDim);
  c.set_value_dim(kDim);
  c.set_spec("exact");
  return c;
}

// Deterministic values in [-1, 1).
std::vector<float> Values(int n, int seed) {
  std::vector<float> out(n);
  uint64_t x = 0x9e3779b97f4a7c15ull * (seed + 1);
  for (float& v : out) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    v = static_cast<float>(static_cast<double>(x >> 11) / (1ull << 52) - 1.0);
  }
  return out;
}

// softmax(q k^T / sqrt(d)) v in double precision, one head.
std::vector<double> Reference(const std::vector<float>& q,
                              const std::vector<float>& k,
                              const std::vector<float>& v) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(kDim));
  std::vector<double> logits(kTokens);
  double max = -INFINITY;
  for (int t = 0; t < kTokens; ++t) {
    double dot = 0;
    for (int i = 0; i < kDim; ++i) dot += double{q[i]} * k[t * kDim + i];
    logits[t] = dot * scale;
    max = std::max(max, logits[t]);
  }
  double sum = 0;
  std::vector<double> out(kDim, 0.0);
  for (int t = 0; t < kTokens; ++t) {
    const double w = std::exp(logits[t] - max);
    sum += w;
    for (int i = 0; i < kDim; ++i) out[i] += w * v[t * kDim + i];
  }
  for (double& o : out) o /= sum;
  return out;
}

class TlsClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(testing::MakeTempDir());
    auto certs = testing::MakeTestCerts(*dir_);
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = new TestCerts(*std::move(certs));
    token_file_ = new std::string(testing::WriteTestFile(
        certs_->dir, "tokens", absl::StrCat(kToken, " tenant-a\n")));
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
    delete certs_;
    delete token_file_;
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(5)).IgnoreError();
  }

  // TLS server; with mutual, client certificates signed by ca_cert are
  // required; with tokens, bearer tokens too.
  void StartServer(bool tls, bool mutual, bool tokens) {
    server::ServerOptions o;
    o.listen_address = "127.0.0.1:0";
    o.metrics_address = "";
    o.worker_threads = 2;
    if (tls) {
      o.tls_cert_file = certs_->server_cert;
      o.tls_key_file = certs_->server_key;
    }
    if (mutual) o.tls_client_ca_file = certs_->ca_cert;
    if (tokens) o.auth_tokens_file = *token_file_;
    auto server = server::Server::Start(o);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    target_ = absl::StrCat("127.0.0.1:", server_->grpc_port());
  }

  std::unique_ptr<AttentionClient> Client(ClientOptions o) {
    o.timeout = absl::Seconds(10);
    auto c = AttentionClient::Open(target_, o);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }

  ClientOptions TrustingClient() const {
    ClientOptions o;
    o.tls_ca_file = certs_->ca_cert;
    return o;
  }

  // Create, append kTokens, attend: the output against the reference.
  void ExpectWorkingSession(AttentionClient& client) {
    auto info = client.CreateSession(Config());
    ASSERT_TRUE(info.ok()) << info.status();
    const std::vector<float> k = Values(kTokens * kDim, 1);
    const std::vector<float> v = Values(kTokens * kDim, 2);
    const std::vector<float> q = Values(kDim, 3);
    ASSERT_TRUE(client
                    .AppendTokens(info->session_id(), 0,
                                  TensorRef{{1, kTokens, kDim}, k},
                                  TensorRef{{1, kTokens, kDim}, v}, {})
                    .ok());
    auto r = client.Attend(info->session_id(), 0, {}, {},
                           TensorRef{{1, 1, kDim}, q});
    ASSERT_TRUE(r.ok()) << r.status();
    const std::vector<double> want = Reference(q, k, v);
    ASSERT_EQ(r->output.data.size(), want.size());
    for (int i = 0; i < kDim; ++i) {
      EXPECT_NEAR(r->output.data[i], want[i], 1e-5) << i;
    }
    EXPECT_EQ(r->num_tokens, kTokens);
  }

  static std::string* dir_;
  static TestCerts* certs_;
  static std::string* token_file_;
  std::unique_ptr<server::Server> server_;
  std::string target_;
};

std::string* TlsClientTest::dir_ = nullptr;
TestCerts* TlsClientTest::certs_ = nullptr;
std::string* TlsClientTest::token_file_ = nullptr;

TEST_F(TlsClientTest, TlsSessionMatchesReference) {
  StartServer(/*tls=*/true, /*mutual=*/false, /*tokens=*/false);
  auto client = Client(TrustingClient());
  ASSERT_NE(client, nullptr);
  ExpectWorkingSession(*client);
  // The certificate names localhost too.
  ClientOptions by_name = TrustingClient();
  by_name.tls_server_name = "localhost";
  auto named = Client(by_name);
  ASSERT_NE(named, nullptr);
  EXPECT_TRUE(named->ListSessions().ok());
}

TEST_F(TlsClientTest, PlaintextClientIsRefusedByTlsServer) {
  StartServer(/*tls=*/true, /*mutual=*/false, /*tokens=*/false);
  ClientOptions plain_options;
  plain_options.timeout = absl::Seconds(5);
  auto plain = AttentionClient::Connect(target_, plain_options);
  EXPECT_EQ(plain->ListSessions().status().code(),
            absl::StatusCode::kUnavailable);
  // So is a TLS client that does not trust the server's CA ...
  ClientOptions wrong_ca;
  wrong_ca.tls_ca_file = certs_->other_ca_cert;
  EXPECT_EQ(Client(wrong_ca)->ListSessions().status().code(),
            absl::StatusCode::kUnavailable);
  // ... or expects another name.
  ClientOptions wrong_name = TrustingClient();
  wrong_name.tls_server_name = "kvsketch.example.com";
  EXPECT_EQ(Client(wrong_name)->ListSessions().status().code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(TlsClientTest, TlsClientIsRefusedByPlaintextServer) {
  StartServer(/*tls=*/false, /*mutual=*/false, /*tokens=*/false);
  EXPECT_EQ(Client(TrustingClient())->ListSessions().status().code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(TlsClientTest, MutualTlsNeedsACertificateFromTheClientCa) {
  StartServer(/*tls=*/true, /*mutual=*/true, /*tokens=*/false);
  // No client certificate.
  EXPECT_EQ(Client(TrustingClient())->ListSessions().status().code(),
            absl::StatusCode::kUnavailable);
  // A certificate from an unrelated CA.
  ClientOptions outsider = TrustingClient();
  outsider.tls_cert_file = certs_->other_client_cert;
  outsider.tls_key_file = certs_->other_client_key;
  EXPECT_EQ(Client(outsider)->ListSessions().status().code(),
            absl::StatusCode::kUnavailable);
  // The right one.
  ClientOptions member = TrustingClient();
  member.tls_cert_file = certs_->client_cert;
  member.tls_key_file = certs_->client_key;
  auto client = Client(member);
  ASSERT_NE(client, nullptr);
  ExpectWorkingSession(*client);
  auto health = CheckHealth(client->channel(), "", absl::Seconds(5));
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, ServingStatus::kServing);
}

TEST_F(TlsClientTest, BearerTokenOverTls) {
  StartServer(/*tls=*/true, /*mutual=*/false, /*tokens=*/true);
  EXPECT_EQ(Client(TrustingClient())->ListSessions().status().code(),
            absl::StatusCode::kUnauthenticated);
  ClientOptions with_token = TrustingClient();
  with_token.bearer_token = kToken;
  auto client = Client(with_token);
  ASSERT_NE(client, nullptr);
  ExpectWorkingSession(*client);
}

TEST_F(TlsClientTest, LoadgenRunsOverMutualTlsWithToken) {
  StartServer(/*tls=*/true, /*mutual=*/true, /*tokens=*/true);
  LoadgenOptions o;
  o.server = target_;
  o.client.tls_ca_file = certs_->ca_cert;
  o.client.tls_cert_file = certs_->client_cert;
  o.client.tls_key_file = certs_->client_key;
  o.client.bearer_token = kToken;
  o.sessions = 2;
  o.kv_heads = 1;
  o.query_heads = 2;
  o.head_dim = 8;
  o.prefill = 4;
  o.duration = absl::Milliseconds(200);
  o.warmup = absl::ZeroDuration();
  o.progress_interval = absl::ZeroDuration();
  std::atomic<bool> stop{false};
  absl::StatusOr<LoadgenReport> report = RunLoadgen(o, &stop);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_GT(report->steps, 0);
  EXPECT_EQ(report->total_errors(), 0);
  // Without the token the setup fails with the server's code.
  o.client.bearer_token.clear();
  EXPECT_EQ(RunLoadgen(o, &stop).status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(TlsClientTest, OpenRejectsBadOptionsWithoutEchoingTheToken) {
  target_ = "127.0.0.1:1";  // never contacted
  ClientOptions half = TrustingClient();
  half.tls_cert_file = certs_->client_cert;
  EXPECT_EQ(AttentionClient::Open(target_, half).status().code(),
            absl::StatusCode::kInvalidArgument);
  ClientOptions missing;
  missing.tls_ca_file = certs_->dir + "/no-such-ca.crt";
  EXPECT_EQ(AttentionClient::Open(target_, missing).status().code(),
            absl::StatusCode::kNotFound);
  ClientOptions spaced;
  spaced.bearer_token = "secret-part one";
  absl::Status s = AttentionClient::Open(target_, spaced).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), Not(HasSubstr("secret-part")));
}

TEST_F(TlsClientTest, CliFlagsConnectOverTlsWithToken) {
  StartServer(/*tls=*/true, /*mutual=*/true, /*tokens=*/true);
  const std::vector<std::string> tls_flags = {"--tls-ca",   certs_->ca_cert,
                                              "--tls-cert", certs_->client_cert,
                                              "--tls-key",  certs_->client_key};
  auto cli = [&](std::vector<std::string> args,
                 const std::vector<std::string>& env = {}) {
    args.insert(args.begin(), KVSKETCH_CLI_PATH);
    args.insert(args.end(), {"--server", target_});
    args.insert(args.end(), tls_flags.begin(), tls_flags.end());
    return RunProcess(args, env);
  };
  const std::string token_path = testing::WriteTestFile(
      certs_->dir, "cli-token", absl::StrCat(kToken, "\n"));
  ProcessResult created = cli({"create", "--id", "cli-s", "--layers", "1",
                               "--kv-heads", "1", "--query-heads", "1",
                               "--head-dim", "4", "--token-file", token_path});
  EXPECT_EQ(created.exit_code, 0) << created.err;
  // The token file may come from the environment.
  ProcessResult listed =
      cli({"list"}, {absl::StrCat("KVSKETCH_TOKEN_FILE=", token_path)});
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_THAT(listed.out, HasSubstr("cli-s"));
  // A wrong token: UNAUTHENTICATED, and the token is not printed.
  const std::string wrong = "wrong-token-aaaaaaaaaaaaaaaaaaaaaa";
  const std::string wrong_path =
      testing::WriteTestFile(certs_->dir, "wrong-token", wrong);
  ProcessResult refused = cli({"get", "cli-s", "--token-file", wrong_path});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.err, HasSubstr("UNAUTHENTICATED"));
  EXPECT_THAT(refused.err + refused.out, Not(HasSubstr(wrong)));
  // An unreadable token file is a usage error naming the file.
  ProcessResult unreadable =
      cli({"list", "--token-file", certs_->dir + "/absent"});
  EXPECT_EQ(unreadable.exit_code, 2);
  EXPECT_THAT(unreadable.err, HasSubstr("--token-file"));
}

}  // namespace
}  // namespace kvsketch::client
