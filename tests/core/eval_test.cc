// Tests of the accuracy harness library (core/eval): trace I/O, metrics
// against hand-computed cases, the harness on exact specs, calibration on
// synthetic data with a planted support exponent, and the report writers.
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "core/eval/calibrate.h"
#include "core/eval/harness.h"
#include "core/eval/report.h"
#include "core/eval/svg_plot.h"
#include "core/eval/trace.h"
#include "core/io/npy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvsketch::eval {
namespace {

using ::testing::HasSubstr;

std::string TempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string dir = std::string(base != nullptr ? base : "/tmp") +
                    "/kvsketch_eval_test_" + name + "_" +
                    std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// A dense random trace: 2 layers, 4 query heads over 2 KV heads (GQA).
Trace RandomTrace(int64_t n, int d, int dv) {
  Trace t;
  t.name = "random";
  t.layers = 2;
  t.q_heads = 4;
  t.kv_heads = 2;
  t.n = n;
  t.d = d;
  t.dv = dv;
  t.scale = static_cast<float>(1 / std::sqrt(double(d)));
  std::mt19937 rng(7);
  std::normal_distribution<float> g;
  for (int64_t i = 0; i < n; ++i) t.query_pos.push_back(i);
  t.q.resize(size_t(2) * 4 * n * d);
  t.k.resize(size_t(2) * 2 * n * d);
  t.v.resize(size_t(2) * 2 * n * dv);
  for (float& x : t.q) x = 2 * g(rng);
  for (float& x : t.k) x = g(rng);
  for (float& x : t.v) x = g(rng);
  return t;
}

TEST(TraceTest, SaveLoadRoundTrip) {
  const Trace t = RandomTrace(12, 4, 3);
  const std::string dir = TempDir("roundtrip");
  ASSERT_TRUE(SaveTraceDir(t, dir).ok());
  auto back = LoadTraceDir(dir);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->layers, 2);
  EXPECT_EQ(back->q_heads, 4);
  EXPECT_EQ(back->kv_heads, 2);
  EXPECT_EQ(back->n, 12);
  EXPECT_EQ(back->d, 4);
  EXPECT_EQ(back->dv, 3);
  EXPECT_EQ(back->q, t.q);
  EXPECT_EQ(back->k, t.k);
  EXPECT_EQ(back->v, t.v);
  EXPECT_EQ(back->query_pos, t.query_pos);
  EXPECT_FLOAT_EQ(back->scale, 0.5f);
  // Row accessors follow the [layer][head][t][dim] layout.
  EXPECT_EQ(back->k_row(1, 1, 5)[2], t.k[((1 * 2 + 1) * 12 + 5) * 4 + 2]);
}

TEST(TraceTest, ShapeMismatchNamesTheFileAndDimension) {
  const Trace t = RandomTrace(8, 4, 3);
  const std::string dir = TempDir("mismatch");
  ASSERT_TRUE(SaveTraceDir(t, dir).ok());
  ASSERT_TRUE(WriteNpy(dir + "/v.npy", {2, 2, 7, 3},
                       std::vector<float>(2 * 2 * 7 * 3, 1.0f))
                  .ok());
  auto bad = LoadTraceDir(dir);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("T (dim 2)"));
  EXPECT_THAT(bad.status().message(), HasSubstr("v.npy has 7"));

  ASSERT_TRUE(WriteNpy(dir + "/v.npy", {2, 2, 8, 3},
                       std::vector<float>(2 * 2 * 8 * 3, 1.0f))
                  .ok());
  ASSERT_TRUE(WriteNpy(dir + "/q.npy", {2, 3, 8, 4},
                       std::vector<float>(2 * 3 * 8 * 4, 1.0f))
                  .ok());
  bad = LoadTraceDir(dir);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("not a multiple of kv_heads"));

  ASSERT_TRUE(
      WriteNpy(dir + "/q.npy", {2, 4, 8}, std::vector<float>(64, 1.0f)).ok());
  bad = LoadTraceDir(dir);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("q.npy: expected rank 4"));

  EXPECT_EQ(LoadTraceDir(dir + "/missing").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(TraceTest, SyntheticTracesAndErrors) {
  auto g = MakeSyntheticTrace("gaussian", 256, 16, 5, 3);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->m(), 5);
  for (int64_t p : g->query_pos) EXPECT_EQ(p, 255);
  auto p = MakeSyntheticTrace("planted", 1000, 16, 10, 3);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->m(), 10);
  EXPECT_EQ(p->query_pos.back(), 999);
  EXPECT_GE(p->query_pos.front(), 500);
  EXPECT_EQ(p->needles.size(), 8u);
  for (int64_t x : p->needles) EXPECT_LT(x, p->query_pos.front());
  EXPECT_EQ(p->k.size(), 1000u * 16);
  auto bad = MakeSyntheticTrace("zipf", 100, 8, 1, 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("valid: gaussian, sinks"));

  Trace s = *p;
  SubsampleQueries(&s, 3);
  ASSERT_EQ(s.m(), 3);
  EXPECT_EQ(s.query_pos.back(), 999);
  // The kept rows carry their own query vectors.
  EXPECT_EQ(std::vector<float>(s.q_row(0, 0, 2), s.q_row(0, 0, 2) + 16),
            std::vector<float>(p->q_row(0, 0, 9), p->q_row(0, 0, 9) + 16));
}

TEST(MetricsTest, HandComputedCases) {
  const float o1[] = {1, 0};
  const double r1[] = {0, 1};
  EXPECT_NEAR(RelativeL2(o1, r1, 2), std::sqrt(2.0), 1e-12);
  EXPECT_NEAR(Cosine(o1, r1, 2), 0, 1e-12);
  const float o2[] = {2, 0};
  const double r2[] = {1, 0};
  EXPECT_NEAR(RelativeL2(o2, r2, 2), 1, 1e-12);
  EXPECT_NEAR(Cosine(o2, r2, 2), 1, 1e-12);
  const float o3[] = {3, 4};
  const double r3[] = {4, 3};
  EXPECT_NEAR(Cosine(o3, r3, 2), 24.0 / 25, 1e-12);
  EXPECT_NEAR(RelativeL2(o3, r3, 2), std::sqrt(2.0) / 5, 1e-12);

  // Logits 0 and ln 3 -> weights 1/4, 3/4 -> 0.25*4 + 0.75*8 = 7.
  const float q[] = {1};
  const float keys[] = {0, static_cast<float>(std::log(3.0)), 100};
  const float values[] = {4, 8, -1000};
  double out = 0;
  ReferenceAttention(q, keys, values, 2, 1, 1, 1.0, {}, &out);
  EXPECT_NEAR(out, 7, 1e-6);
  // Restricted to rows {2}: only the third key.
  const int64_t rows[] = {2};
  ReferenceAttention(q, keys, values, 3, 1, 1, 1.0, rows, &out);
  EXPECT_NEAR(out, -1000, 1e-9);
}

TEST(HarnessTest, ExactSpecHasNoErrorAndCountsRows) {
  Trace t = RandomTrace(64, 8, 6);
  SubsampleQueries(&t, 5);
  const std::vector<std::string> specs = {"exact", "exact:store=f16",
                                          "topk:k=1000,k_min=1000"};
  auto rows = RunEval(t, specs);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 3u);
  const EvalRow& e = (*rows)[0];
  EXPECT_EQ(e.label, "exact");
  EXPECT_EQ(e.spec, "exact:store=f32");
  EXPECT_EQ(e.n, 64);
  EXPECT_EQ(e.query_rows, 2 * 4 * 5);  // layers × q_heads × queries
  EXPECT_LT(e.rel_l2_max, 1e-5);
  EXPECT_GT(e.cosine_min, 1 - 1e-9);
  EXPECT_EQ(e.needle_rate, -1);
  // 4 heads, 64 tokens, (8 + 6) floats each.
  EXPECT_GE(e.state_bytes, 4 * 64 * 14 * 4);
  EXPECT_DOUBLE_EQ(e.bytes_per_token, e.state_bytes / 64.0);
  // f16 storage: small but nonzero error, about half the memory.
  const EvalRow& h = (*rows)[1];
  EXPECT_GT(h.rel_l2_max, 0);
  EXPECT_LT(h.rel_l2_max, 5e-3);
  EXPECT_LT(h.state_bytes, e.state_bytes * 0.6);
  // topk with k >= n is exact.
  EXPECT_LT((*rows)[2].rel_l2_max, 1e-5);
}

TEST(HarnessTest, NeedleRateAndLossyPolicies) {
  auto t = MakeSyntheticTrace("needles", 4096, 32, 6, 11);
  ASSERT_TRUE(t.ok());
  const std::vector<std::string> specs = {"exact", "evict:budget=16,window=8"};
  auto rows = RunEval(*t, specs);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ((*rows)[0].needle_rate, 1.0);
  EXPECT_LT((*rows)[0].rel_l2_max, 1e-5);
  // A 16-token budget evicts most of the 4096 tokens: real error, and less
  // state than the exact cache.
  EXPECT_GT((*rows)[1].rel_l2_mean, 1e-3);
  EXPECT_LT((*rows)[1].state_bytes, (*rows)[0].state_bytes / 10);
}

// evict learns heavy hitters from Attend only: without a query stream it
// degrades to a sliding window and loses the needles planted in the first
// half; warm rows (Attend calls that are not scored) let it keep them.
TEST(HarnessTest, WarmRowsFeedQueryDrivenPolicies) {
  const std::vector<std::string> specs = {"evict"};
  auto cold = MakeSyntheticTrace("needles", 4096, 32, 6, 11);
  auto warm = MakeSyntheticTrace("needles", 4096, 32, 6, 11, 0.5, 512);
  ASSERT_TRUE(cold.ok() && warm.ok());
  EXPECT_EQ(cold->m(), 6);
  EXPECT_EQ(warm->m(), 6 + 512);
  int64_t scored = 0;
  for (int64_t i = 0; i < warm->m(); ++i) scored += warm->is_scored(i);
  EXPECT_EQ(scored, 6);
  auto c = RunEval(*cold, specs);
  auto w = RunEval(*warm, specs);
  ASSERT_TRUE(c.ok() && w.ok());
  EXPECT_EQ((*c)[0].query_rows, 6);
  EXPECT_EQ((*w)[0].query_rows, 6);  // warm rows are not scored
  EXPECT_EQ((*c)[0].needle_rate, 0.0);
  EXPECT_EQ((*w)[0].needle_rate, 1.0);
  EXPECT_LT((*w)[0].rel_l2_mean, 0.1);

  // SubsampleQueries keeps scored rows and marks the warm ones.
  Trace t = RandomTrace(64, 4, 4);
  SubsampleQueries(&t, 4, 8);
  EXPECT_EQ(t.m(), 12);
  int64_t kept_scored = 0;
  for (int64_t i = 0; i < t.m(); ++i) kept_scored += t.is_scored(i);
  EXPECT_EQ(kept_scored, 4);
  EXPECT_TRUE(t.is_scored(t.m() - 1));
  EXPECT_EQ(t.query_pos.back(), 63);
}

TEST(HarnessTest, UnknownSpecIsInvalidArgument) {
  Trace t = RandomTrace(8, 4, 4);
  const std::vector<std::string> specs = {"exact", "nosuch:x=1"};
  auto rows = RunEval(t, specs);
  ASSERT_FALSE(rows.ok());
  EXPECT_EQ(rows.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(rows.status().message(), HasSubstr("nosuch"));
}

TEST(HarnessTest, PrefillPathMatchesStreamPathOnDenseTrace) {
  // Every position has a query; score 7 rows. Both paths compute the same
  // attention (exact), so their errors against the reference are tiny and
  // they score the same rows.
  Trace t = RandomTrace(300, 8, 6);
  ASSERT_TRUE(IsDenseTrace(t));
  MarkScoredQueries(&t, 7);
  EXPECT_EQ(t.m(), 300);  // all rows kept
  int64_t scored = 0;
  for (int64_t i = 0; i < t.m(); ++i) scored += t.is_scored(i);
  EXPECT_EQ(scored, 7);
  EXPECT_TRUE(t.is_scored(299));
  const std::vector<std::string> specs = {"exact", "exact:store=bf16"};
  auto stream = RunEval(t, specs, {EvalPath::kStream, 0});
  ASSERT_TRUE(stream.ok()) << stream.status();
  for (int64_t chunk : {0, 1, 64, 299}) {
    SCOPED_TRACE(chunk);
    auto prefill = RunEval(t, specs, {EvalPath::kPrefill, chunk});
    ASSERT_TRUE(prefill.ok()) << prefill.status();
    ASSERT_EQ(prefill->size(), 2u);
    const EvalRow& p = (*prefill)[0];
    EXPECT_EQ(p.path, "prefill");
    EXPECT_EQ(p.query_rows, 2 * 4 * 7);
    EXPECT_EQ(p.query_rows, (*stream)[0].query_rows);
    EXPECT_LT(p.rel_l2_max, 1e-5);
    EXPECT_GT(p.prefill_us_per_token, 0);
    EXPECT_EQ(p.append_us_per_token, 0);
    EXPECT_EQ(p.state_bytes, (*stream)[0].state_bytes);
    // bf16 storage error is the same whichever path computes it.
    EXPECT_NEAR((*prefill)[1].rel_l2_mean, (*stream)[1].rel_l2_mean,
                0.05 * (*stream)[1].rel_l2_mean + 1e-6);
    EXPECT_GT((*prefill)[1].rel_l2_mean, 1e-4);
  }
  EXPECT_EQ((*stream)[0].path, "stream");
}

TEST(HarnessTest, PrefillPathNeedsDenseTraceAndValidChunk) {
  Trace t = RandomTrace(64, 4, 4);
  SubsampleQueries(&t, 5);
  ASSERT_FALSE(IsDenseTrace(t));
  const std::vector<std::string> specs = {"exact"};
  auto rows = RunEval(t, specs, {EvalPath::kPrefill, 0});
  ASSERT_FALSE(rows.ok());
  EXPECT_EQ(rows.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(rows.status().message(), HasSubstr("dense"));
  Trace dense = RandomTrace(16, 4, 4);
  auto bad_chunk = RunEval(dense, specs, {EvalPath::kPrefill, -1});
  EXPECT_EQ(bad_chunk.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TraceTest, DenseSyntheticTraceKeepsEveryQuery) {
  auto t = MakeSyntheticTrace("planted", 512, 8, 4, 1, 0.5, 0, true);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(IsDenseTrace(*t));
  int64_t scored = 0;
  for (int64_t i = 0; i < t->m(); ++i) scored += t->is_scored(i);
  EXPECT_EQ(scored, 4);
  EXPECT_TRUE(t->is_scored(511));
  // Same planted data as the sparse trace: the scored rows agree.
  auto sparse = MakeSyntheticTrace("planted", 512, 8, 4, 1);
  ASSERT_TRUE(sparse.ok());
  int64_t j = 0;
  for (int64_t i = 0; i < t->m(); ++i) {
    if (!t->is_scored(i)) continue;
    ASSERT_LT(j, sparse->m());
    EXPECT_EQ(sparse->query_pos[j], i);
    EXPECT_EQ(t->q[i * 8], sparse->q[j * 8]);
    ++j;
  }
  auto g = MakeSyntheticTrace("gaussian", 64, 8, 4, 1, 0.5, 0, true);
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CalibrateTest, SmallestKForMassHandCases) {
  // Equal logits: k = ceil((1 - tau) n).
  const float q[] = {0, 0};
  std::vector<float> keys(2 * 10, 1.0f);
  EXPECT_EQ(SmallestKForMass(q, keys.data(), 10, 2, 1.0, 0.05), 10);
  EXPECT_EQ(SmallestKForMass(q, keys.data(), 10, 2, 1.0, 0.5), 5);
  EXPECT_EQ(SmallestKForMass(q, keys.data(), 10, 2, 1.0, 0.71), 3);
  // One dominant key holds > 99% of the mass.
  const float q1[] = {1, 0};
  std::vector<float> k1(2 * 10, 0.0f);
  k1[2 * 7] = 20;
  EXPECT_EQ(SmallestKForMass(q1, k1.data(), 10, 2, 1.0, 0.01), 1);
}

TEST(CalibrateTest, FitRecoversExactPowerLaw) {
  std::vector<KTauSample> s;
  for (int64_t n : {1000, 4000, 16000, 64000}) {
    s.push_back({0, 0, n, 3.0 * std::pow(double(n), 0.4), 1});
    s.push_back({0, 1, n, 0.5 * std::pow(double(n), 0.7), 1});
  }
  auto fits = FitCalibration(s);
  ASSERT_TRUE(fits.ok());
  ASSERT_EQ(fits->size(), 2u);
  EXPECT_NEAR((*fits)[0].c, 0.4, 1e-9);
  EXPECT_NEAR((*fits)[0].alpha, 3.0, 1e-9);
  EXPECT_NEAR((*fits)[0].r2, 1.0, 1e-9);
  EXPECT_EQ((*fits)[0].topk_spec, "topk:alpha=3,c=0.4");
  EXPECT_NEAR((*fits)[1].c, 0.7, 1e-9);
  EXPECT_EQ((*fits)[1].evict_spec, "evict:alpha=0.5,c=0.7");
  // One prefix length only: not fittable.
  EXPECT_FALSE(FitCalibration(absl::MakeSpan(s).subspan(0, 1)).ok());
}

// GaussianLogits with spread s = sqrt(2(1-c0) ln n) has effective support
// about n^c0, but k_tau also carries a factor exp(z_tau * s) from the
// Gaussian tail, so the finite-n slope is biased upward as tau shrinks
// (measured: +0.13..+0.3 at tau = 0.05, +0.03..+0.07 at tau = 0.2 with 32
// rows over n = 1K..64K). At tau = 0.2 the fit must land within 0.1 of c0,
// fit well, and increase with c0.
TEST(CalibrateTest, RecoversPlantedExponentOnSyntheticData) {
  std::vector<double> cs;
  for (double c0 : {0.3, 0.5, 0.7}) {
    std::vector<KTauSample> all;
    for (int64_t n : {1024, 4096, 16384, 65536}) {
      auto t = MakeSyntheticTrace("gaussian", n, 32, 32, 5, c0);
      ASSERT_TRUE(t.ok());
      const int64_t prefix[] = {n};
      auto s = MeasureKTau(*t, 0.2, prefix, 32);
      ASSERT_TRUE(s.ok()) << s.status();
      all.insert(all.end(), s->begin(), s->end());
    }
    auto fits = FitCalibration(all);
    ASSERT_TRUE(fits.ok());
    ASSERT_EQ(fits->size(), 1u);
    EXPECT_NEAR((*fits)[0].c, c0, 0.1) << "c0 = " << c0;
    EXPECT_GT((*fits)[0].r2, 0.9);
    cs.push_back((*fits)[0].c);
  }
  EXPECT_LT(cs[0], cs[1]);
  EXPECT_LT(cs[1], cs[2]);
}

TEST(CalibrateTest, BadArgumentsAreRejected) {
  auto t = MakeSyntheticTrace("planted", 512, 8, 4, 1);
  ASSERT_TRUE(t.ok());
  const int64_t ok[] = {512};
  const int64_t too_long[] = {513};
  const int64_t no_rows[] = {100};
  EXPECT_THAT(MeasureKTau(*t, 1.0, ok, 4).status().message(), HasSubstr("tau"));
  EXPECT_THAT(MeasureKTau(*t, 0.1, too_long, 4).status().message(),
              HasSubstr("outside [2, 512]"));
  EXPECT_THAT(MeasureKTau(*t, 0.1, no_rows, 4).status().message(),
              HasSubstr("no query row"));
  EXPECT_TRUE(MeasureKTau(*t, 0.1, ok, 4).ok());
}

int Count(const std::string& s, const std::string& what) {
  int c = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1))
    ++c;
  return c;
}

TEST(SvgTest, WellFormedWithOnePathPerSeries) {
  LinePlot p;
  p.title = "err <&> test";
  p.x_label = "n";
  p.y_label = "error";
  p.series = {{"exact", {{1024, 1e-7}, {4096, 2e-7}}},
              {"topk<a>", {{1024, 1e-2}, {4096, 3e-2}, {16384, 0.05}}},
              {"sketch", {{1024, 1.0}, {4096, 1.2}}},
              {"empty", {{1024, 0.0}}}};  // nothing drawable on a log axis
  const std::string svg = RenderSvg(p);
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_EQ(Count(svg, "<svg "), 1);
  EXPECT_EQ(Count(svg, "</svg>"), 1);
  EXPECT_EQ(Count(svg, "<path "), 3);
  EXPECT_EQ(Count(svg, "<circle "), 7);
  EXPECT_EQ(Count(svg, "<text"), Count(svg, "</text>"));
  EXPECT_THAT(svg, HasSubstr("err &lt;&amp;&gt; test"));
  EXPECT_THAT(svg, HasSubstr("topk&lt;a&gt;"));
  EXPECT_EQ(svg.find("topk<a>"), std::string::npos);
  EXPECT_THAT(svg, HasSubstr(">1e-7<"));  // a decade tick label
  // Every element opened with '<' is closed: self-closing or paired.
  const int opens = Count(svg, "<") - Count(svg, "</") - Count(svg, "<?");
  EXPECT_EQ(opens, Count(svg, "/>") + Count(svg, "</"));
}

TEST(ReportTest, CsvJsonMarkdownCarryEveryRow) {
  EvalRow a;
  a.label = "exact";
  a.spec = "exact:store=f32";
  a.trace = "planted";
  a.n = 1024;
  a.query_rows = 8;
  a.rel_l2_mean = 1.5e-7;
  a.cosine_mean = 1;
  a.state_bytes = 2048;
  a.bytes_per_token = 2;
  a.needle_rate = 0.75;
  a.path = "stream";
  EvalRow b = a;
  b.label = "topk:c=0.5";
  b.needle_rate = -1;
  b.path = "prefill";
  b.self_recall_mean = 0.925;
  b.self_fit_error_mean = 0.0125;
  b.self_fit_fallbacks = 3;
  const std::vector<EvalRow> rows = {a, b};
  const std::string csv = FormatCsv(rows);
  EXPECT_EQ(Count(csv, "\n"), 3);
  EXPECT_THAT(csv, HasSubstr("\"planted\",stream,\"exact\",\"exact:store=f32\","
                             "1024,8,1.5e-07"));
  EXPECT_THAT(csv, HasSubstr(",0.925,0.0125,3\n"));  // b's self-checks
  EXPECT_THAT(csv, HasSubstr(",,,0\n"));             // a has none
  EXPECT_THAT(csv, HasSubstr(",0.75,2048,"));
  EXPECT_THAT(csv, HasSubstr(",,2048,"));  // no needles: empty cell
  const std::string json = FormatJson(rows);
  EXPECT_EQ(Count(json, "{"), Count(json, "}"));
  EXPECT_EQ(Count(json, "\"spec\""), 2);
  EXPECT_THAT(json, HasSubstr("\"needle_rate\": null"));
  EXPECT_THAT(json, HasSubstr("\"needle_rate\": 0.75"));
  EXPECT_THAT(json, HasSubstr("\"self_recall_mean\": 0.925"));
  EXPECT_THAT(json, HasSubstr("\"self_recall_mean\": null"));
  EXPECT_EQ(Count(json, "\"query_rows\""), 2);
  const std::string md = FormatMarkdown(rows);
  EXPECT_EQ(Count(md, "\n"), 4);
  EXPECT_THAT(md, HasSubstr("| planted | prefill | `topk:c=0.5` | 1024 |"));
  EXPECT_THAT(md, HasSubstr("| recall 0.925, fit err 1.25e-02, 3 exact "
                            "fallbacks |"));
  EXPECT_THAT(md, HasSubstr("| 75% |"));
  EXPECT_THAT(md, HasSubstr("2.0 KiB"));
  const std::string svg = ErrorPlotSvg(rows);
  EXPECT_EQ(Count(svg, "<path "), 2);
}

}  // namespace
}  // namespace kvsketch::eval
