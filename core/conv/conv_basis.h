// File: core/conv/conv_basis.h
//
// Fitting a lower-triangular n×n matrix A by a k-conv basis (papers
// C_D_E_conv_regression_zeta.md §C.2–C.3, C.8) and applying the fit with
// FFTs (§C.4), without ever forming A: the fits read A only through a
// ColumnSource, one column segment at a time.
//
// Model (§C.2, column-step view): starts 0 = s_1 < s_2 < … < s_k and
// increments b_r (n − s_r entries). Column j of the fit, read from the
// diagonal down, is the profile c_r = b_1 + … + b_r (truncated) of the last
// start s_r <= j:  Â[j + t][j] = Σ_{l<=r} b_l[t].
//
// Two fits:
//  * Search (§C.3): windows of the first `probe` lags of a column;
//    binary search for the smallest column whose window differs from the
//    current segment's by more than tau (relative ℓ1, see below); the
//    profile of a segment is its first column, read in full. Exact on a
//    k-conv matrix whose segments differ within `probe` lags (the
//    non-degeneracy of §C.3). Cost: O(k · probe · log n) entries for the
//    search plus O(k · n) entries for the profiles.
//  * Segmented (§C.8): `segments` starts on a uniform grid; the profile of
//    segment r at lag t is the mean of A[j + t][j] over `samples` sampled
//    columns j of the segment (always including its first column, so every
//    lag has a sample). With every column sampled this is the least-squares
//    fit of the column-step model, so refining nested breakpoints never
//    increases the Frobenius error. Cost O(segments · samples · n) entries.
//
// Deviation from §C.3 [O]: `changed` compares the ℓ1 window difference to
// tau · ‖reference window‖₁ rather than to an absolute tau, so the threshold
// does not depend on the global shift a caller subtracts before exp.
//
// Thread safety: pure functions of their inputs.
#ifndef KVSKETCH_CORE_CONV_CONV_BASIS_H_
#define KVSKETCH_CORE_CONV_CONV_BASIS_H_

#include <cstdint>
#include <vector>

namespace kvsketch {

// Read access to the lower triangle of an n×n matrix, by column.
class ColumnSource {
 public:
  virtual ~ColumnSource() = default;
  virtual int64_t size() const = 0;  // n
  // out[t] = A[j + t][j] for t < len.
  // REQUIRES: 0 <= j, 1 <= len, j + len <= size().
  virtual void Column(int64_t j, int64_t len, double* out) const = 0;
};

struct ConvBasis {
  int64_t n = 0;
  std::vector<int64_t> starts;                  // s_r, increasing, s_1 = 0
  std::vector<std::vector<double>> increments;  // b_r, n − s_r entries each
  int bases() const { return static_cast<int>(starts.size()); }
};

struct SearchFitOptions {
  int max_bases = 16;  // k_max
  int probe = 32;      // T: window length in lags
  double tau = 0.05;   // relative ℓ1 change threshold
};

struct SegmentedFitOptions {
  int segments = 16;  // uniform grid of starts (capped at n)
  int samples = 32;   // sampled columns per segment (capped at its width)
  uint64_t seed = 1;  // column sampling
};

// REQUIRES: a.size() >= 1, options within the ranges above (>= 1, tau >= 0).
ConvBasis FitConvBasisSearch(const ColumnSource& a,
                             const SearchFitOptions& options);
ConvBasis FitConvBasisSegmented(const ColumnSource& a,
                                const SegmentedFitOptions& options);

// y (n×channels, row-major, overwritten) = Â·x for x n×channels: one causal
// convolution per basis over rows [s_r, n) (fft_conv.h). Cost
// O(Σ_r channels · L_r log L_r), L_r ≈ 2(n − s_r).
void ApplyConvBasis(const ConvBasis& basis, const double* x, int channels,
                    double* y);

// Â[i][j] (0 above the diagonal), O(k); for tests and spot checks.
double ConvBasisEntry(const ConvBasis& basis, int64_t i, int64_t j);

// Row i of Â: out[j] = Â[i][j] for j <= i (i + 1 entries). O(k · i), so a
// few sampled rows can be checked before paying for the FFTs.
// REQUIRES: 0 <= i < basis.n.
void ConvBasisRow(const ConvBasis& basis, int64_t i, double* out);

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_CONV_CONV_BASIS_H_
