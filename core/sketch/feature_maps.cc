// File: core/sketch/feature_maps.cc
#include "core/sketch/feature_maps.h"

#include <cmath>
#include <limits>

#include "Eigen/Core"
#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace kvsketch {

double ReproducibleNormal::NextUniform() {
  // Top 53 bits -> k in [0, 2^53); (k + 1) / 2^53 lies in (0, 1].
  const uint64_t k = engine_() >> 11;
  return (static_cast<double>(k) + 1.0) * 0x1p-53;
}

double ReproducibleNormal::Next() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  const double u1 = NextUniform();
  const double u2 = NextUniform();
  const double radius = std::sqrt(-2.0 * std::log(u1));
  const double angle = 2.0 * M_PI * u2;
  spare_ = radius * std::sin(angle);
  has_spare_ = true;
  return radius * std::cos(angle);
}

PositiveRandomFeatures::PositiveRandomFeatures(int num_features, int input_dim,
                                               double scale, uint64_t seed)
    : FeatureMap(num_features, input_dim),
      sqrt_scale_(std::sqrt(scale)),
      log_norm_(-0.5 * std::log(static_cast<double>(num_features))),
      w_(static_cast<size_t>(num_features) * input_dim) {
  const int d = input_dim;
  ReproducibleNormal rng(seed);
  // Only the rows a block contributes are stored and orthonormalised: row i
  // of modified Gram–Schmidt depends on rows 0..i alone, so a partial last
  // block (t mod d rows) gives the same values as the full d×d block did,
  // in O(rows·d) memory and O(d² + rows²·d) time (the draws) instead of
  // O(d²) memory and O(d³) time.
  // That bound matters because head_dim comes from the client: with the
  // full block, features=1 at d = 16384 took a 2 GiB buffer and ~10^12
  // flops per head (found by tests/fuzz/snapshot_fuzzer.cc).
  const int block_rows = std::min(d, num_features);
  std::vector<double> block(static_cast<size_t>(block_rows) * d);
  for (int start = 0; start < num_features; start += d) {
    // A d×d Gaussian block (its first `used` rows), orthonormalised row by row
    // (modified Gram–Schmidt twice for stability), each row then given the norm
    // of a fresh Gaussian vector so its marginal law is N(0, I).
    const int used = std::min(d, num_features - start);
    for (size_t x = 0; x < static_cast<size_t>(used) * d; ++x) {
      block[x] = rng.Next();
    }
    // The unused rows' draws are still taken, so the generator's sequence
    // (and W for every existing spec and snapshot) is unchanged.
    for (size_t x = static_cast<size_t>(used) * d;
         x < static_cast<size_t>(d) * d; ++x) {
      (void)rng.Next();
    }
    for (int i = 0; i < used; ++i) {
      double* row = block.data() + static_cast<size_t>(i) * d;
      for (int pass = 0; pass < 2; ++pass) {
        for (int j = 0; j < i; ++j) {
          const double* prev = block.data() + static_cast<size_t>(j) * d;
          double dot = 0;
          for (int c = 0; c < d; ++c) dot += row[c] * prev[c];
          for (int c = 0; c < d; ++c) row[c] -= dot * prev[c];
        }
      }
      double norm2 = 0;
      for (int c = 0; c < d; ++c) norm2 += row[c] * row[c];
      const double inv = 1.0 / std::sqrt(norm2);
      for (int c = 0; c < d; ++c) row[c] *= inv;
    }
    for (int i = 0; i < used; ++i) {
      double chi2 = 0;
      for (int c = 0; c < d; ++c) {
        const double g = rng.Next();
        chi2 += g * g;
      }
      const double len = std::sqrt(chi2);
      const double* src = block.data() + static_cast<size_t>(i) * d;
      float* dst = w_.data() + static_cast<size_t>(start + i) * d;
      for (int c = 0; c < d; ++c) dst[c] = static_cast<float>(src[c] * len);
    }
  }
}

void PositiveRandomFeatures::Compute(const float* x, double* logabs,
                                     int8_t* sign) const {
  const int d = input_dim();
  double norm2 = 0;
  for (int c = 0; c < d; ++c) norm2 += static_cast<double>(x[c]) * x[c];
  const double base = log_norm_ - 0.5 * sqrt_scale_ * sqrt_scale_ * norm2;
  // W·x as one float gemv (t·d flops); the log-feature error is about
  // d·2^-24·|w|·|x|, far below the random-feature variance.
  Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic,
                                 Eigen::RowMajor>>
      w(w_.data(), num_features(), d);
  Eigen::Map<const Eigen::VectorXf> xv(x, d);
  const Eigen::VectorXf dots = w * xv;
  for (int r = 0; r < num_features(); ++r) {
    logabs[r] = base + sqrt_scale_ * static_cast<double>(dots[r]);
    sign[r] = 1;
  }
}

int64_t PositiveRandomFeatures::MemoryBytes() const {
  return static_cast<int64_t>(w_.capacity() * sizeof(float));
}

int64_t TaylorFeatures::CountFeatures(int input_dim, int degree, int64_t cap) {
  // C(d+g, g) = Π_{i=1..g} (d+i)/i, exact in integers at every step.
  int64_t c = 1;
  for (int i = 1; i <= degree; ++i) {
    c = c * (input_dim + i) / i;
    if (c > cap) return -1;
  }
  return c;
}

absl::StatusOr<std::unique_ptr<TaylorFeatures>> TaylorFeatures::Create(
    int input_dim, int degree, double scale) {
  const int64_t t = CountFeatures(input_dim, degree, kMaxTaylorFeatures);
  if (t < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sketch: taylor features of degree ", degree, " at head_dim ",
        input_dim, " need C(d+g, g) > ", kMaxTaylorFeatures,
        " features; lower `degree` or use features=prf"));
  }
  std::unique_ptr<TaylorFeatures> map(
      new TaylorFeatures(static_cast<int>(t), input_dim, scale));
  // Monomials as non-decreasing variable sequences, degree by degree. For
  // each we track its last variable and that variable's multiplicity, so
  // coef = 1/√(α!) updates by 1/√(multiplicity) per appended variable.
  std::vector<int32_t> last_var{0};
  std::vector<int32_t> last_count{0};
  map->parent_.push_back(-1);
  map->var_.push_back(-1);
  map->coef_.push_back(1.0);
  size_t begin = 0, end = 1;
  for (int r = 1; r <= degree; ++r) {
    for (size_t p = begin; p < end; ++p) {
      for (int v = last_var[p]; v < input_dim; ++v) {
        const int32_t count =
            (r > 1 && v == last_var[p]) ? last_count[p] + 1 : 1;
        map->parent_.push_back(static_cast<int32_t>(p));
        map->var_.push_back(v);
        map->coef_.push_back(map->coef_[p] / std::sqrt(double{1.0} * count));
        last_var.push_back(v);
        last_count.push_back(count);
      }
    }
    begin = end;
    end = map->parent_.size();
  }
  KVSKETCH_CHECK(static_cast<int64_t>(map->parent_.size()) == t);
  return map;
}

TaylorFeatures::TaylorFeatures(int num_features, int input_dim, double scale)
    : FeatureMap(num_features, input_dim), sqrt_scale_(std::sqrt(scale)) {}

void TaylorFeatures::Compute(const float* x, double* logabs,
                             int8_t* sign) const {
  // raw values go through logabs as scratch (parents precede children).
  const int t = num_features();
  logabs[0] = 1.0;
  for (int m = 1; m < t; ++m) {
    logabs[m] = logabs[parent_[m]] * (sqrt_scale_ * x[var_[m]]);
  }
  for (int m = 0; m < t; ++m) {
    const double v = logabs[m] * coef_[m];
    sign[m] = v > 0 ? 1 : (v < 0 ? -1 : 0);
    logabs[m] = v == 0 ? -std::numeric_limits<double>::infinity()
                       : std::log(std::fabs(v));
  }
}

int64_t TaylorFeatures::MemoryBytes() const {
  return static_cast<int64_t>(parent_.capacity() * sizeof(int32_t) +
                              var_.capacity() * sizeof(int32_t) +
                              coef_.capacity() * sizeof(double));
}

}  // namespace kvsketch
