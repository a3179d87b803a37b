// File: core/zeta/morton.cc
#include "core/zeta/morton.h"

#include <cmath>

#include "absl/strings/str_cat.h"

#if defined(__BMI2__)
#include <immintrin.h>
#endif

namespace kvsketch {

absl::StatusOr<MortonCodec> MortonCodec::Create(int dims, int bits) {
  if (dims < 1 || bits < 1 || bits > 32 || dims * bits > 64) {
    return absl::InvalidArgumentError(absl::StrCat(
        "morton: dims (", dims, ") and bits (", bits,
        ") must satisfy dims >= 1, 1 <= bits <= 32, dims*bits <= 64"));
  }
  return MortonCodec(dims, bits);
}

MortonCodec::MortonCodec(int dims, int bits)
    : dims_(dims), bits_(bits), masks_(dims, 0) {
  for (int i = 0; i < dims; ++i) {
    for (int j = 0; j < bits; ++j) {
      masks_[i] |= uint64_t{1} << (j * dims + (dims - 1 - i));
    }
  }
}

uint64_t MortonCodec::Encode(const uint32_t* coords) const {
  uint64_t code = 0;
#if defined(__BMI2__)
  // pdep scatters the low bits of the coordinate onto the set bits of its
  // mask in order, which is exactly the interleave.
  for (int i = 0; i < dims_; ++i) code |= _pdep_u64(coords[i], masks_[i]);
#else
  for (int i = 0; i < dims_; ++i) {
    for (int j = 0; j < bits_; ++j) {
      code |= static_cast<uint64_t>((coords[i] >> j) & 1u)
              << (j * dims_ + (dims_ - 1 - i));
    }
  }
#endif
  return code;
}

void MortonCodec::Decode(uint64_t code, uint32_t* coords) const {
#if defined(__BMI2__)
  for (int i = 0; i < dims_; ++i) {
    coords[i] = static_cast<uint32_t>(_pext_u64(code, masks_[i]));
  }
#else
  for (int i = 0; i < dims_; ++i) {
    uint32_t c = 0;
    for (int j = 0; j < bits_; ++j) {
      c |= static_cast<uint32_t>((code >> (j * dims_ + (dims_ - 1 - i))) & 1u)
           << j;
    }
    coords[i] = c;
  }
#endif
}

absl::StatusOr<Quantizer> Quantizer::Create(double lo, double hi, int bits) {
  if (!std::isfinite(lo) || !std::isfinite(hi) || !(lo < hi)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "quantizer: bounds lo (", lo, ") < hi (", hi, ") must be finite"));
  }
  if (bits < 1 || bits > 32) {
    return absl::InvalidArgumentError(
        absl::StrCat("quantizer: bits (", bits, ") must be in [1, 32]"));
  }
  return Quantizer(lo, hi, bits);
}

Quantizer::Quantizer(double lo, double hi, int bits)
    : lo_(lo),
      hi_(hi),
      cells_per_unit_(std::ldexp(1.0, bits) / (hi - lo)),
      max_code_(static_cast<uint32_t>((uint64_t{1} << bits) - 1)) {}

absl::StatusOr<uint32_t> Quantizer::Quantize(double x) const {
  if (!std::isfinite(x)) {
    return absl::InvalidArgumentError(
        absl::StrCat("quantizer: value x (", x, ") is not finite"));
  }
  return QuantizeFinite(x);
}

uint32_t Quantizer::QuantizeFinite(double x) const {
  // floor((x − lo) · 2^bits / (hi − lo)), clamped to [0, 2^bits − 1]: a
  // composition of monotone maps, so x <= y implies code(x) <= code(y).
  const double cell = std::floor((x - lo_) * cells_per_unit_);
  if (cell <= 0) return 0;
  if (cell >= static_cast<double>(max_code_)) return max_code_;
  return static_cast<uint32_t>(cell);
}

}  // namespace kvsketch
