// File: tests/server/session_log_test.cc
//
// One session's log, checkpoint and recovery (server/durability/
// session_log.h). The central property: a session recovered from disk
// after any crash point is the SessionState that saw every acknowledged
// step -- same Save bytes, and bit-identical attention outputs -- for
// approximators whose state depends on the queries too (evict).
#include "server/durability/session_log.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/io/byte_io.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/durability/file_env.h"
#include "server/durability/wal.h"

namespace kvsketch::server::durability {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string MakeTempDir() {
  std::string tmpl = ::testing::TempDir() + "/kvsketch_slog_XXXXXX";
  EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
  return tmpl;
}

std::string ReadAll(const std::string& path) {
  return *Env::Default()->ReadFile(path);
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

std::string SaveBytes(const SessionState& s) {
  ByteWriter w;
  EXPECT_TRUE(s.Save(w).ok());
  return w.Release();
}

SessionConfig Config(const std::string& spec, int layers = 2, int kv = 2,
                     int q = 4, int d = 8) {
  SessionConfig c;
  c.num_layers = layers;
  c.num_kv_heads = kv;
  c.num_query_heads = q;
  c.head_dim = d;
  c.spec = spec;
  return c;
}

// Drives the same random steps into a reference SessionState and into a
// logged one (state first, then the log, then WaitDurable: the server's
// order). A mix of bulk appends, causal multi-token steps, decode steps,
// query-only steps and all-layer appends.
class Workload {
 public:
  explicit Workload(const SessionConfig& config, uint32_t seed = 1)
      : rng_(seed) {
    ref_ = *SessionState::Create(config);
  }
  SessionState& ref() { return *ref_; }

  // Returns the token-layers the op appended.
  int64_t Op(SessionState* state, SessionLog* log) {
    const SessionConfig& c = ref_->config();
    std::uniform_int_distribution<int> pick(0, 9);
    const int kind = pick(rng_);
    if (kind == 0) {
      const int64_t t = 2;
      std::vector<float> k = Random(c.num_layers * c.num_kv_heads * t *
                                    c.head_dim),
                         v = Random(c.num_layers * c.num_kv_heads * t *
                                    c.value_dim);
      for (int l = 0; l < c.num_layers; ++l) {
        const size_t kp = k.size() / c.num_layers, vp = v.size() / c.num_layers;
        auto ks = absl::MakeConstSpan(k).subspan(l * kp, kp);
        auto vs = absl::MakeConstSpan(v).subspan(l * vp, vp);
        EXPECT_TRUE(ref_->Append(l, t, ks, vs).ok());
        EXPECT_TRUE(state->Append(l, t, ks, vs).ok());
      }
      absl::StatusOr<uint64_t> seq = log->LogAppendAllLayers(t, k, v);
      EXPECT_TRUE(seq.ok() && log->WaitDurable(*seq).ok());
      return t * c.num_layers;
    }
    const int layer = static_cast<int>(rng_() % c.num_layers);
    int64_t t = (kind <= 3) ? 1 : (kind <= 5) ? 3 : (kind <= 7) ? 0 : 2;
    int64_t m = (kind == 8) ? 0 : (t == 0 ? 2 : t);
    if (t == 0 && ref_->num_tokens(layer) == 0) t = m = 1;
    std::vector<float> k = Random(c.num_kv_heads * t * c.head_dim);
    std::vector<float> v = Random(c.num_kv_heads * t * c.value_dim);
    std::vector<float> q = Random(c.num_query_heads * m * c.head_dim);
    std::vector<float> out1(c.num_query_heads * m * c.value_dim),
        out2(out1.size());
    EXPECT_TRUE(ref_->Step(layer, t, k, v, m, q, absl::MakeSpan(out1)).ok());
    EXPECT_TRUE(state->Step(layer, t, k, v, m, q, absl::MakeSpan(out2)).ok());
    absl::StatusOr<uint64_t> seq = log->LogStep(layer, t, k, v, m, q);
    EXPECT_TRUE(seq.ok() && log->WaitDurable(*seq).ok());
    return t;
  }

  std::vector<float> Random(int64_t n) {
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    std::vector<float> x(static_cast<size_t>(n));
    for (float& f : x) f = u(rng_);
    return x;
  }

 private:
  std::mt19937 rng_;
  std::unique_ptr<SessionState> ref_;
};

std::unique_ptr<SessionState> Copy(const SessionState& s) {
  const std::string bytes = SaveBytes(s);
  ByteReader r(bytes);
  return *SessionState::Load(r);
}

// Same tokens, same Save bytes, and bit-identical outputs for fresh queries
// on every layer. The queries run on copies: an Attend changes evict's
// state, and the originals must stay equal to what the log holds.
void ExpectSameState(const SessionState& want, const SessionState& got,
                     Workload& w) {
  ASSERT_EQ(want.tokens_per_layer(), got.tokens_per_layer());
  EXPECT_TRUE(SaveBytes(want) == SaveBytes(got)) << "Save bytes differ";
  auto want_copy = Copy(want), got_copy = Copy(got);
  const SessionConfig& c = want.config();
  for (int l = 0; l < c.num_layers; ++l) {
    if (want.num_tokens(l) == 0) continue;
    const std::vector<float> q = w.Random(c.num_query_heads * 2 * c.head_dim);
    std::vector<float> a(c.num_query_heads * 2 * c.value_dim), b(a.size());
    ASSERT_TRUE(want_copy->Step(l, 0, {}, {}, 2, q, absl::MakeSpan(a)).ok());
    ASSERT_TRUE(got_copy->Step(l, 0, {}, {}, 2, q, absl::MakeSpan(b)).ok());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0)
        << "layer " << l;
  }
}

class RecoveryTest : public ::testing::TestWithParam<std::string> {
 protected:
  ~RecoveryTest() override { fs::remove_all(dir_); }
  std::string dir_ = MakeTempDir();
  DurabilityOptions options_;
};

TEST_P(RecoveryTest, CheckpointThenMoreStepsRecoversTheSameState) {
  const SessionConfig config = Config(GetParam());
  Workload w(config, 7);
  auto log = *SessionLog::Create(dir_, "s1", config, options_);
  auto state = *SessionState::Create(config);
  for (int i = 0; i < 25; ++i) w.Op(state.get(), log.get());
  const uint64_t ckpt_seq = log->last_seq();
  EXPECT_EQ(ckpt_seq, 26u);  // the create record, then one per step
  const int64_t bytes_before = log->live_log_bytes();
  ASSERT_TRUE(log->Checkpoint(*state).ok());
  EXPECT_LT(log->live_log_bytes(), bytes_before);
  int64_t tokens_after = 0;
  for (int i = 0; i < 20; ++i) tokens_after += w.Op(state.get(), log.get());
  log.reset();  // a crash: no Close (every ack above was already durable)

  auto rec = SessionLog::Recover(dir_, "s1", options_);
  ASSERT_TRUE(rec.ok()) << rec.status();
  const RecoveryReport& r = rec->report;
  EXPECT_EQ(r.outcome, RecoveryReport::Outcome::kRecovered) << r.ToString();
  EXPECT_EQ(r.checkpoint_seq, ckpt_seq);
  // 20 steps, plus the checkpoint marker record.
  EXPECT_EQ(r.records_replayed, 21);
  EXPECT_EQ(r.tokens_replayed, tokens_after);
  EXPECT_EQ(r.last_seq, ckpt_seq + 21);
  EXPECT_EQ(r.torn_bytes_dropped, 0);
  // The checkpointed segment was deleted: one old segment, no more.
  EXPECT_EQ(r.segments, 1);
  ExpectSameState(w.ref(), *rec->state, w);

  // The recovered log goes on where it stopped; a second recovery sees
  // both generations of steps.
  for (int i = 0; i < 10; ++i) w.Op(rec->state.get(), rec->log.get());
  ASSERT_TRUE(rec->log->Close().ok());
  auto again = SessionLog::Recover(dir_, "s1", options_);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->report.last_seq, ckpt_seq + 31);
  ExpectSameState(w.ref(), *again->state, w);
}

TEST_P(RecoveryTest, NoCheckpointReplaysFromTheCreateRecord) {
  const SessionConfig config = Config(GetParam(), 1, 1, 2, 4);
  Workload w(config, 3);
  auto log = *SessionLog::Create(dir_, "t~s.2", config, options_);
  auto state = *SessionState::Create(config);
  int64_t tokens = 0;
  for (int i = 0; i < 15; ++i) tokens += w.Op(state.get(), log.get());
  log.reset();
  auto rec = SessionLog::Recover(dir_, "t~s.2", options_);
  ASSERT_TRUE(rec.ok()) << rec.status();
  EXPECT_EQ(rec->report.checkpoint_seq, 0u);
  EXPECT_EQ(rec->report.records_replayed, 16);
  EXPECT_EQ(rec->report.tokens_replayed, tokens);
  ExpectSameState(w.ref(), *rec->state, w);
}

// Test names: the kind, plus "_params" when the spec sets parameters.
std::string SpecTestName(const ::testing::TestParamInfo<std::string>& p) {
  const size_t colon = p.param.find(':');
  std::string name = p.param.substr(0, colon);
  if (colon != std::string::npos) name += "_params";
  return name;
}

INSTANTIATE_TEST_SUITE_P(Specs, RecoveryTest,
                         ::testing::Values("exact", "exact:store=f16",
                                           "evict:budget=6,sinks=1,window=2",
                                           "sketch", "topk"),
                         SpecTestName);

class SessionLogTest : public ::testing::Test {
 protected:
  ~SessionLogTest() override { fs::remove_all(dir_); }
  std::string Path(const std::string& file) const {
    return absl::StrCat(dir_, "/", file);
  }
  std::string dir_ = MakeTempDir();
  DurabilityOptions options_;
  SessionConfig config_ = Config("exact", 1, 1, 1, 4);
};

TEST_F(SessionLogTest, CrashBeforeCommitKeepsEverySegment) {
  Workload w(config_);
  auto log = *SessionLog::Create(dir_, "s", config_, options_);
  auto state = *SessionState::Create(config_);
  for (int i = 0; i < 6; ++i) w.Op(state.get(), log.get());
  auto pending = log->PrepareCheckpoint(*state);
  ASSERT_TRUE(pending.ok()) << pending.status();
  EXPECT_EQ(log->PrepareCheckpoint(*state).status().code(),
            absl::StatusCode::kFailedPrecondition);
  for (int i = 0; i < 4; ++i) w.Op(state.get(), log.get());
  // Crash with the checkpoint half-written: a stray .tmp, no .ckpt.
  WriteAll(Path("s.ckpt.tmp"), "half a checkpoint");
  log.reset();
  auto rec = SessionLog::Recover(dir_, "s", options_);
  ASSERT_TRUE(rec.ok()) << rec.status();
  EXPECT_EQ(rec->report.checkpoint_seq, 0u);
  EXPECT_EQ(rec->report.segments, 2);
  EXPECT_EQ(rec->report.records_replayed, 11);
  EXPECT_FALSE(fs::exists(Path("s.ckpt.tmp")));
  ExpectSameState(w.ref(), *rec->state, w);
}

TEST_F(SessionLogTest, CrashAfterRenameBeforeSegmentDeletion) {
  Workload w(config_);
  auto log = *SessionLog::Create(dir_, "s", config_, options_);
  auto state = *SessionState::Create(config_);
  for (int i = 0; i < 6; ++i) w.Op(state.get(), log.get());
  const std::string old_segment = Path(SessionLog::SegmentFileName("s", 1));
  const std::string old_bytes = ReadAll(old_segment);
  ASSERT_TRUE(log->Checkpoint(*state).ok());
  EXPECT_FALSE(fs::exists(old_segment));
  for (int i = 0; i < 3; ++i) w.Op(state.get(), log.get());
  log.reset();
  // As if the process died between the rename and the unlink.
  WriteAll(old_segment, old_bytes);
  auto rec = SessionLog::Recover(dir_, "s", options_);
  ASSERT_TRUE(rec.ok()) << rec.status();
  EXPECT_EQ(rec->report.checkpoint_seq, 7u);
  EXPECT_EQ(rec->report.segments, 2);
  EXPECT_EQ(rec->report.records_replayed, 4);  // 3 steps + the marker
  ExpectSameState(w.ref(), *rec->state, w);
}

TEST_F(SessionLogTest, TornTailAtEveryOffsetOfTheLastRecordIsDropped) {
  // Five steps; the fifth is cut at every byte offset inside it. What
  // recovers is exactly the first four, and the log continues cleanly.
  Workload w(config_, 11);
  auto log = *SessionLog::Create(dir_, "s", config_, options_);
  auto state = *SessionState::Create(config_);
  for (int i = 0; i < 4; ++i) w.Op(state.get(), log.get());
  const std::string four = SaveBytes(*state);
  w.Op(state.get(), log.get());
  log.reset();
  const std::string segment = SessionLog::SegmentFileName("s", 1);
  const std::string full = ReadAll(Path(segment));
  const SegmentParse parse = ParseSegment(full);
  ASSERT_EQ(parse.records.size(), 6u);
  const size_t last = parse.records.back().offset;

  DurabilityOptions fast = options_;
  fast.fsync_policy =
      FsyncPolicy::kOff;  // recovery's own fsyncs: not the point
  for (size_t cut = last; cut < full.size(); ++cut) {
    SCOPED_TRACE(absl::StrCat("cut at ", cut, " of ", full.size()));
    const std::string dir = MakeTempDir();
    WriteAll(absl::StrCat(dir, "/", segment), full.substr(0, cut));
    auto rec = SessionLog::Recover(dir, "s", fast);
    ASSERT_TRUE(rec.ok()) << rec.status();
    EXPECT_EQ(rec->report.records_replayed, 5);
    EXPECT_EQ(rec->report.last_seq, 5u);
    EXPECT_EQ(rec->report.torn_bytes_dropped, static_cast<int64_t>(cut - last));
    if (cut > last) {
      EXPECT_THAT(rec->report.torn_file, HasSubstr(segment));
      EXPECT_THAT(rec->report.ToString(), HasSubstr("torn tail"));
    }
    EXPECT_EQ(SaveBytes(*rec->state), four);
    // Cut on disk, so the tail is not mistaken for mid-log corruption once
    // the next segment holds records.
    EXPECT_EQ(fs::file_size(absl::StrCat(dir, "/", segment)), last);
    std::vector<float> k = {1, 2, 3, 4}, v = {4, 3, 2, 1};
    ASSERT_TRUE(rec->state->Append(0, 1, k, v).ok());
    ASSERT_TRUE(
        rec->log->WaitDurable(*rec->log->LogStep(0, 1, k, v, 0, {})).ok());
    const std::string five = SaveBytes(*rec->state);
    rec->log.reset();
    auto again = SessionLog::Recover(dir, "s", fast);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->report.last_seq, 6u);
    EXPECT_EQ(again->report.torn_bytes_dropped, 0);
    EXPECT_EQ(SaveBytes(*again->state), five);
    fs::remove_all(dir);
  }
}

TEST_F(SessionLogTest,
       FlippedByteInAMiddleRecordIsDataLossNamingFileAndOffset) {
  Workload w(config_, 5);
  auto log = *SessionLog::Create(dir_, "s", config_, options_);
  auto state = *SessionState::Create(config_);
  for (int i = 0; i < 5; ++i) w.Op(state.get(), log.get());
  log.reset();
  const std::string path = Path(SessionLog::SegmentFileName("s", 1));
  const std::string full = ReadAll(path);
  const SegmentParse parse = ParseSegment(full);
  ASSERT_EQ(parse.records.size(), 6u);
  const size_t begin = parse.records[3].offset, end = parse.records[4].offset;
  for (size_t i = begin; i < end; ++i) {
    SCOPED_TRACE(absl::StrCat("flip at ", i));
    std::string bad = full;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    WriteAll(path, bad);
    auto rec = SessionLog::Recover(dir_, "s", options_);
    ASSERT_EQ(rec.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(rec.status().message(), HasSubstr(path));
    EXPECT_THAT(rec.status().message(),
                HasSubstr(absl::StrCat("at offset ", begin, ":")));
    EXPECT_THAT(rec.status().message(), HasSubstr("followed by valid records"));
    // A failed recovery changes nothing on disk.
    EXPECT_EQ(ReadAll(path), bad);
  }
}

TEST_F(SessionLogTest, MissingSegmentIsASequenceGap) {
  Workload w(config_);
  auto log = *SessionLog::Create(dir_, "s", config_, options_);
  auto state = *SessionState::Create(config_);
  for (int i = 0; i < 3; ++i) w.Op(state.get(), log.get());
  ASSERT_TRUE(log->PrepareCheckpoint(*state).ok());  // rotate, never commit
  for (int i = 0; i < 3; ++i) w.Op(state.get(), log.get());
  log.reset();
  fs::remove(Path(SessionLog::SegmentFileName("s", 1)));
  auto rec = SessionLog::Recover(dir_, "s", options_);
  EXPECT_EQ(rec.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(rec.status().message(), HasSubstr("records missing"));
}

TEST_F(SessionLogTest, CorruptCheckpointIsDataLossNamingIt) {
  Workload w(config_);
  auto log = *SessionLog::Create(dir_, "s", config_, options_);
  auto state = *SessionState::Create(config_);
  for (int i = 0; i < 3; ++i) w.Op(state.get(), log.get());
  ASSERT_TRUE(log->Checkpoint(*state).ok());
  log.reset();
  std::string ckpt = ReadAll(Path("s.ckpt"));
  ckpt[ckpt.size() / 2] ^= 0x40;
  WriteAll(Path("s.ckpt"), ckpt);
  auto rec = SessionLog::Recover(dir_, "s", options_);
  EXPECT_EQ(rec.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(rec.status().message(), HasSubstr(Path("s.ckpt")));
}

TEST_F(SessionLogTest, DeleteRemovesEveryFile) {
  Workload w(config_);
  auto log = *SessionLog::Create(dir_, "gone", config_, options_);
  auto keep = *SessionLog::Create(dir_, "kept", config_, options_);
  auto state = *SessionState::Create(config_);
  for (int i = 0; i < 3; ++i) w.Op(state.get(), log.get());
  ASSERT_TRUE(log->Checkpoint(*state).ok());
  ASSERT_TRUE(log->Delete().ok());
  EXPECT_EQ(*SessionLog::ListSessionNames(dir_),
            std::vector<std::string>{"kept"});
  EXPECT_EQ(SessionLog::Recover(dir_, "gone", options_).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(SessionLogTest, DurableDeleteRecordWinsOverLeftoverFiles) {
  // A crash after the delete record became durable but before the unlinks.
  const std::string seg = absl::StrCat(
      EncodeSegmentHeader(1),
      FrameRecord(RecordType::kCreate, 1, EncodeSessionConfig(config_)),
      FrameRecord(RecordType::kTokens, 2,
                  EncodeTokensPayload(0, 1, {1, 2, 3, 4}, {1, 2, 3, 4}, 0, {})),
      FrameRecord(RecordType::kDelete, 3, ""));
  WriteAll(Path(SessionLog::SegmentFileName("s", 1)), seg);
  auto rec = SessionLog::Recover(dir_, "s", options_);
  ASSERT_TRUE(rec.ok()) << rec.status();
  EXPECT_EQ(rec->report.outcome, RecoveryReport::Outcome::kDeleted);
  EXPECT_EQ(rec->state, nullptr);
  EXPECT_TRUE(SessionLog::ListSessionNames(dir_)->empty());
}

TEST_F(SessionLogTest, TornCreateRecordMeansTheSessionNeverExisted) {
  const std::string seg = absl::StrCat(
      EncodeSegmentHeader(1),
      FrameRecord(RecordType::kCreate, 1, EncodeSessionConfig(config_)));
  WriteAll(Path(SessionLog::SegmentFileName("s", 1)),
           seg.substr(0, seg.size() - 3));
  auto rec = SessionLog::Recover(dir_, "s", options_);
  ASSERT_TRUE(rec.ok()) << rec.status();
  EXPECT_EQ(rec->report.outcome, RecoveryReport::Outcome::kNeverCreated);
  EXPECT_GT(rec->report.torn_bytes_dropped, 0);
  EXPECT_TRUE(SessionLog::ListSessionNames(dir_)->empty());
}

TEST_F(SessionLogTest, BadNamesConfigsAndDuplicatesAreRefused) {
  EXPECT_EQ(SessionLog::Create(dir_, "a/b", config_, options_).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SessionLog::Create(dir_, "", config_, options_).status().code(),
            absl::StatusCode::kInvalidArgument);
  SessionConfig bad = config_;
  bad.num_query_heads = 3;  // not a multiple of num_kv_heads = 2
  bad.num_kv_heads = 2;
  EXPECT_EQ(SessionLog::Create(dir_, "x", bad, options_).status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(SessionLog::Create(dir_, "x", config_, options_).ok());
  EXPECT_EQ(SessionLog::Create(dir_, "x", config_, options_).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(SessionLog::Recover(dir_, "nobody", options_).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(SessionLogTest, ListSessionNamesFindsLogsAndCheckpoints) {
  Workload w(config_);
  for (const char* name : {"b.1", "t~a", "c"}) {
    auto log = *SessionLog::Create(dir_, name, config_, options_);
    if (std::string(name) == "c") {
      auto state = *SessionState::Create(config_);
      ASSERT_TRUE(log->Checkpoint(*state).ok());
    }
  }
  WriteAll(Path("unrelated.txt"), "x");
  EXPECT_EQ(*SessionLog::ListSessionNames(dir_),
            (std::vector<std::string>{"b.1", "c", "t~a"}));
}

TEST_F(SessionLogTest, FsyncFailurePoisonsTheSessionLog) {
  FaultInjectionEnv env(Env::Default());
  DurabilityOptions options = options_;
  options.env = &env;
  auto log = *SessionLog::Create(dir_, "s", config_, options);
  std::vector<float> k = {1, 2, 3, 4}, v = {1, 1, 1, 1};
  ASSERT_TRUE(log->WaitDurable(*log->LogStep(0, 1, k, v, 0, {})).ok());
  env.FailSyncAfter(1);
  const absl::Status s = log->WaitDurable(*log->LogStep(0, 1, k, v, 0, {}));
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("injected fsync failure"));
  EXPECT_EQ(log->LogStep(0, 1, k, v, 0, {}).status(), s);
  auto state = *SessionState::Create(config_);
  EXPECT_FALSE(log->Checkpoint(*state).ok());
  // Everything acknowledged before the failure is recoverable.
  log.reset();
  auto rec = SessionLog::Recover(dir_, "s", options_);
  ASSERT_TRUE(rec.ok()) << rec.status();
  EXPECT_GE(rec->state->num_tokens(0), 1);
}

// Token i of the kill -9 test: the same floats in the child and the
// reference.
void TokenOf(int64_t i, std::vector<float>* k, std::vector<float>* v) {
  for (size_t j = 0; j < k->size(); ++j) {
    (*k)[j] = static_cast<float>((i * 7 + static_cast<int64_t>(j)) % 13) / 8;
  }
  for (size_t j = 0; j < v->size(); ++j) {
    (*v)[j] = static_cast<float>((i * 5 + static_cast<int64_t>(j)) % 11) / 4;
  }
}

// The child: recover (or create) the session, then append token after
// token, writing each token's index to the pipe once WaitDurable returned
// (the acknowledgement). Runs until killed.
[[noreturn]] void AppendUntilKilled(const std::string& dir,
                                    const SessionConfig& config, int fd) {
  std::unique_ptr<SessionLog> log;
  std::unique_ptr<SessionState> state;
  auto rec = SessionLog::Recover(dir, "k", DurabilityOptions());
  if (rec.ok()) {
    log = std::move(rec->log);
    state = std::move(rec->state);
  } else {
    auto created = SessionLog::Create(dir, "k", config, DurabilityOptions());
    if (!created.ok()) _exit(2);
    log = *std::move(created);
    state = *SessionState::Create(config);
  }
  std::vector<float> k(4), v(4);
  for (int64_t i = state->num_tokens(0);; ++i) {
    TokenOf(i, &k, &v);
    if (!state->Append(0, 1, k, v).ok()) _exit(3);
    auto seq = log->LogStep(0, 1, k, v, 0, {});
    if (!seq.ok() || !log->WaitDurable(*seq).ok()) _exit(4);
    if (::write(fd, &i, sizeof(i)) != sizeof(i)) _exit(5);
  }
}

TEST_F(SessionLogTest, KillNineNeverLosesAnAcknowledgedStep) {
  // Rounds of: a child process appends with every_batch acks, the parent
  // SIGKILLs it after a random number of acks, then recovers. Every token
  // acknowledged in any round is there, and the state equals a reference
  // fed the same tokens (unacknowledged tokens may survive too: the ack
  // is a lower bound).
  std::mt19937 rng(2026);
  int64_t acked_total = -1;
  for (int round = 0; round < 8; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      AppendUntilKilled(dir_, config_, fds[1]);
    }
    ::close(fds[1]);
    const int kill_after = 1 + static_cast<int>(rng() % 25);
    int64_t got = 0;
    for (int n = 0; ::read(fds[0], &got, sizeof(got)) == sizeof(got);) {
      acked_total = std::max(acked_total, got);
      if (++n == kill_after) ::kill(pid, SIGKILL);
    }
    ::close(fds[0]);
    int wstatus = 0;
    ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(wstatus)) << "child exited " << wstatus;
    ASSERT_EQ(WTERMSIG(wstatus), SIGKILL);

    auto rec = SessionLog::Recover(dir_, "k", options_);
    ASSERT_TRUE(rec.ok()) << rec.status();
    const int64_t n = rec->state->num_tokens(0);
    EXPECT_GE(n, acked_total + 1) << rec->report.ToString();
    auto ref = *SessionState::Create(config_);
    std::vector<float> k(4), v(4);
    for (int64_t i = 0; i < n; ++i) {
      TokenOf(i, &k, &v);
      ASSERT_TRUE(ref->Append(0, 1, k, v).ok());
    }
    EXPECT_TRUE(SaveBytes(*ref) == SaveBytes(*rec->state));
    ASSERT_TRUE(rec->log->Close().ok());
  }
  EXPECT_GT(acked_total, 8);
}

}  // namespace
}  // namespace kvsketch::server::durability
