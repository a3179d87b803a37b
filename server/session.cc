// File: server/session.cc
#include "server/session.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/io/byte_io.h"
#include "core/status_macros.h"

namespace kvsketch::server {
namespace {

std::vector<std::string> LayerKinds(const SessionState& state) {
  std::vector<std::string> kinds;
  kinds.reserve(state.config().num_layers);
  for (int l = 0; l < state.config().num_layers; ++l) {
    kinds.push_back(SpecKind(state.layer_spec(l)));
  }
  return kinds;
}

}  // namespace

std::string SpecKind(const std::string& spec) {
  return spec.substr(0, spec.find(':'));
}

Session::Session(std::string id, std::unique_ptr<SessionState> state,
                 absl::Time created, MemoryBudget* budget, Metrics* metrics,
                 std::string tenant,
                 std::unique_ptr<durability::SessionLog> log,
                 int64_t checkpoint_log_bytes)
    : id_(std::move(id)),
      tenant_(std::move(tenant)),
      config_(state->config()),
      kinds_(LayerKinds(*state)),
      created_(created),
      budget_(budget),
      metrics_(metrics),
      last_used_micros_(absl::ToUnixMicros(created)),
      has_log_(log != nullptr),
      checkpoint_log_bytes_(checkpoint_log_bytes),
      state_(std::move(state)) {
  for (const std::string& kind : kinds_)
    log_queries_.push_back(kind != "exact");
  absl::MutexLock l(&mu_);
  log_ = std::move(log);
  charged_bytes_.assign(config_.num_layers, 0);
  reported_.assign(config_.num_layers, SelfMeasurements{});
  for (int layer = 0; layer < config_.num_layers; ++layer) Recharge(layer);
}

Session::~Session() { Close(); }

absl::Time Session::last_used() const {
  return absl::FromUnixMicros(
      last_used_micros_.load(std::memory_order_relaxed));
}

void Session::Touch(absl::Time now) {
  last_used_micros_.store(absl::ToUnixMicros(now), std::memory_order_relaxed);
}

absl::Status Session::CheckOpen() const {
  if (closed_) {
    return absl::NotFoundError(
        absl::StrCat("session_id: session '", id_, "' was deleted"));
  }
  return poison_;
}

absl::Status Session::Poison(const absl::Status& log_error) {
  if (poison_.ok()) {
    metrics_->WalFailure();
    poison_ = absl::InternalError(absl::StrCat(
        "session '", id_, "': write-ahead log failed (", log_error.message(),
        "); the last steps are not acknowledged and the session refuses "
        "every call until the server restarts and recovers it from its log"));
  }
  return poison_;
}

absl::Status Session::WaitDurable(uint64_t seq) {
  if (seq == 0) return absl::OkStatus();
  std::shared_ptr<durability::SessionLog> log;
  {
    absl::ReaderMutexLock l(&mu_);
    log = log_;
  }
  // Closed meanwhile (deleted, evicted): the log was closed or deleted
  // after our record, which Close/Delete sync first.
  if (log == nullptr) return absl::OkStatus();
  if (absl::Status s = log->WaitDurable(seq); !s.ok()) {
    absl::MutexLock l(&mu_);
    return Poison(s);
  }
  return CheckpointIf(/*only_if_large=*/true);
}

absl::Status Session::CheckpointIf(bool only_if_large) {
  std::shared_ptr<durability::SessionLog> log;
  durability::SessionLog::PendingCheckpoint ticket;
  {
    absl::MutexLock l(&mu_);
    if (closed_ || !poison_.ok() || log_ == nullptr || checkpointing_) {
      return absl::OkStatus();
    }
    if (only_if_large && (checkpoint_log_bytes_ <= 0 ||
                          log_->live_log_bytes() <= checkpoint_log_bytes_)) {
      return absl::OkStatus();
    }
    // Phase 1 under the lock: no step may run between Save and the rotation.
    absl::StatusOr<durability::SessionLog::PendingCheckpoint> t =
        log_->PrepareCheckpoint(*state_);
    if (!t.ok()) return Poison(t.status());
    ticket = *std::move(t);
    checkpointing_ = true;
    log = log_;
  }
  // Phase 2 without it: steps go on into the new segment.
  absl::Status s = log->CommitCheckpoint(std::move(ticket));
  absl::MutexLock l(&mu_);
  checkpointing_ = false;
  if (!s.ok()) return Poison(s);
  return absl::OkStatus();
}

void Session::Recharge(int layer) {
  const int64_t now = state_->LayerMemoryBytes(layer);
  const int64_t delta = now - charged_bytes_[layer];
  if (delta == 0) return;
  charged_bytes_[layer] = now;
  budget_->Adjust(delta);
  metrics_->AddStateBytes(kinds_[layer], delta);
}

void Session::ReportMeasurements(int layer) {
  const SelfMeasurements now = state_->LayerMeasurements(layer);
  SelfMeasurements& seen = reported_[layer];
  const SelfMeasurements delta{
      .recall_checks = now.recall_checks - seen.recall_checks,
      .recall_sum = now.recall_sum - seen.recall_sum,
      .fit_checks = now.fit_checks - seen.fit_checks,
      .fit_error_sum = now.fit_error_sum - seen.fit_error_sum,
      .fit_fallbacks = now.fit_fallbacks - seen.fit_fallbacks};
  if (delta.recall_checks > 0 || delta.fit_checks > 0 ||
      delta.fit_fallbacks > 0) {
    metrics_->SelfMeasured(kinds_[layer], delta);
    seen = now;
  }
}

int64_t Session::GrowthEstimate(int layer, int64_t num_new_tokens) const {
  if (num_new_tokens < 1 || num_new_tokens > (int64_t{1} << 32)) return 0;
  if (layer < -1 || layer >= config_.num_layers) return 0;
  int64_t total = 0;
  for (int l = 0; l < config_.num_layers; ++l) {
    if (layer == -1 || l == layer) {
      total += state_->LayerAppendGrowthBytes(l, num_new_tokens);
    }
  }
  return total;
}

absl::Status Session::Step(int layer, int64_t num_new_tokens,
                           absl::Span<const float> keys,
                           absl::Span<const float> values, int64_t num_queries,
                           absl::Span<const float> queries,
                           absl::Span<float> out, int64_t* tokens_after,
                           std::vector<QueryDiagnostic>* diagnostics,
                           uint64_t* pending_seq) {
  uint64_t seq = 0;
  {
    absl::MutexLock l(&mu_);
    KVSKETCH_RETURN_IF_ERROR(StepLocked(layer, num_new_tokens, keys, values,
                                        num_queries, queries, out, tokens_after,
                                        diagnostics, &seq));
  }
  if (pending_seq != nullptr) {
    *pending_seq = seq;
    return absl::OkStatus();
  }
  return WaitDurable(seq);
}

bool Session::TryStep(int64_t* work_budget, int layer, int64_t num_new_tokens,
                      absl::Span<const float> keys,
                      absl::Span<const float> values, int64_t num_queries,
                      absl::Span<const float> queries, absl::Span<float> out,
                      int64_t* tokens_after, absl::Status* status,
                      std::vector<QueryDiagnostic>* diagnostics,
                      uint64_t* pending_seq) {
  // Waiting for the log would block the caller (a gRPC reaction).
  if (has_log_ && pending_seq == nullptr) return false;
  if (!mu_.TryLock()) return false;
  // A closed session or a bad layer is answered here: StepLocked reports it
  // without touching anything, and cheaply.
  if (!closed_ && layer >= 0 && layer < config_.num_layers) {
    const int64_t tokens = state_->num_tokens(layer) + num_new_tokens;
    const double work = static_cast<double>(tokens) *
                        static_cast<double>(num_queries + num_new_tokens) *
                        config_.num_query_heads *
                        (config_.head_dim + config_.value_dim);
    if (work > static_cast<double>(*work_budget)) {
      mu_.Unlock();
      return false;
    }
    *work_budget -= static_cast<int64_t>(work);
  }
  uint64_t seq = 0;
  *status = StepLocked(layer, num_new_tokens, keys, values, num_queries,
                       queries, out, tokens_after, diagnostics, &seq);
  if (pending_seq != nullptr) *pending_seq = seq;
  mu_.Unlock();
  return true;
}

absl::Status Session::StepLocked(int layer, int64_t num_new_tokens,
                                 absl::Span<const float> keys,
                                 absl::Span<const float> values,
                                 int64_t num_queries,
                                 absl::Span<const float> queries,
                                 absl::Span<float> out, int64_t* tokens_after,
                                 std::vector<QueryDiagnostic>* diagnostics,
                                 uint64_t* seq) {
  *seq = 0;
  KVSKETCH_RETURN_IF_ERROR(CheckOpen());
  if (diagnostics != nullptr) {
    diagnostics->clear();
    // Checked first: a refused request must change nothing.
    if (num_new_tokens > 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "want_diagnostics: supported for steps appending at most one token "
          "(this one appends ",
          num_new_tokens, ")"));
    }
    if (layer >= 0 && layer < config_.num_layers &&
        !state_->SupportsDiagnostics(layer)) {
      return absl::FailedPreconditionError(
          absl::StrCat("want_diagnostics: diagnostics not supported by ",
                       state_->layer_spec(layer)));
    }
  }
  const int64_t estimate = GrowthEstimate(layer, num_new_tokens);
  if (estimate > 0) {
    KVSKETCH_RETURN_IF_ERROR(budget_->TryReserve(estimate, "append"));
  }
  const absl::Time start = absl::Now();
  absl::Status status = state_->Step(layer, num_new_tokens, keys, values,
                                     num_queries, queries, out);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  budget_->Adjust(-estimate);
  Recharge(layer);
  if (!status.ok()) return status;
  if (log_ != nullptr) {
    // Logged after applying, under the lock: log order is apply order, and
    // a step the state refused is never logged. O(T + M) copy into the
    // log's batch; no I/O here.
    const bool with_queries = log_queries_[layer] && num_queries > 0;
    if (num_new_tokens > 0 || with_queries) {
      absl::StatusOr<uint64_t> logged = log_->LogStep(
          layer, num_new_tokens, keys, values, with_queries ? num_queries : 0,
          with_queries ? queries : absl::Span<const float>());
      if (!logged.ok()) return Poison(logged.status());
      *seq = *logged;
    }
  }
  ReportMeasurements(layer);
  metrics_->AttendCompute(kinds_[layer], seconds);
  metrics_->TokensAppended(kinds_[layer], num_new_tokens);
  metrics_->QueriesAnswered(kinds_[layer],
                            num_queries * config_.num_query_heads);
  if (tokens_after != nullptr) *tokens_after = state_->num_tokens(layer);
  if (diagnostics != nullptr && num_queries > 0) {
    // With T <= 1 the queries saw the whole layer, which is what this
    // re-scan reads: the diagnostics describe the answer just computed.
    // It can fail only on arguments Step has already accepted.
    KVSKETCH_RETURN_IF_ERROR(
        state_->QueryDiagnostics(layer, num_queries, queries, diagnostics));
    for (const QueryDiagnostic& q : *diagnostics) {
      metrics_->DroppedMass(kinds_[layer], q.dropped_mass);
    }
  }
  return absl::OkStatus();
}

absl::Status Session::AppendAllLayers(int64_t num_new_tokens,
                                      absl::Span<const float> keys,
                                      absl::Span<const float> values,
                                      uint64_t* pending_seq) {
  uint64_t seq = 0;
  {
    absl::MutexLock l(&mu_);
    KVSKETCH_RETURN_IF_ERROR(
        AppendAllLayersLocked(num_new_tokens, keys, values, &seq));
  }
  if (pending_seq != nullptr) {
    *pending_seq = seq;
    return absl::OkStatus();
  }
  return WaitDurable(seq);
}

absl::Status Session::AppendAllLayersLocked(int64_t num_new_tokens,
                                            absl::Span<const float> keys,
                                            absl::Span<const float> values,
                                            uint64_t* seq) {
  KVSKETCH_RETURN_IF_ERROR(CheckOpen());
  const int layers = config_.num_layers;
  const size_t key_block = static_cast<size_t>(num_new_tokens) *
                           config_.num_kv_heads * config_.head_dim;
  const size_t value_block = static_cast<size_t>(num_new_tokens) *
                             config_.num_kv_heads * config_.value_dim;
  if (keys.size() != key_block * layers ||
      values.size() != value_block * layers) {
    return absl::InvalidArgumentError(
        "keys/values: size does not match num_layers x num_kv_heads x T x dim");
  }
  // All-or-nothing: the only per-layer failures SessionState::Append can
  // still report after the service's shape checks are the token limit and a
  // value beyond a layer's storage range; both are checked for every layer
  // before any layer changes.
  for (int layer = 0; layer < layers; ++layer) {
    KVSKETCH_RETURN_IF_ERROR(state_->CheckStorable(
        "append", layer, keys.subspan(key_block * layer, key_block),
        values.subspan(value_block * layer, value_block)));
  }
  if (config_.max_tokens > 0) {
    for (int layer = 0; layer < layers; ++layer) {
      if (state_->num_tokens(layer) + num_new_tokens > config_.max_tokens) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "keys: layer ", layer, " has ", state_->num_tokens(layer),
            " tokens; appending ", num_new_tokens, " would exceed max_tokens ",
            config_.max_tokens));
      }
    }
  }
  const int64_t estimate = GrowthEstimate(-1, num_new_tokens);
  KVSKETCH_RETURN_IF_ERROR(budget_->TryReserve(estimate, "append"));
  absl::Status status;
  int applied = 0;
  for (int layer = 0; layer < layers && status.ok(); ++layer) {
    status = state_->Append(layer, num_new_tokens,
                            keys.subspan(key_block * layer, key_block),
                            values.subspan(value_block * layer, value_block));
    if (status.ok()) {
      metrics_->TokensAppended(kinds_[layer], num_new_tokens);
      ++applied;
    }
  }
  budget_->Adjust(-estimate);
  for (int layer = 0; layer < layers; ++layer) Recharge(layer);
  if (log_ == nullptr) return status;
  if (!status.ok()) {
    // Some layers took the tokens, the log has none of them: the state no
    // longer matches what recovery would rebuild.
    if (applied > 0) Poison(status).IgnoreError();
    return status;
  }
  absl::StatusOr<uint64_t> logged =
      log_->LogAppendAllLayers(num_new_tokens, keys, values);
  if (!logged.ok()) return Poison(logged.status());
  *seq = *logged;
  return absl::OkStatus();
}

std::vector<int64_t> Session::tokens_per_layer() const {
  absl::ReaderMutexLock l(&mu_);
  if (closed_) return {};
  return state_->tokens_per_layer();
}

int64_t Session::state_bytes() const {
  absl::ReaderMutexLock l(&mu_);
  if (closed_) return 0;
  return state_->MemoryBytes();
}

absl::Status Session::FillInfo(v1::SessionInfo* info) const {
  absl::ReaderMutexLock l(&mu_);
  KVSKETCH_RETURN_IF_ERROR(CheckOpen());
  info->set_session_id(id_);
  v1::SessionConfig* c = info->mutable_config();
  c->set_num_layers(config_.num_layers);
  c->set_num_kv_heads(config_.num_kv_heads);
  c->set_num_query_heads(config_.num_query_heads);
  c->set_head_dim(config_.head_dim);
  c->set_value_dim(config_.value_dim);
  c->set_scale(config_.scale);
  c->set_spec(config_.spec);
  for (const auto& [layer, spec] : config_.layer_specs) {
    (*c->mutable_layer_specs())[layer] = spec;
  }
  c->set_max_tokens(config_.max_tokens);
  for (int64_t n : state_->tokens_per_layer()) info->add_tokens_per_layer(n);
  info->set_state_bytes(state_->MemoryBytes());
  for (int layer = 0; layer < config_.num_layers; ++layer) {
    info->add_canonical_layer_specs(state_->layer_spec(layer));
  }
  info->set_created_unix_micros(absl::ToUnixMicros(created_));
  info->set_last_used_unix_micros(
      last_used_micros_.load(std::memory_order_relaxed));
  return absl::OkStatus();
}

absl::StatusOr<std::string> Session::SavePayload() const {
  absl::ReaderMutexLock l(&mu_);
  KVSKETCH_RETURN_IF_ERROR(CheckOpen());
  ByteWriter writer;
  writer.PutString(id_);
  KVSKETCH_RETURN_IF_ERROR(state_->Save(writer));
  return writer.Release();
}

bool Session::Close(bool delete_log, absl::Status* log_status) {
  absl::MutexLock l(&mu_);
  if (closed_) return false;
  // A checkpoint commit runs without mu_; closing or deleting the log
  // under it would race its file work. Commits are short (one file write
  // + renames), and no new one starts once closed_ is set.
  mu_.Await(absl::Condition(
      +[](bool* checkpointing) { return !*checkpointing; }, &checkpointing_));
  if (closed_) return false;
  closed_ = true;
  if (log_ != nullptr) {
    // Delete logs a durable delete record first, so a crash after it does
    // not bring the session back; Close syncs what was logged.
    absl::Status s = delete_log ? log_->Delete() : log_->Close();
    if (log_status != nullptr) *log_status = s;
    log_.reset();
  }
  for (int layer = 0; layer < config_.num_layers; ++layer) {
    budget_->Adjust(-charged_bytes_[layer]);
    metrics_->AddStateBytes(kinds_[layer], -charged_bytes_[layer]);
    charged_bytes_[layer] = 0;
  }
  state_.reset();  // free the memory now, not when the last reference goes
  return true;
}

}  // namespace kvsketch::server
