// `kvsketch migrate`: moves one session from server A to server B (issue #7;
// DESIGN §3: ExportSession/ImportSession exist for migration, and
// x-session-id keeps a session on one replica), so that a replica can be
// drained before a scale-down (docs/deployment.md).
//
// Export from A -> Import into B -> check A did not change meanwhile ->
// Delete on A. The order makes every failure leave one complete copy:
//   - Export or Import fails: nothing was created on B; A is untouched.
//   - A's session changed (tokens appended) or vanished between Export and
//     the check: the copy on B is stale, so it is deleted again and A keeps
//     the session (ABORTED: stop the session's traffic and retry).
//   - Delete on A fails: both hold the same state; the message says which
//     command removes the extra copy.
// The check in step 3 narrows but cannot close the window for writes: an
// append acknowledged by A between that check and the Delete is lost (the
// API has no conditional delete). So a session must receive no traffic on
// A while it moves; draining does that by taking A out of the proxy first.
// The snapshot is the versioned, checksummed envelope of ExportSession, so
// the moved session answers bit-identically (tests/client/migrate_cli_test).
// Cost: one snapshot, O(state bytes) over the network twice (A -> client ->
// B), held in client memory once.
#include <algorithm>
#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cli/command.h"

namespace kvsketch::client::cli {
namespace {

// `status` with `context` in front of its message (same code).
absl::Status Annotated(const absl::Status& status, absl::string_view context) {
  return absl::Status(status.code(), absl::StrCat(context, status.message()));
}

bool SameTokens(const v1::SessionInfo& a, const v1::SessionInfo& b) {
  return std::equal(a.tokens_per_layer().begin(), a.tokens_per_layer().end(),
                    b.tokens_per_layer().begin(), b.tokens_per_layer().end());
}

std::string Tokens(const v1::SessionInfo& info) {
  return absl::StrCat("[", absl::StrJoin(info.tokens_per_layer(), " "), "]");
}

}  // namespace

std::vector<OptionSpec> MigrateFlags() {
  std::vector<OptionSpec> specs = {
      {.name = "session",
       .value_name = "ID",
       .help = "session to move",
       .required = true},
      {.name = "from",
       .value_name = "HOST:PORT",
       .help = "server holding the session (a replica, not a proxy)",
       .required = true},
      {.name = "to",
       .value_name = "HOST:PORT",
       .help = "destination server, or the proxy: the import carries "
               "x-session-id, so the proxy picks the replica",
       .required = true},
      {.name = "id",
       .value_name = "ID",
       .default_value = "",
       .help = "id on the destination (\"\" = the same id)"},
      {.name = "keep-source",
       .help = "copy: do not delete the session on --from"},
  };
  // --timeout (per call) from the common options; --server has no meaning
  // here and is left out so that it cannot be mistaken for --to.
  for (OptionSpec& spec : CommonOptions()) {
    if (spec.name != "server") specs.push_back(std::move(spec));
  }
  return specs;
}

int RunMigrate(const ParsedArgs& args) {
  const std::string id = args.Get("session");
  const std::string from = args.Get("from");
  const std::string to = args.Get("to");
  const std::string new_id = args.Get("id").empty() ? id : args.Get("id");
  if (from.empty() || to.empty()) {
    return UsageError("--from and --to must be HOST:PORT addresses");
  }
  if (from == to && new_id == id) {
    return UsageError(absl::StrCat(
        "--from and --to are both ", from,
        ": moving a session onto the server that holds it would delete it"));
  }
  absl::StatusOr<absl::Duration> timeout = args.GetDuration("timeout");
  if (!timeout.ok()) return UsageError(timeout.status().message());
  ClientOptions options;
  options.timeout =
      *timeout == absl::ZeroDuration() ? absl::InfiniteDuration() : *timeout;
  // The same TLS files and bearer token for both ends (one tenant moving
  // its own session); retries stay off: each step's outcome decides the
  // next one.
  if (absl::Status s = ApplySecurityOptions(args, &options); !s.ok()) {
    return UsageError(s.message());
  }
  absl::StatusOr<std::unique_ptr<AttentionClient>> opened_source =
      AttentionClient::Open(from, options);
  if (!opened_source.ok()) return UsageError(opened_source.status().message());
  absl::StatusOr<std::unique_ptr<AttentionClient>> opened_destination =
      AttentionClient::Open(to, options);
  if (!opened_destination.ok()) {
    return UsageError(opened_destination.status().message());
  }
  std::unique_ptr<AttentionClient> source = *std::move(opened_source);
  std::unique_ptr<AttentionClient> destination = *std::move(opened_destination);

  // 1. Export: the snapshot and the source's state at that moment.
  absl::StatusOr<std::string> blob = source->ExportSession(id);
  if (!blob.ok()) {
    return Failure(Annotated(
        blob.status(), absl::StrCat("exporting ", id, " from ", from, ": ")));
  }

  // 2. Import. The explicit id is also the x-session-id routing metadata.
  absl::StatusOr<v1::SessionInfo> imported =
      destination->ImportSession(*blob, new_id);
  if (!imported.ok()) {
    return Failure(Annotated(
        imported.status(),
        absl::StrCat("importing ", new_id, " into ", to, " (the session is ",
                     "unchanged on ", from, "): ")));
  }

  // 3. Did the source change between Export and now? Appends that landed in
  // that window are not in the copy; keep the source as the only copy.
  absl::StatusOr<v1::SessionInfo> current = source->GetSession(id);
  if (!current.ok() || !SameTokens(*current, *imported)) {
    const absl::Status rollback = destination->DeleteSession(new_id);
    const std::string why =
        current.ok()
            ? absl::StrCat("it changed during the migration (tokens per ",
                           "layer ", Tokens(*imported), " exported, ",
                           Tokens(*current),
                           " now); stop its traffic and "
                           "retry")
            : absl::StrCat("it could not be re-read there (",
                           absl::StatusCodeToString(current.status().code()),
                           ": ", current.status().message(), ")");
    const std::string cleanup =
        rollback.ok()
            ? absl::StrCat("the copy on ", to, " was removed")
            : absl::StrCat("removing the copy on ", to, " failed too (",
                           rollback.message(), "): run 'kvsketch delete ",
                           new_id, " --server ", to, "'");
    return Failure(absl::AbortedError(absl::StrCat("session ", id, " on ", from,
                                                   " was left in place: ", why,
                                                   "; ", cleanup)));
  }

  // 4. Delete the source.
  if (!args.Flag("keep-source")) {
    if (absl::Status s = source->DeleteSession(id); !s.ok()) {
      return Failure(Annotated(
          s, absl::StrCat("session ", id, " was copied to ", to,
                          " but deleting it from ", from,
                          " failed, so both hold it; run 'kvsketch delete ", id,
                          " --server ", from, "': ")));
    }
  }
  std::cout << (args.Flag("keep-source") ? "copied " : "migrated ") << id
            << " from " << from << " to " << to;
  if (new_id != id) std::cout << " as " << new_id;
  std::cout << ": " << blob->size() << " snapshot bytes, tokens per layer "
            << Tokens(*imported) << ", " << imported->state_bytes()
            << " state bytes\n";
  return kExitOk;
}

}  // namespace kvsketch::client::cli
