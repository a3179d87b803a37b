// End-to-end tests of `kvsketch fit`: a planted regression written as .npy
// files (recovered X, held-out loss, progress lines, outputs), the storage
// correction mode on a trace directory, and exit codes for bad input.
#include <cmath>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/io/npy.h"
#include "core/regression/regression.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/test_util.h"

namespace kvsketch {
namespace {

using regression::Matrix;
using ::testing::HasSubstr;
using testing::MakeTempDir;
using testing::ProcessResult;
using testing::RunCli;

// Rounds through float32 so the double-precision planted targets are made
// from exactly the matrices the CLI will read.
Matrix RandomF32(int64_t r, int64_t c, std::mt19937_64& rng, double sd) {
  std::normal_distribution<double> nd(0, sd);
  Matrix a(r, c);
  for (int64_t i = 0; i < a.size(); ++i) {
    a.data()[i] = static_cast<float>(nd(rng));
  }
  return a;
}

void Save(const std::string& path, const Matrix& m) {
  std::vector<float> data;
  for (int64_t i = 0; i < m.rows(); ++i) {
    for (int64_t j = 0; j < m.cols(); ++j) data.push_back(float(m(i, j)));
  }
  ASSERT_TRUE(WriteNpy(path, {m.rows(), m.cols()}, data).ok());
}

struct PlantedFiles {
  std::string dir;
  Matrix x_star;
};

// n = 40 rows, d = 4, causal; X* near the CLI's default start I/√d.
PlantedFiles WritePlanted() {
  PlantedFiles p;
  p.dir = MakeTempDir();
  std::mt19937_64 rng(17);
  const int64_t n = 40, d = 4;
  regression::RegressionData data;
  data.a1 = RandomF32(n, d, rng, 1);
  data.a2 = RandomF32(n, d, rng, 1);
  data.a3 = RandomF32(n, d, rng, 1);
  data.b = Matrix::Zero(n, d);
  data.causal = true;
  p.x_star = Matrix::Identity(d, d) / 2 + RandomF32(d, d, rng, 0.1);
  const Matrix y_star = RandomF32(d, d, rng, 0.5);
  auto prob = regression::AttentionRegression::Create(data, {});
  EXPECT_TRUE(prob.ok()) << prob.status();
  const Matrix b = prob->Attention(p.x_star) * data.a3 * y_star;
  Save(p.dir + "/a1.npy", data.a1);
  Save(p.dir + "/a2.npy", data.a2);
  Save(p.dir + "/a3.npy", data.a3);
  Save(p.dir + "/b.npy", b);
  return p;
}

std::vector<std::string> Flags(const std::string& dir) {
  return {"fit",           "--a1",  dir + "/a1.npy", "--a2",
          dir + "/a2.npy", "--a3",  dir + "/a3.npy", "--b",
          dir + "/b.npy",  "--out", dir + "/out"};
}

TEST(FitCliTest, PlantedRegressionRecoversXAndReportsHeldOutLoss) {
  const PlantedFiles p = WritePlanted();
  std::vector<std::string> args = Flags(p.dir);
  for (const char* a : {"--causal", "--holdout", "0.25"}) args.push_back(a);
  ProcessResult r = RunCli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_THAT(r.out, HasSubstr("fit: n 40 (train 30), m 40, X 4x4"));
  EXPECT_THAT(r.out, HasSubstr("iter   0  loss"));
  EXPECT_THAT(r.out, HasSubstr("iter   1  loss"));
  EXPECT_THAT(r.out, HasSubstr("held-out loss"));
  // Targets are exact up to float32 rounding: both losses far below 1e-8.
  auto rel = [&](const std::string& key) {
    const size_t at = r.out.find(key);
    EXPECT_NE(at, std::string::npos) << key;
    return std::stod(r.out.substr(at + key.size()));
  };
  EXPECT_LT(rel("relative "), 1e-8);
  EXPECT_LT(rel("rows (relative "), 1e-8);

  auto x = ReadNpy(p.dir + "/out/X.npy");
  ASSERT_TRUE(x.ok()) << x.status();
  ASSERT_EQ(x->shape, (std::vector<int64_t>{4, 4}));
  for (int i = 0; i < 16; ++i) {
    EXPECT_NEAR(x->data[i], p.x_star(i / 4, i % 4), 1e-3) << i;
  }
  auto y = ReadNpy(p.dir + "/out/Y.npy");
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->shape, (std::vector<int64_t>{4, 4}));
  std::ifstream hist(p.dir + "/out/history.csv");
  std::string header;
  std::getline(hist, header);
  EXPECT_EQ(header, "iteration,loss,rel_change,grad_norm,step,damping");
}

TEST(FitCliTest, BadInputsGiveClearErrors) {
  const PlantedFiles p = WritePlanted();
  std::mt19937_64 rng(3);
  // A3 with a different number of rows than A2.
  Save(p.dir + "/a3_short.npy", RandomF32(39, 4, rng, 1));
  std::vector<std::string> args = Flags(p.dir);
  args[6] = p.dir + "/a3_short.npy";
  ProcessResult r = RunCli(args);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("A3 has 39 rows but A2 has 40"));

  Matrix nan_a1 = RandomF32(40, 4, rng, 1);
  nan_a1(7, 2) = std::nan("");
  Save(p.dir + "/a1_nan.npy", nan_a1);
  args = Flags(p.dir);
  args[2] = p.dir + "/a1_nan.npy";
  r = RunCli(args);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("A1 has a non-finite entry"));

  // Singular without regularisation: a repeated column of A1.
  Matrix dup = RandomF32(40, 4, rng, 1);
  dup.col(3) = dup.col(1);
  Save(p.dir + "/a1_dup.npy", dup);
  args = Flags(p.dir);
  args[2] = p.dir + "/a1_dup.npy";
  r = RunCli(args);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("FAILED_PRECONDITION: singular problem: A1"));
  args.push_back("--lambda");
  args.push_back("1e-3");
  EXPECT_EQ(RunCli(args).exit_code, 0);

  args = Flags(p.dir);
  args[8] = p.dir + "/missing.npy";
  r = RunCli(args);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("--b"));

  args = Flags(p.dir);
  args.resize(args.size() - 2);  // no --out
  r = RunCli(args);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--out is required"));

  args = Flags(p.dir);
  for (const char* a : {"--holdout", "0.2", "--split", "10"}) args.push_back(a);
  EXPECT_EQ(RunCli(args).exit_code, 2);

  args = Flags(p.dir);
  for (const char* a : {"--split", "40"}) args.push_back(a);
  r = RunCli(args);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("both must be >= 1"));

  r = RunCli({"fit", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("--a1"));
  EXPECT_THAT(r.out, HasSubstr("--correct"));
}

TEST(FitCliTest, StorageCorrectionModeOnATraceDirectory) {
  const std::string dir = MakeTempDir();
  std::mt19937_64 rng(5);
  std::normal_distribution<float> nd(0, 1);
  const int64_t L = 1, Hq = 2, Hkv = 1, T = 96, d = 8;
  std::vector<float> q(L * Hq * T * d), k(L * Hkv * T * d), v(L * Hkv * T * d);
  for (float& x : q) x = 1.5f * nd(rng);
  for (float& x : k) x = nd(rng);
  for (float& x : v) x = nd(rng);
  ASSERT_TRUE(WriteNpy(dir + "/q.npy", {L, Hq, T, d}, q).ok());
  ASSERT_TRUE(WriteNpy(dir + "/k.npy", {L, Hkv, T, d}, k).ok());
  ASSERT_TRUE(WriteNpy(dir + "/v.npy", {L, Hkv, T, d}, v).ok());
  ProcessResult r =
      RunCli({"fit", "--trace", dir, "--correct", "evict:budget=24,window=8",
              "--train", "0.5", "--out", dir + "/out"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_THAT(r.out, HasSubstr("storage correction of 'evict:budget=24"));
  EXPECT_THAT(r.out, HasSubstr("held-out relative error, mean over 2 heads"));
  std::ifstream csv(dir + "/out/correction.csv");
  std::string line;
  int lines = 0;
  while (std::getline(csv, line)) ++lines;
  EXPECT_EQ(lines, 3);  // header + 2 query heads

  r = RunCli({"fit", "--trace", dir, "--correct", "topk"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNIMPLEMENTED"));
  r = RunCli({"fit", "--trace", dir, "--a1", dir + "/q.npy"});
  EXPECT_EQ(r.exit_code, 2);
}

}  // namespace
}  // namespace kvsketch
