// File: tests/server/wal_test.cc
//
// The write-ahead log's record format and group-commit writer
// (server/durability/wal.h): every record type round-trips, a torn tail is
// told apart from corruption, the fsync policies are observed through a
// counting file layer and a fake clock (no wall-clock asserts), concurrent
// appenders all get durable acks, and an I/O error poisons the writer.
#include "server/durability/wal.h"

#include <stdlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/durability/file_env.h"

namespace kvsketch::server::durability {
namespace {

using ::testing::HasSubstr;

std::string MakeTempDir() {
  std::string tmpl = ::testing::TempDir() + "/kvsketch_wal_XXXXXX";
  EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
  return tmpl;
}

std::vector<float> Ramp(size_t n, float start) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + 0.25f * static_cast<float>(i);
  return v;
}

SessionConfig TestConfig() {
  SessionConfig c;
  c.num_layers = 3;
  c.num_kv_heads = 2;
  c.num_query_heads = 4;
  c.head_dim = 8;
  c.value_dim = 4;
  c.scale = 0.5f;
  c.spec = "exact";
  c.layer_specs[2] = "topk:alpha=2";
  c.max_tokens = 1000;
  return c;
}

// A segment built by hand: header + framed records.
std::string Segment(uint64_t generation,
                    const std::vector<std::string>& frames) {
  std::string s = EncodeSegmentHeader(generation);
  for (const std::string& f : frames) s += f;
  return s;
}

TEST(WalFormatTest, EveryRecordTypeRoundTrips) {
  const SessionConfig config = TestConfig();
  const std::vector<float> k = Ramp(2 * 3 * 8, -1), v = Ramp(2 * 3 * 4, 2),
                           q = Ramp(4 * 3 * 8, 0.5f);
  const std::string seg = Segment(
      7, {FrameRecord(RecordType::kCreate, 1, EncodeSessionConfig(config)),
          FrameRecord(RecordType::kTokens, 2,
                      EncodeTokensPayload(1, 3, k, v, 3, q)),
          FrameRecord(RecordType::kTokens, 3,
                      EncodeTokensPayload(0, 3, k, v, 0, {})),
          FrameRecord(RecordType::kTokensAllLayers, 4,
                      EncodeTokensAllLayersPayload(1, k, v)),
          FrameRecord(RecordType::kCheckpoint, 5, EncodeCheckpointPayload(3)),
          FrameRecord(RecordType::kDelete, 6, "")});
  const SegmentParse parse = ParseSegment(seg);
  ASSERT_TRUE(parse.header_ok);
  EXPECT_FALSE(parse.bad) << parse.bad_reason;
  EXPECT_EQ(parse.generation, 7u);
  EXPECT_EQ(parse.valid_bytes, seg.size());
  ASSERT_EQ(parse.records.size(), 6u);
  for (size_t i = 0; i < parse.records.size(); ++i) {
    EXPECT_EQ(parse.records[i].seq, i + 1);
  }
  EXPECT_EQ(parse.records[0].offset, kSegmentHeaderBytes);

  auto decode = [&](int i) {
    const FramedRecord& f = parse.records[i];
    absl::StatusOr<WalRecord> r = DecodeRecord(f.type, f.seq, f.payload);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : WalRecord();
  };
  const WalRecord create = decode(0);
  EXPECT_EQ(create.type, RecordType::kCreate);
  EXPECT_EQ(create.config.num_layers, 3);
  EXPECT_EQ(create.config.num_kv_heads, 2);
  EXPECT_EQ(create.config.num_query_heads, 4);
  EXPECT_EQ(create.config.head_dim, 8);
  EXPECT_EQ(create.config.value_dim, 4);
  EXPECT_EQ(create.config.scale, 0.5f);
  EXPECT_EQ(create.config.spec, "exact");
  EXPECT_EQ(create.config.layer_specs, config.layer_specs);
  EXPECT_EQ(create.config.max_tokens, 1000);

  const WalRecord step = decode(1);
  EXPECT_EQ(step.type, RecordType::kTokens);
  EXPECT_EQ(step.layer, 1);
  EXPECT_EQ(step.num_tokens, 3);
  EXPECT_EQ(step.num_queries, 3);
  EXPECT_EQ(step.keys, k);
  EXPECT_EQ(step.values, v);
  EXPECT_EQ(step.queries, q);

  const WalRecord append = decode(2);
  EXPECT_EQ(append.layer, 0);
  EXPECT_EQ(append.num_queries, 0);
  EXPECT_TRUE(append.queries.empty());
  EXPECT_EQ(append.keys, k);

  const WalRecord all = decode(3);
  EXPECT_EQ(all.type, RecordType::kTokensAllLayers);
  EXPECT_EQ(all.num_tokens, 1);
  EXPECT_EQ(all.keys, k);
  EXPECT_EQ(all.values, v);

  EXPECT_EQ(decode(4).checkpoint_seq, 3u);
  EXPECT_EQ(decode(5).type, RecordType::kDelete);
  EXPECT_TRUE(ParseWalForFuzzing(seg).ok());
}

TEST(WalFormatTest, MalformedPayloadsAreDataLoss) {
  // A float count larger than the payload, a negative token count, a
  // checkpoint marker covering itself, trailing bytes: each is DataLoss.
  std::string p = EncodeTokensPayload(0, 1, Ramp(8, 0), Ramp(4, 0), 0, {});
  EXPECT_EQ(DecodeRecord(RecordType::kTokens, 2, p.substr(0, p.size() - 1))
                .status()
                .code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(DecodeRecord(RecordType::kTokens, 2, p + "x").status().code(),
            absl::StatusCode::kDataLoss);
  const std::string neg = EncodeTokensPayload(0, -1, {}, {}, 0, {});
  EXPECT_THAT(DecodeRecord(RecordType::kTokens, 2, neg).status().message(),
              HasSubstr("negative token count"));
  EXPECT_EQ(DecodeRecord(RecordType::kCheckpoint, 4, EncodeCheckpointPayload(4))
                .status()
                .code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(DecodeRecord(RecordType::kDelete, 4, "x").status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(WalFormatTest, TornTailAtEveryOffsetIsNotCorruption) {
  std::vector<std::string> frames;
  for (uint64_t seq = 1; seq <= 4; ++seq) {
    frames.push_back(
        FrameRecord(RecordType::kTokens, seq,
                    EncodeTokensPayload(0, 1, Ramp(8, static_cast<float>(seq)),
                                        Ramp(4, 0), 0, {})));
  }
  const std::string seg = Segment(1, frames);
  const size_t last_start = seg.size() - frames.back().size();
  for (size_t cut = last_start; cut < seg.size(); ++cut) {
    SCOPED_TRACE(absl::StrCat("cut at ", cut));
    const std::string torn = seg.substr(0, cut);
    const SegmentParse parse = ParseSegment(torn);
    ASSERT_TRUE(parse.header_ok);
    EXPECT_EQ(parse.records.size(), 3u);
    EXPECT_EQ(parse.valid_bytes, last_start);
    EXPECT_EQ(parse.bad, cut > last_start);
    EXPECT_FALSE(HasValidRecordAfter(torn, parse.valid_bytes, 3));
    EXPECT_TRUE(ParseWalForFuzzing(torn).ok());
  }
  // A torn header is bad but never crashes the parser.
  for (size_t cut = 0; cut < kSegmentHeaderBytes; ++cut) {
    const SegmentParse parse = ParseSegment(seg.substr(0, cut));
    EXPECT_FALSE(parse.header_ok);
    EXPECT_TRUE(parse.bad);
  }
}

TEST(WalFormatTest, FlippedByteInAMiddleRecordIsFollowedByValidRecords) {
  std::vector<std::string> frames;
  for (uint64_t seq = 1; seq <= 3; ++seq) {
    frames.push_back(
        FrameRecord(RecordType::kTokens, seq,
                    EncodeTokensPayload(0, 1, Ramp(8, 0), Ramp(4, 0), 0, {})));
  }
  const std::string seg = Segment(1, frames);
  const size_t mid = kSegmentHeaderBytes + frames[0].size();
  for (size_t i = mid; i < mid + frames[1].size(); ++i) {
    SCOPED_TRACE(absl::StrCat("flip at ", i));
    std::string bad = seg;
    bad[i] = static_cast<char>(bad[i] ^ 0x10);
    const SegmentParse parse = ParseSegment(bad);
    ASSERT_TRUE(parse.bad);
    EXPECT_EQ(parse.records.size(), 1u);
    EXPECT_EQ(parse.valid_bytes, mid);
    EXPECT_TRUE(HasValidRecordAfter(bad, parse.valid_bytes, 1));
    const absl::Status s = ParseWalForFuzzing(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("offset ", mid)));
  }
}

TEST(WalFormatTest, RandomDamageIsClassifiedNeverMisread) {
  // Deterministic mutations of a valid segment: flipped bytes, cut tails,
  // duplicated and deleted spans. The reader answers OK or DataLoss and
  // never reads out of bounds (ASan builds check that); a pure cut is
  // always OK (a torn tail), a flip inside a record before the last never.
  std::vector<std::string> frames;
  for (uint64_t seq = 1; seq <= 6; ++seq) {
    frames.push_back(
        FrameRecord(RecordType::kTokens, seq,
                    EncodeTokensPayload(0, 2, Ramp(16, static_cast<float>(seq)),
                                        Ramp(8, 1), 2, Ramp(16, 2))));
  }
  const std::string seg = Segment(3, frames);
  const size_t last_start = seg.size() - frames.back().size();
  std::mt19937 rng(42);
  int data_loss = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string m = seg;
    const int kind = iter % 4;
    const size_t at = rng() % m.size();
    if (kind == 0) {
      m[at] = static_cast<char>(m[at] ^ (1 + rng() % 255));
    } else if (kind == 1) {
      m.resize(at);
    } else if (kind == 2) {
      m.insert(at, m.substr(rng() % m.size(), 1 + rng() % 64));
    } else {
      m.erase(at, 1 + rng() % 64);
    }
    const absl::Status s = ParseWalForFuzzing(m);
    ASSERT_TRUE(s.ok() || s.code() == absl::StatusCode::kDataLoss) << s;
    if (kind == 1 && at >= kSegmentHeaderBytes) {
      EXPECT_TRUE(s.ok()) << "cut at " << at << ": " << s;
    }
    if (kind == 0 && at >= kSegmentHeaderBytes && at < last_start) {
      EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << "flip at " << at;
    }
    data_loss += s.code() == absl::StatusCode::kDataLoss;
  }
  EXPECT_GT(data_loss, 0);
}

// ---------------------------------------------------------------------------
// WalWriter over a counting file layer.

class WalWriterTest : public ::testing::Test {
 protected:
  ~WalWriterTest() override { std::filesystem::remove_all(dir_); }
  std::unique_ptr<WalWriter> Open(
      FsyncPolicy policy, absl::Duration interval = absl::ZeroDuration(),
      Clock* clock = nullptr) {
    path_ = dir_ + "/w.0000000001.wal";
    auto file = env_.NewWritableFile(path_);
    EXPECT_TRUE(file.ok()) << file.status();
    EXPECT_TRUE((*file)->Append(EncodeSegmentHeader(1)).ok());
    return std::make_unique<WalWriter>(*std::move(file), path_, 0, policy,
                                       interval, clock);
  }
  static std::string Payload(int tag, int i) {
    return EncodeTokensPayload(
        0, 1, {static_cast<float>(tag), static_cast<float>(i)}, {1}, 0, {});
  }
  SegmentParse ReadBack() {
    contents_ = *Env::Default()->ReadFile(path_);
    return ParseSegment(contents_);
  }

  std::string dir_ = MakeTempDir();
  std::string path_;
  std::string contents_;
  FakeClock clock_;
  FaultInjectionEnv env_{Env::Default(), &clock_};
};

TEST_F(WalWriterTest, EveryBatchSyncsOncePerSequentialAck) {
  auto w = Open(FsyncPolicy::kEveryBatch);
  const int64_t writes_before = env_.counters().writes;
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<uint64_t> seq =
        w->Append(RecordType::kTokens, Payload(0, i));
    ASSERT_TRUE(seq.ok());
    EXPECT_EQ(*seq, static_cast<uint64_t>(i + 1));
    // Nothing reaches the file until someone waits.
    EXPECT_EQ(env_.counters().syncs, i);
    ASSERT_TRUE(w->WaitDurable(*seq).ok());
    EXPECT_EQ(env_.counters().syncs, i + 1);
    // Waiting again for a durable record costs nothing.
    ASSERT_TRUE(w->WaitDurable(*seq).ok());
    EXPECT_EQ(env_.counters().syncs, i + 1);
  }
  EXPECT_EQ(env_.counters().writes - writes_before, 5);
  EXPECT_EQ(w->stats().syncs, 5);
  EXPECT_EQ(w->stats().records, 5);
  EXPECT_EQ(ReadBack().records.size(), 5u);
  EXPECT_EQ(w->WaitDurable(6).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(WalWriterTest, EveryBatchBurstSharesOneWriteAndOneFsync) {
  auto w = Open(FsyncPolicy::kEveryBatch);
  const int64_t writes_before = env_.counters().writes;
  uint64_t last = 0;
  for (int i = 0; i < 20; ++i) {
    last = *w->Append(RecordType::kTokens, Payload(0, i));
  }
  ASSERT_TRUE(w->WaitDurable(last).ok());
  EXPECT_EQ(env_.counters().syncs, 1);
  EXPECT_EQ(env_.counters().writes - writes_before, 1);
  for (uint64_t s = 1; s <= last; ++s) EXPECT_TRUE(w->WaitDurable(s).ok());
  EXPECT_EQ(env_.counters().syncs, 1);
}

TEST_F(WalWriterTest, OffNeverSyncsButWritesBeforeAck) {
  auto w = Open(FsyncPolicy::kOff);
  for (int i = 0; i < 4; ++i) {
    const uint64_t seq = *w->Append(RecordType::kTokens, Payload(0, i));
    ASSERT_TRUE(w->WaitDurable(seq).ok());
    // The ack means write(2) returned: another reader sees the record.
    EXPECT_EQ(ReadBack().records.size(), static_cast<size_t>(i + 1));
  }
  EXPECT_EQ(env_.counters().syncs, 0);
  // An explicit Sync fsyncs whatever the policy.
  ASSERT_TRUE(w->Sync().ok());
  EXPECT_EQ(env_.counters().syncs, 1);
}

TEST_F(WalWriterTest, IntervalSyncsAtMostOncePerInterval) {
  const absl::Duration interval = absl::Milliseconds(10);
  auto w = Open(FsyncPolicy::kInterval, interval, &clock_);
  // Sequential acks: each waits for the next allowed fsync.
  for (int i = 0; i < 6; ++i) {
    const uint64_t seq = *w->Append(RecordType::kTokens, Payload(0, i));
    ASSERT_TRUE(w->WaitDurable(seq).ok());
    clock_.Advance(absl::Milliseconds(3));  // the caller's own work
  }
  const std::vector<absl::Time> times = env_.sync_times();
  ASSERT_EQ(times.size(), 6u);
  for (size_t i = 1; i < times.size(); ++i) {
    EXPECT_GE(times[i] - times[i - 1], interval) << "fsync " << i;
  }
  // A burst within one interval: one fsync for all of it.
  uint64_t last = 0;
  for (int i = 0; i < 10; ++i) {
    last = *w->Append(RecordType::kTokens, Payload(1, i));
  }
  ASSERT_TRUE(w->WaitDurable(last).ok());
  EXPECT_EQ(env_.counters().syncs, 7);
  EXPECT_GE(env_.sync_times().back() - times.back(), interval);
  EXPECT_EQ(ReadBack().records.size(), 16u);
}

TEST_F(WalWriterTest, ConcurrentWaitersShareTheNextFsync) {
  auto w = Open(FsyncPolicy::kEveryBatch);
  // The first waiter becomes the leader and is held inside fsync; records
  // appended meanwhile must all go out in ONE following write + fsync.
  env_.CloseSyncGate();
  const uint64_t first = *w->Append(RecordType::kTokens, Payload(0, 0));
  absl::Status first_status;
  std::thread leader([&] { first_status = w->WaitDurable(first); });
  env_.WaitForSyncEntered(1);
  constexpr int kWaiters = 8;
  std::vector<uint64_t> seqs;
  for (int i = 0; i < kWaiters; ++i) {
    seqs.push_back(*w->Append(RecordType::kTokens, Payload(1, i)));
  }
  std::vector<absl::Status> statuses(kWaiters);
  std::vector<std::thread> waiters;
  for (int i = 0; i < kWaiters; ++i) {
    waiters.emplace_back([&, i] { statuses[i] = w->WaitDurable(seqs[i]); });
  }
  env_.OpenSyncGate();
  leader.join();
  for (auto& t : waiters) t.join();
  EXPECT_TRUE(first_status.ok());
  for (const absl::Status& s : statuses) EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(env_.counters().syncs, 2);
  EXPECT_EQ(w->stats().batches, 2);
  EXPECT_EQ(ReadBack().records.size(), 1u + kWaiters);
}

TEST_F(WalWriterTest, ManyThreadsGetUniqueDurableSequenceNumbers) {
  auto w = Open(FsyncPolicy::kEveryBatch);
  constexpr int kThreads = 6, kPerThread = 40;
  std::vector<std::vector<uint64_t>> seqs(kThreads);
  std::vector<int> failures(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        absl::StatusOr<uint64_t> seq =
            w->Append(RecordType::kTokens, Payload(t, i));
        if (!seq.ok() || !w->WaitDurable(*seq).ok()) {
          ++failures[t];
          continue;
        }
        seqs[t].push_back(*seq);
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<uint64_t> all;
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(failures[t], 0);
    // One thread's records are ordered as it appended them.
    EXPECT_TRUE(std::is_sorted(seqs[t].begin(), seqs[t].end()));
    all.insert(seqs[t].begin(), seqs[t].end());
  }
  ASSERT_EQ(all.size(), static_cast<size_t>(kThreads * kPerThread));
  EXPECT_EQ(*all.begin(), 1u);
  EXPECT_EQ(*all.rbegin(), static_cast<uint64_t>(kThreads * kPerThread));
  // Group commit: never more fsyncs than acks.
  EXPECT_LE(env_.counters().syncs, kThreads * kPerThread);

  // The file replays every record once, in sequence order, and record
  // `seq` holds the (thread, index) that received `seq`.
  const SegmentParse parse = ReadBack();
  ASSERT_FALSE(parse.bad) << parse.bad_reason;
  ASSERT_EQ(parse.records.size(), static_cast<size_t>(kThreads * kPerThread));
  for (size_t i = 0; i < parse.records.size(); ++i) {
    const FramedRecord& f = parse.records[i];
    ASSERT_EQ(f.seq, i + 1);
    const WalRecord r = *DecodeRecord(f.type, f.seq, f.payload);
    const int t = static_cast<int>(r.keys[0]);
    const int idx = static_cast<int>(r.keys[1]);
    ASSERT_GE(t, 0);
    ASSERT_LT(t, kThreads);
    ASSERT_LT(idx, kPerThread);
    EXPECT_EQ(seqs[t][idx], f.seq);
  }
}

TEST_F(WalWriterTest, FailedWritePoisonsTheLog) {
  auto w = Open(FsyncPolicy::kEveryBatch);
  const uint64_t ok_seq = *w->Append(RecordType::kTokens, Payload(0, 0));
  ASSERT_TRUE(w->WaitDurable(ok_seq).ok());
  env_.FailWriteAfter(1);
  const uint64_t seq = *w->Append(RecordType::kTokens, Payload(0, 1));
  const absl::Status s = w->WaitDurable(seq);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("injected write failure"));
  EXPECT_THAT(s.message(), HasSubstr(path_));
  // Poisoned: every later call fails the same way, even though the fault
  // injector would now let writes through.
  EXPECT_EQ(w->Append(RecordType::kTokens, Payload(0, 2)).status(), s);
  EXPECT_EQ(w->WaitDurable(seq), s);
  EXPECT_EQ(w->Sync(), s);
  EXPECT_EQ(w->status(), s);
  // The record before the failure stays acknowledged and on disk.
  EXPECT_TRUE(w->WaitDurable(ok_seq).ok());
  EXPECT_EQ(ReadBack().records.size(), 1u);
}

TEST_F(WalWriterTest, FailedFsyncPoisonsTheLogAndNoWaiterIsAcked) {
  auto w = Open(FsyncPolicy::kEveryBatch);
  env_.FailSyncAfter(1);
  std::vector<uint64_t> seqs;
  for (int i = 0; i < 3; ++i) {
    seqs.push_back(*w->Append(RecordType::kTokens, Payload(0, i)));
  }
  const absl::Status s = w->WaitDurable(seqs[0]);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("injected fsync failure"));
  for (uint64_t seq : seqs) EXPECT_EQ(w->WaitDurable(seq), s);
  EXPECT_EQ(w->Append(RecordType::kTokens, Payload(0, 9)).status(), s);
  EXPECT_EQ(env_.counters().syncs, 0);
}

}  // namespace
}  // namespace kvsketch::server::durability
