// File: server/attention_service.h
//
// The kvsketch.v1.Attention service on gRPC's callback API. Reactions never
// wait on a session lock and never run unbounded work: each RPC's work runs
// on the WorkerPool and the reactor is finished from there -- except small
// Decode entries (at most decode_inline_work_limit multiply-adds, session
// lock taken with TryLock), which run inline (service_decode.cc). Split by RPC
// shape:
//   service_unary.cc    Create/Get/List/Delete, Attend, Prefill
//   service_decode.cc   Decode (bidi, ordered, read-ahead pipeline)
//   service_streams.cc  Append (client stream), Export/Import (snapshots)
//
// Authentication (server/auth.h) happens once per call, first thing in the
// handler, on the gRPC thread (a bounded comparison, no I/O): a call without
// a valid bearer token is finished UNAUTHENTICATED before any message is
// read or any work is queued; an accepted call carries its tenant into
// every SessionManager lookup.
#ifndef KVSKETCH_SERVER_ATTENTION_SERVICE_H_
#define KVSKETCH_SERVER_ATTENTION_SERVICE_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "kvsketch/v1/attention.grpc.pb.h"
#include "server/auth.h"
#include "server/metrics.h"
#include "server/request_validation.h"
#include "server/session_manager.h"
#include "server/worker_pool.h"

namespace kvsketch::server {

struct ServiceOptions {
  int stream_pipeline_depth = 4;
  // Decode entries whose work estimate (Session::TryStep) is at most this
  // many multiply-adds run inline in the gRPC reaction when their session's
  // lock is free, instead of on the pool; 0 (the default here: everything on
  // the pool) sends every step to the pool. Server::Start sets it from
  // ServerOptions::decode_inline_work_limit (default 2^21).
  int64_t decode_inline_work_limit = 0;
  // Largest message the server sends: export chunks stay below it.
  int max_message_bytes = 64 << 20;
  // Largest snapshot ImportSession accumulates.
  int64_t max_snapshot_bytes = int64_t{1} << 30;
  // Bearer-token table; null: no authentication, one shared namespace.
  // Must outlive the service.
  const TokenAuthenticator* auth = nullptr;
};

class AttentionService final : public v1::Attention::CallbackService {
 public:
  // Every pointer must outlive the service.
  AttentionService(const ServiceOptions& options, SessionManager* sessions,
                   WorkerPool* pool, Metrics* metrics);

  grpc::ServerUnaryReactor* CreateSession(
      grpc::CallbackServerContext* ctx, const v1::CreateSessionRequest* req,
      v1::CreateSessionResponse* resp) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* ctx,
                                       const v1::GetSessionRequest* req,
                                       v1::GetSessionResponse* resp) override;
  grpc::ServerUnaryReactor* ListSessions(
      grpc::CallbackServerContext* ctx, const v1::ListSessionsRequest* req,
      v1::ListSessionsResponse* resp) override;
  grpc::ServerUnaryReactor* DeleteSession(
      grpc::CallbackServerContext* ctx, const v1::DeleteSessionRequest* req,
      v1::DeleteSessionResponse* resp) override;
  grpc::ServerReadReactor<v1::AppendRequest>* Append(
      grpc::CallbackServerContext* ctx, v1::AppendResponse* resp) override;
  grpc::ServerUnaryReactor* Attend(grpc::CallbackServerContext* ctx,
                                   const v1::AttendRequest* req,
                                   v1::AttendResponse* resp) override;
  grpc::ServerBidiReactor<v1::DecodeRequest, v1::DecodeResponse>* Decode(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* Prefill(grpc::CallbackServerContext* ctx,
                                    const v1::PrefillRequest* req,
                                    v1::PrefillResponse* resp) override;
  grpc::ServerWriteReactor<v1::SnapshotChunk>* ExportSession(
      grpc::CallbackServerContext* ctx,
      const v1::ExportSessionRequest* req) override;
  grpc::ServerReadReactor<v1::ImportSessionRequest>* ImportSession(
      grpc::CallbackServerContext* ctx,
      v1::ImportSessionResponse* resp) override;

  // --- Shared by the reactors (service_*.cc) ---
  SessionManager* sessions() const { return sessions_; }
  WorkerPool* pool() const { return pool_; }
  Metrics* metrics() const { return metrics_; }
  const ServiceOptions& options() const { return options_; }

  // Runs a validated op on a session and encodes the output (F32,
  // [num_query_heads, M, value_dim]) when it has queries.
  // With op.want_diagnostics, fills `diagnostics` (may then not be null).
  absl::Status RunLayerOp(
      Session& session, const LayerOp& op, v1::Tensor* output,
      int64_t* num_tokens,
      google::protobuf::RepeatedPtrField<v1::QueryDiagnostic>* diagnostics =
          nullptr) const;

  // As RunLayerOp, but through Session::TryStep when work_budget is not null:
  // false (nothing done) if the session lock is busy or the op's work
  // estimate exceeds *work_budget (which it then consumes); else true and the
  // op's status in *status. A null work_budget waits for the lock.
  // pending_seq as for Session::Step: when given, the op's log record is
  // not waited for (the caller calls Session::WaitDurable before
  // answering); it must be given with a work_budget if the session has a
  // log, since an inline op may not wait for an fsync.
  bool TryRunLayerOp(Session& session, const LayerOp& op, int64_t* work_budget,
                     v1::Tensor* output, int64_t* num_tokens,
                     absl::Status* status,
                     google::protobuf::RepeatedPtrField<v1::QueryDiagnostic>*
                         diagnostics = nullptr,
                     uint64_t* pending_seq = nullptr) const;

  // The session a request names: its session_id, else the call's
  // x-session-id metadata (one of them is required), within the tenant.
  // InvalidArgument without either; NotFound as SessionManager::Find.
  absl::StatusOr<std::shared_ptr<Session>> FindRequestSession(
      const grpc::CallbackServerContext& ctx, absl::string_view request_id,
      const std::string& tenant) const;

  // Records the RPC in metrics: duration since start, error by code.
  void RecordRpc(absl::string_view method, const absl::Status& status,
                 absl::Time start) const;

  // ResourceExhausted "server busy: ..." for a refused pool submission.
  absl::Status BusyError() const;

  // The call's tenant (CallTenant with options().auth).
  absl::StatusOr<std::string> Authenticate(
      const grpc::CallbackServerContext& ctx) const {
    return CallTenant(options_.auth, ctx);
  }

 private:
  // Authenticates, runs fn(tenant) on the pool and finishes the unary
  // reactor with its status.
  grpc::ServerUnaryReactor* RunUnary(
      grpc::CallbackServerContext* ctx, absl::string_view method,
      std::function<absl::Status(const std::string& tenant)> fn);

  const ServiceOptions options_;
  SessionManager* const sessions_;
  WorkerPool* const pool_;
  Metrics* const metrics_;
};

// A streaming reactor that only finishes its call with `status` (a refused
// authentication): Finish before the handler returns is held by gRPC until
// the reactor is bound, and nothing of the request is read.
// Base is a grpc::Server{Read,Write,Bidi}Reactor<...>.
template <typename Base>
class RejectReactor final : public Base {
 public:
  explicit RejectReactor(const grpc::Status& status) { this->Finish(status); }
  void OnDone() override { delete this; }
};

// CANCELLED / DEADLINE_EXCEEDED if the call is already dead: checked before
// expensive work.
absl::Status CheckCallAlive(grpc::CallbackServerContext* ctx);

// Runs fn, turning a std::bad_alloc into ResourceExhausted and any other
// exception escaping a library into Internal (our code throws none).
absl::Status CallGuarded(const std::function<absl::Status()>& fn);

}  // namespace kvsketch::server

#endif  // KVSKETCH_SERVER_ATTENTION_SERVICE_H_
