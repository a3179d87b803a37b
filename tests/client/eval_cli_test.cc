// End-to-end tests of `kvsketch eval` and `kvsketch calibrate`: the binary on
// a small synthetic configuration and on a trace directory the test writes,
// its output files, and its exit codes for bad input.
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

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

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int Count(const std::string& s, const std::string& what) {
  int c = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1))
    ++c;
  return c;
}

// Splits one CSV line, honouring double quotes.
std::vector<std::string> CsvFields(const std::string& line) {
  std::vector<std::string> out(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (c == '"') {
      if (quoted && i + 1 < line.size() && line[i + 1] == '"') {
        out.back() += '"';
        ++i;
      } else {
        quoted = !quoted;
      }
    } else if (c == ',' && !quoted) {
      out.emplace_back();
    } else {
      out.back() += c;
    }
  }
  return out;
}

std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string line; std::getline(ss, line);) out.push_back(line);
  return out;
}

TEST(EvalCliTest, SyntheticRunWritesEveryOutput) {
  const std::string dir = MakeTempDir();
  ProcessResult r =
      RunCli({"eval", "--synthetic", "planted", "--n", "512,1K", "--d", "16",
              "--queries", "4", "--specs", "exact; topk:k=32 ;evict:budget=96",
              "--out", dir, "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("| trace | path | spec | n |"));
  EXPECT_THAT(r.out, HasSubstr("| planted | stream | `exact` | 1024 | 4 |"));
  EXPECT_THAT(r.out, HasSubstr("| planted | stream | `topk:k=32` | 512 |"));
  EXPECT_EQ(r.err, "");  // --quiet
  const std::string md = Slurp(dir + "/eval.md");
  EXPECT_EQ(md.substr(0, r.out.size()), r.out);
  EXPECT_THAT(md, HasSubstr("- **needles**"));

  const std::vector<std::string> csv = Lines(Slurp(dir + "/eval.csv"));
  ASSERT_EQ(csv.size(), 7u);  // header + 3 specs × 2 lengths
  const std::vector<std::string> header = CsvFields(csv[0]);
  ASSERT_EQ(header.size(), 19u);
  EXPECT_EQ(header[1], "path");
  EXPECT_EQ(header[6], "rel_l2_mean");
  for (size_t i = 1; i < csv.size(); ++i) {
    const std::vector<std::string> f = CsvFields(csv[i]);
    ASSERT_EQ(f.size(), 19u) << csv[i];
    EXPECT_EQ(f[0], "planted");
    EXPECT_EQ(f[1], "stream");
    const double rel = std::stod(f[6]);
    const double needles = std::stod(f[10]);
    EXPECT_GE(needles, 0);
    EXPECT_LE(needles, 1);
    if (f[2] == "exact") {
      EXPECT_EQ(f[3], "exact:store=f32");
      EXPECT_LT(rel, 1e-5);
    }
    EXPECT_GT(std::stoll(f[11]), 0);  // state bytes
  }
  const std::string json = Slurp(dir + "/eval.json");
  EXPECT_EQ(Count(json, "\"spec\":"), 6);
  EXPECT_EQ(Count(json, "{"), Count(json, "}"));
  EXPECT_EQ(Count(json, "["), Count(json, "]"));
  for (const char* svg : {"/eval_error.svg", "/eval_memory.svg"}) {
    const std::string s = Slurp(dir + svg);
    EXPECT_EQ(s.rfind("<?xml", 0), 0u) << svg;
    EXPECT_EQ(Count(s, "<path "), 3) << svg;
    EXPECT_THAT(s, HasSubstr("</svg>"));
  }
}

TEST(EvalCliTest, TraceDirEvalAndCalibrate) {
  const std::string dir = MakeTempDir();
  const int L = 2, Hq = 4, Hkv = 2, T = 40, d = 8;
  std::mt19937 rng(3);
  std::normal_distribution<float> g;
  std::vector<float> q(L * Hq * T * d), k(L * Hkv * T * d), v(L * Hkv * T * d);
  for (auto* a : {&q, &k, &v}) {
    for (float& x : *a) x = g(rng);
  }
  ASSERT_TRUE(WriteNpy(dir + "/q.npy", {L, Hq, T, d}, q).ok());
  ASSERT_TRUE(WriteNpy(dir + "/k.npy", {L, Hkv, T, d}, k).ok());
  ASSERT_TRUE(WriteNpy(dir + "/v.npy", {L, Hkv, T, d}, v).ok());

  ProcessResult r = RunCli({"eval", "--trace", dir, "--specs", "exact",
                            "--queries", "5", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // A trace directory takes the prefill path by default. Rows scored:
  // layers × query heads × queries.
  EXPECT_THAT(r.out, HasSubstr("| prefill | `exact` | 40 | 40 |"));
  EXPECT_THAT(r.out, HasSubstr("dir:" + dir));
  r = RunCli({"eval", "--trace", dir, "--specs", "exact", "--queries", "5",
              "--path", "stream", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("| stream | `exact` | 40 | 40 |"));
  r = RunCli({"eval", "--trace", dir, "--specs", "exact", "--queries", "5",
              "--chunk", "7", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("| prefill | `exact` | 40 | 40 |"));

  r = RunCli({"calibrate", "--trace", dir, "--prefixes", "10,20,40", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Count(r.out, "\"topk_spec\": \"topk:alpha="), L * Hq);
  EXPECT_EQ(Count(r.out, "\"k_tau\""), L * Hq * 3);
  r = RunCli({"calibrate", "--trace", dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("suggested specs"));
  EXPECT_EQ(Count(r.out, "evict:alpha="), L * Hq);

  // A v.npy with another T: a data error naming the dimension.
  ASSERT_TRUE(WriteNpy(dir + "/v.npy", {L, Hkv, T - 1, d},
                       std::vector<float>(L * Hkv * (T - 1) * d, 0.f))
                  .ok());
  r = RunCli({"eval", "--trace", dir, "--specs", "exact"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("T (dim 2)"));
}

TEST(EvalCliTest, ErrorsAndHelp) {
  ProcessResult r = RunCli({"eval", "--specs", "exact;nosuch", "--n", "64"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("nosuch"));
  r = RunCli({"eval", "--specs", "evict:budget=8", "--n", "64"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("budget"));
  r = RunCli({"eval", "--synthetic", "zipf"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("valid: gaussian"));
  r = RunCli(
      {"eval", "--trace", "/nonexistent/dir", "--synthetic", "gaussian"});
  EXPECT_EQ(r.exit_code, 2);
  r = RunCli({"eval", "--trace", "/nonexistent/dir"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("/nonexistent/dir/q.npy"));
  r = RunCli({"eval", "--n", "1K,x"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--n"));
  r = RunCli({"eval", "--warm", "-1"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--warm"));
  r = RunCli({"eval", "--path", "sideways"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--path"));
  r = RunCli({"eval", "--path", "prefill", "--synthetic", "gaussian"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("planted"));
  r = RunCli(
      {"eval", "--path", "prefill", "--synthetic", "planted", "--warm", "4"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--warm"));
  r = RunCli(
      {"eval", "--chunk", "-2", "--path", "prefill", "--synthetic", "sinks"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--chunk"));
  // A planted synthetic trace through the prefill path, in chunks.
  r = RunCli({"eval", "--path", "prefill", "--synthetic", "planted", "--n",
              "600", "--d", "8", "--queries", "3", "--chunk", "128", "--specs",
              "exact", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("| planted | prefill | `exact` | 600 | 3 |"));
  r = RunCli({"calibrate", "--tau", "1.5"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--tau"));
  r = RunCli({"eval", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("--specs"));
  EXPECT_THAT(r.out, HasSubstr("--synthetic"));
  r = RunCli({"calibrate", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("--prefixes"));
}

}  // namespace
}  // namespace kvsketch
