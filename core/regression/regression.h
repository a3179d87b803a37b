// File: core/regression/regression.h
//
// Attention regression (seed 003; papers/C_D_E_conv_regression_zeta.md §D):
//
//   L(X, Y) = ‖F A3 Y − B‖²_F + λx‖X − X₀‖²_F + λy‖Y − Y₀‖²_F,
//   F = softmax_rows(mask(A1 X A2ᵀ)),
//
// with A1 n×d1 (queries), A2 m×d2 (keys), A3 m×p (values), B n×q (targets),
// X d1×d2 (the bilinear score form, W_Q·W_Kᵀ) and Y p×q (the value map).
// §D.1: with row-major vec, the paper's Kronecker form (A1 ⊗ A2)·vec(X) is
// vec(A1 X A2ᵀ), so nothing here forms the n·m × d1·d2 matrix; every
// quantity reduces to n×m and d×d products (§D.2).
//
// The solver (§D.4, "our version"): alternate a damped Newton step on X
// (dense Hessian when d1·d2 ≤ dense_max_unknowns, else conjugate gradients on
// Hessian-vector products) with Armijo backtracking, and the exact ridge
// least-squares solve for Y. Levenberg–Marquardt damping μ keeps the Newton
// system positive definite where the X-problem is non-convex (§D.3). The
// loss never increases: the line search only accepts decreases and the
// Y-step is an exact minimiser. By default the X-step uses the Hessian of
// φ(X) = min_Y L(X, Y) (the Schur complement of the joint Hessian, i.e.
// variable projection), which removes the X–Y coupling that makes the plain
// alternation linear: on a planted n = 48, d = 4 problem, 11 iterations to
// a 1e-8 relative loss instead of 516 (tests/core/regression_test.cc).
//
// Costs per iteration (n query rows, m keys, d = max(d1, d2), p, q ≤ d):
//   forward + gradient   O(n·m·d)                  time, O(n·m) memory
//   one Hessian-vector   O(n·m·d + n·d²)
//   dense Hessian        O(n·m·d2·(q + d2) + n·d1²·d2²) assembly (two GEMMs
//                        F·M3, G·M2 over rows vec(b_k v_kᵀ), vec(b_k b_kᵀ))
//                        + (d1·d2)³/3 Cholesky; (d1·d2)² doubles (128 MiB
//                        at d = 64). The explicit Kronecker form costs
//                        O(n·m²·d² + n·m·d⁴) for the same matrix.
//   reduced (Schur)      + O(n·m·d2·p + n·d⁴ + d⁶)
//   Y-step               O(n·m·p + n·p²)
// Convergence is local and linear or better (§D.4); there is no global
// guarantee, so start near a sensible point (X₀ = identity for a correction,
// zero for uniform attention).
//
// Masks: `causal` lets row i see key columns j ≤ row_offset + i (row i is
// the query at position row_offset + i); `allowed` (n×m, optional) is an
// arbitrary visibility pattern, e.g. the keys an eviction policy still held
// when that query was answered. Both combine (a key must pass both). Masked
// scores are −∞ (F and G are zero there; §D.2 "causal mask").
//
// Symmetries (§D.7 identifiability): F is unchanged by S → S + c·1ᵀ; if
// A2·u = 1 for some u, X → X + v·uᵀ (any v) leaves F and the loss unchanged.
// Directions in the null space of A1 or A2 are invisible too; those make the
// problem singular, which Create rejects unless λx > 0.
#ifndef KVSKETCH_CORE_REGRESSION_REGRESSION_H_
#define KVSKETCH_CORE_REGRESSION_REGRESSION_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "Eigen/Core"
#include "absl/status/statusor.h"

namespace kvsketch::regression {

using Matrix = Eigen::MatrixXd;
using BoolArray = Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic>;

struct RegressionData {
  Matrix a1{};  // n×d1
  Matrix a2{};  // m×d2
  Matrix a3{};  // m×p
  Matrix b{};   // n×q
  bool causal = false;
  int64_t row_offset = 0;  // causal: row i sees columns j ≤ row_offset + i
  BoolArray allowed{};     // empty, or n×m (true = visible)
};

struct RegressionPenalty {
  double lambda_x = 0;  // ridge on X − x_anchor
  double lambda_y = 0;  // ridge on Y − y_anchor
  Matrix x_anchor{};    // empty = zero
  Matrix y_anchor{};    // empty = zero
};

// The objective and its derivatives for fixed data. Create validates once
// (shapes, finite values, every row with a visible key, identifiability);
// the methods REQUIRE x d1×d2, y p×q, dir d1×d2 (checked: they abort on a
// mismatch, a programmer error — user input goes through Create).
class AttentionRegression {
 public:
  // InvalidArgument for mismatched shapes, non-finite entries, a negative λ
  // or a row whose mask hides every key; FailedPrecondition when λx = 0 and
  // A1 or A2 lacks full column rank (X not identifiable: singular Newton
  // system).
  static absl::StatusOr<AttentionRegression> Create(RegressionData data,
                                                    RegressionPenalty penalty);

  int64_t n() const { return d_.a1.rows(); }
  int64_t m() const { return d_.a2.rows(); }
  int64_t d1() const { return d_.a1.cols(); }
  int64_t d2() const { return d_.a2.cols(); }
  int64_t p() const { return d_.a3.cols(); }
  int64_t q() const { return d_.b.cols(); }
  const RegressionData& data() const { return d_; }
  const RegressionPenalty& penalty() const { return pen_; }

  // F = softmax_rows(mask(A1 X A2ᵀ)), n×m. O(n·m·d).
  Matrix Attention(const Matrix& x) const;
  // ‖F A3 Y − B‖²_F (no penalty).
  double ResidualLoss(const Matrix& x, const Matrix& y) const;
  // The full objective L (residual + penalties).
  double Loss(const Matrix& x, const Matrix& y) const;
  // ∇_X L = 2 A1ᵀ G A2 + 2λx(X − X₀) (§D.2 times 2), d1×d2.
  Matrix GradientX(const Matrix& x, const Matrix& y) const;
  // ∇_Y L = 2 A3ᵀ Fᵀ C + 2λy(Y − Y₀), p×q.
  Matrix GradientY(const Matrix& x, const Matrix& y) const;
  // ∇²_X L applied to `dir` without forming the Hessian, O(n·m·d).
  Matrix HessianVectorX(const Matrix& x, const Matrix& y,
                        const Matrix& dir) const;
  // ∇²_X L, (d1·d2)×(d1·d2), row-major vec (index p·d2 + q is X[p, q]).
  Matrix HessianX(const Matrix& x, const Matrix& y) const;
  // argmin_Y L(X, Y): (Mᵀ M + λy I) Y = Mᵀ B + λy Y₀ with M = F A3.
  // FailedPrecondition if λy = 0 and M lacks full column rank.
  absl::StatusOr<Matrix> SolveY(const Matrix& x) const;

  // Variable projection: φ(X) = min_Y L(X, Y) has gradient ∇_X L(X, Y*(X))
  // and Hessian the Schur complement H_xx − H_xy H_yy⁻¹ H_yx of the joint
  // Hessian. These return that Schur complement at (x, y), which is ∇²φ(x)
  // when y = SolveY(x). Cross term (derived like §D.2):
  //   H_yx Δ = 2 A3ᵀ(Dᵀ C + Fᵀ D V),  D = Jz(A1 Δ A2ᵀ),
  //   H_xy E = 2 A1ᵀ Jz(F A3 E Vᵀ + C Eᵀ A3ᵀ) A2,   H_yy E = 2(MᵀM + λy)E.
  // The product costs two Hessian-vector products; the dense form adds
  // O(n·d⁴ + d⁶) to HessianX. FailedPrecondition if H_yy is singular.
  absl::StatusOr<Matrix> ReducedHessianVectorX(const Matrix& x, const Matrix& y,
                                               const Matrix& dir) const;
  absl::StatusOr<Matrix> ReducedHessianX(const Matrix& x,
                                         const Matrix& y) const;

 private:
  AttentionRegression(RegressionData data, RegressionPenalty penalty)
      : d_(std::move(data)), pen_(std::move(penalty)) {}
  struct Forward;
  Forward Evaluate(const Matrix& x, const Matrix& y, bool need_g) const;
  bool Visible(int64_t i, int64_t j) const;
  void CheckXY(const Matrix& x, const Matrix& y) const;

  RegressionData d_;
  RegressionPenalty pen_;
};

struct IterationRecord {
  int iteration = 0;      // 0 = the starting point
  double loss = 0;        // full objective after this iteration
  double rel_change = 0;  // (L_prev − L) / L_prev
  double grad_norm = 0;   // ‖∇_X L‖_F before the step
  double step = 0;        // accepted line-search step t ∈ (0, 1]
  double damping = 0;     // μ used by the Newton system
  int cg_iterations = 0;  // 0 on the dense path
};

struct RegressionOptions {
  // Empty: x_anchor if given, else the (rectangular) identity / √max(d1, d2),
  // ordinary scaled dot-product attention (§D.7). X = 0 is a poor start:
  // uniform F makes F·A3 rank one.
  Matrix x_init;
  Matrix y_init;  // empty = the exact Y-step at x_init
  int max_iterations = 100;
  double rel_tol = 1e-12;   // stop when rel_change ≤ rel_tol (after a step)
  double grad_tol = 1e-10;  // stop when ‖∇_X L‖_F ≤ grad_tol
  // Newton on φ(X) = min_Y L (the Schur-complement Hessian, line search on
  // φ with the exact Y-step at every trial point): superlinear near the
  // optimum. false: the plain alternation with ∇²_XX L at fixed Y (§D.4),
  // linear at a rate set by the X–Y coupling.
  bool reduced_hessian = true;
  // Dense Hessian + Cholesky up to this many unknowns (64² = d 64), CG above.
  int64_t dense_max_unknowns = 64 * 64;
  int cg_max_iterations = 250;
  double cg_rel_tol = 1e-10;
  // Called after every iteration (and once for iteration 0).
  std::function<void(const IterationRecord&)> progress;
};

struct RegressionResult {
  Matrix x, y;
  double loss = 0;
  double residual_loss = 0;
  std::vector<IterationRecord> history;  // history[0] is the start
  bool converged = false;
  std::string stop_reason;
};

// Validates (as AttentionRegression::Create; InvalidArgument for x_init /
// y_init of the wrong shape or not finite, or bad options) and runs the
// alternating solver. Errors as Create and SolveY.
absl::StatusOr<RegressionResult> SolveAttentionRegression(
    RegressionData data, RegressionPenalty penalty,
    const RegressionOptions& options);

// The solver on an already-built objective.
absl::StatusOr<RegressionResult> Solve(const AttentionRegression& problem,
                                       const RegressionOptions& options);

}  // namespace kvsketch::regression

#endif  // KVSKETCH_CORE_REGRESSION_REGRESSION_H_
