// The `kvsketch` command-line tool: one row per subcommand.
#include <iostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/command.h"

namespace kvsketch::client::cli {
namespace {

// Adding a command (eval, fit, llama, calibrate, migrate) is one row here.
const Command kCommands[] = {
    {"create", "create a session and print its id", "[options]", CreateFlags, 0,
     0, RunCreate},
    {"list", "list sessions", "[options]", ListFlags, 0, 0, RunList},
    {"get", "show one session", "ID [options]", GetFlags, 1, 1, RunGet},
    {"delete", "delete a session", "ID [options]", DeleteFlags, 1, 1,
     RunDelete},
    {"append", "append keys/values from .npy files", "[options]", AppendFlags,
     0, 0, RunAppend},
    {"attend", "attend queries from a .npy file", "[options]", AttendFlags, 0,
     0, RunAttend},
    {"export", "export a session snapshot to a file", "[options]", ExportFlags,
     0, 0, RunExport},
    {"import", "import a session snapshot from a file", "[options]",
     ImportFlags, 0, 0, RunImport},
    {"health", "check grpc.health.v1 (exit 0 iff SERVING)", "[options]",
     HealthFlags, 0, 0, RunHealth},
    {"migrate", "move a session to another server (export, import, delete)",
     "[options]", MigrateFlags, 0, 0, RunMigrate},
    {"eval", "accuracy harness: run specs over a trace (in-process)",
     "[options]", EvalFlags, 0, 0, RunEval},
    {"calibrate", "fit top-k budgets k(n) = alpha*n^C from a trace",
     "[options]", CalibrateFlags, 0, 0, RunCalibrate},
    {"llama", "decode a llama2.c checkpoint with attention from kvsketch",
     "[options]", LlamaFlags, 0, 0, RunLlama},
    {"fit", "attention regression: fit X, Y (or a storage correction)",
     "[options]", FitFlags, 0, 0, RunFit},
};

std::string TopUsage() {
  std::string out =
      "usage: kvsketch <command> [options]\n\n"
      "Client of the kvsketch streaming attention server.\n\ncommands:\n";
  for (const Command& c : kCommands) {
    absl::StrAppend(&out, absl::StrFormat("  %-10s %s\n", c.name, c.help));
  }
  absl::StrAppend(&out,
                  "\nRun 'kvsketch <command> --help' for its options. Commands "
                  "that talk to a server\ntake --server (default "
                  "127.0.0.1:50051, env KVSKETCH_SERVER) and --timeout\n"
                  "(default 30s); eval and calibrate run in-process.\n");
  return out;
}

int Main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << TopUsage();
    return kExitUsage;
  }
  const std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    std::cout << TopUsage();
    return kExitOk;
  }
  for (const Command& c : kCommands) {
    if (name != c.name) continue;
    const std::vector<OptionSpec> specs = c.options();
    absl::StatusOr<ParsedArgs> args =
        ParseArgs(specs, absl::Span<const char* const>(argv + 2, argc - 2));
    if (!args.ok()) return UsageError(args.status().message());
    if (args->help()) {
      std::cout << FormatUsage(absl::StrCat("kvsketch ", c.name), c.synopsis,
                               c.help, specs);
      return kExitOk;
    }
    const int n = static_cast<int>(args->positional().size());
    if (n < c.min_positional || n > c.max_positional) {
      return UsageError(absl::StrCat(c.name, ": expected ", c.synopsis,
                                     ", got ", n, " positional argument",
                                     n == 1 ? "" : "s"));
    }
    return c.run(*args);
  }
  std::cerr << "error: unknown command '" << name << "'\n\n" << TopUsage();
  return kExitUsage;
}

}  // namespace
}  // namespace kvsketch::client::cli

int main(int argc, char** argv) {
  return kvsketch::client::cli::Main(argc, argv);
}
