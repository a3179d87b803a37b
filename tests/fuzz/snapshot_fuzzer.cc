// File: tests/fuzz/snapshot_fuzzer.cc
//
// libFuzzer target: the session snapshot reader, i.e. what ImportSession and
// the --data_dir restart path do with a blob (SessionManager::Import:
// core/io/snapshot.h envelope, stored id, SessionState::Load, every head's
// LoadState). The envelope's CRC would stop almost every mutation at the
// door, and a hostile client computes a valid CRC anyway, so an input that
// does not start with the magic "KVSKSNAP" is taken as the payload and
// wrapped (WrapSnapshot) before the import; an input that does is imported
// as is, which fuzzes the envelope itself. Checked:
//   - a refused import is DataLoss (corrupt) or ResourceExhausted (limits);
//   - an imported session answers a query and a causal step on every layer
//     (or refuses with a status, never a crash), and exports a snapshot
//     that imports again and re-exports to the same bytes;
//   - once every session is gone the memory budget is back to 0 (imports
//     and steps charge exactly what Close releases).
// Cost per input: O(input size) to load, plus one query and one token per
// layer, O(n * (d + dv)) per head for the exact kinds.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/io/snapshot.h"
#include "server/session.h"
#include "tests/fuzz/fuzz_util.h"

namespace kvsketch::fuzz {
namespace {

constexpr char kTenant[] = "";

// One query-only step and one causal step (T = M = 1) on every layer.
void DriveSession(server::Session& session) {
  const SessionConfig& c = session.config();
  const std::vector<int64_t> before = session.tokens_per_layer();
  for (int layer = 0; layer < c.num_layers; ++layer) {
    const size_t q_size = static_cast<size_t>(c.num_query_heads) * c.head_dim;
    std::vector<float> q = Ramp(q_size, layer);
    std::vector<float> out(static_cast<size_t>(c.num_query_heads) *
                           c.value_dim);
    int64_t tokens = 0;
    absl::Status s =
        session.Step(layer, 0, {}, {}, 1, q, absl::MakeSpan(out), &tokens);
    KVSKETCH_FUZZ_CHECK(IsAllowedAfterValidation(s, false, 0), s.ToString());
    std::vector<float> k =
        Ramp(static_cast<size_t>(c.num_kv_heads) * c.head_dim, layer + 7);
    std::vector<float> v =
        Ramp(static_cast<size_t>(c.num_kv_heads) * c.value_dim, layer + 9);
    s = session.Step(layer, 1, k, v, 1, q, absl::MakeSpan(out), &tokens);
    KVSKETCH_FUZZ_CHECK(IsAllowedAfterValidation(s, false, 1), s.ToString());
    if (s.ok()) {
      KVSKETCH_FUZZ_CHECK(
          tokens == before[layer] + 1,
          absl::StrCat("layer ", layer, " has ", tokens,
                       " tokens after one more than ", before[layer]));
    }
  }
}

void ImportOne(absl::string_view blob) {
  ServerPieces& p = Pieces();
  absl::StatusOr<std::shared_ptr<server::Session>> imported =
      p.sessions.Import("fuzzed", blob, /*newly_created=*/false, kTenant);
  if (!imported.ok()) {
    const absl::StatusCode code = imported.status().code();
    KVSKETCH_FUZZ_CHECK(code == absl::StatusCode::kDataLoss ||
                            code == absl::StatusCode::kResourceExhausted,
                        imported.status().ToString());
    return;
  }
  DriveSession(**imported);

  absl::StatusOr<std::string> exported =
      server::SessionManager::ExportSnapshot(**imported);
  KVSKETCH_FUZZ_CHECK(exported.ok(), exported.status().ToString());
  imported->reset();
  absl::Status s = p.sessions.Delete("fuzzed", kTenant);
  KVSKETCH_FUZZ_CHECK(s.ok(), s.ToString());

  // The stored id of the export is "fuzzed": "" keeps it.
  absl::StatusOr<std::shared_ptr<server::Session>> again =
      p.sessions.Import("", *exported, /*newly_created=*/false, kTenant);
  KVSKETCH_FUZZ_CHECK(again.ok(), again.status().ToString());
  absl::StatusOr<std::string> reexported =
      server::SessionManager::ExportSnapshot(**again);
  KVSKETCH_FUZZ_CHECK(reexported.ok(), reexported.status().ToString());
  KVSKETCH_FUZZ_CHECK(*reexported == *exported,
                      "export(import(export)) differs from export");
  again->reset();
  s = p.sessions.Delete("fuzzed", kTenant);
  KVSKETCH_FUZZ_CHECK(s.ok(), s.ToString());
}

}  // namespace
}  // namespace kvsketch::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvsketch;  // NOLINT(build/namespaces): harness entry
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  if (absl::StartsWith(bytes, "KVSKSNAP")) {
    const absl::StatusOr<absl::string_view> payload = UnwrapSnapshot(bytes);
    if (!payload.ok()) {
      KVSKETCH_FUZZ_CHECK(
          payload.status().code() == absl::StatusCode::kDataLoss,
          payload.status().ToString());
    }
    fuzz::ImportOne(bytes);
  } else {
    fuzz::ImportOne(WrapSnapshot(bytes));
  }
  const int64_t used = fuzz::Pieces().budget.used();
  KVSKETCH_FUZZ_CHECK(used == 0,
                      absl::StrCat(used, " budget bytes left charged"));
  return 0;
}
