// File: tests/fuzz/request_fuzzer.cc
//
// libFuzzer target: request validation (server/request_validation.h) of the
// messages a client sends, and the application of whatever it accepts to a
// live session, so "validated => applied or cleanly refused" is checked and
// not only "validation does not crash". Input layout:
//   byte 0   message kind (mod 5): AppendRequest, AttendRequest,
//            DecodeRequest, PrefillRequest, CreateSessionRequest
//   byte 1   the session's spec (mod HarnessSpecs().size())
//   byte 2   tokens appended to every layer before the request (mod 8)
//   rest     the message in protobuf wire format
// The session is HarnessConfig (2 layers, 2 KV heads, 4 query heads,
// d = 8, dv = 4, max_tokens 48), made fresh for every input through the
// server's SessionManager, so inputs are independent. Checked:
//   - validation errors are InvalidArgument;
//   - a validated op has exactly the floats its shape says, and applying
//     it ends OK or with a refusal the state owns (IsAllowedAfterValidation);
//   - on success the layer's token count grew by T, the output tensor is
//     [num_query_heads, M, value_dim] F32 of the right byte size, and one
//     diagnostic per query row came back when asked for;
//   - CreateSession either refuses with InvalidArgument / ResourceExhausted
//     or makes a session whose info lists one canonical spec per layer;
//   - after every session is deleted the memory budget is back to 0.
// Cost per input: O(message size) to parse and decode, plus attention over
// at most 48 tokens per layer.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/stubs/logging.h"
#include "server/request_validation.h"
#include "server/session.h"
#include "tests/fuzz/fuzz_util.h"

namespace kvsketch::fuzz {
namespace {

using server::LayerOp;
using server::QueryRule;

constexpr char kTenant[] = "";
constexpr char kSessionId[] = "fuzzed";
constexpr int kMaxDecodeEntries = 16;

enum Kind { kAppend, kAttend, kDecode, kPrefill, kCreate, kNumKinds };

void CheckValidationError(const absl::Status& s) {
  KVSKETCH_FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument,
                      s.ToString());
}

// The sizes DecodeLayerOp / DecodeAppend promise (request_validation.h).
void CheckOpSizes(const SessionConfig& c, const LayerOp& op, int layers) {
  const size_t t = static_cast<size_t>(op.num_new_tokens);
  const size_t m = static_cast<size_t>(op.num_queries);
  KVSKETCH_FUZZ_CHECK(op.num_new_tokens >= 0 && op.num_queries >= 0,
                      absl::StrCat(op.num_new_tokens, " ", op.num_queries));
  KVSKETCH_FUZZ_CHECK(
      op.keys.size() == layers * c.num_kv_heads * t * c.head_dim,
      absl::StrCat("keys hold ", op.keys.size(), " floats for T=", t));
  KVSKETCH_FUZZ_CHECK(
      op.values.size() == layers * c.num_kv_heads * t * c.value_dim,
      absl::StrCat("values hold ", op.values.size(), " floats for T=", t));
  KVSKETCH_FUZZ_CHECK(
      op.queries.size() == c.num_query_heads * m * c.head_dim,
      absl::StrCat("queries hold ", op.queries.size(), " floats for M=", m));
}

// Runs a validated layer op through the service's own path (the one
// Attend, Prefill and Decode use) and checks the response fields.
void RunOp(server::Session& session, const LayerOp& op) {
  const SessionConfig& c = session.config();
  CheckOpSizes(c, op, 1);
  const int64_t before = session.tokens_per_layer()[op.layer];
  v1::Tensor output;
  google::protobuf::RepeatedPtrField<v1::QueryDiagnostic> diagnostics;
  int64_t num_tokens = 0;
  const absl::Status s = Pieces().service.RunLayerOp(session, op, &output,
                                                     &num_tokens, &diagnostics);
  KVSKETCH_FUZZ_CHECK(
      IsAllowedAfterValidation(s, op.want_diagnostics, op.num_new_tokens),
      s.ToString());
  if (!s.ok()) return;
  KVSKETCH_FUZZ_CHECK(num_tokens == before + op.num_new_tokens,
                      absl::StrCat(num_tokens, " tokens after ", before, "+",
                                   op.num_new_tokens));
  if (op.num_queries > 0) {
    const std::vector<int64_t> want = {c.num_query_heads, op.num_queries,
                                       c.value_dim};
    KVSKETCH_FUZZ_CHECK(std::vector<int64_t>(output.shape().begin(),
                                             output.shape().end()) == want,
                        "output shape");
    KVSKETCH_FUZZ_CHECK(output.dtype() == v1::F32, "output dtype");
    KVSKETCH_FUZZ_CHECK(
        output.data().size() == want[0] * want[1] * want[2] * sizeof(float),
        absl::StrCat("output holds ", output.data().size(), " bytes"));
  }
  if (op.want_diagnostics) {
    KVSKETCH_FUZZ_CHECK(
        diagnostics.size() == c.num_query_heads * op.num_queries,
        absl::StrCat(diagnostics.size(), " diagnostics"));
  }
}

void ApplyAppend(server::Session& session, const v1::AppendRequest& req) {
  const SessionConfig& c = session.config();
  absl::StatusOr<LayerOp> op = server::DecodeAppend(c, "", req);
  if (!op.ok()) return CheckValidationError(op.status());
  CheckOpSizes(c, *op, op->layer < 0 ? c.num_layers : 1);
  const std::vector<int64_t> before = session.tokens_per_layer();
  absl::Status s;
  if (op->layer < 0) {
    s = session.AppendAllLayers(op->num_new_tokens, op->keys, op->values);
  } else {
    int64_t tokens = 0;
    s = session.Step(op->layer, op->num_new_tokens, op->keys, op->values, 0, {},
                     {}, &tokens);
  }
  KVSKETCH_FUZZ_CHECK(IsAllowedAfterValidation(s, false, op->num_new_tokens),
                      s.ToString());
  const std::vector<int64_t> after = session.tokens_per_layer();
  for (int layer = 0; layer < c.num_layers; ++layer) {
    const bool grew = s.ok() && (op->layer < 0 || op->layer == layer);
    KVSKETCH_FUZZ_CHECK(
        after[layer] == before[layer] + (grew ? op->num_new_tokens : 0),
        absl::StrCat("layer ", layer, ": ", before[layer], " -> ", after[layer],
                     " (", s.ToString(), ")"));
  }
}

void ApplyCreate(const v1::CreateSessionRequest& req) {
  ServerPieces& p = Pieces();
  absl::StatusOr<std::string> id = server::ResolveSessionId(
      req.session_id(), "", "session_id", /*required=*/false);
  if (!id.ok()) return CheckValidationError(id.status());
  absl::StatusOr<std::shared_ptr<server::Session>> created =
      p.sessions.Create(*id, ConfigFromProto(req.config()), kTenant);
  if (!created.ok()) {
    const absl::StatusCode code = created.status().code();
    KVSKETCH_FUZZ_CHECK(code == absl::StatusCode::kInvalidArgument ||
                            code == absl::StatusCode::kResourceExhausted,
                        created.status().ToString());
    return;
  }
  v1::SessionInfo info;
  absl::Status s = (*created)->FillInfo(&info);
  KVSKETCH_FUZZ_CHECK(s.ok(), s.ToString());
  const int layers = (*created)->config().num_layers;
  KVSKETCH_FUZZ_CHECK(
      info.canonical_layer_specs_size() == layers &&
          info.tokens_per_layer_size() == layers,
      absl::StrCat(info.canonical_layer_specs_size(), " specs, ",
                   info.tokens_per_layer_size(), " counts"));
  for (int64_t n : info.tokens_per_layer()) {
    KVSKETCH_FUZZ_CHECK(n == 0, "a new session holds tokens");
  }
  const std::string made = (*created)->id();
  created->reset();
  s = p.sessions.Delete(made, kTenant);
  KVSKETCH_FUZZ_CHECK(s.ok(), s.ToString());
}

void ApplyToSession(Kind kind, server::Session& session,
                    absl::string_view proto) {
  const SessionConfig& c = session.config();
  auto ptr = [](bool has, const v1::Tensor& t) { return has ? &t : nullptr; };
  switch (kind) {
    case kAppend: {
      v1::AppendRequest req;
      if (!req.ParseFromArray(proto.data(), proto.size())) return;
      return ApplyAppend(session, req);
    }
    case kAttend: {
      v1::AttendRequest req;
      if (!req.ParseFromArray(proto.data(), proto.size())) return;
      absl::StatusOr<LayerOp> op = server::DecodeLayerOp(
          c, "", req.layer(), ptr(req.has_keys(), req.keys()),
          ptr(req.has_values(), req.values()),
          ptr(req.has_queries(), req.queries()), QueryRule::kRequired);
      if (!op.ok()) return CheckValidationError(op.status());
      op->want_diagnostics = req.want_diagnostics();
      return RunOp(session, *op);
    }
    case kPrefill: {
      v1::PrefillRequest req;
      if (!req.ParseFromArray(proto.data(), proto.size())) return;
      absl::StatusOr<LayerOp> op = server::DecodeLayerOp(
          c, "", req.layer(), ptr(req.has_keys(), req.keys()),
          ptr(req.has_values(), req.values()),
          ptr(req.has_queries(), req.queries()), QueryRule::kPrefill);
      if (!op.ok()) return CheckValidationError(op.status());
      return RunOp(session, *op);
    }
    case kDecode: {
      v1::DecodeRequest req;
      if (!req.ParseFromArray(proto.data(), proto.size())) return;
      const int n = std::min(req.entries_size(), kMaxDecodeEntries);
      for (int i = 0; i < n; ++i) {
        const v1::DecodeEntry& e = req.entries(i);
        // Entries naming another session only reach a NotFound lookup.
        if (!e.session_id().empty() && e.session_id() != kSessionId) continue;
        absl::StatusOr<LayerOp> op = server::DecodeLayerOp(
            c, absl::StrCat("entries[", i, "]."), e.layer(),
            ptr(e.has_keys(), e.keys()), ptr(e.has_values(), e.values()),
            ptr(e.has_queries(), e.queries()), QueryRule::kOptional);
        if (!op.ok()) {
          CheckValidationError(op.status());
          continue;
        }
        op->want_diagnostics = e.want_diagnostics();
        RunOp(session, *op);
      }
      return;
    }
    default:
      return;
  }
}

}  // namespace
}  // namespace kvsketch::fuzz

// Protobuf logs every string field with invalid UTF-8 it parses; the
// fuzzer makes thousands a second, and the writes would dominate the run.
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvsketch;        // NOLINT(build/namespaces): harness entry
  using namespace kvsketch::fuzz;  // NOLINT(build/namespaces)
  if (size < 3) return 0;
  const Kind kind = static_cast<Kind>(data[0] % kNumKinds);
  const std::vector<std::string>& specs = HarnessSpecs();
  const std::string& spec = specs[data[1] % specs.size()];
  const int64_t prefill = data[2] % 8;
  const absl::string_view proto(reinterpret_cast<const char*>(data + 3),
                                size - 3);
  ServerPieces& p = Pieces();
  if (kind == kCreate) {
    v1::CreateSessionRequest req;
    if (req.ParseFromArray(proto.data(), proto.size())) ApplyCreate(req);
  } else {
    absl::StatusOr<std::shared_ptr<server::Session>> session =
        p.sessions.Create(kSessionId, HarnessConfig(spec), kTenant);
    KVSKETCH_FUZZ_CHECK(session.ok(), session.status().ToString());
    if (prefill > 0) {
      const SessionConfig& c = (*session)->config();
      absl::Status s = (*session)->AppendAllLayers(
          prefill,
          Ramp(static_cast<size_t>(c.num_layers) * c.num_kv_heads * prefill *
                   c.head_dim,
               1),
          Ramp(static_cast<size_t>(c.num_layers) * c.num_kv_heads * prefill *
                   c.value_dim,
               2));
      KVSKETCH_FUZZ_CHECK(s.ok(), s.ToString());
    }
    ApplyToSession(kind, **session, proto);
    session->reset();
    absl::Status s = p.sessions.Delete(kSessionId, kTenant);
    KVSKETCH_FUZZ_CHECK(s.ok(), s.ToString());
  }
  const int64_t used = p.budget.used();
  KVSKETCH_FUZZ_CHECK(used == 0,
                      absl::StrCat(used, " budget bytes left charged"));
  KVSKETCH_FUZZ_CHECK(p.sessions.size() == 0, "a session was left behind");
  return 0;
}
