// File: core/zeta/zeta_projection.cc
//
// The projection half of ZetaApproximator (§E.5, §E.6): fitting the L
// shifted projections of R^{d+1} onto `dims` coordinates (random orthonormal
// or PCA of the first tokens), the MIPS→NN lift scale Φ, and Morton-encoding
// keys and queries on every curve. Encoding costs O(L·dims·d) per token.
#include <algorithm>
#include <cmath>
#include <vector>

#include "Eigen/Core"
#include "Eigen/Eigenvalues"
#include "core/status_macros.h"
#include "core/zeta/seeded_normal.h"
#include "core/zeta/zeta.h"

namespace kvsketch {
namespace {

// Smallest Φ, so quantiser bounds stay positive for all-zero keys.
constexpr double kMinPhi = 1e-30;
// Random projection: a coordinate of a fixed k' (‖k'‖ = Φ) on a random unit
// direction of R^{d+1} has std Φ/√(d+1); ±5 std clamps almost nothing.
constexpr double kRandomBoundStd = 5.0;
// PCA: half-width of a coordinate's range in RMS of the fitted keys.
constexpr double kPcaBoundRms = 4.0;

using RowMatrix =
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Gram–Schmidt on rows of a rows × cols Gaussian matrix (rows <= cols).
Eigen::MatrixXd RandomOrthonormalRows(SeededNormal& rng, int rows, int cols) {
  Eigen::MatrixXd m(rows, cols);
  for (int i = 0; i < rows; ++i) {
    for (int j = 0; j < cols; ++j) m(i, j) = rng.Next();
    for (int p = 0; p < i; ++p) m.row(i) -= m.row(i).dot(m.row(p)) * m.row(p);
    m.row(i) /= m.row(i).norm();
  }
  return m;
}

}  // namespace

void ZetaApproximator::FitRandom(State& s) const {
  const int d1 = shape().head_dim + 1, dims = opt_.dims, L = opt_.curves;
  SeededNormal rng(opt_.seed);
  s.proj.resize(static_cast<size_t>(L) * dims * d1);
  s.rel_centre.assign(L * dims, 0.0);
  s.rel_bound.assign(L * dims,
                     std::min(1.0, kRandomBoundStd / std::sqrt(double(d1))));
  s.shift.resize(L * dims);
  for (int c = 0; c < L; ++c) {
    const Eigen::MatrixXd p = RandomOrthonormalRows(rng, dims, d1);
    for (int i = 0; i < dims; ++i) {
      for (int j = 0; j < d1; ++j) {
        s.proj[(static_cast<size_t>(c) * dims + i) * d1 + j] =
            static_cast<float>(p(i, j));
      }
      s.shift[c * dims + i] = rng.Uniform();
    }
  }
  s.fitted = true;
}

void ZetaApproximator::FitPca(State& s) const {
  // Fit on exactly the first s.flushed (= PcaPrefix()) tokens, so the
  // projection depends on the data only, never on how it was appended.
  const int d = shape().head_dim, d1 = d + 1, dims = opt_.dims;
  const int L = opt_.curves;
  const int64_t n = s.flushed;
  double max_norm = 0;
  Eigen::MatrixXd x(n, d1);
  for (int64_t t = 0; t < n; ++t) {
    const float* k = s.keys.data() + t * d;
    double sq = 0;
    for (int j = 0; j < d; ++j) {
      x(t, j) = k[j];
      sq += double{k[j]} * k[j];
    }
    x(t, d) = sq;  // squared norm for now; extra coordinate below
    max_norm = std::max(max_norm, std::sqrt(sq));
  }
  const double phi = std::max(kMinPhi, kPhiHeadroom * max_norm);
  for (int64_t t = 0; t < n; ++t) {
    x(t, d) = std::sqrt(std::max(0.0, phi * phi - x(t, d)));
  }
  const Eigen::RowVectorXd mean = x.colwise().mean();
  const Eigen::MatrixXd centred = x.rowwise() - mean;
  const Eigen::MatrixXd cov =
      (centred.transpose() * centred) / static_cast<double>(n);
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(cov);
  // Eigenvalues ascend: the last `dims` columns are the top directions.
  const Eigen::MatrixXd top = eig.eigenvectors().rightCols(dims);
  SeededNormal rng(opt_.seed);
  s.proj.resize(static_cast<size_t>(L) * dims * d1);
  s.rel_centre.resize(L * dims);
  s.rel_bound.resize(L * dims);
  s.shift.resize(L * dims);
  for (int c = 0; c < L; ++c) {
    // A random rotation per curve decorrelates where the curves' Z-order
    // jumps fall (§E.5 "L independent curves with random shifts (and
    // rotations)").
    const Eigen::MatrixXd rot = RandomOrthonormalRows(rng, dims, dims);
    const Eigen::MatrixXd p = rot * top.transpose();  // dims × d1
    const Eigen::VectorXd centre = p * mean.transpose();
    const Eigen::MatrixXd y = centred * p.transpose();  // n × dims
    for (int i = 0; i < dims; ++i) {
      for (int j = 0; j < d1; ++j) {
        s.proj[(static_cast<size_t>(c) * dims + i) * d1 + j] =
            static_cast<float>(p(i, j));
      }
      const double rms =
          std::sqrt(y.col(i).squaredNorm() / static_cast<double>(n));
      s.rel_centre[c * dims + i] = centre(i) / phi;
      s.rel_bound[c * dims + i] =
          std::clamp(kPcaBoundRms * rms / phi, 1e-6, 2.0);
      s.shift[c * dims + i] = rng.Uniform();
    }
  }
  s.fitted = true;
  SetPhi(s, phi);
}

void ZetaApproximator::SetPhi(State& s, double phi) const {
  s.phi = std::max(phi, kMinPhi);
  s.quant.clear();
  for (size_t ci = 0; ci < s.rel_bound.size(); ++ci) {
    const double b = s.rel_bound[ci] * s.phi;
    // Range [−b, 2b]: the coordinate minus its centre lies in [−b, b], plus
    // a shift in [0, b).
    auto q = Quantizer::Create(-b, 2 * b, bits_);
    KVSKETCH_CHECK(q.ok());
    s.quant.push_back(*q);
  }
}

void ZetaApproximator::EncodeKeys(const State& s, int64_t first, int64_t count,
                                  uint64_t* codes) const {
  const int d = shape().head_dim, d1 = d + 1, dims = opt_.dims;
  const int L = opt_.curves;
  Eigen::Map<const RowMatrix> proj(s.proj.data(), L * dims, d1);
  constexpr int64_t kBlock = 256;
  RowMatrix kx(kBlock, d1);
  std::vector<uint32_t> coords(dims);
  for (int64_t b0 = 0; b0 < count; b0 += kBlock) {
    const int64_t nb = std::min(kBlock, count - b0);
    for (int64_t t = 0; t < nb; ++t) {
      const float* k = s.keys.data() + (first + b0 + t) * d;
      double sq = 0;
      for (int j = 0; j < d; ++j) {
        kx(t, j) = k[j];
        sq += double{k[j]} * k[j];
      }
      kx(t, d) =
          static_cast<float>(std::sqrt(std::max(0.0, s.phi * s.phi - sq)));
    }
    // nb × (L·dims): one GEMM per block instead of a GEMV per token.
    const RowMatrix y = kx.topRows(nb) * proj.transpose();
    for (int64_t t = 0; t < nb; ++t) {
      for (int c = 0; c < L; ++c) {
        for (int i = 0; i < dims; ++i) {
          const int ci = c * dims + i;
          const double b = s.rel_bound[ci] * s.phi;
          const double x =
              y(t, ci) - s.rel_centre[ci] * s.phi + s.shift[ci] * b;
          coords[i] = s.quant[ci].QuantizeFinite(x);
        }
        codes[(b0 + t) * L + c] = codec_->Encode(coords.data());
      }
    }
  }
}

void ZetaApproximator::EncodeQuery(const float* q, uint64_t* codes) const {
  const State& s = st_;
  const int d = shape().head_dim, d1 = d + 1, dims = opt_.dims;
  double sq = 0;
  for (int j = 0; j < d; ++j) sq += double{q[j]} * q[j];
  // Retrofit puts q' on the sphere of radius Φ (the ranking is scale-free);
  // native codes the query as it is, like the keys.
  const double f = opt_.native ? 1.0 : sq > 0 ? s.phi / std::sqrt(sq) : 0.0;
  std::vector<uint32_t> coords(dims);
  for (int c = 0; c < opt_.curves; ++c) {
    for (int i = 0; i < dims; ++i) {
      const int ci = c * dims + i;
      const float* p = s.proj.data() + static_cast<size_t>(ci) * d1;
      double y = 0;
      for (int j = 0; j < d; ++j) y += double{p[j]} * q[j];
      const double b = s.rel_bound[ci] * s.phi;
      coords[i] = s.quant[ci].QuantizeFinite(f * y - s.rel_centre[ci] * s.phi +
                                             s.shift[ci] * b);
    }
    codes[c] = codec_->Encode(coords.data());
  }
}

}  // namespace kvsketch
