// End-to-end test of issue #5 item 3: `kvsketch fit --trace --correct SPEC
// --out DIR` saves the fitted storage correction and `kvsketch eval --trace
// --correction DIR` shows it as a '+fit' row next to the untrained spec,
// scored on held-out positions only; plus the errors of --correction.
#include <algorithm>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/io/npy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/test_util.h"

namespace kvsketch {
namespace {

using ::testing::HasSubstr;
using testing::MakeTempDir;
using testing::ProcessResult;
using testing::RunCli;

constexpr int kLayers = 1, kQHeads = 4, kKvHeads = 2, kT = 192;
constexpr char kSpec[] = "evict:budget=24,sinks=2,window=4";

// GQA 2:1 with keys and values sharing a slow direction, so that early and
// late tokens have structure in common (as in regression_correction_test).
void WriteTrace(const std::string& dir, uint64_t seed, int d = 8) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> dirv(d);
  for (float& x : dirv) x = nd(rng);
  std::vector<float> q(kLayers * kQHeads * kT * d);
  std::vector<float> k(kLayers * kKvHeads * kT * d), v(k.size());
  for (float& x : q) x = 1.5f * nd(rng);
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] = nd(rng) + 0.5f * dirv[i % d];
    v[i] = nd(rng) + 0.3f * dirv[i % d];
  }
  ASSERT_TRUE(WriteNpy(dir + "/q.npy", {kLayers, kQHeads, kT, d}, q).ok());
  ASSERT_TRUE(WriteNpy(dir + "/k.npy", {kLayers, kKvHeads, kT, d}, k).ok());
  ASSERT_TRUE(WriteNpy(dir + "/v.npy", {kLayers, kKvHeads, kT, d}, v).ok());
}

struct TableRow {
  int64_t rows = 0;
  double rel_mean = 0;
};

// Markdown rows of `kvsketch eval`, keyed by the spec column (backticks
// stripped): | trace | path | spec | n | rows | rel L2 mean | ...
std::map<std::string, TableRow> ParseTable(const std::string& out) {
  std::map<std::string, TableRow> rows;
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    if (!absl::StartsWith(line, "| dir:")) continue;
    std::vector<std::string> f = absl::StrSplit(line, '|');
    if (f.size() < 8) continue;
    std::string spec(absl::StripAsciiWhitespace(f[3]));
    spec.erase(std::remove(spec.begin(), spec.end(), '`'), spec.end());
    TableRow r;
    r.rows = std::stoll(std::string(absl::StripAsciiWhitespace(f[5])));
    r.rel_mean = std::stod(std::string(absl::StripAsciiWhitespace(f[6])));
    rows[spec] = r;
  }
  return rows;
}

// "held-out relative error, mean over N heads: untrained A, fitted B".
std::pair<double, double> FitHeldOut(const std::string& out) {
  const std::string key = "heads: untrained ";
  const size_t at = out.find(key);
  EXPECT_NE(at, std::string::npos) << out;
  if (at == std::string::npos) return {0, 0};
  const double raw = std::stod(out.substr(at + key.size()));
  const size_t f = out.find("fitted ", at);
  return {raw, std::stod(out.substr(f + 7))};
}

TEST(FitEvalCliTest, FittedCorrectionBeatsUntrainedOnHeldOutTokens) {
  const std::string dir = MakeTempDir();
  const std::string trace = dir + "/trace";
  std::filesystem::create_directories(trace);
  WriteTrace(trace, 5);
  const std::string fit_dir = dir + "/fit";
  ProcessResult r = RunCli({"fit", "--trace", trace, "--correct", kSpec,
                            "--train", "0.5", "--out", fit_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_THAT(r.out, HasSubstr("trained on positions 0..95"));
  const auto [fit_raw, fit_fitted] = FitHeldOut(r.out);
  EXPECT_LT(fit_fitted, fit_raw) << r.out;
  for (const char* f :
       {"correction_x.npy", "correction_y.npy", "correction.txt"}) {
    EXPECT_TRUE(std::filesystem::exists(fit_dir + "/" + f)) << f;
  }
  auto x = ReadNpy(fit_dir + "/correction_x.npy");
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_EQ(x->shape, (std::vector<int64_t>{kLayers, kQHeads, 8, 8}));

  // Same trace, both paths: every query row from position 96 on is scored
  // (--queries above T keeps them all), for both rows.
  std::map<std::string, std::map<std::string, TableRow>> by_path;
  for (const char* path : {"prefill", "stream"}) {
    r = RunCli({"eval", "--trace", trace, "--specs",
                std::string("exact;") + kSpec, "--correction", fit_dir,
                "--queries", "1000", "--path", path, "--quiet"});
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
    EXPECT_THAT(r.out, HasSubstr("scored only at positions >= 96 (96 "
                                 "positions per head, first 96)"));
    std::map<std::string, TableRow> t = ParseTable(r.out);
    ASSERT_EQ(t.size(), 3u) << r.out;  // exact, evict, evict +fit
    const std::string fit_label = std::string(kSpec) + " +fit";
    ASSERT_TRUE(t.count(kSpec) && t.count(fit_label)) << r.out;
    for (const auto& [spec, row] : t) {
      EXPECT_EQ(row.rows, kLayers * kQHeads * (kT - kT / 2)) << spec;
    }
    EXPECT_LT(t["exact"].rel_mean, 1e-5);
    EXPECT_GT(t[kSpec].rel_mean, 0.1) << "evict must be lossy here";
    EXPECT_LT(t[fit_label].rel_mean, t[kSpec].rel_mean) << path << r.out;
    by_path[path] = t;
  }
  // evict has no bulk Prefill: both paths append and attend row by row, so
  // the wrapper must give the same figures on both (exact's bulk Prefill
  // rounds differently, so it is left out).
  for (const std::string& spec :
       {std::string(kSpec), kSpec + std::string(" +fit")}) {
    EXPECT_EQ(by_path["prefill"][spec].rel_mean,
              by_path["stream"][spec].rel_mean)
        << spec;
  }

  // Another trace of the same shape: every position is held out.
  const std::string other = dir + "/other";
  std::filesystem::create_directories(other);
  WriteTrace(other, 6);
  r = RunCli({"eval", "--trace", other, "--specs", kSpec, "--correction",
              fit_dir, "--queries", "1000", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_THAT(r.out, HasSubstr("fitted on another trace (dir:" + trace +
                               "); every position of this one is held out "
                               "(192 positions per head scored)"));
  std::map<std::string, TableRow> t = ParseTable(r.out);
  ASSERT_EQ(t.size(), 2u) << r.out;
  for (const auto& [spec, row] : t) {
    EXPECT_EQ(row.rows, kLayers * kQHeads * kT) << spec;
  }
}

TEST(FitEvalCliTest, CorrectionErrors) {
  const std::string dir = MakeTempDir();
  const std::string trace = dir + "/trace";
  std::filesystem::create_directories(trace);
  WriteTrace(trace, 5);
  const std::string fit_dir = dir + "/fit";
  ProcessResult r = RunCli({"fit", "--trace", trace, "--correct", kSpec,
                            "--layer", "0", "--out", fit_dir});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;

  // No spec is the correction's base: a usage error naming it.
  r = RunCli({"eval", "--trace", trace, "--specs", "exact;evict",
              "--correction", fit_dir, "--quiet"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("is for 'evict:alpha=1,c=0.5,budget=24,"
                               "sinks=2,window=4,decay=1'"));
  // A spelling with the same canonical form matches.
  r = RunCli({"eval", "--trace", trace, "--specs",
              "evict:window=4,sinks=2,budget=24", "--correction", fit_dir,
              "--quiet"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("`evict:window=4,sinks=2,budget=24 +fit`"));

  // A trace with another head dim: a data error naming it.
  const std::string wide = dir + "/wide";
  std::filesystem::create_directories(wide);
  WriteTrace(wide, 5, 16);
  r = RunCli({"eval", "--trace", wide, "--specs", kSpec, "--correction",
              fit_dir, "--quiet"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err,
              HasSubstr("has d = 8 but the trace dir:" + wide + " has 16"));

  r = RunCli({"eval", "--trace", trace, "--specs", kSpec, "--correction",
              dir + "/nothing", "--quiet"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("correction.txt: missing"));
  r = RunCli({"eval", "--synthetic", "planted", "--specs", kSpec,
              "--correction", fit_dir, "--quiet"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--correction needs --trace"));
  r = RunCli({"eval", "--help"});
  EXPECT_THAT(r.out, HasSubstr("--correction"));
}

}  // namespace
}  // namespace kvsketch
