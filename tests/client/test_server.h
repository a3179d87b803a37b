// File: tests/client/test_server.h
//
// The in-process kvsketch server the client tests talk to: loopback on an
// ephemeral port, no metrics endpoint, a small worker pool.
#ifndef KVSKETCH_TESTS_CLIENT_TEST_SERVER_H_
#define KVSKETCH_TESTS_CLIENT_TEST_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/server.h"

namespace kvsketch::testing {

// Options of such a server; callers may change more before starting it.
server::ServerOptions TestServerOptions(int worker_threads = 2);

// Starts a server with TestServerOptions(worker_threads).
absl::StatusOr<std::unique_ptr<server::Server>> StartTestServer(
    int worker_threads = 2);

// "127.0.0.1:<port>" of a started server.
std::string LoopbackAddress(const server::Server& server);

}  // namespace kvsketch::testing

#endif  // KVSKETCH_TESTS_CLIENT_TEST_SERVER_H_
