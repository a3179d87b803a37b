// File: client/loadgen/histogram.h
//
// A log-bucketed latency histogram in the style of HdrHistogram: values
// (non-negative integers, e.g. nanoseconds) fall into buckets whose width
// doubles every octave, with kSubBuckets/2 linear buckets per octave. Values
// below kSubBuckets are exact; above, any value's bucket spans at most
// 2/kSubBuckets of it, and Percentile reports the bucket midpoint, so the
// relative error of a percentile is at most 1/kSubBuckets (0.4%).
//
// Record is O(1) (a count-leading-zeros and an increment); Percentile is
// O(number of buckets) = O(kSubBuckets/2 * log2(max/kSubBuckets)).
// Not thread-safe: guard it, or keep one per thread and Merge.
#ifndef KVSKETCH_CLIENT_LOADGEN_HISTOGRAM_H_
#define KVSKETCH_CLIENT_LOADGEN_HISTOGRAM_H_

#include <cstdint>
#include <vector>

namespace kvsketch::client {

class LatencyHistogram {
 public:
  static constexpr int kSubBucketBits = 8;
  static constexpr int64_t kSubBuckets = int64_t{1} << kSubBucketBits;
  // Values above this are clamped to it (2^42 ns is over an hour).
  static constexpr int64_t kMaxValue = (int64_t{1} << 42) - 1;

  LatencyHistogram();

  // Negative values count as 0; values above kMaxValue as kMaxValue.
  void Record(int64_t value);
  void Merge(const LatencyHistogram& other);
  void Reset();

  int64_t count() const { return count_; }
  int64_t min() const { return count_ == 0 ? 0 : min_; }
  int64_t max() const { return max_; }
  double mean() const;

  // The value at quantile q in [0, 1]: the smallest recorded value v such
  // that at least ceil(q * count) values are <= v, to within the bucket
  // resolution; clamped to [min(), max()]. q <= 0 gives min(), q >= 1 max().
  // 0 when empty.
  int64_t Percentile(double q) const;

 private:
  static int BucketIndex(int64_t value);
  static int64_t BucketLow(int index);
  static int64_t BucketWidth(int index);

  std::vector<int64_t> counts_;
  int64_t count_ = 0;
  int64_t min_ = 0;
  int64_t max_ = 0;
  double sum_ = 0;
};

}  // namespace kvsketch::client

#endif  // KVSKETCH_CLIENT_LOADGEN_HISTOGRAM_H_
