// File: core/sketch/count_sketch.h
//
// The sparse-recovery half of paper A (papers/A_B.md §A.3, §A.7.3): a
// CountSketch of a long vector x ∈ R^N in r × b counters, from which the k
// largest coordinates are recovered. Nothing of the measurement matrix is
// stored: row i sends coordinate j to bucket h_i(j) with sign σ_i(j), both
// derived from (seed, i, j) by splitmix64, so two sketches with the same
// (rows, buckets, seed) are linear in x and add (merge).
//
//   CountSketch cs(5, 64, /*seed=*/1);
//   for (j, v) in stream: cs.Add(j, v);           // O(r) each
//   auto top = cs.RecoverTopK(N, k);              // O(N·r) scan decoder
//
// Point query: the median over rows of σ_i(j)·C[i][h_i(j)], an unbiased-ish
// estimate with error ≈ ‖x_tail‖₂/√b per row; with b ≥ 4k and r ≥ 5 an
// exactly k-sparse x is recovered exactly with high probability.
//
// OutputColumnSketch applies it to attention outputs: for a batch of N
// queries answered by any Approximator (e.g. the `sketch` summary), column c
// of the N × dv output is sketched without storing the output, and its
// largest entries recovered afterwards: the paper's "k-sparse recovery of
// each column of T". Memory O(r·b·dv), independent of N.
//
// Thread safety: const methods may run concurrently; Add/Merge need
// exclusive access.
#ifndef KVSKETCH_CORE_SKETCH_COUNT_SKETCH_H_
#define KVSKETCH_CORE_SKETCH_COUNT_SKETCH_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "core/approximator.h"

namespace kvsketch {

// One recovered coordinate.
struct RecoveredEntry {
  uint64_t index = 0;
  double value = 0;
};

class CountSketch {
 public:
  // REQUIRES: rows >= 1, buckets >= 1.
  CountSketch(int rows, int buckets, uint64_t seed);

  int rows() const { return rows_; }
  int buckets() const { return buckets_; }

  // x[index] += value. O(rows).
  void Add(uint64_t index, double value);
  // Median over rows of the signed bucket. O(rows).
  double Estimate(uint64_t index) const;
  // Point-queries every index in [0, universe) and keeps the k of largest
  // |estimate| (ties: smaller index), sorted by |value| descending.
  // O(universe·rows + universe) time, O(k) extra memory.
  std::vector<RecoveredEntry> RecoverTopK(uint64_t universe, int k) const;
  // x ← x + other's x. InvalidArgument unless rows, buckets and seed match.
  absl::Status MergeFrom(const CountSketch& other);

  int64_t MemoryBytes() const {
    return static_cast<int64_t>(table_.capacity() * sizeof(double));
  }

 private:
  // Bucket and sign of index in row i.
  void Hash(int row, uint64_t index, int* bucket, double* sign) const;

  int rows_;
  int buckets_;
  uint64_t seed_;
  std::vector<double> table_;  // rows × buckets
};

class OutputColumnSketch {
 public:
  OutputColumnSketch(int value_dim, int rows, int buckets, uint64_t seed);

  // Sketches output row `row_index` (value_dim floats). O(rows·dv).
  void AddRow(uint64_t row_index, const float* out_row);
  // Runs approx.Query on queries (N × d, in batches of `batch` rows) and
  // sketches the outputs as rows first_index .. first_index + N - 1.
  // Errors from Query are returned unchanged.
  absl::Status SketchQueries(const Approximator& approx,
                             ConstMatrixView queries, uint64_t first_index,
                             int batch = 64);
  // The k largest-magnitude entries of output column `column` among rows
  // [0, universe).
  std::vector<RecoveredEntry> RecoverColumnTopK(int column, uint64_t universe,
                                                int k) const;

 private:
  std::vector<CountSketch> columns_;
};

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_SKETCH_COUNT_SKETCH_H_
