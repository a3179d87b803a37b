// File: core/synthetic/synthetic.cc
#include "core/synthetic/synthetic.h"

#include <algorithm>
#include <cmath>

#include "core/sketch/feature_maps.h"

namespace kvsketch {
namespace {

SyntheticData Empty(int64_t n, int d, int dv, int64_t m) {
  SyntheticData s;
  s.n = n;
  s.m = m;
  s.d = d;
  s.dv = dv;
  s.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  s.keys.resize(n * d);
  s.values.resize(n * dv);
  s.queries.resize(m * d);
  return s;
}

void RandomUnit(ReproducibleNormal& rng, int d, std::vector<double>* u) {
  u->resize(d);
  double norm2 = 0;
  for (double& x : *u) {
    x = rng.Next();
    norm2 += x * x;
  }
  const double inv = 1.0 / std::sqrt(norm2);
  for (double& x : *u) x *= inv;
}

// Uniform in [-1, 1) from the same reproducible stream.
double Uniform(ReproducibleNormal& rng) {
  // Φ-free trick: the sign and fraction of a normal are not uniform, so use
  // the Box–Muller angle instead: atan2 of two normals is uniform.
  const double a = rng.Next(), b = rng.Next();
  return std::atan2(a, b) / M_PI;
}

}  // namespace

double GrowingSpread(int64_t n, double c0) {
  return std::sqrt(2.0 * (1.0 - c0) * std::log(static_cast<double>(n)));
}

SyntheticData GaussianLogits(int64_t n, int d, int dv, int64_t m, double spread,
                             uint64_t seed) {
  SyntheticData s = Empty(n, d, dv, m);
  ReproducibleNormal rng(seed);
  for (float& x : s.keys) x = static_cast<float>(rng.Next());
  for (float& x : s.values) x = static_cast<float>(rng.Next());
  std::vector<double> u;
  for (int64_t i = 0; i < m; ++i) {
    RandomUnit(rng, d, &u);
    for (int c = 0; c < d; ++c) {
      s.queries[i * d + c] = static_cast<float>(spread / s.scale * u[c]);
    }
  }
  return s;
}

SyntheticData BoundedLogits(int64_t n, int d, int dv, int64_t m, double spread,
                            uint64_t seed) {
  SyntheticData s = Empty(n, d, dv, m);
  ReproducibleNormal rng(seed);
  // q·k of entries uniform in [-b, b] has variance d·b⁴/9, so the logit
  // std is scale·√d·b²/3 = b²/3: b = √(3·spread).
  const double b = std::sqrt(3.0 * spread);
  for (float& x : s.keys) x = static_cast<float>(b * Uniform(rng));
  for (float& x : s.queries) x = static_cast<float>(b * Uniform(rng));
  // values = P·k/(b·√d) + 0.1·noise, P a fixed Gaussian dv×d map.
  std::vector<double> p(static_cast<size_t>(dv) * d);
  for (double& x : p) x = rng.Next();
  const double norm = 1.0 / (b * std::sqrt(static_cast<double>(d)));
  for (int64_t j = 0; j < n; ++j) {
    const float* k = s.keys.data() + j * d;
    for (int r = 0; r < dv; ++r) {
      double acc = 0;
      for (int c = 0; c < d; ++c)
        acc += p[static_cast<size_t>(r) * d + c] * k[c];
      s.values[j * dv + r] = static_cast<float>(acc * norm + 0.1 * rng.Next());
    }
  }
  return s;
}

SyntheticData PlantedStructure(int64_t n, int d, int dv,
                               const PlantedOptions& o, uint64_t seed) {
  SyntheticData s = Empty(n, d, dv, n);
  ReproducibleNormal rng(seed);
  const double ln_n = std::log(static_cast<double>(std::max<int64_t>(n, 2)));
  // A shared "topic" direction u: every query carries u/scale, so a key
  // with component g·u gains logit g over the noise.
  std::vector<double> u;
  RandomUnit(rng, d, &u);
  for (float& x : s.keys) x = static_cast<float>(rng.Next());
  for (float& x : s.values) x = static_cast<float>(rng.Next());
  // Remove the keys' own u-component so that only planted keys align.
  for (int64_t j = 0; j < n; ++j) {
    float* k = s.keys.data() + j * d;
    double dot = 0;
    for (int c = 0; c < d; ++c) dot += k[c] * u[c];
    for (int c = 0; c < d; ++c) k[c] = static_cast<float>(k[c] - dot * u[c]);
  }
  const auto boost = [&](int64_t j, double gain) {
    float* k = s.keys.data() + j * d;
    for (int c = 0; c < d; ++c) k[c] = static_cast<float>(k[c] + gain * u[c]);
  };
  for (int64_t j = 0; j < std::min<int64_t>(o.sinks, n); ++j) boost(j, ln_n);
  // Needles spread evenly over the first half, so they survive a long
  // stream only if an eviction policy keeps them.
  for (int i = 0; i < o.needles; ++i) {
    const int64_t p =
        o.sinks + (i + 1) * std::max<int64_t>(1, (n / 2) / (o.needles + 1));
    if (p >= n) break;
    s.planted.push_back(p);
    boost(p, o.needle_gain * ln_n);
  }
  std::vector<double> g;
  for (int64_t t = 0; t < n; ++t) {
    // Noise direction orthogonal to u: logits of plain keys ~ N(0, noise²).
    RandomUnit(rng, d, &g);
    double dot = 0;
    for (int c = 0; c < d; ++c) dot += g[c] * u[c];
    double norm2 = 0;
    for (int c = 0; c < d; ++c) {
      g[c] -= dot * u[c];
      norm2 += g[c] * g[c];
    }
    const double gn = 1.0 / std::sqrt(norm2);
    float* q = s.queries.data() + t * d;
    for (int c = 0; c < d; ++c) {
      q[c] = static_cast<float>((o.noise_std * g[c] * gn + u[c]) / s.scale);
    }
    // Local boost: add the previous tokens' keys so their logits gain about
    // local_boost each (scale·|k|² ≈ √d for Gaussian keys).
    for (int back = 1; back <= o.local_span && t - back >= 0; ++back) {
      const float* k = s.keys.data() + (t - back) * d;
      const double a = o.local_boost / (s.scale * d);
      for (int c = 0; c < d; ++c) q[c] = static_cast<float>(q[c] + a * k[c]);
    }
  }
  return s;
}

}  // namespace kvsketch
