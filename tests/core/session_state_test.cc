// File: tests/core/session_state_test.cc
//
// SessionState: GQA mapping and causal steps against the per-head reference,
// config normalisation, and atomicity of every rejected call.
#include "core/session_state.h"

#include <cmath>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/testing/reference_attention.h"

namespace kvsketch {
namespace {

using ::kvsketch::testing::AttentionTolerance;
using ::kvsketch::testing::kF32Unit;
using ::kvsketch::testing::MaxAbsDiff;
using ::kvsketch::testing::RandomNormal;
using ::kvsketch::testing::ReferenceAttention;
using ::kvsketch::testing::ReferenceCausalAttention;
using ::testing::HasSubstr;

SessionConfig GqaConfig() {
  SessionConfig c;
  c.num_layers = 3;
  c.num_kv_heads = 2;
  c.num_query_heads = 8;
  c.head_dim = 16;
  c.value_dim = 12;
  return c;
}

// Rows [h][t0, t0+t) of a [heads][total][w] tensor, as a [heads][t][w] one.
std::vector<float> Slice(const std::vector<float>& x, int heads, int64_t total,
                         int w, int64_t t0, int64_t t) {
  std::vector<float> out;
  for (int h = 0; h < heads; ++h) {
    const float* p = x.data() + (h * total + t0) * w;
    out.insert(out.end(), p, p + t * w);
  }
  return out;
}

std::vector<float> HeadRows(const std::vector<float>& x, int h, int64_t rows,
                            int w) {
  return std::vector<float>(x.begin() + h * rows * w,
                            x.begin() + (h + 1) * rows * w);
}

TEST(NormalizeSessionConfigTest, FillsDefaultsAndCanonicalizes) {
  SessionConfig c;
  c.num_layers = 2;
  c.num_kv_heads = 4;
  c.head_dim = 64;
  c.layer_specs[1] = "exact:store=bf16";
  ASSERT_TRUE(NormalizeSessionConfig(&c).ok());
  EXPECT_EQ(c.num_query_heads, 4);
  EXPECT_EQ(c.value_dim, 64);
  EXPECT_FLOAT_EQ(c.scale, 0.125f);
  EXPECT_EQ(c.spec, "exact:store=f32");
  EXPECT_EQ(c.layer_specs.at(1), "exact:store=bf16");
  SessionConfig again = c;
  ASSERT_TRUE(NormalizeSessionConfig(&again).ok());
  EXPECT_EQ(again.spec, c.spec);
  EXPECT_EQ(again.scale, c.scale);
}

TEST(NormalizeSessionConfigTest, ErrorsNameTheField) {
  struct Bad {
    void (*mutate)(SessionConfig&);
    const char* message;
  };
  const Bad bad[] = {
      {[](SessionConfig& c) { c.num_layers = 0; },
       "num_layers (0) must be in [1, 1024]"},
      {[](SessionConfig& c) { c.num_kv_heads = 1025; },
       "num_kv_heads (1025) must be in [1, 1024]"},
      {[](SessionConfig& c) {
         c.num_kv_heads = 4;
         c.num_query_heads = 6;
       },
       "num_query_heads (6) must be a multiple of num_kv_heads (4)"},
      {[](SessionConfig& c) { c.head_dim = 0; }, "head_dim (0)"},
      {[](SessionConfig& c) { c.value_dim = 70000; }, "value_dim (70000)"},
      {[](SessionConfig& c) { c.scale = -1; }, "scale (-1)"},
      {[](SessionConfig& c) { c.scale = NAN; }, "scale (nan)"},
      {[](SessionConfig& c) { c.max_tokens = -1; }, "max_tokens (-1)"},
      {[](SessionConfig& c) { c.spec = "exakt"; },
       "spec: unknown approximator kind \"exakt\""},
      {[](SessionConfig& c) { c.layer_specs[3] = "exact"; },
       "layer_specs key (3) must be in [0, 3)"},
      {[](SessionConfig& c) { c.layer_specs[1] = "exact:store=f64"; },
       "layer_specs[1]: spec exact:store=f64"},
  };
  for (const Bad& b : bad) {
    SessionConfig c = GqaConfig();
    b.mutate(c);
    const SessionConfig before = c;
    absl::Status s = NormalizeSessionConfig(&c);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << b.message;
    EXPECT_THAT(s.message(), HasSubstr(b.message));
    EXPECT_EQ(c.spec, before.spec);  // untouched on error
    EXPECT_FALSE(SessionState::Create(c).ok());
  }
}

TEST(SessionStateTest, CreateStopsAtTheStateByteLimit) {
  SessionConfig c;
  c.num_layers = 16;
  c.num_kv_heads = 32;
  c.head_dim = 8;
  c.spec = "sketch";  // the feature summary is allocated up front
  // Unlimited: builds (512 heads of a few tens of KB).
  auto all = SessionState::Create(c);
  ASSERT_TRUE(all.ok()) << all.status();
  const int64_t total = (*all)->MemoryBytes();
  // A limit below the total stops the build with ResourceExhausted.
  auto limited = SessionState::Create(c, total / 2);
  ASSERT_EQ(limited.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(limited.status().message(), HasSubstr("before any token"));
  // A limit at the total is enough.
  EXPECT_TRUE(SessionState::Create(c, total).ok());
}

TEST(SessionStateTest, TaylorSummaryOverTheHeadLimitIsRefusedBeforeAllocating) {
  // Degree 1 at head_dim 65535 has t = 65536 features; with value_dim 65536
  // the summary would be t·dv doubles = 32 GiB for one head.
  SessionConfig c;
  c.num_layers = 1;
  c.num_kv_heads = 1;
  c.head_dim = 65535;
  c.value_dim = 65536;
  c.spec = "sketch:map=taylor,degree=1";
  auto s = SessionState::Create(c);
  ASSERT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("2 GiB"));
}

TEST(SessionStateTest, GqaQueriesMatchPerHeadReference) {
  const SessionConfig cfg = GqaConfig();
  auto s = SessionState::Create(cfg);
  ASSERT_TRUE(s.ok()) << s.status();
  SessionState& st = **s;
  const int kv = 2, qh = 8, d = 16, dv = 12, g = 4;
  const int64_t n = 300;
  const auto k = RandomNormal(1, kv * n * d), v = RandomNormal(2, kv * n * dv);
  // Append in two pieces to layer 1.
  ASSERT_TRUE(
      st.Append(1, 100, Slice(k, kv, n, d, 0, 100), Slice(v, kv, n, dv, 0, 100))
          .ok());
  ASSERT_TRUE(st.Append(1, 200, Slice(k, kv, n, d, 100, 200),
                        Slice(v, kv, n, dv, 100, 200))
                  .ok());
  EXPECT_EQ(st.tokens_per_layer(), (std::vector<int64_t>{0, 300, 0}));
  const int64_t m = 3;
  const auto q = RandomNormal(3, qh * m * d);
  std::vector<float> out(qh * m * dv);
  ASSERT_TRUE(st.Step(1, 0, {}, {}, m, q, absl::MakeSpan(out)).ok());
  const double scale = 0.25;  // 1/sqrt(16)
  for (int h = 0; h < qh; ++h) {
    const int kvh = h / g;
    const auto kh = HeadRows(k, kvh, n, d), vh = HeadRows(v, kvh, n, dv);
    const auto qrows = HeadRows(q, h, m, d);
    const auto ref = ReferenceAttention(qrows, m, kh, vh, n, d, dv, scale);
    const std::vector<float> got = HeadRows(out, h, m, dv);
    EXPECT_LE(MaxAbsDiff(got, ref),
              AttentionTolerance(qrows, m, kh, vh, n, d, dv, scale, kF32Unit))
        << "query head " << h;
  }
  EXPECT_GT(st.LayerMemoryBytes(1), 0);
  EXPECT_EQ(st.LayerMemoryBytes(0), 0);
  EXPECT_EQ(st.MemoryBytes(), st.LayerMemoryBytes(1));
}

TEST(SessionStateTest, CausalStepMatchesReference) {
  auto s = SessionState::Create(GqaConfig());
  ASSERT_TRUE(s.ok());
  SessionState& st = **s;
  const int kv = 2, qh = 8, d = 16, dv = 12, g = 4;
  const int64_t prev = 50, t = 37, n = prev + t;
  const auto k = RandomNormal(11, kv * n * d),
             v = RandomNormal(12, kv * n * dv);
  ASSERT_TRUE(st.Append(0, prev, Slice(k, kv, n, d, 0, prev),
                        Slice(v, kv, n, dv, 0, prev))
                  .ok());
  const auto q = RandomNormal(13, qh * t * d);
  std::vector<float> out(qh * t * dv);
  ASSERT_TRUE(st.Step(0, t, Slice(k, kv, n, d, prev, t),
                      Slice(v, kv, n, dv, prev, t), t, q, absl::MakeSpan(out))
                  .ok());
  EXPECT_EQ(st.num_tokens(0), n);
  for (int h = 0; h < qh; ++h) {
    const auto kh = HeadRows(k, h / g, n, d), vh = HeadRows(v, h / g, n, dv);
    const auto qrows = HeadRows(q, h, t, d);
    const auto ref = ReferenceCausalAttention(qrows, t, kh, vh, n, d, dv, 0.25);
    EXPECT_LE(MaxAbsDiff(HeadRows(out, h, t, dv), ref),
              AttentionTolerance(qrows, t, kh, vh, n, d, dv, 0.25, kF32Unit))
        << h;
  }
}

TEST(SessionStateTest, CausalStepOnEmptyLayerWorks) {
  auto s = SessionState::Create(GqaConfig());
  ASSERT_TRUE(s.ok());
  const int kv = 2, qh = 8, d = 16, dv = 12;
  const int64_t t = 5;
  const auto k = RandomNormal(21, kv * t * d),
             v = RandomNormal(22, kv * t * dv);
  const auto q = RandomNormal(23, qh * t * d);
  std::vector<float> out(qh * t * dv);
  ASSERT_TRUE((*s)->Step(2, t, k, v, t, q, absl::MakeSpan(out)).ok());
  // The first query row of each head sees only token 0: output = v row 0.
  for (int h = 0; h < qh; ++h) {
    for (int c = 0; c < dv; ++c) {
      EXPECT_FLOAT_EQ(out[h * t * dv + c], v[(h / 4) * t * dv + c]);
    }
  }
}

// A session that receives every failing call must answer exactly like a
// control session that never saw them.
TEST(SessionStateTest, RejectedCallsChangeNothing) {
  SessionConfig cfg = GqaConfig();
  cfg.max_tokens = 100;
  auto a = SessionState::Create(cfg);
  auto b = SessionState::Create(cfg);
  ASSERT_TRUE(a.ok() && b.ok());
  const int kv = 2, qh = 8, d = 16, dv = 12;
  const auto k = RandomNormal(31, kv * 90 * d),
             v = RandomNormal(32, kv * 90 * dv);
  for (auto* st : {a->get(), b->get()}) {
    ASSERT_TRUE(st->Append(0, 90, k, v).ok());
  }
  SessionState& x = **a;
  const auto k1 = RandomNormal(33, kv * 20 * d),
             v1 = RandomNormal(34, kv * 20 * dv);
  const auto q1 = RandomNormal(35, qh * 20 * d);
  std::vector<float> out(qh * 20 * dv, 7.0f);
  const std::vector<float> out_before = out;
  struct Call {
    absl::Status status;
    absl::StatusCode code;
    const char* message;
  };
  const std::vector<float> short_k(k1.begin(), k1.end() - 1);
  const Call calls[] = {
      {x.Append(0, 20, k1, v1), absl::StatusCode::kResourceExhausted,
       "max_tokens (100)"},
      {x.Append(3, 1, {k1.data(), 2 * 16}, {v1.data(), 2 * 12}),
       absl::StatusCode::kInvalidArgument, "layer (3) must be in [0, 3)"},
      {x.Append(-1, 1, {k1.data(), 2 * 16}, {v1.data(), 2 * 12}),
       absl::StatusCode::kInvalidArgument, "layer (-1)"},
      {x.Append(0, 20, short_k, v1), absl::StatusCode::kInvalidArgument,
       "keys has 639 floats, expected 640"},
      {x.Append(0, 2, {k1.data(), 2 * 2 * 16}, {v1.data(), 2 * 2 * 12 + 1}),
       absl::StatusCode::kInvalidArgument, "values has 49 floats, expected 48"},
      {x.Step(0, 2, {k1.data(), 2 * 2 * 16}, {v1.data(), 2 * 2 * 12}, 3,
              {q1.data(), 8 * 3 * 16}, {out.data(), 8 * 3 * 12}),
       absl::StatusCode::kInvalidArgument,
       "num_queries (3) must equal num_new_tokens (2)"},
      {x.Step(0, 2, {k1.data(), 2 * 2 * 16}, {v1.data(), 2 * 2 * 12}, 2,
              {q1.data(), 8 * 2 * 16 - 1}, {out.data(), 8 * 2 * 12}),
       absl::StatusCode::kInvalidArgument, "queries has 255 floats"},
      {x.Step(0, 2, {k1.data(), 2 * 2 * 16}, {v1.data(), 2 * 2 * 12}, 2,
              {q1.data(), 8 * 2 * 16}, {out.data(), 8 * 2 * 12 + 1}),
       absl::StatusCode::kInvalidArgument, "out has 193 floats"},
      {x.Step(1, 0, {}, {}, 1, {q1.data(), 8 * 16}, {out.data(), 8 * 12}),
       absl::StatusCode::kFailedPrecondition, "layer 1 has no tokens"},
      {x.Step(0, 20, k1, v1, 20, q1, absl::MakeSpan(out)),
       absl::StatusCode::kResourceExhausted, "max_tokens"},
      {x.Step(0, -1, {}, {}, 0, {}, {}), absl::StatusCode::kInvalidArgument,
       "num_new_tokens (-1)"},
  };
  for (const Call& c : calls) {
    EXPECT_EQ(c.status.code(), c.code) << c.message << ": " << c.status;
    EXPECT_THAT(c.status.message(), HasSubstr(c.message));
  }
  EXPECT_EQ(out, out_before);
  EXPECT_EQ(x.tokens_per_layer(), (*b)->tokens_per_layer());
  EXPECT_EQ(x.MemoryBytes(), (*b)->MemoryBytes());
  // Both sessions now take the same step and answer bit-identically.
  std::vector<float> oa(qh * 10 * dv), ob(qh * 10 * dv);
  const auto k2 = Slice(k1, kv, 20, d, 0, 10),
             v2 = Slice(v1, kv, 20, dv, 0, 10);
  const auto q2 = RandomNormal(36, qh * 10 * d);
  ASSERT_TRUE(x.Step(0, 10, k2, v2, 10, q2, absl::MakeSpan(oa)).ok());
  ASSERT_TRUE((*b)->Step(0, 10, k2, v2, 10, q2, absl::MakeSpan(ob)).ok());
  EXPECT_EQ(oa, ob);
  // Exactly at the limit; one more token is refused.
  EXPECT_EQ(x.num_tokens(0), 100);
  EXPECT_EQ(x.Append(0, 1, {k1.data(), 32}, {v1.data(), 24}).code(),
            absl::StatusCode::kResourceExhausted);
}

// Half-precision storage turns a float above its range into Inf (and every
// later answer into NaN): such keys or values are refused before any head
// changes, naming the element; f32 storage takes them.
TEST(SessionStateTest, ValuesBeyondTheStorageRangeAreRefused) {
  const int kv = 2, qh = 8, d = 16, dv = 12;
  const auto k = RandomNormal(41, kv * 2 * d),
             v = RandomNormal(42, kv * 2 * dv);
  const auto q = RandomNormal(43, qh * 2 * d);
  struct Case {
    const char* spec;
    float big;  // just past the store's largest finite value
    const char* limit;
  };
  for (const Case& c : {Case{"exact:store=f16", 65520.0f, "65504"},
                        Case{"exact:store=bf16", 3.4e38f, "3.38953e+38"}}) {
    SCOPED_TRACE(c.spec);
    SessionConfig cfg = GqaConfig();
    cfg.spec = c.spec;
    auto a = SessionState::Create(cfg);
    auto b = SessionState::Create(cfg);
    ASSERT_TRUE(a.ok() && b.ok());
    for (auto* st : {a->get(), b->get()}) {
      ASSERT_TRUE(st->Append(0, 2, k, v).ok());
    }
    auto bad_k = k;
    bad_k[kv * 2 * d - 1] = -c.big;  // the last element of the last head
    auto bad_v = v;
    bad_v[5] = c.big;
    std::vector<float> out(qh * 2 * dv);
    const absl::Status sk =
        (*a)->Step(0, 2, bad_k, v, 2, q, absl::MakeSpan(out));
    EXPECT_EQ(sk.code(), absl::StatusCode::kInvalidArgument) << sk;
    EXPECT_THAT(sk.message(), HasSubstr("keys[63]"));
    EXPECT_THAT(sk.message(), HasSubstr(c.limit));
    EXPECT_THAT(sk.message(), HasSubstr(c.spec));
    const absl::Status sv = (*a)->Append(0, 2, k, bad_v);
    EXPECT_EQ(sv.code(), absl::StatusCode::kInvalidArgument) << sv;
    EXPECT_THAT(sv.message(), HasSubstr("values[5]"));
    // Nothing changed: the same good step answers bit-identically and
    // finitely on both sessions.
    EXPECT_EQ((*a)->tokens_per_layer(), (*b)->tokens_per_layer());
    std::vector<float> oa(qh * 2 * dv), ob(qh * 2 * dv);
    ASSERT_TRUE((*a)->Step(0, 2, k, v, 2, q, absl::MakeSpan(oa)).ok());
    ASSERT_TRUE((*b)->Step(0, 2, k, v, 2, q, absl::MakeSpan(ob)).ok());
    EXPECT_EQ(oa, ob);
    for (float x : oa) ASSERT_TRUE(std::isfinite(x));
    // The largest finite value itself is accepted.
    auto edge = k;
    edge[0] =
        c.spec == std::string("exact:store=f16") ? 65504.0f : 3.38953139e38f;
    EXPECT_TRUE((*a)->Append(0, 2, edge, v).ok());
  }
  // f32 storage holds any finite float.
  SessionConfig cfg = GqaConfig();
  auto f32 = SessionState::Create(cfg);
  ASSERT_TRUE(f32.ok());
  auto big = k;
  big[0] = 1e6f;
  EXPECT_TRUE((*f32)->Append(0, 2, big, v).ok());
}

TEST(SessionStateTest, QueriesOnlyAndTokensOnlySteps) {
  auto s = SessionState::Create(GqaConfig());
  ASSERT_TRUE(s.ok());
  const auto k = RandomNormal(41, 2 * 4 * 16), v = RandomNormal(42, 2 * 4 * 12);
  // T > 0, M = 0: append only.
  ASSERT_TRUE((*s)->Step(0, 4, k, v, 0, {}, {}).ok());
  EXPECT_EQ((*s)->num_tokens(0), 4);
  // T = 0, M = 0: a no-op.
  ASSERT_TRUE((*s)->Step(0, 0, {}, {}, 0, {}, {}).ok());
  EXPECT_EQ((*s)->num_tokens(0), 4);
  EXPECT_EQ((*s)->layer_spec(0), "exact:store=f32");
}

TEST(SessionStateTest, PerLayerSpecs) {
  SessionConfig c = GqaConfig();
  c.layer_specs[2] = "exact:store=f16";
  auto s = SessionState::Create(c);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)->layer_spec(0), "exact:store=f32");
  EXPECT_EQ((*s)->layer_spec(2), "exact:store=f16");
  const auto k = RandomNormal(51, 2 * 64 * 16),
             v = RandomNormal(52, 2 * 64 * 12);
  ASSERT_TRUE((*s)->Append(0, 64, k, v).ok());
  ASSERT_TRUE((*s)->Append(2, 64, k, v).ok());
  // Same token capacity, half the bytes per element (plus equal bookkeeping).
  const int64_t f32 = (*s)->LayerMemoryBytes(0),
                f16 = (*s)->LayerMemoryBytes(2);
  EXPECT_GE(f32, 2 * 64 * 28 * 4);  // 2 heads, 64 tokens, d+dv=28
  EXPECT_GT(f32, 19 * f16 / 10);
  EXPECT_LT(f32, 2 * f16);
}

}  // namespace
}  // namespace kvsketch
