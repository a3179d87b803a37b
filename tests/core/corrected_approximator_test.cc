// File: tests/core/corrected_approximator_test.cc
//
// core/regression/corrected_approximator and correction_file (issue #5 item
// 3): X = Y = I reproduces the base bit for bit on every path; a random X, Y
// on exact matches softmax(s·q X Kᵀ) V Y in double; bad inputs, state round
// trips, and the correction directory's round trip and validation.
#include "core/regression/corrected_approximator.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/eval/harness.h"
#include "core/io/npy.h"
#include "core/registry.h"
#include "core/regression/correction_file.h"
#include "core/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvsketch::regression {
namespace {

using ::testing::HasSubstr;

constexpr int kD = 8, kDv = 6, kGroup = 2;

const HeadShape kShape{kD, kDv, 1 / std::sqrt(float(kD))};

std::vector<float> Random(size_t n, std::mt19937_64& rng, float sd = 1) {
  std::normal_distribution<float> nd(0, sd);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

// Float-representable matrices (so float storage loses nothing).
Matrix RandomMatrix(int64_t r, int64_t c, std::mt19937_64& rng, double eye,
                    double sd) {
  std::normal_distribution<double> nd(0, sd);
  Matrix m(r, c);
  for (int64_t i = 0; i < r; ++i) {
    for (int64_t j = 0; j < c; ++j) {
      m(i, j) = static_cast<float>((i == j ? eye : 0) + nd(rng));
    }
  }
  return m;
}

std::unique_ptr<Approximator> Base(const std::string& spec) {
  auto a = CreateApproximator(spec, kShape);
  EXPECT_TRUE(a.ok()) << a.status();
  return std::move(*a);
}

std::unique_ptr<CorrectedApproximator> Wrap(std::unique_ptr<Approximator> base,
                                            const std::vector<Matrix>& x,
                                            const std::vector<Matrix>& y) {
  auto c = CorrectedApproximator::Create(std::move(base), x, y);
  EXPECT_TRUE(c.ok()) << c.status();
  return std::move(*c);
}

std::vector<Matrix> Eyes(int size) {
  return std::vector<Matrix>(kGroup, Matrix::Identity(size, size));
}

class IdentityTest : public ::testing::TestWithParam<std::string> {};

// The same calls on the base and on the identity-wrapped copy give the same
// bits on Append + Attend, Query and Prefill (and evict's query-driven
// state stays in step, since its queries are unchanged).
TEST_P(IdentityTest, IdentityCorrectionIsTheBaseBitForBit) {
  std::unique_ptr<Approximator> plain = Base(GetParam());
  std::unique_ptr<CorrectedApproximator> wrapped =
      Wrap(Base(GetParam()), Eyes(kD), Eyes(kDv));
  EXPECT_EQ(wrapped->Spec(), plain->Spec() + "+correction");
  EXPECT_GT(wrapped->MemoryBytes(), plain->MemoryBytes());
  std::mt19937_64 rng(7);
  Approximator* both[] = {plain.get(), wrapped.get()};
  for (int step = 0; step < 40; ++step) {
    const std::vector<float> k = Random(3 * kD, rng), v = Random(3 * kDv, rng);
    const std::vector<float> q = Random(kGroup * 2 * kD, rng, 2);
    std::vector<float> out[2];
    for (int i = 0; i < 2; ++i) {
      ASSERT_TRUE(both[i]->Append({k.data(), 3, kD}, {v.data(), 3, kDv}).ok());
      out[i].assign(kGroup * 2 * kDv, 0);
      // [g][M] with M = 2 rows per query head.
      ASSERT_TRUE(both[i]
                      ->Attend({q.data(), kGroup * 2, kD},
                               {out[i].data(), kGroup * 2, kDv})
                      .ok());
    }
    ASSERT_EQ(out[0], out[1]) << "Attend, step " << step;
    for (int i = 0; i < 2; ++i) {
      ASSERT_TRUE(
          both[i]
              ->Query({q.data(), kGroup, kD}, {out[i].data(), kGroup, kDv})
              .ok());
    }
    ASSERT_EQ(out[0], out[1]) << "Query, step " << step;
  }
  const int64_t t = 9;
  const std::vector<float> k = Random(t * kD, rng), v = Random(t * kDv, rng);
  const std::vector<float> q = Random(kGroup * t * kD, rng, 2);
  std::vector<float> out[2];
  for (int i = 0; i < 2; ++i) {
    out[i].assign(kGroup * t * kDv, 0);
    ASSERT_TRUE(both[i]
                    ->Prefill({q.data(), kGroup * t, kD}, kGroup,
                              {k.data(), t, kD}, {v.data(), t, kDv},
                              {out[i].data(), kGroup * t, kDv})
                    .ok());
  }
  EXPECT_EQ(out[0], out[1]) << "Prefill";
  EXPECT_EQ(plain->num_tokens(), wrapped->num_tokens());
  EXPECT_EQ(wrapped->MemoryBytes(),
            plain->MemoryBytes() + int64_t{kGroup} * (kD * kD + kDv * kDv) * 4);
}

INSTANTIATE_TEST_SUITE_P(Kinds, IdentityTest,
                         ::testing::Values("exact",
                                           "evict:budget=12,sinks=2,window=3"));

// Double-precision reference: softmax(s·(q X) Kᵀ) V Y over keys 0..count-1.
std::vector<double> Reference(const float* q, const Matrix& x, const Matrix& y,
                              const std::vector<float>& k,
                              const std::vector<float>& v, int64_t count) {
  Eigen::RowVectorXd qr(kD);
  for (int c = 0; c < kD; ++c) qr(c) = q[c];
  const Eigen::RowVectorXd qx = qr * x;
  std::vector<double> s(count);
  double mx = -1e300;
  for (int64_t j = 0; j < count; ++j) {
    double dot = 0;
    for (int c = 0; c < kD; ++c) dot += qx(c) * k[j * kD + c];
    s[j] = kShape.scale * dot;
    mx = std::max(mx, s[j]);
  }
  Eigen::RowVectorXd o = Eigen::RowVectorXd::Zero(kDv);
  double z = 0;
  for (int64_t j = 0; j < count; ++j) {
    const double w = std::exp(s[j] - mx);
    z += w;
    for (int c = 0; c < kDv; ++c) o(c) += w * v[j * kDv + c];
  }
  const Eigen::RowVectorXd oy = (o / z) * y;
  return std::vector<double>(oy.data(), oy.data() + kDv);
}

void ExpectNear(const float* got, const std::vector<double>& want,
                const std::string& what) {
  double norm = 0;
  for (double w : want) norm = std::max(norm, std::abs(w));
  for (int c = 0; c < kDv; ++c) {
    EXPECT_NEAR(got[c], want[c], 2e-5 * (1 + norm)) << what << " col " << c;
  }
}

TEST(CorrectedApproximatorTest, RandomCorrectionMatchesDoubleReference) {
  std::mt19937_64 rng(11);
  std::vector<Matrix> x, y;
  for (int g = 0; g < kGroup; ++g) {
    x.push_back(RandomMatrix(kD, kD, rng, 1, 0.4));
    y.push_back(RandomMatrix(kDv, kDv, rng, 1, 0.4));
  }
  // The two heads must differ, or a head mix-up would go unnoticed.
  ASSERT_GT((x[0] - x[1]).norm(), 0.5);
  const int64_t n = 30;
  const std::vector<float> k = Random(n * kD, rng), v = Random(n * kDv, rng);
  const std::vector<float> q = Random(kGroup * n * kD, rng, 2);  // [g][n]

  // Decode path: Append all, then Attend / Query with M = 3 rows per head.
  std::unique_ptr<CorrectedApproximator> a = Wrap(Base("exact"), x, y);
  EXPECT_EQ(a->group(), kGroup);
  ASSERT_TRUE(a->Append({k.data(), n, kD}, {v.data(), n, kDv}).ok());
  const int m = 3;
  std::vector<float> qm(kGroup * m * kD);
  for (int g = 0; g < kGroup; ++g) {
    std::copy_n(q.data() + g * n * kD, m * kD, qm.data() + g * m * kD);
  }
  std::vector<float> out(kGroup * m * kDv);
  ASSERT_TRUE(
      a->Query({qm.data(), kGroup * m, kD}, {out.data(), kGroup * m, kDv})
          .ok());
  for (int r = 0; r < kGroup * m; ++r) {
    const int g = r / m;
    ExpectNear(out.data() + r * kDv,
               Reference(qm.data() + r * kD, x[g], y[g], k, v, n),
               "query row " + std::to_string(r));
  }
  std::vector<float> out2(out.size());
  ASSERT_TRUE(
      a->Attend({qm.data(), kGroup * m, kD}, {out2.data(), kGroup * m, kDv})
          .ok());
  EXPECT_EQ(out, out2);

  // Bulk path: causal Prefill over all n tokens, layout [g][T].
  std::unique_ptr<CorrectedApproximator> b = Wrap(Base("exact"), x, y);
  std::vector<float> po(kGroup * n * kDv);
  ASSERT_TRUE(b->Prefill({q.data(), kGroup * n, kD}, kGroup, {k.data(), n, kD},
                         {v.data(), n, kDv}, {po.data(), kGroup * n, kDv})
                  .ok());
  for (int g = 0; g < kGroup; ++g) {
    for (int64_t t = 0; t < n; ++t) {
      const int64_t r = g * n + t;
      ExpectNear(
          po.data() + r * kDv,
          Reference(q.data() + r * kD, x[g], y[g], k, v, t + 1),
          "prefill head " + std::to_string(g) + " t " + std::to_string(t));
    }
  }
}

TEST(CorrectedApproximatorTest, BadInputsGiveClearErrors) {
  auto err = [](std::unique_ptr<Approximator> base, std::vector<Matrix> x,
                std::vector<Matrix> y) {
    return CorrectedApproximator::Create(std::move(base), x, y).status();
  };
  EXPECT_THAT(err(nullptr, Eyes(kD), Eyes(kDv)).message(),
              HasSubstr("no base"));
  EXPECT_THAT(err(Base("exact"), {}, {}).message(), HasSubstr("empty"));
  EXPECT_THAT(
      err(Base("exact"), Eyes(kD), {Matrix::Identity(kDv, kDv)}).message(),
      HasSubstr("2 X matrices but 1 Y"));
  std::vector<Matrix> bad_x = Eyes(kD);
  bad_x[1] = Matrix::Identity(kD, kD - 1);
  EXPECT_THAT(err(Base("exact"), bad_x, Eyes(kDv)).message(),
              HasSubstr("X of query head 1 is 8x7, expected 8x8"));
  EXPECT_THAT(err(Base("exact"), Eyes(kD), Eyes(kD)).message(),
              HasSubstr("Y of query head 0 is 8x8, expected 6x6"));
  std::vector<Matrix> nan_x = Eyes(kD);
  nan_x[0](2, 3) = std::nan("");
  EXPECT_THAT(err(Base("exact"), nan_x, Eyes(kDv)).message(),
              HasSubstr("non-finite"));
  std::vector<Matrix> big_y = Eyes(kDv);
  big_y[1](0, 0) = 1e300;  // finite in double, infinite as float
  EXPECT_THAT(err(Base("exact"), Eyes(kD), big_y).message(),
              HasSubstr("Y of query head 1 has a non-finite"));
  for (const absl::Status& s :
       {err(nullptr, Eyes(kD), Eyes(kDv)), err(Base("exact"), {}, {})}) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  }

  std::unique_ptr<CorrectedApproximator> a =
      Wrap(Base("exact"), Eyes(kD), Eyes(kDv));
  std::vector<float> k(kD, 1), v(kDv, 1), q(3 * kD, 1), o(3 * kDv);
  ASSERT_TRUE(a->Append({k.data(), 1, kD}, {v.data(), 1, kDv}).ok());
  absl::Status s = a->Attend({q.data(), 3, kD}, {o.data(), 3, kDv});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("not a multiple"));
  EXPECT_EQ(a->Query({q.data(), 3, kD}, {o.data(), 3, kDv}).code(),
            absl::StatusCode::kInvalidArgument);
  s = a->Prefill({q.data(), 1, kD}, 1, {k.data(), 1, kD}, {v.data(), 1, kDv},
                 {o.data(), 1, kDv});
  EXPECT_THAT(s.message(), HasSubstr("group (1) differs"));
  EXPECT_EQ(a->num_tokens(), 1);  // nothing appended by the failed Prefill
  // Shape errors are the base contract's.
  EXPECT_EQ(a->Attend({q.data(), 2, kD - 1}, {o.data(), 2, kDv}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CorrectedApproximatorTest, SaveLoadRoundTripKeepsMatricesAndBase) {
  std::mt19937_64 rng(5);
  std::vector<Matrix> x, y;
  for (int g = 0; g < kGroup; ++g) {
    x.push_back(RandomMatrix(kD, kD, rng, 1, 0.3));
    y.push_back(RandomMatrix(kDv, kDv, rng, 1, 0.3));
  }
  const std::string spec = "evict:budget=10,sinks=2,window=3";
  std::unique_ptr<CorrectedApproximator> a = Wrap(Base(spec), x, y);
  for (int step = 0; step < 25; ++step) {
    const std::vector<float> k = Random(kD, rng), v = Random(kDv, rng);
    const std::vector<float> q = Random(kGroup * kD, rng, 2);
    std::vector<float> o(kGroup * kDv);
    ASSERT_TRUE(a->Append({k.data(), 1, kD}, {v.data(), 1, kDv}).ok());
    ASSERT_TRUE(
        a->Attend({q.data(), kGroup, kD}, {o.data(), kGroup, kDv}).ok());
  }
  ByteWriter w;
  ASSERT_TRUE(a->SaveState(w).ok());

  // Loaded into an identity-wrapped instance: the matrices come back too.
  std::unique_ptr<CorrectedApproximator> b =
      Wrap(Base(spec), Eyes(kD), Eyes(kDv));
  ByteReader r(w.data());
  ASSERT_TRUE(b->LoadState(r).ok());
  EXPECT_TRUE(r.ExpectEnd("state").ok());
  EXPECT_EQ(b->num_tokens(), 25);
  EXPECT_EQ(b->MemoryBytes(), a->MemoryBytes());
  for (int step = 0; step < 5; ++step) {
    const std::vector<float> k = Random(kD, rng), v = Random(kDv, rng);
    const std::vector<float> q = Random(kGroup * kD, rng, 2);
    std::vector<float> oa(kGroup * kDv), ob(kGroup * kDv);
    for (auto [c, o] : {std::pair{a.get(), &oa}, std::pair{b.get(), &ob}}) {
      ASSERT_TRUE(c->Append({k.data(), 1, kD}, {v.data(), 1, kDv}).ok());
      ASSERT_TRUE(
          c->Attend({q.data(), kGroup, kD}, {o->data(), kGroup, kDv}).ok());
    }
    ASSERT_EQ(oa, ob) << "step " << step;
  }

  // Truncated: DataLoss and the state is left as it was.
  std::unique_ptr<CorrectedApproximator> c =
      Wrap(Base(spec), Eyes(kD), Eyes(kDv));
  const std::string blob = w.data();
  for (size_t cut : {size_t{3}, size_t{20}, blob.size() - 1}) {
    ByteReader tr(absl::string_view(blob).substr(0, cut));
    EXPECT_EQ(c->LoadState(tr).code(), absl::StatusCode::kDataLoss) << cut;
    EXPECT_EQ(c->num_tokens(), 0);
  }
  // Another group: DataLoss.
  std::unique_ptr<CorrectedApproximator> one = Wrap(
      Base(spec), {Matrix::Identity(kD, kD)}, {Matrix::Identity(kDv, kDv)});
  ByteReader r3(w.data());
  absl::Status s = one->LoadState(r3);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("group 2"));
}

// The harness runs a wrapped spec as its own row: identity matrices give the
// unwrapped figures on both paths, the row's spec is the wrapper's, and a
// wrapper error names the row, layer and head.
TEST(CorrectedApproximatorTest, HarnessRunsWrappedSpecs) {
  auto t = eval::MakeSyntheticTrace("planted", 96, kD, 8, 3, 0.5, 0,
                                    /*dense=*/true);
  ASSERT_TRUE(t.ok()) << t.status();
  const std::string spec = "evict:budget=24,sinks=2,window=4";
  const std::vector<Matrix> ex(1, Matrix::Identity(kD, kD));
  const std::vector<Matrix> ey(1, Matrix::Identity(kD, kD));
  int calls = 0;
  const std::vector<eval::EvalSpec> specs = {
      {"plain", spec, nullptr},
      {"wrapped", spec,
       [&](std::unique_ptr<Approximator> base, int layer,
           int kv) -> absl::StatusOr<std::unique_ptr<Approximator>> {
         EXPECT_EQ(layer, 0);
         EXPECT_EQ(kv, 0);
         ++calls;
         KVSKETCH_ASSIGN_OR_RETURN(
             std::unique_ptr<CorrectedApproximator> c,
             CorrectedApproximator::Create(std::move(base), ex, ey));
         return std::unique_ptr<Approximator>(std::move(c));
       }}};
  for (eval::EvalPath path :
       {eval::EvalPath::kStream, eval::EvalPath::kPrefill}) {
    auto rows = eval::RunEval(*t, specs, {path, 0});
    ASSERT_TRUE(rows.ok()) << rows.status();
    ASSERT_EQ(rows->size(), 2u);
    EXPECT_EQ((*rows)[1].label, "wrapped");
    EXPECT_EQ((*rows)[1].spec, (*rows)[0].spec + "+correction");
    EXPECT_GT((*rows)[0].rel_l2_mean, 1e-3);
    EXPECT_EQ((*rows)[0].rel_l2_mean, (*rows)[1].rel_l2_mean);
    EXPECT_EQ((*rows)[0].query_rows, (*rows)[1].query_rows);
  }
  EXPECT_EQ(calls, 2);
  const std::vector<eval::EvalSpec> failing = {
      {"broken", spec,
       [](std::unique_ptr<Approximator>, int,
          int) -> absl::StatusOr<std::unique_ptr<Approximator>> {
         return absl::InvalidArgumentError("no matrices");
       }}};
  absl::Status s = eval::RunEval(*t, failing, {}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("broken: layer 0 KV head 0: no matrices"));
}

// --- The correction directory ---

StorageCorrectionFile MakeFile(std::mt19937_64& rng) {
  StorageCorrectionFile f;
  f.base_spec = *CanonicalizeSpec("evict:budget=24");
  f.trace_name = "dir:some/trace";
  f.trace_dir = "/tmp/some/trace";
  f.layers = 2;
  f.q_heads = 4;
  f.kv_heads = 2;
  f.d = 4;
  f.dv = 3;
  f.n = 100;
  f.train_tokens = 37;
  f.lambda = 1.25e-3;
  f.layer = -1;
  for (int i = 0; i < f.layers * f.q_heads; ++i) {
    f.x.push_back(RandomMatrix(f.d, f.d, rng, 1, 0.5));
    f.y.push_back(RandomMatrix(f.dv, f.dv, rng, 1, 0.5));
  }
  return f;
}

std::string TempDir(const std::string& name) {
  const std::string dir =
      (std::filesystem::temp_directory_path() /
       ("kvsketch_corr_" + name + "_" + std::to_string(::getpid())))
          .string();
  std::filesystem::remove_all(dir);
  return dir;
}

TEST(CorrectionFileTest, SaveLoadRoundTripsExactly) {
  std::mt19937_64 rng(3);
  const StorageCorrectionFile f = MakeFile(rng);
  const std::string dir = TempDir("roundtrip");
  ASSERT_TRUE(SaveStorageCorrection(f, dir).ok());
  auto g = LoadStorageCorrection(dir);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->base_spec, f.base_spec);
  EXPECT_EQ(g->trace_name, f.trace_name);
  EXPECT_EQ(g->trace_dir, f.trace_dir);
  EXPECT_EQ(g->layers, 2);
  EXPECT_EQ(g->q_heads, 4);
  EXPECT_EQ(g->kv_heads, 2);
  EXPECT_EQ(g->d, 4);
  EXPECT_EQ(g->dv, 3);
  EXPECT_EQ(g->n, 100);
  EXPECT_EQ(g->train_tokens, 37);
  EXPECT_EQ(g->lambda, 1.25e-3);
  EXPECT_EQ(g->layer, -1);
  ASSERT_EQ(g->x.size(), 8u);
  ASSERT_EQ(g->y.size(), 8u);
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(g->x[i], f.x[i]) << i;
    EXPECT_EQ(g->y[i], f.y[i]) << i;
  }
  // The .npy layout is [layers, q_heads, d, d], row-major.
  auto xn = ReadNpy(dir + "/correction_x.npy");
  ASSERT_TRUE(xn.ok());
  EXPECT_EQ(xn->shape, (std::vector<int64_t>{2, 4, 4, 4}));
  EXPECT_EQ(xn->data[(1 * 4 + 2) * 16 + 1 * 4 + 3], float(f.X(1, 2)(1, 3)));

  // WrapWithCorrection hands (layer 1, KV head 1) query heads 2 and 3.
  const HeadShape shape{4, 3, 0.5f};
  auto base = CreateApproximator("exact", shape);
  ASSERT_TRUE(base.ok());
  auto wrapped = WrapWithCorrection(*g, 1, 1, std::move(*base));
  ASSERT_TRUE(wrapped.ok()) << wrapped.status();
  auto direct = CorrectedApproximator::Create(
      *CreateApproximator("exact", shape), {f.X(1, 2), f.X(1, 3)},
      {f.Y(1, 2), f.Y(1, 3)});
  ASSERT_TRUE(direct.ok());
  const std::vector<float> k = Random(5 * 4, rng), v = Random(5 * 3, rng);
  const std::vector<float> q = Random(2 * 4, rng);
  std::vector<float> o1(6), o2(6);
  ASSERT_TRUE((*wrapped)->Append({k.data(), 5, 4}, {v.data(), 5, 3}).ok());
  ASSERT_TRUE((*direct)->Append({k.data(), 5, 4}, {v.data(), 5, 3}).ok());
  ASSERT_TRUE((*wrapped)->Query({q.data(), 2, 4}, {o1.data(), 2, 3}).ok());
  ASSERT_TRUE((*direct)->Query({q.data(), 2, 4}, {o2.data(), 2, 3}).ok());
  EXPECT_EQ(o1, o2);
  EXPECT_FALSE(WrapWithCorrection(*g, 2, 0, nullptr).ok());
  std::filesystem::remove_all(dir);
}

TEST(CorrectionFileTest, HeadsNotFittedKeepIdentity) {
  eval::Trace t;
  t.name = "dir:x";
  t.layers = 2;
  t.q_heads = 2;
  t.kv_heads = 1;
  t.n = 10;
  t.d = 4;
  t.dv = 4;
  HeadCorrection h;
  h.layer = 1;
  h.q_head = 1;
  h.x = Matrix::Constant(4, 4, 0.5);
  h.y = Matrix::Constant(4, 4, 0.25);
  CorrectionOptions opt;
  opt.base_spec = "evict";
  opt.train_fraction = 0.5;
  opt.layer = 1;
  auto f = MakeStorageCorrectionFile(t, "/nonexistent/x", opt, {h});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->train_tokens, 5);
  EXPECT_EQ(f->base_spec, *CanonicalizeSpec("evict"));
  EXPECT_EQ(f->X(1, 1), h.x);
  EXPECT_EQ(f->Y(1, 1), h.y);
  for (auto [l, qh] : {std::pair{0, 0}, std::pair{0, 1}, std::pair{1, 0}}) {
    EXPECT_EQ(f->X(l, qh), Matrix::Identity(4, 4));
    EXPECT_EQ(f->Y(l, qh), Matrix::Identity(4, 4));
  }
  h.layer = 2;
  EXPECT_FALSE(MakeStorageCorrectionFile(t, "x", opt, {h}).ok());
  h.layer = 0;
  h.x = Matrix::Identity(3, 3);
  EXPECT_FALSE(MakeStorageCorrectionFile(t, "x", opt, {h}).ok());
  // Matching the trace.
  EXPECT_TRUE(CheckCorrectionMatchesTrace(*f, t).ok());
  t.dv = 5;
  absl::Status s = CheckCorrectionMatchesTrace(*f, t);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("dv = 4 but the trace dir:x has 5"));
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void Replace(const std::string& path, const std::string& from,
             const std::string& to) {
  std::string s = Slurp(path);
  const size_t at = s.find(from);
  ASSERT_NE(at, std::string::npos) << from;
  s.replace(at, from.size(), to);
  std::ofstream(path, std::ios::trunc) << s;
}

TEST(CorrectionFileTest, CorruptMissingAndNonFiniteFilesAreRejected) {
  std::mt19937_64 rng(9);
  const StorageCorrectionFile f = MakeFile(rng);
  const std::string dir = TempDir("corrupt");
  auto fresh = [&] {
    std::filesystem::remove_all(dir);
    EXPECT_TRUE(SaveStorageCorrection(f, dir).ok());
  };
  auto load_error = [&]() { return LoadStorageCorrection(dir).status(); };

  absl::Status s = LoadStorageCorrection(dir + "/none").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("correction.txt: missing"));

  fresh();
  std::filesystem::remove(dir + "/correction_y.npy");
  s = load_error();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("correction_y.npy"));

  fresh();
  std::vector<float> x(2 * 4 * 16, 0.f);
  x[(1 * 4 + 3) * 16 + 5] = std::nanf("");
  ASSERT_TRUE(WriteNpy(dir + "/correction_x.npy", {2, 4, 4, 4}, x).ok());
  s = load_error();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("non-finite entry at layer 1, query "
                                     "head 3 (1,1)"));

  fresh();
  ASSERT_TRUE(WriteNpy(dir + "/correction_y.npy", {2, 4, 3, 4},
                       std::vector<float>(96, 0.f))
                  .ok());
  s = load_error();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("shape [2,4,3,4], expected [2,4,3,3]"));

  fresh();
  std::ofstream(dir + "/correction_x.npy", std::ios::trunc) << "not npy";
  EXPECT_FALSE(LoadStorageCorrection(dir).ok());

  const std::pair<std::string, std::string> edits[] = {
      {"q_heads=4", "q_heads=3"},  // not a multiple of kv_heads
      {"d=4", "d=5"},              // npy shape disagrees
      {"base_spec=evict", "base_spec=nosuch"},
      {"train_tokens=37", "train_tokens=100"},
      {"format=kvsketch-storage-correction/1", "format=other/9"},
      {"lambda=", "lambda_typo="},  // a missing key
      {"layers=2\n", "layers two\n"},
  };
  const char* want[] = {"not a multiple",    "shape",  "base_spec",
                        "train_tokens",      "format", "missing key 'lambda'",
                        "expected key=value"};
  for (size_t i = 0; i < std::size(edits); ++i) {
    fresh();
    Replace(dir + "/correction.txt", edits[i].first, edits[i].second);
    s = load_error();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << edits[i].second;
    EXPECT_THAT(s.message(), HasSubstr(want[i])) << edits[i].second;
  }
  fresh();
  EXPECT_TRUE(LoadStorageCorrection(dir).ok());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvsketch::regression
