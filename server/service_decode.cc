// File: server/service_decode.cc
//
// Decode: the bidi hot path. Steps of one stream are computed one at a time,
// in arrival order (a later step may depend on tokens an earlier one
// appends), while up to stream_pipeline_depth steps are read ahead and one
// response is being written. When that many steps are pending the reactor
// stops reading, so gRPC flow control pushes back on the client instead of
// the server queueing without bound.
//
// Lifetime: pool tasks use `this`; Finish is called only when no task is
// computing and no write is outstanding, so OnDone (delete this) cannot race
// a task.
#include <deque>
#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "core/status_macros.h"
#include "server/attention_service.h"
#include "server/grpc_status.h"

namespace kvsketch::server {
namespace {

class DecodeReactor final
    : public grpc::ServerBidiReactor<v1::DecodeRequest, v1::DecodeResponse> {
 public:
  DecodeReactor(AttentionService* service, grpc::CallbackServerContext* ctx)
      : service_(service),
        ctx_(ctx),
        metadata_id_(MetadataSessionId(*ctx)),
        depth_(std::max(1, service->options().stream_pipeline_depth)),
        start_(absl::Now()) {
    absl::MutexLock l(&mu_);
    reading_ = true;
    StartRead(&incoming_);
  }
  // Reactions run on gRPC's threads, never inline inside Start*/Finish (our
  // reactors are not "inlineable"), so calling StartRead/StartWrite with mu_
  // held cannot deadlock.

  void OnReadDone(bool ok) override {
    bool finish = false;
    {
      absl::MutexLock l(&mu_);
      reading_ = false;
      if (!ok) {
        read_closed_ = true;  // half-close, cancellation or broken stream
      } else if (status_.ok()) {
        auto step = std::make_unique<Step>();
        step->request = std::move(incoming_);
        incoming_.Clear();
        steps_.push_back(std::move(step));
        ScheduleComputeLocked();
        MaybeReadLocked();
      }  // else failing: drop the step
      finish = MaybeFinishLocked();
    }
    if (finish) FinishNow();
  }

  void OnWriteDone(bool ok) override {
    bool finish = false;
    {
      absl::MutexLock l(&mu_);
      writing_ = false;
      steps_.pop_front();
      if (!ok) {
        FailLocked(absl::CancelledError("decode: writing a response failed"));
      } else {
        MaybeWriteLocked();
        MaybeReadLocked();
      }
      finish = MaybeFinishLocked();
    }
    if (finish) FinishNow();
  }

  void OnCancel() override {
    bool finish = false;
    {
      absl::MutexLock l(&mu_);
      FailLocked(absl::CancelledError("decode: call cancelled"));
      finish = MaybeFinishLocked();
    }
    if (finish) FinishNow();
  }

  void OnDone() override { delete this; }

 private:
  struct Step {
    v1::DecodeRequest request;
    v1::DecodeResponse response;
    bool computed = false;
  };

  // Starts computing the first uncomputed step unless one is computing.
  void ScheduleComputeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (computing_ || !status_.ok()) return;
    Step* next = nullptr;
    for (const auto& s : steps_) {
      if (!s->computed) {
        next = s.get();
        break;
      }
    }
    if (next == nullptr) return;
    computing_ = true;
    if (!service_->pool()->TrySubmit([this, next] { Compute(next); })) {
      computing_ = false;
      FailLocked(service_->BusyError());  // the caller then finishes
    }
  }

  void MaybeReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (reading_ || read_closed_ || finished_ || !status_.ok()) return;
    if (static_cast<int>(steps_.size()) >= depth_) return;  // flow control
    reading_ = true;
    StartRead(&incoming_);
  }

  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || steps_.empty() || !steps_.front()->computed ||
        !status_.ok()) {
      return;
    }
    writing_ = true;
    StartWrite(&steps_.front()->response);
  }

  void FailLocked(absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (status_.ok()) status_ = std::move(status);
  }

  // Records the RPC (before the client can see its status, so metrics are
  // current when the call returns) and finishes. Called without mu_.
  void FinishNow() {
    service_->RecordRpc("Decode", final_status_, start_);
    Finish(ToGrpcStatus(final_status_));
  }

  // True (once) when the caller must call FinishNow() after
  // releasing mu_: nothing of ours is in flight and the stream is done
  // (client half-closed, every step answered) or failed. Finish is called
  // unlocked because OnDone may delete this (and mu_) as soon as it runs.
  bool MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || computing_ || writing_) return false;
    const bool drained = read_closed_ && steps_.empty();
    if (!drained && status_.ok()) return false;
    finished_ = true;
    final_status_ = status_;
    return true;
  }

  // Pool thread: runs every entry of one step.
  void Compute(Step* step) {
    absl::Status alive = CheckCallAlive(ctx_);
    if (alive.ok()) {
      absl::Status s = CallGuarded([&] {
        RunStep(*step);
        return absl::OkStatus();
      });
      if (!s.ok()) alive = s;
    }
    bool finish = false;
    {
      absl::MutexLock l(&mu_);
      computing_ = false;
      if (!alive.ok()) {
        FailLocked(alive);
      } else {
        step->computed = true;
        service_->metrics()->DecodeStep();
        MaybeWriteLocked();
        ScheduleComputeLocked();
      }
      finish = MaybeFinishLocked();
    }
    if (finish) FinishNow();
  }

  // Each entry is validated and applied on its own: a failed entry gets its
  // code and message and changes nothing; the others proceed. Each session
  // is locked only for its own entry.
  void RunStep(Step& step) {
    const v1::DecodeRequest& req = step.request;
    v1::DecodeResponse& resp = step.response;
    resp.set_step_id(req.step_id());
    for (int i = 0; i < req.entries_size(); ++i) {
      v1::DecodeResult* result = resp.add_results();
      const absl::Status s = RunEntry(i, req.entries(i), result);
      if (!s.ok()) {
        result->Clear();
        result->set_code(static_cast<int>(s.code()));
        result->set_message(TruncateStatusMessage(s.message()));
        service_->metrics()->RpcError("DecodeEntry",
                                      static_cast<int>(s.code()));
      }
    }
  }

  absl::Status RunEntry(int i, const v1::DecodeEntry& entry,
                        v1::DecodeResult* result) {
    const std::string prefix = absl::StrCat("entries[", i, "].");
    // A stream may interleave many sessions: an entry's own id wins, and
    // x-session-id (which names one session for routing) only fills in
    // entries that leave it empty.
    const std::string id =
        entry.session_id().empty() ? metadata_id_ : entry.session_id();
    if (id.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          prefix, "session_id: empty, and no x-session-id metadata was sent"));
    }
    absl::StatusOr<std::shared_ptr<Session>> session =
        service_->sessions()->Find(id);
    if (!session.ok()) {
      return absl::Status(session.status().code(),
                          absl::StrCat(prefix, session.status().message()));
    }
    KVSKETCH_ASSIGN_OR_RETURN(
        LayerOp op,
        DecodeLayerOp((*session)->config(), prefix, entry.layer(),
                      entry.has_keys() ? &entry.keys() : nullptr,
                      entry.has_values() ? &entry.values() : nullptr,
                      entry.has_queries() ? &entry.queries() : nullptr,
                      QueryRule::kOptional));
    int64_t num_tokens = 0;
    absl::Status s = service_->RunLayerOp(
        **session, op, result->mutable_output(), &num_tokens);
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat(prefix, s.message()));
    }
    if (op.num_queries == 0) result->clear_output();
    result->set_num_tokens(num_tokens);
    return absl::OkStatus();
  }

  AttentionService* const service_;
  grpc::CallbackServerContext* const ctx_;
  const std::string metadata_id_;
  const int depth_;
  const absl::Time start_;

  absl::Mutex mu_;
  v1::DecodeRequest incoming_ ABSL_GUARDED_BY(mu_);
  // Read, not yet written, in order; front is the next to write.
  std::deque<std::unique_ptr<Step>> steps_ ABSL_GUARDED_BY(mu_);
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool read_closed_ ABSL_GUARDED_BY(mu_) = false;
  bool computing_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  absl::Status final_status_;  // written before Finish, read in OnDone
};

}  // namespace

grpc::ServerBidiReactor<v1::DecodeRequest, v1::DecodeResponse>*
AttentionService::Decode(grpc::CallbackServerContext* ctx) {
  return new DecodeReactor(this, ctx);
}

}  // namespace kvsketch::server
