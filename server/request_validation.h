// File: server/request_validation.h
//
// Turns request fields into validated, decoded operands, with errors that
// name the field the client got wrong ("entries[2].queries: shape [8,1,64]
// but session has head_dim 128"). Pure functions of the request and the
// session's (immutable) config: no locks, no state, so a rejected request
// cannot have touched anything.
#ifndef KVSKETCH_SERVER_REQUEST_VALIDATION_H_
#define KVSKETCH_SERVER_REQUEST_VALIDATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/session_state.h"
#include "grpcpp/server_context.h"
#include "kvsketch/v1/attention.pb.h"

namespace kvsketch::server {

inline constexpr char kSessionIdMetadataKey[] = "x-session-id";

// The x-session-id metadata value, or "" when absent.
std::string MetadataSessionId(const grpc::CallbackServerContext& ctx);

// The session id a request addresses: the request's field, else the
// metadata. InvalidArgument when both are set and differ, and (if
// required) when neither is set. `field` names the request field.
absl::StatusOr<std::string> ResolveSessionId(absl::string_view request_id,
                                             absl::string_view metadata_id,
                                             absl::string_view field,
                                             bool required);

// One layer's operands, decoded to float and checked against a session.
struct LayerOp {
  int layer = 0;
  int64_t num_new_tokens = 0;     // T
  int64_t num_queries = 0;        // M
  std::vector<float> keys;        // [num_kv_heads, T, head_dim]
  std::vector<float> values;      // [num_kv_heads, T, value_dim]
  std::vector<float> queries;     // [num_query_heads, M, head_dim]
  bool want_diagnostics = false;  // per-query QueryDiagnostic wanted
};

enum class QueryRule {
  kOptional,  // Decode entries: queries may be omitted to append only
  kRequired,  // Attend
  kPrefill,   // Prefill: queries, keys and values all required, M == T > 0
};

// Validates and decodes one layer operation. `prefix` is prepended to field
// names ("" for a top-level request, "entries[3]." for a Decode entry).
// has_* say whether the optional tensor fields are present.
absl::StatusOr<LayerOp> DecodeLayerOp(const SessionConfig& config,
                                      absl::string_view prefix, int layer,
                                      const v1::Tensor* keys,
                                      const v1::Tensor* values,
                                      const v1::Tensor* queries,
                                      QueryRule rule);

// Decodes an AppendRequest's tensors. With all_layers the tensors are
// [num_layers, num_kv_heads, T, dim] (or rank 3 without T: T = 1), and
// op.layer is -1.
absl::StatusOr<LayerOp> DecodeAppend(const SessionConfig& config,
                                     absl::string_view prefix,
                                     const v1::AppendRequest& request);

// "[8,1,64]".
std::string ShapeToString(const std::vector<int64_t>& shape);

}  // namespace kvsketch::server

#endif  // KVSKETCH_SERVER_REQUEST_VALIDATION_H_
