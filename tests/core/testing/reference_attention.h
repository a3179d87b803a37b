// File: tests/core/testing/reference_attention.h
//
// The double-precision oracle every approximator is tested against, plus
// random test data. Plain code, no gtest dependency, so server and client
// tests can link it too (target kvsketch_test_reference).
//
//   auto ref = ReferenceAttention(q, m, k, v, n, d, dv, scale);  // m×dv
//   double tol = AttentionTolerance(q, m, k, n, d, scale, kF32Unit, kF32Unit);
//
// Cost: O(m·n·(d + dv)) double flops; meant for n up to ~1e5.
#ifndef KVSKETCH_TESTS_CORE_TESTING_REFERENCE_ATTENTION_H_
#define KVSKETCH_TESTS_CORE_TESTING_REFERENCE_ATTENTION_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace kvsketch::testing {

// Unit roundoff (half an ulp of 1) of the storage formats.
inline constexpr double kF32Unit = 0x1p-24;
inline constexpr double kF16Unit = 0x1p-11;
inline constexpr double kBf16Unit = 0x1p-8;

// out (m×dv) = softmax(scale · q · kᵀ) · v over all n keys, in double with
// the max-subtracted softmax. q is m×d, k n×d, v n×dv, all row-major.
std::vector<double> ReferenceAttention(absl::Span<const float> q, int64_t m,
                                       absl::Span<const float> k,
                                       absl::Span<const float> v, int64_t n,
                                       int d, int dv, double scale);

// Causal attention: q is T×d, k/v hold n_prev + T tokens; query row t sees
// keys 0 .. n_prev + t. Returns T×dv.
std::vector<double> ReferenceCausalAttention(
    absl::Span<const float> q, int64_t t_new, absl::Span<const float> k,
    absl::Span<const float> v, int64_t n_total, int d, int dv, double scale);

// Largest |a_i - b_i|.
double MaxAbsDiff(absl::Span<const float> a, absl::Span<const double> b);
double MaxAbs(absl::Span<const float> a);

// An error bound for softmax attention computed in float from keys/values
// stored with unit roundoff `store_unit`: a relative perturbation u of each
// key moves score j by at most u·c_j with c_j = scale·Σ_i |q_i k_ji|, which
// moves the softmax weights by a factor within exp(±2·u·max c) and the
// output (a convex combination of value rows) by about 2·u·(max c)·max|v|;
// the value rounding adds u·max|v|. The kernel's own float arithmetic is
// charged the same way with u = max(16, d/8)·kF32Unit per element (dot products
// of length d with FMA, a ~3e-7 exp, 64-term block sums). Returns the absolute
// tolerance for max |out - ref| over all m rows.
double AttentionTolerance(absl::Span<const float> q, int64_t m,
                          absl::Span<const float> k, absl::Span<const float> v,
                          int64_t n, int d, int dv, double scale,
                          double store_unit);

// Deterministic N(0, stddev²) floats (Box–Muller over mt19937_64, so the
// data is identical across standard libraries).
std::vector<float> RandomNormal(uint64_t seed, int64_t count,
                                double stddev = 1.0);

}  // namespace kvsketch::testing

#endif  // KVSKETCH_TESTS_CORE_TESTING_REFERENCE_ATTENTION_H_
