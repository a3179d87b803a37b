// File: server/grpc_status.h
//
// The one place an absl::Status becomes a grpc::Status. absl status codes
// mirror google.rpc.Code numerically, so the conversion is a cast; messages
// are cut to kMaxStatusMessageBytes so a pathological error (e.g. one naming
// a huge shape list) cannot bloat trailers.
#ifndef KVSKETCH_SERVER_GRPC_STATUS_H_
#define KVSKETCH_SERVER_GRPC_STATUS_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/status.h"

namespace kvsketch::server {

inline constexpr size_t kMaxStatusMessageBytes = 1024;

grpc::Status ToGrpcStatus(const absl::Status& status);

// The message truncated as ToGrpcStatus does (used for per-entry Decode
// results, which travel in the response body, not in trailers).
std::string TruncateStatusMessage(absl::string_view message);

// "INVALID_ARGUMENT", "OK", ...: the gRPC code name, for metric labels.
absl::string_view GrpcCodeName(int code);

}  // namespace kvsketch::server

#endif  // KVSKETCH_SERVER_GRPC_STATUS_H_
