// File: tests/server/busy_test.cc
//
// A full worker pool: every RPC shape answers RESOURCE_EXHAUSTED "server
// busy" instead of queueing without bound. The service is assembled by hand
// around a stopped pool (which refuses every task), so the refusal path is
// exercised deterministically.
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/attention_service.h"
#include "server/memory_budget.h"
#include "server/metrics.h"
#include "server/session_manager.h"
#include "server/worker_pool.h"
#include "tests/server/server_test_util.h"

namespace kvsketch::server::testing {
namespace {

using ::testing::HasSubstr;

TEST(BusyTest, RefusedPoolAnswersResourceExhaustedOnEveryRpcShape) {
  Metrics metrics(int64_t{1} << 30);
  MemoryBudget budget(int64_t{1} << 30);
  SessionManager sessions(SessionManagerOptions{}, &budget, &metrics);
  ASSERT_TRUE(sessions
                  .Create(
                      "s",
                      [] {
                        SessionConfig c;
                        c.num_layers = 1;
                        c.num_kv_heads = 1;
                        c.head_dim = 4;
                        return c;
                      }(),
                      /*tenant=*/"")
                  .ok());
  WorkerPool pool(1, 1);
  pool.Stop();  // refuses every task from now on
  metrics.pool_collector()->Attach(&pool);
  AttentionService service(ServiceOptions{}, &sessions, &pool, &metrics);
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto stub = v1::Attention::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));

  auto expect_busy = [](const grpc::Status& s, const char* what) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << what << ": " << StatusText(s);
    EXPECT_THAT(s.error_message(), HasSubstr("server busy")) << what;
  };
  expect_busy(CreateSession(*stub, "new", MakeConfig(1, 1, 1, 4, 4)),
              "CreateSession");
  std::vector<float> out;
  expect_busy(AttendQueries(*stub, "s", 0, 1, 1, 4, RandomFloats(4, 1), &out),
              "Attend");
  expect_busy(AppendTokens(*stub, "s", 0, 1, 1, 4, 4, RandomFloats(4, 1),
                           RandomFloats(4, 2)),
              "Append");
  {
    grpc::ClientContext ctx;
    auto stream = stub->Decode(&ctx);
    v1::DecodeRequest req;
    auto* e = req.add_entries();
    e->set_session_id("s");
    *e->mutable_queries() = MakeTensor({1, 1, 4}, RandomFloats(4, 3));
    stream->Write(req);
    stream->WritesDone();
    v1::DecodeResponse resp;
    EXPECT_FALSE(stream->Read(&resp));
    expect_busy(stream->Finish(), "Decode");
  }
  {
    grpc::ClientContext ctx;
    v1::ExportSessionRequest req;
    req.set_session_id("s");
    auto reader = stub->ExportSession(&ctx, req);
    v1::SnapshotChunk chunk;
    EXPECT_FALSE(reader->Read(&chunk));
    expect_busy(reader->Finish(), "ExportSession");
  }
  {
    grpc::ClientContext ctx;
    v1::ImportSessionResponse resp;
    auto writer = stub->ImportSession(&ctx, &resp);
    v1::ImportSessionRequest req;
    req.set_data("x");
    writer->Write(req);
    writer->WritesDone();
    expect_busy(writer->Finish(), "ImportSession");
  }
  // Nothing ran: the session is untouched.
  auto s = sessions.Find("s", "");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)->tokens_per_layer(), std::vector<int64_t>{0});
  EXPECT_FALSE(sessions.Find("new", "").ok());
  const std::string m = metrics.Scrape();
  for (const char* method : {"CreateSession", "Attend", "Append", "Decode",
                             "ExportSession", "ImportSession"}) {
    EXPECT_EQ(MetricValue(m, absl::StrCat("kvsketch_rpc_errors_total{code="
                                          "\"RESOURCE_EXHAUSTED\",method=\"",
                                          method, "\"}")),
              1)
        << method;
  }
  EXPECT_EQ(MetricValue(m, "kvsketch_worker_rejected_total"), 6);
  EXPECT_EQ(MetricValue(m, "kvsketch_worker_queue_depth"), 0);
  server->Shutdown();
  metrics.pool_collector()->Attach(nullptr);
}

}  // namespace
}  // namespace kvsketch::server::testing
