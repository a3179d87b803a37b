// File: core/io/snapshot.h
//
// The snapshot envelope: a versioned, checksummed container for a serialized
// session (SessionState::Save), used by ExportSession / ImportSession and by
// the server's --data_dir restart path.
//
// Layout (little-endian):
//   8 bytes  magic "KVSKSNAP"
//   u32      format version (kSnapshotFormatVersion)
//   u32      reserved, 0
//   u64      payload length
//   payload
//   u32      CRC-32 (zlib polynomial) of every byte before it
//
// Any deviation (short blob, wrong magic, unknown version, length mismatch,
// checksum mismatch, trailing bytes) is absl::DataLossError with a message
// saying which.
#ifndef KVSKETCH_CORE_IO_SNAPSHOT_H_
#define KVSKETCH_CORE_IO_SNAPSHOT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvsketch {

inline constexpr uint32_t kSnapshotFormatVersion = 1;

std::string WrapSnapshot(absl::string_view payload);

// Returns a view of the payload inside blob (valid as long as blob is).
absl::StatusOr<absl::string_view> UnwrapSnapshot(absl::string_view blob);

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_IO_SNAPSHOT_H_
