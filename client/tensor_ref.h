// File: client/tensor_ref.h
//
// Host-side tensors for building requests: a shape plus a borrowed float
// buffer, and helpers that turn them into wire Tensors (wire/tensor_codec.h)
// and DecodeEntry messages. Shapes follow proto/kvsketch/v1: keys
// [kv_heads, T, d], values [kv_heads, T, dv], queries [q_heads, M, d]; a
// rank-2 tensor means T = 1.
#ifndef KVSKETCH_CLIENT_TENSOR_REF_H_
#define KVSKETCH_CLIENT_TENSOR_REF_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kvsketch/v1/attention.pb.h"
#include "wire/tensor_codec.h"

namespace kvsketch::client {

// A non-owning tensor: the caller keeps `data` alive. An empty shape means
// "absent" (e.g. no keys in an Attend).
struct TensorRef {
  std::vector<int64_t> shape;
  absl::Span<const float> data;

  bool empty() const { return shape.empty(); }
};

// Product of the dimensions; -1 if one is negative or the product overflows.
int64_t NumElements(absl::Span<const int64_t> shape);

// InvalidArgument naming `field` unless data.size() == product(shape).
absl::Status CheckTensorRef(const TensorRef& tensor, absl::string_view field);

// Encodes `tensor` into `out` (validated first; `out` untouched on error).
absl::Status ToWire(const TensorRef& tensor, v1::DType dtype,
                    absl::string_view field, v1::Tensor* out);

// Copies rows [start, start + count) of axis `axis` of a row-major tensor.
// Used to cut [.., T, d] arrays into chunks along T: cost O(count * inner).
// REQUIRES: 0 <= axis < rank, 0 <= start, start + count <= shape[axis],
// data.size() == product(shape).
std::vector<float> SliceAxis(absl::Span<const int64_t> shape,
                             absl::Span<const float> data, int axis,
                             int64_t start, int64_t count);

// Appends one DecodeEntry to `request`. keys/values/queries may each be
// empty (absent). Validates sizes; `request` untouched on error.
absl::Status AddDecodeEntry(absl::string_view session_id, int layer,
                            const TensorRef& keys, const TensorRef& values,
                            const TensorRef& queries, v1::DType dtype,
                            v1::DecodeRequest* request);

// The output of one Decode result: its error (code != 0) as a Status with
// `field` and the server's message, else the decoded [q_heads, M, dv] tensor.
// FailedPrecondition if the entry had no queries (no output).
absl::StatusOr<DecodedTensor> ResultOutput(const v1::DecodeResult& result,
                                           absl::string_view field);

// "f32" / "f16" / "bf16" (case-insensitive) -> DType.
absl::StatusOr<v1::DType> ParseDType(absl::string_view name);

}  // namespace kvsketch::client

#endif  // KVSKETCH_CLIENT_TENSOR_REF_H_
