// File: server/session_manager.cc
#include "server/session_manager.h"

#include <algorithm>
#include <functional>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/io/byte_io.h"
#include "core/io/snapshot.h"
#include "core/status_macros.h"

namespace kvsketch::server {
namespace {

constexpr size_t kMaxSessionIdLength = 128;

bool IsIdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

}  // namespace

SessionManager::SessionManager(const SessionManagerOptions& options,
                               MemoryBudget* budget, Metrics* metrics)
    : options_(options), budget_(budget), metrics_(metrics) {
  const int shards = std::max(1, options.num_shards);
  shards_.reserve(shards);
  for (int i = 0; i < shards; ++i) shards_.push_back(std::make_unique<Shard>());
}

SessionManager::~SessionManager() {
  StopReaper();
  UnloadAll();
}

absl::Status SessionManager::ValidateSessionId(absl::string_view id,
                                               absl::string_view field) {
  if (id.empty() || id.size() > kMaxSessionIdLength) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": session id must be 1-", kMaxSessionIdLength,
                     " characters, got ", id.size()));
  }
  for (size_t i = 0; i < id.size(); ++i) {
    if (!IsIdChar(id[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": character ", i,
                       " of the session id is not one of [A-Za-z0-9._-]"));
    }
  }
  return absl::OkStatus();
}

std::string SessionManager::NewSessionId() {
  // absl::BitGen is seeded from the OS entropy source per generator.
  thread_local absl::BitGen gen;
  const uint64_t hi = absl::Uniform<uint64_t>(gen);
  const uint64_t lo = absl::Uniform<uint64_t>(gen);
  return absl::StrFormat("%016x%016x", hi, lo);
}

std::string SessionManager::FileName(absl::string_view tenant,
                                     absl::string_view id) {
  // '~' is in neither the id nor the tenant alphabet (docs/security.md).
  if (tenant.empty()) return std::string(id);
  return absl::StrCat(tenant, "~", id);
}

absl::StatusOr<std::string> SessionManager::ExportSnapshot(
    const Session& session) {
  KVSKETCH_ASSIGN_OR_RETURN(std::string payload, session.SavePayload());
  return WrapSnapshot(payload);
}

std::string SessionManager::MapKey(absl::string_view tenant,
                                   absl::string_view id) {
  if (tenant.empty()) return std::string(id);
  return absl::StrCat(tenant, "/", id);
}

SessionManager::Shard& SessionManager::ShardFor(absl::string_view key) const {
  const size_t h = absl::Hash<absl::string_view>()(key);
  return *shards_[h % shards_.size()];
}

absl::Status SessionManager::ReserveSlot() {
  int cur = count_.load(std::memory_order_relaxed);
  do {
    if (cur >= options_.max_sessions) {
      return absl::ResourceExhaustedError(
          absl::StrCat("session limit reached: ", cur, " of max_sessions ",
                       options_.max_sessions, " sessions exist"));
    }
  } while (
      !count_.compare_exchange_weak(cur, cur + 1, std::memory_order_relaxed));
  return absl::OkStatus();
}

absl::Status SessionManager::Insert(const std::shared_ptr<Session>& session) {
  const std::string key = MapKey(session->tenant(), session->id());
  Shard& shard = ShardFor(key);
  absl::MutexLock l(&shard.mu);
  auto [it, inserted] = shard.map.try_emplace(key, session);
  if (!inserted) {
    return absl::AlreadyExistsError(absl::StrCat(
        "session_id: session '", session->id(), "' already exists"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<Session>> SessionManager::Create(
    absl::string_view id, SessionConfig config, absl::string_view tenant) {
  std::string session_id;
  if (id.empty()) {
    session_id = NewSessionId();
  } else {
    KVSKETCH_RETURN_IF_ERROR(ValidateSessionId(id, "session_id"));
    session_id = std::string(id);
  }
  if (config.max_tokens > options_.max_tokens_per_session) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.max_tokens: ", config.max_tokens,
                     " exceeds the server limit of ",
                     options_.max_tokens_per_session, " tokens per layer"));
  }
  if (config.max_tokens == 0) {
    config.max_tokens = options_.max_tokens_per_session;
  }
  if (config.spec.empty()) config.spec = options_.default_spec;
  // Cheap checks before building (possibly large) state.
  if (Find(session_id, tenant).ok()) {
    return absl::AlreadyExistsError(
        absl::StrCat("session_id: session '", session_id, "' already exists"));
  }
  KVSKETCH_RETURN_IF_ERROR(ReserveSlot());
  // Heads are built against the free budget, so a config whose initial
  // state alone would not fit is refused before it can exhaust memory.
  absl::StatusOr<std::unique_ptr<SessionState>> state =
      SessionState::Create(std::move(config), FreeBudgetBytes());
  if (!state.ok()) {
    ReleaseSlot();
    if (absl::IsResourceExhausted(state.status())) {
      return absl::ResourceExhaustedError(
          absl::StrCat("memory budget: ", state.status().message()));
    }
    return absl::Status(state.status().code(),
                        absl::StrCat("config.", state.status().message()));
  }
  std::unique_ptr<durability::SessionLog> log;
  if (!options_.wal_dir.empty()) {
    // Durable before the session is visible: once CreateSession answers,
    // a crash cannot lose the session. Another Create of the same id that
    // got here first owns the files: AlreadyExists.
    absl::StatusOr<std::unique_ptr<durability::SessionLog>> created =
        durability::SessionLog::Create(options_.wal_dir,
                                       FileName(tenant, session_id),
                                       (*state)->config(), options_.durability);
    if (!created.ok()) {
      ReleaseSlot();
      if (absl::IsAlreadyExists(created.status())) {
        return absl::AlreadyExistsError(absl::StrCat(
            "session_id: session '", session_id, "' already exists"));
      }
      return absl::Status(
          created.status().code(),
          absl::StrCat("write-ahead log: ", created.status().message()));
    }
    log = *std::move(created);
  }
  auto session = std::make_shared<Session>(
      session_id, *std::move(state), absl::Now(), budget_, metrics_,
      std::string(tenant), std::move(log),
      options_.durability.checkpoint_log_bytes);
  if (absl::Status s = Insert(session); !s.ok()) {
    session->Close(/*delete_log=*/true);
    ReleaseSlot();
    return s;
  }
  metrics_->SessionAdded(/*newly_created=*/true);
  return session;
}

absl::StatusOr<std::shared_ptr<Session>> SessionManager::Import(
    absl::string_view id, absl::string_view blob, bool newly_created,
    absl::string_view tenant) {
  if (!id.empty()) {
    KVSKETCH_RETURN_IF_ERROR(ValidateSessionId(id, "session_id"));
  }
  KVSKETCH_ASSIGN_OR_RETURN(absl::string_view payload, UnwrapSnapshot(blob));
  ByteReader reader(payload);
  std::string stored_id;
  KVSKETCH_RETURN_IF_ERROR(
      reader.GetString(&stored_id, kMaxSessionIdLength, "session id"));
  if (!ValidateSessionId(stored_id, "snapshot").ok()) {
    return absl::DataLossError("snapshot: stored session id is malformed");
  }
  absl::StatusOr<std::unique_ptr<SessionState>> loaded =
      SessionState::Load(reader, FreeBudgetBytes());
  if (!loaded.ok()) {
    if (absl::IsResourceExhausted(loaded.status())) {
      return absl::ResourceExhaustedError(
          absl::StrCat("import: memory budget: ", loaded.status().message()));
    }
    return loaded.status();
  }
  std::unique_ptr<SessionState> state = *std::move(loaded);
  KVSKETCH_RETURN_IF_ERROR(reader.ExpectEnd("snapshot"));
  // A snapshot made on another server (or before a restart with a lower
  // limit) is held to this server's per-session token limit, as a created
  // session is.
  if (absl::Status s = state->ApplyTokenLimit(options_.max_tokens_per_session);
      !s.ok()) {
    return absl::Status(
        s.code(),
        absl::StrCat("import: max_tokens_per_session: ", s.message()));
  }
  const std::string session_id = id.empty() ? stored_id : std::string(id);
  if (Find(session_id, tenant).ok()) {
    return absl::AlreadyExistsError(
        absl::StrCat("session_id: session '", session_id, "' already exists"));
  }
  KVSKETCH_RETURN_IF_ERROR(ReserveSlot());
  std::unique_ptr<durability::SessionLog> log;
  if (!options_.wal_dir.empty()) {
    // A create record and at once a checkpoint of the imported state: the
    // import is acknowledged only when both are durable.
    absl::StatusOr<std::unique_ptr<durability::SessionLog>> created =
        durability::SessionLog::Create(options_.wal_dir,
                                       FileName(tenant, session_id),
                                       state->config(), options_.durability);
    absl::Status s = created.status();
    if (s.ok()) {
      log = *std::move(created);
      s = log->Checkpoint(*state);
      if (!s.ok()) log->Delete().IgnoreError();
    }
    if (!s.ok()) {
      ReleaseSlot();
      if (absl::IsAlreadyExists(s)) {
        return absl::AlreadyExistsError(absl::StrCat(
            "session_id: session '", session_id, "' already exists"));
      }
      return absl::Status(s.code(),
                          absl::StrCat("write-ahead log: ", s.message()));
    }
  }
  KVSKETCH_ASSIGN_OR_RETURN(
      std::shared_ptr<Session> session,
      AddBuilt(session_id, tenant, std::move(state), std::move(log),
               /*delete_log_on_failure=*/true));
  metrics_->SessionAdded(newly_created);
  return session;
}

absl::StatusOr<std::shared_ptr<Session>> SessionManager::Adopt(
    absl::string_view id, absl::string_view tenant,
    std::unique_ptr<SessionState> state,
    std::unique_ptr<durability::SessionLog> log) {
  KVSKETCH_RETURN_IF_ERROR(ValidateSessionId(id, "session_id"));
  KVSKETCH_RETURN_IF_ERROR(ReserveSlot());
  KVSKETCH_ASSIGN_OR_RETURN(
      std::shared_ptr<Session> session,
      AddBuilt(std::string(id), tenant, std::move(state), std::move(log),
               /*delete_log_on_failure=*/false));
  metrics_->SessionAdded(/*newly_created=*/false);
  return session;
}

absl::StatusOr<std::shared_ptr<Session>> SessionManager::AddBuilt(
    const std::string& id, absl::string_view tenant,
    std::unique_ptr<SessionState> state,
    std::unique_ptr<durability::SessionLog> log, bool delete_log_on_failure) {
  // The state is already built; charge it only if it fits the budget.
  const int64_t bytes = state->MemoryBytes();
  if (absl::Status s = budget_->TryReserve(bytes, "import"); !s.ok()) {
    if (log != nullptr) {
      (delete_log_on_failure ? log->Delete() : log->Close()).IgnoreError();
    }
    ReleaseSlot();
    return s;
  }
  auto session = std::make_shared<Session>(
      id, std::move(state), absl::Now(), budget_, metrics_, std::string(tenant),
      std::move(log), options_.durability.checkpoint_log_bytes);
  budget_->Adjust(-bytes);  // the Session charged its real bytes itself
  if (absl::Status s = Insert(session); !s.ok()) {
    session->Close(delete_log_on_failure);
    ReleaseSlot();
    return s;
  }
  return session;
}

absl::StatusOr<std::shared_ptr<Session>> SessionManager::Find(
    absl::string_view id, absl::string_view tenant) const {
  // Decode looks up every entry: without tenants the key is the id itself,
  // no allocation.
  std::string tenant_key;
  if (!tenant.empty()) tenant_key = MapKey(tenant, id);
  const absl::string_view key = tenant.empty() ? id : tenant_key;
  Shard& shard = ShardFor(key);
  absl::ReaderMutexLock l(&shard.mu);
  auto it = shard.map.find(key);
  if (it == shard.map.end()) {
    return absl::NotFoundError(
        absl::StrCat("session_id: no session '", id, "'"));
  }
  return it->second;
}

std::shared_ptr<Session> SessionManager::Remove(absl::string_view key) {
  Shard& shard = ShardFor(key);
  absl::MutexLock l(&shard.mu);
  auto it = shard.map.find(key);
  if (it == shard.map.end()) return nullptr;
  std::shared_ptr<Session> session = std::move(it->second);
  shard.map.erase(it);
  return session;
}

absl::Status SessionManager::Delete(absl::string_view id,
                                    absl::string_view tenant) {
  std::shared_ptr<Session> session = Remove(MapKey(tenant, id));
  if (session == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("session_id: no session '", id, "'"));
  }
  absl::Status log_status;
  session->Close(/*delete_log=*/true, &log_status);
  ReleaseSlot();
  metrics_->SessionRemoved("deleted");
  if (!log_status.ok()) {
    return absl::Status(
        log_status.code(),
        absl::StrCat("session '", id,
                     "' was removed from memory but its write-ahead log "
                     "could not record the delete (",
                     log_status.message(),
                     "); it may reappear after a restart"));
  }
  return absl::OkStatus();
}

std::vector<std::shared_ptr<Session>> SessionManager::List(
    absl::string_view after, int limit, bool* more,
    absl::string_view tenant) const {
  std::vector<std::shared_ptr<Session>> out;
  for (const auto& shard : shards_) {
    absl::ReaderMutexLock l(&shard->mu);
    for (const auto& [key, session] : shard->map) {
      if (session->tenant() != tenant) continue;
      if (after.empty() || session->id() > after) out.push_back(session);
    }
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a->id() < b->id(); });
  *more = static_cast<int>(out.size()) > limit;
  if (*more) out.resize(limit);
  return out;
}

std::vector<std::shared_ptr<Session>> SessionManager::All() const {
  std::vector<std::shared_ptr<Session>> out;
  for (const auto& shard : shards_) {
    absl::ReaderMutexLock l(&shard->mu);
    for (const auto& [id, session] : shard->map) out.push_back(session);
  }
  return out;
}

int SessionManager::EvictIdle(absl::Time now) {
  if (options_.idle_ttl <= absl::ZeroDuration()) return 0;
  const absl::Time cutoff = now - options_.idle_ttl;
  int evicted = 0;
  for (const auto& shard : shards_) {
    std::vector<std::shared_ptr<Session>> victims;
    {
      absl::MutexLock l(&shard->mu);
      for (auto it = shard->map.begin(); it != shard->map.end();) {
        if (it->second->last_used() < cutoff) {
          victims.push_back(std::move(it->second));
          shard->map.erase(it++);
        } else {
          ++it;
        }
      }
    }
    for (const auto& session : victims) {
      // Evicted for good: a restart must not bring it back.
      session->Close(/*delete_log=*/true);
      ReleaseSlot();
      metrics_->SessionRemoved("idle_ttl");
      ++evicted;
    }
  }
  return evicted;
}

void SessionManager::UnloadAll() {
  for (const auto& shard : shards_) {
    std::vector<std::shared_ptr<Session>> victims;
    {
      absl::MutexLock l(&shard->mu);
      for (auto& [id, session] : shard->map) victims.push_back(session);
      shard->map.clear();
    }
    for (const auto& session : victims) {
      if (session->Close()) {
        ReleaseSlot();
        metrics_->SessionUnloaded();
      }
    }
  }
}

void SessionManager::StartReaper() {
  if (options_.idle_ttl <= absl::ZeroDuration() || reaper_.joinable()) return;
  reaper_ = std::thread([this] { ReaperLoop(); });
}

void SessionManager::StopReaper() {
  if (!stop_reaper_.HasBeenNotified()) stop_reaper_.Notify();
  if (reaper_.joinable()) reaper_.join();
}

void SessionManager::ReaperLoop() {
  // Check a few times per TTL so a session lives at most ~1.25 TTL idle,
  // but no more often than every 10 ms nor less than every 10 s.
  const absl::Duration interval = std::clamp(
      options_.idle_ttl / 4, absl::Milliseconds(10), absl::Seconds(10));
  while (!stop_reaper_.WaitForNotificationWithTimeout(interval)) {
    EvictIdle(absl::Now());
  }
}

}  // namespace kvsketch::server
