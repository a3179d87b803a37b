// File: server/service_decode.cc
//
// Decode: the bidi hot path. Steps of one stream are computed one at a time,
// in arrival order (a later step may depend on tokens an earlier one
// appends), while up to stream_pipeline_depth steps are read ahead and one
// response is being written. When that many steps are pending the reactor
// stops reading, so gRPC flow control pushes back on the client instead of
// the server queueing without bound.
//
// Inline fast path: a step that is next in order runs on the gRPC thread
// that read it, entry by entry, as long as each entry's session lock is free
// (TryLock) and its work estimate is at most decode_inline_work_limit
// multiply-adds (Session::TryStep): a short-context decode step then costs no
// thread hand-off to the pool and back (two wake-ups, which on a loaded
// 2-core host were most of a round trip). This keeps "reactions never block":
// the reaction never waits for a session lock and runs only bounded work
// (well under a millisecond); the first entry that cannot run inline hands
// the rest of the step to the pool, so order is unchanged.
//
// Durability (with a write-ahead log): each entry's step is logged as it is
// applied (under its session lock), but a step's response is written only
// after WaitLogged has seen every logged record of the step durable -- on
// the pool, never in a reaction. One wait per session per step, so a step
// of N entries on one session costs one group commit, not N.
//
// Lifetime: pool tasks use `this`; Finish is called only when no task is
// computing and no write is outstanding, so OnDone (delete this) cannot race
// a task.
#include <algorithm>
#include <deque>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

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
  DecodeReactor(AttentionService* service, grpc::CallbackServerContext* ctx,
                std::string tenant)
      : service_(service),
        ctx_(ctx),
        tenant_(std::move(tenant)),
        metadata_id_(MetadataSessionId(*ctx)),
        depth_(std::max(1, service->options().stream_pipeline_depth)),
        inline_limit_(service->options().decode_inline_work_limit),
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
    Step* inline_step = nullptr;
    {
      absl::MutexLock l(&mu_);
      reading_ = false;
      if (!ok) {
        read_closed_ = true;  // half-close, cancellation or broken stream
      } else if (status_.ok()) {
        auto step = std::make_unique<Step>();
        step->request = std::move(incoming_);
        incoming_.Clear();
        Step* raw = step.get();
        steps_.push_back(std::move(step));
        if (inline_limit_ > 0 && !computing_ &&
            FirstUncomputedLocked() == raw) {
          computing_ = true;
          inline_step = raw;
        } else {
          ScheduleComputeLocked();
        }
        MaybeReadLocked();
      }  // else failing: drop the step
      // computing_ is set while inline_step runs, so this cannot finish then.
      finish = MaybeFinishLocked();
    }
    if (inline_step != nullptr) ComputeInline(inline_step);
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
  // A logged entry whose record must be durable before the step's
  // response is written.
  struct PendingLog {
    int entry;
    std::shared_ptr<Session> session;
    uint64_t seq;
  };
  struct Step {
    v1::DecodeRequest request;
    v1::DecodeResponse response;
    int next_entry = 0;  // entries before it are answered in `response`
    bool computed = false;
    std::vector<PendingLog> pending;
  };

  Step* FirstUncomputedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (const auto& s : steps_) {
      if (!s->computed) return s.get();
    }
    return nullptr;
  }

  // Starts computing the first uncomputed step unless one is computing.
  void ScheduleComputeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (computing_ || !status_.ok()) return;
    Step* next = FirstUncomputedLocked();
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

  // Reaction thread, computing_ set: runs what of `step` can run inline,
  // then hands the rest to the pool or completes the step.
  void ComputeInline(Step* step) {
    absl::Status alive = CheckCallAlive(ctx_);
    bool done = true;
    if (alive.ok()) {
      absl::Status s = CallGuarded([&] {
        int64_t budget = inline_limit_;  // for the whole step, not per entry
        done = RunEntries(*step, &budget);
        return absl::OkStatus();
      });
      if (!s.ok()) alive = s;
    }
    if (alive.ok() && !done) {
      if (service_->pool()->TrySubmit([this, step] { Compute(step); })) return;
      alive = service_->BusyError();
    }
    if (alive.ok() && !step->pending.empty()) {
      // Waiting for an fsync would block the reaction: the pool waits.
      if (service_->pool()->TrySubmit([this, step] {
            WaitLogged(*step);
            EndCompute(step, absl::OkStatus());
          })) {
        return;
      }
      alive = service_->BusyError();
    }
    EndCompute(step, alive);
  }

  // Group commit of a step: one WaitDurable per session for its last
  // record (records become durable in seq order), after every entry ran --
  // so the step's records are all batched before anyone waits, and
  // concurrent streams on a session share its fsync. Sessions have their
  // own files, so a step touching k sessions waits for k fsyncs; they run
  // concurrently (one short-lived thread per extra session, at most
  // kMaxParallelWaits at a time: ~20 us to start against ~ms per fsync)
  // instead of one after another. An entry whose log failed is answered
  // with the error instead of its result.
  static constexpr int kMaxParallelWaits = 16;
  void WaitLogged(Step& step) {
    std::vector<PendingLog>& pending = step.pending;
    std::vector<std::pair<Session*, uint64_t>> waits;  // distinct sessions
    for (const PendingLog& p : pending) {
      auto it = std::find_if(waits.begin(), waits.end(), [&](const auto& w) {
        return w.first == p.session.get();
      });
      if (it == waits.end()) {
        waits.emplace_back(p.session.get(), p.seq);
      } else {
        it->second = std::max(it->second, p.seq);
      }
    }
    std::vector<absl::Status> results(waits.size());
    for (size_t start = 0; start < waits.size(); start += kMaxParallelWaits) {
      const size_t end = std::min(waits.size(), start + kMaxParallelWaits);
      std::vector<std::thread> threads;
      for (size_t i = start + 1; i < end; ++i) {
        threads.emplace_back([&, i] {
          results[i] = waits[i].first->WaitDurable(waits[i].second);
        });
      }
      results[start] = waits[start].first->WaitDurable(waits[start].second);
      for (std::thread& t : threads) t.join();
    }
    for (size_t i = 0; i < waits.size(); ++i) {
      const absl::Status& s = results[i];
      if (s.ok()) continue;
      for (const PendingLog& p : pending) {
        if (p.session.get() != waits[i].first) continue;
        v1::DecodeResult* result = step.response.mutable_results(p.entry);
        result->Clear();
        result->set_code(static_cast<int>(s.code()));
        result->set_message(TruncateStatusMessage(
            absl::StrCat("entries[", p.entry, "].", s.message())));
        service_->metrics()->RpcError("DecodeEntry",
                                      static_cast<int>(s.code()));
      }
    }
    pending.clear();
  }

  // Pool thread: runs the remaining entries of one step.
  void Compute(Step* step) {
    absl::Status alive = CheckCallAlive(ctx_);
    if (alive.ok()) {
      absl::Status s = CallGuarded([&] {
        RunEntries(*step, /*work_budget=*/nullptr);
        WaitLogged(*step);
        return absl::OkStatus();
      });
      if (!s.ok()) alive = s;
    }
    EndCompute(step, alive);
  }

  // Publishes a computed step (or the failure) and moves the stream on.
  void EndCompute(Step* step, const absl::Status& alive) {
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
  // is locked only for its own entry. With a work_budget (inline) stops at
  // the first entry that cannot run without waiting or within what is left
  // of the budget, and
  // returns false; true when every entry is answered.
  bool RunEntries(Step& step, int64_t* work_budget) {
    const v1::DecodeRequest& req = step.request;
    v1::DecodeResponse& resp = step.response;
    resp.set_step_id(req.step_id());
    for (; step.next_entry < req.entries_size(); ++step.next_entry) {
      const int i = step.next_entry;
      v1::DecodeResult* result = resp.add_results();
      absl::Status s;
      if (!RunEntry(i, req.entries(i), work_budget, result, &s,
                    &step.pending)) {
        resp.mutable_results()->RemoveLast();
        return false;
      }
      if (!s.ok()) {
        result->Clear();
        result->set_code(static_cast<int>(s.code()));
        result->set_message(TruncateStatusMessage(s.message()));
        service_->metrics()->RpcError("DecodeEntry",
                                      static_cast<int>(s.code()));
      }
    }
    return true;
  }

  // False (nothing done, *result untouched) when work_budget is set and the
  // entry cannot run inline; else true with the entry's status in *status.
  bool RunEntry(int i, const v1::DecodeEntry& entry, int64_t* work_budget,
                v1::DecodeResult* result, absl::Status* status,
                std::vector<PendingLog>* pending) {
    // Built only for error messages: most entries succeed.
    auto prefix = [i] { return absl::StrCat("entries[", i, "]."); };
    // A stream may interleave many sessions: an entry's own id wins, and
    // x-session-id (which names one session for routing) only fills in
    // entries that leave it empty.
    const std::string& id =
        entry.session_id().empty() ? metadata_id_ : entry.session_id();
    if (id.empty()) {
      *status = absl::InvalidArgumentError(absl::StrCat(
          prefix(),
          "session_id: empty, and no x-session-id metadata was sent"));
      return true;
    }
    // The stream's tenant: an entry naming another tenant's session fails
    // exactly like one naming no session.
    absl::StatusOr<std::shared_ptr<Session>> session =
        service_->sessions()->Find(id, tenant_);
    if (!session.ok()) {
      *status =
          absl::Status(session.status().code(),
                       absl::StrCat(prefix(), session.status().message()));
      return true;
    }
    absl::StatusOr<LayerOp> op = DecodeLayerOp(
        (*session)->config(), prefix(), entry.layer(),
        entry.has_keys() ? &entry.keys() : nullptr,
        entry.has_values() ? &entry.values() : nullptr,
        entry.has_queries() ? &entry.queries() : nullptr, QueryRule::kOptional);
    if (!op.ok()) {
      *status = op.status();
      return true;
    }
    op->want_diagnostics = entry.want_diagnostics();
    int64_t num_tokens = 0;
    absl::Status s;
    uint64_t seq = 0;
    if (!service_->TryRunLayerOp(**session, *op, work_budget,
                                 result->mutable_output(), &num_tokens, &s,
                                 result->mutable_diagnostics(), &seq)) {
      return false;
    }
    if (seq != 0) pending->push_back({i, *session, seq});
    if (!s.ok()) {
      *status = absl::Status(s.code(), absl::StrCat(prefix(), s.message()));
      return true;
    }
    if (op->num_queries == 0) result->clear_output();
    result->set_num_tokens(num_tokens);
    *status = absl::OkStatus();
    return true;
  }

  AttentionService* const service_;
  grpc::CallbackServerContext* const ctx_;
  const std::string tenant_;
  const std::string metadata_id_;
  const int depth_;
  const int64_t inline_limit_;
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
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> tenant = Authenticate(*ctx);
  if (!tenant.ok()) {
    RecordRpc("Decode", tenant.status(), start);
    return new RejectReactor<
        grpc::ServerBidiReactor<v1::DecodeRequest, v1::DecodeResponse>>(
        ToGrpcStatus(tenant.status()));
  }
  return new DecodeReactor(this, ctx, *std::move(tenant));
}

}  // namespace kvsketch::server
