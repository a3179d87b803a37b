#include "client/cli/command.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"

namespace kvsketch::client::cli {

std::vector<OptionSpec> SecurityOptions() {
  const char* env_token = std::getenv("KVSKETCH_TOKEN_FILE");
  return {
      {.name = "tls", .help = "connect over TLS (implied by --tls-*)"},
      {.name = "tls-ca",
       .value_name = "FILE",
       .help = "PEM CA bundle that signed the server certificate (default: "
               "system roots)"},
      {.name = "tls-cert",
       .value_name = "FILE",
       .help = "PEM client certificate, for a server with mutual TLS"},
      {.name = "tls-key",
       .value_name = "FILE",
       .help = "PEM private key of --tls-cert"},
      {.name = "tls-server-name",
       .value_name = "NAME",
       .help = "name to check the server certificate against"},
      {.name = "token-file",
       .value_name = "FILE",
       .default_value = env_token != nullptr ? env_token : "",
       .help = "file holding the bearer token (env KVSKETCH_TOKEN_FILE)"},
  };
}

absl::Status ApplySecurityOptions(const ParsedArgs& args,
                                  ClientOptions* options) {
  options->tls = args.Flag("tls");
  options->tls_ca_file = args.Get("tls-ca");
  options->tls_cert_file = args.Get("tls-cert");
  options->tls_key_file = args.Get("tls-key");
  options->tls_server_name = args.Get("tls-server-name");
  const std::string& path = args.Get("token-file");
  if (path.empty()) return absl::OkStatus();
  // The token is a secret: messages name the file, never its contents.
  absl::StatusOr<std::string> token = ReadFile(path);
  if (!token.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--token-file: ", token.status().message()));
  }
  options->bearer_token = std::string(absl::StripAsciiWhitespace(*token));
  if (options->bearer_token.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--token-file: ", path, " is empty"));
  }
  return absl::OkStatus();
}

std::vector<OptionSpec> CommonOptions() {
  const char* env = std::getenv("KVSKETCH_SERVER");
  std::vector<OptionSpec> options = {
      {.name = "server",
       .value_name = "HOST:PORT",
       .default_value = env != nullptr && *env ? env : "127.0.0.1:50051",
       .help = "server address (env KVSKETCH_SERVER)"},
      {.name = "timeout",
       .value_name = "DURATION",
       .default_value = "30s",
       .help = "deadline of each call"},
      {.name = "retries",
       .value_name = "N",
       .default_value = "2",
       .help = "retries of a call refused as busy or (reads only) "
               "unavailable, with exponential backoff within --timeout"},
  };
  for (OptionSpec& s : SecurityOptions()) options.push_back(std::move(s));
  return options;
}

std::vector<OptionSpec> WithCommon(std::vector<OptionSpec> extra) {
  std::vector<OptionSpec> all = std::move(extra);
  for (OptionSpec& s : CommonOptions()) all.push_back(std::move(s));
  return all;
}

std::unique_ptr<AttentionClient> MakeClient(const ParsedArgs& args) {
  absl::StatusOr<absl::Duration> timeout = args.GetDuration("timeout");
  if (!timeout.ok()) {
    UsageError(timeout.status().message());
    return nullptr;
  }
  ClientOptions options;
  options.timeout =
      *timeout == absl::ZeroDuration() ? absl::InfiniteDuration() : *timeout;
  absl::StatusOr<int64_t> retries = args.GetInt("retries");
  if (!retries.ok() || *retries < 0 || *retries > 100) {
    UsageError("--retries: want an integer 0..100");
    return nullptr;
  }
  options.retry.max_attempts = static_cast<int>(*retries) + 1;
  if (absl::Status s = ApplySecurityOptions(args, &options); !s.ok()) {
    UsageError(s.message());
    return nullptr;
  }
  absl::StatusOr<std::unique_ptr<AttentionClient>> client =
      AttentionClient::Open(args.Get("server"), options);
  if (!client.ok()) {
    UsageError(client.status().message());
    return nullptr;
  }
  return *std::move(client);
}

int UsageError(absl::string_view message) {
  std::cerr << "error: " << message << "\n(run with --help for usage)"
            << std::endl;
  return kExitUsage;
}

int Failure(const absl::Status& status) {
  std::cerr << "error: " << absl::StatusCodeToString(status.code()) << ": "
            << status.message() << std::endl;
  return kExitFailure;
}

void PrintJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string json;
  auto status =
      google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    Failure(absl::InternalError(absl::StrCat("JSON: ", status.ToString())));
    return;
  }
  std::cout << json;
  if (json.empty() || json.back() != '\n') std::cout << '\n';
}

absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view contents) {
  const std::string tmp =
      absl::StrCat(path, ".tmp.", static_cast<long>(::getpid()));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat(tmp, ": cannot create: ", std::strerror(errno)));
  }
  size_t done = 0;
  while (done < contents.size()) {
    ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return absl::UnavailableError(
          absl::StrCat(tmp, ": write failed: ", std::strerror(err)));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return absl::UnavailableError(
        absl::StrCat(tmp, ": sync failed: ", std::strerror(err)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return absl::UnavailableError(
        absl::StrCat(path, ": rename failed: ", std::strerror(err)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return std::move(ss).str();
}

}  // namespace kvsketch::client::cli
