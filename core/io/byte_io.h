// File: core/io/byte_io.h
//
// Little-endian binary encoding for approximator state and snapshots.
// ByteWriter appends to an in-memory string; ByteReader consumes a view and
// turns every overrun into absl::DataLossError naming what it was reading,
// so a truncated or corrupt blob is reported, never read past its end.
//
//   ByteWriter w;
//   w.PutU64(n); w.PutFloats(keys);
//   ByteReader r(w.data());
//   uint64_t n; KVSKETCH_RETURN_IF_ERROR(r.GetU64(&n, "num_tokens"));
#ifndef KVSKETCH_CORE_IO_BYTE_IO_H_
#define KVSKETCH_CORE_IO_BYTE_IO_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace kvsketch {

class ByteWriter {
 public:
  void PutU8(uint8_t v);
  void PutU32(uint32_t v);
  void PutU64(uint64_t v);
  void PutI64(int64_t v);
  void PutF32(float v);
  void PutF64(double v);
  void PutBytes(const void* data, size_t size);
  // u64 length, then the bytes.
  void PutString(absl::string_view s);
  // Raw little-endian element arrays (no length prefix).
  void PutFloats(absl::Span<const float> v);
  void PutU16s(absl::Span<const uint16_t> v);

  const std::string& data() const { return buf_; }
  size_t size() const { return buf_.size(); }
  std::string Release() { return std::move(buf_); }

 private:
  std::string buf_;
};

class ByteReader {
 public:
  explicit ByteReader(absl::string_view data) : data_(data) {}

  // Each Get* reads one value or returns DataLoss("truncated ... <what>")
  // without consuming anything.
  absl::Status GetU8(uint8_t* v, absl::string_view what);
  absl::Status GetU32(uint32_t* v, absl::string_view what);
  absl::Status GetU64(uint64_t* v, absl::string_view what);
  absl::Status GetI64(int64_t* v, absl::string_view what);
  absl::Status GetF32(float* v, absl::string_view what);
  absl::Status GetF64(double* v, absl::string_view what);
  absl::Status GetBytes(void* out, size_t size, absl::string_view what);
  // Rejects a length above max_size (DataLoss) before allocating.
  absl::Status GetString(std::string* s, size_t max_size,
                         absl::string_view what);
  absl::Status GetFloats(float* out, size_t count, absl::string_view what);
  absl::Status GetU16s(uint16_t* out, size_t count, absl::string_view what);

  size_t remaining() const { return data_.size() - pos_; }
  size_t position() const { return pos_; }
  // DataLoss unless every byte was consumed.
  absl::Status ExpectEnd(absl::string_view what) const;

 private:
  absl::Status Need(size_t n, absl::string_view what) const;

  absl::string_view data_;
  size_t pos_ = 0;
};

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_IO_BYTE_IO_H_
