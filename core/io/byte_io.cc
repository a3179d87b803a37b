// File: core/io/byte_io.cc
//
// Explicit little-endian encoding byte by byte, so the format does not depend
// on the host's endianness; the float arrays take a memcpy fast path on
// little-endian hosts (every target we ship), and a per-element path
// otherwise.
#include "core/io/byte_io.h"

#include <bit>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kvsketch {
namespace {

constexpr bool kLittleEndian = std::endian::native == std::endian::little;

template <typename T>
void AppendLe(std::string& buf, T v) {
  char bytes[sizeof(T)];
  for (size_t i = 0; i < sizeof(T); ++i) {
    bytes[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  }
  buf.append(bytes, sizeof(T));
}

template <typename T>
T LoadLe(const char* p) {
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) {
    v |= static_cast<T>(static_cast<unsigned char>(p[i])) << (8 * i);
  }
  return v;
}

}  // namespace

void ByteWriter::PutU8(uint8_t v) { buf_.push_back(static_cast<char>(v)); }
void ByteWriter::PutU32(uint32_t v) { AppendLe(buf_, v); }
void ByteWriter::PutU64(uint64_t v) { AppendLe(buf_, v); }
void ByteWriter::PutI64(int64_t v) { AppendLe(buf_, static_cast<uint64_t>(v)); }
void ByteWriter::PutF32(float v) { AppendLe(buf_, std::bit_cast<uint32_t>(v)); }
void ByteWriter::PutF64(double v) {
  AppendLe(buf_, std::bit_cast<uint64_t>(v));
}
void ByteWriter::PutBytes(const void* data, size_t size) {
  buf_.append(static_cast<const char*>(data), size);
}
void ByteWriter::PutString(absl::string_view s) {
  PutU64(s.size());
  buf_.append(s.data(), s.size());
}
void ByteWriter::PutFloats(absl::Span<const float> v) {
  if constexpr (kLittleEndian) {
    PutBytes(v.data(), v.size() * sizeof(float));
  } else {
    for (float f : v) PutF32(f);
  }
}
void ByteWriter::PutU16s(absl::Span<const uint16_t> v) {
  if constexpr (kLittleEndian) {
    PutBytes(v.data(), v.size() * sizeof(uint16_t));
  } else {
    for (uint16_t x : v) AppendLe(buf_, x);
  }
}

absl::Status ByteReader::Need(size_t n, absl::string_view what) const {
  if (n > remaining()) {
    return absl::DataLossError(absl::StrCat("truncated input reading ", what,
                                            ": need ", n, " bytes, have ",
                                            remaining()));
  }
  return absl::OkStatus();
}

absl::Status ByteReader::GetU8(uint8_t* v, absl::string_view what) {
  if (absl::Status s = Need(1, what); !s.ok()) return s;
  *v = static_cast<uint8_t>(data_[pos_]);
  pos_ += 1;
  return absl::OkStatus();
}

absl::Status ByteReader::GetU32(uint32_t* v, absl::string_view what) {
  if (absl::Status s = Need(4, what); !s.ok()) return s;
  *v = LoadLe<uint32_t>(data_.data() + pos_);
  pos_ += 4;
  return absl::OkStatus();
}

absl::Status ByteReader::GetU64(uint64_t* v, absl::string_view what) {
  if (absl::Status s = Need(8, what); !s.ok()) return s;
  *v = LoadLe<uint64_t>(data_.data() + pos_);
  pos_ += 8;
  return absl::OkStatus();
}

absl::Status ByteReader::GetI64(int64_t* v, absl::string_view what) {
  uint64_t u;
  if (absl::Status s = GetU64(&u, what); !s.ok()) return s;
  *v = static_cast<int64_t>(u);
  return absl::OkStatus();
}

absl::Status ByteReader::GetF32(float* v, absl::string_view what) {
  uint32_t u;
  if (absl::Status s = GetU32(&u, what); !s.ok()) return s;
  *v = std::bit_cast<float>(u);
  return absl::OkStatus();
}

absl::Status ByteReader::GetF64(double* v, absl::string_view what) {
  uint64_t u;
  if (absl::Status s = GetU64(&u, what); !s.ok()) return s;
  *v = std::bit_cast<double>(u);
  return absl::OkStatus();
}

absl::Status ByteReader::GetBytes(void* out, size_t size,
                                  absl::string_view what) {
  if (absl::Status s = Need(size, what); !s.ok()) return s;
  if (size > 0) std::memcpy(out, data_.data() + pos_, size);
  pos_ += size;
  return absl::OkStatus();
}

absl::Status ByteReader::GetString(std::string* s, size_t max_size,
                                   absl::string_view what) {
  if (absl::Status st = Need(8, what); !st.ok()) return st;
  const uint64_t len = LoadLe<uint64_t>(data_.data() + pos_);
  if (len > max_size) {
    return absl::DataLossError(absl::StrCat("length ", len, " of ", what,
                                            " exceeds the limit ", max_size));
  }
  if (len > remaining() - 8) {
    return absl::DataLossError(absl::StrCat("truncated input reading ", what,
                                            ": need ", len, " bytes, have ",
                                            remaining() - 8));
  }
  s->assign(data_.data() + pos_ + 8, len);
  pos_ += 8 + len;
  return absl::OkStatus();
}

absl::Status ByteReader::GetFloats(float* out, size_t count,
                                   absl::string_view what) {
  if (count > remaining() / sizeof(float)) {
    return absl::DataLossError(absl::StrCat("truncated input reading ", what,
                                            ": need ", count, " floats, have ",
                                            remaining(), " bytes"));
  }
  if constexpr (kLittleEndian) {
    if (count > 0) std::memcpy(out, data_.data() + pos_, count * sizeof(float));
  } else {
    for (size_t i = 0; i < count; ++i) {
      out[i] =
          std::bit_cast<float>(LoadLe<uint32_t>(data_.data() + pos_ + 4 * i));
    }
  }
  pos_ += count * sizeof(float);
  return absl::OkStatus();
}

absl::Status ByteReader::GetU16s(uint16_t* out, size_t count,
                                 absl::string_view what) {
  if (count > remaining() / sizeof(uint16_t)) {
    return absl::DataLossError(
        absl::StrCat("truncated input reading ", what, ": need ", count,
                     " 16-bit values, have ", remaining(), " bytes"));
  }
  if constexpr (kLittleEndian) {
    if (count > 0) {
      std::memcpy(out, data_.data() + pos_, count * sizeof(uint16_t));
    }
  } else {
    for (size_t i = 0; i < count; ++i) {
      out[i] = LoadLe<uint16_t>(data_.data() + pos_ + 2 * i);
    }
  }
  pos_ += count * sizeof(uint16_t);
  return absl::OkStatus();
}

absl::Status ByteReader::ExpectEnd(absl::string_view what) const {
  if (remaining() != 0) {
    return absl::DataLossError(
        absl::StrCat(remaining(), " unexpected trailing bytes after ", what));
  }
  return absl::OkStatus();
}

}  // namespace kvsketch
