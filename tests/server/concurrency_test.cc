// File: tests/server/concurrency_test.cc
//
// Several client threads hammer one server at once: Decode streams over
// their own and a shared session, unary appends, create/attend/delete of
// short-lived sessions, and a churn thread deleting and recreating a session
// others are decoding. Afterwards every private session must match its
// double reference, the shared session must hold exactly the tokens all
// threads appended, and the metrics must agree with GetSession. This is the
// test to run under TSan.
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/server_test_util.h"

namespace kvsketch::server::testing {
namespace {

constexpr int L = 2, Hkv = 2, Hq = 4, d = 16, dv = 16;
constexpr int kThreads = 4;
constexpr int kSteps = 200;

TEST(ConcurrencyTest, ManyThreadsManySessions) {
  ServerOptions o = TestOptions();
  o.worker_threads = 3;
  o.stream_pipeline_depth = 3;
  TestServer t = StartServer(o);
  ASSERT_TRUE(
      CreateSession(*t.stub, "shared", MakeConfig(L, Hkv, Hq, d, dv)).ok());
  ASSERT_TRUE(
      CreateSession(*t.stub, "churn", MakeConfig(L, Hkv, Hq, d, dv)).ok());
  std::atomic<bool> stop_churn{false};
  std::atomic<int> unexpected{0};

  std::thread churn([&] {
    int round = 0;
    while (!stop_churn.load()) {
      grpc::ClientContext ctx;
      v1::DeleteSessionRequest req;
      req.set_session_id("churn");
      v1::DeleteSessionResponse resp;
      (void)t.stub->DeleteSession(&ctx, req, &resp);
      (void)CreateSession(*t.stub, "churn", MakeConfig(L, Hkv, Hq, d, dv));
      ++round;
    }
  });

  std::vector<std::thread> threads;
  std::vector<ReferenceSession> refs(kThreads,
                                     ReferenceSession(L, Hkv, Hq, d, dv));
  for (int w = 0; w < kThreads; ++w) {
    threads.emplace_back([&, w] {
      const std::string own = absl::StrCat("own-", w);
      if (!CreateSession(*t.stub, own, MakeConfig(L, Hkv, Hq, d, dv)).ok()) {
        ++unexpected;
        return;
      }
      ReferenceSession& ref = refs[w];
      grpc::ClientContext ctx;
      auto stream = t.stub->Decode(&ctx);
      uint64_t seed = 100000 * (w + 1);
      int pending = 0;
      for (int step = 0; step < kSteps; ++step) {
        v1::DecodeRequest req;
        req.set_step_id(step);
        for (int layer = 0; layer < L; ++layer) {
          auto k = RandomFloats(Hkv * d, ++seed);
          auto v = RandomFloats(Hkv * dv, ++seed);
          auto q = RandomFloats(Hq * d, ++seed);
          for (const char* id : {"own", "shared", "churn"}) {
            auto* e = req.add_entries();
            e->set_session_id(std::string(id) == "own" ? own : id);
            e->set_layer(layer);
            *e->mutable_keys() = MakeTensor({Hkv, 1, d}, k);
            *e->mutable_values() = MakeTensor({Hkv, 1, dv}, v);
            *e->mutable_queries() = MakeTensor({Hq, 1, d}, q);
          }
          ref.Append(layer, 1, k, v);
        }
        if (!stream->Write(req)) {
          ++unexpected;
          break;
        }
        ++pending;
        // Keep a few steps in flight, then read one.
        if (pending > 2) {
          v1::DecodeResponse resp;
          if (!stream->Read(&resp)) {
            ++unexpected;
            break;
          }
          --pending;
          for (int i = 0; i < resp.results_size(); ++i) {
            const int code = resp.results(i).code();
            const bool churn_entry = i % 3 == 2;
            // The churn session may be gone (NOT_FOUND) or freshly empty
            // (FAILED_PRECONDITION can't happen: the entry appends first).
            if (code != 0 && !(churn_entry && code == 5)) ++unexpected;
          }
        }
        // Side traffic: a short-lived session per few steps.
        if (step % 10 == 0) {
          const std::string tmp = absl::StrCat("tmp-", w, "-", step);
          if (!CreateSession(*t.stub, tmp, MakeConfig(1, 1, 1, 4, 4)).ok() ||
              !AppendTokens(*t.stub, tmp, 0, 1, 2, 4, 4, RandomFloats(8, 1),
                            RandomFloats(8, 2))
                   .ok()) {
            ++unexpected;
          }
          grpc::ClientContext dctx;
          v1::DeleteSessionRequest dreq;
          dreq.set_session_id(tmp);
          v1::DeleteSessionResponse dresp;
          if (!t.stub->DeleteSession(&dctx, dreq, &dresp).ok()) ++unexpected;
        }
      }
      stream->WritesDone();
      v1::DecodeResponse resp;
      while (stream->Read(&resp)) --pending;
      if (!stream->Finish().ok() || pending != 0) ++unexpected;
    });
  }
  for (auto& th : threads) th.join();
  stop_churn = true;
  churn.join();
  EXPECT_EQ(unexpected.load(), 0);

  // Private sessions match their references exactly in token count and
  // within float tolerance in output.
  for (int w = 0; w < kThreads; ++w) {
    const std::string own = absl::StrCat("own-", w);
    v1::SessionInfo info;
    ASSERT_TRUE(GetSession(*t.stub, own, &info).ok());
    EXPECT_THAT(info.tokens_per_layer(),
                ::testing::ElementsAre(kSteps, kSteps));
    auto q = RandomFloats(Hq * d, 5);
    for (int layer = 0; layer < L; ++layer) {
      std::vector<float> out;
      ASSERT_TRUE(AttendQueries(*t.stub, own, layer, Hq, 1, d, q, &out).ok());
      EXPECT_LT(MaxAbsDiff(out, refs[w].Attend(layer, 1, q)), 1e-5);
    }
  }
  v1::SessionInfo shared;
  ASSERT_TRUE(GetSession(*t.stub, "shared", &shared).ok());
  EXPECT_THAT(shared.tokens_per_layer(),
              ::testing::ElementsAre(kThreads * kSteps, kThreads * kSteps));

  // Metrics agree with the sessions that remain.
  int64_t total_bytes = 0;
  int sessions = 0;
  {
    grpc::ClientContext ctx;
    v1::ListSessionsRequest req;
    req.set_page_size(1000);
    v1::ListSessionsResponse resp;
    ASSERT_TRUE(t.stub->ListSessions(&ctx, req, &resp).ok());
    for (const auto& s : resp.sessions()) {
      total_bytes += s.state_bytes();
      ++sessions;
    }
  }
  const std::string m = t.server->ScrapeMetrics();
  EXPECT_EQ(MetricValue(m, "kvsketch_sessions"), sessions);
  EXPECT_EQ(MetricValue(m, "kvsketch_state_bytes{approximator=\"exact\"}"),
            static_cast<double>(total_bytes));
  EXPECT_EQ(sessions, kThreads + 2);  // own-*, shared, churn
  ASSERT_TRUE(t.server->Shutdown(absl::Seconds(5)).ok());
}

}  // namespace
}  // namespace kvsketch::server::testing
