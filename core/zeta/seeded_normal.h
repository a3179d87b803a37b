// File: core/zeta/seeded_normal.h
//
// Deterministic N(0, 1) draws for zeta's random projections and its test
// data: a Box–Muller transform over mt19937_64 written out here, so a seed
// gives the same doubles with every standard library (std::normal_distribution
// is implementation-defined). O(1) per draw.
#ifndef KVSKETCH_CORE_ZETA_SEEDED_NORMAL_H_
#define KVSKETCH_CORE_ZETA_SEEDED_NORMAL_H_

#include <cmath>
#include <cstdint>
#include <random>

namespace kvsketch {

class SeededNormal {
 public:
  explicit SeededNormal(uint64_t seed) : rng_(seed) {}

  // Uniform in [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(rng_() >> 11) * 0x1p-53; }
  uint64_t Raw() { return rng_(); }
  double Next() {
    if (have_spare_) {
      have_spare_ = false;
      return spare_;
    }
    const double u1 = 1.0 - Uniform();  // (0, 1], so log is finite
    const double u2 = Uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(2 * M_PI * u2);
    have_spare_ = true;
    return r * std::cos(2 * M_PI * u2);
  }

 private:
  std::mt19937_64 rng_;
  bool have_spare_ = false;
  double spare_ = 0;
};

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_ZETA_SEEDED_NORMAL_H_
