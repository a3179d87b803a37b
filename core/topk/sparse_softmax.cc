// File: core/topk/sparse_softmax.cc
#include "core/topk/sparse_softmax.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace kvsketch {

double SubsetSoftmax(const double* scores, const int64_t* idx, int64_t count,
                     const float* values, int dv, float* out, double* weights) {
  double m = scores[0];
  for (int64_t i = 1; i < count; ++i) m = std::max(m, scores[i]);
  std::vector<double> acc(dv, 0.0);
  double den = 0;
  for (int64_t i = 0; i < count; ++i) {
    const double w = std::exp(scores[i] - m);
    den += w;
    if (weights != nullptr) weights[i] = w;
    const float* v = values + idx[i] * dv;
    for (int c = 0; c < dv; ++c) acc[c] += w * v[c];
  }
  const double inv = 1.0 / den;
  for (int c = 0; c < dv; ++c) out[c] = static_cast<float>(acc[c] * inv);
  if (weights != nullptr) {
    for (int64_t i = 0; i < count; ++i) weights[i] *= inv;
  }
  return m + std::log(den);
}

}  // namespace kvsketch
