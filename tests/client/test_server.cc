#include "tests/client/test_server.h"

#include "absl/strings/str_cat.h"

namespace kvsketch::testing {

server::ServerOptions TestServerOptions(int worker_threads) {
  server::ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.metrics_address = "";
  options.worker_threads = worker_threads;
  return options;
}

absl::StatusOr<std::unique_ptr<server::Server>> StartTestServer(
    int worker_threads) {
  return server::Server::Start(TestServerOptions(worker_threads));
}

std::string LoopbackAddress(const server::Server& server) {
  return absl::StrCat("127.0.0.1:", server.grpc_port());
}

}  // namespace kvsketch::testing
