// File: core/zeta/morton.h
//
// Morton (Z-order) codes and the scalar quantiser that feeds them, for the
// `zeta` index (papers/C_D_E_conv_regression_zeta.md §E.2 steps 2–3).
//
// Bit convention (§E.2 step 3): coordinates are interleaved most-significant
// bit first, and within each group of `dims` bits the FIRST coordinate takes
// the highest bit. With dims = 2, bits = 1: (0,1) -> 1, (1,0) -> 2,
// (1,1) -> 3; bits = 2: (3,0) -> 0b1010 = 10. Bit j of coordinate i lands at
// code bit j·dims + (dims − 1 − i). dims·bits <= 64 is required.
//
// Costs: encode/decode O(dims) with BMI2 pdep/pext (one instruction per
// coordinate; available in the x86-64-v3 baseline the project ships), else
// O(dims·bits) with a portable bit loop. Both give identical codes.
#ifndef KVSKETCH_CORE_ZETA_MORTON_H_
#define KVSKETCH_CORE_ZETA_MORTON_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvsketch {

// The per-coordinate bit masks of a (dims, bits) Morton layout, precomputed
// once per index. InvalidArgument unless 1 <= dims, 1 <= bits <= 32 and
// dims·bits <= 64.
class MortonCodec {
 public:
  static absl::StatusOr<MortonCodec> Create(int dims, int bits);

  int dims() const { return dims_; }
  int bits() const { return bits_; }

  // REQUIRES: coords has dims() entries, each < 2^bits().
  uint64_t Encode(const uint32_t* coords) const;
  // Inverse of Encode: writes dims() coordinates.
  void Decode(uint64_t code, uint32_t* coords) const;

 private:
  MortonCodec(int dims, int bits);

  int dims_ = 0;
  int bits_ = 0;
  std::vector<uint64_t> masks_;  // masks_[i]: code bits of coordinate i
};

// Maps a real interval [lo, hi] monotonically onto the integers
// 0 .. 2^bits − 1 (equal-width cells), clamping values outside it: a value
// beyond the bounds saturates to the edge code, which keeps the index correct
// (only less selective) when later data exceed the bounds it was built for.
class Quantizer {
 public:
  // InvalidArgument unless lo < hi are finite and 1 <= bits <= 32.
  static absl::StatusOr<Quantizer> Create(double lo, double hi, int bits);

  // InvalidArgument for NaN or ±Inf (a poisoned key must not get a code).
  absl::StatusOr<uint32_t> Quantize(double x) const;
  // REQUIRES: x finite. The unchecked form for the hot path, whose inputs
  // come from finite keys (checked on append).
  uint32_t QuantizeFinite(double x) const;

  double lo() const { return lo_; }
  double hi() const { return hi_; }

 private:
  Quantizer(double lo, double hi, int bits);

  double lo_ = 0, hi_ = 1;
  double cells_per_unit_ = 1;
  uint32_t max_code_ = 1;
};

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_ZETA_MORTON_H_
