// File: core/io/npy.cc
//
// The header is a Python dict literal. We parse exactly the subset numpy
// writes ({'descr': str, 'fortran_order': bool, 'shape': tuple of ints}) with
// a small bounded tokenizer, and check every count against the bytes really
// present before allocating, so a hostile file cannot make us over-allocate.
#include "core/io/npy.h"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status_macros.h"
#include "core/util/half.h"

namespace kvsketch {
namespace {

constexpr absl::string_view kMagic = "\x93NUMPY";
constexpr int kMaxDims = 32;
constexpr bool kLittleEndianHost = std::endian::native == std::endian::little;

enum class Dtype { kF2, kF4, kF8 };

// Cursor over the header dict.
class HeaderParser {
 public:
  HeaderParser(absl::string_view text, absl::string_view name)
      : s_(text), name_(name) {}

  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(
        "npy ", name_, ": malformed header at offset ", pos_, ": ", what));
  }
  void SkipSpace() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' ||
                                s_[pos_] == '\n' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool Consume(char c) {
    SkipSpace();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool AtEnd() {
    SkipSpace();
    return pos_ == s_.size();
  }
  absl::StatusOr<std::string> String() {
    SkipSpace();
    if (pos_ >= s_.size() || (s_[pos_] != '\'' && s_[pos_] != '"')) {
      return Error("expected a quoted string");
    }
    const char quote = s_[pos_++];
    const size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] != quote) {
      if (s_[pos_] == '\\') return Error("escapes are not supported");
      ++pos_;
    }
    if (pos_ >= s_.size()) return Error("unterminated string");
    std::string out(s_.substr(start, pos_ - start));
    ++pos_;
    return out;
  }
  absl::StatusOr<bool> Bool() {
    SkipSpace();
    if (s_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (s_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    return Error("expected True or False");
  }
  absl::StatusOr<int64_t> Int() {
    SkipSpace();
    const size_t start = pos_;
    int64_t v = 0;
    while (pos_ < s_.size() &&
           absl::ascii_isdigit(static_cast<unsigned char>(s_[pos_]))) {
      const int digit = s_[pos_] - '0';
      if (v > (std::numeric_limits<int64_t>::max() - digit) / 10) {
        return Error("dimension too large");
      }
      v = v * 10 + digit;
      ++pos_;
    }
    if (pos_ == start) return Error("expected a non-negative integer");
    // Python 2 numpy wrote longs as "3L".
    if (pos_ < s_.size() && s_[pos_] == 'L') ++pos_;
    return v;
  }
  absl::StatusOr<std::vector<int64_t>> Shape() {
    if (!Consume('(')) return Error("expected '(' for shape");
    std::vector<int64_t> dims;
    if (Consume(')')) return dims;
    while (true) {
      KVSKETCH_ASSIGN_OR_RETURN(int64_t v, Int());
      dims.push_back(v);
      if (dims.size() > kMaxDims) return Error("too many dimensions");
      if (Consume(')')) return dims;
      if (!Consume(',')) return Error("expected ',' or ')' in shape");
      if (Consume(')')) return dims;
    }
  }

 private:
  absl::string_view s_;
  absl::string_view name_;
  size_t pos_ = 0;
};

absl::StatusOr<Dtype> ParseDescr(const std::string& descr,
                                 absl::string_view name) {
  auto unsupported = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("npy ", name, ": unsupported dtype '", descr, "' (", why,
                     "); expected '<f4', '<f2' or '<f8'"));
  };
  if (descr.size() != 3) return unsupported("not a float dtype");
  const char order = descr[0];
  if (order == '>') return unsupported("big-endian");
  if (order != '<' && !((order == '|' || order == '=') && kLittleEndianHost)) {
    return unsupported("unknown byte order");
  }
  if (descr[1] != 'f') return unsupported("not a float dtype");
  switch (descr[2]) {
    case '2':
      return Dtype::kF2;
    case '4':
      return Dtype::kF4;
    case '8':
      return Dtype::kF8;
    default:
      return unsupported("unsupported float width");
  }
}

}  // namespace

absl::StatusOr<NpyArray> ParseNpy(absl::string_view bytes,
                                  absl::string_view name) {
  const size_t magic_seen = std::min(bytes.size(), kMagic.size());
  if (bytes.substr(0, magic_seen) != kMagic.substr(0, magic_seen)) {
    return absl::InvalidArgumentError(
        absl::StrCat("npy ", name, ": not a .npy file (bad magic)"));
  }
  if (bytes.size() < kMagic.size() + 2) {
    return absl::DataLossError(
        absl::StrCat("npy ", name, ": truncated before the header"));
  }
  const int major = static_cast<unsigned char>(bytes[6]);
  const int minor = static_cast<unsigned char>(bytes[7]);
  if (major < 1 || major > 3 || minor != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "npy ", name, ": unsupported format version ", major, ".", minor));
  }
  const size_t len_bytes = major == 1 ? 2 : 4;
  if (bytes.size() < 8 + len_bytes) {
    return absl::DataLossError(
        absl::StrCat("npy ", name, ": truncated in the header length"));
  }
  uint64_t header_len = 0;
  for (size_t i = 0; i < len_bytes; ++i) {
    header_len |=
        static_cast<uint64_t>(static_cast<unsigned char>(bytes[8 + i]))
        << (8 * i);
  }
  const size_t data_start = 8 + len_bytes + header_len;
  if (header_len > bytes.size() - 8 - len_bytes) {
    return absl::DataLossError(absl::StrCat("npy ", name, ": header claims ",
                                            header_len, " bytes, file has ",
                                            bytes.size() - 8 - len_bytes));
  }
  const absl::string_view header = bytes.substr(8 + len_bytes, header_len);
  for (char ch : header) {
    const unsigned char uc = static_cast<unsigned char>(ch);
    if (uc >= 0x80 || (uc < 0x20 && ch != '\n' && ch != '\t' && ch != '\r')) {
      return absl::InvalidArgumentError(absl::StrCat(
          "npy ", name, ": header contains a non-ASCII or control byte"));
    }
  }
  HeaderParser p(header, name);
  if (!p.Consume('{')) return p.Error("expected '{'");
  std::string descr;
  bool have_descr = false, have_order = false, have_shape = false;
  bool fortran = false;
  std::vector<int64_t> shape;
  while (!p.Consume('}')) {
    KVSKETCH_ASSIGN_OR_RETURN(std::string key, p.String());
    if (!p.Consume(':')) return p.Error("expected ':'");
    if (key == "descr" && !have_descr) {
      KVSKETCH_ASSIGN_OR_RETURN(descr, p.String());
      have_descr = true;
    } else if (key == "fortran_order" && !have_order) {
      KVSKETCH_ASSIGN_OR_RETURN(fortran, p.Bool());
      have_order = true;
    } else if (key == "shape" && !have_shape) {
      KVSKETCH_ASSIGN_OR_RETURN(shape, p.Shape());
      have_shape = true;
    } else {
      return p.Error(absl::StrCat("unexpected or repeated key '", key, "'"));
    }
    if (!p.Consume(',')) {
      if (!p.Consume('}')) return p.Error("expected ',' or '}'");
      break;
    }
  }
  if (!p.AtEnd()) return p.Error("trailing characters after the dict");
  if (!have_descr || !have_order || !have_shape) {
    return p.Error("missing one of 'descr', 'fortran_order', 'shape'");
  }
  KVSKETCH_ASSIGN_OR_RETURN(Dtype dtype, ParseDescr(descr, name));
  if (fortran) {
    return absl::InvalidArgumentError(absl::StrCat(
        "npy ", name, ": fortran_order True is not supported (C order only)"));
  }
  const size_t item = dtype == Dtype::kF2 ? 2 : dtype == Dtype::kF4 ? 4 : 8;
  const size_t available = bytes.size() - data_start;
  // Multiply with an overflow guard against the available bytes.
  uint64_t count = 1;
  bool too_big = false;
  for (int64_t dim : shape) {
    if (dim != 0 && count > (available / item) / static_cast<uint64_t>(dim)) {
      too_big = true;
    }
    count = too_big ? count : count * static_cast<uint64_t>(dim);
  }
  bool has_zero = false;
  for (int64_t dim : shape) has_zero = has_zero || dim == 0;
  if (has_zero) {
    count = 0;
    too_big = false;
  }
  if (too_big || count * item > available) {
    return absl::DataLossError(absl::StrCat(
        "npy ", name, ": shape (", absl::StrJoin(shape, ", "),
        ") needs more data than the file's ", available, " bytes (truncated)"));
  }
  if (count * item != available) {
    return absl::InvalidArgumentError(absl::StrCat(
        "npy ", name, ": size mismatch: shape (", absl::StrJoin(shape, ", "),
        ") needs ", count * item, " data bytes, file has ", available));
  }
  NpyArray out;
  out.shape = std::move(shape);
  out.data.resize(count);
  const char* src = bytes.data() + data_start;
  switch (dtype) {
    case Dtype::kF4:
      if (count > 0) std::memcpy(out.data.data(), src, count * 4);
      break;
    case Dtype::kF2: {
      std::vector<uint16_t> h(count);
      if (count > 0) std::memcpy(h.data(), src, count * 2);
      HalfToFloatN(h.data(), out.data.data(), count);
      break;
    }
    case Dtype::kF8:
      for (size_t i = 0; i < count; ++i) {
        double v;
        std::memcpy(&v, src + 8 * i, 8);
        out.data[i] = static_cast<float>(v);
      }
      break;
  }
  return out;
}

std::string SerializeNpy(absl::Span<const int64_t> shape,
                         absl::Span<const float> data) {
  std::string dims;
  if (shape.size() == 1) {
    dims = absl::StrCat(shape[0], ",");
  } else {
    dims = absl::StrJoin(shape, ", ");
  }
  std::string header = absl::StrCat(
      "{'descr': '<f4', 'fortran_order': False, 'shape': (", dims, "), }");
  // Pad with spaces and a final newline so the data starts 64-aligned.
  const size_t unpadded = kMagic.size() + 2 + 2 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  std::string out(kMagic);
  out.push_back('\x01');
  out.push_back('\x00');
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>((header.size() >> 8) & 0xff));
  out.append(header);
  out.append(reinterpret_cast<const char*>(data.data()),
             data.size() * sizeof(float));
  return out;
}

absl::StatusOr<NpyArray> ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("npy ", path, ": cannot open: ", std::strerror(errno)));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) {
    return absl::DataLossError(absl::StrCat("npy ", path, ": read error"));
  }
  return ParseNpy(ss.str(), path);
}

absl::Status WriteNpy(const std::string& path, absl::Span<const int64_t> shape,
                      absl::Span<const float> data) {
  int64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("npy ", path, ": negative dimension ", d));
    }
    count *= d;
  }
  if (count != static_cast<int64_t>(data.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("npy ", path, ": shape (", absl::StrJoin(shape, ", "),
                     ") holds ", count, " elements, data has ", data.size()));
  }
  const std::string bytes = SerializeNpy(shape, data);
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat(
        "npy ", path, ": cannot create ", tmp, ": ", std::strerror(errno)));
  }
  const bool wrote =
      std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  const bool closed = std::fclose(f) == 0;
  if (!wrote || !closed) {
    std::remove(tmp.c_str());
    return absl::DataLossError(
        absl::StrCat("npy ", path, ": write failed: ", std::strerror(errno)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = std::strerror(errno);
    std::remove(tmp.c_str());
    return absl::PermissionDeniedError(
        absl::StrCat("npy ", path, ": cannot rename into place: ", err));
  }
  return absl::OkStatus();
}

}  // namespace kvsketch
