// File: tests/client/test_util.h
//
// Shared helpers of the client tests: a multi-head (GQA) double-precision
// reference built on tests/core/testing/reference_attention.h, and a
// subprocess runner for the CLI and loadgen binaries.
#ifndef KVSKETCH_TESTS_CLIENT_TEST_UTIL_H_
#define KVSKETCH_TESTS_CLIENT_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/types/span.h"

namespace kvsketch::testing {

// Attention of every query head over a layer laid out as the API does:
// q [hq, m, d], k [hkv, n, d], v [hkv, n, dv] -> out [hq, m, dv], query head
// h reading kv head h / (hq / hkv). With causal_new > 0 the last
// `causal_new` keys are this call's tokens and m == causal_new: query row t
// sees keys 0 .. n - causal_new + t. Otherwise every row sees all n keys.
std::vector<double> MultiHeadReference(absl::Span<const float> q, int hq,
                                       int64_t m, absl::Span<const float> k,
                                       absl::Span<const float> v, int hkv,
                                       int64_t n, int d, int dv, double scale,
                                       int64_t causal_new = 0);

// Concatenates two [h, n_i, dim] tensors along the token axis.
std::vector<float> ConcatTokens(absl::Span<const float> a, int64_t na,
                                absl::Span<const float> b, int64_t nb, int h,
                                int dim);

struct ProcessResult {
  int exit_code = -1;  // 128 + signal if killed
  std::string out;
  std::string err;
};

// Runs `argv` (argv[0] a path) with stdout/stderr captured, and with
// `extra_env` ("NAME=value") added to the environment.
ProcessResult RunProcess(const std::vector<std::string>& argv,
                         const std::vector<std::string>& extra_env = {});

// A fresh directory under $TEST_TMPDIR or /tmp.
std::string MakeTempDir();

#ifdef KVSKETCH_CLI_PATH
// Runs the `kvsketch` CLI (its path is a compile definition of the test
// targets that use it) with `args`.
inline ProcessResult RunCli(std::vector<std::string> args) {
  args.insert(args.begin(), KVSKETCH_CLI_PATH);
  return RunProcess(args);
}
#endif

}  // namespace kvsketch::testing

#endif  // KVSKETCH_TESTS_CLIENT_TEST_UTIL_H_
