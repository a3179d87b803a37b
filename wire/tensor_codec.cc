// File: wire/tensor_codec.cc
//
// Decoding is one pass to validate the header (dtype, shape, byte size) and
// one pass to widen and scan for NaN/Inf: O(n) time, one float buffer of n
// elements. Encoding narrows with the same converters (core/util/half.h).
#include "wire/tensor_codec.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/util/half.h"

namespace kvsketch {
namespace {

// The host must be little-endian: the wire format is, and we memcpy.
static_assert(std::endian::native == std::endian::little,
              "kvsketch wire encoding assumes a little-endian host");

// Largest element count we accept: keeps product(shape) * 4 inside int64 and
// far above any message gRPC would let through.
constexpr int64_t kMaxElements = int64_t{1} << 40;

std::string ShapeString(const v1::Tensor& tensor) {
  return absl::StrCat("[", absl::StrJoin(tensor.shape(), ","), "]");
}

}  // namespace

int DTypeSize(v1::DType dtype) {
  switch (dtype) {
    case v1::F32:
      return 4;
    case v1::F16:
    case v1::BF16:
      return 2;
    default:
      return 0;
  }
}

absl::StatusOr<DecodedTensor> DecodeTensor(const v1::Tensor& tensor,
                                           absl::string_view field) {
  const int elem_size = DTypeSize(tensor.dtype());
  if (elem_size == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".dtype: ",
        tensor.dtype() == v1::DTYPE_UNSPECIFIED
            ? std::string("unspecified")
            : absl::StrCat("unknown value ", static_cast<int>(tensor.dtype())),
        " (want F32, F16 or BF16)"));
  }
  int64_t count = 1;
  for (int i = 0; i < tensor.shape_size(); ++i) {
    const int64_t dim = tensor.shape(i);
    if (dim < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".shape[", i, "]: negative dimension ", dim));
    }
    if (dim != 0 && count > kMaxElements / dim) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".shape: ", ShapeString(tensor), " has too many elements"));
    }
    count *= dim;
  }
  const uint64_t want_bytes = static_cast<uint64_t>(count) * elem_size;
  if (tensor.data().size() != want_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".data: ", tensor.data().size(),
                     " bytes but shape ", ShapeString(tensor), " of ",
                     v1::DType_Name(tensor.dtype()), " needs ", want_bytes));
  }

  DecodedTensor out;
  out.shape.assign(tensor.shape().begin(), tensor.shape().end());
  out.data.resize(static_cast<size_t>(count));
  const char* src = tensor.data().data();
  switch (tensor.dtype()) {
    case v1::F32:
      if (count > 0) std::memcpy(out.data.data(), src, want_bytes);
      break;
    case v1::F16:
    case v1::BF16: {
      // The proto's bytes need not be 2-byte aligned: copy to a u16 buffer.
      std::vector<uint16_t> halves(static_cast<size_t>(count));
      if (count > 0) std::memcpy(halves.data(), src, want_bytes);
      if (tensor.dtype() == v1::F16) {
        HalfToFloatN(halves.data(), out.data.data(), halves.size());
      } else {
        Bf16ToFloatN(halves.data(), out.data.data(), halves.size());
      }
      break;
    }
    default:
      break;  // unreachable: elem_size checked above
  }
  for (size_t i = 0; i < out.data.size(); ++i) {
    if (!std::isfinite(out.data[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".data: element ", i, " is ",
          std::isnan(out.data[i]) ? "NaN" : "Inf", " (values must be finite)"));
    }
  }
  return out;
}

void EncodeTensor(absl::Span<const int64_t> shape, absl::Span<const float> data,
                  v1::DType dtype, v1::Tensor* out) {
  out->Clear();
  out->set_dtype(dtype);
  for (int64_t d : shape) out->add_shape(d);
  std::string* bytes = out->mutable_data();
  switch (dtype) {
    case v1::F16:
    case v1::BF16: {
      std::vector<uint16_t> halves(data.size());
      if (dtype == v1::F16) {
        FloatToHalfN(data.data(), halves.data(), data.size());
      } else {
        FloatToBf16N(data.data(), halves.data(), data.size());
      }
      bytes->assign(reinterpret_cast<const char*>(halves.data()),
                    halves.size() * sizeof(uint16_t));
      break;
    }
    default:
      out->set_dtype(v1::F32);
      bytes->assign(reinterpret_cast<const char*>(data.data()),
                    data.size() * sizeof(float));
      break;
  }
}

}  // namespace kvsketch
