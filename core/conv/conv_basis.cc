// File: core/conv/conv_basis.cc
#include "core/conv/conv_basis.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "core/conv/fft_conv.h"

namespace kvsketch {
namespace {

// b_r = c_r − c_{r−1}[0 : len(c_r)] (§C.3: lag t of column s_r receives
// b_l[t] from every earlier basis l, so the increment is the profile
// change). prev is empty for the first basis.
std::vector<double> Increment(const std::vector<double>& profile,
                              const std::vector<double>& prev) {
  std::vector<double> b(profile);
  if (!prev.empty()) {
    for (size_t t = 0; t < b.size(); ++t) b[t] -= prev[t];
  }
  return b;
}

}  // namespace

ConvBasis FitConvBasisSearch(const ColumnSource& a,
                             const SearchFitOptions& options) {
  const int64_t n = a.size();
  const int64_t probe = std::min<int64_t>(options.probe, n);
  ConvBasis basis;
  basis.n = n;
  basis.starts.push_back(0);  // column 0 always starts a basis (the mask)

  std::vector<double> ref(probe), window(probe);
  int64_t s = 0;
  a.Column(0, std::min(probe, n), ref.data());
  // Window of column c against the current segment's reference, both cut to
  // their common length (the window of c may run off the bottom row).
  auto changed = [&](int64_t c) {
    const int64_t len = std::min(probe, n - c);
    a.Column(c, len, window.data());
    double diff = 0, norm = 0;
    for (int64_t t = 0; t < len; ++t) {
      diff += std::abs(window[t] - ref[t]);
      norm += std::abs(ref[t]);
    }
    return !(diff <= options.tau * norm);  // NaN counts as changed
  };
  while (basis.bases() < options.max_bases && s < n - 1) {
    if (!changed(n - 1)) break;  // nothing new up to the last column
    int64_t lo = s + 1, hi = n - 1;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (changed(mid)) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    basis.starts.push_back(lo);
    s = lo;
    a.Column(s, std::min(probe, n - s), ref.data());
  }

  // Profiles: each segment's first column in full, O(n) entries per basis.
  std::vector<double> prev;
  for (int64_t start : basis.starts) {
    std::vector<double> col(n - start);
    a.Column(start, n - start, col.data());
    basis.increments.push_back(Increment(col, prev));
    prev = std::move(col);
  }
  return basis;
}

ConvBasis FitConvBasisSegmented(const ColumnSource& a,
                                const SegmentedFitOptions& options) {
  const int64_t n = a.size();
  const int64_t k = std::min<int64_t>(options.segments, n);
  ConvBasis basis;
  basis.n = n;
  for (int64_t r = 0; r < k; ++r) basis.starts.push_back(r * n / k);

  std::mt19937_64 rng(options.seed);
  std::vector<double> prev;
  for (int64_t r = 0; r < k; ++r) {
    const int64_t lo = basis.starts[r];
    const int64_t hi = r + 1 < k ? basis.starts[r + 1] : n;
    // The first column always, so every lag up to n − 1 − lo has a sample.
    std::vector<int64_t> cols = {lo};
    const int64_t want = std::min<int64_t>(options.samples, hi - lo) - 1;
    if (want > 0) {
      std::vector<int64_t> rest(hi - lo - 1);
      std::iota(rest.begin(), rest.end(), lo + 1);
      std::sample(rest.begin(), rest.end(), std::back_inserter(cols), want,
                  rng);
    }
    // Column j covers lags 0..n−1−j, so lag t has a sample from every
    // sampled column j <= n−1−t: the mean over those.
    std::vector<double> sum(n - lo, 0.0), col(n - lo);
    std::vector<int64_t> count(n - lo, 0);
    for (int64_t j : cols) {
      a.Column(j, n - j, col.data());
      for (int64_t t = 0; t < n - j; ++t) {
        sum[t] += col[t];
        ++count[t];
      }
    }
    for (int64_t t = 0; t < n - lo; ++t) sum[t] /= count[t];
    basis.increments.push_back(Increment(sum, prev));
    prev = std::move(sum);
  }
  return basis;
}

void ApplyConvBasis(const ConvBasis& basis, const double* x, int channels,
                    double* y) {
  std::fill(y, y + basis.n * channels, 0.0);
  for (int r = 0; r < basis.bases(); ++r) {
    const int64_t s = basis.starts[r];
    CausalConvAccumulate(basis.increments[r].data(), basis.n - s,
                         x + s * channels, channels, y + s * channels);
  }
}

double ConvBasisEntry(const ConvBasis& basis, int64_t i, int64_t j) {
  if (i < j) return 0;
  double v = 0;
  for (int r = 0; r < basis.bases() && basis.starts[r] <= j; ++r) {
    v += basis.increments[r][i - j];
  }
  return v;
}

void ConvBasisRow(const ConvBasis& basis, int64_t i, double* out) {
  std::fill(out, out + i + 1, 0.0);
  // Basis r adds b_r[i − j] to every column j >= s_r.
  for (int r = 0; r < basis.bases() && basis.starts[r] <= i; ++r) {
    const double* b = basis.increments[r].data();
    for (int64_t j = basis.starts[r]; j <= i; ++j) out[j] += b[i - j];
  }
}

}  // namespace kvsketch
