// File: tests/server/server_test_util.cc
#include "tests/server/server_test_util.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/util/half.h"

namespace kvsketch::server::testing {

ServerOptions TestOptions() {
  ServerOptions o;
  o.listen_address = "127.0.0.1:0";
  o.metrics_address = "";
  o.worker_threads = 2;
  o.session_idle_ttl = absl::ZeroDuration();
  return o;
}

TestServer StartServer(const ServerOptions& options) {
  TestServer t;
  auto server = Server::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "server start failed: %s\n",
                 server.status().ToString().c_str());
    std::abort();
  }
  t.server = *std::move(server);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  t.channel = grpc::CreateCustomChannel(
      absl::StrCat("127.0.0.1:", t.server->grpc_port()),
      grpc::InsecureChannelCredentials(), args);
  t.stub = v1::Attention::NewStub(t.channel);
  return t;
}

v1::SessionConfig MakeConfig(int layers, int kv_heads, int q_heads, int d,
                             int dv, const std::string& spec) {
  v1::SessionConfig c;
  c.set_num_layers(layers);
  c.set_num_kv_heads(kv_heads);
  c.set_num_query_heads(q_heads);
  c.set_head_dim(d);
  c.set_value_dim(dv);
  c.set_spec(spec);
  return c;
}

std::vector<float> RandomFloats(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> out(n);
  for (float& x : out) x = u(rng);
  return out;
}

v1::Tensor MakeTensor(std::vector<int64_t> shape, absl::Span<const float> data,
                      v1::DType dtype) {
  v1::Tensor t;
  t.set_dtype(dtype);
  for (int64_t d : shape) t.add_shape(d);
  if (dtype == v1::F32) {
    t.set_data(reinterpret_cast<const char*>(data.data()),
               data.size() * sizeof(float));
  } else {
    std::vector<uint16_t> h(data.size());
    for (size_t i = 0; i < data.size(); ++i) {
      h[i] = dtype == v1::F16 ? FloatToHalf(data[i]) : FloatToBf16(data[i]);
    }
    t.set_data(reinterpret_cast<const char*>(h.data()), h.size() * 2);
  }
  return t;
}

std::vector<float> TensorFloats(const v1::Tensor& t) {
  std::vector<float> out(t.data().size() / sizeof(float));
  if (!out.empty()) std::memcpy(out.data(), t.data().data(), t.data().size());
  return out;
}

std::vector<float> RoundTo(absl::Span<const float> data, v1::DType dtype) {
  std::vector<float> out(data.begin(), data.end());
  for (float& x : out) {
    if (dtype == v1::F16) x = HalfToFloat(FloatToHalf(x));
    if (dtype == v1::BF16) x = Bf16ToFloat(FloatToBf16(x));
  }
  return out;
}

ReferenceSession::ReferenceSession(int layers, int kv_heads, int q_heads, int d,
                                   int dv)
    : kv_heads_(kv_heads),
      q_heads_(q_heads),
      d_(d),
      dv_(dv),
      scale_(1.0 / std::sqrt(static_cast<double>(d))),
      keys_(layers, std::vector<std::vector<float>>(kv_heads)),
      values_(layers, std::vector<std::vector<float>>(kv_heads)) {}

void ReferenceSession::Append(int layer, int64_t t,
                              absl::Span<const float> keys,
                              absl::Span<const float> values) {
  for (int h = 0; h < kv_heads_; ++h) {
    auto k = keys.subspan(h * t * d_, t * d_);
    auto v = values.subspan(h * t * dv_, t * dv_);
    keys_[layer][h].insert(keys_[layer][h].end(), k.begin(), k.end());
    values_[layer][h].insert(values_[layer][h].end(), v.begin(), v.end());
  }
}

int64_t ReferenceSession::tokens(int layer) const {
  return static_cast<int64_t>(keys_[layer][0].size()) / d_;
}

std::vector<double> ReferenceSession::Attend(int layer, int64_t m,
                                             absl::Span<const float> queries,
                                             int64_t causal_new) const {
  std::vector<double> out(static_cast<size_t>(q_heads_) * m * dv_, 0.0);
  const int group = q_heads_ / kv_heads_;
  const int64_t n = tokens(layer);
  for (int qh = 0; qh < q_heads_; ++qh) {
    const int kh = qh / group;
    const auto& k = keys_[layer][kh];
    const auto& v = values_[layer][kh];
    for (int64_t row = 0; row < m; ++row) {
      const float* q = queries.data() + (qh * m + row) * d_;
      const int64_t visible = causal_new > 0 ? n - (causal_new - 1 - row) : n;
      std::vector<double> s(visible);
      double mx = -1e300;
      for (int64_t j = 0; j < visible; ++j) {
        double dot = 0;
        for (int i = 0; i < d_; ++i) dot += double{q[i]} * k[j * d_ + i];
        s[j] = dot * scale_;
        mx = std::max(mx, s[j]);
      }
      double z = 0;
      for (double& x : s) z += (x = std::exp(x - mx));
      double* o = out.data() + (qh * m + row) * dv_;
      for (int64_t j = 0; j < visible; ++j) {
        for (int i = 0; i < dv_; ++i) o[i] += s[j] / z * v[j * dv_ + i];
      }
    }
  }
  return out;
}

double MaxAbsDiff(absl::Span<const float> a, absl::Span<const double> b) {
  if (a.size() != b.size()) return 1e300;
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

double MetricValue(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, series) && line.size() > series.size() &&
        line[series.size()] == ' ') {
      double v = 0;
      std::string rest = line.substr(series.size() + 1);
      rest = rest.substr(0, rest.find(' '));  // drop a timestamp
      if (absl::SimpleAtod(rest, &v)) return v;
    }
  }
  return 0;
}

std::string StatusText(const grpc::Status& s) {
  return absl::StrCat(s.error_code(), ": ", s.error_message());
}

grpc::Status CreateSession(v1::Attention::Stub& stub, const std::string& id,
                           const v1::SessionConfig& config,
                           v1::SessionInfo* info) {
  grpc::ClientContext ctx;
  v1::CreateSessionRequest req;
  req.set_session_id(id);
  *req.mutable_config() = config;
  v1::CreateSessionResponse resp;
  grpc::Status s = stub.CreateSession(&ctx, req, &resp);
  if (info != nullptr) *info = resp.session();
  return s;
}

grpc::Status GetSession(v1::Attention::Stub& stub, const std::string& id,
                        v1::SessionInfo* info) {
  grpc::ClientContext ctx;
  v1::GetSessionRequest req;
  req.set_session_id(id);
  v1::GetSessionResponse resp;
  grpc::Status s = stub.GetSession(&ctx, req, &resp);
  *info = resp.session();
  return s;
}

grpc::Status AppendTokens(v1::Attention::Stub& stub, const std::string& id,
                          int layer, int kv_heads, int64_t t, int d, int dv,
                          absl::Span<const float> keys,
                          absl::Span<const float> values,
                          v1::AppendResponse* resp, v1::DType dtype) {
  grpc::ClientContext ctx;
  v1::AppendResponse local;
  auto writer = stub.Append(&ctx, resp != nullptr ? resp : &local);
  v1::AppendRequest req;
  req.set_session_id(id);
  req.set_layer(layer);
  *req.mutable_keys() = MakeTensor({kv_heads, t, d}, keys, dtype);
  *req.mutable_values() = MakeTensor({kv_heads, t, dv}, values, dtype);
  writer->Write(req);
  writer->WritesDone();
  return writer->Finish();
}

grpc::Status AttendQueries(v1::Attention::Stub& stub, const std::string& id,
                           int layer, int q_heads, int64_t m, int d,
                           absl::Span<const float> queries,
                           std::vector<float>* output) {
  grpc::ClientContext ctx;
  v1::AttendRequest req;
  req.set_session_id(id);
  req.set_layer(layer);
  *req.mutable_queries() = MakeTensor({q_heads, m, d}, queries);
  v1::AttendResponse resp;
  grpc::Status s = stub.Attend(&ctx, req, &resp);
  if (output != nullptr) *output = TensorFloats(resp.output());
  return s;
}

}  // namespace kvsketch::server::testing
