// File: wire/tensor_codec.h
//
// Conversion between the wire Tensor message (proto/kvsketch/v1) and float
// buffers, shared by the server and the client library. Decoding validates
// everything a client can get wrong and names the field in the error:
//   - dtype unspecified or unknown                      -> InvalidArgument
//   - a negative dimension, or a size that overflows    -> InvalidArgument
//   - data.size() != product(shape) * sizeof(dtype)     -> InvalidArgument
//   - a NaN or Inf element (after conversion)           -> InvalidArgument
// Little-endian, row-major; F16 and BF16 widen exactly to float.
#ifndef KVSKETCH_WIRE_TENSOR_CODEC_H_
#define KVSKETCH_WIRE_TENSOR_CODEC_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kvsketch/v1/attention.pb.h"

namespace kvsketch {

struct DecodedTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// `field` names the tensor in error messages, e.g. "entries[3].queries".
absl::StatusOr<DecodedTensor> DecodeTensor(const v1::Tensor& tensor,
                                           absl::string_view field);

// REQUIRES: data.size() == product(shape).
void EncodeTensor(absl::Span<const int64_t> shape, absl::Span<const float> data,
                  v1::DType dtype, v1::Tensor* out);

// Bytes per element of a dtype; 0 for DTYPE_UNSPECIFIED / unknown values.
int DTypeSize(v1::DType dtype);

}  // namespace kvsketch

#endif  // KVSKETCH_WIRE_TENSOR_CODEC_H_
