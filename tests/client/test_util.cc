#include "tests/client/test_util.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/status_macros.h"
#include "tests/core/testing/reference_attention.h"

extern char** environ;

namespace kvsketch::testing {

std::vector<double> MultiHeadReference(absl::Span<const float> q, int hq,
                                       int64_t m, absl::Span<const float> k,
                                       absl::Span<const float> v, int hkv,
                                       int64_t n, int d, int dv, double scale,
                                       int64_t causal_new) {
  KVSKETCH_CHECK(static_cast<int64_t>(q.size()) == hq * m * d);
  KVSKETCH_CHECK(static_cast<int64_t>(k.size()) == hkv * n * d);
  KVSKETCH_CHECK(static_cast<int64_t>(v.size()) == hkv * n * dv);
  const int group = hq / hkv;
  std::vector<double> out;
  out.reserve(hq * m * dv);
  for (int h = 0; h < hq; ++h) {
    const int kv = h / group;
    auto qh = q.subspan(h * m * d, m * d);
    auto kh = k.subspan(kv * n * d, n * d);
    auto vh = v.subspan(kv * n * dv, n * dv);
    std::vector<double> r =
        causal_new > 0
            ? ReferenceCausalAttention(qh, m, kh, vh, n, d, dv, scale)
            : ReferenceAttention(qh, m, kh, vh, n, d, dv, scale);
    out.insert(out.end(), r.begin(), r.end());
  }
  return out;
}

std::vector<float> ConcatTokens(absl::Span<const float> a, int64_t na,
                                absl::Span<const float> b, int64_t nb, int h,
                                int dim) {
  std::vector<float> out;
  out.reserve(h * (na + nb) * dim);
  for (int i = 0; i < h; ++i) {
    out.insert(out.end(), a.begin() + i * na * dim,
               a.begin() + (i + 1) * na * dim);
    out.insert(out.end(), b.begin() + i * nb * dim,
               b.begin() + (i + 1) * nb * dim);
  }
  return out;
}

namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::string MakeTempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string tmpl = std::string(base != nullptr && *base ? base : "/tmp") +
                     "/kvsketch_client_test_XXXXXX";
  KVSKETCH_CHECK(::mkdtemp(tmpl.data()) != nullptr);
  return tmpl;
}

ProcessResult RunProcess(const std::vector<std::string>& argv,
                         const std::vector<std::string>& extra_env) {
  const std::string dir = MakeTempDir();
  const std::string out_path = dir + "/stdout";
  const std::string err_path = dir + "/stderr";
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<char*> args;
  for (const std::string& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) env_storage.emplace_back(*e);
  for (const std::string& e : extra_env) env_storage.push_back(e);
  std::vector<char*> env;
  for (std::string& e : env_storage) env.push_back(e.data());
  env.push_back(nullptr);
  pid_t pid = 0;
  ProcessResult result;
  const int rc =
      posix_spawn(&pid, args[0], &actions, nullptr, args.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    result.err = "posix_spawn failed";
    return result;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
  }
  result.exit_code =
      WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.out = Slurp(out_path);
  result.err = Slurp(err_path);
  ::unlink(out_path.c_str());
  ::unlink(err_path.c_str());
  ::rmdir(dir.c_str());
  return result;
}

}  // namespace kvsketch::testing
