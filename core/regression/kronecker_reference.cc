// Explicit-Kronecker reference of the attention regression (see header).
#include "core/regression/kronecker_reference.h"

#include <algorithm>
#include <cmath>

#include "core/status_macros.h"

namespace kvsketch::regression {

Matrix KroneckerMatrix(const Matrix& a1, const Matrix& a2) {
  const int64_t n = a1.rows(), m = a2.rows(), d1 = a1.cols(), d2 = a2.cols();
  Matrix k(n * m, d1 * d2);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t a = 0; a < d1; ++a) {
      k.block(j * m, a * d2, m, d2) = a1(j, a) * a2;
    }
  }
  return k;
}

KroneckerEvaluation EvaluateWithKronecker(const Matrix& kron, int64_t n,
                                          int64_t m, const Matrix& a3,
                                          const Matrix& b, const Matrix& x,
                                          const Matrix& y, bool hessian) {
  const int64_t d1 = x.rows(), d2 = x.cols(), dim = d1 * d2;
  KVSKETCH_CHECK(kron.rows() == n * m && kron.cols() == dim);
  const Matrix xt = x.transpose();  // column-major vec of Xᵀ = row-major of X
  const Eigen::VectorXd s =
      kron * Eigen::Map<const Eigen::VectorXd>(xt.data(), dim);
  Matrix f(n, m);
  for (int64_t j = 0; j < n; ++j) {
    const Eigen::VectorXd row = s.segment(j * m, m);
    const Eigen::ArrayXd e = (row.array() - row.maxCoeff()).exp();
    f.row(j) = (e / e.sum()).matrix().transpose();
  }
  const Matrix v = a3 * y;
  const Matrix c = f * v - b;
  KroneckerEvaluation out;
  out.loss = c.squaredNorm();
  out.f = f;
  const Matrix pm = c * v.transpose();
  Matrix g(n, m);
  for (int64_t j = 0; j < n; ++j) {
    const double r = f.row(j).dot(pm.row(j));
    g.row(j) = f.row(j).cwiseProduct(pm.row(j)) - r * f.row(j);
  }
  // vec(G) in the same (j, k) order as the rows of 𝖠.
  const Matrix gt = g.transpose();
  const Eigen::VectorXd gx =
      2 * kron.transpose() *
      Eigen::Map<const Eigen::VectorXd>(gt.data(), n * m);
  out.grad_x = Eigen::Map<const Matrix>(gx.data(), d2, d1).transpose();
  if (!hessian) return out;
  out.hessian = Matrix::Zero(dim, dim);
  const Matrix vvt = v * v.transpose();  // m×m
  for (int64_t j = 0; j < n; ++j) {
    const Eigen::VectorXd fj = f.row(j).transpose();
    const Eigen::VectorXd gj = g.row(j).transpose();
    Matrix jj = -fj * fj.transpose();
    jj.diagonal() += fj;
    Matrix bj = jj * vvt * jj;
    bj.diagonal() += gj;
    bj -= gj * fj.transpose() + fj * gj.transpose();
    const auto aj = kron.middleRows(j * m, m);
    out.hessian.noalias() += aj.transpose() * (bj * aj);
  }
  out.hessian *= 2;
  return out;
}

}  // namespace kvsketch::regression
