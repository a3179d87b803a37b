// File: server/service_streams.cc
//
// Append (client stream), ExportSession (server stream) and ImportSession
// (client stream). Each keeps one read or one write outstanding; anything
// that locks a session or computes runs on the pool. A reactor never touches
// `this` after Finish (OnDone deletes it) or after handing the next read to
// gRPC from a pool thread (OnReadDone may then run and finish).
#include <algorithm>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/status_macros.h"
#include "server/attention_service.h"
#include "server/grpc_status.h"

namespace kvsketch::server {
namespace {

constexpr int64_t kExportChunkBytes = int64_t{1} << 20;

// --- Append ---------------------------------------------------------------

class AppendReactor final : public grpc::ServerReadReactor<v1::AppendRequest> {
 public:
  static constexpr char kMethod[] = "Append";
  AppendReactor(AttentionService* service, grpc::CallbackServerContext* ctx,
                v1::AppendResponse* resp, std::string tenant)
      : service_(service),
        ctx_(ctx),
        resp_(resp),
        tenant_(std::move(tenant)),
        start_(absl::Now()) {
    StartRead(&req_);
  }

  void OnReadDone(bool ok) override {
    // ok == false: the client half-closed (or the call died; the task sees
    // that through CheckCallAlive).
    const bool queued =
        ok ? service_->pool()->TrySubmit([this] { ApplyOne(); })
           : service_->pool()->TrySubmit([this] { Complete(); });
    if (!queued) Done(service_->BusyError());
  }

  void OnDone() override { delete this; }

 private:
  // Records the RPC (before the client sees the status, so metrics are
  // current when the call returns) and finishes. Last touch of this.
  void Done(absl::Status status) {
    service_->RecordRpc(kMethod, status, start_);
    Finish(ToGrpcStatus(status));
  }

  // Pool thread: applies message index_ (in req_), then reads the next.
  void ApplyOne() {
    absl::Status s = CallGuarded([this] { return Apply(); });
    ++index_;
    if (!s.ok()) {
      Done(std::move(s));
      return;
    }
    StartRead(&req_);  // last touch of this until OnReadDone
  }

  absl::Status Apply() {
    KVSKETCH_RETURN_IF_ERROR(CheckCallAlive(ctx_));
    const std::string prefix = absl::StrCat("messages[", index_, "].");
    if (session_ == nullptr) {
      KVSKETCH_ASSIGN_OR_RETURN(
          std::string id,
          ResolveSessionId(req_.session_id(), MetadataSessionId(*ctx_),
                           absl::StrCat(prefix, "session_id"),
                           /*required=*/true));
      KVSKETCH_ASSIGN_OR_RETURN(session_,
                                service_->sessions()->Find(id, tenant_));
    } else if (!req_.session_id().empty() &&
               req_.session_id() != session_->id()) {
      return absl::InvalidArgumentError(absl::StrCat(
          prefix, "session_id: '", req_.session_id(),
          "' differs from the stream's session '", session_->id(), "'"));
    }
    KVSKETCH_ASSIGN_OR_RETURN(LayerOp op,
                              DecodeAppend(session_->config(), prefix, req_));
    session_->Touch(absl::Now());
    absl::Status s;
    int64_t layer_tokens = op.num_new_tokens;
    uint64_t seq = 0;
    if (op.layer < 0) {
      s = session_->AppendAllLayers(op.num_new_tokens, op.keys, op.values,
                                    &seq);
      layer_tokens *= session_->config().num_layers;
    } else {
      s = session_->Step(op.layer, op.num_new_tokens, op.keys, op.values, 0, {},
                         {}, nullptr, nullptr, &seq);
    }
    if (!s.ok())
      return absl::Status(s.code(), absl::StrCat(prefix, s.message()));
    tokens_appended_ += layer_tokens;
    // The stream's one acknowledgement is the final response, so messages
    // are logged without waiting and Complete waits once for the last
    // record (records are durable in seq order). Waiting every
    // kWaitEveryBytes bounds what the log buffers in memory meanwhile.
    if (seq != 0) {
      last_seq_ = seq;
      unwaited_bytes_ += static_cast<int64_t>(
          (op.keys.size() + op.values.size()) * sizeof(float));
      if (unwaited_bytes_ >= kWaitEveryBytes) {
        unwaited_bytes_ = 0;
        KVSKETCH_RETURN_IF_ERROR(session_->WaitDurable(last_seq_));
      }
    }
    return absl::OkStatus();
  }

  static constexpr int64_t kWaitEveryBytes = int64_t{8} << 20;

  // Pool thread, after the client half-closed: the summary response.
  void Complete() {
    absl::Status s = CallGuarded([this]() -> absl::Status {
      KVSKETCH_RETURN_IF_ERROR(CheckCallAlive(ctx_));
      if (session_ == nullptr) {
        // No message: the metadata may still name the session.
        KVSKETCH_ASSIGN_OR_RETURN(
            std::string id, ResolveSessionId("", MetadataSessionId(*ctx_),
                                             "session_id", /*required=*/true));
        KVSKETCH_ASSIGN_OR_RETURN(session_,
                                  service_->sessions()->Find(id, tenant_));
      }
      // Acknowledge only what the log holds durably.
      KVSKETCH_RETURN_IF_ERROR(session_->WaitDurable(last_seq_));
      resp_->set_tokens_appended(tokens_appended_);
      for (int64_t n : session_->tokens_per_layer()) {
        resp_->add_tokens_per_layer(n);
      }
      resp_->set_state_bytes(session_->state_bytes());
      return absl::OkStatus();
    });
    Done(std::move(s));
  }

  AttentionService* const service_;
  grpc::CallbackServerContext* const ctx_;
  v1::AppendResponse* const resp_;
  const std::string tenant_;
  const absl::Time start_;
  // Touched by one thread at a time: the read/apply chain is sequential.
  v1::AppendRequest req_;
  std::shared_ptr<Session> session_;
  int index_ = 0;
  int64_t tokens_appended_ = 0;
  uint64_t last_seq_ = 0;  // the last log record of this stream (0: none)
  int64_t unwaited_bytes_ = 0;
};

// --- ExportSession ----------------------------------------------------------

class ExportReactor final : public grpc::ServerWriteReactor<v1::SnapshotChunk> {
 public:
  static constexpr char kMethod[] = "ExportSession";
  ExportReactor(AttentionService* service, grpc::CallbackServerContext* ctx,
                const v1::ExportSessionRequest* req, std::string tenant)
      : service_(service),
        ctx_(ctx),
        req_(req),
        tenant_(std::move(tenant)),
        start_(absl::Now()) {
    // Chunks stay well under the message limit (protobuf framing is small).
    chunk_bytes_ = std::max<int64_t>(
        1024, std::min<int64_t>(kExportChunkBytes,
                                service->options().max_message_bytes - 1024));
    if (!service_->pool()->TrySubmit([this] { Prepare(); })) {
      Done(service_->BusyError());
    }
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Done(absl::CancelledError("export: writing a chunk failed"));
      return;
    }
    WriteNext();
  }

  void OnDone() override { delete this; }

 private:
  // Records the RPC (before the client sees the status, so metrics are
  // current when the call returns) and finishes. Last touch of this.
  void Done(absl::Status status) {
    service_->RecordRpc(kMethod, status, start_);
    Finish(ToGrpcStatus(status));
  }

  void Prepare() {
    absl::Status s = CallGuarded([this]() -> absl::Status {
      KVSKETCH_RETURN_IF_ERROR(CheckCallAlive(ctx_));
      KVSKETCH_ASSIGN_OR_RETURN(
          std::shared_ptr<Session> session,
          service_->FindRequestSession(*ctx_, req_->session_id(), tenant_));
      session->Touch(absl::Now());
      KVSKETCH_ASSIGN_OR_RETURN(blob_,
                                SessionManager::ExportSnapshot(*session));
      return absl::OkStatus();
    });
    if (!s.ok()) {
      Done(std::move(s));
      return;
    }
    WriteNext();
  }

  // One chunk per write; O(chunk) copy.
  void WriteNext() {
    if (offset_ >= blob_.size()) {
      Done(absl::OkStatus());
      return;
    }
    const size_t n = std::min<size_t>(static_cast<size_t>(chunk_bytes_),
                                      blob_.size() - offset_);
    chunk_.Clear();
    if (offset_ == 0)
      chunk_.set_total_bytes(static_cast<int64_t>(blob_.size()));
    chunk_.set_data(blob_.substr(offset_, n));
    offset_ += n;
    StartWrite(&chunk_);
  }

  AttentionService* const service_;
  grpc::CallbackServerContext* const ctx_;
  const v1::ExportSessionRequest* const req_;
  const std::string tenant_;
  const absl::Time start_;
  int64_t chunk_bytes_ = kExportChunkBytes;
  std::string blob_;
  size_t offset_ = 0;
  v1::SnapshotChunk chunk_;
};

// --- ImportSession ----------------------------------------------------------

class ImportReactor final
    : public grpc::ServerReadReactor<v1::ImportSessionRequest> {
 public:
  static constexpr char kMethod[] = "ImportSession";
  ImportReactor(AttentionService* service, grpc::CallbackServerContext* ctx,
                v1::ImportSessionResponse* resp, std::string tenant)
      : service_(service),
        ctx_(ctx),
        resp_(resp),
        tenant_(std::move(tenant)),
        start_(absl::Now()) {
    StartRead(&req_);
  }

  // Accumulating is a bounded memcpy (at most max_message_bytes per read),
  // cheap enough for a reaction; parsing and building state go to the pool.
  void OnReadDone(bool ok) override {
    if (!ok) {
      if (!service_->pool()->TrySubmit([this] { Import(); })) {
        Done(service_->BusyError());
      }
      return;
    }
    if (index_ == 0) {
      session_id_ = req_.session_id();
    } else if (!req_.session_id().empty() && req_.session_id() != session_id_) {
      Done(absl::InvalidArgumentError(absl::StrCat(
          "messages[", index_, "].session_id: '", req_.session_id(),
          "' differs from the first message's '", session_id_, "'")));
      return;
    }
    const int64_t cap = service_->options().max_snapshot_bytes;
    if (static_cast<int64_t>(blob_.size() + req_.data().size()) > cap) {
      Done(absl::ResourceExhaustedError(absl::StrCat(
          "messages[", index_, "].data: snapshot exceeds the limit of ", cap,
          " bytes")));
      return;
    }
    blob_.append(req_.data());
    ++index_;
    StartRead(&req_);
  }

  void OnDone() override { delete this; }

 private:
  // Records the RPC (before the client sees the status, so metrics are
  // current when the call returns) and finishes. Last touch of this.
  void Done(absl::Status status) {
    service_->RecordRpc(kMethod, status, start_);
    Finish(ToGrpcStatus(status));
  }

  void Import() {
    absl::Status s = CallGuarded([this]() -> absl::Status {
      KVSKETCH_RETURN_IF_ERROR(CheckCallAlive(ctx_));
      if (blob_.empty()) {
        return absl::InvalidArgumentError(
            "data: no snapshot bytes were received");
      }
      KVSKETCH_ASSIGN_OR_RETURN(
          std::string id,
          ResolveSessionId(session_id_, MetadataSessionId(*ctx_), "session_id",
                           /*required=*/false));
      KVSKETCH_ASSIGN_OR_RETURN(
          std::shared_ptr<Session> session,
          service_->sessions()->Import(id, blob_, /*newly_created=*/true,
                                       tenant_));
      return session->FillInfo(resp_->mutable_session());
    });
    Done(std::move(s));
  }

  AttentionService* const service_;
  grpc::CallbackServerContext* const ctx_;
  v1::ImportSessionResponse* const resp_;
  const std::string tenant_;
  const absl::Time start_;
  v1::ImportSessionRequest req_;
  std::string session_id_;
  std::string blob_;
  int index_ = 0;
};

}  // namespace

grpc::ServerReadReactor<v1::AppendRequest>* AttentionService::Append(
    grpc::CallbackServerContext* ctx, v1::AppendResponse* resp) {
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> tenant = Authenticate(*ctx);
  if (!tenant.ok()) {
    RecordRpc(AppendReactor::kMethod, tenant.status(), start);
    return new RejectReactor<grpc::ServerReadReactor<v1::AppendRequest>>(
        ToGrpcStatus(tenant.status()));
  }
  return new AppendReactor(this, ctx, resp, *std::move(tenant));
}

grpc::ServerWriteReactor<v1::SnapshotChunk>* AttentionService::ExportSession(
    grpc::CallbackServerContext* ctx, const v1::ExportSessionRequest* req) {
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> tenant = Authenticate(*ctx);
  if (!tenant.ok()) {
    RecordRpc(ExportReactor::kMethod, tenant.status(), start);
    return new RejectReactor<grpc::ServerWriteReactor<v1::SnapshotChunk>>(
        ToGrpcStatus(tenant.status()));
  }
  return new ExportReactor(this, ctx, req, *std::move(tenant));
}

grpc::ServerReadReactor<v1::ImportSessionRequest>*
AttentionService::ImportSession(grpc::CallbackServerContext* ctx,
                                v1::ImportSessionResponse* resp) {
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> tenant = Authenticate(*ctx);
  if (!tenant.ok()) {
    RecordRpc(ImportReactor::kMethod, tenant.status(), start);
    return new RejectReactor<grpc::ServerReadReactor<v1::ImportSessionRequest>>(
        ToGrpcStatus(tenant.status()));
  }
  return new ImportReactor(this, ctx, resp, *std::move(tenant));
}

}  // namespace kvsketch::server
