// `kvsketch export | import | health`.
#include <iostream>

#include "client/cli/command.h"
#include "client/health_check.h"

namespace kvsketch::client::cli {

std::vector<OptionSpec> ExportFlags() {
  return WithCommon({
      {.name = "session",
       .value_name = "ID",
       .help = "session id",
       .required = true},
      {.name = "out",
       .value_name = "FILE",
       .help = "snapshot file (written atomically)",
       .required = true},
  });
}

int RunExport(const ParsedArgs& args) {
  auto client = MakeClient(args);
  if (client == nullptr) return kExitUsage;
  absl::StatusOr<std::string> blob = client->ExportSession(args.Get("session"));
  if (!blob.ok()) return Failure(blob.status());
  if (absl::Status s = WriteFileAtomically(args.Get("out"), *blob); !s.ok()) {
    return Failure(s);
  }
  std::cout << "exported " << args.Get("session") << " (" << blob->size()
            << " bytes) to " << args.Get("out") << "\n";
  return kExitOk;
}

std::vector<OptionSpec> ImportFlags() {
  return WithCommon({
      {.name = "in",
       .value_name = "FILE",
       .help = "snapshot file",
       .required = true},
      {.name = "id",
       .value_name = "ID",
       .default_value = "",
       .help = "import under this id (\"\" = the id in the snapshot)"},
      {.name = "json", .help = "print the SessionInfo as JSON"},
  });
}

int RunImport(const ParsedArgs& args) {
  absl::StatusOr<std::string> blob = ReadFile(args.Get("in"));
  if (!blob.ok()) return Failure(blob.status());
  auto client = MakeClient(args);
  if (client == nullptr) return kExitUsage;
  absl::StatusOr<v1::SessionInfo> info =
      client->ImportSession(*blob, args.Get("id"));
  if (!info.ok()) return Failure(info.status());
  if (args.Flag("json")) {
    PrintJson(*info);
  } else {
    std::cout << info->session_id() << "\n";
  }
  return kExitOk;
}

std::vector<OptionSpec> HealthFlags() {
  return WithCommon({
      {.name = "service",
       .value_name = "NAME",
       .default_value = "",
       .help = "service to check (\"\" = the whole server)"},
  });
}

int RunHealth(const ParsedArgs& args) {
  absl::StatusOr<absl::Duration> timeout = args.GetDuration("timeout");
  if (!timeout.ok()) return UsageError(timeout.status().message());
  auto client = MakeClient(args);
  if (client == nullptr) return kExitUsage;
  absl::StatusOr<ServingStatus> status =
      CheckHealth(client->channel(), args.Get("service"), *timeout);
  if (!status.ok()) return Failure(status.status());
  std::cout << ServingStatusName(*status) << "\n";
  return *status == ServingStatus::kServing ? kExitOk : kExitFailure;
}

}  // namespace kvsketch::client::cli
