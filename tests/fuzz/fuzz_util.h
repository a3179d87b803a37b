// File: tests/fuzz/fuzz_util.h
//
// Shared pieces of the libFuzzer harnesses (docs/fuzzing.md): a check macro
// that aborts (so libFuzzer records the input as a crash), the small session
// configurations the request and snapshot harnesses build on, and one
// in-process copy of the server's session plumbing (memory budget, metrics,
// session manager, service) without a gRPC listener, so an input costs
// microseconds, not a round trip.
#ifndef KVSKETCH_TESTS_FUZZ_FUZZ_UTIL_H_
#define KVSKETCH_TESTS_FUZZ_FUZZ_UTIL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "core/session_state.h"
#include "kvsketch/v1/attention.pb.h"
#include "server/attention_service.h"
#include "server/memory_budget.h"
#include "server/metrics.h"
#include "server/session_manager.h"
#include "server/worker_pool.h"

namespace kvsketch::fuzz {

// Aborts with the message when cond is false: a violated property is a
// finding exactly like a sanitizer report.
[[noreturn]] void Fail(const char* file, int line, const std::string& what);
#define KVSKETCH_FUZZ_CHECK(cond, what)                         \
  do {                                                          \
    if (!(cond))                                                \
      ::kvsketch::fuzz::Fail(__FILE__, __LINE__,                \
                             std::string(#cond ": ") + (what)); \
  } while (false)

// The specs the request harness serves (selected by an input byte) and the
// seed generator snapshots. Small parameters keep every input cheap while
// each kind's own paths (sinks, window, index, conv fit) are reached.
const std::vector<std::string>& HarnessSpecs();

// The request harness's session shape: 2 layers, 2 KV heads, 4 query heads
// (GQA group 2), head_dim 8, value_dim 4, max_tokens kHarnessMaxTokens.
inline constexpr int64_t kHarnessMaxTokens = 48;
SessionConfig HarnessConfig(const std::string& spec);

// Deterministic values in [-1, 1) (a fixed LCG): reproducible inputs
// without a random-number library in the harness.
std::vector<float> Ramp(size_t n, uint32_t seed);

// The server's own session objects, built once per process. Limits are
// small so a hostile input meets them quickly: 64 MiB memory budget,
// kHarnessMaxTokens tokens per layer, 8 sessions.
struct ServerPieces {
  ServerPieces();
  server::MemoryBudget budget;
  server::Metrics metrics;
  server::SessionManager sessions;
  server::WorkerPool pool;
  server::AttentionService service;
};
ServerPieces& Pieces();

// v1::SessionConfig -> SessionConfig, field by field as the CreateSession
// handler does (server/service_unary.cc).
SessionConfig ConfigFromProto(const v1::SessionConfig& c);

// Status codes a validated operation may still end with: the state's own
// refusals (no tokens yet, token or memory limit, diagnostics the kind
// lacks, diagnostics with more than one new token, a key or value beyond
// the layer's storage range). Anything else means
// validation let through something the state then rejected.
bool IsAllowedAfterValidation(const absl::Status& s, bool want_diagnostics,
                              int64_t num_new_tokens);

}  // namespace kvsketch::fuzz

#endif  // KVSKETCH_TESTS_FUZZ_FUZZ_UTIL_H_
