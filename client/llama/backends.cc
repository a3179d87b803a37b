#include "client/llama/backends.h"

#include <cmath>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/tensor_ref.h"
#include "core/eval/trace.h"
#include "core/status_macros.h"

namespace kvsketch::llama {
namespace {

// The sizes every backend expects from the forward pass.
absl::Status CheckAttendArgs(const LlamaConfig& m, int layer,
                             absl::Span<const float> q,
                             absl::Span<const float> k,
                             absl::Span<const float> v, absl::Span<float> out) {
  if (layer < 0 || layer >= m.n_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer: ", layer, " is outside [0, ", m.n_layers, ")"));
  }
  const size_t qn = static_cast<size_t>(m.dim);
  const size_t kvn = static_cast<size_t>(m.kv_dim());
  const struct {
    const char* name;
    size_t got, want;
  } sizes[] = {{"q", q.size(), qn},
               {"k", k.size(), kvn},
               {"v", v.size(), kvn},
               {"out", out.size(), qn}};
  for (const auto& s : sizes) {
    if (s.got != s.want) {
      return absl::InvalidArgumentError(
          absl::StrCat(s.name, ": ", s.got, " floats, expected ", s.want));
    }
  }
  return absl::OkStatus();
}

absl::Status PositionError(int layer, int pos, int64_t expected) {
  return absl::FailedPreconditionError(
      absl::StrCat("layer ", layer, ": position ", pos,
                   " out of order; the layer expects position ", expected));
}

}  // namespace

SessionConfig ModelSessionConfig(const LlamaConfig& model,
                                 absl::string_view spec) {
  SessionConfig c;
  c.num_layers = model.n_layers;
  c.num_kv_heads = model.n_kv_heads;
  c.num_query_heads = model.n_heads;
  c.head_dim = model.head_dim();
  c.value_dim = model.head_dim();
  c.scale = 1.0f / std::sqrt(static_cast<float>(model.head_dim()));
  c.spec = std::string(spec);
  c.max_tokens = model.seq_len;
  return c;
}

// --- LocalBackend ---

absl::StatusOr<std::unique_ptr<LocalBackend>> LocalBackend::Create(
    const LlamaConfig& model, absl::string_view spec) {
  absl::StatusOr<std::unique_ptr<SessionState>> state =
      SessionState::Create(ModelSessionConfig(model, spec));
  if (!state.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec '", spec, "': ", state.status().message()));
  }
  return std::unique_ptr<LocalBackend>(
      new LocalBackend(model, std::move(*state)));
}

absl::Status LocalBackend::Attend(int layer, int pos, absl::Span<const float> q,
                                  absl::Span<const float> k,
                                  absl::Span<const float> v,
                                  absl::Span<float> out) {
  KVSKETCH_RETURN_IF_ERROR(CheckAttendArgs(model_, layer, q, k, v, out));
  if (state_->num_tokens(layer) != pos) {
    return PositionError(layer, pos, state_->num_tokens(layer));
  }
  // T = M = 1: the causal step appends this position, then attends over
  // positions 0..pos (SessionState::Step, the server's Decode path too).
  return state_->Step(layer, 1, k, v, 1, q, out);
}

// --- RemoteBackend ---

RemoteBackend::RemoteBackend(client::AttentionClient* client,
                             const LlamaConfig& model, std::string session_id,
                             std::string spec)
    : client_(client),
      model_(model),
      session_id_(std::move(session_id)),
      spec_(std::move(spec)),
      next_pos_(model.n_layers, 0) {}

absl::StatusOr<std::unique_ptr<RemoteBackend>> RemoteBackend::Create(
    client::AttentionClient* client, const LlamaConfig& model,
    absl::string_view spec) {
  const SessionConfig s = ModelSessionConfig(model, spec);
  v1::SessionConfig config;
  config.set_num_layers(s.num_layers);
  config.set_num_kv_heads(s.num_kv_heads);
  config.set_num_query_heads(s.num_query_heads);
  config.set_head_dim(s.head_dim);
  config.set_value_dim(s.value_dim);
  config.set_scale(s.scale);
  config.set_spec(s.spec);
  config.set_max_tokens(s.max_tokens);
  KVSKETCH_ASSIGN_OR_RETURN(v1::SessionInfo info,
                            client->CreateSession(config));
  const std::string spec_out = info.canonical_layer_specs_size() > 0
                                   ? info.canonical_layer_specs(0)
                                   : info.config().spec();
  auto backend = std::unique_ptr<RemoteBackend>(
      new RemoteBackend(client, model, info.session_id(), spec_out));
  backend->stream_ = client->OpenDecodeStream(info.session_id());
  return backend;
}

RemoteBackend::~RemoteBackend() { Close().IgnoreError(); }

absl::Status RemoteBackend::Attend(int layer, int pos,
                                   absl::Span<const float> q,
                                   absl::Span<const float> k,
                                   absl::Span<const float> v,
                                   absl::Span<float> out) {
  if (closed_) return absl::FailedPreconditionError("backend is closed");
  if (!broken_.ok()) return broken_;
  KVSKETCH_RETURN_IF_ERROR(CheckAttendArgs(model_, layer, q, k, v, out));
  if (next_pos_[layer] != pos) {
    return PositionError(layer, pos, next_pos_[layer]);
  }
  const int64_t hq = model_.n_heads, hkv = model_.n_kv_heads;
  const int64_t hd = model_.head_dim();
  v1::DecodeRequest request;
  request.set_step_id(++step_id_);
  // F32 on the wire: the server sees the same floats as a local backend,
  // which is what lets remote `exact` match local `exact` bit for bit.
  KVSKETCH_RETURN_IF_ERROR(
      client::AddDecodeEntry(session_id_, layer, {{hkv, hd}, k}, {{hkv, hd}, v},
                             {{hq, hd}, q}, v1::F32, &request));
  if (absl::Status s = stream_->Send(request); !s.ok()) {
    // The stream's own status says why; Receive returns it once ended.
    absl::StatusOr<v1::DecodeResponse> r = stream_->Receive();
    broken_ = r.ok() ? s : r.status();
    return broken_;
  }
  absl::StatusOr<v1::DecodeResponse> response = stream_->Receive();
  if (!response.ok()) {
    broken_ = response.status();
    return broken_;
  }
  if (response->step_id() != step_id_ || response->results_size() != 1) {
    broken_ = absl::InternalError(
        absl::StrCat("decode stream: step ", response->step_id(), " with ",
                     response->results_size(), " results answered step ",
                     step_id_, " with 1 entry"));
    return broken_;
  }
  const v1::DecodeResult& result = response->results(0);
  if (result.code() != 0) {
    // A failed entry changed nothing on the server; the stream stays usable.
    return client::ResultOutput(result, absl::StrCat("layer ", layer)).status();
  }
  // The entry was applied: the session holds this position now, whatever
  // we find wrong with the answer below.
  ++next_pos_[layer];
  absl::StatusOr<DecodedTensor> decoded =
      client::ResultOutput(result, absl::StrCat("layer ", layer));
  if (!decoded.ok()) {
    broken_ = decoded.status();
    return broken_;
  }
  const DecodedTensor& output = *decoded;
  if (result.num_tokens() != pos + 1) {
    broken_ = absl::InternalError(absl::StrCat(
        "layer ", layer, ": server holds ", result.num_tokens(),
        " tokens after position ", pos, " (was the session used elsewhere?)"));
    return broken_;
  }
  if (output.data.size() != out.size()) {
    broken_ = absl::InternalError(
        absl::StrCat("layer ", layer, ": server returned ", output.data.size(),
                     " output floats, expected ", out.size()));
    return broken_;
  }
  std::copy(output.data.begin(), output.data.end(), out.begin());
  return absl::OkStatus();
}

absl::StatusOr<int64_t> RemoteBackend::StateBytes() {
  KVSKETCH_ASSIGN_OR_RETURN(v1::SessionInfo info,
                            client_->GetSession(session_id_));
  return info.state_bytes();
}

absl::Status RemoteBackend::Close() {
  if (closed_) return absl::OkStatus();
  closed_ = true;
  absl::Status status;
  if (stream_ != nullptr) {
    if (broken_.ok()) {
      // Every response was read (Attend is synchronous), so Finish returns.
      status = stream_->Finish();
    } else {
      stream_->Cancel();
      stream_->Finish().IgnoreError();
    }
    stream_.reset();
  }
  absl::Status deleted = client_->DeleteSession(session_id_);
  if (status.ok()) status = deleted;
  return status;
}

// --- RecordingBackend ---

RecordingBackend::RecordingBackend(const LlamaConfig& model,
                                   AttentionBackend* inner)
    : model_(model),
      inner_(inner),
      q_(model.n_layers),
      k_(model.n_layers),
      v_(model.n_layers) {}

absl::Status RecordingBackend::Attend(int layer, int pos,
                                      absl::Span<const float> q,
                                      absl::Span<const float> k,
                                      absl::Span<const float> v,
                                      absl::Span<float> out) {
  KVSKETCH_RETURN_IF_ERROR(CheckAttendArgs(model_, layer, q, k, v, out));
  KVSKETCH_RETURN_IF_ERROR(inner_->Attend(layer, pos, q, k, v, out));
  q_[layer].insert(q_[layer].end(), q.begin(), q.end());
  k_[layer].insert(k_[layer].end(), k.begin(), k.end());
  v_[layer].insert(v_[layer].end(), v.begin(), v.end());
  return absl::OkStatus();
}

int64_t RecordingBackend::positions() const {
  return static_cast<int64_t>(k_[0].size()) / model_.kv_dim();
}

absl::StatusOr<std::vector<float>> RecordingBackend::Transpose(
    const std::vector<std::vector<float>>& rows, int heads) const {
  const int64_t hd = model_.head_dim();
  const int64_t per_pos = heads * hd;
  const int64_t t = static_cast<int64_t>(rows[0].size()) / per_pos;
  std::vector<float> out;
  out.reserve(static_cast<size_t>(model_.n_layers * t * per_pos));
  for (int l = 0; l < model_.n_layers; ++l) {
    if (static_cast<int64_t>(rows[l].size()) != t * per_pos) {
      return absl::FailedPreconditionError(absl::StrCat(
          "recording: layer ", l, " holds ", rows[l].size() / per_pos,
          " positions, layer 0 holds ", t));
    }
    for (int h = 0; h < heads; ++h) {
      for (int64_t p = 0; p < t; ++p) {
        const float* row = rows[l].data() + p * per_pos + h * hd;
        out.insert(out.end(), row, row + hd);
      }
    }
  }
  return out;
}

absl::StatusOr<std::vector<float>> RecordingBackend::Queries() const {
  return Transpose(q_, model_.n_heads);
}
absl::StatusOr<std::vector<float>> RecordingBackend::Keys() const {
  return Transpose(k_, model_.n_kv_heads);
}
absl::StatusOr<std::vector<float>> RecordingBackend::Values() const {
  return Transpose(v_, model_.n_kv_heads);
}

absl::Status RecordingBackend::WriteTraceDir(const std::string& dir) const {
  const int64_t t = positions();
  if (t == 0) {
    return absl::FailedPreconditionError("recording: no position recorded");
  }
  eval::Trace trace;
  trace.name = absl::StrCat("dir:", dir);
  trace.layers = model_.n_layers;
  trace.q_heads = model_.n_heads;
  trace.kv_heads = model_.n_kv_heads;
  trace.n = t;
  trace.d = trace.dv = model_.head_dim();
  trace.scale = 1.0f / std::sqrt(static_cast<float>(trace.d));
  trace.query_pos.resize(t);
  for (int64_t i = 0; i < t; ++i) trace.query_pos[i] = i;
  KVSKETCH_ASSIGN_OR_RETURN(trace.q, Queries());
  KVSKETCH_ASSIGN_OR_RETURN(trace.k, Keys());
  KVSKETCH_ASSIGN_OR_RETURN(trace.v, Values());
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat(dir, ": cannot create: ", ec.message()));
  }
  return eval::SaveTraceDir(trace, dir);
}

}  // namespace kvsketch::llama
