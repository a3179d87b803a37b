// Attention regression: objective, derivatives (§D.2) and the alternating
// damped-Newton / least-squares solver (§D.3–D.4). See regression.h.
#include "core/regression/regression.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <utility>

#include "Eigen/Cholesky"
#include "Eigen/QR"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace kvsketch::regression {
namespace {

using RowMatrix =
    Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Rank below which a column space counts as deficient: relative to the
// largest pivot, well above double rounding of an n×d QR.
constexpr double kRankThreshold = 1e-10;

absl::Status CheckFinite(const Matrix& a, const char* name) {
  if (!a.allFinite()) {
    for (int64_t i = 0; i < a.rows(); ++i) {
      for (int64_t j = 0; j < a.cols(); ++j) {
        if (!std::isfinite(a(i, j))) {
          return absl::InvalidArgumentError(
              absl::StrCat(name, " has a non-finite entry (", a(i, j), ") at [",
                           i, ", ", j, "]"));
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CheckShape(const Matrix& a, int64_t rows, int64_t cols,
                        const char* name) {
  if (a.rows() != rows || a.cols() != cols) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " is ", a.rows(), "x", a.cols(), ", expected ", rows, "x", cols));
  }
  return CheckFinite(a, name);
}

int64_t ColumnRank(const Matrix& a) {
  Eigen::ColPivHouseholderQR<Matrix> qr(a);
  qr.setThreshold(kRankThreshold);
  return qr.rank();
}

// Row-wise Jz(Z) = F∘Z − rowsum(F∘Z)∘F: the softmax Jacobian of each row
// applied to the matching row of Z (§D.2). O(n·m).
Matrix SoftmaxJacobianRows(const Matrix& f, const Matrix& z) {
  Matrix fz = f.cwiseProduct(z);
  const Eigen::VectorXd r = fz.rowwise().sum();
  fz.noalias() -= r.asDiagonal() * f;
  return fz;
}

}  // namespace

struct AttentionRegression::Forward {
  Matrix f;  // n×m softmax, zero where masked
  Matrix v;  // m×q, A3 Y
  Matrix c;  // n×q, F V − B
  Matrix g;  // n×m, F∘P − rowsum(F∘P)∘F with P = C Vᵀ (if requested)
};

absl::StatusOr<AttentionRegression> AttentionRegression::Create(
    RegressionData data, RegressionPenalty penalty) {
  const int64_t n = data.a1.rows(), m = data.a2.rows();
  if (n < 1 || m < 1 || data.a1.cols() < 1 || data.a2.cols() < 1 ||
      data.a3.cols() < 1 || data.b.cols() < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "empty input: A1 ", n, "x", data.a1.cols(), ", A2 ", m, "x",
        data.a2.cols(), ", A3 ", data.a3.rows(), "x", data.a3.cols(), ", B ",
        data.b.rows(), "x", data.b.cols()));
  }
  if (data.a3.rows() != m) {
    return absl::InvalidArgumentError(
        absl::StrCat("A3 has ", data.a3.rows(), " rows but A2 has ", m,
                     " (one value row per key row)"));
  }
  if (data.b.rows() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("B has ", data.b.rows(), " rows but A1 has ", n,
                     " (one target row per query row)"));
  }
  KVSKETCH_RETURN_IF_ERROR(CheckFinite(data.a1, "A1"));
  KVSKETCH_RETURN_IF_ERROR(CheckFinite(data.a2, "A2"));
  KVSKETCH_RETURN_IF_ERROR(CheckFinite(data.a3, "A3"));
  KVSKETCH_RETURN_IF_ERROR(CheckFinite(data.b, "B"));
  if (data.row_offset < 0) {
    return absl::InvalidArgumentError("row_offset must be >= 0");
  }
  if (data.allowed.size() != 0 &&
      (data.allowed.rows() != n || data.allowed.cols() != m)) {
    return absl::InvalidArgumentError(
        absl::StrCat("mask is ", data.allowed.rows(), "x", data.allowed.cols(),
                     ", expected ", n, "x", m));
  }
  for (double l : {penalty.lambda_x, penalty.lambda_y}) {
    if (!(l >= 0) || !std::isfinite(l)) {
      return absl::InvalidArgumentError(
          absl::StrCat("regularisation weight ", l, " is not finite and >= 0"));
    }
  }
  const int64_t d1 = data.a1.cols(), d2 = data.a2.cols();
  const int64_t p = data.a3.cols(), q = data.b.cols();
  if (penalty.x_anchor.size() != 0) {
    KVSKETCH_RETURN_IF_ERROR(CheckShape(penalty.x_anchor, d1, d2, "X anchor"));
  }
  if (penalty.y_anchor.size() != 0) {
    KVSKETCH_RETURN_IF_ERROR(CheckShape(penalty.y_anchor, p, q, "Y anchor"));
  }
  AttentionRegression r(std::move(data), std::move(penalty));
  for (int64_t i = 0; i < n; ++i) {
    bool any = false;
    for (int64_t j = 0; j < m && !any; ++j) any = r.Visible(i, j);
    if (!any) {
      return absl::InvalidArgumentError(
          absl::StrCat("row ", i, " sees no key under the mask"));
    }
  }
  // Without ridge, a null vector u of A1 (or A2) gives X + u·wᵀ (X + w·uᵀ)
  // the same scores: the Newton system is singular, not just ill-posed.
  if (r.pen_.lambda_x == 0) {
    if (const int64_t rank = ColumnRank(r.d_.a1); rank < d1) {
      return absl::FailedPreconditionError(
          absl::StrCat("singular problem: A1 has rank ", rank, " < ", d1,
                       " columns, so X is not identifiable; use lambda_x > 0"));
    }
    if (const int64_t rank = ColumnRank(r.d_.a2); rank < d2) {
      return absl::FailedPreconditionError(
          absl::StrCat("singular problem: A2 has rank ", rank, " < ", d2,
                       " columns, so X is not identifiable; use lambda_x > 0"));
    }
  }
  if (r.pen_.lambda_y == 0) {
    if (const int64_t rank = ColumnRank(r.d_.a3); rank < p) {
      return absl::FailedPreconditionError(
          absl::StrCat("singular problem: A3 has rank ", rank, " < ", p,
                       " columns, so Y is not identifiable; use lambda_y > 0"));
    }
  }
  return r;
}

bool AttentionRegression::Visible(int64_t i, int64_t j) const {
  if (d_.causal && j > d_.row_offset + i) return false;
  return d_.allowed.size() == 0 || d_.allowed(i, j);
}

void AttentionRegression::CheckXY(const Matrix& x, const Matrix& y) const {
  KVSKETCH_CHECK(x.rows() == d1() && x.cols() == d2());
  KVSKETCH_CHECK(y.rows() == p() && y.cols() == q());
}

Matrix AttentionRegression::Attention(const Matrix& x) const {
  KVSKETCH_CHECK(x.rows() == d1() && x.cols() == d2());
  const Matrix a1x = d_.a1 * x;  // n×d2
  Matrix f = a1x * d_.a2.transpose();
  const bool masked = d_.causal || d_.allowed.size() != 0;
  for (int64_t i = 0; i < n(); ++i) {
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < m(); ++j) {
      if (!masked || Visible(i, j)) mx = std::max(mx, f(i, j));
    }
    double sum = 0;
    for (int64_t j = 0; j < m(); ++j) {
      const double e = (!masked || Visible(i, j)) ? std::exp(f(i, j) - mx) : 0;
      f(i, j) = e;
      sum += e;
    }
    f.row(i) /= sum;  // sum ≥ 1: the maximum contributes e⁰
  }
  return f;
}

AttentionRegression::Forward AttentionRegression::Evaluate(const Matrix& x,
                                                           const Matrix& y,
                                                           bool need_g) const {
  CheckXY(x, y);
  Forward fw;
  fw.f = Attention(x);
  fw.v = d_.a3 * y;
  fw.c = fw.f * fw.v - d_.b;
  if (need_g) {
    const Matrix pm = fw.c * fw.v.transpose();  // n×m, O(n·m·q)
    fw.g = SoftmaxJacobianRows(fw.f, pm);
  }
  return fw;
}

double AttentionRegression::ResidualLoss(const Matrix& x,
                                         const Matrix& y) const {
  return Evaluate(x, y, false).c.squaredNorm();
}

double AttentionRegression::Loss(const Matrix& x, const Matrix& y) const {
  double l = ResidualLoss(x, y);
  if (pen_.lambda_x > 0) {
    l += pen_.lambda_x * (pen_.x_anchor.size()
                              ? (x - pen_.x_anchor).squaredNorm()
                              : x.squaredNorm());
  }
  if (pen_.lambda_y > 0) {
    l += pen_.lambda_y * (pen_.y_anchor.size()
                              ? (y - pen_.y_anchor).squaredNorm()
                              : y.squaredNorm());
  }
  return l;
}

Matrix AttentionRegression::GradientX(const Matrix& x, const Matrix& y) const {
  const Forward fw = Evaluate(x, y, true);
  Matrix grad = 2.0 * (d_.a1.transpose() * (fw.g * d_.a2));
  if (pen_.lambda_x > 0) {
    grad += 2 * pen_.lambda_x *
            (pen_.x_anchor.size() ? Matrix(x - pen_.x_anchor) : x);
  }
  return grad;
}

Matrix AttentionRegression::GradientY(const Matrix& x, const Matrix& y) const {
  const Forward fw = Evaluate(x, y, false);
  Matrix grad = 2.0 * (d_.a3.transpose() * (fw.f.transpose() * fw.c));
  if (pen_.lambda_y > 0) {
    grad += 2 * pen_.lambda_y *
            (pen_.y_anchor.size() ? Matrix(y - pen_.y_anchor) : y);
  }
  return grad;
}

Matrix AttentionRegression::HessianVectorX(const Matrix& x, const Matrix& y,
                                           const Matrix& dir) const {
  KVSKETCH_CHECK(dir.rows() == d1() && dir.cols() == d2());
  const Forward fw = Evaluate(x, y, true);
  // §D.2: ΔS = A1 Δ A2ᵀ; T1 = Jz(Jz(ΔS) V Vᵀ) is the Gauss–Newton part,
  // T2 the softmax curvature, which collapses onto G.
  const Matrix ds = (d_.a1 * dir) * d_.a2.transpose();
  const Matrix jds = SoftmaxJacobianRows(fw.f, ds);
  Matrix t = SoftmaxJacobianRows(fw.f, (jds * fw.v) * fw.v.transpose());
  const Eigen::VectorXd fds = fw.f.cwiseProduct(ds).rowwise().sum();
  const Eigen::VectorXd gds = fw.g.cwiseProduct(ds).rowwise().sum();
  t += fw.g.cwiseProduct(ds);
  t.noalias() -= fds.asDiagonal() * fw.g;
  t.noalias() -= gds.asDiagonal() * fw.f;
  Matrix h = 2.0 * (d_.a1.transpose() * (t * d_.a2));
  if (pen_.lambda_x > 0) h += 2 * pen_.lambda_x * dir;
  return h;
}

Matrix AttentionRegression::HessianX(const Matrix& x, const Matrix& y) const {
  const Forward fw = Evaluate(x, y, true);
  const int64_t nd1 = d1(), nd2 = d2(), nq = q();
  // H = 2 Σ_j (a_j a_jᵀ) ⊗ W_j with W_j = A2ᵀ B_j A2 (§D.2), built as
  // GEMMs over rows instead of n separate m×d products:
  //   A2ᵀ J_j V = Σ_k f_jk b_k v_kᵀ − (A2ᵀ f_j)(Vᵀ f_j)ᵀ  →  F · M3,
  //   A2ᵀ diag(g_j) A2 = Σ_k g_jk b_k b_kᵀ                →  G · M2,
  // with rows of M3 = vec(b_k v_kᵀ), M2 = vec(b_k b_kᵀ); then
  //   H[(p,q),(r,s)] = 2 Σ_j A1[j,p] A1[j,r] W_j[q,s] = 2 (M1ᵀ W)[(p,r),(q,s)].
  RowMatrix m3(m(), nd2 * nq), m2(m(), nd2 * nd2);
  for (int64_t k = 0; k < m(); ++k) {
    for (int64_t a = 0; a < nd2; ++a) {
      const double bka = d_.a2(k, a);
      for (int64_t c = 0; c < nq; ++c) m3(k, a * nq + c) = bka * fw.v(k, c);
      for (int64_t c = 0; c < nd2; ++c) m2(k, a * nd2 + c) = bka * d_.a2(k, c);
    }
  }
  const Matrix fa = fw.f * d_.a2;  // n×d2
  const Matrix ga = fw.g * d_.a2;
  const Matrix fv = fw.f * fw.v;  // n×q
  RowMatrix hp = RowMatrix::Zero(nd1 * nd1, nd2 * nd2);
  // Row blocks bound the n×(d2·q) temporaries (128 MiB at n = 4096, d = 64).
  constexpr int64_t kBlock = 256;
  for (int64_t j0 = 0; j0 < n(); j0 += kBlock) {
    const int64_t nb = std::min(kBlock, n() - j0);
    RowMatrix u = fw.f.middleRows(j0, nb) * m3;
    RowMatrix w = fw.g.middleRows(j0, nb) * m2;
    RowMatrix m1(nb, nd1 * nd1);
    for (int64_t jj = 0; jj < nb; ++jj) {
      const int64_t j = j0 + jj;
      Eigen::Map<RowMatrix> uj(u.row(jj).data(), nd2, nq);
      uj.noalias() -= fa.row(j).transpose() * fv.row(j);
      Eigen::Map<RowMatrix> wj(w.row(jj).data(), nd2, nd2);
      wj.noalias() += uj * uj.transpose();
      wj.noalias() -= ga.row(j).transpose() * fa.row(j);
      wj.noalias() -= fa.row(j).transpose() * ga.row(j);
      for (int64_t a = 0; a < nd1; ++a) {
        for (int64_t c = 0; c < nd1; ++c) {
          m1(jj, a * nd1 + c) = d_.a1(j, a) * d_.a1(j, c);
        }
      }
    }
    hp.noalias() += m1.transpose() * w;
  }
  const int64_t dim = nd1 * nd2;
  Matrix h(dim, dim);
  for (int64_t a = 0; a < nd1; ++a) {
    for (int64_t b = 0; b < nd2; ++b) {
      for (int64_t c = 0; c < nd1; ++c) {
        for (int64_t e = 0; e < nd2; ++e) {
          h(a * nd2 + b, c * nd2 + e) = 2 * hp(a * nd1 + c, b * nd2 + e);
        }
      }
    }
  }
  if (pen_.lambda_x > 0) h.diagonal().array() += 2 * pen_.lambda_x;
  return h;
}

absl::StatusOr<Matrix> AttentionRegression::SolveY(const Matrix& x) const {
  const Matrix fa3 = Attention(x) * d_.a3;  // n×p, O(n·m·p)
  if (pen_.lambda_y == 0) {
    // QR, not normal equations: keeps the conditioning of F A3, not squared.
    Eigen::ColPivHouseholderQR<Matrix> qr(fa3);
    qr.setThreshold(kRankThreshold);
    if (qr.rank() < p()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "singular problem: F·A3 has rank ", qr.rank(), " < ", p(),
          " columns, so the Y least squares has no unique solution; use "
          "lambda_y > 0"));
    }
    return Matrix(qr.solve(d_.b));
  }
  Matrix normal = fa3.transpose() * fa3;
  normal.diagonal().array() += pen_.lambda_y;
  Matrix rhs = fa3.transpose() * d_.b;
  if (pen_.y_anchor.size() != 0) rhs += pen_.lambda_y * pen_.y_anchor;
  Eigen::LLT<Matrix> llt(normal);
  if (llt.info() != Eigen::Success) {
    return absl::InternalError("Y normal equations not positive definite");
  }
  return Matrix(llt.solve(rhs));
}

namespace {

// Cholesky of N = (F A3)ᵀ(F A3) + λy I, the p×p block of H_yy = 2 N ⊗ I_q.
absl::StatusOr<Eigen::LLT<Matrix>> FactorYBlock(const Matrix& fa3,
                                                double lambda_y) {
  Matrix nmat = fa3.transpose() * fa3;
  nmat.diagonal().array() += lambda_y;
  Eigen::LLT<Matrix> llt(nmat);
  if (llt.info() != Eigen::Success || !(llt.rcond() > 1e-14)) {
    return absl::FailedPreconditionError(
        "singular problem: (F·A3)ᵀ(F·A3) is singular, so Y is not a function "
        "of X; use lambda_y > 0");
  }
  return llt;
}

}  // namespace

absl::StatusOr<Matrix> AttentionRegression::ReducedHessianVectorX(
    const Matrix& x, const Matrix& y, const Matrix& dir) const {
  KVSKETCH_CHECK(dir.rows() == d1() && dir.cols() == d2());
  const Forward fw = Evaluate(x, y, false);
  const Matrix fa3 = fw.f * d_.a3;
  KVSKETCH_ASSIGN_OR_RETURN(Eigen::LLT<Matrix> llt,
                            FactorYBlock(fa3, pen_.lambda_y));
  const Matrix ds = (d_.a1 * dir) * d_.a2.transpose();
  const Matrix dm = SoftmaxJacobianRows(fw.f, ds);  // dF
  const Matrix hyx =
      2.0 * (d_.a3.transpose() *
             (dm.transpose() * fw.c + fw.f.transpose() * (dm * fw.v)));
  const Matrix e = llt.solve(hyx) / 2;  // H_yy⁻¹ H_yx Δ
  const Matrix z =
      (fa3 * e) * fw.v.transpose() + fw.c * (d_.a3 * e).transpose();  // n×m
  const Matrix hxy =
      2.0 * (d_.a1.transpose() * (SoftmaxJacobianRows(fw.f, z) * d_.a2));
  return Matrix(HessianVectorX(x, y, dir) - hxy);
}

absl::StatusOr<Matrix> AttentionRegression::ReducedHessianX(
    const Matrix& x, const Matrix& y) const {
  CheckXY(x, y);
  const Forward fw = Evaluate(x, y, false);
  const Matrix fa3 = fw.f * d_.a3;
  KVSKETCH_ASSIGN_OR_RETURN(Eigen::LLT<Matrix> llt,
                            FactorYBlock(fa3, pen_.lambda_y));
  Matrix h = HessianX(x, y);
  const int64_t nd1 = d1(), nd2 = d2(), np = p(), nq = q();
  // H_xy[(a,b),(c,e)] = 2 Σ_j A1[j,a] (FA3[j,c]·U_j[b,e] + C[j,e]·R_j[b,c])
  // with R_j = A2ᵀ J_j A3 = Σ_k f_jk b_k a3_kᵀ − (A2ᵀf_j)(A3ᵀf_j)ᵀ (a GEMM
  // F·M4 over rows vec(b_k a3_kᵀ)) and U_j = A2ᵀ J_j V = R_j Y.
  RowMatrix m4(m(), nd2 * np);
  for (int64_t k = 0; k < m(); ++k) {
    for (int64_t b = 0; b < nd2; ++b) {
      for (int64_t c = 0; c < np; ++c)
        m4(k, b * np + c) = d_.a2(k, b) * d_.a3(k, c);
    }
  }
  const Matrix fa = fw.f * d_.a2;
  const int64_t width = nd2 * np * nq;
  RowMatrix hxy = RowMatrix::Zero(nd1, width);  // = (d1·d2)×(p·q) row-major
  // Blocks keep the nb × d2·p·q temporary near 32 MiB.
  const int64_t block = std::clamp<int64_t>((int64_t{1} << 22) / width, 1, 256);
  for (int64_t j0 = 0; j0 < n(); j0 += block) {
    const int64_t nb = std::min(block, n() - j0);
    RowMatrix r = fw.f.middleRows(j0, nb) * m4;
    RowMatrix t(nb, width);
    for (int64_t jj = 0; jj < nb; ++jj) {
      const int64_t j = j0 + jj;
      Eigen::Map<RowMatrix> rj(r.row(jj).data(), nd2, np);
      rj.noalias() -= fa.row(j).transpose() * fa3.row(j);
      const Matrix uj = rj * y;
      for (int64_t b = 0; b < nd2; ++b) {
        for (int64_t c = 0; c < np; ++c) {
          for (int64_t e = 0; e < nq; ++e) {
            t(jj, (b * np + c) * nq + e) =
                fa3(j, c) * uj(b, e) + fw.c(j, e) * rj(b, c);
          }
        }
      }
    }
    hxy.noalias() += d_.a1.middleRows(j0, nb).transpose() * t;
  }
  hxy *= 2;
  // K H_yy⁻¹ Kᵀ [r, r'] = ½ tr(Z_rᵀ N⁻¹ Z_r') = ½ ⟨L⁻¹Z_r, L⁻¹Z_r'⟩ with Z_r
  // row r of K = H_xy as a p×q matrix and N = L Lᵀ.
  const int64_t dim = nd1 * nd2;
  RowMatrix w(dim, np * nq);
  for (int64_t r = 0; r < dim; ++r) {
    Eigen::Map<const RowMatrix> zr(hxy.data() + r * np * nq, np, nq);
    Eigen::Map<RowMatrix> wr(w.row(r).data(), np, nq);
    wr = llt.matrixL().solve(Matrix(zr));
  }
  h.noalias() -= 0.5 * (w * w.transpose());
  return h;
}

namespace {

// Conjugate gradients on (H + μI) δ = rhs with H given by products `hv`.
// Returns false on a direction of non-positive curvature (then *curvature
// is pᵀ(H + μI)p / pᵀp, for the caller to raise μ).
absl::StatusOr<bool> ConjugateGradient(
    const std::function<absl::StatusOr<Matrix>(const Matrix&)>& hv, double mu,
    const Matrix& rhs, const RegressionOptions& opt, Matrix* delta,
    int* iterations, double* curvature) {
  delta->setZero(rhs.rows(), rhs.cols());
  Matrix r = rhs, dir = rhs;
  double rr = r.squaredNorm();
  const double stop = opt.cg_rel_tol * opt.cg_rel_tol * rr;
  *iterations = 0;
  for (int k = 0; k < opt.cg_max_iterations && rr > stop; ++k) {
    KVSKETCH_ASSIGN_OR_RETURN(Matrix hd, hv(dir));
    hd += mu * dir;
    const double dd = dir.squaredNorm();
    const double dhd = (dir.array() * hd.array()).sum();
    ++*iterations;
    if (!(dhd > 1e-14 * dd * (1 + mu))) {
      *curvature = dhd / dd;
      return false;
    }
    const double alpha = rr / dhd;
    *delta += alpha * dir;
    r -= alpha * hd;
    const double rr_new = r.squaredNorm();
    dir = r + (rr_new / rr) * dir;
    rr = rr_new;
  }
  return true;
}

}  // namespace

absl::StatusOr<RegressionResult> Solve(const AttentionRegression& prob,
                                       const RegressionOptions& opt) {
  if (opt.max_iterations < 0 || !(opt.rel_tol >= 0) || !(opt.grad_tol >= 0) ||
      opt.cg_max_iterations < 1 || !(opt.cg_rel_tol > 0)) {
    return absl::InvalidArgumentError(
        "max_iterations, rel_tol and grad_tol must be >= 0, "
        "cg_max_iterations >= 1, cg_rel_tol > 0");
  }
  RegressionResult res;
  const RegressionPenalty& pen = prob.penalty();
  if (opt.x_init.size() != 0) {
    KVSKETCH_RETURN_IF_ERROR(
        CheckShape(opt.x_init, prob.d1(), prob.d2(), "initial X"));
    res.x = opt.x_init;
  } else if (pen.x_anchor.size() != 0) {
    res.x = pen.x_anchor;
  } else {
    res.x = Matrix::Identity(prob.d1(), prob.d2()) /
            std::sqrt(double(std::max(prob.d1(), prob.d2())));
  }
  // Whether Y is argmin_Y L(X, ·), which the reduced Hessian assumes.
  bool y_optimal = false;
  if (opt.y_init.size() != 0) {
    KVSKETCH_RETURN_IF_ERROR(
        CheckShape(opt.y_init, prob.p(), prob.q(), "initial Y"));
    res.y = opt.y_init;
  } else {
    KVSKETCH_ASSIGN_OR_RETURN(res.y, prob.SolveY(res.x));
    y_optimal = true;
  }
  const int64_t dim = prob.d1() * prob.d2();
  const bool dense = dim <= opt.dense_max_unknowns;
  const bool reduced = opt.reduced_hessian;
  double loss = prob.Loss(res.x, res.y);
  Matrix grad = prob.GradientX(res.x, res.y);
  double mu = 0;
  auto record = [&](IterationRecord rec) {
    res.history.push_back(rec);
    if (opt.progress) opt.progress(rec);
  };
  record({.iteration = 0, .loss = loss, .grad_norm = grad.norm()});
  res.stop_reason = "iteration cap";
  for (int it = 1; it <= opt.max_iterations; ++it) {
    const double loss_before = loss;
    if (reduced && !y_optimal) {
      // A given Y₀: move to Y*(X₀) first (a decrease), then Newton on φ.
      KVSKETCH_ASSIGN_OR_RETURN(res.y, prob.SolveY(res.x));
      loss = prob.Loss(res.x, res.y);
      grad = prob.GradientX(res.x, res.y);
      y_optimal = true;
    }
    if (grad.norm() <= opt.grad_tol) {
      res.converged = true;
      res.stop_reason = "gradient norm";
      break;
    }
    // Damped Newton direction: grow μ until H + μI is positive definite
    // (§D.3: H_x is indefinite away from the optimum).
    Matrix delta;
    int cg_iterations = 0;
    bool solved = false;
    if (dense) {
      Matrix h;
      if (reduced) {
        KVSKETCH_ASSIGN_OR_RETURN(h, prob.ReducedHessianX(res.x, res.y));
      } else {
        h = prob.HessianX(res.x, res.y);
      }
      const double scale = std::max(1e-300, h.diagonal().cwiseAbs().maxCoeff());
      // Row-major vec of X is the column-major vec of Xᵀ.
      const Matrix gt = grad.transpose();
      const Eigen::Map<const Eigen::VectorXd> g(gt.data(), dim);
      for (int attempt = 0; attempt < 60 && !solved; ++attempt) {
        // A floor of 1e-13·max|H_ii| bounds steps along exact symmetries
        // (X + v·uᵀ with A2·u = 1), where H is singular but g has no
        // component; it is far below any curvature that matters.
        Matrix hm = h;
        hm.diagonal().array() += std::max(mu, 1e-13 * scale);
        Eigen::LLT<Matrix> llt(hm);
        if (llt.info() != Eigen::Success) {
          // Jump to a relevant scale at once: each retry is a (d1·d2)³/3
          // factorisation.
          mu = std::max(10 * mu, 1e-8 * scale);
          continue;
        }
        const Eigen::VectorXd step = -llt.solve(g);
        delta = Eigen::Map<const Matrix>(step.data(), prob.d2(), prob.d1())
                    .transpose();
        solved = true;
      }
    } else {
      const Matrix& x = res.x;
      const Matrix& y = res.y;
      auto hv = [&](const Matrix& dir) -> absl::StatusOr<Matrix> {
        if (reduced) return prob.ReducedHessianVectorX(x, y, dir);
        return prob.HessianVectorX(x, y, dir);
      };
      for (int attempt = 0; attempt < 60 && !solved; ++attempt) {
        double curvature = 0;
        KVSKETCH_ASSIGN_OR_RETURN(
            solved, ConjugateGradient(hv, mu, -grad, opt, &delta,
                                      &cg_iterations, &curvature));
        if (!solved) mu = std::max(10 * mu, 2 * std::abs(curvature) + 1e-12);
      }
    }
    if (!solved) {
      return absl::InternalError(
          "could not make the damped Newton system positive definite");
    }
    // Armijo backtracking: on φ(X) = L(X, Y*(X)) (reduced) or L(·, Y).
    const double slope = (grad.array() * delta.array()).sum();
    if (!(slope < 0)) {
      res.converged = true;
      res.stop_reason = "no descent direction (at precision limit)";
      break;
    }
    double t = 1;
    bool accepted = false;
    Matrix x_new, y_new;
    double trial = 0;
    for (int k = 0; k < 50; ++k, t *= 0.5) {
      x_new = res.x + t * delta;
      if (reduced) {
        absl::StatusOr<Matrix> y_try = prob.SolveY(x_new);
        if (!y_try.ok()) continue;  // a singular trial point: shorter step
        y_new = *std::move(y_try);
      } else {
        y_new = res.y;
      }
      trial = prob.Loss(x_new, y_new);
      if (trial <= loss + 1e-4 * t * slope) {
        accepted = true;
        break;
      }
    }
    if (!accepted) {
      res.converged = true;
      res.stop_reason = "line search made no progress (at precision limit)";
      break;
    }
    res.x = std::move(x_new);
    if (reduced) {
      res.y = std::move(y_new);
    } else {
      KVSKETCH_ASSIGN_OR_RETURN(res.y, prob.SolveY(res.x));
    }
    const double new_loss = prob.Loss(res.x, res.y);
    grad = prob.GradientX(res.x, res.y);
    const double rel =
        loss_before > 0 ? (loss_before - new_loss) / loss_before : 0;
    record({.iteration = it,
            .loss = new_loss,
            .rel_change = rel,
            .grad_norm = grad.norm(),
            .step = t,
            .damping = mu,
            .cg_iterations = cg_iterations});
    loss = new_loss;
    // Full steps mean the local quadratic model is good: relax the damping.
    mu = t == 1 ? mu * 0.1 : mu * 2;
    if (mu < 1e-14) mu = 0;
    if (loss == 0 || rel <= opt.rel_tol) {
      res.converged = true;
      res.stop_reason = "relative loss change";
      break;
    }
  }
  if (!res.converged && grad.norm() <= opt.grad_tol) {
    res.converged = true;
    res.stop_reason = "gradient norm";
  }
  res.loss = loss;
  res.residual_loss = prob.ResidualLoss(res.x, res.y);
  return res;
}

absl::StatusOr<RegressionResult> SolveAttentionRegression(
    RegressionData data, RegressionPenalty penalty,
    const RegressionOptions& options) {
  KVSKETCH_ASSIGN_OR_RETURN(
      AttentionRegression prob,
      AttentionRegression::Create(std::move(data), std::move(penalty)));
  return Solve(prob, options);
}

}  // namespace kvsketch::regression
