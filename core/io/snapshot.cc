// File: core/io/snapshot.cc
#include "core/io/snapshot.h"

#include <zlib.h>

#include "absl/strings/str_cat.h"
#include "core/io/byte_io.h"

namespace kvsketch {
namespace {

constexpr absl::string_view kMagic = "KVSKSNAP";
// magic + version + reserved + payload length.
constexpr size_t kHeaderBytes = 8 + 4 + 4 + 8;
constexpr size_t kTrailerBytes = 4;

uint32_t Crc32(absl::string_view bytes) {
  // zlib's crc32 takes a uInt length: feed large blobs in pieces.
  uLong crc = crc32(0L, Z_NULL, 0);
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    const uInt piece = left > (1u << 30) ? (1u << 30) : static_cast<uInt>(left);
    crc = crc32(crc, reinterpret_cast<const Bytef*>(p), piece);
    p += piece;
    left -= piece;
  }
  return static_cast<uint32_t>(crc);
}

}  // namespace

std::string WrapSnapshot(absl::string_view payload) {
  ByteWriter w;
  w.PutBytes(kMagic.data(), kMagic.size());
  w.PutU32(kSnapshotFormatVersion);
  w.PutU32(0);
  w.PutU64(payload.size());
  w.PutBytes(payload.data(), payload.size());
  w.PutU32(Crc32(w.data()));
  return w.Release();
}

absl::StatusOr<absl::string_view> UnwrapSnapshot(absl::string_view blob) {
  if (blob.size() < kHeaderBytes + kTrailerBytes) {
    return absl::DataLossError(absl::StrCat("snapshot too short: ", blob.size(),
                                            " bytes, the header "
                                            "and checksum alone take ",
                                            kHeaderBytes + kTrailerBytes));
  }
  if (blob.substr(0, kMagic.size()) != kMagic) {
    return absl::DataLossError(
        "snapshot has a wrong magic (not a kvsketch "
        "snapshot)");
  }
  ByteReader r(blob.substr(kMagic.size()));
  uint32_t version = 0, reserved = 0;
  uint64_t length = 0;
  // Cannot fail: the size was checked above.
  (void)r.GetU32(&version, "snapshot version");
  (void)r.GetU32(&reserved, "snapshot reserved word");
  (void)r.GetU64(&length, "snapshot payload length");
  if (version != kSnapshotFormatVersion) {
    return absl::DataLossError(
        absl::StrCat("unsupported snapshot format version ", version,
                     " (this build reads ", kSnapshotFormatVersion, ")"));
  }
  if (reserved != 0) {
    return absl::DataLossError(
        absl::StrCat("snapshot reserved word is ", reserved, ", expected 0"));
  }
  const size_t available = blob.size() - kHeaderBytes - kTrailerBytes;
  if (length != available) {
    return absl::DataLossError(absl::StrCat(
        "snapshot payload length mismatch: header says ", length,
        " bytes, the blob holds ", available,
        length < available ? " (trailing bytes)" : " (truncated)"));
  }
  const size_t crc_pos = blob.size() - kTrailerBytes;
  ByteReader crc_reader(blob.substr(crc_pos));
  uint32_t stored_crc = 0;
  (void)crc_reader.GetU32(&stored_crc, "snapshot checksum");
  const uint32_t actual_crc = Crc32(blob.substr(0, crc_pos));
  if (stored_crc != actual_crc) {
    return absl::DataLossError(
        absl::StrCat("snapshot checksum mismatch: stored ", stored_crc,
                     ", computed ", actual_crc));
  }
  return blob.substr(kHeaderBytes, length);
}

}  // namespace kvsketch
