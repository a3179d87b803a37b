// Attention regression (issue #5): time of one solver iteration (loss,
// gradient, dense Hessian, Cholesky Newton step, one line-search loss, exact
// Y-step) against n at d = 16, 32, 64, in the factored form of
// core/regression (never forming A1 ⊗ A2), and the same iteration with the
// explicit Kronecker matrix 𝖠 (n² × d²) at small n, in the same run.
//
//   build/<dir>/bench/core/bench_regression --benchmark_min_time=0.2
//
// Factored cost O(n²·d + n·d⁴ + d⁶); Kronecker O(n³·d² + n²·d⁴ + d⁶). Both
// iterate from the same point (tests/core/regression_test checks that the
// two forms give the same loss, gradient and Hessian).
#include <algorithm>
#include <cmath>
#include <random>

#include "Eigen/Cholesky"
#include "Eigen/QR"
#include "benchmark/benchmark.h"
#include "core/regression/kronecker_reference.h"
#include "core/regression/regression.h"

namespace kvsketch::regression {
namespace {

Matrix Gaussian(int64_t r, int64_t c, std::mt19937_64& rng, double sd) {
  std::normal_distribution<double> nd(0, sd);
  Matrix a(r, c);
  for (int64_t i = 0; i < a.size(); ++i) a.data()[i] = nd(rng);
  return a;
}

// Ridge on both factors: keeps n < d² problems (d = 64, n = 16) well posed.
constexpr double kLambda = 1e-3;

struct Problem {
  RegressionData data;
  Matrix x0, y0;
};

// A planted problem near its optimum (B = F(X*) A3 Y* plus 1% noise, start
// X* + noise): the regime of §D.4's local convergence, where the Hessian is
// positive definite and both forms take one Cholesky per iteration.
Problem MakeProblem(int64_t n, int64_t d) {
  std::mt19937_64 rng(n * 131 + d);
  Problem p;
  p.data.a1 = Gaussian(n, d, rng, 1);
  p.data.a2 = Gaussian(n, d, rng, 1);
  p.data.a3 = Gaussian(n, d, rng, 1);
  const Matrix x_star = Gaussian(d, d, rng, 0.5 / d);
  const Matrix y_star = Gaussian(d, d, rng, 1 / std::sqrt(double(d)));
  p.data.b = Matrix::Zero(n, d);
  auto prob = AttentionRegression::Create(
      p.data, {.lambda_x = kLambda, .lambda_y = kLambda});
  p.data.b = prob->Attention(x_star) * p.data.a3 * y_star;
  p.data.b += Gaussian(n, d, rng, 0.01 * p.data.b.norm() / std::sqrt(n * d));
  p.x0 = x_star + Gaussian(d, d, rng, 0.05 / d);
  p.y0 = y_star;
  return p;
}

// One iteration of core/regression's Solve: `reduced` false is the plain
// alternation (∇²_XX L, the same work as BM_Kronecker); true is the default
// Newton step on φ(X) = min_Y L (adds the Schur complement, O(n·d⁴ + d⁶)).
void RunFactored(benchmark::State& state, bool reduced) {
  const int64_t d = state.range(0), n = state.range(1);
  Problem p = MakeProblem(n, d);
  auto prob = AttentionRegression::Create(
      p.data, {.lambda_x = kLambda, .lambda_y = kLambda});
  if (!prob.ok()) {
    state.SkipWithError(std::string(prob.status().message()).c_str());
    return;
  }
  RegressionOptions opt;
  opt.x_init = p.x0;
  opt.y_init = p.y0;
  opt.max_iterations = 1;
  opt.rel_tol = 0;
  opt.grad_tol = 0;
  opt.reduced_hessian = reduced;
  for (auto _ : state) {
    auto r = Solve(*prob, opt);
    if (!r.ok()) {
      state.SkipWithError(std::string(r.status().message()).c_str());
      return;
    }
    benchmark::DoNotOptimize(r->loss);
  }
}

void BM_Factored(benchmark::State& state) { RunFactored(state, false); }
void BM_FactoredReduced(benchmark::State& state) { RunFactored(state, true); }

// The same iteration with 𝖠 = A1 ⊗ A2 materialised (built once, outside the
// timed loop: it is fixed across iterations).
void BM_Kronecker(benchmark::State& state) {
  const int64_t d = state.range(0), n = state.range(1);
  Problem p = MakeProblem(n, d);
  const Matrix kron = KroneckerMatrix(p.data.a1, p.data.a2);
  const int64_t dim = d * d;
  for (auto _ : state) {
    KroneckerEvaluation ev = EvaluateWithKronecker(kron, n, n, p.data.a3,
                                                   p.data.b, p.x0, p.y0, true);
    ev.grad_x += 2 * kLambda * p.x0;
    ev.hessian.diagonal().array() += 2 * kLambda;
    const Matrix gt = ev.grad_x.transpose();
    // The solver's damping loop (regression.cc): floor 1e-13·max|H_ii|,
    // then μ = max(10μ, 1e-8·max|H_ii|) until the Cholesky succeeds.
    const double scale = ev.hessian.diagonal().cwiseAbs().maxCoeff();
    Matrix x = p.x0;
    double mu = 0;
    for (int attempt = 0; attempt < 60;
         ++attempt, mu = std::max(10 * mu, 1e-8 * scale)) {
      Matrix hm = ev.hessian;
      hm.diagonal().array() += std::max(mu, 1e-13 * scale);
      Eigen::LLT<Matrix> llt(hm);
      if (llt.info() != Eigen::Success) continue;
      const Eigen::VectorXd step =
          -llt.solve(Eigen::Map<const Eigen::VectorXd>(gt.data(), dim));
      x += Eigen::Map<const Matrix>(step.data(), d, d).transpose();
      break;
    }
    const KroneckerEvaluation at_x =
        EvaluateWithKronecker(kron, n, n, p.data.a3, p.data.b, x, p.y0, false);
    const Matrix fa3 = at_x.f * p.data.a3;
    Matrix normal = fa3.transpose() * fa3;
    normal.diagonal().array() += kLambda;
    const Matrix y = normal.llt().solve(fa3.transpose() * p.data.b);
    benchmark::DoNotOptimize((fa3 * y - p.data.b).squaredNorm());
  }
}

void FactoredArgs(benchmark::internal::Benchmark* b) {
  for (int64_t n : {32, 64, 128, 256, 1024, 4096}) b->Args({16, n});
  for (int64_t n : {32, 64, 256, 1024, 2048}) b->Args({32, n});
  for (int64_t n : {16, 32, 64, 256, 1024, 2048}) b->Args({64, n});
}

void KroneckerArgs(benchmark::internal::Benchmark* b) {
  for (int64_t n : {32, 64, 128}) b->Args({16, n});
  for (int64_t n : {32, 64}) b->Args({32, n});
  for (int64_t n : {16, 32, 64}) b->Args({64, n});
}

BENCHMARK(BM_Factored)
    ->Apply(FactoredArgs)
    ->ArgNames({"d", "n"})
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FactoredReduced)
    ->Args({16, 1024})
    ->Args({32, 1024})
    ->Args({64, 1024})
    ->ArgNames({"d", "n"})
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Kronecker)
    ->Apply(KroneckerArgs)
    ->ArgNames({"d", "n"})
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace kvsketch::regression

BENCHMARK_MAIN();
