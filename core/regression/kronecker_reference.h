// File: core/regression/kronecker_reference.h
//
// The attention-regression objective computed the way the paper writes it
// (§D.1): with the explicit Kronecker matrix 𝖠 = A1 ⊗ A2 (n·m × d1·d2,
// row-major vec), scores 𝖠·vec(X), gradient 2𝖠ᵀ vec(G) and Hessian
// 2 Σ_j 𝖠_jᵀ B_j 𝖠_j over the n row blocks 𝖠_j (m × d1·d2). It exists only
// as a reference: tests check the factored forms of regression.h against it
// and bench/core/regression_bench times it as the baseline. No mask.
//
// Costs: 𝖠 takes n·m·d1·d2 doubles; the Hessian O(n·m²·d1·d2 +
// n·m·(d1·d2)²) — n² d⁴ against the factored O(n² d² + n d⁴).
#ifndef KVSKETCH_CORE_REGRESSION_KRONECKER_REFERENCE_H_
#define KVSKETCH_CORE_REGRESSION_KRONECKER_REFERENCE_H_

#include "core/regression/regression.h"

namespace kvsketch::regression {

// 𝖠 = A1 ⊗ A2: row j·m + k, column a·d2 + b holds A1[j, a]·A2[k, b].
Matrix KroneckerMatrix(const Matrix& a1, const Matrix& a2);

struct KroneckerEvaluation {
  double loss = 0;  // ‖F A3 Y − B‖²_F
  Matrix f;         // n×m attention
  Matrix grad_x;    // d1×d2
  Matrix hessian;   // (d1·d2)², row-major vec; empty unless requested
};

// REQUIRES: kron = KroneckerMatrix(A1, A2) for A1 n×d1, A2 m×d2; a3 m×p;
// b n×q; x d1×d2; y p×q.
KroneckerEvaluation EvaluateWithKronecker(const Matrix& kron, int64_t n,
                                          int64_t m, const Matrix& a3,
                                          const Matrix& b, const Matrix& x,
                                          const Matrix& y, bool hessian);

}  // namespace kvsketch::regression

#endif  // KVSKETCH_CORE_REGRESSION_KRONECKER_REFERENCE_H_
