// Client-side retries (issue #8 item 4, RetryPolicy in client/
// attention_client.h) against a fake Attention service that fails a set
// number of times: which codes are retried for which calls, how many
// attempts are made, and that retries stop at the call's deadline.
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/attention_client.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace kvsketch::client {
namespace {

// Each method fails with `failure` for its first `failures` calls, then
// succeeds; calls are counted per method.
class FlakyService final : public v1::Attention::Service {
 public:
  void FailWith(grpc::StatusCode code, std::string message, int failures) {
    absl::MutexLock l(&mu_);
    code_ = code;
    message_ = std::move(message);
    failures_ = failures;
  }

  std::atomic<int> get{0}, list{0}, create{0}, remove{0}, attend{0}, prefill{0};

  grpc::Status GetSession(grpc::ServerContext*, const v1::GetSessionRequest*,
                          v1::GetSessionResponse* resp) override {
    resp->mutable_session()->set_session_id("s");
    return Answer(get);
  }
  grpc::Status ListSessions(grpc::ServerContext*,
                            const v1::ListSessionsRequest*,
                            v1::ListSessionsResponse*) override {
    return Answer(list);
  }
  grpc::Status CreateSession(grpc::ServerContext*,
                             const v1::CreateSessionRequest*,
                             v1::CreateSessionResponse* resp) override {
    resp->mutable_session()->set_session_id("s");
    return Answer(create);
  }
  grpc::Status DeleteSession(grpc::ServerContext*,
                             const v1::DeleteSessionRequest*,
                             v1::DeleteSessionResponse*) override {
    return Answer(remove);
  }
  grpc::Status Attend(grpc::ServerContext*, const v1::AttendRequest*,
                      v1::AttendResponse* resp) override {
    v1::Tensor* t = resp->mutable_output();
    t->set_dtype(v1::F32);
    t->add_shape(1);
    t->add_shape(1);
    t->add_shape(1);
    const float one = 1.0f;
    t->set_data(std::string(reinterpret_cast<const char*>(&one), 4));
    return Answer(attend);
  }
  grpc::Status Prefill(grpc::ServerContext*, const v1::PrefillRequest*,
                       v1::PrefillResponse*) override {
    return Answer(prefill);
  }

 private:
  grpc::Status Answer(std::atomic<int>& counter) {
    const int n = ++counter;
    absl::MutexLock l(&mu_);
    if (n <= failures_) return grpc::Status(code_, message_);
    return grpc::Status::OK;
  }

  // Written by the test thread, read by gRPC's: the socket in between is
  // no happens-before edge a race detector can see.
  absl::Mutex mu_;
  grpc::StatusCode code_ ABSL_GUARDED_BY(mu_) = grpc::StatusCode::OK;
  std::string message_ ABSL_GUARDED_BY(mu_);
  int failures_ ABSL_GUARDED_BY(mu_) = 0;
};

class RetryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override { server_->Shutdown(); }

  std::unique_ptr<AttentionClient> Client(int attempts, absl::Duration timeout,
                                          absl::Duration backoff) {
    ClientOptions o;
    o.timeout = timeout;
    o.retry.max_attempts = attempts;
    o.retry.initial_backoff = backoff;
    o.retry.max_backoff = backoff * 4;
    return AttentionClient::Connect(absl::StrCat("127.0.0.1:", port_), o);
  }

  FlakyService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

const std::vector<float> kQuery = {0.5f};
const TensorRef kQueryRef{{1, 1, 1}, kQuery};

TEST(RetryableTest, Classification) {
  const absl::Status busy =
      absl::ResourceExhaustedError("server busy: worker queue full");
  const absl::Status limit =
      absl::ResourceExhaustedError("session limit reached: 4 of 4");
  const absl::Status down = absl::UnavailableError("connection refused");
  EXPECT_TRUE(AttentionClient::IsRetryable(busy, /*idempotent=*/false));
  EXPECT_TRUE(AttentionClient::IsRetryable(busy, /*idempotent=*/true));
  EXPECT_FALSE(AttentionClient::IsRetryable(limit, true));
  EXPECT_TRUE(AttentionClient::IsRetryable(down, true));
  EXPECT_FALSE(AttentionClient::IsRetryable(down, false));
  for (absl::Status s :
       {absl::NotFoundError("x"), absl::InvalidArgumentError("x"),
        absl::DeadlineExceededError("x"), absl::UnauthenticatedError("x"),
        absl::InternalError("x")}) {
    EXPECT_FALSE(AttentionClient::IsRetryable(s, true)) << s;
  }
}

TEST_F(RetryTest, ReadsAreRetriedThroughUnavailable) {
  service_.FailWith(grpc::StatusCode::UNAVAILABLE, "flaky", 2);
  auto client = Client(4, absl::Seconds(20), absl::Milliseconds(1));
  EXPECT_TRUE(client->GetSession("s").ok());
  EXPECT_EQ(service_.get, 3);
  EXPECT_TRUE(client->ListSessions().ok());
  EXPECT_EQ(service_.list, 3);
  auto r = client->Attend("s", 0, {}, {}, kQueryRef);  // query only
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(service_.attend, 3);
  EXPECT_EQ(r->output.data, std::vector<float>{1.0f});
}

TEST_F(RetryTest, WritesAreNotRetriedThroughUnavailable) {
  service_.FailWith(grpc::StatusCode::UNAVAILABLE, "flaky", 1);
  auto client = Client(4, absl::Seconds(20), absl::Milliseconds(1));
  EXPECT_EQ(client->CreateSession({}, "s").status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(client->DeleteSession("s").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(
      client->Attend("s", 0, kQueryRef, kQueryRef, kQueryRef).status().code(),
      absl::StatusCode::kUnavailable);  // appends k/v
  EXPECT_EQ(
      client->Prefill("s", 0, kQueryRef, kQueryRef, kQueryRef).status().code(),
      absl::StatusCode::kUnavailable);
  EXPECT_EQ(service_.create, 1);
  EXPECT_EQ(service_.remove, 1);
  EXPECT_EQ(service_.attend, 1);
  EXPECT_EQ(service_.prefill, 1);
}

TEST_F(RetryTest, ServerBusyIsRetriedForEveryCallUpToMaxAttempts) {
  service_.FailWith(grpc::StatusCode::RESOURCE_EXHAUSTED,
                    "server busy: worker queue full (9 tasks waiting)", 2);
  auto client = Client(3, absl::Seconds(20), absl::Milliseconds(1));
  EXPECT_TRUE(client->CreateSession({}, "s").ok());
  EXPECT_EQ(service_.create, 3);
  EXPECT_TRUE(client->DeleteSession("s").ok());
  EXPECT_EQ(service_.remove, 3);
  // Three failures against three attempts: the last refusal comes back.
  service_.FailWith(grpc::StatusCode::RESOURCE_EXHAUSTED,
                    "server busy: worker queue full", 100);
  absl::Status s = client->GetSession("s").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), ::testing::HasSubstr("server busy"));
  EXPECT_EQ(service_.get, 3);
}

TEST_F(RetryTest, LimitsAndOffPolicyAreNotRetried) {
  service_.FailWith(grpc::StatusCode::RESOURCE_EXHAUSTED,
                    "session limit reached: 4 of max_sessions 4", 1);
  EXPECT_EQ(Client(5, absl::Seconds(20), absl::Milliseconds(1))
                ->CreateSession({}, "s")
                .status()
                .code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(service_.create, 1);
  service_.FailWith(grpc::StatusCode::UNAVAILABLE, "flaky", 1000);
  EXPECT_EQ(Client(1, absl::Seconds(20), absl::Milliseconds(1))
                ->GetSession("s")
                .status()
                .code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(service_.get, 1);  // the default policy: one attempt
}

TEST_F(RetryTest, RetriesStopAtTheCallDeadline) {
  service_.FailWith(grpc::StatusCode::UNAVAILABLE, "flaky", 1000);
  // The first backoff (at least 30 s / 2) would end past the 2 s deadline:
  // no retry is attempted.
  EXPECT_EQ(Client(10, absl::Seconds(2), absl::Seconds(30))
                ->GetSession("s")
                .status()
                .code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(service_.get, 1);
}

}  // namespace
}  // namespace kvsketch::client
