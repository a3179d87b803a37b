// File: tests/core/zeta_index_test.cc
//
// Invariants of the streaming Z-order index (core/zeta/zorder_index.h;
// papers/C_D_E_conv_regression_zeta.md §E.6 item 3).
#include <algorithm>
#include <random>
#include <vector>

#include "core/zeta/zorder_index.h"
#include "gtest/gtest.h"

namespace kvsketch {
namespace {

// Checks every run against the codes given so far (codes[pos·L + c]).
void ExpectIndexMatches(const ZOrderIndex& index,
                        const std::vector<uint64_t>& codes) {
  const int L = index.curves();
  const int64_t n = static_cast<int64_t>(codes.size()) / L;
  ASSERT_EQ(index.size(), n);
  EXPECT_EQ(index.tail_size(), n % index.chunk());
  // Runs: contiguous, oldest first, sizes distinct powers of two chunks,
  // decreasing (the binary counter of n / chunk).
  int64_t next = 0;
  int64_t last_size = INT64_MAX;
  for (const ZOrderIndex::Run& run : index.runs()) {
    EXPECT_EQ(run.begin, next);
    const int64_t size = run.end - run.begin;
    EXPECT_EQ(size % index.chunk(), 0);
    const int64_t chunks = size / index.chunk();
    EXPECT_EQ(chunks & (chunks - 1), 0) << "run of " << chunks << " chunks";
    EXPECT_LT(size, last_size);
    last_size = size;
    next = run.end;
  }
  EXPECT_EQ(next, index.tail_begin());
  for (int c = 0; c < L; ++c) {
    std::vector<ZOrderEntry> all, want;
    for (const ZOrderIndex::Run& run : index.runs()) {
      const auto& e = run.by_curve[c];
      EXPECT_TRUE(std::is_sorted(e.begin(), e.end())) << "curve " << c;
      all.insert(all.end(), e.begin(), e.end());
    }
    for (int64_t p = 0; p < index.tail_begin(); ++p) {
      want.push_back({codes[p * L + c], p});
    }
    std::sort(all.begin(), all.end());
    std::sort(want.begin(), want.end());
    EXPECT_EQ(all, want) << "curve " << c;
  }
}

TEST(ZOrderIndexTest, RunsStaySortedAndHoldEveryPair) {
  for (int64_t chunk : {1, 7, 64}) {
    for (int L : {1, 3}) {
      ZOrderIndex index(L, chunk);
      std::mt19937_64 rng(chunk * 10 + L);
      std::vector<uint64_t> codes;
      for (int step = 0; step < 60; ++step) {
        const int64_t count = rng() % 50;
        std::vector<uint64_t> batch(count * L);
        // Few distinct codes, so ties (broken by position) are exercised.
        for (auto& c : batch) c = (step % 3 == 0) ? rng() % 16 : rng();
        index.Append(batch.data(), count);
        codes.insert(codes.end(), batch.begin(), batch.end());
        ExpectIndexMatches(index, codes);
        if (::testing::Test::HasFailure()) return;
      }
      EXPECT_EQ(index.MemoryBytes() >=
                    static_cast<int64_t>(index.tail_begin() * L * 16),
                true);
    }
  }
}

TEST(ZOrderIndexTest, RecodeResortsEveryRun) {
  const int L = 2;
  ZOrderIndex index(L, 8);
  std::mt19937_64 rng(5);
  std::vector<uint64_t> codes(203 * L);
  for (auto& c : codes) c = rng();
  index.Append(codes.data(), 203);
  // New codes: a different function of the position.
  auto fresh = [](int64_t pos, int c) {
    return static_cast<uint64_t>((pos * 2654435761u + c * 97) % 1000);
  };
  index.Recode([&](int64_t first, int64_t count, uint64_t* out) {
    for (int64_t t = 0; t < count; ++t) {
      for (int c = 0; c < L; ++c) out[t * L + c] = fresh(first + t, c);
    }
  });
  for (int64_t p = 0; p < 203; ++p) {
    for (int c = 0; c < L; ++c) codes[p * L + c] = fresh(p, c);
  }
  ExpectIndexMatches(index, codes);
}

TEST(ZOrderIndexTest, CandidateWindowAroundTheQueryCode) {
  ZOrderIndex index(1, 4);
  // Codes equal to 10·position: the order is the position order.
  std::vector<uint64_t> codes(64);
  for (int p = 0; p < 64; ++p) codes[p] = 10 * p;
  index.Append(codes.data(), 64);  // one run of 64 (16 chunks)
  ASSERT_EQ(index.runs().size(), 1u);
  const uint64_t q = 305;  // between positions 30 and 31
  std::vector<int64_t> got;
  index.Candidates(&q, 4, &got);
  EXPECT_EQ(got, (std::vector<int64_t>{29, 30, 31, 32}));
  // At the ends the window shifts inwards and keeps its size.
  const uint64_t lo = 0, hi = 100000;
  got.clear();
  index.Candidates(&lo, 3, &got);
  EXPECT_EQ(got, (std::vector<int64_t>{0, 1, 2}));
  got.clear();
  index.Candidates(&hi, 3, &got);
  EXPECT_EQ(got, (std::vector<int64_t>{61, 62, 63}));
  // A window >= n returns every position (then exact search is possible).
  got.clear();
  index.Candidates(&q, 1000, &got);
  std::sort(got.begin(), got.end());
  ASSERT_EQ(got.size(), 64u);
  for (int p = 0; p < 64; ++p) EXPECT_EQ(got[p], p);
}

}  // namespace
}  // namespace kvsketch
