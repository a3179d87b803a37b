#include "client/tensor_ref.h"

#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status_macros.h"
#include "wire/tensor_codec.h"

namespace kvsketch::client {

int64_t NumElements(absl::Span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t dim : shape) {
    if (dim < 0) return -1;
    if (dim != 0 && n > std::numeric_limits<int64_t>::max() / dim) return -1;
    n *= dim;
  }
  return n;
}

absl::Status CheckTensorRef(const TensorRef& tensor, absl::string_view field) {
  const int64_t n = NumElements(tensor.shape);
  if (n < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": invalid shape [", absl::StrJoin(tensor.shape, ", "), "]"));
  }
  if (static_cast<int64_t>(tensor.data.size()) != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": shape [", absl::StrJoin(tensor.shape, ", "), "] needs ", n,
        " elements but the buffer has ", tensor.data.size()));
  }
  return absl::OkStatus();
}

absl::Status ToWire(const TensorRef& tensor, v1::DType dtype,
                    absl::string_view field, v1::Tensor* out) {
  KVSKETCH_RETURN_IF_ERROR(CheckTensorRef(tensor, field));
  if (DTypeSize(dtype) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": unsupported dtype ", static_cast<int>(dtype)));
  }
  EncodeTensor(tensor.shape, tensor.data, dtype, out);
  return absl::OkStatus();
}

std::vector<float> SliceAxis(absl::Span<const int64_t> shape,
                             absl::Span<const float> data, int axis,
                             int64_t start, int64_t count) {
  int64_t outer = 1;
  for (int i = 0; i < axis; ++i) outer *= shape[i];
  int64_t inner = 1;
  for (size_t i = axis + 1; i < shape.size(); ++i) inner *= shape[i];
  const int64_t len = shape[axis];
  std::vector<float> out;
  out.reserve(outer * count * inner);
  for (int64_t o = 0; o < outer; ++o) {
    const float* src = data.data() + (o * len + start) * inner;
    out.insert(out.end(), src, src + count * inner);
  }
  return out;
}

absl::Status AddDecodeEntry(absl::string_view session_id, int layer,
                            const TensorRef& keys, const TensorRef& values,
                            const TensorRef& queries, v1::DType dtype,
                            v1::DecodeRequest* request) {
  v1::DecodeEntry entry;
  entry.set_session_id(std::string(session_id));
  entry.set_layer(layer);
  if (!keys.empty()) {
    KVSKETCH_RETURN_IF_ERROR(ToWire(keys, dtype, "keys", entry.mutable_keys()));
  }
  if (!values.empty()) {
    KVSKETCH_RETURN_IF_ERROR(
        ToWire(values, dtype, "values", entry.mutable_values()));
  }
  if (!queries.empty()) {
    KVSKETCH_RETURN_IF_ERROR(
        ToWire(queries, dtype, "queries", entry.mutable_queries()));
  }
  *request->add_entries() = std::move(entry);
  return absl::OkStatus();
}

absl::StatusOr<DecodedTensor> ResultOutput(const v1::DecodeResult& result,
                                           absl::string_view field) {
  if (result.code() != 0) {
    return absl::Status(static_cast<absl::StatusCode>(result.code()),
                        absl::StrCat(field, ": ", result.message()));
  }
  if (!result.has_output()) {
    return absl::FailedPreconditionError(
        absl::StrCat(field, ": no output (the entry carried no queries)"));
  }
  return DecodeTensor(result.output(), absl::StrCat(field, ".output"));
}

absl::StatusOr<v1::DType> ParseDType(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "f32" || lower == "float32") return v1::F32;
  if (lower == "f16" || lower == "float16") return v1::F16;
  if (lower == "bf16" || lower == "bfloat16") return v1::BF16;
  return absl::InvalidArgumentError(absl::StrCat(
      "dtype: unknown value '", name, "' (expected f32, f16 or bf16)"));
}

}  // namespace kvsketch::client
