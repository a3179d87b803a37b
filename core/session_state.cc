// File: core/session_state.cc
#include "core/session_state.h"

#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/registry.h"
#include "core/status_macros.h"

namespace kvsketch {
namespace {

// Session payload (inside the snapshot envelope, core/io/snapshot.h):
//   string "kvsketch.session"   tag
//   u32    kSessionFormatVersion
//   u32 num_layers, num_kv_heads, num_query_heads, head_dim, value_dim
//   f32 scale, string spec, i64 max_tokens
//   u32 count, then count × (u32 layer, string spec)    layer overrides
//   num_layers × string canonical layer spec
//   per head (layer-major): i64 num_tokens, string state (SaveState bytes)
constexpr absl::string_view kSessionTag = "kvsketch.session";
constexpr uint32_t kSessionFormatVersion = 1;
constexpr size_t kMaxSpecBytes = 4096;
// Smallest possible per-head record: num_tokens + state length.
constexpr size_t kMinHeadRecordBytes = 16;

absl::Status CheckRange(absl::string_view field, int64_t v, int64_t lo,
                        int64_t hi) {
  if (v < lo || v > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " (", v, ") must be in [", lo, ", ", hi, "]"));
  }
  return absl::OkStatus();
}

absl::Status Annotate(const absl::Status& s, absl::string_view prefix) {
  return absl::Status(s.code(), absl::StrCat(prefix, s.message()));
}

absl::Status ToDataLoss(const absl::Status& s, absl::string_view prefix) {
  if (s.ok() || s.code() == absl::StatusCode::kDataLoss) return s;
  return absl::DataLossError(absl::StrCat(prefix, s.message()));
}

}  // namespace

absl::Status NormalizeSessionConfig(SessionConfig* config) {
  SessionConfig c = *config;
  KVSKETCH_RETURN_IF_ERROR(CheckRange("num_layers", c.num_layers, 1, 1024));
  KVSKETCH_RETURN_IF_ERROR(CheckRange("num_kv_heads", c.num_kv_heads, 1, 1024));
  if (c.num_query_heads == 0) c.num_query_heads = c.num_kv_heads;
  KVSKETCH_RETURN_IF_ERROR(
      CheckRange("num_query_heads", c.num_query_heads, 1, 1024));
  if (c.num_query_heads % c.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_query_heads (", c.num_query_heads,
        ") must be a multiple of num_kv_heads (", c.num_kv_heads, ")"));
  }
  KVSKETCH_RETURN_IF_ERROR(CheckRange("head_dim", c.head_dim, 1, 65536));
  if (c.value_dim == 0) c.value_dim = c.head_dim;
  KVSKETCH_RETURN_IF_ERROR(CheckRange("value_dim", c.value_dim, 1, 65536));
  if (!std::isfinite(c.scale) || c.scale < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("scale (", c.scale, ") must be finite and >= 0"));
  }
  if (c.scale == 0) {
    c.scale =
        static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
  }
  if (c.max_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens (", c.max_tokens, ") must be >= 0"));
  }
  if (c.spec.empty()) c.spec = "exact";
  {
    auto canonical = CanonicalizeSpec(c.spec);
    if (!canonical.ok()) return Annotate(canonical.status(), "spec: ");
    c.spec = *std::move(canonical);
  }
  for (auto& [layer, spec] : c.layer_specs) {
    if (layer < 0 || layer >= c.num_layers) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer_specs key (", layer, ") must be in [0, ", c.num_layers, ")"));
    }
    auto canonical = CanonicalizeSpec(spec);
    if (!canonical.ok()) {
      return Annotate(canonical.status(),
                      absl::StrCat("layer_specs[", layer, "]: "));
    }
    spec = *std::move(canonical);
  }
  *config = std::move(c);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SessionState>> SessionState::Create(
    SessionConfig config, int64_t max_state_bytes) {
  KVSKETCH_RETURN_IF_ERROR(NormalizeSessionConfig(&config));
  std::unique_ptr<SessionState> s(new SessionState());
  s->config_ = std::move(config);
  const SessionConfig& c = s->config_;
  const HeadShape shape{c.head_dim, c.value_dim, c.scale};
  s->layer_specs_.reserve(c.num_layers);
  s->heads_.reserve(static_cast<size_t>(c.num_layers) * c.num_kv_heads);
  int64_t built_bytes = 0;
  for (int layer = 0; layer < c.num_layers; ++layer) {
    auto it = c.layer_specs.find(layer);
    const std::string& spec = it != c.layer_specs.end() ? it->second : c.spec;
    s->layer_specs_.push_back(spec);
    for (int h = 0; h < c.num_kv_heads; ++h) {
      auto head = CreateApproximator(spec, shape);
      if (!head.ok()) {
        return Annotate(head.status(), absl::StrCat("layer ", layer, ": "));
      }
      built_bytes += (*head)->MemoryBytes();
      s->heads_.push_back(*std::move(head));
      if (max_state_bytes > 0 && built_bytes > max_state_bytes) {
        return absl::ResourceExhaustedError(
            absl::StrCat("the session's ", c.num_layers, " x ", c.num_kv_heads,
                         " heads need more than ", max_state_bytes,
                         " bytes of state before any token (", built_bytes,
                         " after building ", s->heads_.size(), " of them)"));
      }
    }
  }
  return s;
}

const std::string& SessionState::layer_spec(int layer) const {
  KVSKETCH_CHECK(layer >= 0 && layer < config_.num_layers);
  return layer_specs_[layer];
}

int64_t SessionState::num_tokens(int layer) const {
  KVSKETCH_CHECK(layer >= 0 && layer < config_.num_layers);
  return heads_[static_cast<size_t>(layer) * config_.num_kv_heads]
      ->num_tokens();
}

std::vector<int64_t> SessionState::tokens_per_layer() const {
  std::vector<int64_t> out(config_.num_layers);
  for (int l = 0; l < config_.num_layers; ++l) out[l] = num_tokens(l);
  return out;
}

int64_t SessionState::MemoryBytes() const {
  int64_t total = 0;
  for (const auto& h : heads_) total += h->MemoryBytes();
  return total;
}

int64_t SessionState::LayerMemoryBytes(int layer) const {
  KVSKETCH_CHECK(layer >= 0 && layer < config_.num_layers);
  int64_t total = 0;
  for (int h = 0; h < config_.num_kv_heads; ++h) {
    total += heads_[static_cast<size_t>(layer) * config_.num_kv_heads + h]
                 ->MemoryBytes();
  }
  return total;
}

absl::Status SessionState::CheckStorable(absl::string_view op, int layer,
                                         absl::Span<const float> keys,
                                         absl::Span<const float> values) const {
  KVSKETCH_CHECK(layer >= 0 && layer < config_.num_layers);
  // Half-precision storage turns a larger float into ±Inf, and an Inf key or
  // value makes every later answer of the head NaN. O(size), only for such
  // layers.
  const float limit = heads_[static_cast<size_t>(layer) * config_.num_kv_heads]
                          ->MaxStorableMagnitude();
  if (!(limit < std::numeric_limits<float>::max())) return absl::OkStatus();
  for (const auto& [name, data] :
       {std::pair{"keys", keys}, std::pair{"values", values}}) {
    for (size_t i = 0; i < data.size(); ++i) {
      if (std::fabs(data[i]) > limit) {
        return absl::InvalidArgumentError(
            absl::StrCat(op, ": ", name, "[", i, "] = ", data[i], " exceeds ",
                         limit, ", the largest magnitude layer ", layer,
                         "'s storage (", layer_specs_[layer], ") can hold"));
      }
    }
  }
  return absl::OkStatus();
}

int64_t SessionState::LayerAppendGrowthBytes(int layer, int64_t n) const {
  KVSKETCH_CHECK(layer >= 0 && layer < config_.num_layers && n >= 0);
  int64_t total = 0;
  for (int h = 0; h < config_.num_kv_heads; ++h) {
    total += heads_[static_cast<size_t>(layer) * config_.num_kv_heads + h]
                 ->AppendGrowthBytes(n);
  }
  return total;
}

SelfMeasurements SessionState::LayerMeasurements(int layer) const {
  KVSKETCH_CHECK(layer >= 0 && layer < config_.num_layers);
  SelfMeasurements total;
  for (int h = 0; h < config_.num_kv_heads; ++h) {
    total += heads_[static_cast<size_t>(layer) * config_.num_kv_heads + h]
                 ->Measurements();
  }
  return total;
}

namespace {

absl::Status CheckSize(absl::string_view op, absl::string_view field,
                       size_t got, int64_t want, absl::string_view layout) {
  if (static_cast<int64_t>(got) != want) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", field, " has ",
                                                   got, " floats, expected ",
                                                   want, " (", layout, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SessionState::Append(int layer, int64_t num_new_tokens,
                                  absl::Span<const float> keys,
                                  absl::Span<const float> values) {
  return Step(layer, num_new_tokens, keys, values, 0, {}, {});
}

absl::Status SessionState::QueryDiagnostics(
    int layer, int64_t num_queries, absl::Span<const float> queries,
    std::vector<QueryDiagnostic>* out) const {
  const SessionConfig& c = config_;
  if (layer < 0 || layer >= c.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "diagnostics: layer (", layer, ") must be in [0, ", c.num_layers, ")"));
  }
  const int64_t d = c.head_dim;
  KVSKETCH_RETURN_IF_ERROR(CheckSize("diagnostics", "queries", queries.size(),
                                     c.num_query_heads * num_queries * d,
                                     "num_query_heads*M*head_dim"));
  out->clear();
  out->reserve(static_cast<size_t>(c.num_query_heads * num_queries));
  const int64_t rows = group_size() * num_queries;  // one KV head's block
  std::vector<QueryDiagnostic> head;
  for (int h = 0; h < c.num_kv_heads; ++h) {
    const Approximator& a = *heads_[layer * c.num_kv_heads + h];
    KVSKETCH_RETURN_IF_ERROR(
        a.QueryDiagnostics({queries.data() + h * rows * d, rows, d}, &head));
    out->insert(out->end(), head.begin(), head.end());
  }
  return absl::OkStatus();
}

bool SessionState::SupportsDiagnostics(int layer) const {
  std::vector<QueryDiagnostic> none;
  return !absl::IsUnimplemented(
      heads_[layer * config_.num_kv_heads]->QueryDiagnostics(
          {nullptr, 0, config_.head_dim}, &none));
}

absl::Status SessionState::Step(int layer, int64_t num_new_tokens,
                                absl::Span<const float> keys,
                                absl::Span<const float> values,
                                int64_t num_queries,
                                absl::Span<const float> queries,
                                absl::Span<float> out) {
  const SessionConfig& c = config_;
  const char* op = num_queries > 0 ? "step" : "append";
  if (layer < 0 || layer >= c.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": layer (", layer, ") must be in [0, ", c.num_layers, ")"));
  }
  const int64_t t = num_new_tokens;
  const int64_t m = num_queries;
  // Bounds keep the products below from overflowing.
  constexpr int64_t kMaxRows = int64_t{1} << 32;
  if (t < 0 || t > kMaxRows) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": num_new_tokens (", t, ") must be in [0, ", kMaxRows, "]"));
  }
  if (m < 0 || m > kMaxRows) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": num_queries (", m, ") must be in [0, ", kMaxRows, "]"));
  }
  const int64_t d = c.head_dim;
  const int64_t dv = c.value_dim;
  KVSKETCH_RETURN_IF_ERROR(CheckSize(op, "keys", keys.size(),
                                     c.num_kv_heads * t * d,
                                     "num_kv_heads*T*head_dim"));
  KVSKETCH_RETURN_IF_ERROR(CheckSize(op, "values", values.size(),
                                     c.num_kv_heads * t * dv,
                                     "num_kv_heads*T*value_dim"));
  KVSKETCH_RETURN_IF_ERROR(CheckSize(op, "queries", queries.size(),
                                     c.num_query_heads * m * d,
                                     "num_query_heads*M*head_dim"));
  KVSKETCH_RETURN_IF_ERROR(CheckSize(op, "out", out.size(),
                                     c.num_query_heads * m * dv,
                                     "num_query_heads*M*value_dim"));
  if (t > 0 && m > 0 && m != t) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": num_queries (", m, ") must equal num_new_tokens (",
                     t, ") when a step carries both tokens and queries"));
  }
  const int64_t have = num_tokens(layer);
  if (c.max_tokens > 0 && have + t > c.max_tokens) {
    return absl::ResourceExhaustedError(absl::StrCat(
        op, ": layer ", layer, " holds ", have, " tokens; appending ", t,
        " would exceed max_tokens (", c.max_tokens, ")"));
  }
  if (t == 0 && m > 0 && have == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(op, ": layer ", layer, " has no tokens to attend to"));
  }
  if (t > 0) KVSKETCH_RETURN_IF_ERROR(CheckStorable(op, layer, keys, values));
  // Everything is validated: from here on no head can fail on its inputs.
  const int g = group_size();
  for (int h = 0; h < c.num_kv_heads; ++h) {
    Approximator& head =
        *heads_[static_cast<size_t>(layer) * c.num_kv_heads + h];
    const ConstMatrixView k{keys.data() + h * t * d, t, d};
    const ConstMatrixView v{values.data() + h * t * dv, t, dv};
    const ConstMatrixView q{queries.data() + h * g * m * d, g * m, d};
    const MatrixView o{out.data() + h * g * m * dv, g * m, dv};
    absl::Status s;
    if (m == 0) {
      if (t > 0) s = head.Append(k, v);
    } else if (t == 0) {
      s = head.Attend(q, o);
    } else if (t == 1) {
      // A decode step: the query row attends to everything including the
      // one new token, which is Append then Attend. Skips the bulk path's
      // gathers and scratch allocations, which dominate at T = 1.
      s = head.Append(k, v);
      if (s.ok()) s = head.Attend(q, o);
    } else {
      s = head.Prefill(q, g, k, v, o);
    }
    if (!s.ok()) {
      // Only a broken approximator gets here (inputs were checked).
      return Annotate(
          s, absl::StrCat(op, ": layer ", layer, " kv head ", h, ": "));
    }
  }
  return absl::OkStatus();
}

absl::Status SessionState::Save(ByteWriter& writer) const {
  const SessionConfig& c = config_;
  writer.PutString(kSessionTag);
  writer.PutU32(kSessionFormatVersion);
  writer.PutU32(static_cast<uint32_t>(c.num_layers));
  writer.PutU32(static_cast<uint32_t>(c.num_kv_heads));
  writer.PutU32(static_cast<uint32_t>(c.num_query_heads));
  writer.PutU32(static_cast<uint32_t>(c.head_dim));
  writer.PutU32(static_cast<uint32_t>(c.value_dim));
  writer.PutF32(c.scale);
  writer.PutString(c.spec);
  writer.PutI64(c.max_tokens);
  writer.PutU32(static_cast<uint32_t>(c.layer_specs.size()));
  for (const auto& [layer, spec] : c.layer_specs) {
    writer.PutU32(static_cast<uint32_t>(layer));
    writer.PutString(spec);
  }
  for (const std::string& spec : layer_specs_) writer.PutString(spec);
  for (const auto& head : heads_) {
    ByteWriter state;
    KVSKETCH_RETURN_IF_ERROR(head->SaveState(state));
    writer.PutI64(head->num_tokens());
    writer.PutString(state.data());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SessionState>> SessionState::Load(
    ByteReader& reader, int64_t max_state_bytes) {
  std::string tag;
  KVSKETCH_RETURN_IF_ERROR(
      reader.GetString(&tag, kSessionTag.size(), "session tag"));
  if (tag != kSessionTag) {
    return absl::DataLossError("session payload has a wrong tag");
  }
  uint32_t version = 0;
  KVSKETCH_RETURN_IF_ERROR(reader.GetU32(&version, "session format version"));
  if (version != kSessionFormatVersion) {
    return absl::DataLossError(
        absl::StrCat("unsupported session format version ", version,
                     " (this build reads ", kSessionFormatVersion, ")"));
  }
  SessionConfig c;
  uint32_t u = 0;
  KVSKETCH_RETURN_IF_ERROR(reader.GetU32(&u, "num_layers"));
  c.num_layers = static_cast<int>(u);
  KVSKETCH_RETURN_IF_ERROR(reader.GetU32(&u, "num_kv_heads"));
  c.num_kv_heads = static_cast<int>(u);
  KVSKETCH_RETURN_IF_ERROR(reader.GetU32(&u, "num_query_heads"));
  c.num_query_heads = static_cast<int>(u);
  KVSKETCH_RETURN_IF_ERROR(reader.GetU32(&u, "head_dim"));
  c.head_dim = static_cast<int>(u);
  KVSKETCH_RETURN_IF_ERROR(reader.GetU32(&u, "value_dim"));
  c.value_dim = static_cast<int>(u);
  KVSKETCH_RETURN_IF_ERROR(reader.GetF32(&c.scale, "scale"));
  KVSKETCH_RETURN_IF_ERROR(reader.GetString(&c.spec, kMaxSpecBytes, "spec"));
  KVSKETCH_RETURN_IF_ERROR(reader.GetI64(&c.max_tokens, "max_tokens"));
  uint32_t num_overrides = 0;
  KVSKETCH_RETURN_IF_ERROR(reader.GetU32(&num_overrides, "layer_specs count"));
  if (num_overrides > 1024 || num_overrides > reader.remaining() / 12) {
    return absl::DataLossError(absl::StrCat("session claims ", num_overrides,
                                            " layer_specs overrides"));
  }
  for (uint32_t i = 0; i < num_overrides; ++i) {
    uint32_t layer = 0;
    std::string spec;
    KVSKETCH_RETURN_IF_ERROR(reader.GetU32(&layer, "layer_specs key"));
    KVSKETCH_RETURN_IF_ERROR(
        reader.GetString(&spec, kMaxSpecBytes, "layer_specs value"));
    if (layer > 1024 ||
        !c.layer_specs.emplace(static_cast<int>(layer), std::move(spec))
             .second) {
      return absl::DataLossError(absl::StrCat(
          "session has a bad or repeated layer_specs key ", layer));
    }
  }
  // The stored config was normalised when saved: normalising again must
  // accept it and change nothing.
  SessionConfig normalized = c;
  if (absl::Status s = NormalizeSessionConfig(&normalized); !s.ok()) {
    return ToDataLoss(s, "session config: ");
  }
  if (normalized.num_query_heads != c.num_query_heads ||
      normalized.value_dim != c.value_dim || normalized.scale != c.scale ||
      normalized.spec != c.spec || normalized.layer_specs != c.layer_specs) {
    return absl::DataLossError("session config is not in normalised form");
  }
  const size_t num_heads =
      static_cast<size_t>(c.num_layers) * static_cast<size_t>(c.num_kv_heads);
  // Each layer spec needs >= 8 bytes and each head >= kMinHeadRecordBytes:
  // refuse before building heads a blob far too short to hold them.
  if (num_heads > reader.remaining() / kMinHeadRecordBytes) {
    return absl::DataLossError(
        absl::StrCat("session claims ", num_heads, " heads but only ",
                     reader.remaining(), " bytes remain"));
  }
  auto created = Create(std::move(c), max_state_bytes);
  if (!created.ok()) {
    if (absl::IsResourceExhausted(created.status())) return created.status();
    return ToDataLoss(created.status(), "session: ");
  }
  std::unique_ptr<SessionState> state = *std::move(created);
  for (int layer = 0; layer < state->config_.num_layers; ++layer) {
    std::string spec;
    KVSKETCH_RETURN_IF_ERROR(
        reader.GetString(&spec, kMaxSpecBytes, "layer spec"));
    if (spec != state->layer_specs_[layer]) {
      return absl::DataLossError(absl::StrCat(
          "layer ", layer, " spec \"", spec, "\" does not match the config (\"",
          state->layer_specs_[layer], "\")"));
    }
  }
  for (size_t i = 0; i < num_heads; ++i) {
    int64_t tokens = 0;
    std::string blob;
    KVSKETCH_RETURN_IF_ERROR(reader.GetI64(&tokens, "head num_tokens"));
    KVSKETCH_RETURN_IF_ERROR(
        reader.GetString(&blob, reader.remaining(), "head state"));
    ByteReader head_reader(blob);
    Approximator& head = *state->heads_[i];
    const std::string where =
        absl::StrCat("layer ", i / state->config_.num_kv_heads, " kv head ",
                     i % state->config_.num_kv_heads, ": ");
    if (absl::Status s = head.LoadState(head_reader); !s.ok()) {
      return ToDataLoss(s, where);
    }
    if (absl::Status s = head_reader.ExpectEnd("head state"); !s.ok()) {
      return Annotate(s, where);
    }
    if (head.num_tokens() != tokens) {
      return absl::DataLossError(absl::StrCat(where, "state holds ",
                                              head.num_tokens(),
                                              " tokens, record says ", tokens));
    }
    const size_t first = i - i % state->config_.num_kv_heads;
    if (tokens != state->heads_[first]->num_tokens()) {
      return absl::DataLossError(
          absl::StrCat(where, "token count ", tokens,
                       " differs from kv head 0 of the layer"));
    }
    const int64_t max_tokens = state->config_.max_tokens;
    if (max_tokens > 0 && tokens > max_tokens) {
      return absl::DataLossError(absl::StrCat(
          where, tokens, " tokens exceed max_tokens ", max_tokens));
    }
  }
  return state;
}

absl::Status SessionState::ApplyTokenLimit(int64_t limit) {
  if (limit <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("token limit (", limit, ") must be > 0"));
  }
  for (int layer = 0; layer < config_.num_layers; ++layer) {
    const int64_t tokens = num_tokens(layer);
    if (tokens > limit) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "layer ", layer, " holds ", tokens, " tokens, over the limit of ",
          limit, " tokens per layer"));
    }
  }
  if (config_.max_tokens == 0 || config_.max_tokens > limit) {
    config_.max_tokens = limit;
  }
  return absl::OkStatus();
}

}  // namespace kvsketch
