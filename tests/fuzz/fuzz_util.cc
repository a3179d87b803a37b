// File: tests/fuzz/fuzz_util.cc
#include "tests/fuzz/fuzz_util.h"

#include <cstdio>
#include <cstdlib>

#include "absl/strings/match.h"

namespace kvsketch::fuzz {

void Fail(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "%s:%d: fuzz property violated: %s\n", file, line,
               what.c_str());
  std::abort();
}

const std::vector<std::string>& HarnessSpecs() {
  static const auto* specs = new std::vector<std::string>{
      "exact",
      "exact:store=f16",
      "exact:store=bf16",
      "sketch:features=16,sinks=2,window=4",
      "sketch:map=taylor,degree=2,sinks=1,window=2",
      "topk:c=0.5,sinks=1,window=2",
      "topk:select=blocks",
      "evict:alpha=1,c=0.5,sinks=1,window=2",
      "zeta:chunk=4,pca_tokens=8,k=4",
      "conv:min_tokens=1",
  };
  return *specs;
}

SessionConfig HarnessConfig(const std::string& spec) {
  SessionConfig c;
  c.num_layers = 2;
  c.num_kv_heads = 2;
  c.num_query_heads = 4;
  c.head_dim = 8;
  c.value_dim = 4;
  c.spec = spec;
  c.max_tokens = kHarnessMaxTokens;
  return c;
}

std::vector<float> Ramp(size_t n, uint32_t seed) {
  std::vector<float> v(n);
  uint32_t x = seed * 2654435761u + 12345u;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    v[i] = static_cast<float>(x >> 8) / static_cast<float>(1u << 23) - 1.0f;
  }
  return v;
}

namespace {

constexpr int64_t kBudgetBytes = int64_t{64} << 20;

server::SessionManagerOptions ManagerOptions() {
  server::SessionManagerOptions o;
  o.num_shards = 2;
  o.max_sessions = 8;
  o.max_tokens_per_session = kHarnessMaxTokens;
  return o;
}

}  // namespace

ServerPieces::ServerPieces()
    : budget(kBudgetBytes),
      metrics(kBudgetBytes),
      sessions(ManagerOptions(), &budget, &metrics),
      pool(/*num_threads=*/1, /*max_queued=*/1),
      service(server::ServiceOptions{}, &sessions, &pool, &metrics) {}

ServerPieces& Pieces() {
  static auto* pieces = new ServerPieces();
  return *pieces;
}

SessionConfig ConfigFromProto(const v1::SessionConfig& c) {
  SessionConfig config;
  config.num_layers = c.num_layers();
  config.num_kv_heads = c.num_kv_heads();
  config.num_query_heads = c.num_query_heads();
  config.head_dim = c.head_dim();
  config.value_dim = c.value_dim();
  config.scale = c.scale();
  config.spec = c.spec();
  for (const auto& [layer, spec] : c.layer_specs()) {
    config.layer_specs[layer] = spec;
  }
  config.max_tokens = c.max_tokens();
  return config;
}

bool IsAllowedAfterValidation(const absl::Status& s, bool want_diagnostics,
                              int64_t num_new_tokens) {
  switch (s.code()) {
    case absl::StatusCode::kOk:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kResourceExhausted:
      return true;
    case absl::StatusCode::kInvalidArgument:
      // A finite value beyond a half-precision store's range is the state's
      // to refuse (the request layer does not know the storage).
      if (absl::StrContains(s.message(), "the largest magnitude layer")) {
        return true;
      }
      return want_diagnostics && num_new_tokens > 1;
    default:
      return false;
  }
}

}  // namespace kvsketch::fuzz
