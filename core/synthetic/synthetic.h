// File: core/synthetic/synthetic.h
//
// Reproducible synthetic attention data with known structure, for the tests
// of the sublinear approximators, their benchmarks and the accuracy harness
// (papers/A_B.md §3). Library code (not test-only) so `kvsketch eval` can use
// the same generators. All draws come from ReproducibleNormal, so a (seed,
// sizes) pair gives the same floats on every platform.
//
// Logits are scale · q·k with scale = 1/√d (HeadShape's default).
//
//   GaussianLogits        keys N(0, I), each query (s/scale)·u with u a random
//                         unit vector: every query's logits are N(0, s²).
//                         GrowingSpread uses s = √(2(1−C₀)·ln n), whose
//                         effective support is about n^{C₀} (§3.2).
//   BoundedLogits         the bounded-entry regime of §A.1: entries of q and k
//                         uniform in [−b, b] with logit std `spread`, values
//                         a fixed linear map of the key plus small noise (so
//                         the attention output carries signal beyond mean(V)).
//   PlantedStructure      a causal trace (one query per position): attention
//                         sinks, a local window boost, and "needle" keys whose
//                         logit sits needle_gain·ln n above Gaussian noise of
//                         std noise_std for every query (§B.7.8).
#ifndef KVSKETCH_CORE_SYNTHETIC_SYNTHETIC_H_
#define KVSKETCH_CORE_SYNTHETIC_SYNTHETIC_H_

#include <cstdint>
#include <vector>

namespace kvsketch {

struct SyntheticData {
  int64_t n = 0;  // tokens
  int64_t m = 0;  // query rows
  int d = 0, dv = 0;
  float scale = 0;               // 1/√d
  std::vector<float> keys;       // n × d
  std::vector<float> values;     // n × dv
  std::vector<float> queries;    // m × d
  std::vector<int64_t> planted;  // PlantedStructure: needle positions
};

// s = √(2(1−c0)·ln n).
double GrowingSpread(int64_t n, double c0);

SyntheticData GaussianLogits(int64_t n, int d, int dv, int64_t m, double spread,
                             uint64_t seed);

SyntheticData BoundedLogits(int64_t n, int d, int dv, int64_t m, double spread,
                            uint64_t seed);

struct PlantedOptions {
  int sinks = 4;             // first tokens with a logit boost of ln n
  int needles = 8;           // planted positions (after the sinks)
  double noise_std = 2.0;    // logit noise
  double needle_gain = 1.2;  // needle boost = needle_gain · ln n
  double local_boost = 3.0;  // boost of the `local_span` previous tokens
  int local_span = 2;
};

// m = n: query row t belongs to position t (attends to keys 0..t).
SyntheticData PlantedStructure(int64_t n, int d, int dv,
                               const PlantedOptions& options, uint64_t seed);

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_SYNTHETIC_SYNTHETIC_H_
