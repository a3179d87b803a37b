// Every client call carries x-session-id metadata and a deadline: checked
// against a fake Attention service that records what it receives.
#include <map>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/attention_client.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace kvsketch::client {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

// Records, per method, the x-session-id metadata ("<none>" if absent) and
// whether a deadline was set.
class RecordingService final : public v1::Attention::Service {
 public:
  struct Call {
    std::string session_id;
    bool has_deadline;
  };

  std::multimap<std::string, Call> calls() {
    absl::MutexLock l(&mu_);
    return calls_;
  }

  grpc::Status CreateSession(grpc::ServerContext* ctx,
                             const v1::CreateSessionRequest* req,
                             v1::CreateSessionResponse* resp) override {
    Record("CreateSession", ctx);
    resp->mutable_session()->set_session_id(req->session_id());
    return grpc::Status::OK;
  }
  grpc::Status GetSession(grpc::ServerContext* ctx,
                          const v1::GetSessionRequest* req,
                          v1::GetSessionResponse* resp) override {
    Record("GetSession", ctx);
    resp->mutable_session()->set_session_id(req->session_id());
    return grpc::Status::OK;
  }
  grpc::Status ListSessions(grpc::ServerContext* ctx,
                            const v1::ListSessionsRequest* req,
                            v1::ListSessionsResponse* resp) override {
    Record("ListSessions", ctx);
    // Two pages: the client must follow the token.
    if (req->page_token().empty()) {
      resp->add_sessions()->set_session_id("p1");
      resp->set_next_page_token("next");
    } else {
      resp->add_sessions()->set_session_id("p2");
    }
    return grpc::Status::OK;
  }
  grpc::Status DeleteSession(grpc::ServerContext* ctx,
                             const v1::DeleteSessionRequest*,
                             v1::DeleteSessionResponse*) override {
    Record("DeleteSession", ctx);
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "fake refuses");
  }
  grpc::Status Append(grpc::ServerContext* ctx,
                      grpc::ServerReader<v1::AppendRequest>* reader,
                      v1::AppendResponse* resp) override {
    Record("Append", ctx);
    v1::AppendRequest m;
    while (reader->Read(&m)) {
      resp->set_tokens_appended(resp->tokens_appended() + 1);
    }
    return grpc::Status::OK;
  }
  grpc::Status Attend(grpc::ServerContext* ctx, const v1::AttendRequest*,
                      v1::AttendResponse* resp) override {
    Record("Attend", ctx);
    v1::Tensor* out = resp->mutable_output();
    out->set_dtype(v1::F32);
    out->add_shape(1);
    out->add_shape(1);
    out->set_data(std::string(4, '\0'));
    return grpc::Status::OK;
  }
  grpc::Status Prefill(grpc::ServerContext* ctx, const v1::PrefillRequest*,
                       v1::PrefillResponse* resp) override {
    Record("Prefill", ctx);
    v1::Tensor* out = resp->mutable_output();
    out->set_dtype(v1::F32);
    out->add_shape(0);
    return grpc::Status::OK;
  }
  grpc::Status Decode(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<v1::DecodeResponse, v1::DecodeRequest>* stream)
      override {
    Record("Decode", ctx);
    v1::DecodeRequest req;
    while (stream->Read(&req)) {
      v1::DecodeResponse resp;
      resp.set_step_id(req.step_id());
      stream->Write(resp);
    }
    return grpc::Status::OK;
  }
  grpc::Status ExportSession(
      grpc::ServerContext* ctx, const v1::ExportSessionRequest*,
      grpc::ServerWriter<v1::SnapshotChunk>* writer) override {
    Record("ExportSession", ctx);
    v1::SnapshotChunk c;
    c.set_total_bytes(6);
    c.set_data("abc");
    writer->Write(c);
    c.Clear();
    c.set_data("def");
    writer->Write(c);
    return grpc::Status::OK;
  }
  grpc::Status ImportSession(grpc::ServerContext* ctx,
                             grpc::ServerReader<v1::ImportSessionRequest>* r,
                             v1::ImportSessionResponse* resp) override {
    Record("ImportSession", ctx);
    v1::ImportSessionRequest m;
    std::string id;
    while (r->Read(&m)) {
      if (!m.session_id().empty()) id = m.session_id();
    }
    resp->mutable_session()->set_session_id(id);
    return grpc::Status::OK;
  }

 private:
  void Record(const std::string& method, grpc::ServerContext* ctx) {
    auto it = ctx->client_metadata().find(kSessionIdMetadataKey);
    std::string id = it == ctx->client_metadata().end()
                         ? "<none>"
                         : std::string(it->second.data(), it->second.size());
    const bool has_deadline =
        ctx->deadline() <
        std::chrono::system_clock::now() + std::chrono::hours(24 * 365);
    absl::MutexLock l(&mu_);
    calls_.emplace(method, Call{std::move(id), has_deadline});
  }

  absl::Mutex mu_;
  std::multimap<std::string, Call> calls_ ABSL_GUARDED_BY(mu_);
};

class MetadataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    client_ = AttentionClient::Connect(absl::StrCat("127.0.0.1:", port));
  }
  void TearDown() override { server_->Shutdown(); }

  // The recorded x-session-id values of `method`.
  std::vector<std::string> IdsOf(const std::string& method) {
    std::vector<std::string> ids;
    for (const auto& [m, call] : service_.calls()) {
      if (m == method) ids.push_back(call.session_id);
    }
    return ids;
  }

  RecordingService service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<AttentionClient> client_;
};

TEST_F(MetadataTest, EveryCallCarriesTheSessionId) {
  v1::SessionConfig config;
  ASSERT_TRUE(client_->CreateSession(config, "s-create").ok());
  ASSERT_TRUE(client_->GetSession("s-get").ok());
  EXPECT_EQ(client_->DeleteSession("s-delete").code(),
            absl::StatusCode::kPermissionDenied);
  std::vector<float> one(4, 1.0f);
  AppendOptions two_messages;
  two_messages.chunk_tokens = 1;
  auto appended = client_->AppendTokens("s-append", 0, {{1, 2, 2}, one},
                                        {{1, 2, 2}, one}, two_messages);
  ASSERT_TRUE(appended.ok()) << appended.status();
  EXPECT_EQ(appended->tokens_appended(), 2);  // the fake counts messages
  ASSERT_TRUE(client_->Attend("s-attend", 0, {}, {}, {{1, 4}, one}).ok());
  ASSERT_TRUE(client_
                  ->Prefill("s-prefill", 0, {{1, 1, 4}, one}, {{1, 1, 4}, one},
                            {{1, 1, 4}, one})
                  .ok());
  auto blob = client_->ExportSession("s-export");
  ASSERT_TRUE(blob.ok()) << blob.status();
  EXPECT_EQ(*blob, "abcdef");
  auto imported = client_->ImportSession("xyz", "s-import");
  ASSERT_TRUE(imported.ok());
  EXPECT_EQ(imported->session_id(), "s-import");
  auto stream = client_->OpenDecodeStream("s-decode");
  v1::DecodeRequest step;
  step.set_step_id(9);
  ASSERT_TRUE(stream->Send(step).ok());
  auto response = stream->Receive();
  ASSERT_TRUE(response.ok());
  EXPECT_EQ(response->step_id(), 9u);
  ASSERT_TRUE(stream->Finish().ok());

  EXPECT_THAT(IdsOf("CreateSession"), ElementsAre("s-create"));
  EXPECT_THAT(IdsOf("GetSession"), ElementsAre("s-get"));
  EXPECT_THAT(IdsOf("DeleteSession"), ElementsAre("s-delete"));
  EXPECT_THAT(IdsOf("Append"), ElementsAre("s-append"));
  EXPECT_THAT(IdsOf("Attend"), ElementsAre("s-attend"));
  EXPECT_THAT(IdsOf("Prefill"), ElementsAre("s-prefill"));
  EXPECT_THAT(IdsOf("ExportSession"), ElementsAre("s-export"));
  EXPECT_THAT(IdsOf("ImportSession"), ElementsAre("s-import"));
  EXPECT_THAT(IdsOf("Decode"), ElementsAre("s-decode"));
}

TEST_F(MetadataTest, UnaryCallsHaveDeadlinesStreamsDoNotByDefault) {
  ASSERT_TRUE(client_->GetSession("x").ok());
  auto stream = client_->OpenDecodeStream("y");
  ASSERT_TRUE(stream->Finish().ok());
  std::map<std::string, bool> deadline;
  for (const auto& [m, call] : service_.calls()) {
    deadline[m] = call.has_deadline;
  }
  EXPECT_THAT(deadline, UnorderedElementsAre(Pair("GetSession", true),
                                             Pair("Decode", false)));
}

TEST_F(MetadataTest, ListFollowsPagesWithoutSessionMetadata) {
  auto listed = client_->ListSessions();
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].session_id(), "p1");
  EXPECT_EQ((*listed)[1].session_id(), "p2");
  EXPECT_THAT(IdsOf("ListSessions"), ElementsAre("<none>", "<none>"));
}

}  // namespace
}  // namespace kvsketch::client
