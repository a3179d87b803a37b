// File: server/durability/wal.cc
#include "server/durability/wal.h"

#include <zlib.h>

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/io/byte_io.h"
#include "core/status_macros.h"

namespace kvsketch::server::durability {
namespace {

constexpr absl::string_view kSegmentMagic = "KVSKWAL1";
constexpr size_t kMaxSpecBytes = 1 << 16;

uint32_t Crc32(uint32_t crc, absl::string_view bytes) {
  // zlib's crc32 takes a uInt length: feed large spans in pieces.
  uLong c = crc;
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    const uInt piece = left > (1u << 30) ? (1u << 30) : static_cast<uInt>(left);
    c = crc32(c, reinterpret_cast<const Bytef*>(p), piece);
    p += piece;
    left -= piece;
  }
  return static_cast<uint32_t>(c);
}

uint32_t Crc32(absl::string_view bytes) {
  return Crc32(static_cast<uint32_t>(crc32(0L, Z_NULL, 0)), bytes);
}

uint32_t LoadU32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

uint64_t LoadU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

// The 13 bytes after the CRC field: length, type, seq.
std::string RecordHeaderTail(RecordType type, uint64_t seq, uint64_t length) {
  ByteWriter w;
  w.PutU32(static_cast<uint32_t>(length));
  w.PutU8(static_cast<uint8_t>(type));
  w.PutU64(seq);
  return w.Release();
}

void PutFloatArray(ByteWriter& w, absl::Span<const float> v) {
  w.PutU64(v.size());
  w.PutFloats(v);
}

absl::Status GetFloatArray(ByteReader& r, std::vector<float>* out,
                           absl::string_view what) {
  uint64_t count = 0;
  KVSKETCH_RETURN_IF_ERROR(r.GetU64(&count, what));
  if (count > r.remaining() / sizeof(float)) {
    return absl::DataLossError(absl::StrCat("WAL record: ", what, " count ",
                                            count, " exceeds the payload"));
  }
  out->resize(count);
  return r.GetFloats(out->data(), count, what);
}

absl::Status CheckCount(int64_t v, absl::string_view what) {
  if (v < 0) {
    return absl::DataLossError(
        absl::StrCat("WAL record: negative ", what, " ", v));
  }
  return absl::OkStatus();
}

}  // namespace

bool IsKnownRecordType(uint8_t type) { return type >= 1 && type <= 5; }

std::string RecordTypeName(RecordType type) {
  switch (type) {
    case RecordType::kCreate:
      return "create";
    case RecordType::kTokens:
      return "tokens";
    case RecordType::kTokensAllLayers:
      return "tokens_all_layers";
    case RecordType::kCheckpoint:
      return "checkpoint";
    case RecordType::kDelete:
      return "delete";
  }
  return absl::StrCat("type ", static_cast<int>(type));
}

std::string EncodeSessionConfig(const SessionConfig& c) {
  ByteWriter w;
  w.PutU32(static_cast<uint32_t>(c.num_layers));
  w.PutU32(static_cast<uint32_t>(c.num_kv_heads));
  w.PutU32(static_cast<uint32_t>(c.num_query_heads));
  w.PutU32(static_cast<uint32_t>(c.head_dim));
  w.PutU32(static_cast<uint32_t>(c.value_dim));
  w.PutF32(c.scale);
  w.PutString(c.spec);
  w.PutI64(c.max_tokens);
  w.PutU32(static_cast<uint32_t>(c.layer_specs.size()));
  for (const auto& [layer, spec] : c.layer_specs) {
    w.PutU32(static_cast<uint32_t>(layer));
    w.PutString(spec);
  }
  return w.Release();
}

absl::StatusOr<SessionConfig> DecodeSessionConfig(absl::string_view bytes) {
  ByteReader r(bytes);
  SessionConfig c;
  uint32_t u = 0;
  KVSKETCH_RETURN_IF_ERROR(r.GetU32(&u, "config num_layers"));
  c.num_layers = static_cast<int>(u);
  KVSKETCH_RETURN_IF_ERROR(r.GetU32(&u, "config num_kv_heads"));
  c.num_kv_heads = static_cast<int>(u);
  KVSKETCH_RETURN_IF_ERROR(r.GetU32(&u, "config num_query_heads"));
  c.num_query_heads = static_cast<int>(u);
  KVSKETCH_RETURN_IF_ERROR(r.GetU32(&u, "config head_dim"));
  c.head_dim = static_cast<int>(u);
  KVSKETCH_RETURN_IF_ERROR(r.GetU32(&u, "config value_dim"));
  c.value_dim = static_cast<int>(u);
  KVSKETCH_RETURN_IF_ERROR(r.GetF32(&c.scale, "config scale"));
  KVSKETCH_RETURN_IF_ERROR(r.GetString(&c.spec, kMaxSpecBytes, "config spec"));
  KVSKETCH_RETURN_IF_ERROR(r.GetI64(&c.max_tokens, "config max_tokens"));
  uint32_t overrides = 0;
  KVSKETCH_RETURN_IF_ERROR(r.GetU32(&overrides, "config layer_specs count"));
  // Each override takes at least 12 bytes: refuse a count the bytes cannot
  // hold before looping on it.
  if (overrides > r.remaining() / 12) {
    return absl::DataLossError(absl::StrCat("WAL create record: ", overrides,
                                            " layer specs exceed the payload"));
  }
  for (uint32_t i = 0; i < overrides; ++i) {
    uint32_t layer = 0;
    std::string spec;
    KVSKETCH_RETURN_IF_ERROR(r.GetU32(&layer, "config layer_specs layer"));
    KVSKETCH_RETURN_IF_ERROR(
        r.GetString(&spec, kMaxSpecBytes, "config layer_specs spec"));
    c.layer_specs[static_cast<int>(layer)] = std::move(spec);
  }
  KVSKETCH_RETURN_IF_ERROR(r.ExpectEnd("WAL create record"));
  return c;
}

std::string EncodeTokensPayload(int layer, int64_t num_tokens,
                                absl::Span<const float> keys,
                                absl::Span<const float> values,
                                int64_t num_queries,
                                absl::Span<const float> queries) {
  ByteWriter w;
  w.PutU32(static_cast<uint32_t>(layer));
  w.PutI64(num_tokens);
  w.PutI64(num_queries);
  PutFloatArray(w, keys);
  PutFloatArray(w, values);
  PutFloatArray(w, queries);
  return w.Release();
}

std::string EncodeTokensAllLayersPayload(int64_t num_tokens,
                                         absl::Span<const float> keys,
                                         absl::Span<const float> values) {
  ByteWriter w;
  w.PutI64(num_tokens);
  PutFloatArray(w, keys);
  PutFloatArray(w, values);
  return w.Release();
}

std::string EncodeCheckpointPayload(uint64_t checkpoint_seq) {
  ByteWriter w;
  w.PutU64(checkpoint_seq);
  return w.Release();
}

absl::StatusOr<WalRecord> DecodeRecord(RecordType type, uint64_t seq,
                                       absl::string_view payload) {
  WalRecord rec;
  rec.type = type;
  rec.seq = seq;
  ByteReader r(payload);
  switch (type) {
    case RecordType::kCreate: {
      KVSKETCH_ASSIGN_OR_RETURN(rec.config, DecodeSessionConfig(payload));
      return rec;
    }
    case RecordType::kTokens: {
      uint32_t layer = 0;
      KVSKETCH_RETURN_IF_ERROR(r.GetU32(&layer, "tokens layer"));
      if (layer > (1u << 20)) {
        return absl::DataLossError(
            absl::StrCat("WAL tokens record: layer ", layer, " out of range"));
      }
      rec.layer = static_cast<int>(layer);
      KVSKETCH_RETURN_IF_ERROR(r.GetI64(&rec.num_tokens, "tokens T"));
      KVSKETCH_RETURN_IF_ERROR(r.GetI64(&rec.num_queries, "tokens M"));
      KVSKETCH_RETURN_IF_ERROR(CheckCount(rec.num_tokens, "token count"));
      KVSKETCH_RETURN_IF_ERROR(CheckCount(rec.num_queries, "query count"));
      KVSKETCH_RETURN_IF_ERROR(GetFloatArray(r, &rec.keys, "tokens keys"));
      KVSKETCH_RETURN_IF_ERROR(GetFloatArray(r, &rec.values, "tokens values"));
      KVSKETCH_RETURN_IF_ERROR(
          GetFloatArray(r, &rec.queries, "tokens queries"));
      KVSKETCH_RETURN_IF_ERROR(r.ExpectEnd("WAL tokens record"));
      return rec;
    }
    case RecordType::kTokensAllLayers: {
      KVSKETCH_RETURN_IF_ERROR(r.GetI64(&rec.num_tokens, "all-layers T"));
      KVSKETCH_RETURN_IF_ERROR(CheckCount(rec.num_tokens, "token count"));
      KVSKETCH_RETURN_IF_ERROR(GetFloatArray(r, &rec.keys, "all-layers keys"));
      KVSKETCH_RETURN_IF_ERROR(
          GetFloatArray(r, &rec.values, "all-layers values"));
      KVSKETCH_RETURN_IF_ERROR(r.ExpectEnd("WAL all-layers record"));
      return rec;
    }
    case RecordType::kCheckpoint: {
      KVSKETCH_RETURN_IF_ERROR(r.GetU64(&rec.checkpoint_seq, "checkpoint seq"));
      KVSKETCH_RETURN_IF_ERROR(r.ExpectEnd("WAL checkpoint record"));
      if (rec.checkpoint_seq >= seq) {
        return absl::DataLossError(
            absl::StrCat("WAL checkpoint record ", seq, " claims to cover ",
                         rec.checkpoint_seq, ", not an earlier record"));
      }
      return rec;
    }
    case RecordType::kDelete:
      KVSKETCH_RETURN_IF_ERROR(r.ExpectEnd("WAL delete record"));
      return rec;
  }
  return absl::DataLossError(
      absl::StrCat("unknown WAL record type ", static_cast<int>(type)));
}

std::string EncodeSegmentHeader(uint64_t generation) {
  ByteWriter w;
  w.PutBytes(kSegmentMagic.data(), kSegmentMagic.size());
  w.PutU32(kWalFormatVersion);
  w.PutU32(0);
  w.PutU64(generation);
  w.PutU32(Crc32(w.data()));
  return w.Release();
}

std::string FrameRecord(RecordType type, uint64_t seq,
                        absl::string_view payload) {
  const std::string tail = RecordHeaderTail(type, seq, payload.size());
  ByteWriter w;
  w.PutU32(Crc32(Crc32(tail), payload));
  w.PutBytes(tail.data(), tail.size());
  w.PutBytes(payload.data(), payload.size());
  return w.Release();
}

SegmentParse ParseSegment(absl::string_view bytes) {
  SegmentParse out;
  if (bytes.size() < kSegmentHeaderBytes) {
    out.bad = true;
    out.bad_reason = absl::StrCat("segment header truncated (", bytes.size(),
                                  " of ", kSegmentHeaderBytes, " bytes)");
    return out;
  }
  if (bytes.substr(0, kSegmentMagic.size()) != kSegmentMagic) {
    out.bad = true;
    out.bad_reason = "wrong segment magic (not a kvsketch WAL segment)";
    return out;
  }
  const char* h = bytes.data();
  if (LoadU32(h + 24) != Crc32(bytes.substr(0, 24))) {
    out.bad = true;
    out.bad_reason = "segment header checksum mismatch";
    return out;
  }
  if (LoadU32(h + 8) != kWalFormatVersion || LoadU32(h + 12) != 0) {
    out.bad = true;
    out.bad_reason =
        absl::StrCat("unsupported WAL format version ", LoadU32(h + 8),
                     " (this build reads ", kWalFormatVersion, ")");
    return out;
  }
  out.header_ok = true;
  out.generation = LoadU64(h + 16);
  uint64_t pos = kSegmentHeaderBytes;
  out.valid_bytes = pos;
  while (pos < bytes.size()) {
    const uint64_t rem = bytes.size() - pos;
    if (rem < kRecordHeaderBytes) {
      out.bad = true;
      out.bad_reason = absl::StrCat("truncated record header (", rem, " of ",
                                    kRecordHeaderBytes, " bytes)");
      break;
    }
    const char* p = bytes.data() + pos;
    const uint32_t crc = LoadU32(p);
    const uint64_t length = LoadU32(p + 4);
    const uint8_t type = static_cast<uint8_t>(p[8]);
    const uint64_t seq = LoadU64(p + 9);
    if (length > kMaxRecordPayload) {
      out.bad = true;
      out.bad_reason = absl::StrCat("implausible record length ", length);
      break;
    }
    if (length > rem - kRecordHeaderBytes) {
      out.bad = true;
      out.bad_reason = absl::StrCat(
          "record of ", length, " payload bytes extends past ",
          "the end of the file (", rem - kRecordHeaderBytes, " left)");
      break;
    }
    if (crc != Crc32(bytes.substr(pos + 4, 13 + length))) {
      out.bad = true;
      out.bad_reason = "record checksum mismatch";
      break;
    }
    if (!IsKnownRecordType(type)) {
      out.bad = true;
      out.bad_reason = absl::StrCat("unknown record type ", type);
      break;
    }
    out.records.push_back(
        FramedRecord{static_cast<RecordType>(type), seq, pos,
                     bytes.substr(pos + kRecordHeaderBytes, length)});
    pos += kRecordHeaderBytes + length;
    out.valid_bytes = pos;
  }
  return out;
}

bool HasValidRecordAfter(absl::string_view bytes, uint64_t from,
                         uint64_t after_seq) {
  const uint64_t max_seq = after_seq + bytes.size() / kRecordHeaderBytes + 1;
  for (uint64_t q = from + 1; q + kRecordHeaderBytes <= bytes.size(); ++q) {
    const char* p = bytes.data() + q;
    const uint8_t type = static_cast<uint8_t>(p[8]);
    if (!IsKnownRecordType(type)) continue;
    const uint64_t seq = LoadU64(p + 9);
    if (seq <= after_seq || seq > max_seq) continue;
    const uint64_t length = LoadU32(p + 4);
    if (length > bytes.size() - q - kRecordHeaderBytes) continue;
    if (LoadU32(p) == Crc32(bytes.substr(q + 4, 13 + length))) return true;
  }
  return false;
}

absl::Status ParseWalForFuzzing(absl::string_view bytes) {
  const SegmentParse parse = ParseSegment(bytes);
  if (!parse.header_ok) return absl::DataLossError(parse.bad_reason);
  uint64_t prev = 0;
  for (const FramedRecord& rec : parse.records) {
    if (prev != 0 && rec.seq != prev + 1) {
      return absl::DataLossError(absl::StrCat("sequence gap at offset ",
                                              rec.offset, ": ", prev, " then ",
                                              rec.seq));
    }
    prev = rec.seq;
    KVSKETCH_RETURN_IF_ERROR(
        DecodeRecord(rec.type, rec.seq, rec.payload).status());
  }
  if (parse.bad && HasValidRecordAfter(bytes, parse.valid_bytes, prev)) {
    return absl::DataLossError(
        absl::StrCat("corrupt record at offset ", parse.valid_bytes, " (",
                     parse.bad_reason, ") followed by valid records"));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// WalWriter

WalWriter::WalWriter(std::unique_ptr<WritableFile> file, std::string path,
                     uint64_t last_seq, FsyncPolicy policy,
                     absl::Duration interval, Clock* clock)
    : policy_(policy),
      interval_(interval),
      clock_(clock != nullptr ? clock : Clock::Real()),
      file_(std::move(file)),
      path_(std::move(path)),
      last_seq_(last_seq),
      durable_seq_(last_seq) {}

WalWriter::~WalWriter() {
  absl::MutexLock lock(&mu_);
  if (!closed_ && file_ != nullptr) (void)file_->Close();
}

absl::Status WalWriter::Poison(const absl::Status& cause) {
  if (poison_.ok()) {
    poison_ = absl::Status(
        cause.code(),
        absl::StrCat(
            "write-ahead log ", path_,
            " refuses further writes after an I/O error: ", cause.message()));
  }
  return poison_;
}

absl::StatusOr<uint64_t> WalWriter::Append(RecordType type,
                                           absl::string_view payload) {
  if (payload.size() > kMaxRecordPayload) {
    return absl::InvalidArgumentError(
        absl::StrCat("WAL record of ", payload.size(), " bytes exceeds the ",
                     kMaxRecordPayload, "-byte limit"));
  }
  // The payload's CRC is the O(size) part: compute it outside the lock and
  // combine it with the header's (zlib crc32_combine, O(log size)).
  const uint32_t payload_crc = Crc32(payload);
  absl::MutexLock lock(&mu_);
  if (!poison_.ok()) return poison_;
  if (closed_) return absl::FailedPreconditionError("WAL writer is closed");
  const uint64_t seq = ++last_seq_;
  const std::string tail = RecordHeaderTail(type, seq, payload.size());
  const uint32_t crc = static_cast<uint32_t>(crc32_combine(
      Crc32(tail), payload_crc, static_cast<z_off_t>(payload.size())));
  char crc_bytes[4];
  for (int i = 0; i < 4; ++i) crc_bytes[i] = static_cast<char>(crc >> (8 * i));
  pending_.append(crc_bytes, 4);
  pending_.append(tail);
  pending_.append(payload.data(), payload.size());
  ++pending_records_;
  return seq;
}

absl::Status WalWriter::FlushLocked(uint64_t target, bool force_sync) {
  for (;;) {
    // A record made durable before a failure stays acknowledged.
    if (durable_seq_ >= target && (!force_sync || !unsynced_)) {
      return absl::OkStatus();
    }
    if (!poison_.ok()) return poison_;
    if (closed_) return absl::FailedPreconditionError("WAL writer is closed");
    if (leader_active_) {
      mu_.Await(absl::Condition(
          +[](bool* active) { return !*active; }, &leader_active_));
      continue;
    }
    leader_active_ = true;
    const bool do_sync = force_sync || policy_ != FsyncPolicy::kOff;
    if (policy_ == FsyncPolicy::kInterval && !force_sync) {
      // At most one fsync per interval: sleep until it is due. Records
      // appended meanwhile join this batch, which is where the saving is.
      const absl::Time due = last_sync_ + interval_;
      if (clock_->Now() < due) {
        mu_.Unlock();
        clock_->SleepUntil(due);
        mu_.Lock();
      }
    }
    std::string batch;
    batch.swap(pending_);
    const int64_t records = pending_records_;
    pending_records_ = 0;
    const uint64_t batch_last = last_seq_;
    WritableFile* file = file_.get();
    mu_.Unlock();
    absl::Status s;
    if (!batch.empty()) s = file->Append(batch);
    if (s.ok() && do_sync) s = file->Sync();
    const absl::Time synced_at = do_sync ? clock_->Now() : absl::InfinitePast();
    mu_.Lock();
    leader_active_ = false;
    if (!s.ok()) return Poison(s);
    if (!batch.empty()) {
      ++stats_.batches;
      stats_.records += records;
      stats_.bytes += static_cast<int64_t>(batch.size());
      unsynced_ = true;
    }
    if (do_sync) {
      ++stats_.syncs;
      last_sync_ = synced_at;
      unsynced_ = false;
    }
    durable_seq_ = batch_last;
  }
}

absl::Status WalWriter::WaitDurable(uint64_t seq) {
  absl::MutexLock lock(&mu_);
  if (seq > last_seq_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "WaitDurable(", seq, "): the log has handed out only ", last_seq_));
  }
  return FlushLocked(seq, /*force_sync=*/false);
}

absl::Status WalWriter::Sync() {
  absl::MutexLock lock(&mu_);
  return FlushLocked(last_seq_, /*force_sync=*/true);
}

absl::Status WalWriter::Rotate(std::unique_ptr<WritableFile> new_file,
                               std::string new_path) {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](bool* active) { return !*active; }, &leader_active_));
  if (!poison_.ok()) return poison_;
  if (closed_) return absl::FailedPreconditionError("WAL writer is closed");
  leader_active_ = true;
  std::string batch;
  batch.swap(pending_);
  const int64_t records = pending_records_;
  pending_records_ = 0;
  const uint64_t batch_last = last_seq_;
  const bool do_sync =
      policy_ != FsyncPolicy::kOff && (unsynced_ || !batch.empty());
  WritableFile* old = file_.get();
  mu_.Unlock();
  absl::Status s;
  if (!batch.empty()) s = old->Append(batch);
  if (s.ok() && do_sync) s = old->Sync();
  if (s.ok()) s = old->Close();
  mu_.Lock();
  leader_active_ = false;
  if (!s.ok()) return Poison(s);
  if (!batch.empty()) {
    ++stats_.batches;
    stats_.records += records;
    stats_.bytes += static_cast<int64_t>(batch.size());
  }
  if (do_sync) ++stats_.syncs;
  unsynced_ = false;
  durable_seq_ = batch_last;
  file_ = std::move(new_file);
  path_ = std::move(new_path);
  return absl::OkStatus();
}

absl::Status WalWriter::Close() {
  absl::MutexLock lock(&mu_);
  if (closed_) return absl::OkStatus();
  absl::Status s = FlushLocked(last_seq_, /*force_sync=*/true);
  closed_ = true;
  if (file_ != nullptr) {
    absl::Status c = file_->Close();
    if (s.ok()) s = c;
  }
  return s;
}

uint64_t WalWriter::last_seq() const {
  absl::MutexLock lock(&mu_);
  return last_seq_;
}

WalWriter::Stats WalWriter::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

absl::Status WalWriter::status() const {
  absl::MutexLock lock(&mu_);
  return poison_;
}

}  // namespace kvsketch::server::durability
