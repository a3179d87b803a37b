#include "client/loadgen/histogram.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace kvsketch::client {
namespace {

// The exact quantile with the histogram's rank rule: the ceil(q*n)-th
// smallest value.
int64_t ExactPercentile(std::vector<int64_t> values, double q) {
  std::sort(values.begin(), values.end());
  const int64_t n = static_cast<int64_t>(values.size());
  int64_t rank = static_cast<int64_t>(std::ceil(q * n));
  rank = std::clamp<int64_t>(rank, 1, n);
  return values[rank - 1];
}

void ExpectPercentilesWithin(const std::vector<int64_t>& values) {
  LatencyHistogram h;
  for (int64_t v : values) h.Record(v);
  ASSERT_EQ(h.count(), static_cast<int64_t>(values.size()));
  const double bound = 1.0 / LatencyHistogram::kSubBuckets;
  for (double q :
       {0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999}) {
    const int64_t exact = ExactPercentile(values, q);
    const int64_t got = h.Percentile(q);
    EXPECT_LE(std::abs(static_cast<double>(got - exact)),
              bound * static_cast<double>(exact) + 0.5)
        << "q=" << q << " exact=" << exact << " got=" << got;
  }
  EXPECT_EQ(h.Percentile(0.0), *std::min_element(values.begin(), values.end()));
  EXPECT_EQ(h.Percentile(1.0), *std::max_element(values.begin(), values.end()));
}

TEST(LatencyHistogramTest, EmptyReportsZero) {
  LatencyHistogram h;
  EXPECT_EQ(h.count(), 0);
  EXPECT_EQ(h.Percentile(0.5), 0);
  EXPECT_EQ(h.Percentile(0.99), 0);
  EXPECT_EQ(h.min(), 0);
  EXPECT_EQ(h.max(), 0);
  EXPECT_EQ(h.mean(), 0.0);
}

TEST(LatencyHistogramTest, SmallValuesAreExact) {
  std::vector<int64_t> values;
  for (int64_t v = 0; v < LatencyHistogram::kSubBuckets; ++v) {
    values.push_back(v);
  }
  LatencyHistogram h;
  for (int64_t v : values) h.Record(v);
  for (double q : {0.01, 0.3, 0.5, 0.77, 0.99}) {
    EXPECT_EQ(h.Percentile(q), ExactPercentile(values, q)) << q;
  }
}

TEST(LatencyHistogramTest, UniformPercentilesWithinResolution) {
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int64_t> dist(1, 2'000'000'000);
  std::vector<int64_t> values(200'000);
  for (int64_t& v : values) v = dist(rng);
  ExpectPercentilesWithin(values);
}

TEST(LatencyHistogramTest, HeavyTailedPercentilesWithinResolution) {
  // Log-normal latencies spanning microseconds to seconds.
  std::mt19937_64 rng(11);
  std::lognormal_distribution<double> dist(std::log(200'000.0), 1.5);
  std::vector<int64_t> values(100'000);
  for (int64_t& v : values) v = static_cast<int64_t>(dist(rng));
  ExpectPercentilesWithin(values);
}

TEST(LatencyHistogramTest, SingleValueIsReportedExactly) {
  LatencyHistogram h;
  h.Record(123'456'789);
  for (double q : {0.0, 0.5, 0.99, 1.0}) {
    EXPECT_EQ(h.Percentile(q), 123'456'789) << q;
  }
  EXPECT_DOUBLE_EQ(h.mean(), 123'456'789.0);
}

TEST(LatencyHistogramTest, MergeEqualsRecordingEverything) {
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<int64_t> dist(1, 50'000'000);
  LatencyHistogram a, b, all;
  for (int i = 0; i < 5000; ++i) {
    const int64_t v = dist(rng);
    (i % 3 == 0 ? a : b).Record(v);
    all.Record(v);
  }
  a.Merge(b);
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(a.min(), all.min());
  EXPECT_EQ(a.max(), all.max());
  EXPECT_DOUBLE_EQ(a.mean(), all.mean());
  for (double q : {0.1, 0.5, 0.9, 0.99, 0.999}) {
    EXPECT_EQ(a.Percentile(q), all.Percentile(q)) << q;
  }
}

TEST(LatencyHistogramTest, ResetAndClamping) {
  LatencyHistogram h;
  h.Record(-5);
  EXPECT_EQ(h.max(), 0);
  h.Record(LatencyHistogram::kMaxValue * 4);
  EXPECT_EQ(h.max(), LatencyHistogram::kMaxValue);
  EXPECT_EQ(h.count(), 2);
  h.Reset();
  EXPECT_EQ(h.count(), 0);
  EXPECT_EQ(h.Percentile(0.5), 0);
  h.Record(42);
  EXPECT_EQ(h.min(), 42);
  EXPECT_EQ(h.Percentile(0.5), 42);
}

TEST(LatencyHistogramTest, PercentilesAreMonotone) {
  std::mt19937_64 rng(5);
  std::exponential_distribution<double> dist(1e-6);
  LatencyHistogram h;
  for (int i = 0; i < 20000; ++i) h.Record(static_cast<int64_t>(dist(rng)));
  int64_t prev = h.Percentile(0.0);
  for (int i = 1; i <= 1000; ++i) {
    const int64_t p = h.Percentile(i / 1000.0);
    EXPECT_GE(p, prev) << i;
    prev = p;
  }
}

}  // namespace
}  // namespace kvsketch::client
