// Decode round trip over loopback TCP: kvsketch vs a bare gRPC echo.
//
// One step = one DecodeEntry (1 layer, 8 KV heads, 8 query heads, d = 128:
// this token's k, v and q) sent on a Decode stream, ping-pong, against an
// in-process kvsketch server holding a short exact context (64..127 tokens:
// every 64 steps the session is replaced by a fresh 64-token one, outside
// the timed region). The baseline sends the same DecodeRequest bytes to a
// bidi echo service in the same process and gets a reply of the
// DecodeResponse's size back, so the ratio isolates what kvsketch adds on
// top of gRPC: validation, dispatch to the worker pool, attention over
// <= 128 tokens and the response encoding.
//
// Two figures bound the ratio from below: BM_InProcessStep runs the same
// step through SessionState::Step without gRPC (hot caches), and every
// kvsketch row carries server_compute_us, the server's own
// kvsketch_attend_compute_seconds per timed step (its caches as the serving
// threads leave them).
//
// A second kvsketch server in the same process runs with
// decode_inline_work_limit = 0 (every step on the worker pool, the server's
// behaviour before the inline fast path): the "/inline:0" rows.
//
// The host is shared and noisy: use enough iterations per measurement and
// interleave the repetitions so that load changes hit every variant alike
// (Google Benchmark's aggregate rows print the repetition count in the
// Iterations column, not the iterations measured):
//
//   build/<dir>/bench/net/bench_decode_roundtrip
//       --benchmark_min_time=1 --benchmark_repetitions=5
//       --benchmark_enable_random_interleaving=true
//       --benchmark_report_aggregates_only=true
//
// Prints Google Benchmark's table, then
//   ratio kvsketch/echo = X (target <= 1.3)
// with both latencies measured in this same run.
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "benchmark/benchmark.h"
#include "client/attention_client.h"
#include "client/tensor_ref.h"
#include "core/session_state.h"
#include "core/status_macros.h"
#include "grpcpp/grpcpp.h"
#include "net_echo.grpc.pb.h"
#include "server/server.h"

namespace kvsketch::bench {
namespace {

constexpr int kKvHeads = 8;
constexpr int kQueryHeads = 8;
constexpr int kDim = 128;
constexpr int64_t kContext = 64;
// Steps before the session is replaced, bounding the context at
// kContext + kResetEvery tokens.
constexpr int kResetEvery = 64;
constexpr int kVariants = 4;

std::vector<float> Pseudorandom(uint64_t seed, size_t n) {
  std::vector<float> v(n);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (float& f : v) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    f = static_cast<float>(static_cast<int64_t>(x >> 40) - (1 << 23)) /
        static_cast<float>(1 << 23);
  }
  return v;
}

// The echo baseline: read a request, answer reply_bytes bytes.
class EchoService final : public NetEcho::Service {
  grpc::Status Echo(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<EchoReply, EchoRequest>* stream) override {
    EchoRequest request;
    EchoReply reply;
    while (stream->Read(&request)) {
      if (static_cast<int>(reply.payload().size()) != request.reply_bytes()) {
        reply.set_payload(std::string(request.reply_bytes(), 'x'));
      }
      if (!stream->Write(reply)) break;
    }
    return grpc::Status::OK;
  }
};

// The same echo on gRPC's callback API (the API the kvsketch server uses),
// answering inline from the reactions: a diagnostic second baseline that
// separates the callback API's own cost from kvsketch's.
class CallbackEchoService final : public NetEcho::CallbackService {
  class Reactor final : public grpc::ServerBidiReactor<EchoRequest, EchoReply> {
   public:
    Reactor() { StartRead(&request_); }
    void OnReadDone(bool ok) override {
      if (!ok) {
        Finish(grpc::Status::OK);
        return;
      }
      if (static_cast<int>(reply_.payload().size()) != request_.reply_bytes()) {
        reply_.set_payload(std::string(request_.reply_bytes(), 'x'));
      }
      StartWrite(&reply_);
    }
    void OnWriteDone(bool ok) override {
      if (!ok) {
        Finish(grpc::Status(grpc::StatusCode::UNKNOWN, "write failed"));
        return;
      }
      StartRead(&request_);
    }
    void OnDone() override { delete this; }

   private:
    EchoRequest request_;
    EchoReply reply_;
  };

  grpc::ServerBidiReactor<EchoRequest, EchoReply>* Echo(
      grpc::CallbackServerContext*) override {
    return new Reactor();
  }
};

// Both servers, the client and the request bytes, shared by the benchmarks.
class Rig {
 public:
  static Rig& Get() {
    static Rig* const rig = new Rig();
    return *rig;
  }

  client::AttentionClient& client() { return *client_; }
  server::Server& server() { return *server_; }
  server::Server& pool_server() { return *pool_server_; }
  // The client of the server with inline steps off (all on the pool).
  client::AttentionClient& pool_client() { return *pool_client_; }
  NetEcho::Stub& echo_stub() { return *echo_stub_; }
  NetEcho::Stub& callback_echo_stub() { return *callback_echo_stub_; }
  int response_bytes() const { return response_bytes_; }

  // A fresh session with kContext tokens; returns its id and fills
  // `steps` with kVariants one-token steps for it.
  std::string NewSession(std::vector<v1::DecodeRequest>* steps,
                         bool with_queries = true,
                         client::AttentionClient* on = nullptr) {
    client::AttentionClient* const client = on != nullptr ? on : client_.get();
    v1::SessionConfig config;
    config.set_num_layers(1);
    config.set_num_kv_heads(kKvHeads);
    config.set_num_query_heads(kQueryHeads);
    config.set_head_dim(kDim);
    config.set_spec("exact");
    auto info = client->CreateSession(config);
    KVSKETCH_CHECK(info.ok());
    const std::vector<int64_t> shape = {kKvHeads, kContext, kDim};
    std::vector<float> k = Pseudorandom(++seed_, kKvHeads * kContext * kDim);
    std::vector<float> v = Pseudorandom(++seed_, kKvHeads * kContext * kDim);
    KVSKETCH_CHECK(
        client->AppendTokens(info->session_id(), 0, {shape, k}, {shape, v}, {})
            .ok());
    steps->clear();
    for (int i = 0; i < kVariants; ++i) {
      v1::DecodeRequest request;
      std::vector<float> sk = Pseudorandom(++seed_, kKvHeads * kDim);
      std::vector<float> sv = Pseudorandom(++seed_, kKvHeads * kDim);
      std::vector<float> sq = Pseudorandom(++seed_, kQueryHeads * kDim);
      KVSKETCH_CHECK(client::AddDecodeEntry(
                         info->session_id(), 0, {{kKvHeads, kDim}, sk},
                         {{kKvHeads, kDim}, sv},
                         with_queries
                             ? client::TensorRef{{kQueryHeads, kDim}, sq}
                             : client::TensorRef{},
                         v1::F32, &request)
                         .ok());
      steps->push_back(std::move(request));
    }
    return info->session_id();
  }

 private:
  Rig() {
    server::ServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.metrics_address = "";
    auto server = server::Server::Start(options);
    KVSKETCH_CHECK(server.ok());
    server_ = *std::move(server);
    client_ = client::AttentionClient::Connect(
        absl::StrCat("127.0.0.1:", server_->grpc_port()));
    options.decode_inline_work_limit = 0;
    auto pool_server = server::Server::Start(options);
    KVSKETCH_CHECK(pool_server.ok());
    pool_server_ = *std::move(pool_server);
    pool_client_ = client::AttentionClient::Connect(
        absl::StrCat("127.0.0.1:", pool_server_->grpc_port()));

    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(&echo_service_);
    echo_server_ = builder.BuildAndStart();
    KVSKETCH_CHECK(echo_server_ != nullptr);
    echo_stub_ = NetEcho::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));

    grpc::ServerBuilder callback_builder;
    int callback_port = 0;
    callback_builder.AddListeningPort(
        "127.0.0.1:0", grpc::InsecureServerCredentials(), &callback_port);
    callback_builder.RegisterService(&callback_echo_service_);
    callback_echo_server_ = callback_builder.BuildAndStart();
    KVSKETCH_CHECK(callback_echo_server_ != nullptr);
    callback_echo_stub_ = NetEcho::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", callback_port),
                            grpc::InsecureChannelCredentials()));

    // The size of a real response to one step, for the echo reply.
    std::vector<v1::DecodeRequest> steps;
    const std::string id = NewSession(&steps);
    auto stream = client_->OpenDecodeStream(id);
    KVSKETCH_CHECK(stream->Send(steps[0]).ok());
    auto response = stream->Receive();
    KVSKETCH_CHECK(response.ok() && response->results(0).code() == 0);
    response_bytes_ = static_cast<int>(response->ByteSizeLong());
    KVSKETCH_CHECK(stream->Finish().ok());
    KVSKETCH_CHECK(client_->DeleteSession(id).ok());
  }

  std::unique_ptr<server::Server> server_;
  std::unique_ptr<client::AttentionClient> client_;
  std::unique_ptr<server::Server> pool_server_;
  std::unique_ptr<client::AttentionClient> pool_client_;
  EchoService echo_service_;
  std::unique_ptr<grpc::Server> echo_server_;
  std::unique_ptr<NetEcho::Stub> echo_stub_;
  CallbackEchoService callback_echo_service_;
  std::unique_ptr<grpc::Server> callback_echo_server_;
  std::unique_ptr<NetEcho::Stub> callback_echo_stub_;
  int response_bytes_ = 0;
  uint64_t seed_ = 0;
};

// Sum and count of the server's kvsketch_attend_compute_seconds histogram
// (every series): the time Session steps spend in SessionState::Step.
struct ComputeTotals {
  double seconds = 0;
  double steps = 0;
};
ComputeTotals ScrapeCompute(const server::Server& server) {
  ComputeTotals t;
  const std::string text = server.ScrapeMetrics();
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    const bool sum =
        absl::StartsWith(line, "kvsketch_attend_compute_seconds_sum");
    const bool count =
        absl::StartsWith(line, "kvsketch_attend_compute_seconds_count");
    if (!sum && !count) continue;
    double v = 0;
    if (!absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &v)) continue;
    (sum ? t.seconds : t.steps) += v;
  }
  return t;
}

// state.range(0): 0 = the sync echo (the baseline of the ratio), 1 = the
// callback-API echo (diagnostic).
void BM_EchoRoundTrip(benchmark::State& state) {
  Rig& rig = Rig::Get();
  NetEcho::Stub& stub =
      state.range(0) == 0 ? rig.echo_stub() : rig.callback_echo_stub();
  std::vector<v1::DecodeRequest> steps;
  const std::string id = rig.NewSession(&steps);
  std::vector<EchoRequest> requests(kVariants);
  for (int i = 0; i < kVariants; ++i) {
    requests[i].set_payload(steps[i].SerializeAsString());
    requests[i].set_reply_bytes(rig.response_bytes());
  }
  KVSKETCH_CHECK(rig.client().DeleteSession(id).ok());
  grpc::ClientContext context;
  auto stream = stub.Echo(&context);
  EchoReply reply;
  int64_t i = 0;
  for (auto _ : state) {
    if (!stream->Write(requests[i++ % kVariants]) || !stream->Read(&reply)) {
      state.SkipWithError("echo stream broke");
      break;
    }
  }
  stream->WritesDone();
  KVSKETCH_CHECK(stream->Finish().ok());
  state.counters["request_bytes"] = requests[0].ByteSizeLong();
  state.counters["reply_bytes"] = reply.ByteSizeLong();
}

// state.range(0) == 0: the entries carry no queries (append only), which
// leaves out the attention compute: a diagnostic of the serving overhead.
// state.range(1) == 0: the server with inline steps off (all on the pool).
void BM_KvsketchDecodeRoundTrip(benchmark::State& state) {
  Rig& rig = Rig::Get();
  const bool with_queries = state.range(0) != 0;
  client::AttentionClient* client =
      state.range(1) != 0 ? &rig.client() : &rig.pool_client();
  const server::Server& server =
      state.range(1) != 0 ? rig.server() : rig.pool_server();
  std::vector<v1::DecodeRequest> steps;
  std::string id = rig.NewSession(&steps, with_queries, client);
  auto stream = client->OpenDecodeStream(id);
  int64_t i = 0;
  int64_t failed_entries = 0;
  // The server's own compute time of the timed steps (session set-up
  // excluded): what a step's attention costs inside the server, with its
  // caches as the serving threads leave them.
  ComputeTotals compute;
  ComputeTotals mark = ScrapeCompute(server);
  auto add_since_mark = [&] {
    const ComputeTotals now = ScrapeCompute(server);
    compute.seconds += now.seconds - mark.seconds;
    compute.steps += now.steps - mark.steps;
  };
  for (auto _ : state) {
    if (i > 0 && i % kResetEvery == 0) {
      state.PauseTiming();
      add_since_mark();
      KVSKETCH_CHECK(client->DeleteSession(id).ok());
      id = rig.NewSession(&steps, with_queries, client);
      mark = ScrapeCompute(server);
      state.ResumeTiming();
    }
    v1::DecodeRequest& request = steps[i % kVariants];
    request.set_step_id(i++);
    if (!stream->Send(request).ok()) {
      state.SkipWithError("decode stream broke");
      break;
    }
    auto response = stream->Receive();
    if (!response.ok()) {
      state.SkipWithError(std::string(response.status().message()).c_str());
      break;
    }
    failed_entries += response->results(0).code() != 0;
  }
  KVSKETCH_CHECK(stream->Finish().ok());
  add_since_mark();
  KVSKETCH_CHECK(client->DeleteSession(id).ok());
  if (failed_entries > 0) state.SkipWithError("entries failed");
  state.counters["request_bytes"] = steps[0].ByteSizeLong();
  if (compute.steps > 0) {
    state.counters["server_compute_us"] = 1e6 * compute.seconds / compute.steps;
  }
}

// The same step without gRPC: SessionState::Step (what the server's Decode
// handler calls under the session lock) on an identical session, appending
// one token to each of the 8 KV heads and attending its 8 query rows over
// the same 64..127-token context. Its time is the attention compute every
// round trip carries; against the echo it bounds the ratio from below: a
// server that added nothing but this compute would be at
// 1 + compute / echo.
void BM_InProcessStep(benchmark::State& state) {
  SessionConfig config;
  config.num_layers = 1;
  config.num_kv_heads = kKvHeads;
  config.num_query_heads = kQueryHeads;
  config.head_dim = kDim;
  config.value_dim = kDim;
  config.spec = "exact";
  uint64_t seed = 1000;
  const std::vector<float> k = Pseudorandom(++seed, kKvHeads * kContext * kDim);
  const std::vector<float> v = Pseudorandom(++seed, kKvHeads * kContext * kDim);
  std::vector<std::vector<float>> sk, sv, sq;
  for (int i = 0; i < kVariants; ++i) {
    sk.push_back(Pseudorandom(++seed, kKvHeads * kDim));
    sv.push_back(Pseudorandom(++seed, kKvHeads * kDim));
    sq.push_back(Pseudorandom(++seed, kQueryHeads * kDim));
  }
  std::vector<float> out(kQueryHeads * kDim);
  std::unique_ptr<SessionState> session;
  auto fresh = [&] {
    auto created = SessionState::Create(config);
    KVSKETCH_CHECK(created.ok());
    session = *std::move(created);
    KVSKETCH_CHECK(session->Append(0, kContext, k, v).ok());
  };
  fresh();
  int64_t i = 0;
  for (auto _ : state) {
    if (i > 0 && i % kResetEvery == 0) {
      state.PauseTiming();
      fresh();
      state.ResumeTiming();
    }
    const int variant = static_cast<int>(i++ % kVariants);
    KVSKETCH_CHECK(session
                       ->Step(0, 1, sk[variant], sv[variant], 1, sq[variant],
                              absl::MakeSpan(out))
                       .ok());
    benchmark::DoNotOptimize(out.data());
  }
}

BENCHMARK(BM_EchoRoundTrip)
    ->ArgName("callback")
    ->Arg(0)
    ->Arg(1)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_KvsketchDecodeRoundTrip)
    ->ArgNames({"queries", "inline"})
    ->Args({1, 1})
    ->Args({0, 1})
    ->Args({1, 0})
    ->Args({0, 0})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_InProcessStep)->UseRealTime()->Unit(benchmark::kMicrosecond);

// Keeps each benchmark's real time per iteration for the ratio.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  // Plain text (no colour codes): the output usually goes to a log.
  RatioReporter() : ConsoleReporter(OO_Tabular) {}

  // Per benchmark: seconds per iteration of the last repetition, replaced
  // by the median when --benchmark_repetitions produces one. (Repetitions
  // of one benchmark share an iteration count, so the median's accumulated
  // time divided by it is the median time per iteration.)
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.error_occurred || run.iterations <= 0) continue;
      const double per_iter =
          run.real_accumulated_time / static_cast<double>(run.iterations);
      const std::string name = run.run_name.str();
      auto counter = run.counters.find("server_compute_us");
      const bool take = run.run_type == Run::RT_Aggregate
                            ? run.aggregate_name == "median"
                            : !have_median_[name];
      if (!take) continue;
      if (run.run_type == Run::RT_Aggregate) have_median_[name] = true;
      seconds_per_iter_[name] = per_iter;
      if (counter != run.counters.end()) {
        server_compute_us_[name] = counter->second.value;
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }
  const std::map<std::string, double>& results() const {
    return seconds_per_iter_;
  }
  // The server_compute_us counter per benchmark (median when repeated).
  const std::map<std::string, double>& server_compute_us() const {
    return server_compute_us_;
  }

 private:
  std::map<std::string, double> seconds_per_iter_;
  std::map<std::string, bool> have_median_;
  std::map<std::string, double> server_compute_us_;
};

}  // namespace
}  // namespace kvsketch::bench

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  kvsketch::bench::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  const auto& r = reporter.results();
  auto echo = r.find("BM_EchoRoundTrip/callback:0/real_time");
  auto callback_echo = r.find("BM_EchoRoundTrip/callback:1/real_time");
  auto kv = r.find("BM_KvsketchDecodeRoundTrip/queries:1/inline:1/real_time");
  auto append_only =
      r.find("BM_KvsketchDecodeRoundTrip/queries:0/inline:1/real_time");
  auto kv_pool =
      r.find("BM_KvsketchDecodeRoundTrip/queries:1/inline:0/real_time");
  if (echo != r.end() && kv != r.end() && echo->second > 0) {
    std::printf(
        "echo %.1f us, kvsketch %.1f us per round trip: ratio kvsketch/echo "
        "= %.3f (target <= 1.3)\n",
        echo->second * 1e6, kv->second * 1e6, kv->second / echo->second);
  }
  auto compute = r.find("BM_InProcessStep/real_time");
  if (echo != r.end() && compute != r.end() && echo->second > 0) {
    std::printf(
        "floor: the step's attention compute alone (in-process, no gRPC) "
        "%.1f us = %.3f of the echo, so no server can do better than ratio "
        "%.3f here\n",
        compute->second * 1e6, compute->second / echo->second,
        1 + compute->second / echo->second);
  }
  const auto& served = reporter.server_compute_us();
  auto served_kv =
      served.find("BM_KvsketchDecodeRoundTrip/queries:1/inline:1/real_time");
  if (echo != r.end() && served_kv != served.end() && echo->second > 0) {
    std::printf(
        "inside the server the step's compute took %.1f us "
        "(kvsketch_attend_compute_seconds) = %.3f of the echo\n",
        served_kv->second, served_kv->second * 1e-6 / echo->second);
  }
  if (echo != r.end() && kv_pool != r.end() && echo->second > 0) {
    std::printf(
        "before the inline path (all steps on the pool) %.1f us: ratio %.3f\n",
        kv_pool->second * 1e6, kv_pool->second / echo->second);
  }
  if (echo != r.end() && callback_echo != r.end() && echo->second > 0) {
    std::printf(
        "diagnostic: callback-API echo %.1f us: ratio to the sync echo "
        "%.3f\n",
        callback_echo->second * 1e6, callback_echo->second / echo->second);
  }
  if (echo != r.end() && append_only != r.end() && echo->second > 0) {
    std::printf(
        "diagnostic: append-only steps (no attention) %.1f us: ratio %.3f\n",
        append_only->second * 1e6, append_only->second / echo->second);
  }
  benchmark::Shutdown();
  return 0;
}
