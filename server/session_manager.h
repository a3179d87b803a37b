// File: server/session_manager.h
//
// Every live session, in a sharded map (shard = hash(key) mod num_shards, each
// shard its own absl::Mutex so lookups of different sessions rarely contend).
// Enforces max_sessions and, at import, the memory budget; runs the idle-TTL
// reaper thread.
//
// Tenancy (server/auth.h, docs/security.md): every operation names the
// tenant it acts for ("" without --auth_tokens_file). Each tenant has its own
// id namespace -- the map key is "tenant/id" ('/' is in neither alphabet) --
// so another tenant's session is simply absent: Find/Delete answer exactly
// the NotFound of an id nobody uses, Create of an id another tenant holds
// succeeds, and List shows only the caller's sessions. Nothing a tenant can
// send distinguishes "exists elsewhere" from "does not exist".
//
// Lock order: a shard lock is held only to read or change the map (copying a
// shared_ptr); it is never held while taking a session lock, and no two shard
// locks are held at once. Removal takes the entry out under the shard lock
// and closes the session after releasing it.
#ifndef KVSKETCH_SERVER_SESSION_MANAGER_H_
#define KVSKETCH_SERVER_SESSION_MANAGER_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "core/session_state.h"
#include "server/durability/durability_options.h"
#include "server/durability/session_log.h"
#include "server/memory_budget.h"
#include "server/metrics.h"
#include "server/session.h"

namespace kvsketch::server {

struct SessionManagerOptions {
  int num_shards = 16;
  int max_sessions = 4096;
  int64_t max_tokens_per_session = int64_t{1} << 22;
  std::string default_spec = "exact";
  absl::Duration idle_ttl = absl::ZeroDuration();  // zero: never
  // Write-ahead log directory (docs/durability.md); "" disables the log.
  // With it, Create/Import make a durable log before the session is
  // visible, Delete and idle eviction log a delete record and remove the
  // files, and every Session logs its steps.
  std::string wal_dir;
  durability::DurabilityOptions durability;
};

class SessionManager {
 public:
  // budget and metrics must outlive the manager.
  SessionManager(const SessionManagerOptions& options, MemoryBudget* budget,
                 Metrics* metrics);
  ~SessionManager();  // stops the reaper; sessions are closed

  SessionManager(const SessionManager&) = delete;
  SessionManager& operator=(const SessionManager&) = delete;

  // InvalidArgument (id syntax, config), AlreadyExists, ResourceExhausted
  // (max_sessions, max_tokens above the server's limit is InvalidArgument).
  // An empty id makes a random one. The session belongs to `tenant`.
  absl::StatusOr<std::shared_ptr<Session>> Create(absl::string_view id,
                                                  SessionConfig config,
                                                  absl::string_view tenant);

  // Imports a snapshot blob (core/io/snapshot.h envelope around
  // Session::SavePayload). id "" keeps the stored id. DataLoss (corrupt),
  // AlreadyExists, ResourceExhausted (max_sessions, memory budget).
  // newly_created counts it in kvsketch_sessions_created_total. The
  // session belongs to `tenant` (the payload carries no owner).
  absl::StatusOr<std::shared_ptr<Session>> Import(absl::string_view id,
                                                  absl::string_view blob,
                                                  bool newly_created,
                                                  absl::string_view tenant);

  // Adds a session recovered from its log at start (SessionLog::Recover):
  // AlreadyExists, ResourceExhausted (max_sessions, memory budget). Not
  // counted as created.
  absl::StatusOr<std::shared_ptr<Session>> Adopt(
      absl::string_view id, absl::string_view tenant,
      std::unique_ptr<SessionState> state,
      std::unique_ptr<durability::SessionLog> log);

  // NotFound naming the id (also for another tenant's session).
  absl::StatusOr<std::shared_ptr<Session>> Find(absl::string_view id,
                                                absl::string_view tenant) const;

  // NotFound, or removes and closes the session (evicted reason "deleted").
  // With a log, the session's delete record is durable before OK.
  absl::Status Delete(absl::string_view id, absl::string_view tenant);

  // The tenant's sessions with id > after, in id order, at most limit of
  // them; *more is set when further sessions follow. O(n log n) in the
  // session count of all tenants.
  std::vector<std::shared_ptr<Session>> List(absl::string_view after, int limit,
                                             bool* more,
                                             absl::string_view tenant) const;

  // Every session (any order).
  std::vector<std::shared_ptr<Session>> All() const;

  // Removes sessions idle since before now - idle_ttl; returns how many.
  int EvictIdle(absl::Time now);

  // Closes and drops every session without counting evictions (shutdown).
  void UnloadAll();

  int size() const { return count_.load(std::memory_order_relaxed); }

  // Starts the reaper thread if idle_ttl > 0. Stopped by the destructor or
  // StopReaper (idempotent).
  void StartReaper();
  void StopReaper();

  // 1-128 characters of [A-Za-z0-9._-]; InvalidArgument naming `field`.
  static absl::Status ValidateSessionId(absl::string_view id,
                                        absl::string_view field);
  // 128 random bits as 32 lowercase hex digits, from a generator seeded
  // by the OS entropy source: unguessable, so an id is no weaker a secret
  // than a token (a guess succeeds with probability 2^-128 per try).
  static std::string NewSessionId();
  // The on-disk name of a session's files: id, or tenant~id.
  static std::string FileName(absl::string_view tenant, absl::string_view id);
  // The snapshot blob of a session: WrapSnapshot(SavePayload()).
  static absl::StatusOr<std::string> ExportSnapshot(const Session& session);

 private:
  struct Shard {
    mutable absl::Mutex mu;
    absl::flat_hash_map<std::string, std::shared_ptr<Session>> map
        ABSL_GUARDED_BY(mu);
  };

  // "tenant/id", or just id for the "" tenant.
  static std::string MapKey(absl::string_view tenant, absl::string_view id);
  Shard& ShardFor(absl::string_view key) const;
  // Inserts a built session under a reserved slot, charging its memory if
  // it fits the budget; closes (and deletes a log, if delete_log_on_failure)
  // on failure.
  absl::StatusOr<std::shared_ptr<Session>> AddBuilt(
      const std::string& id, absl::string_view tenant,
      std::unique_ptr<SessionState> state,
      std::unique_ptr<durability::SessionLog> log, bool delete_log_on_failure);
  // Takes a slot under max_sessions or ResourceExhausted.
  absl::Status ReserveSlot();
  void ReleaseSlot() { count_.fetch_sub(1, std::memory_order_relaxed); }
  // Bytes the memory budget has left (at least 1, so SessionState's
  // "0 = unlimited" never applies): the most a new session may hold before
  // its first token.
  int64_t FreeBudgetBytes() const {
    return std::max<int64_t>(1, budget_->budget() - budget_->used());
  }
  // Inserts under the shard lock; AlreadyExists if taken (slot released by
  // the caller).
  absl::Status Insert(const std::shared_ptr<Session>& session);
  std::shared_ptr<Session> Remove(absl::string_view key);
  void ReaperLoop();

  const SessionManagerOptions options_;
  MemoryBudget* const budget_;
  Metrics* const metrics_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<int> count_{0};

  absl::Notification stop_reaper_;
  std::thread reaper_;
};

}  // namespace kvsketch::server

#endif  // KVSKETCH_SERVER_SESSION_MANAGER_H_
