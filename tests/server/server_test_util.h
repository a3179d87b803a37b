// File: tests/server/server_test_util.h
//
// Shared pieces of the server tests: an in-process server on 127.0.0.1:0
// with a raw generated stub, tensor builders, a double-precision reference
// model of a session (every appended key/value kept, GQA mapping, causal
// steps), and a Prometheus text scraper.
#ifndef KVSKETCH_TESTS_SERVER_SERVER_TEST_UTIL_H_
#define KVSKETCH_TESTS_SERVER_SERVER_TEST_UTIL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "grpcpp/grpcpp.h"
#include "kvsketch/v1/attention.grpc.pb.h"
#include "server/server.h"

namespace kvsketch::server::testing {

// Options for a quiet test server: port 0, no HTTP exposer, 2 workers, no TTL.
ServerOptions TestOptions();

struct TestServer {
  std::unique_ptr<Server> server;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Attention::Stub> stub;
};

// Starts a server (aborts the test binary on failure: every test needs one)
// and connects a stub.
TestServer StartServer(const ServerOptions& options);

v1::SessionConfig MakeConfig(int layers, int kv_heads, int q_heads, int d,
                             int dv, const std::string& spec = "exact");

// n floats, N(0,1)-ish, deterministic in seed.
std::vector<float> RandomFloats(size_t n, uint64_t seed);

v1::Tensor MakeTensor(std::vector<int64_t> shape, absl::Span<const float> data,
                      v1::DType dtype = v1::F32);
std::vector<float> TensorFloats(const v1::Tensor& t);  // F32 only
// The values a client's floats become after encoding as dtype.
std::vector<float> RoundTo(absl::Span<const float> data, v1::DType dtype);

// Double-precision model of one session.
class ReferenceSession {
 public:
  ReferenceSession(int layers, int kv_heads, int q_heads, int d, int dv);
  // keys [Hkv, T, d], values [Hkv, T, dv].
  void Append(int layer, int64_t t, absl::Span<const float> keys,
              absl::Span<const float> values);
  // queries [Hq, M, d] -> [Hq, M, dv]; with causal_new > 0, query row m sees
  // all tokens but the last causal_new - 1 - m (M == causal_new).
  std::vector<double> Attend(int layer, int64_t m,
                             absl::Span<const float> queries,
                             int64_t causal_new = 0) const;
  int64_t tokens(int layer) const;

 private:
  int kv_heads_, q_heads_, d_, dv_;
  double scale_;
  // [layer][head] -> flattened rows
  std::vector<std::vector<std::vector<float>>> keys_, values_;
};

double MaxAbsDiff(absl::Span<const float> a, absl::Span<const double> b);

// The value of one series in a Prometheus text exposition, e.g.
// "kvsketch_sessions" or
// "kvsketch_tokens_appended_total{approximator=\"exact\"}"; 0 when absent.
double MetricValue(const std::string& text, const std::string& series);

// Status helpers.
std::string StatusText(const grpc::Status& s);

// --- Thin RPC wrappers over the raw stub (fresh ClientContext each) ---
grpc::Status CreateSession(v1::Attention::Stub& stub, const std::string& id,
                           const v1::SessionConfig& config,
                           v1::SessionInfo* info = nullptr);
grpc::Status GetSession(v1::Attention::Stub& stub, const std::string& id,
                        v1::SessionInfo* info);
// One Append stream with one message: T tokens [Hkv, T, dim] to one layer.
grpc::Status AppendTokens(v1::Attention::Stub& stub, const std::string& id,
                          int layer, int kv_heads, int64_t t, int d, int dv,
                          absl::Span<const float> keys,
                          absl::Span<const float> values,
                          v1::AppendResponse* resp = nullptr,
                          v1::DType dtype = v1::F32);
// Query-only Attend of M queries [Hq, M, d].
grpc::Status AttendQueries(v1::Attention::Stub& stub, const std::string& id,
                           int layer, int q_heads, int64_t m, int d,
                           absl::Span<const float> queries,
                           std::vector<float>* output);

}  // namespace kvsketch::server::testing

#endif  // KVSKETCH_TESTS_SERVER_SERVER_TEST_UTIL_H_
