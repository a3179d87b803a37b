// File: tests/server/diagnostics_test.cc
//
// The tau diagnostic through the API (want_diagnostics on Attend and Decode
// entries): for a topk session the dropped softmax mass must equal a
// double-precision computation over the same selection (sinks, window and
// the top-k of the rest), the bound 2 tau max||v|| must hold against the
// exact attention output, the histogram kvsketch_topk_dropped_mass must
// count every diagnosed row, and unsupported or ambiguous requests are
// refused without changing the session.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/server_test_util.h"

namespace kvsketch::server::testing {
namespace {

using ::testing::HasSubstr;

constexpr int kHkv = 2, kHq = 4, kD = 16, kDv = 16;
constexpr int kSinks = 2, kWindow = 4, kK = 8;
const char kSpec[] = "topk:k=8,sinks=2,window=4";

// Keys and values of one layer, kept in double for the reference.
struct Store {
  std::vector<std::vector<float>> keys{kHkv}, values{kHkv};  // [head][n*dim]
  void Append(int64_t t, const std::vector<float>& k,
              const std::vector<float>& v) {
    for (int h = 0; h < kHkv; ++h) {
      keys[h].insert(keys[h].end(), k.begin() + h * t * kD,
                     k.begin() + (h + 1) * t * kD);
      values[h].insert(values[h].end(), v.begin() + h * t * kDv,
                       v.begin() + (h + 1) * t * kDv);
    }
  }
  int64_t n() const { return static_cast<int64_t>(keys[0].size() / kD); }
};

struct RefDiag {
  double tau = 0, bound = 0;
  int64_t selected = 0;
  double gap = 0;  // score gap at the top-k boundary (selection stability)
};

// tau of query row q (kD floats) for KV head h, selection as the topk spec.
RefDiag Reference(const Store& s, int h, const float* q) {
  const int64_t n = s.n();
  const double scale = 1.0 / std::sqrt(static_cast<double>(kD));
  std::vector<double> score(n);
  for (int64_t j = 0; j < n; ++j) {
    double dot = 0;
    for (int i = 0; i < kD; ++i) dot += double{q[i]} * s.keys[h][j * kD + i];
    score[j] = scale * dot;
  }
  std::vector<bool> in(n, false);
  for (int64_t j = 0; j < std::min<int64_t>(kSinks, n); ++j) in[j] = true;
  const int64_t w_begin = std::max<int64_t>(kSinks, n - kWindow);
  for (int64_t j = w_begin; j < n; ++j) in[j] = true;
  std::vector<int64_t> rest(w_begin - kSinks);
  std::iota(rest.begin(), rest.end(), kSinks);
  std::sort(rest.begin(), rest.end(),
            [&](int64_t a, int64_t b) { return score[a] > score[b]; });
  RefDiag r;
  for (int64_t i = 0; i < kK; ++i) in[rest[i]] = true;
  r.gap = score[rest[kK - 1]] - score[rest[kK]];
  const double m = *std::max_element(score.begin(), score.end());
  double total = 0, kept = 0;
  for (int64_t j = 0; j < n; ++j) {
    total += std::exp(score[j] - m);
    if (in[j]) {
      kept += std::exp(score[j] - m);
      ++r.selected;
    }
  }
  r.tau = 1.0 - kept / total;
  double max_norm = 0;
  for (int64_t j = 0; j < n; ++j) {
    double sq = 0;
    for (int i = 0; i < kDv; ++i) {
      sq += double{s.values[h][j * kDv + i]} * s.values[h][j * kDv + i];
    }
    max_norm = std::max(max_norm, std::sqrt(sq));
  }
  r.bound = 2 * r.tau * max_norm;
  return r;
}

class DiagnosticsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    t_ = StartServer(TestOptions());
    ASSERT_TRUE(
        CreateSession(*t_.stub, "tk", MakeConfig(1, kHkv, kHq, kD, kDv, kSpec))
            .ok());
    ASSERT_TRUE(
        CreateSession(*t_.stub, "ex", MakeConfig(1, kHkv, kHq, kD, kDv)).ok());
    constexpr int64_t n = 60;
    // Spiky keys so that a few keys carry most of the mass and tau is well
    // inside (0, 1).
    auto k = RandomFloats(kHkv * n * kD, 5);
    for (float& x : k) x *= 3;
    auto v = RandomFloats(kHkv * n * kDv, 6);
    for (const char* id : {"tk", "ex"}) {
      ASSERT_TRUE(AppendTokens(*t_.stub, id, 0, kHkv, n, kD, kDv, k, v).ok());
    }
    store_.Append(n, k, v);
    ref_ = std::make_unique<ReferenceSession>(1, kHkv, kHq, kD, kDv);
    ref_->Append(0, n, k, v);
  }

  // Checks one response's diagnostics and outputs against the reference.
  void CheckDiagnostics(
      const google::protobuf::RepeatedPtrField<v1::QueryDiagnostic>& diags,
      const v1::Tensor& output, const std::vector<float>& q) {
    ASSERT_EQ(diags.size(), kHq);
    const std::vector<double> exact = ref_->Attend(0, 1, q);
    const std::vector<float> out = TensorFloats(output);
    for (int hq = 0; hq < kHq; ++hq) {
      const int h = hq / (kHq / kHkv);
      const RefDiag want = Reference(store_, h, q.data() + hq * kD);
      ASSERT_GT(want.gap, 1e-4) << "reference selection is ambiguous";
      const v1::QueryDiagnostic& got = diags[hq];
      EXPECT_NEAR(got.dropped_mass(), want.tau, 1e-5) << "head " << hq;
      EXPECT_GT(got.dropped_mass(), 1e-6) << "want a non-trivial tau";
      EXPECT_NEAR(got.error_bound(), want.bound, 1e-5 * (1 + want.bound));
      EXPECT_EQ(got.keys_selected(), want.selected);
      EXPECT_EQ(got.keys_selected(), kSinks + kWindow + kK);
      // The bound holds for the served output against exact attention.
      double err = 0;
      for (int i = 0; i < kDv; ++i) {
        const double e = out[hq * kDv + i] - exact[hq * kDv + i];
        err += e * e;
      }
      EXPECT_LE(std::sqrt(err), got.error_bound() + 1e-5) << "head " << hq;
    }
  }

  double MassCount() const {
    return MetricValue(
        t_.server->ScrapeMetrics(),
        "kvsketch_topk_dropped_mass_count{approximator=\"topk\"}");
  }
  double MassSum() const {
    return MetricValue(t_.server->ScrapeMetrics(),
                       "kvsketch_topk_dropped_mass_sum{approximator=\"topk\"}");
  }

  TestServer t_;
  Store store_;
  std::unique_ptr<ReferenceSession> ref_;
};

TEST_F(DiagnosticsTest, DecodeEntryReportsTauAndBoundForTopk) {
  grpc::ClientContext ctx;
  auto stream = t_.stub->Decode(&ctx);
  double tau_sum = 0;
  for (int step = 0; step < 3; ++step) {
    auto k = RandomFloats(kHkv * kD, 100 + step);
    for (float& x : k) x *= 3;
    auto v = RandomFloats(kHkv * kDv, 200 + step);
    auto q = RandomFloats(kHq * kD, 300 + step);
    v1::DecodeRequest req;
    v1::DecodeEntry* e = req.add_entries();
    e->set_session_id("tk");
    e->set_want_diagnostics(true);
    *e->mutable_keys() = MakeTensor({kHkv, kD}, k);
    *e->mutable_values() = MakeTensor({kHkv, kDv}, v);
    *e->mutable_queries() = MakeTensor({kHq, 1, kD}, q);
    // Same step without the flag: no diagnostics.
    v1::DecodeEntry* plain = req.add_entries();
    plain->set_session_id("tk");
    *plain->mutable_queries() = MakeTensor({kHq, 1, kD}, q);
    ASSERT_TRUE(stream->Write(req));
    v1::DecodeResponse resp;
    ASSERT_TRUE(stream->Read(&resp));
    ASSERT_EQ(resp.results_size(), 2);
    ASSERT_EQ(resp.results(0).code(), 0) << resp.results(0).message();
    store_.Append(1, k, v);
    ref_->Append(0, 1, k, v);
    CheckDiagnostics(resp.results(0).diagnostics(), resp.results(0).output(),
                     q);
    for (const auto& dg : resp.results(0).diagnostics()) {
      tau_sum += dg.dropped_mass();
    }
    ASSERT_EQ(resp.results(1).code(), 0);
    EXPECT_EQ(resp.results(1).diagnostics_size(), 0);
  }
  EXPECT_TRUE(stream->WritesDone());
  EXPECT_TRUE(stream->Finish().ok());
  // Every diagnosed row is observed once, with its tau.
  EXPECT_EQ(MassCount(), 3 * kHq);
  EXPECT_NEAR(MassSum(), tau_sum, 1e-6 * (1 + tau_sum));
}

TEST_F(DiagnosticsTest, AttendReportsTauForTopk) {
  auto q = RandomFloats(kHq * kD, 42);
  grpc::ClientContext ctx;
  v1::AttendRequest req;
  req.set_session_id("tk");
  req.set_want_diagnostics(true);
  *req.mutable_queries() = MakeTensor({kHq, 1, kD}, q);
  v1::AttendResponse resp;
  const grpc::Status s = t_.stub->Attend(&ctx, req, &resp);
  ASSERT_TRUE(s.ok()) << StatusText(s);
  CheckDiagnostics(resp.diagnostics(), resp.output(), q);
  EXPECT_EQ(MassCount(), kHq);
}

TEST_F(DiagnosticsTest, UnsupportedKindIsRefusedAndChangesNothing) {
  // Attend on exact: FAILED_PRECONDITION naming the spec.
  {
    grpc::ClientContext ctx;
    v1::AttendRequest req;
    req.set_session_id("ex");
    req.set_want_diagnostics(true);
    *req.mutable_keys() = MakeTensor({kHkv, kD}, RandomFloats(kHkv * kD, 1));
    *req.mutable_values() =
        MakeTensor({kHkv, kDv}, RandomFloats(kHkv * kDv, 2));
    *req.mutable_queries() =
        MakeTensor({kHq, 1, kD}, RandomFloats(kHq * kD, 3));
    v1::AttendResponse resp;
    const grpc::Status s = t_.stub->Attend(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(s.error_message(),
                HasSubstr("want_diagnostics: diagnostics not supported by "
                          "exact"));
  }
  // Decode entries: exact refused; topk with T = 2 refused (causal rows saw
  // different token sets); a plain entry in the same step still runs.
  grpc::ClientContext ctx;
  auto stream = t_.stub->Decode(&ctx);
  v1::DecodeRequest req;
  v1::DecodeEntry* e = req.add_entries();
  e->set_session_id("ex");
  e->set_want_diagnostics(true);
  *e->mutable_keys() = MakeTensor({kHkv, kD}, RandomFloats(kHkv * kD, 4));
  *e->mutable_values() = MakeTensor({kHkv, kDv}, RandomFloats(kHkv * kDv, 5));
  *e->mutable_queries() = MakeTensor({kHq, 1, kD}, RandomFloats(kHq * kD, 6));
  v1::DecodeEntry* two = req.add_entries();
  two->set_session_id("tk");
  two->set_want_diagnostics(true);
  *two->mutable_keys() =
      MakeTensor({kHkv, 2, kD}, RandomFloats(kHkv * 2 * kD, 7));
  *two->mutable_values() =
      MakeTensor({kHkv, 2, kDv}, RandomFloats(kHkv * 2 * kDv, 8));
  *two->mutable_queries() =
      MakeTensor({kHq, 2, kD}, RandomFloats(kHq * 2 * kD, 9));
  v1::DecodeEntry* ok = req.add_entries();
  ok->set_session_id("tk");
  *ok->mutable_queries() = MakeTensor({kHq, 1, kD}, RandomFloats(kHq * kD, 10));
  ASSERT_TRUE(stream->Write(req));
  v1::DecodeResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  ASSERT_EQ(resp.results_size(), 3);
  EXPECT_EQ(resp.results(0).code(),
            static_cast<int>(grpc::StatusCode::FAILED_PRECONDITION));
  EXPECT_THAT(resp.results(0).message(),
              HasSubstr("entries[0].want_diagnostics: diagnostics not "
                        "supported by exact"));
  EXPECT_EQ(resp.results(1).code(),
            static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_THAT(resp.results(1).message(),
              HasSubstr("entries[1].want_diagnostics"));
  EXPECT_EQ(resp.results(2).code(), 0) << resp.results(2).message();
  EXPECT_EQ(resp.results(2).num_tokens(), 60);
  EXPECT_TRUE(stream->WritesDone());
  EXPECT_TRUE(stream->Finish().ok());
  // Nothing was appended by the refused entries.
  for (const char* id : {"ex", "tk"}) {
    v1::SessionInfo info;
    ASSERT_TRUE(GetSession(*t_.stub, id, &info).ok());
    EXPECT_EQ(info.tokens_per_layer(0), 60) << id;
  }
  EXPECT_EQ(MassCount(), 0);
}

}  // namespace
}  // namespace kvsketch::server::testing
