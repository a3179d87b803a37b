// File: core/zeta/clustered_data.cc
#include "core/zeta/clustered_data.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/zeta/seeded_normal.h"

namespace kvsketch {

SyntheticData ClusteredKeys(int64_t n, int d, int dv, int64_t m,
                            const ClusteredKeysOptions& opt, uint64_t seed) {
  SeededNormal rng(seed);
  const int r = std::min(opt.intrinsic_dim, d);
  // Orthonormal basis of the content subspace (Gram–Schmidt, d × r, stored
  // column c at basis[c*d ...]).
  std::vector<double> basis(static_cast<size_t>(r) * d);
  for (int c = 0; c < r; ++c) {
    double* b = basis.data() + static_cast<size_t>(c) * d;
    for (int i = 0; i < d; ++i) b[i] = rng.Next();
    for (int p = 0; p < c; ++p) {
      const double* a = basis.data() + static_cast<size_t>(p) * d;
      double dot = 0;
      for (int i = 0; i < d; ++i) dot += a[i] * b[i];
      for (int i = 0; i < d; ++i) b[i] -= dot * a[i];
    }
    double norm = 0;
    for (int i = 0; i < d; ++i) norm += b[i] * b[i];
    norm = std::sqrt(norm);
    for (int i = 0; i < d; ++i) b[i] /= norm;
  }
  const int64_t clusters =
      std::max<int64_t>(1, n / std::max<int64_t>(1, opt.tokens_per_cluster));
  std::vector<double> centres(static_cast<size_t>(clusters) * r);
  for (double& c : centres) c = opt.centre_scale * rng.Next();

  SyntheticData out;
  out.n = n;
  out.m = m;
  out.d = d;
  out.dv = dv;
  out.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  std::vector<double> z(r);
  auto draw = [&](float* dst) {
    const int64_t j = static_cast<int64_t>(rng.Raw() % clusters);
    for (int c = 0; c < r; ++c) {
      z[c] = centres[j * r + c] + opt.cluster_std * rng.Next();
    }
    std::vector<double> x(d);
    double sq = 0;
    for (int i = 0; i < d; ++i) {
      x[i] = opt.ambient_std * rng.Next();
      for (int c = 0; c < r; ++c) {
        x[i] += basis[static_cast<size_t>(c) * d + i] * z[c];
      }
      sq += x[i] * x[i];
    }
    const double f =
        opt.fixed_norm > 0 && sq > 0 ? opt.fixed_norm / std::sqrt(sq) : 1.0;
    for (int i = 0; i < d; ++i) dst[i] = static_cast<float>(f * x[i]);
  };
  out.keys.resize(static_cast<size_t>(n) * d);
  out.values.resize(static_cast<size_t>(n) * dv);
  out.queries.resize(static_cast<size_t>(m) * d);
  for (int64_t i = 0; i < n; ++i) {
    draw(out.keys.data() + i * d);
    for (int c = 0; c < dv; ++c) {
      out.values[i * dv + c] = static_cast<float>(rng.Next());
    }
  }
  for (int64_t i = 0; i < m; ++i) draw(out.queries.data() + i * d);
  return out;
}

}  // namespace kvsketch
