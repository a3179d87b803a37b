// File: tests/client/diagnostics_client_test.cc
//
// AttendOptions::want_diagnostics through the client library: a topk session
// returns one diagnostic per query row whose bound covers the served
// output's error against exact attention; an exact session refuses with
// FailedPrecondition; without the option nothing is computed or returned.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/attention_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/client/test_server.h"
#include "tests/client/test_util.h"
#include "tests/core/testing/reference_attention.h"

namespace kvsketch::client {
namespace {

using ::kvsketch::testing::MultiHeadReference;
using ::kvsketch::testing::RandomNormal;
using ::testing::HasSubstr;

constexpr int kKv = 2, kQ = 4, kDim = 16, kN = 50;

class DiagnosticsClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = testing::StartTestServer();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = AttentionClient::Connect(testing::LoopbackAddress(*server_));
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(5)).IgnoreError();
  }

  // A session of `spec` holding keys_ / values_.
  std::string NewSession(const std::string& spec) {
    v1::SessionConfig c;
    c.set_num_layers(1);
    c.set_num_kv_heads(kKv);
    c.set_num_query_heads(kQ);
    c.set_head_dim(kDim);
    c.set_spec(spec);
    auto info = client_->CreateSession(c);
    EXPECT_TRUE(info.ok()) << info.status();
    if (!info.ok()) return "";
    const std::vector<int64_t> shape = {kKv, kN, kDim};
    EXPECT_TRUE(client_
                    ->AppendTokens(info->session_id(), 0, {shape, keys_},
                                   {shape, values_}, {})
                    .ok());
    return info->session_id();
  }

  std::unique_ptr<server::Server> server_;
  std::unique_ptr<AttentionClient> client_;
  std::vector<float> keys_ = RandomNormal(11, kKv* kN* kDim, 2.5);
  std::vector<float> values_ = RandomNormal(12, kKv* kN* kDim);
};

TEST_F(DiagnosticsClientTest, TopkReturnsDiagnosticsWhoseBoundHolds) {
  const std::string id = NewSession("topk:k=6,sinks=2,window=4");
  const std::vector<float> q = RandomNormal(13, kQ * kDim);
  AttendOptions options;
  options.want_diagnostics = true;
  auto r = client_->Attend(id, 0, {}, {}, {{kQ, 1, kDim}, q}, options);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->diagnostics.size(), static_cast<size_t>(kQ));
  const std::vector<double> exact =
      MultiHeadReference(q, kQ, 1, keys_, values_, kKv, kN, kDim, kDim,
                         1.0 / std::sqrt(static_cast<double>(kDim)));
  for (int h = 0; h < kQ; ++h) {
    const v1::QueryDiagnostic& dg = r->diagnostics[h];
    EXPECT_EQ(dg.keys_selected(), 2 + 4 + 6);
    EXPECT_GT(dg.dropped_mass(), 0.0);
    EXPECT_LT(dg.dropped_mass(), 1.0);
    double err = 0;
    for (int i = 0; i < kDim; ++i) {
      const double e = r->output.data[h * kDim + i] - exact[h * kDim + i];
      err += e * e;
    }
    EXPECT_LE(std::sqrt(err), dg.error_bound() + 1e-5) << "head " << h;
  }
  // Without the option: none.
  auto plain = client_->Attend(id, 0, {}, {}, {{kQ, 1, kDim}, q});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_TRUE(plain->diagnostics.empty());
  EXPECT_EQ(plain->output.data, r->output.data);
}

TEST_F(DiagnosticsClientTest, ExactRefusesDiagnostics) {
  const std::string id = NewSession("exact");
  AttendOptions options;
  options.want_diagnostics = true;
  auto r = client_->Attend(
      id, 0, {}, {}, {{kQ, 1, kDim}, RandomNormal(14, kQ * kDim)}, options);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("diagnostics not supported by exact"));
}

}  // namespace
}  // namespace kvsketch::client
