// File: tests/core/testing/reference_attention.cc
#include "tests/core/testing/reference_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <random>

namespace kvsketch::testing {
namespace {

// Attention of one query row over keys [0, n).
void AttendRow(const float* q, const float* k, const float* v, int64_t n, int d,
               int dv, double scale, double* out) {
  std::vector<double> s(n);
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    double dot = 0;
    for (int i = 0; i < d; ++i) dot += double{q[i]} * double{k[j * d + i]};
    s[j] = scale * dot;
    mx = std::max(mx, s[j]);
  }
  double sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    s[j] = std::exp(s[j] - mx);
    sum += s[j];
  }
  std::fill(out, out + dv, 0.0);
  for (int64_t j = 0; j < n; ++j) {
    const double w = s[j] / sum;
    for (int c = 0; c < dv; ++c) out[c] += w * double{v[j * dv + c]};
  }
}

}  // namespace

std::vector<double> ReferenceAttention(absl::Span<const float> q, int64_t m,
                                       absl::Span<const float> k,
                                       absl::Span<const float> v, int64_t n,
                                       int d, int dv, double scale) {
  std::vector<double> out(static_cast<size_t>(m) * dv);
  for (int64_t r = 0; r < m; ++r) {
    AttendRow(q.data() + r * d, k.data(), v.data(), n, d, dv, scale,
              out.data() + r * dv);
  }
  return out;
}

std::vector<double> ReferenceCausalAttention(
    absl::Span<const float> q, int64_t t_new, absl::Span<const float> k,
    absl::Span<const float> v, int64_t n_total, int d, int dv, double scale) {
  std::vector<double> out(static_cast<size_t>(t_new) * dv);
  const int64_t n_prev = n_total - t_new;
  for (int64_t t = 0; t < t_new; ++t) {
    AttendRow(q.data() + t * d, k.data(), v.data(), n_prev + t + 1, d, dv,
              scale, out.data() + t * dv);
  }
  return out;
}

double MaxAbsDiff(absl::Span<const float> a, absl::Span<const double> b) {
  double mx = 0;
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const double diff = std::abs(double{a[i]} - b[i]);
    if (std::isnan(diff)) return std::numeric_limits<double>::infinity();
    mx = std::max(mx, diff);
  }
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  return mx;
}

double MaxAbs(absl::Span<const float> a) {
  double mx = 0;
  for (float x : a) mx = std::max(mx, std::abs(double{x}));
  return mx;
}

double AttentionTolerance(absl::Span<const float> q, int64_t m,
                          absl::Span<const float> k, absl::Span<const float> v,
                          int64_t n, int d, int dv, double scale,
                          double store_unit) {
  double max_c = 0;
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t j = 0; j < n; ++j) {
      double c = 0;
      for (int i = 0; i < d; ++i) {
        c += std::abs(double{q[r * d + i]} * double{k[j * d + i]});
      }
      max_c = std::max(max_c, scale * c);
    }
  }
  const double vmax =
      MaxAbs(v.subspan(0, static_cast<size_t>(n) * static_cast<size_t>(dv)));
  const double kernel_unit = std::max(16.0, d / 8.0) * kF32Unit;
  const double u = store_unit + kernel_unit;
  // exp(2·u·c) - 1 rather than 2·u·c keeps the bound valid for large c.
  const double weight_shift = std::expm1(2 * u * max_c);
  return (2 * weight_shift + u) * vmax + 1e-30;
}

std::vector<float> RandomNormal(uint64_t seed, int64_t count, double stddev) {
  std::mt19937_64 rng(seed);
  std::vector<float> out(count);
  auto uniform = [&rng]() {
    // (0, 1]: 53 random bits.
    return (static_cast<double>(rng() >> 11) + 1.0) * 0x1p-53;
  };
  for (int64_t i = 0; i < count; i += 2) {
    const double r = std::sqrt(-2.0 * std::log(uniform()));
    const double theta = 2.0 * std::numbers::pi * uniform();
    out[i] = static_cast<float>(stddev * r * std::cos(theta));
    if (i + 1 < count)
      out[i + 1] = static_cast<float>(stddev * r * std::sin(theta));
  }
  return out;
}

}  // namespace kvsketch::testing
