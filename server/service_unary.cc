// File: server/service_unary.cc
//
// Unary RPCs. Each handler returns the call's DefaultReactor at once and does
// its work on the pool (session locks may be contended; attention is O(n d)
// per query head for exact state), finishing the reactor from the pool thread.
#include <exception>
#include <new>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/status_macros.h"
#include "server/attention_service.h"
#include "server/grpc_status.h"
#include "wire/tensor_codec.h"

namespace kvsketch::server {
namespace {

constexpr int kDefaultPageSize = 100;
constexpr int kMaxPageSize = 1000;

SessionConfig FromProto(const v1::SessionConfig& c) {
  SessionConfig config;
  config.num_layers = c.num_layers();
  config.num_kv_heads = c.num_kv_heads();
  config.num_query_heads = c.num_query_heads();
  config.head_dim = c.head_dim();
  config.value_dim = c.value_dim();
  config.scale = c.scale();
  config.spec = c.spec();
  for (const auto& [layer, spec] : c.layer_specs()) {
    config.layer_specs[layer] = spec;
  }
  config.max_tokens = c.max_tokens();
  return config;
}

}  // namespace

absl::Status CheckCallAlive(grpc::CallbackServerContext* ctx) {
  if (ctx->deadline() < std::chrono::system_clock::now()) {
    return absl::DeadlineExceededError("deadline exceeded before the work ran");
  }
  if (ctx->IsCancelled()) return absl::CancelledError("call cancelled");
  return absl::OkStatus();
}

absl::Status CallGuarded(const std::function<absl::Status()>& fn) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("out of memory");
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("internal error: ", e.what()));
  }
}

AttentionService::AttentionService(const ServiceOptions& options,
                                   SessionManager* sessions, WorkerPool* pool,
                                   Metrics* metrics)
    : options_(options), sessions_(sessions), pool_(pool), metrics_(metrics) {}

absl::Status AttentionService::BusyError() const {
  return absl::ResourceExhaustedError(
      absl::StrCat("server busy: worker queue full (", pool_->queued(),
                   " tasks waiting); retry later"));
}

void AttentionService::RecordRpc(absl::string_view method,
                                 const absl::Status& status,
                                 absl::Time start) const {
  metrics_->RpcFinished(method, static_cast<int>(status.code()),
                        absl::ToDoubleSeconds(absl::Now() - start));
}

absl::Status AttentionService::RunLayerOp(
    Session& session, const LayerOp& op, v1::Tensor* output,
    int64_t* num_tokens,
    google::protobuf::RepeatedPtrField<v1::QueryDiagnostic>* diagnostics)
    const {
  absl::Status status;
  TryRunLayerOp(session, op, /*work_budget=*/nullptr, output, num_tokens,
                &status, diagnostics);
  return status;
}

absl::StatusOr<std::shared_ptr<Session>> AttentionService::FindRequestSession(
    const grpc::CallbackServerContext& ctx, absl::string_view request_id,
    const std::string& tenant) const {
  KVSKETCH_ASSIGN_OR_RETURN(std::string id,
                            ResolveSessionId(request_id, MetadataSessionId(ctx),
                                             "session_id", /*required=*/true));
  return sessions_->Find(id, tenant);
}

bool AttentionService::TryRunLayerOp(
    Session& session, const LayerOp& op, int64_t* work_budget,
    v1::Tensor* output, int64_t* num_tokens, absl::Status* status,
    google::protobuf::RepeatedPtrField<v1::QueryDiagnostic>* diagnostics,
    uint64_t* pending_seq) const {
  const SessionConfig& c = session.config();
  std::vector<QueryDiagnostic> diag;
  std::vector<QueryDiagnostic>* want =
      op.want_diagnostics && diagnostics != nullptr ? &diag : nullptr;
  std::vector<float> out(static_cast<size_t>(op.num_queries) *
                         c.num_query_heads * c.value_dim);
  const absl::Time now = absl::Now();
  if (work_budget == nullptr) {
    *status = session.Step(op.layer, op.num_new_tokens, op.keys, op.values,
                           op.num_queries, op.queries, absl::MakeSpan(out),
                           num_tokens, want, pending_seq);
  } else if (!session.TryStep(work_budget, op.layer, op.num_new_tokens, op.keys,
                              op.values, op.num_queries, op.queries,
                              absl::MakeSpan(out), num_tokens, status, want,
                              pending_seq)) {
    return false;
  }
  session.Touch(now);
  if (status->ok() && op.num_queries > 0 && output != nullptr) {
    const int64_t shape[] = {c.num_query_heads, op.num_queries, c.value_dim};
    EncodeTensor(shape, out, v1::F32, output);
  }
  if (status->ok() && want != nullptr) {
    for (const QueryDiagnostic& q : diag) {
      v1::QueryDiagnostic* d = diagnostics->Add();
      d->set_dropped_mass(q.dropped_mass);
      d->set_error_bound(q.error_bound);
      d->set_keys_selected(q.keys_selected);
    }
  }
  return true;
}

grpc::ServerUnaryReactor* AttentionService::RunUnary(
    grpc::CallbackServerContext* ctx, absl::string_view method,
    std::function<absl::Status(const std::string& tenant)> fn) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> tenant = Authenticate(*ctx);
  if (!tenant.ok()) {
    RecordRpc(method, tenant.status(), start);
    reactor->Finish(ToGrpcStatus(tenant.status()));
    return reactor;
  }
  const bool queued =
      pool_->TrySubmit([this, ctx, reactor, method, start,
                        tenant = *std::move(tenant), fn = std::move(fn)] {
        absl::Status status = CheckCallAlive(ctx);
        if (status.ok()) status = CallGuarded([&] { return fn(tenant); });
        RecordRpc(method, status, start);
        reactor->Finish(ToGrpcStatus(status));
      });
  if (!queued) {
    const absl::Status busy = BusyError();
    RecordRpc(method, busy, start);
    reactor->Finish(ToGrpcStatus(busy));
  }
  return reactor;
}

grpc::ServerUnaryReactor* AttentionService::CreateSession(
    grpc::CallbackServerContext* ctx, const v1::CreateSessionRequest* req,
    v1::CreateSessionResponse* resp) {
  return RunUnary(
      ctx, "CreateSession", [this, ctx, req, resp](const std::string& tenant) {
        KVSKETCH_ASSIGN_OR_RETURN(
            std::string id,
            ResolveSessionId(req->session_id(), MetadataSessionId(*ctx),
                             "session_id",
                             /*required=*/false));
        KVSKETCH_ASSIGN_OR_RETURN(
            std::shared_ptr<Session> session,
            sessions_->Create(id, FromProto(req->config()), tenant));
        return session->FillInfo(resp->mutable_session());
      });
}

grpc::ServerUnaryReactor* AttentionService::GetSession(
    grpc::CallbackServerContext* ctx, const v1::GetSessionRequest* req,
    v1::GetSessionResponse* resp) {
  return RunUnary(ctx, "GetSession",
                  [this, ctx, req, resp](const std::string& tenant) {
                    KVSKETCH_ASSIGN_OR_RETURN(
                        std::shared_ptr<Session> session,
                        FindRequestSession(*ctx, req->session_id(), tenant));
                    return session->FillInfo(resp->mutable_session());
                  });
}

grpc::ServerUnaryReactor* AttentionService::ListSessions(
    grpc::CallbackServerContext* ctx, const v1::ListSessionsRequest* req,
    v1::ListSessionsResponse* resp) {
  return RunUnary(
      ctx, "ListSessions", [this, req, resp](const std::string& tenant) {
        if (req->page_size() < 0) {
          return absl::InvalidArgumentError(
              absl::StrCat("page_size: ", req->page_size(), " is negative"));
        }
        const int limit = req->page_size() == 0
                              ? kDefaultPageSize
                              : std::min(req->page_size(), kMaxPageSize);
        // The page token is the last id of the previous page: ids are unique
        // and listed in order, so "ids after it" resumes exactly, even if
        // sessions come and go between pages.
        if (!req->page_token().empty()) {
          KVSKETCH_RETURN_IF_ERROR(SessionManager::ValidateSessionId(
              req->page_token(), "page_token"));
        }
        bool more = false;
        std::vector<std::shared_ptr<Session>> page =
            sessions_->List(req->page_token(), limit, &more, tenant);
        for (const auto& session : page) {
          v1::SessionInfo info;
          // A session deleted since List copied it is skipped.
          if (session->FillInfo(&info).ok()) {
            *resp->add_sessions() = std::move(info);
          }
        }
        if (more && !page.empty()) resp->set_next_page_token(page.back()->id());
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AttentionService::DeleteSession(
    grpc::CallbackServerContext* ctx, const v1::DeleteSessionRequest* req,
    v1::DeleteSessionResponse* /*resp*/) {
  return RunUnary(ctx, "DeleteSession",
                  [this, ctx, req](const std::string& tenant) {
                    KVSKETCH_ASSIGN_OR_RETURN(
                        std::string id,
                        ResolveSessionId(req->session_id(),
                                         MetadataSessionId(*ctx), "session_id",
                                         /*required=*/true));
                    return sessions_->Delete(id, tenant);
                  });
}

grpc::ServerUnaryReactor* AttentionService::Attend(
    grpc::CallbackServerContext* ctx, const v1::AttendRequest* req,
    v1::AttendResponse* resp) {
  return RunUnary(
      ctx, "Attend", [this, ctx, req, resp](const std::string& tenant) {
        KVSKETCH_ASSIGN_OR_RETURN(
            std::shared_ptr<Session> session,
            FindRequestSession(*ctx, req->session_id(), tenant));
        KVSKETCH_ASSIGN_OR_RETURN(
            LayerOp op,
            DecodeLayerOp(session->config(), "", req->layer(),
                          req->has_keys() ? &req->keys() : nullptr,
                          req->has_values() ? &req->values() : nullptr,
                          req->has_queries() ? &req->queries() : nullptr,
                          QueryRule::kRequired));
        op.want_diagnostics = req->want_diagnostics();
        KVSKETCH_RETURN_IF_ERROR(CheckCallAlive(ctx));
        int64_t num_tokens = 0;
        KVSKETCH_RETURN_IF_ERROR(RunLayerOp(*session, op,
                                            resp->mutable_output(), &num_tokens,
                                            resp->mutable_diagnostics()));
        resp->set_num_tokens(num_tokens);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AttentionService::Prefill(
    grpc::CallbackServerContext* ctx, const v1::PrefillRequest* req,
    v1::PrefillResponse* resp) {
  return RunUnary(
      ctx, "Prefill", [this, ctx, req, resp](const std::string& tenant) {
        KVSKETCH_ASSIGN_OR_RETURN(
            std::shared_ptr<Session> session,
            FindRequestSession(*ctx, req->session_id(), tenant));
        KVSKETCH_ASSIGN_OR_RETURN(
            LayerOp op,
            DecodeLayerOp(session->config(), "", req->layer(),
                          req->has_keys() ? &req->keys() : nullptr,
                          req->has_values() ? &req->values() : nullptr,
                          req->has_queries() ? &req->queries() : nullptr,
                          QueryRule::kPrefill));
        KVSKETCH_RETURN_IF_ERROR(CheckCallAlive(ctx));
        int64_t num_tokens = 0;
        KVSKETCH_RETURN_IF_ERROR(
            RunLayerOp(*session, op, resp->mutable_output(), &num_tokens));
        resp->set_num_tokens(num_tokens);
        return absl::OkStatus();
      });
}

}  // namespace kvsketch::server
