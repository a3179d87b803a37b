// File: core/session_state.h
//
// The attention state of one decoding session of one model: one Approximator
// per (layer, KV head), with grouped-query attention mapping query head h to
// KV head h / (num_query_heads / num_kv_heads) (DESIGN.md §2). Plain library
// code, no gRPC: the server wraps it with a lock, and in-process users (the
// accuracy harness, `kvsketch llama --local`) use it directly.
//
// Tensor layouts, row-major float:
//   keys    [num_kv_heads,    T, head_dim]
//   values  [num_kv_heads,    T, value_dim]
//   queries [num_query_heads, M, head_dim]
//   out     [num_query_heads, M, value_dim]
// With these layouts the g query heads of one KV head's group are one
// contiguous (g·M)×d block laid out [g][M], as Approximator::Prefill expects.
//
// Atomicity: every mutating method validates all of its arguments (shapes,
// layer range, token limit) before touching any head, so an error leaves the
// state exactly as it was.
//
// Thread safety: const methods may run concurrently; the rest need exclusive
// access (the caller locks).
#ifndef KVSKETCH_CORE_SESSION_STATE_H_
#define KVSKETCH_CORE_SESSION_STATE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/approximator.h"
#include "core/io/byte_io.h"

namespace kvsketch {

struct SessionConfig {
  int num_layers = 0;
  int num_kv_heads = 0;
  int num_query_heads = 0;  // 0 -> num_kv_heads
  int head_dim = 0;
  int value_dim = 0;                       // 0 -> head_dim
  float scale = 0;                         // 0 -> 1/sqrt(head_dim)
  std::string spec;                        // "" -> "exact"
  std::map<int, std::string> layer_specs;  // per-layer overrides
  int64_t max_tokens = 0;                  // per layer; 0 -> unlimited
};

// Fills defaults and canonicalises every spec in place. InvalidArgument naming
// the field when a value is out of range: layers in [1, 1024], heads in
// [1, 1024], num_query_heads a multiple of num_kv_heads, dims in [1, 65536],
// scale finite and >= 0, max_tokens >= 0, layer_specs keys in range, specs
// valid.
absl::Status NormalizeSessionConfig(SessionConfig* config);

class SessionState {
 public:
  // Normalises config and builds every head. InvalidArgument on bad config.
  // With max_state_bytes > 0, ResourceExhausted as soon as the heads built
  // so far hold more than that before any token (a server passes its free
  // memory budget: many heads, or summaries allocated up front, must not
  // exhaust memory before the budget is consulted).
  static absl::StatusOr<std::unique_ptr<SessionState>> Create(
      SessionConfig config, int64_t max_state_bytes = 0);

  const SessionConfig& config() const { return config_; }
  int group_size() const {
    return config_.num_query_heads / config_.num_kv_heads;
  }
  // Canonical spec of a layer. REQUIRES: 0 <= layer < num_layers.
  const std::string& layer_spec(int layer) const;
  // Tokens appended to a layer. REQUIRES: 0 <= layer < num_layers.
  int64_t num_tokens(int layer) const;
  std::vector<int64_t> tokens_per_layer() const;
  // Sum of MemoryBytes() over all heads.
  int64_t MemoryBytes() const;
  // Sum of MemoryBytes() over the heads of one layer (the server attributes
  // state bytes to each layer's approximator kind). REQUIRES: layer in range.
  // SelfMeasurements summed over the KV heads of one layer.
  // REQUIRES: 0 <= layer < num_layers.
  SelfMeasurements LayerMeasurements(int layer) const;
  int64_t LayerMemoryBytes(int layer) const;
  // InvalidArgument (naming `op`, the element and the limit) if a key or
  // value is beyond what the layer's storage can hold as a finite number
  // (Approximator::MaxStorableMagnitude: 65504 for exact:store=f16). Step
  // and Append check it before changing anything; a caller applying one
  // append to several layers checks every layer first.
  // REQUIRES: layer in range.
  absl::Status CheckStorable(absl::string_view op, int layer,
                             absl::Span<const float> keys,
                             absl::Span<const float> values) const;
  // Upper bound on the growth of LayerMemoryBytes(layer) when n tokens are
  // appended to it (Approximator::AppendGrowthBytes summed over the layer's
  // KV heads). REQUIRES: layer in range, n >= 0.
  int64_t LayerAppendGrowthBytes(int layer, int64_t n) const;

  // Appends T tokens to one layer. The spans hold exactly
  // num_kv_heads*T*head_dim and num_kv_heads*T*value_dim floats.
  // InvalidArgument (layer or sizes), ResourceExhausted (max_tokens).
  absl::Status Append(int layer, int64_t num_new_tokens,
                      absl::Span<const float> keys,
                      absl::Span<const float> values);

  // One decode step of one layer: appends T >= 0 tokens, then answers M >= 0
  // queries into out (num_query_heads*M*value_dim floats). When T > 0 and
  // M > 0, M must equal T and attention is causal (query row t sees the
  // earlier tokens plus new tokens 0..t, through Approximator::Prefill); when
  // T == 0 every query sees all tokens of the layer (FailedPrecondition if
  // there are none). Uses Approximator::Attend (may update query statistics).
  absl::Status Step(int layer, int64_t num_new_tokens,
                    absl::Span<const float> keys,
                    absl::Span<const float> values, int64_t num_queries,
                    absl::Span<const float> queries, absl::Span<float> out);

  // Diagnostics (Approximator::QueryDiagnostics) of M query rows against the
  // layer's current state, into out ordered [num_query_heads, M]. queries
  // as in Step. After a Step with T <= 1 these describe exactly the
  // selection that Step's queries used (for T > 1 the causal rows saw
  // fewer tokens). Unimplemented when the layer's approximator has none.
  absl::Status QueryDiagnostics(int layer, int64_t num_queries,
                                absl::Span<const float> queries,
                                std::vector<QueryDiagnostic>* out) const;
  // Whether the layer's approximator implements QueryDiagnostics (probed
  // with zero rows). REQUIRES: layer in range.
  bool SupportsDiagnostics(int layer) const;

  // Serialises config, per-head specs and states.
  absl::Status Save(ByteWriter& writer) const;
  // DataLoss on malformed input; ResourceExhausted as Create when the
  // restored heads need more than max_state_bytes (> 0).
  static absl::StatusOr<std::unique_ptr<SessionState>> Load(
      ByteReader& reader, int64_t max_state_bytes = 0);

  // Holds the session to at most `limit` (> 0) tokens per layer from now on
  // (a server importing a snapshot made elsewhere applies its own
  // --max_tokens_per_session): lowers config().max_tokens to `limit` when it
  // is 0 (unlimited) or larger. ResourceExhausted, changing nothing, when a
  // layer already holds more than `limit` tokens; InvalidArgument for
  // limit <= 0.
  absl::Status ApplyTokenLimit(int64_t limit);

 private:
  SessionState() = default;

  SessionConfig config_;
  std::vector<std::string> layer_specs_;  // canonical, one per layer
  // heads_[layer * num_kv_heads + head]
  std::vector<std::unique_ptr<Approximator>> heads_;
};

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_SESSION_STATE_H_
