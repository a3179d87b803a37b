// File: core/regression/correction_file.h
//
// A fitted storage correction on disk (issue #5 item 3): what
// `kvsketch fit --trace DIR --correct SPEC --out OUT` writes and
// `kvsketch eval --correction OUT` reads. A directory with
//
//   correction_x.npy  float32 [layers, q_heads, d, d]    X per query head
//   correction_y.npy  float32 [layers, q_heads, dv, dv]  Y per query head
//   correction.txt    key=value lines: format, base_spec (canonical), trace
//                     (Trace::name), trace_dir (absolute path), layers,
//                     q_heads, kv_heads, n, d, dv, train_tokens, lambda,
//                     layer (-1 = every layer fitted)
//
// Heads that were not fitted (fit --layer L) hold X = Y = I. The .npy files
// are written first and correction.txt last, each atomically (temporary file,
// then rename), so a directory with a correction.txt is complete.
#ifndef KVSKETCH_CORE_REGRESSION_CORRECTION_FILE_H_
#define KVSKETCH_CORE_REGRESSION_CORRECTION_FILE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/approximator.h"
#include "core/eval/trace.h"
#include "core/regression/regression.h"
#include "core/regression/storage_correction.h"

namespace kvsketch::regression {

struct StorageCorrectionFile {
  std::string base_spec;   // canonical registry spec of the corrected kind
  std::string trace_name;  // Trace::name of the fitting trace
  std::string trace_dir;   // absolute path of the fitting trace directory
  int layers = 0, q_heads = 0, kv_heads = 0, d = 0, dv = 0;
  int64_t n = 0;             // tokens of the fitting trace
  int64_t train_tokens = 0;  // positions 0..train_tokens-1 were fitted on
  double lambda = 0;         // ridge, relative to ‖B_train‖²
  int layer = -1;            // the fitted layer, -1 = all
  std::vector<Matrix> x, y;  // index layer * q_heads + q_head

  int group() const { return q_heads / kv_heads; }
  const Matrix& X(int l, int qh) const { return x[l * q_heads + qh]; }
  const Matrix& Y(int l, int qh) const { return y[l * q_heads + qh]; }
};

// Collects FitStorageCorrection's heads for `trace` (loaded from trace_dir)
// into a file description; heads absent from `heads` get X = Y = I.
// InvalidArgument for a head outside the trace's shape or of the wrong size.
absl::StatusOr<StorageCorrectionFile> MakeStorageCorrectionFile(
    const eval::Trace& trace, const std::string& trace_dir,
    const CorrectionOptions& options, absl::Span<const HeadCorrection> heads);

// Writes the three files into dir (created if missing).
absl::Status SaveStorageCorrection(const StorageCorrectionFile& file,
                                   const std::string& dir);

// Reads and validates a directory written by SaveStorageCorrection. NotFound
// naming a missing file; InvalidArgument for a malformed correction.txt, an
// unknown base spec, .npy shapes that disagree with it, or a non-finite
// entry (naming the file and the layer / head).
absl::StatusOr<StorageCorrectionFile> LoadStorageCorrection(
    const std::string& dir);

// InvalidArgument (naming both values) unless the trace has the correction's
// layers, query heads, KV heads, d and dv.
absl::Status CheckCorrectionMatchesTrace(const StorageCorrectionFile& file,
                                         const eval::Trace& trace);

// Wraps `base` (the approximator of (layer, kv_head)) in a
// CorrectedApproximator with that KV head's group of X / Y.
absl::StatusOr<std::unique_ptr<Approximator>> WrapWithCorrection(
    const StorageCorrectionFile& file, int layer, int kv_head,
    std::unique_ptr<Approximator> base);

}  // namespace kvsketch::regression

#endif  // KVSKETCH_CORE_REGRESSION_CORRECTION_FILE_H_
