// File: server/durability/session_log.cc
#include "server/durability/session_log.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/io/byte_io.h"
#include "core/io/snapshot.h"
#include "core/status_macros.h"

namespace kvsketch::server::durability {
namespace {

constexpr char kCheckpointTag[] = "kvsketch-ckpt";
constexpr size_t kGenerationDigits = 10;
constexpr size_t kMaxNameBytes = 200;

absl::Status ValidateName(const std::string& name) {
  if (name.empty() || name.size() > kMaxNameBytes || name == "." ||
      name == "..") {
    return absl::InvalidArgumentError(
        absl::StrCat("session log name '", name, "' must be 1-", kMaxNameBytes,
                     " characters and not . or .."));
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' &&
        c != '_' && c != '-' && c != '~') {
      return absl::InvalidArgumentError(absl::StrCat(
          "session log name '", name, "' may hold only [A-Za-z0-9._~-]"));
    }
  }
  return absl::OkStatus();
}

// "<name>.<10 digits>.wal" -> (name, generation); false for other files.
bool ParseSegmentFileName(const std::string& file, std::string* name,
                          uint64_t* generation) {
  const size_t ext = sizeof(kWalExtension) - 1;
  if (!absl::EndsWith(file, kWalExtension) ||
      file.size() < ext + kGenerationDigits + 2) {
    return false;
  }
  const size_t digits_at = file.size() - ext - kGenerationDigits;
  if (file[digits_at - 1] != '.') return false;
  uint64_t g = 0;
  for (size_t i = digits_at; i < digits_at + kGenerationDigits; ++i) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(file[i]))) {
      return false;
    }
    g = g * 10 + static_cast<uint64_t>(file[i] - '0');
  }
  *name = file.substr(0, digits_at - 1);
  *generation = g;
  return true;
}

absl::Status DataLossAt(const std::string& path, uint64_t offset,
                        absl::string_view what) {
  return absl::DataLossError(
      absl::StrCat(path, " at offset ", offset, ": ", what));
}

struct SessionFiles {
  std::vector<uint64_t> generations;  // sorted
  bool checkpoint = false;
  bool checkpoint_tmp = false;
};

absl::StatusOr<SessionFiles> FindFiles(Env* env, const std::string& dir,
                                       const std::string& name) {
  KVSKETCH_ASSIGN_OR_RETURN(std::vector<std::string> files, env->ListDir(dir));
  SessionFiles out;
  for (const std::string& file : files) {
    std::string n;
    uint64_t g = 0;
    if (ParseSegmentFileName(file, &n, &g) && n == name) {
      out.generations.push_back(g);
    } else if (file == name + kCheckpointExtension) {
      out.checkpoint = true;
    } else if (file == absl::StrCat(name, kCheckpointExtension, ".tmp")) {
      out.checkpoint_tmp = true;
    }
  }
  std::sort(out.generations.begin(), out.generations.end());
  return out;
}

// Replays one decoded record into state; the error is the caller's to place.
absl::Status Apply(const WalRecord& rec, SessionState* state,
                   RecoveryReport* report) {
  const SessionConfig& c = state->config();
  if (rec.type == RecordType::kTokens) {
    std::vector<float> out(static_cast<size_t>(c.num_query_heads) *
                           static_cast<size_t>(rec.num_queries) *
                           static_cast<size_t>(c.value_dim));
    KVSKETCH_RETURN_IF_ERROR(state->Step(rec.layer, rec.num_tokens, rec.keys,
                                         rec.values, rec.num_queries,
                                         rec.queries, absl::MakeSpan(out)));
    report->tokens_replayed += rec.num_tokens;
    report->queries_replayed += rec.num_queries;
    return absl::OkStatus();
  }
  // kTokensAllLayers: split [layers, kv_heads, T, d] per layer, as
  // Session::AppendAllLayers does.
  const size_t layers = static_cast<size_t>(c.num_layers);
  if (rec.keys.size() % layers != 0 || rec.values.size() % layers != 0) {
    return absl::DataLossError(absl::StrCat(
        "all-layers record of ", rec.keys.size(), " key floats does not split ",
        "into ", layers, " layers"));
  }
  const size_t k_per = rec.keys.size() / layers;
  const size_t v_per = rec.values.size() / layers;
  for (size_t l = 0; l < layers; ++l) {
    KVSKETCH_RETURN_IF_ERROR(state->Append(
        static_cast<int>(l), rec.num_tokens,
        absl::MakeConstSpan(rec.keys).subspan(l * k_per, k_per),
        absl::MakeConstSpan(rec.values).subspan(l * v_per, v_per)));
  }
  report->tokens_replayed += rec.num_tokens * c.num_layers;
  return absl::OkStatus();
}

}  // namespace

std::string RecoveryReport::ToString() const {
  const char* what = outcome == Outcome::kRecovered ? "recovered"
                     : outcome == Outcome::kDeleted ? "deleted"
                                                    : "never created";
  std::string s = absl::StrCat(
      what, ": checkpoint seq ", checkpoint_seq, ", last seq ", last_seq, ", ",
      segments, " segments, ", records_replayed, " records replayed (",
      tokens_replayed, " token-layers, ", queries_replayed, " query rows)");
  if (torn_bytes_dropped > 0) {
    absl::StrAppend(&s, ", dropped a torn tail of ", torn_bytes_dropped,
                    " bytes from ", torn_file, " (", torn_reason, ")");
  }
  return s;
}

SessionLog::SessionLog(std::string dir, std::string name,
                       DurabilityOptions options, Env* env)
    : dir_(std::move(dir)),
      name_(std::move(name)),
      options_(options),
      env_(env) {}

SessionLog::~SessionLog() = default;

std::string SessionLog::SegmentFileName(const std::string& name,
                                        uint64_t generation) {
  return absl::StrFormat("%s.%010d%s", name, generation, kWalExtension);
}

std::string SessionLog::PathOf(const std::string& file_name) const {
  return absl::StrCat(dir_, "/", file_name);
}

absl::StatusOr<std::unique_ptr<WritableFile>> SessionLog::NewSegment(
    uint64_t generation) {
  const std::string path = PathOf(SegmentFileName(name_, generation));
  KVSKETCH_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file,
                            env_->NewWritableFile(path));
  KVSKETCH_RETURN_IF_ERROR(file->Append(EncodeSegmentHeader(generation)));
  // The new file's directory entry must be durable before any ack relies
  // on a record in it (fsync of the file alone does not persist its name).
  if (options_.fsync_policy != FsyncPolicy::kOff) {
    KVSKETCH_RETURN_IF_ERROR(file->Sync());
    KVSKETCH_RETURN_IF_ERROR(env_->SyncDir(dir_));
  }
  return file;
}

absl::StatusOr<std::unique_ptr<SessionLog>> SessionLog::Create(
    const std::string& dir, const std::string& name,
    const SessionConfig& config, const DurabilityOptions& options) {
  KVSKETCH_RETURN_IF_ERROR(ValidateName(name));
  Env* env = options.env != nullptr ? options.env : Env::Default();
  SessionConfig normalized = config;
  KVSKETCH_RETURN_IF_ERROR(NormalizeSessionConfig(&normalized));
  KVSKETCH_RETURN_IF_ERROR(env->CreateDir(dir));
  KVSKETCH_ASSIGN_OR_RETURN(SessionFiles files, FindFiles(env, dir, name));
  if (!files.generations.empty() || files.checkpoint) {
    return absl::AlreadyExistsError(
        absl::StrCat("session log ", name, " already exists in ", dir));
  }
  std::unique_ptr<SessionLog> log(new SessionLog(dir, name, options, env));
  KVSKETCH_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file,
                            log->NewSegment(1));
  log->writer_ = std::make_unique<WalWriter>(
      std::move(file), log->PathOf(SegmentFileName(name, 1)), 0,
      options.fsync_policy, options.fsync_interval, options.clock);
  {
    absl::MutexLock lock(&log->mu_);
    log->live_generations_ = {1};
    log->live_base_ = -static_cast<int64_t>(kSegmentHeaderBytes);
  }
  KVSKETCH_ASSIGN_OR_RETURN(
      uint64_t seq, log->writer_->Append(RecordType::kCreate,
                                         EncodeSessionConfig(normalized)));
  KVSKETCH_RETURN_IF_ERROR(log->writer_->WaitDurable(seq));
  return log;
}

absl::StatusOr<std::vector<std::string>> SessionLog::ListSessionNames(
    const std::string& dir, Env* env) {
  if (env == nullptr) env = Env::Default();
  KVSKETCH_ASSIGN_OR_RETURN(std::vector<std::string> files, env->ListDir(dir));
  std::vector<std::string> names;
  for (const std::string& file : files) {
    std::string n;
    uint64_t g = 0;
    if (ParseSegmentFileName(file, &n, &g)) {
      names.push_back(n);
    } else if (absl::EndsWith(file, kCheckpointExtension)) {
      names.push_back(
          file.substr(0, file.size() - (sizeof(kCheckpointExtension) - 1)));
    }
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

absl::StatusOr<SessionLog::Recovered> SessionLog::Recover(
    const std::string& dir, const std::string& name,
    const DurabilityOptions& options) {
  KVSKETCH_RETURN_IF_ERROR(ValidateName(name));
  Env* env = options.env != nullptr ? options.env : Env::Default();
  KVSKETCH_ASSIGN_OR_RETURN(SessionFiles files, FindFiles(env, dir, name));
  auto path_of = [&](const std::string& file) {
    return absl::StrCat(dir, "/", file);
  };
  const std::string ckpt_path = path_of(name + kCheckpointExtension);
  if (files.checkpoint_tmp) {
    // A checkpoint that never got renamed: the previous one (or the log
    // from the start) still covers everything.
    KVSKETCH_RETURN_IF_ERROR(env->DeleteFile(ckpt_path + ".tmp"));
  }
  if (files.generations.empty() && !files.checkpoint) {
    return absl::NotFoundError(
        absl::StrCat("no log or checkpoint of session ", name, " in ", dir));
  }

  Recovered result;
  RecoveryReport& report = result.report;
  std::unique_ptr<SessionState> state;
  if (files.checkpoint) {
    KVSKETCH_ASSIGN_OR_RETURN(std::string blob, env->ReadFile(ckpt_path));
    absl::StatusOr<absl::string_view> payload = UnwrapSnapshot(blob);
    if (!payload.ok()) {
      return absl::DataLossError(
          absl::StrCat(ckpt_path, ": ", payload.status().message()));
    }
    ByteReader r(*payload);
    std::string tag, stored_name;
    absl::Status s = r.GetString(&tag, 64, "checkpoint tag");
    if (s.ok() && tag != kCheckpointTag) {
      s = absl::DataLossError(absl::StrCat("checkpoint tag is '", tag, "'"));
    }
    if (s.ok()) s = r.GetU64(&report.checkpoint_seq, "checkpoint seq");
    if (s.ok()) s = r.GetString(&stored_name, 1024, "checkpoint name");
    if (s.ok() && stored_name != name) {
      s = absl::DataLossError(
          absl::StrCat("checkpoint belongs to session '", stored_name, "'"));
    }
    if (s.ok()) {
      absl::StatusOr<std::unique_ptr<SessionState>> loaded =
          SessionState::Load(r);
      if (loaded.ok()) {
        state = *std::move(loaded);
        s = r.ExpectEnd("checkpoint");
      } else {
        s = loaded.status();
      }
    }
    if (!s.ok()) {
      return absl::DataLossError(absl::StrCat(ckpt_path, ": ", s.message()));
    }
  }

  // Read and frame every segment before changing anything on disk.
  const size_t n = files.generations.size();
  std::vector<std::string> contents(n);
  std::vector<SegmentParse> parses(n);
  std::vector<std::string> paths(n);
  for (size_t i = 0; i < n; ++i) {
    paths[i] = path_of(SegmentFileName(name, files.generations[i]));
    KVSKETCH_ASSIGN_OR_RETURN(contents[i], env->ReadFile(paths[i]));
    parses[i] = ParseSegment(contents[i]);
    if (parses[i].header_ok && parses[i].generation != files.generations[i]) {
      return DataLossAt(paths[i], 16,
                        absl::StrCat("segment header says generation ",
                                     parses[i].generation));
    }
  }
  report.segments = static_cast<int>(n);

  // The first bad frame: a torn tail if no valid record follows it
  // anywhere, else corruption.
  size_t bad = n;
  uint64_t seq_before_bad = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!parses[i].records.empty()) {
      seq_before_bad = parses[i].records.back().seq;
    }
    if (parses[i].bad) {
      bad = i;
      break;
    }
  }
  if (bad < n) {
    bool later = HasValidRecordAfter(contents[bad], parses[bad].valid_bytes,
                                     seq_before_bad);
    for (size_t j = bad + 1; j < n && !later; ++j) {
      later = !parses[j].records.empty() ||
              HasValidRecordAfter(contents[j], 0, seq_before_bad);
    }
    if (later) {
      return DataLossAt(
          paths[bad], parses[bad].valid_bytes,
          absl::StrCat("corrupt record (", parses[bad].bad_reason,
                       ") followed by valid records: not a torn tail"));
    }
    report.torn_file = paths[bad];
    report.torn_reason = parses[bad].bad_reason;
    report.torn_bytes_dropped =
        static_cast<int64_t>(contents[bad].size() - parses[bad].valid_bytes);
    for (size_t j = bad + 1; j < n; ++j) {
      report.torn_bytes_dropped += static_cast<int64_t>(contents[j].size());
    }
  }

  // Replay in sequence order; every seq must follow the previous one.
  uint64_t prev = 0;
  bool deleted = false;
  for (size_t i = 0; i < n && i <= bad; ++i) {
    for (const FramedRecord& framed : parses[i].records) {
      if (prev == 0 && framed.seq > report.checkpoint_seq + 1) {
        return DataLossAt(
            paths[i], framed.offset,
            absl::StrCat("the log resumes at seq ", framed.seq,
                         " but the checkpoint covers only up to ",
                         report.checkpoint_seq, " (records missing)"));
      }
      if (prev != 0 && framed.seq != prev + 1) {
        return DataLossAt(
            paths[i], framed.offset,
            absl::StrCat("sequence gap: seq ", framed.seq, " follows ", prev));
      }
      prev = framed.seq;
      if (deleted) {
        return DataLossAt(paths[i], framed.offset,
                          "a record follows the session's delete record");
      }
      if (framed.seq <= report.checkpoint_seq) continue;  // covered
      absl::StatusOr<WalRecord> rec =
          DecodeRecord(framed.type, framed.seq, framed.payload);
      if (!rec.ok()) {
        return DataLossAt(paths[i], framed.offset, rec.status().message());
      }
      absl::Status s;
      switch (rec->type) {
        case RecordType::kCreate: {
          if (state != nullptr || rec->seq != 1) {
            s = absl::DataLossError("unexpected create record");
            break;
          }
          absl::StatusOr<std::unique_ptr<SessionState>> created =
              SessionState::Create(rec->config);
          if (created.ok()) {
            state = *std::move(created);
          } else {
            s = created.status();
          }
          break;
        }
        case RecordType::kTokens:
        case RecordType::kTokensAllLayers:
          if (state == nullptr) {
            s = absl::DataLossError("tokens before the create record");
          } else {
            s = Apply(*rec, state.get(), &report);
          }
          break;
        case RecordType::kCheckpoint:
          break;  // a marker; the seq check above already proves coverage
        case RecordType::kDelete:
          deleted = true;
          break;
      }
      if (!s.ok()) {
        return DataLossAt(
            paths[i], framed.offset,
            absl::StrCat("replaying ", RecordTypeName(rec->type),
                         " record seq ", rec->seq, ": ", s.message()));
      }
      ++report.records_replayed;
    }
  }
  report.last_seq = std::max(prev, report.checkpoint_seq);

  if (deleted || state == nullptr) {
    // Nothing to serve: a delete that was durable before its files went,
    // or a session whose create record never became durable.
    report.outcome = deleted ? RecoveryReport::Outcome::kDeleted
                             : RecoveryReport::Outcome::kNeverCreated;
    for (const std::string& p : paths) {
      KVSKETCH_RETURN_IF_ERROR(env->DeleteFile(p));
    }
    if (files.checkpoint) KVSKETCH_RETURN_IF_ERROR(env->DeleteFile(ckpt_path));
    KVSKETCH_RETURN_IF_ERROR(env->SyncDir(dir));
    return result;
  }

  // Cut the torn tail so that a later recovery does not find it in the
  // middle of the log (followed by the new segment's records).
  std::vector<uint64_t> kept;
  int64_t kept_bytes = 0;
  for (size_t i = 0; i < n; ++i) {
    if (i < bad) {
      kept.push_back(files.generations[i]);
      kept_bytes += static_cast<int64_t>(contents[i].size());
    } else if (i == bad && parses[i].header_ok) {
      KVSKETCH_RETURN_IF_ERROR(
          env->TruncateFile(paths[i], parses[i].valid_bytes));
      kept.push_back(files.generations[i]);
      kept_bytes += static_cast<int64_t>(parses[i].valid_bytes);
    } else {
      KVSKETCH_RETURN_IF_ERROR(env->DeleteFile(paths[i]));
    }
  }
  if (bad < n) KVSKETCH_RETURN_IF_ERROR(env->SyncDir(dir));

  std::unique_ptr<SessionLog> log(new SessionLog(dir, name, options, env));
  const uint64_t generation = n == 0 ? 1 : files.generations.back() + 1;
  KVSKETCH_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file,
                            log->NewSegment(generation));
  log->writer_ = std::make_unique<WalWriter>(
      std::move(file), log->PathOf(SegmentFileName(name, generation)),
      report.last_seq, options.fsync_policy, options.fsync_interval,
      options.clock);
  {
    absl::MutexLock lock(&log->mu_);
    kept.push_back(generation);
    log->live_generations_ = std::move(kept);
    log->live_base_ = -(kept_bytes + static_cast<int64_t>(kSegmentHeaderBytes));
  }
  result.log = std::move(log);
  result.state = std::move(state);
  return result;
}

absl::StatusOr<uint64_t> SessionLog::LogStep(int layer, int64_t num_new_tokens,
                                             absl::Span<const float> keys,
                                             absl::Span<const float> values,
                                             int64_t num_queries,
                                             absl::Span<const float> queries) {
  return writer_->Append(RecordType::kTokens,
                         EncodeTokensPayload(layer, num_new_tokens, keys,
                                             values, num_queries, queries));
}

absl::StatusOr<uint64_t> SessionLog::LogAppendAllLayers(
    int64_t num_new_tokens, absl::Span<const float> keys,
    absl::Span<const float> values) {
  return writer_->Append(
      RecordType::kTokensAllLayers,
      EncodeTokensAllLayersPayload(num_new_tokens, keys, values));
}

absl::StatusOr<SessionLog::PendingCheckpoint> SessionLog::PrepareCheckpoint(
    const SessionState& state) {
  absl::MutexLock lock(&mu_);
  if (checkpoint_pending_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session log ", name_, ": a prepared checkpoint is not committed"));
  }
  KVSKETCH_RETURN_IF_ERROR(writer_->status());
  PendingCheckpoint ck;
  ck.seq = writer_->last_seq();
  ByteWriter w;
  w.PutString(kCheckpointTag);
  w.PutU64(ck.seq);
  w.PutString(name_);
  KVSKETCH_RETURN_IF_ERROR(state.Save(w));
  ck.blob = WrapSnapshot(w.data());
  const uint64_t generation = live_generations_.back() + 1;
  KVSKETCH_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file,
                            NewSegment(generation));
  KVSKETCH_RETURN_IF_ERROR(writer_->Rotate(
      std::move(file), PathOf(SegmentFileName(name_, generation))));
  ck.obsolete = live_generations_;
  live_generations_.push_back(generation);
  rotated_bytes_ = writer_->stats().bytes;
  checkpoint_pending_ = true;
  return ck;
}

absl::Status SessionLog::CommitCheckpoint(PendingCheckpoint checkpoint) {
  const std::string ckpt_path = PathOf(name_ + kCheckpointExtension);
  absl::Status s = WriteFileAtomically(env_, ckpt_path, checkpoint.blob);
  if (s.ok()) {
    // The marker is informational (recovery proves coverage by seq); it
    // rides along with the next batch instead of costing an fsync here.
    s = writer_
            ->Append(RecordType::kCheckpoint,
                     EncodeCheckpointPayload(checkpoint.seq))
            .status();
  }
  if (s.ok()) {
    for (uint64_t g : checkpoint.obsolete) {
      s = env_->DeleteFile(PathOf(SegmentFileName(name_, g)));
      if (!s.ok()) break;
    }
    if (s.ok()) s = env_->SyncDir(dir_);
  }
  absl::MutexLock lock(&mu_);
  checkpoint_pending_ = false;
  if (s.ok()) {
    live_generations_.erase(
        std::remove_if(live_generations_.begin(), live_generations_.end(),
                       [&](uint64_t g) {
                         return std::find(checkpoint.obsolete.begin(),
                                          checkpoint.obsolete.end(),
                                          g) != checkpoint.obsolete.end();
                       }),
        live_generations_.end());
    live_base_ = rotated_bytes_ - static_cast<int64_t>(kSegmentHeaderBytes);
  }
  return s;
}

absl::Status SessionLog::Checkpoint(const SessionState& state) {
  KVSKETCH_ASSIGN_OR_RETURN(PendingCheckpoint ck, PrepareCheckpoint(state));
  return CommitCheckpoint(std::move(ck));
}

absl::Status SessionLog::Delete() {
  KVSKETCH_RETURN_IF_ERROR(
      writer_->Append(RecordType::kDelete, absl::string_view()).status());
  // Durable before any file goes, whatever the policy: a crash while
  // unlinking must not bring back a deleted session.
  KVSKETCH_RETURN_IF_ERROR(writer_->Close());
  std::vector<uint64_t> generations;
  {
    absl::MutexLock lock(&mu_);
    generations = live_generations_;
    live_generations_.clear();
  }
  KVSKETCH_RETURN_IF_ERROR(
      env_->DeleteFile(PathOf(name_ + kCheckpointExtension)));
  for (uint64_t g : generations) {
    KVSKETCH_RETURN_IF_ERROR(
        env_->DeleteFile(PathOf(SegmentFileName(name_, g))));
  }
  return env_->SyncDir(dir_);
}

absl::Status SessionLog::Close() { return writer_->Close(); }

int64_t SessionLog::live_log_bytes() const {
  const int64_t written = writer_->stats().bytes;
  absl::MutexLock lock(&mu_);
  return written - live_base_;
}

}  // namespace kvsketch::server::durability
