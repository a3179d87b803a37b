// File: tests/server/metrics_test.cc
//
// Metric values follow the operations exactly, the exposition passes
// `promtool check metrics`, and the idle-TTL reaper evicts (and counts) idle
// sessions.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/worker_pool.h"
#include "tests/server/server_test_util.h"

namespace kvsketch::server::testing {
namespace {

using ::testing::HasSubstr;

double Tokens(const std::string& m, const std::string& kind) {
  return MetricValue(
      m, absl::StrCat("kvsketch_tokens_appended_total{approximator=\"", kind,
                      "\"}"));
}
double StateBytes(const std::string& m, const std::string& kind) {
  return MetricValue(
      m, absl::StrCat("kvsketch_state_bytes{approximator=\"", kind, "\"}"));
}
double Errors(const std::string& m, const std::string& method,
              const std::string& code) {
  return MetricValue(m, absl::StrCat("kvsketch_rpc_errors_total{code=\"", code,
                                     "\",method=\"", method, "\"}"));
}

TEST(MetricsTest, ValuesFollowOperations) {
  TestServer t = StartServer(TestOptions());
  auto& stub = *t.stub;
  const std::string m0 = t.server->ScrapeMetrics();
  EXPECT_EQ(MetricValue(m0, "kvsketch_sessions"), 0);
  EXPECT_EQ(MetricValue(m0, "kvsketch_memory_budget_bytes"),
            static_cast<double>(TestOptions().memory_budget_bytes));

  // Session "a": exact; "b": layer 0 exact:store=f16, layer 1 exact.
  ASSERT_TRUE(CreateSession(stub, "a", MakeConfig(2, 2, 4, 8, 8)).ok());
  auto cb = MakeConfig(2, 1, 1, 8, 8);
  (*cb.mutable_layer_specs())[0] = "exact:store=f16";
  ASSERT_TRUE(CreateSession(stub, "b", cb).ok());
  ASSERT_TRUE(AppendTokens(stub, "a", 0, 2, 5, 8, 8, RandomFloats(80, 1),
                           RandomFloats(80, 2))
                  .ok());
  ASSERT_TRUE(AppendTokens(stub, "a", 1, 2, 3, 8, 8, RandomFloats(48, 3),
                           RandomFloats(48, 4))
                  .ok());
  ASSERT_TRUE(AppendTokens(stub, "b", 0, 1, 7, 8, 8, RandomFloats(56, 5),
                           RandomFloats(56, 6))
                  .ok());
  std::vector<float> out;
  ASSERT_TRUE(
      AttendQueries(stub, "a", 0, 4, 2, 8, RandomFloats(64, 7), &out).ok());
  // A refused append counts nothing but an error.
  grpc::Status bad = AppendTokens(stub, "a", 5, 2, 1, 8, 8, RandomFloats(16, 1),
                                  RandomFloats(16, 1));
  ASSERT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::SessionInfo missing;
  EXPECT_EQ(GetSession(stub, "nope", &missing).error_code(),
            grpc::StatusCode::NOT_FOUND);

  const std::string m = t.server->ScrapeMetrics();
  EXPECT_EQ(MetricValue(m, "kvsketch_sessions"), 2);
  EXPECT_EQ(MetricValue(m, "kvsketch_sessions_created_total"), 2);
  // Layer-tokens by the kind of the layer they went to; the label is the
  // kind without parameters, so "b"'s f16 layer counts as "exact" too.
  EXPECT_EQ(Tokens(m, "exact"), 5 + 3 + 7);
  EXPECT_EQ(MetricValue(m, "kvsketch_queries_total{approximator=\"exact\"}"),
            4 * 2);
  EXPECT_EQ(Errors(m, "Append", "INVALID_ARGUMENT"), 1);
  EXPECT_EQ(Errors(m, "GetSession", "NOT_FOUND"), 1);
  EXPECT_GE(MetricValue(m,
                        "kvsketch_rpc_duration_seconds_count{method="
                        "\"Append\"}"),
            4);
  EXPECT_EQ(MetricValue(m,
                        "kvsketch_attend_compute_seconds_count{"
                        "approximator=\"exact\"}"),
            4);  // three appends + one query
  // The state-bytes gauge equals the sum of GetSession's state_bytes.
  v1::SessionInfo ia, ib;
  ASSERT_TRUE(GetSession(stub, "a", &ia).ok());
  ASSERT_TRUE(GetSession(stub, "b", &ib).ok());
  EXPECT_GT(ia.state_bytes(), 0);
  EXPECT_EQ(StateBytes(m, "exact"),
            static_cast<double>(ia.state_bytes() + ib.state_bytes()));
  EXPECT_THAT(m, HasSubstr("\nkvsketch_worker_queue_depth 0\n"));
  EXPECT_EQ(MetricValue(m, "kvsketch_worker_rejected_total"), 0);
  EXPECT_GT(MetricValue(m, "process_resident_memory_bytes"), 1e6);
  EXPECT_GT(MetricValue(m, "process_open_fds"), 0);
  EXPECT_GT(MetricValue(m, "process_start_time_seconds"), 1.6e9);

  // Deleting returns the bytes and counts the eviction reason.
  grpc::ClientContext ctx;
  v1::DeleteSessionRequest req;
  req.set_session_id("a");
  v1::DeleteSessionResponse resp;
  ASSERT_TRUE(stub.DeleteSession(&ctx, req, &resp).ok());
  const std::string m2 = t.server->ScrapeMetrics();
  EXPECT_EQ(MetricValue(m2, "kvsketch_sessions"), 1);
  EXPECT_EQ(
      MetricValue(m2, "kvsketch_sessions_evicted_total{reason=\"deleted\"}"),
      1);
  EXPECT_EQ(StateBytes(m2, "exact"), static_cast<double>(ib.state_bytes()));
  ASSERT_TRUE(t.server->Shutdown(absl::Seconds(5)).ok());
}

TEST(MetricsTest, DecodeCountsStepsAndEntryErrors) {
  TestServer t = StartServer(TestOptions());
  ASSERT_TRUE(CreateSession(*t.stub, "s", MakeConfig(1, 1, 1, 4, 4)).ok());
  grpc::ClientContext ctx;
  auto stream = t.stub->Decode(&ctx);
  for (int step = 0; step < 5; ++step) {
    v1::DecodeRequest req;
    req.set_step_id(step);
    auto* e = req.add_entries();
    e->set_session_id("s");
    *e->mutable_keys() = MakeTensor({1, 1, 4}, RandomFloats(4, step));
    *e->mutable_values() = MakeTensor({1, 1, 4}, RandomFloats(4, step + 9));
    *e->mutable_queries() = MakeTensor({1, 1, 4}, RandomFloats(4, step + 20));
    auto* bad = req.add_entries();
    bad->set_session_id("missing");
    *bad->mutable_queries() = MakeTensor({1, 1, 4}, RandomFloats(4, 1));
    ASSERT_TRUE(stream->Write(req));
  }
  stream->WritesDone();
  v1::DecodeResponse resp;
  int n = 0;
  while (stream->Read(&resp)) ++n;
  ASSERT_TRUE(stream->Finish().ok());
  EXPECT_EQ(n, 5);
  const std::string m = t.server->ScrapeMetrics();
  EXPECT_EQ(MetricValue(m, "kvsketch_decode_steps_total"), 5);
  EXPECT_EQ(Tokens(m, "exact"), 5);
  EXPECT_EQ(Errors(m, "DecodeEntry", "NOT_FOUND"), 5);
  // Entries are counted as errors only, not as RPCs with a duration.
  EXPECT_EQ(MetricValue(m,
                        "kvsketch_rpc_duration_seconds_count{method="
                        "\"DecodeEntry\"}"),
            0);
  EXPECT_EQ(MetricValue(m,
                        "kvsketch_rpc_duration_seconds_count{method="
                        "\"Decode\"}"),
            1);
  ASSERT_TRUE(t.server->Shutdown(absl::Seconds(5)).ok());
}

// The approximators' self-measurements (core/approximator.h
// SelfMeasurements) reach the per-kind Prometheus counters as deltas, once
// per step, and count exactly what the approximator checked.
TEST(MetricsTest, SelfMeasurementsReachCounters) {
  TestServer t = StartServer(TestOptions());
  auto& stub = *t.stub;
  const std::string zeta_label = "{approximator=\"zeta\"}";
  const std::string conv_label = "{approximator=\"conv\"}";

  // zeta checking every query's recall, with more candidates than tokens:
  // the retrieved set is the whole searchable region, so recall is exactly 1.
  // (A random projection: with PCA the first pca_tokens keys stay exact
  // until the fit, and there would be nothing to check.)
  auto cz = MakeConfig(1, 2, 4, 8, 8);
  (*cz.mutable_layer_specs())[0] =
      "zeta:projection=random,chunk=16,window=8,sinks=2,k=4,candidates=4096,"
      "recall_sample=1";
  ASSERT_TRUE(CreateSession(stub, "z", cz).ok());
  constexpr int kTokens = 100;  // 6 whole chunks flushed to the index
  ASSERT_TRUE(AppendTokens(stub, "z", 0, 2, kTokens, 8, 8,
                           RandomFloats(2 * kTokens * 8, 11),
                           RandomFloats(2 * kTokens * 8, 12))
                  .ok());
  const std::string m0 = t.server->ScrapeMetrics();
  EXPECT_EQ(
      MetricValue(m0, "kvsketch_sampled_recall_checks_total" + zeta_label), 0);
  std::vector<float> out;
  // 4 query heads x 3 queries: 12 query rows, each checked once.
  ASSERT_TRUE(
      AttendQueries(stub, "z", 0, 4, 3, 8, RandomFloats(4 * 3 * 8, 13), &out)
          .ok());
  std::string m = t.server->ScrapeMetrics();
  EXPECT_EQ(MetricValue(m, "kvsketch_sampled_recall_checks_total" + zeta_label),
            12);
  EXPECT_DOUBLE_EQ(MetricValue(m, "kvsketch_sampled_recall_total" + zeta_label),
                   12.0);
  // Deltas, not totals: a second call adds its own rows only.
  ASSERT_TRUE(
      AttendQueries(stub, "z", 0, 4, 1, 8, RandomFloats(4 * 8, 14), &out).ok());
  m = t.server->ScrapeMetrics();
  EXPECT_EQ(MetricValue(m, "kvsketch_sampled_recall_checks_total" + zeta_label),
            16);

  // conv with an error threshold no fit on random heads meets: every head's
  // bulk prefill is checked once and falls back to exact.
  auto cc = MakeConfig(1, 2, 2, 8, 8);
  (*cc.mutable_layer_specs())[0] = "conv:min_tokens=1,max_error=1e-9";
  ASSERT_TRUE(CreateSession(stub, "c", cc).ok());
  constexpr int kPrefill = 64;
  grpc::ClientContext ctx;
  v1::PrefillRequest req;
  req.set_session_id("c");
  req.set_layer(0);
  *req.mutable_queries() =
      MakeTensor({2, kPrefill, 8}, RandomFloats(2 * kPrefill * 8, 21));
  *req.mutable_keys() =
      MakeTensor({2, kPrefill, 8}, RandomFloats(2 * kPrefill * 8, 22));
  *req.mutable_values() =
      MakeTensor({2, kPrefill, 8}, RandomFloats(2 * kPrefill * 8, 23));
  v1::PrefillResponse resp;
  ASSERT_TRUE(stub.Prefill(&ctx, req, &resp).ok());
  m = t.server->ScrapeMetrics();
  EXPECT_EQ(MetricValue(m, "kvsketch_fit_checks_total" + conv_label), 2);
  EXPECT_EQ(MetricValue(m, "kvsketch_fit_fallbacks_total" + conv_label), 2);
  EXPECT_GT(MetricValue(m, "kvsketch_fit_error_total" + conv_label), 2e-9);
  // zeta's counters are untouched by conv's step.
  EXPECT_EQ(MetricValue(m, "kvsketch_sampled_recall_checks_total" + zeta_label),
            16);
}

TEST(MetricsTest, ScrapePassesPromtool) {
  TestServer t = StartServer(TestOptions());
  ASSERT_TRUE(CreateSession(*t.stub, "s", MakeConfig(1, 1, 1, 4, 4)).ok());
  ASSERT_TRUE(AppendTokens(*t.stub, "s", 0, 1, 2, 4, 4, RandomFloats(8, 1),
                           RandomFloats(8, 2))
                  .ok());
  std::vector<float> out;
  ASSERT_TRUE(
      AttendQueries(*t.stub, "s", 0, 1, 1, 4, RandomFloats(4, 3), &out).ok());
  v1::SessionInfo info;
  (void)GetSession(*t.stub, "missing", &info);
  const std::string text = t.server->ScrapeMetrics();
  ASSERT_THAT(text, HasSubstr("kvsketch_rpc_errors_total"));
  const std::string path = ::testing::TempDir() + "/kvsketch_metrics.txt";
  {
    std::ofstream f(path);
    f << text;
  }
  // Fails (never skips) when promtool is missing: exit 127 from the shell.
  const std::string cmd = absl::StrCat("/usr/bin/promtool check metrics < ",
                                       path, " > ", path, ".out 2>&1");
  const int rc = std::system(cmd.c_str());
  std::ifstream out_file(path + ".out");
  std::string report((std::istreambuf_iterator<char>(out_file)),
                     std::istreambuf_iterator<char>());
  EXPECT_EQ(rc, 0) << "promtool said:\n" << report;
  ASSERT_TRUE(t.server->Shutdown(absl::Seconds(5)).ok());
}

TEST(MetricsTest, HttpExposerServesMetrics) {
  ServerOptions o = TestOptions();
  o.metrics_address = "127.0.0.1:0";
  TestServer t = StartServer(o);
  ASSERT_GT(t.server->metrics_port(), 0);
  const std::string path = ::testing::TempDir() + "/kvsketch_http_metrics.txt";
  // curl is part of the base image; a failure to fetch fails the test.
  const std::string cmd =
      absl::StrCat("curl -sf http://127.0.0.1:", t.server->metrics_port(),
                   "/metrics > ", path);
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::ifstream f(path);
  std::string text((std::istreambuf_iterator<char>(f)),
                   std::istreambuf_iterator<char>());
  EXPECT_THAT(text, HasSubstr("kvsketch_memory_budget_bytes"));
  EXPECT_THAT(text, HasSubstr("process_resident_memory_bytes"));
  ASSERT_TRUE(t.server->Shutdown(absl::Seconds(5)).ok());
}

TEST(IdleTtlTest, IdleSessionsAreEvictedAndCounted) {
  ServerOptions o = TestOptions();
  o.session_idle_ttl = absl::Milliseconds(200);
  TestServer t = StartServer(o);
  ASSERT_TRUE(CreateSession(*t.stub, "idle", MakeConfig(1, 1, 1, 4, 4)).ok());
  ASSERT_TRUE(CreateSession(*t.stub, "busy", MakeConfig(1, 1, 1, 4, 4)).ok());
  const absl::Time start = absl::Now();
  v1::SessionInfo info;
  bool evicted = false;
  // Keep "busy" in use; poll (bounded) until "idle" disappears.
  while (absl::Now() - start < absl::Seconds(10)) {
    ASSERT_TRUE(AppendTokens(*t.stub, "busy", 0, 1, 1, 4, 4, RandomFloats(4, 1),
                             RandomFloats(4, 2))
                    .ok());
    // GetSession reads without touching last_used: only data operations
    // (append, attend, decode, prefill, export) count as use.
    if (GetSession(*t.stub, "idle", &info).error_code() ==
        grpc::StatusCode::NOT_FOUND) {
      evicted = true;
      break;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_TRUE(evicted);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(200));
  EXPECT_TRUE(GetSession(*t.stub, "busy", &info).ok());
  const std::string m = t.server->ScrapeMetrics();
  EXPECT_EQ(
      MetricValue(m, "kvsketch_sessions_evicted_total{reason=\"idle_ttl\"}"),
      1);
  EXPECT_EQ(MetricValue(m, "kvsketch_sessions"), 1);
  ASSERT_TRUE(t.server->Shutdown(absl::Seconds(5)).ok());
}

TEST(WorkerPoolTest, TrySubmitRefusesWhenQueueIsFull) {
  WorkerPool pool(1, 2);
  absl::Notification release;
  absl::Notification started;
  ASSERT_TRUE(pool.TrySubmit([&] {
    started.Notify();
    release.WaitForNotification();
  }));
  started.WaitForNotification();  // the worker is now busy
  std::atomic<int> ran{0};
  EXPECT_TRUE(pool.TrySubmit([&] { ++ran; }));
  EXPECT_TRUE(pool.TrySubmit([&] { ++ran; }));
  EXPECT_FALSE(pool.TrySubmit([&] { ++ran; }));
  EXPECT_EQ(pool.queued(), 2);
  EXPECT_EQ(pool.rejected_total(), 1);
  release.Notify();
  pool.Stop();  // runs the queued tasks
  EXPECT_EQ(ran.load(), 2);
  EXPECT_FALSE(pool.TrySubmit([] {}));
}

}  // namespace
}  // namespace kvsketch::server::testing
