// File: core/io/npy.h
//
// NumPy .npy files (format versions 1.0, 2.0 and 3.0), the trace format of
// DESIGN.md §7. Reads little-endian '<f4', '<f2' and '<f8' C-order arrays
// into float32 (f8 narrowed); writes '<f4' version 1.0. Malformed headers,
// unsupported dtypes, Fortran order and size mismatches are InvalidArgument
// (DataLoss for a truncated file) with a message naming the file.
#ifndef KVSKETCH_CORE_IO_NPY_H_
#define KVSKETCH_CORE_IO_NPY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace kvsketch {

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> data;  // row-major, product(shape) elements
};

absl::StatusOr<NpyArray> ParseNpy(absl::string_view bytes,
                                  absl::string_view name = "<memory>");
std::string SerializeNpy(absl::Span<const int64_t> shape,
                         absl::Span<const float> data);

absl::StatusOr<NpyArray> ReadNpy(const std::string& path);
// Writes atomically (temporary file, then rename).
absl::Status WriteNpy(const std::string& path, absl::Span<const int64_t> shape,
                      absl::Span<const float> data);

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_IO_NPY_H_
