#include "client/loadgen/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace kvsketch::client {
namespace {

constexpr int64_t kHalf = LatencyHistogram::kSubBuckets / 2;

// Octave shift of a value: 0 below kSubBuckets, else the number of low bits
// dropped so that value >> shift lands in [kHalf, kSubBuckets).
int Shift(int64_t value) {
  const int msb = 63 - std::countl_zero(static_cast<uint64_t>(value | 1));
  return std::max(0, msb - (LatencyHistogram::kSubBucketBits - 1));
}

}  // namespace

LatencyHistogram::LatencyHistogram() : counts_(BucketIndex(kMaxValue) + 1, 0) {}

// Buckets: index = shift * kHalf + (value >> shift). For shift 0 that is
// the value itself (0..kSubBuckets-1); each further octave adds kHalf
// buckets of width 2^shift, contiguous with the previous octave.
int LatencyHistogram::BucketIndex(int64_t value) {
  const int shift = Shift(value);
  return static_cast<int>(shift * kHalf + (value >> shift));
}

int64_t LatencyHistogram::BucketLow(int index) {
  if (index < kSubBuckets) return index;
  const int shift = static_cast<int>((index - kHalf) / kHalf);
  const int64_t sub = index - shift * kHalf;  // in [kHalf, kSubBuckets)
  return sub << shift;
}

int64_t LatencyHistogram::BucketWidth(int index) {
  if (index < kSubBuckets) return 1;
  return int64_t{1} << ((index - kHalf) / kHalf);
}

void LatencyHistogram::Record(int64_t value) {
  value = std::clamp<int64_t>(value, 0, kMaxValue);
  ++counts_[BucketIndex(value)];
  if (count_ == 0 || value < min_) min_ = value;
  if (value > max_) max_ = value;
  ++count_;
  sum_ += static_cast<double>(value);
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  if (other.count_ == 0) return;
  for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
  min_ = count_ == 0 ? other.min_ : std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
  count_ += other.count_;
  sum_ += other.sum_;
}

void LatencyHistogram::Reset() {
  std::fill(counts_.begin(), counts_.end(), 0);
  count_ = 0;
  min_ = 0;
  max_ = 0;
  sum_ = 0;
}

double LatencyHistogram::mean() const {
  return count_ == 0 ? 0.0 : sum_ / static_cast<double>(count_);
}

int64_t LatencyHistogram::Percentile(double q) const {
  if (count_ == 0) return 0;
  if (q <= 0) return min_;
  if (q >= 1) return max_;
  const int64_t rank = std::max<int64_t>(
      1, static_cast<int64_t>(std::ceil(q * static_cast<double>(count_))));
  int64_t seen = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      const int index = static_cast<int>(i);
      const int64_t mid = BucketLow(index) + (BucketWidth(index) - 1) / 2;
      return std::clamp(mid, min_, max_);
    }
  }
  return max_;
}

}  // namespace kvsketch::client
