// File: core/topk/sparse_softmax.h
//
// Softmax attention restricted to a subset of stored tokens, shared by
// `topk` and `evict`: given the scores of the chosen tokens, the output is
// Σ_j p_j v_j with p = softmax(scores), computed in double after subtracting
// the largest score. Cost O(count·dv).
#ifndef KVSKETCH_CORE_TOPK_SPARSE_SOFTMAX_H_
#define KVSKETCH_CORE_TOPK_SPARSE_SOFTMAX_H_

#include <cstdint>

namespace kvsketch {

// scores[i] is the score of token idx[i], whose value row is
// values + idx[i] * dv. Writes out (dv floats); if weights != nullptr also
// writes the softmax weights p (count doubles). Returns log Σ exp(scores).
// REQUIRES: count >= 1.
double SubsetSoftmax(const double* scores, const int64_t* idx, int64_t count,
                     const float* values, int dv, float* out, double* weights);

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_TOPK_SPARSE_SOFTMAX_H_
