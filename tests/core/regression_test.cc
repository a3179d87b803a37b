// File: tests/core/regression_test.cc
//
// core/regression (seed 003, papers/C_D_E §D): derivatives against central
// finite differences and the explicit Kronecker form, the Y-step, planted
// recovery up to the problem's symmetries, the CG path against the dense
// one, and clear errors for bad input.
#include "core/regression/regression.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "Eigen/Eigenvalues"
#include "core/regression/kronecker_reference.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvsketch::regression {
namespace {

using ::testing::HasSubstr;

Matrix Gaussian(int64_t rows, int64_t cols, std::mt19937_64& rng,
                double sd = 1) {
  std::normal_distribution<double> nd(0, sd);
  Matrix a(rows, cols);
  for (int64_t i = 0; i < a.size(); ++i) a.data()[i] = nd(rng);
  return a;
}

// A well-posed random problem: scores O(1), targets from a planted (X*, Y*).
struct Planted {
  RegressionData data;
  Matrix x_star, y_star;
};

Planted MakePlanted(int64_t n, int64_t m, int64_t d, int64_t p, bool causal,
                    uint64_t seed) {
  std::mt19937_64 rng(seed);
  Planted pl;
  pl.data.a1 = Gaussian(n, d, rng);
  pl.data.a2 = Gaussian(m, d, rng);
  pl.data.a3 = Gaussian(m, p, rng);
  pl.data.causal = causal;
  pl.data.row_offset = m - n;
  pl.x_star = Gaussian(d, d, rng, 0.7 / d);
  pl.y_star = Gaussian(p, p, rng, 1 / std::sqrt(double(p)));
  pl.data.b = Matrix::Zero(n, p);
  auto prob = AttentionRegression::Create(pl.data, {});
  EXPECT_TRUE(prob.ok()) << prob.status();
  pl.data.b = prob->Attention(pl.x_star) * pl.data.a3 * pl.y_star;
  return pl;
}

double RelErr(const Matrix& a, const Matrix& b) {
  return (a - b).norm() / std::max(1e-300, b.norm());
}

// Central differences of L in every entry of X (or Y).
Matrix FiniteDiffGrad(const AttentionRegression& prob, const Matrix& x,
                      const Matrix& y, bool wrt_x, double h = 1e-6) {
  Matrix g(wrt_x ? x.rows() : y.rows(), wrt_x ? x.cols() : y.cols());
  for (int64_t i = 0; i < g.rows(); ++i) {
    for (int64_t j = 0; j < g.cols(); ++j) {
      Matrix xp = x, xm = x, yp = y, ym = y;
      (wrt_x ? xp : yp)(i, j) += h;
      (wrt_x ? xm : ym)(i, j) -= h;
      g(i, j) = (prob.Loss(xp, yp) - prob.Loss(xm, ym)) / (2 * h);
    }
  }
  return g;
}

enum class MaskKind { kNone, kCausal, kCustom };

class DerivativeTest : public ::testing::TestWithParam<MaskKind> {};

TEST_P(DerivativeTest, GradientsAndHessianMatchFiniteDifferences) {
  const MaskKind kind = GetParam();
  std::mt19937_64 rng(11);
  const int64_t n = 14, m = 17, d1 = 4, d2 = 3, p = 3, q = 5;
  RegressionData data;
  data.a1 = Gaussian(n, d1, rng);
  data.a2 = Gaussian(m, d2, rng);
  data.a3 = Gaussian(m, p, rng);
  data.b = Gaussian(n, q, rng);
  if (kind == MaskKind::kCausal) {
    data.causal = true;
    data.row_offset = m - n;
  } else if (kind == MaskKind::kCustom) {
    // An eviction-like pattern: each row sees a random subset (never empty).
    std::bernoulli_distribution keep(0.6);
    data.allowed.resize(n, m);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < m; ++j) data.allowed(i, j) = keep(rng);
      data.allowed(i, i) = true;
    }
  }
  RegressionPenalty pen{.lambda_x = 0.3,
                        .lambda_y = 0.2,
                        .x_anchor = Gaussian(d1, d2, rng),
                        .y_anchor = Gaussian(p, q, rng)};
  auto prob = AttentionRegression::Create(data, pen);
  ASSERT_TRUE(prob.ok()) << prob.status();
  const Matrix x = Gaussian(d1, d2, rng, 0.5), y = Gaussian(p, q, rng);

  const Matrix gx = prob->GradientX(x, y);
  EXPECT_LT(RelErr(gx, FiniteDiffGrad(*prob, x, y, true)), 1e-5);
  const Matrix gy = prob->GradientY(x, y);
  EXPECT_LT(RelErr(gy, FiniteDiffGrad(*prob, x, y, false)), 1e-5);

  // Hessian-vector product against central differences of the gradient.
  const Matrix dir = Gaussian(d1, d2, rng);
  const double h = 1e-5;
  const Matrix hv_fd =
      (prob->GradientX(x + h * dir, y) - prob->GradientX(x - h * dir, y)) /
      (2 * h);
  const Matrix hv = prob->HessianVectorX(x, y, dir);
  EXPECT_LT(RelErr(hv, hv_fd), 1e-5);

  // The dense Hessian: symmetric, and H·vec(dir) is the HVP (row-major vec).
  const Matrix hess = prob->HessianX(x, y);
  ASSERT_EQ(hess.rows(), d1 * d2);
  EXPECT_LT((hess - hess.transpose()).norm(), 1e-12 * hess.norm());
  const Matrix dir_t = dir.transpose();
  const Eigen::VectorXd hd =
      hess * Eigen::Map<const Eigen::VectorXd>(dir_t.data(), d1 * d2);
  const Matrix hd_mat = Eigen::Map<const Matrix>(hd.data(), d2, d1).transpose();
  EXPECT_LT(RelErr(hd_mat, hv), 1e-12);

  // Variable projection: ∇φ(X) = ∇_X L(X, Y*(X)); its derivative along dir
  // is the Schur-complement product, and the dense form agrees.
  auto grad_phi = [&](const Matrix& xx) {
    auto yy = prob->SolveY(xx);
    EXPECT_TRUE(yy.ok()) << yy.status();
    return prob->GradientX(xx, *yy);
  };
  auto y_star = prob->SolveY(x);
  ASSERT_TRUE(y_star.ok());
  const Matrix rhv_fd =
      (grad_phi(x + h * dir) - grad_phi(x - h * dir)) / (2 * h);
  auto rhv = prob->ReducedHessianVectorX(x, *y_star, dir);
  ASSERT_TRUE(rhv.ok()) << rhv.status();
  EXPECT_LT(RelErr(*rhv, rhv_fd), 1e-5);
  std::printf(
      "FD relative errors: grad X %.1e, grad Y %.1e, HVP %.1e, "
      "reduced HVP %.1e\n",
      RelErr(gx, FiniteDiffGrad(*prob, x, y, true)),
      RelErr(gy, FiniteDiffGrad(*prob, x, y, false)), RelErr(hv, hv_fd),
      RelErr(*rhv, rhv_fd));
  auto rhess = prob->ReducedHessianX(x, *y_star);
  ASSERT_TRUE(rhess.ok()) << rhess.status();
  EXPECT_LT((*rhess - rhess->transpose()).norm(), 1e-12 * rhess->norm());
  const Eigen::VectorXd rhd =
      *rhess * Eigen::Map<const Eigen::VectorXd>(dir_t.data(), d1 * d2);
  EXPECT_LT(
      RelErr(Eigen::Map<const Matrix>(rhd.data(), d2, d1).transpose(), *rhv),
      1e-12);
}

INSTANTIATE_TEST_SUITE_P(
    Masks, DerivativeTest,
    ::testing::Values(MaskKind::kNone, MaskKind::kCausal, MaskKind::kCustom),
    [](const ::testing::TestParamInfo<MaskKind>& param_info) {
      switch (param_info.param) {
        case MaskKind::kNone:
          return "NoMask";
        case MaskKind::kCausal:
          return "Causal";
        case MaskKind::kCustom:
          return "EvictionMask";
      }
      return "Unknown";
    });

TEST(RegressionTest, FactoredFormsEqualTheExplicitKroneckerOnes) {
  std::mt19937_64 rng(5);
  const int64_t n = 9, m = 11, d1 = 3, d2 = 4, p = 2, q = 3;
  RegressionData data{.a1 = Gaussian(n, d1, rng),
                      .a2 = Gaussian(m, d2, rng),
                      .a3 = Gaussian(m, p, rng),
                      .b = Gaussian(n, q, rng)};
  const Matrix x = Gaussian(d1, d2, rng, 0.5), y = Gaussian(p, q, rng);
  const Matrix kron = KroneckerMatrix(data.a1, data.a2);
  // §D.1 identity: (A1 ⊗ A2)·vec(X) = vec(A1 X Aᵀ2), row-major vec.
  const Matrix xt = x.transpose();
  const Eigen::VectorXd s =
      kron * Eigen::Map<const Eigen::VectorXd>(xt.data(), d1 * d2);
  const Matrix s_direct = data.a1 * x * data.a2.transpose();
  const Matrix s_direct_t = s_direct.transpose();
  EXPECT_LT(
      (s - Eigen::Map<const Eigen::VectorXd>(s_direct_t.data(), n * m)).norm(),
      1e-13 * s.norm());

  auto prob = AttentionRegression::Create(data, {});
  ASSERT_TRUE(prob.ok()) << prob.status();
  const KroneckerEvaluation ref =
      EvaluateWithKronecker(kron, n, m, data.a3, data.b, x, y, true);
  EXPECT_NEAR(prob->Loss(x, y), ref.loss, 1e-12 * ref.loss);
  EXPECT_LT(RelErr(prob->GradientX(x, y), ref.grad_x), 1e-12);
  EXPECT_LT(RelErr(prob->HessianX(x, y), ref.hessian), 1e-12);
}

TEST(RegressionTest, SolveYZeroesTheYGradient) {
  std::mt19937_64 rng(3);
  RegressionData data{.a1 = Gaussian(20, 4, rng),
                      .a2 = Gaussian(20, 4, rng),
                      .a3 = Gaussian(20, 3, rng),
                      .b = Gaussian(20, 3, rng),
                      .causal = true};
  for (double lambda_y : {0.0, 0.5}) {
    auto prob = AttentionRegression::Create(
        data, {.lambda_y = lambda_y, .y_anchor = Matrix::Identity(3, 3)});
    ASSERT_TRUE(prob.ok()) << prob.status();
    const Matrix x = Gaussian(4, 4, rng, 0.3);
    auto y = prob->SolveY(x);
    ASSERT_TRUE(y.ok()) << y.status();
    // ‖∇_Y‖ relative to the size of its two halves 2 A3ᵀFᵀ(FA3Y) and 2A3ᵀFᵀB.
    const Matrix f = prob->Attention(x);
    const double scale =
        2 * (data.a3.transpose() * f.transpose() * data.b).norm();
    EXPECT_LT(prob->GradientY(x, *y).norm(), 1e-10 * scale) << lambda_y;
    // A perturbed Y is worse: it is the minimiser, not just a stationary point.
    EXPECT_GT(prob->Loss(x, *y + 1e-3 * Matrix::Ones(3, 3)), prob->Loss(x, *y));
  }
}

// Non-increasing up to rounding: at a zero-residual optimum the loss sits at
// ~1e-30 of its start, where the Y-step's rounding (relative 1e-16 of the
// terms it cancels) can lift it by a few ulps of the starting loss.
void ExpectMonotone(const RegressionResult& r) {
  const double slack = 1e-14 * r.history.front().loss;
  for (size_t i = 1; i < r.history.size(); ++i) {
    EXPECT_LE(r.history[i].loss, r.history[i - 1].loss + slack)
        << "iteration " << i;
  }
}

void PrintHistory(const char* name, const RegressionResult& r, double scale) {
  std::printf("%s: %s after %zu iterations\n", name, r.stop_reason.c_str(),
              r.history.size() - 1);
  for (const IterationRecord& rec : r.history) {
    std::printf("  it %2d  loss/|B|^2 %.3e  log10 %.2f  |grad| %.2e  t %.3g\n",
                rec.iteration, rec.loss / scale,
                std::log10(std::max(1e-300, rec.loss / scale)), rec.grad_norm,
                rec.step);
  }
}

class PlantedTest : public ::testing::TestWithParam<bool> {};

TEST_P(PlantedTest, RecoversXAndYMonotonically) {
  const bool causal = GetParam();
  Planted pl = MakePlanted(48, 48, 4, 4, causal, causal ? 7 : 8);
  std::mt19937_64 rng(99);
  RegressionOptions opt;
  opt.x_init = pl.x_star + Gaussian(4, 4, rng, 0.1);
  opt.max_iterations = 60;
  opt.rel_tol = 0;
  opt.grad_tol = 0;
  auto r = SolveAttentionRegression(pl.data, {}, opt);
  ASSERT_TRUE(r.ok()) << r.status();
  const double bb = pl.data.b.squaredNorm();
  PrintHistory(
      causal ? "planted causal, Newton on phi" : "planted, Newton on phi", *r,
      bb);
  ExpectMonotone(*r);
  EXPECT_LE(r->loss, 1e-8 * bb);
  // Generic A2 (1 ∉ range(A2), full column ranks): X itself is identifiable.
  EXPECT_LT(RelErr(r->x, pl.x_star), 1e-4);
  EXPECT_LT(RelErr(r->y, pl.y_star), 1e-4);

  // The plain alternation (∇²_XX L at fixed Y, §D.4) from the same start:
  // also monotone, but linear, at a rate set by the X–Y coupling.
  opt.reduced_hessian = false;
  opt.max_iterations = 2000;
  auto alt = SolveAttentionRegression(pl.data, {}, opt);
  ASSERT_TRUE(alt.ok()) << alt.status();
  ExpectMonotone(*alt);
  int reach = -1;
  for (const IterationRecord& rec : alt->history) {
    if (rec.loss <= 1e-8 * bb) {
      reach = rec.iteration;
      break;
    }
  }
  int reach_phi = -1;
  for (const IterationRecord& rec : r->history) {
    if (rec.loss <= 1e-8 * bb) {
      reach_phi = rec.iteration;
      break;
    }
  }
  std::printf(
      "iterations to loss <= 1e-8 |B|^2: Newton on phi %d, "
      "alternation %d\n",
      reach_phi, reach);
  EXPECT_GT(reach, 0);
  EXPECT_LT(reach_phi, reach);
}

INSTANTIATE_TEST_SUITE_P(Causal, PlantedTest, ::testing::Bool());

TEST(RegressionTest, RecoversUpToTheRowShiftSymmetry) {
  // Column 0 of A2 all ones, so A2·e0 = 1: X + v·e0ᵀ adds the row constant
  // A1·v to S, which softmax ignores. Only column 0 of X is unidentifiable.
  Planted pl = MakePlanted(48, 48, 4, 4, false, 21);
  pl.data.a2.col(0).setOnes();
  auto base = AttentionRegression::Create(pl.data, {});
  ASSERT_TRUE(base.ok()) << base.status();
  pl.data.b = base->Attention(pl.x_star) * pl.data.a3 * pl.y_star;
  auto prob = AttentionRegression::Create(pl.data, {});
  ASSERT_TRUE(prob.ok());
  // The symmetry is exact: shifting column 0 leaves F unchanged.
  Matrix shifted = pl.x_star;
  shifted.col(0) += Eigen::Vector4d(0.4, -0.3, 0.2, 0.5);
  EXPECT_LT((prob->Attention(shifted) - prob->Attention(pl.x_star))
                .cwiseAbs()
                .maxCoeff(),
            1e-14);

  std::mt19937_64 rng(4);
  RegressionOptions opt;
  opt.x_init = pl.x_star + Gaussian(4, 4, rng, 0.1);
  opt.max_iterations = 60;
  opt.rel_tol = 0;
  opt.grad_tol = 0;
  auto r = Solve(*prob, opt);
  PrintHistory("planted, 1 in range(A2)", *r, pl.data.b.squaredNorm());
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectMonotone(*r);
  const double bb = pl.data.b.squaredNorm();
  EXPECT_LE(r->loss, 1e-8 * bb);
  EXPECT_LT((prob->Attention(r->x) - prob->Attention(pl.x_star))
                .cwiseAbs()
                .maxCoeff(),
            1e-5);
  const Matrix diff = r->x - pl.x_star;
  EXPECT_LT(diff.rightCols(3).norm(), 1e-3 * pl.x_star.norm());
  EXPECT_LT(RelErr(r->y, pl.y_star), 1e-3);
}

TEST(RegressionTest, ConjugateGradientPathMatchesDense) {
  Planted pl = MakePlanted(40, 40, 4, 3, true, 31);
  std::mt19937_64 rng(6);
  RegressionOptions opt;
  opt.x_init = pl.x_star + Gaussian(4, 4, rng, 0.02);
  opt.max_iterations = 1;
  // Near the planted optimum the reduced Hessian is positive definite, so
  // neither path damps and both take the same Newton step.
  auto prob = AttentionRegression::Create(pl.data, {});
  ASSERT_TRUE(prob.ok());
  auto y0 = prob->SolveY(opt.x_init);
  ASSERT_TRUE(y0.ok());
  auto h0 = prob->ReducedHessianX(opt.x_init, *y0);
  ASSERT_TRUE(h0.ok());
  ASSERT_GT(Eigen::SelfAdjointEigenSolver<Matrix>(*h0).eigenvalues().minCoeff(),
            0);
  auto dense = SolveAttentionRegression(pl.data, {}, opt);
  opt.dense_max_unknowns = 0;
  opt.cg_rel_tol = 1e-13;
  auto cg = SolveAttentionRegression(pl.data, {}, opt);
  ASSERT_TRUE(dense.ok() && cg.ok());
  EXPECT_LT(RelErr(cg->x, dense->x), 1e-6);
  EXPECT_GT(cg->history.back().cg_iterations, 0);
  // And the CG path converges on its own.
  opt.max_iterations = 60;
  opt.rel_tol = 0;
  opt.grad_tol = 0;
  auto full = SolveAttentionRegression(pl.data, {}, opt);
  ASSERT_TRUE(full.ok()) << full.status();
  ExpectMonotone(*full);
  EXPECT_LE(full->loss, 1e-8 * pl.data.b.squaredNorm());
}

TEST(RegressionTest, FarStartStaysMonotoneAndProgressIsReported) {
  // From X = 0 (uniform attention) the X-Hessian may be indefinite (§D.3):
  // damping and the line search must still never increase the loss.
  Planted pl = MakePlanted(40, 40, 3, 3, false, 41);
  std::mt19937_64 noise_rng(2);
  pl.data.b += Gaussian(40, 3, noise_rng, 0.05);
  std::vector<IterationRecord> seen;
  RegressionOptions opt;
  opt.max_iterations = 100;
  opt.progress = [&](const IterationRecord& r) { seen.push_back(r); };
  auto r = SolveAttentionRegression(pl.data, {.lambda_x = 1e-3}, opt);
  ASSERT_TRUE(r.ok()) << r.status();
  PrintHistory("far start, noisy targets", *r, pl.data.b.squaredNorm());
  ExpectMonotone(*r);
  ASSERT_EQ(seen.size(), r->history.size());
  EXPECT_EQ(seen.front().iteration, 0);
  // It reaches a stationary point of the regularised objective.
  EXPECT_TRUE(r->converged) << r->stop_reason;
  EXPECT_LT(r->history.back().grad_norm, 1e-6 * r->history.front().grad_norm);
  for (const IterationRecord& rec : seen) {
    EXPECT_TRUE(std::isfinite(rec.loss));
  }
}

TEST(RegressionTest, BadInputsGiveClearErrors) {
  std::mt19937_64 rng(1);
  const RegressionData good{.a1 = Gaussian(10, 3, rng),
                            .a2 = Gaussian(12, 3, rng),
                            .a3 = Gaussian(12, 2, rng),
                            .b = Gaussian(10, 2, rng)};
  ASSERT_TRUE(AttentionRegression::Create(good, {}).ok());

  RegressionData bad = good;
  bad.a3 = Gaussian(11, 2, rng);
  auto st = AttentionRegression::Create(bad, {}).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("A3 has 11 rows but A2 has 12"));

  bad = good;
  bad.b = Gaussian(9, 2, rng);
  st = AttentionRegression::Create(bad, {}).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("B has 9 rows but A1 has 10"));

  bad = good;
  bad.a1(4, 1) = std::nan("");
  st = AttentionRegression::Create(bad, {}).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("A1 has a non-finite entry"));
  EXPECT_THAT(st.message(), HasSubstr("[4, 1]"));

  // Singular without regularisation: A1's third column repeats the first.
  bad = good;
  bad.a1.col(2) = bad.a1.col(0);
  st = AttentionRegression::Create(bad, {}).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("A1 has rank 2 < 3"));
  auto ridge = SolveAttentionRegression(bad, {.lambda_x = 1e-2}, {});
  EXPECT_TRUE(ridge.ok()) << ridge.status();

  bad = good;
  bad.a3.col(1) = 2 * bad.a3.col(0);
  st = AttentionRegression::Create(bad, {}).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("Y is not identifiable"));

  bad = good;
  bad.allowed = BoolArray::Constant(10, 12, true);
  bad.allowed.row(3).setConstant(false);
  st = AttentionRegression::Create(bad, {}).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("row 3 sees no key"));

  st = AttentionRegression::Create(good, {.lambda_x = -1}).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);

  RegressionOptions opt;
  opt.x_init = Matrix::Zero(2, 3);
  st = SolveAttentionRegression(good, {}, opt).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("initial X is 2x3, expected 3x3"));
}

}  // namespace
}  // namespace kvsketch::regression
