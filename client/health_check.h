// File: client/health_check.h
//
// grpc.health.v1.Health/Check from the client side, without the generated
// health stub (Debian ships it in no library): a generic stub sends our
// wire-compatible messages (client/proto/health_probe.proto).
#ifndef KVSKETCH_CLIENT_HEALTH_CHECK_H_
#define KVSKETCH_CLIENT_HEALTH_CHECK_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace grpc {
class Channel;
}

namespace kvsketch::client {

enum class ServingStatus {
  kUnknown = 0,
  kServing = 1,
  kNotServing = 2,
  kServiceUnknown = 3
};

// "SERVING", "NOT_SERVING", ...
const char* ServingStatusName(ServingStatus status);

// Checks `service` ("" = the whole server). RPC failures (server down,
// deadline, NOT_FOUND for an unknown service) come back as the error status.
absl::StatusOr<ServingStatus> CheckHealth(
    const std::shared_ptr<grpc::Channel>& channel, absl::string_view service,
    absl::Duration timeout);

}  // namespace kvsketch::client

#endif  // KVSKETCH_CLIENT_HEALTH_CHECK_H_
