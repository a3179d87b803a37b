// File: server/durability/wal.h
//
// The write-ahead log of one session: record format, a group-commit writer
// and a segment reader (docs/durability.md; issue #8 item 1).
//
// A log is a sequence of segment files. Segment layout (little-endian):
//   header, 28 bytes:
//     8 bytes  magic "KVSKWAL1"
//     u32      format version (kWalFormatVersion)
//     u32      reserved, 0
//     u64      generation (also in the file name; checked against it)
//     u32      CRC-32 (zlib polynomial) of the 24 bytes before it
//   records, each:
//     u32      CRC-32 of every byte of the record after this field
//     u32      payload length
//     u8       type (RecordType)
//     u64      sequence number: 1 for the session's kCreate, then +1 per
//              record, continuing across segments (a gap is data loss)
//     payload
// The length prefix lets the reader find the next record without decoding;
// the CRC over length, type, seq and payload detects a torn write (a crash
// in the middle of write(2), or pages lost at power failure) and bit rot.
//
// Payloads (ByteWriter encoding, core/io/byte_io.h):
//   kCreate          SessionConfig (EncodeSessionConfig)
//   kTokens          u32 layer, i64 T, i64 M, then three float arrays each
//                    as u64 count + f32 values: keys [kv_heads,T,d], values
//                    [kv_heads,T,dv], queries [q_heads,M,d] (M = 0: a plain
//                    append). Queries are logged because an approximator's
//                    Attend may change its state (evict's heavy-hitter
//                    masses): replaying Step with the same queries gives the
//                    same state bit for bit.
//   kTokensAllLayers i64 T, keys [layers,kv_heads,T,d], values likewise,
//                    as u64 count + f32 values: one record so that a crash
//                    never leaves some layers appended and others not.
//   kCheckpoint      u64 the sequence number the checkpoint file covers
//   kDelete          empty
#ifndef KVSKETCH_SERVER_DURABILITY_WAL_H_
#define KVSKETCH_SERVER_DURABILITY_WAL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/session_state.h"
#include "server/durability/durability_options.h"
#include "server/durability/file_env.h"

namespace kvsketch::server::durability {

inline constexpr uint32_t kWalFormatVersion = 1;
inline constexpr size_t kSegmentHeaderBytes = 28;
inline constexpr size_t kRecordHeaderBytes = 17;
// Larger payloads are refused at append and treated as corruption when read
// (a garbage length must not make the reader allocate or skip gigabytes).
inline constexpr uint64_t kMaxRecordPayload = uint64_t{1} << 30;

enum class RecordType : uint8_t {
  kCreate = 1,
  kTokens = 2,
  kTokensAllLayers = 3,
  kCheckpoint = 4,
  kDelete = 5,
};
bool IsKnownRecordType(uint8_t type);
std::string RecordTypeName(RecordType type);

// A decoded record (floats copied out of the file).
struct WalRecord {
  RecordType type = RecordType::kDelete;
  uint64_t seq = 0;
  SessionConfig config;  // kCreate
  int layer = -1;        // kTokens; -1 for kTokensAllLayers
  int64_t num_tokens = 0;
  int64_t num_queries = 0;
  std::vector<float> keys, values, queries;
  uint64_t checkpoint_seq = 0;  // kCheckpoint
};

// Payload encoders (the writer adds the frame).
std::string EncodeSessionConfig(const SessionConfig& config);
absl::StatusOr<SessionConfig> DecodeSessionConfig(absl::string_view bytes);
std::string EncodeTokensPayload(int layer, int64_t num_tokens,
                                absl::Span<const float> keys,
                                absl::Span<const float> values,
                                int64_t num_queries,
                                absl::Span<const float> queries);
std::string EncodeTokensAllLayersPayload(int64_t num_tokens,
                                         absl::Span<const float> keys,
                                         absl::Span<const float> values);
std::string EncodeCheckpointPayload(uint64_t checkpoint_seq);
// DataLoss naming the field on a malformed payload.
absl::StatusOr<WalRecord> DecodeRecord(RecordType type, uint64_t seq,
                                       absl::string_view payload);

std::string EncodeSegmentHeader(uint64_t generation);
// Frames one record (the writer's job; exposed for tests and tools).
std::string FrameRecord(RecordType type, uint64_t seq,
                        absl::string_view payload);

// One record found in a segment: offset of its frame in the file and a view
// of its payload (valid while the segment bytes are).
struct FramedRecord {
  RecordType type;
  uint64_t seq = 0;
  uint64_t offset = 0;
  absl::string_view payload;
};

// What ParseSegment found. Parsing stops at the first bad frame; whether
// the bad bytes are a torn tail or corruption in the middle is decided by
// whether any valid record follows (HasValidRecordAfter).
struct SegmentParse {
  bool header_ok = false;
  uint64_t generation = 0;
  std::vector<FramedRecord> records;
  uint64_t valid_bytes = 0;  // end of the last good frame (or the header)
  bool bad = false;          // bytes after valid_bytes that are not a record
  std::string bad_reason;
};

// Never fails and never reads out of bounds: any bytes are classified.
SegmentParse ParseSegment(absl::string_view bytes);

// Whether a frame with a valid CRC and a sequence number in
// (after_seq, after_seq + bytes.size() / kRecordHeaderBytes] starts at any
// offset > from. O(bytes after `from`) candidate checks; the sequence and
// type filters leave the CRC to be computed for almost no false candidate.
bool HasValidRecordAfter(absl::string_view bytes, uint64_t from,
                         uint64_t after_seq);

// The fuzzing entry point (issue #8 item 3): parses one segment file's
// bytes, classifies a bad tail, decodes every record's payload, and returns
// OK or DataLoss. Must never crash, hang or allocate more than O(size).
absl::Status ParseWalForFuzzing(absl::string_view bytes);

// The group-commit writer of one log. Thread-safe.
//
// Append frames the record into an in-memory batch and returns its
// sequence number without I/O. WaitDurable(seq) returns once the record is
// durable under the policy: the first waiter becomes the leader, takes the
// whole pending batch (every record appended so far, by any thread), writes
// it with one write(2) and, unless the policy is kOff, one fsync; waiters
// whose records were in the batch return with it. While the leader does
// I/O, new records pile up for the next batch, so under load the number of
// fsyncs grows with the batch rate, not the record rate.
//
// Any failed write or fsync poisons the writer: the failing call and every
// later Append / WaitDurable / Sync return the same error. An fsync error
// cannot be retried safely (Linux may drop the dirty pages and report the
// error once), so nothing is acknowledged after one.
class WalWriter {
 public:
  struct Stats {
    int64_t records = 0;
    int64_t bytes = 0;    // framed bytes written to files
    int64_t batches = 0;  // write(2) calls of record batches
    int64_t syncs = 0;    // fsyncs of log segments
  };

  // file already holds a durable segment header; last_seq is the sequence
  // number of the last record before this writer's first.
  WalWriter(std::unique_ptr<WritableFile> file, std::string path,
            uint64_t last_seq, FsyncPolicy policy, absl::Duration interval,
            Clock* clock);
  ~WalWriter();

  absl::StatusOr<uint64_t> Append(RecordType type, absl::string_view payload);
  // InvalidArgument for a seq never handed out.
  absl::Status WaitDurable(uint64_t seq);
  // Writes and fsyncs everything appended, whatever the policy.
  absl::Status Sync();
  // Flushes the pending batch to the current file (and fsyncs it unless the
  // policy is kOff, so no later ack in the new file can outrun an earlier
  // record of the old one), closes it, and continues in new_file, which
  // already holds a durable header.
  absl::Status Rotate(std::unique_ptr<WritableFile> new_file,
                      std::string new_path);
  // Sync, then close the file. Later calls fail with FailedPrecondition.
  absl::Status Close();

  uint64_t last_seq() const;
  Stats stats() const;
  absl::Status status() const;  // the poison, or OK

 private:
  // Makes every record up to `target` durable (force_sync: fsync even under
  // kOff). Called with mu_ held; releases it around I/O.
  absl::Status FlushLocked(uint64_t target, bool force_sync)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Poison(const absl::Status& cause)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const FsyncPolicy policy_;
  const absl::Duration interval_;
  Clock* const clock_;

  mutable absl::Mutex mu_;
  std::unique_ptr<WritableFile> file_ ABSL_GUARDED_BY(mu_);
  std::string path_ ABSL_GUARDED_BY(mu_);
  std::string pending_ ABSL_GUARDED_BY(mu_);
  int64_t pending_records_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t last_seq_ ABSL_GUARDED_BY(mu_);
  uint64_t durable_seq_ ABSL_GUARDED_BY(mu_);
  // Records written (write(2) done) but not yet fsynced; a forced Sync
  // must fsync even when pending_ is empty.
  bool unsynced_ ABSL_GUARDED_BY(mu_) = false;
  bool leader_active_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_sync_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Status poison_ ABSL_GUARDED_BY(mu_);
  Stats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvsketch::server::durability

#endif  // KVSKETCH_SERVER_DURABILITY_WAL_H_
