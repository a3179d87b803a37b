// File: core/conv/fft_conv.h
//
// Causal (lower-triangular Toeplitz) convolution of one filter against many
// channels, the kernel of the `conv` kind's bulk prefill (papers
// C_D_E_conv_regression_zeta.md §C.4):
//
//   y[t][c] += Σ_{l=0..t} b[l] · x[t−l][c]      for t < m, c < channels
//
// i.e. y += conv(b)·x with conv(b) the m×m lower-triangular Toeplitz matrix
// of §C.2. x and y are m×channels row-major (channels interleaved, as the
// rows of a value matrix with the normaliser column appended).
//
// Method: zero-pad to L = FftFriendlyLength(2m − 1) (so the circular
// convolution equals the linear one on its first m outputs), one real-to-
// complex FFT of b reused for every channel, batched r2c / c2r transforms
// over up to kFftBatch channels at a time (fftw_plan_many_dft_r2c with the
// channels interleaved, stride = batch), pointwise product, keep the first m
// outputs. Short filters (m <= kDirectMaxLength) use the direct O(m²·C) sum,
// which is faster there and exact up to rounding.
//
// Precision: double (libfftw3). The FFT error is absolute, about
// unit-roundoff · log2 L · Σ|b| · max|x| on every output, so an output much
// smaller than the largest loses relative accuracy; §C.4 asks for double for
// that reason, and callers recompute the few tiny rows exactly. Float FFTW
// would halve the transform time but raise that floor from ~1e-16 to ~1e-7.
//
// Plans: cached per (L, batch) for the life of the process, created under one
// global mutex with FFTW_ESTIMATE (FFTW's planner is not thread-safe; it
// never runs concurrently with itself here). Execution uses the new-array
// API (fftw_execute_dft_r2c / _c2r) on per-call fftw_malloc'd buffers, which
// FFTW documents as thread-safe, so concurrent calls only share the lock
// around the plan lookup.
//
// Cost: O(C · L log L) flops for the FFT path, O(m² · C / 2) direct;
// scratch O(L · min(C, kFftBatch)) doubles.
#ifndef KVSKETCH_CORE_CONV_FFT_CONV_H_
#define KVSKETCH_CORE_CONV_FFT_CONV_H_

#include <cstdint>

namespace kvsketch {

// Channels transformed together by one batched plan: enough to amortise
// the plan's per-transform overhead, few enough that the scratch stays in
// cache-friendly sizes at long L.
inline constexpr int kFftBatch = 16;
// Filters up to this length use the direct sum.
inline constexpr int64_t kDirectMaxLength = 96;

enum class ConvMethod { kAuto, kDirect, kFft };

// Smallest L >= n whose only prime factors are 2, 3, 5 and 7 (the sizes
// FFTW transforms fastest). REQUIRES: n >= 1.
int64_t FftFriendlyLength(int64_t n);

// y += conv(b)·x as in the file comment. b has m entries, x and y are
// m×channels row-major. kAuto picks by m. REQUIRES: m >= 0, channels >= 1,
// y does not alias x or b.
void CausalConvAccumulate(const double* b, int64_t m, const double* x,
                          int channels, double* y,
                          ConvMethod method = ConvMethod::kAuto);

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_CONV_FFT_CONV_H_
