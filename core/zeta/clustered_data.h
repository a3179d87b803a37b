// File: core/zeta/clustered_data.h
//
// Seeded clustered keys with low intrinsic dimension, the workload the
// `zeta` recall tests and the zeta-vs-faiss benchmark share (§E.6 item 5
// asks for "seeded synthetic data"; §E.3 explains why Z-order retrieval
// needs low intrinsic dimension, so an isotropic Gaussian workload would
// only measure that failure).
//
// Model: a random orthonormal basis A (d × r) spans the "content" subspace.
// There are `clusters` centres c_j = A·z_j with z_j ~ N(0, I_r)·centre_scale.
// Key i belongs to cluster j(i) (uniform): k_i = A·(z_j + cluster_std·g) +
// ambient_std·h with g ~ N(0, I_r), h ~ N(0, I_d), then rescaled to norm
// fixed_norm (keys of equal norm, as after a QK-norm layer; 0 keeps the raw
// norms, which makes maximum inner product a much harder target for any
// nearest-neighbour index). Query rows are drawn the same way from random
// clusters, so each query's top keys are concentrated in (but not confined
// to) its cluster. Values are N(0, 1). With d = 128 and fixed_norm = 8 the
// logits scale·q·k reach ~5.7.
//
// Everything comes from one mt19937_64 stream through a Box–Muller transform
// written out here, so a seed gives the same floats with every standard
// library. Cost O((n + m)·d·r).
#ifndef KVSKETCH_CORE_ZETA_CLUSTERED_DATA_H_
#define KVSKETCH_CORE_ZETA_CLUSTERED_DATA_H_

#include <cstdint>

#include "core/synthetic/synthetic.h"

namespace kvsketch {

struct ClusteredKeysOptions {
  int intrinsic_dim = 8;             // r
  int64_t tokens_per_cluster = 256;  // clusters = max(1, n / this)
  double centre_scale = 1.0;
  double cluster_std = 0.25;
  double ambient_std = 0.05;
  // If > 0, every key and query is rescaled to this norm (keys of equal
  // norm, as after a QK-norm layer: then the largest q·k is the nearest
  // direction).
  double fixed_norm = 8;
};

// n keys/values (n × d, n × dv) and m queries (m × d); scale = 1/√d.
SyntheticData ClusteredKeys(int64_t n, int d, int dv, int64_t m,
                            const ClusteredKeysOptions& options, uint64_t seed);

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_ZETA_CLUSTERED_DATA_H_
