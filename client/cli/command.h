// File: client/cli/command.h
//
// The `kvsketch` CLI's command table and the helpers every command shares.
// A command is one row {name, help, synopsis, options, run}; adding one
// (eval, fit, llama, ...) is one line in main.cc's table plus its file.
//
// Exit codes: 0 success, 1 an RPC or I/O failure (printed as
// "error: <CODE>: <message>"), 2 a usage error.
#ifndef KVSKETCH_CLIENT_CLI_COMMAND_H_
#define KVSKETCH_CLIENT_CLI_COMMAND_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "client/attention_client.h"
#include "client/cli/args.h"
#include "google/protobuf/message.h"

namespace kvsketch::client::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

using CommandFn = int (*)(const ParsedArgs& args);

struct Command {
  const char* name;
  const char* help;      // one line, for `kvsketch --help`
  const char* synopsis;  // after "kvsketch <name> "
  std::vector<OptionSpec> (*options)();
  int min_positional;
  int max_positional;
  CommandFn run;
};

// --server (default 127.0.0.1:50051 or $KVSKETCH_SERVER), --timeout,
// --retries (RetryPolicy, default 2), and
// the security options --tls, --tls-ca, --tls-cert, --tls-key,
// --tls-server-name, --token-file (default $KVSKETCH_TOKEN_FILE).
std::vector<OptionSpec> CommonOptions();
// The security subset of CommonOptions (also used by kvsketch-loadgen).
std::vector<OptionSpec> SecurityOptions();
// Fills the TLS fields and bearer_token of `options` from SecurityOptions();
// InvalidArgument naming --token-file if it cannot be read or is empty.
absl::Status ApplySecurityOptions(const ParsedArgs& args,
                                  ClientOptions* options);
// CommonOptions() plus `extra`.
std::vector<OptionSpec> WithCommon(std::vector<OptionSpec> extra);

// Builds a client from the common options. Returns nullptr after printing a
// usage error (bad --timeout, unreadable TLS or token file) to stderr.
std::unique_ptr<AttentionClient> MakeClient(const ParsedArgs& args);

// Prints "error: <message>" (and a --help hint) to stderr; returns 2.
int UsageError(absl::string_view message);
// Prints "error: <CODE>: <message>" to stderr; returns 1.
int Failure(const absl::Status& status);

// Prints `message` as indented JSON (proto field names) to stdout.
void PrintJson(const google::protobuf::Message& message);

// Writes `contents` to `path` atomically: a temporary file beside it,
// flushed and fsync'ed, then renamed over `path`.
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view contents);
absl::StatusOr<std::string> ReadFile(const std::string& path);

// --- The commands (one file per concern) ---
// session_commands.cc
std::vector<OptionSpec> CreateFlags();
int RunCreate(const ParsedArgs& args);
std::vector<OptionSpec> ListFlags();
int RunList(const ParsedArgs& args);
std::vector<OptionSpec> GetFlags();
int RunGet(const ParsedArgs& args);
std::vector<OptionSpec> DeleteFlags();
int RunDelete(const ParsedArgs& args);
// data_commands.cc
std::vector<OptionSpec> AppendFlags();
int RunAppend(const ParsedArgs& args);
std::vector<OptionSpec> AttendFlags();
int RunAttend(const ParsedArgs& args);
// snapshot_commands.cc
std::vector<OptionSpec> ExportFlags();
int RunExport(const ParsedArgs& args);
std::vector<OptionSpec> ImportFlags();
int RunImport(const ParsedArgs& args);
std::vector<OptionSpec> HealthFlags();
int RunHealth(const ParsedArgs& args);
// migrate_commands.cc (Export -> Import -> Delete between two servers)
std::vector<OptionSpec> MigrateFlags();
int RunMigrate(const ParsedArgs& args);

// eval_commands.cc (in-process; no server)
std::vector<OptionSpec> EvalFlags();
int RunEval(const ParsedArgs& args);
std::vector<OptionSpec> CalibrateFlags();
int RunCalibrate(const ParsedArgs& args);

// llama_commands.cc (a llama2.c model decoding through kvsketch)
std::vector<OptionSpec> LlamaFlags();
int RunLlama(const ParsedArgs& args);

// fit_commands.cc (attention regression and storage correction; in-process)
std::vector<OptionSpec> FitFlags();
int RunFit(const ParsedArgs& args);

}  // namespace kvsketch::client::cli

#endif  // KVSKETCH_CLIENT_CLI_COMMAND_H_
