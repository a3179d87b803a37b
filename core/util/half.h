// File: core/util/half.h
//
// IEEE binary16 (F16) and bfloat16 (BF16) conversions, scalar and bulk. Float
// to half rounds to nearest-even, overflows to ±Inf and keeps NaN a NaN; half
// to float is exact. The bulk versions use F16C / AVX2 when the build target
// has them (x86-64-v3 baseline) and a scalar loop otherwise; both give the
// same bits.
#ifndef KVSKETCH_CORE_UTIL_HALF_H_
#define KVSKETCH_CORE_UTIL_HALF_H_

#include <cstddef>
#include <cstdint>

namespace kvsketch {

uint16_t FloatToHalf(float f);
float HalfToFloat(uint16_t h);
uint16_t FloatToBf16(float f);
float Bf16ToFloat(uint16_t b);

void FloatToHalfN(const float* in, uint16_t* out, size_t n);
void HalfToFloatN(const uint16_t* in, float* out, size_t n);
void FloatToBf16N(const float* in, uint16_t* out, size_t n);
void Bf16ToFloatN(const uint16_t* in, float* out, size_t n);

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_UTIL_HALF_H_
