// File: tests/core/evict_test.cc
//
// `evict` (core/evict/): the budget is a hard cap on stored tokens, memory
// grows as n^c (fitted exponent), heavy hitters (planted needles) survive
// when the serving path attends, and state round-trips exactly.
#include "core/evict/evict.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/registry.h"
#include "core/synthetic/synthetic.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/testing/reference_attention.h"

namespace kvsketch {
namespace {

using ::kvsketch::testing::MaxAbsDiff;
using ::kvsketch::testing::RandomNormal;
using ::kvsketch::testing::ReferenceAttention;
using ::testing::HasSubstr;

std::unique_ptr<EvictApproximator> MakeEvict(const std::string& spec,
                                             const HeadShape& shape) {
  auto a = CreateApproximator(spec, shape);
  EXPECT_TRUE(a.ok()) << a.status();
  if (!a.ok()) return nullptr;
  auto* raw = dynamic_cast<EvictApproximator*>(a->get());
  EXPECT_NE(raw, nullptr);
  a->release();
  return std::unique_ptr<EvictApproximator>(raw);
}

// Decode-style replay of a causal trace: append token t, attend query t.
void Decode(EvictApproximator& a, const SyntheticData& s, int64_t upto) {
  std::vector<float> out(s.dv);
  for (int64_t t = a.num_tokens(); t < upto; ++t) {
    ASSERT_TRUE(a.Append({s.keys.data() + t * s.d, 1, s.d},
                         {s.values.data() + t * s.dv, 1, s.dv})
                    .ok());
    ASSERT_TRUE(
        a.Attend({s.queries.data() + t * s.d, 1, s.d}, {out.data(), 1, s.dv})
            .ok());
  }
}

TEST(EvictSpecTest, CanonicalFormAndBudgetCheck) {
  auto c = CanonicalizeSpec("evict");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, "evict:alpha=1,c=0.5,budget=0,sinks=4,window=64,decay=1");
  auto bad = CreateApproximator("evict:budget=60", {8, 8, 0.3f});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("budget (60)"));
}

TEST(EvictTest, NeverHoldsMoreThanTheBudget) {
  const int d = 8, dv = 4;
  const auto k = RandomNormal(1, 5000 * d), v = RandomNormal(2, 5000 * dv);
  for (const std::string spec :
       {"evict:alpha=2,c=0.5,sinks=2,window=16",
        "evict:budget=100,sinks=4,window=8",
        "evict:alpha=1,c=0.4,sinks=0,window=0,decay=0.9"}) {
    auto a = MakeEvict(spec, {d, dv, 0.3f});
    std::vector<float> out(dv);
    for (int64_t t = 0; t < 5000; ++t) {
      ASSERT_TRUE(
          a->Append({k.data() + t * d, 1, d}, {v.data() + t * dv, 1, dv}).ok());
      if (t % 3 == 0) {
        ASSERT_TRUE(a->Attend({k.data() + ((t * 7) % 5000) * d, 1, d},
                              {out.data(), 1, dv})
                        .ok());
      }
    }
    const auto pos = a->StoredPositions();
    EXPECT_EQ(static_cast<int64_t>(pos.size()), a->num_stored());
    // Sinks and window are always held.
    const bool fixed = spec.find("budget=100") != std::string::npos;
    EXPECT_LE(a->num_stored(), fixed ? 100 : 5000);
    for (int64_t p : pos) EXPECT_LT(p, 5000);
    EXPECT_EQ(pos.back(), 4999);
  }
  // The exact cap: b(n) = ceil(2·√n) + 2 + 16 at every n.
  auto a = MakeEvict("evict:alpha=2,c=0.5,sinks=2,window=16", {d, dv, 0.3f});
  for (int64_t t = 0; t < 3000; ++t) {
    ASSERT_TRUE(
        a->Append({k.data() + t * d, 1, d}, {v.data() + t * dv, 1, dv}).ok());
    const int64_t n = t + 1;
    const int64_t b =
        static_cast<int64_t>(std::ceil(2 * std::sqrt(double(n)))) + 18;
    ASSERT_EQ(a->num_stored(), std::min(n, b)) << n;
  }
  const auto pos = a->StoredPositions();
  EXPECT_EQ(pos[0], 0);
  EXPECT_EQ(pos[1], 1);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(pos[pos.size() - 16 + i], 2984 + i);
}

TEST(EvictTest, MemoryGrowsAsNToTheC) {
  const int d = 16, dv = 16;
  for (double c : {0.3, 0.5, 0.7}) {
    auto a = MakeEvict("evict:alpha=4,sinks=0,window=0,c=" + std::to_string(c),
                       {d, dv, 0.25f});
    const auto k = RandomNormal(3, 4096 * d), v = RandomNormal(4, 4096 * dv);
    std::vector<double> xs, ys;
    for (int64_t n = 4096; n <= 262144; n += 4096) {
      ASSERT_TRUE(a->Append({k.data(), 4096, d}, {v.data(), 4096, dv}).ok());
      if ((n & (n - 1)) == 0) {  // powers of two: 4K .. 256K
        xs.push_back(std::log(double(n)));
        ys.push_back(std::log(double(a->MemoryBytes())));
      }
    }
    double mx = 0, my = 0;
    for (size_t i = 0; i < xs.size(); ++i) {
      mx += xs[i] / xs.size();
      my += ys[i] / ys.size();
    }
    double sxy = 0, sxx = 0;
    for (size_t i = 0; i < xs.size(); ++i) {
      sxy += (xs[i] - mx) * (ys[i] - my);
      sxx += (xs[i] - mx) * (xs[i] - mx);
    }
    EXPECT_NEAR(sxy / sxx, c, 0.08) << "c=" << c;
  }
}

TEST(EvictTest, HeavyHittersSurviveWhenTheServerAttends) {
  const int d = 32, dv = 8;
  const int64_t n = 16384;
  const auto s = PlantedStructure(n, d, dv, PlantedOptions{}, 5);
  ASSERT_EQ(s.planted.size(), 8u);
  auto attended = MakeEvict("evict", {d, dv, s.scale});
  Decode(*attended, s, n);
  const auto pos = attended->StoredPositions();
  for (int64_t p : s.planted) {
    EXPECT_TRUE(std::binary_search(pos.begin(), pos.end(), p))
        << "needle " << p;
  }
  // Control: appends only (no attention seen) evict oldest-first, so the
  // needles from the first half are gone.
  auto blind = MakeEvict("evict", {d, dv, s.scale});
  ASSERT_TRUE(
      blind->Append({s.keys.data(), n, d}, {s.values.data(), n, dv}).ok());
  const auto bpos = blind->StoredPositions();
  for (int64_t p : s.planted) {
    EXPECT_FALSE(std::binary_search(bpos.begin(), bpos.end(), p));
  }
}

TEST(EvictTest, ErrorFallsAsTheBudgetGrows) {
  const int d = 32, dv = 8;
  const int64_t n = 8192;
  PlantedOptions opt;
  const auto s = PlantedStructure(n, d, dv, opt, 9);
  const int64_t m = 16;
  const std::vector<float> q(s.queries.end() - m * d, s.queries.end());
  const auto ref =
      ReferenceAttention(q, m, s.keys, s.values, n, d, dv, s.scale);
  double last = 1e9;
  for (double alpha : {0.25, 2.0, 16.0}) {
    auto a =
        MakeEvict("evict:alpha=" + std::to_string(alpha), {d, dv, s.scale});
    Decode(*a, s, n - m);
    ASSERT_TRUE(a->Append({s.keys.data() + (n - m) * d, m, d},
                          {s.values.data() + (n - m) * dv, m, dv})
                    .ok());
    std::vector<float> out(m * dv);
    ASSERT_TRUE(a->Query({q.data(), m, d}, {out.data(), m, dv}).ok());
    const double err = MaxAbsDiff(out, ref);
    EXPECT_LT(err, last) << "alpha " << alpha;
    last = err;
  }
}

TEST(EvictTest, DecayDecidesBetweenOldAndRecentMass) {
  // Three slots, no sinks or window. Query A puts all its mass on token 0,
  // then query B splits 0.73 / 0.27 between tokens 1 and 2. A plain sum
  // (decay 1) keeps token 0 and evicts token 2; with decay 0 only B counts
  // and token 0 (mass ~e^-10) goes.
  const float keys[] = {10, 0, 0, 10, 0, 9, 1, 1};
  const float values[] = {1, 2, 3, 4};
  const float qa[] = {2, 0}, qb[] = {0, 1};
  for (const auto& [decay, evicted] :
       std::vector<std::pair<std::string, int64_t>>{{"1", 2}, {"0", 0}}) {
    auto a = MakeEvict("evict:budget=3,sinks=0,window=0,decay=" + decay,
                       {2, 1, 1.0f});
    ASSERT_TRUE(a->Append({keys, 3, 2}, {values, 3, 1}).ok());
    float out = 0;
    ASSERT_TRUE(a->Attend({qa, 1, 2}, {&out, 1, 1}).ok());
    ASSERT_TRUE(a->Attend({qb, 1, 2}, {&out, 1, 1}).ok());
    ASSERT_TRUE(a->Append({keys + 6, 1, 2}, {values + 3, 1, 1}).ok());
    std::vector<int64_t> want = {0, 1, 2, 3};
    want.erase(want.begin() + evicted);
    EXPECT_EQ(a->StoredPositions(), want) << "decay " << decay;
  }
}

TEST(EvictTest, SnapshotRoundTripContinuesIdentically) {
  const int d = 16, dv = 8;
  const int64_t n = 3000;
  const auto s = PlantedStructure(n, d, dv, PlantedOptions{}, 21);
  const std::string spec = "evict:alpha=2,decay=0.99,sinks=2,window=8";
  auto a = MakeEvict(spec, {d, dv, s.scale});
  Decode(*a, s, 1500);
  ByteWriter w;
  ASSERT_TRUE(a->SaveState(w).ok());
  auto b = MakeEvict(spec, {d, dv, s.scale});
  ByteReader r(w.data());
  ASSERT_TRUE(b->LoadState(r).ok());
  EXPECT_EQ(r.remaining(), 0u);
  EXPECT_EQ(b->MemoryBytes(), a->MemoryBytes());
  ByteWriter w2;
  ASSERT_TRUE(b->SaveState(w2).ok());
  EXPECT_EQ(w2.data(), w.data());
  Decode(*a, s, n);
  Decode(*b, s, n);
  EXPECT_EQ(a->StoredPositions(), b->StoredPositions());
  ByteWriter wa, wb;
  ASSERT_TRUE(a->SaveState(wa).ok());
  ASSERT_TRUE(b->SaveState(wb).ok());
  EXPECT_EQ(wa.data(), wb.data());
  // Corrupt: a duplicated position is DataLoss, and b is unchanged.
  std::string bad = w.data();
  const size_t first_pos = 1 + 8 + 8;
  std::copy_n(bad.data() + first_pos + 16, 8, bad.data() + first_pos);
  ByteReader rb(bad);
  const absl::Status st = b->LoadState(rb);
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  ByteWriter w3;
  ASSERT_TRUE(b->SaveState(w3).ok());
  EXPECT_EQ(w3.data(), wb.data());
}

// Regression (found by tests/fuzz/snapshot_fuzzer.cc): a stored NaN key
// loaded, made every mass NaN at the next Attend, and the state could then
// be exported but not imported again. Non-finite keys and values, and
// masses outside [0, 2^53] (which Attend cannot produce), are DataLoss.
TEST(EvictTest, ImpossibleMassOrKeyIsDataLoss) {
  const int d = 4, dv = 4;
  const auto s = PlantedStructure(64, d, dv, PlantedOptions{}, 5);
  const std::string spec = "evict:alpha=1,c=0.5,sinks=1,window=2";
  auto a = MakeEvict(spec, {d, dv, s.scale});
  Decode(*a, s, 64);
  ByteWriter w;
  ASSERT_TRUE(a->SaveState(w).ok());
  const size_t first_mass = 1 + 8 + 8 + 8;  // version, n, stored, pos[0]
  for (double mass : {1e308, -1.0, 0x1p54}) {
    SCOPED_TRACE(mass);
    std::string bad = w.data();
    std::memcpy(bad.data() + first_mass, &mass, sizeof(mass));
    auto b = MakeEvict(spec, {d, dv, s.scale});
    ByteReader r(bad);
    EXPECT_EQ(b->LoadState(r).code(), absl::StatusCode::kDataLoss);
    EXPECT_EQ(b->num_tokens(), 0);
  }
  int64_t stored = 0;
  std::memcpy(&stored, w.data().data() + 1 + 8, sizeof(stored));
  const size_t first_key = 1 + 8 + 8 + static_cast<size_t>(stored) * 16;
  for (float key : {std::nanf(""), INFINITY}) {
    SCOPED_TRACE(key);
    std::string bad = w.data();
    std::memcpy(bad.data() + first_key, &key, sizeof(key));
    auto b = MakeEvict(spec, {d, dv, s.scale});
    ByteReader r(bad);
    EXPECT_EQ(b->LoadState(r).code(), absl::StatusCode::kDataLoss);
  }
  // The real state still loads, attends and re-exports.
  auto c = MakeEvict(spec, {d, dv, s.scale});
  ByteReader r(w.data());
  ASSERT_TRUE(c->LoadState(r).ok());
  std::vector<float> out(dv);
  ASSERT_TRUE(c->Attend({s.queries.data(), 1, d}, {out.data(), 1, dv}).ok());
  ByteWriter w2;
  ASSERT_TRUE(c->SaveState(w2).ok());
  auto e = MakeEvict(spec, {d, dv, s.scale});
  ByteReader r2(w2.data());
  EXPECT_TRUE(e->LoadState(r2).ok());
}

}  // namespace
}  // namespace kvsketch
