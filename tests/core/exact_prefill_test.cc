// File: tests/core/exact_prefill_test.cc
//
// The blocked causal prefill of `exact` (core/exact/exact_prefill.h) against
// the double-precision reference: odd T (1, 3, 257, 1000) around the query
// and key block sizes, with and without a cached prefix, across storage chunk
// boundaries (chunks end at 2048 and 4096 tokens), d != dv, GQA groups of 1,
// 2 and 4, and every store type with the tolerance the conformance suite
// uses. Also: large logits, equality with the row-by-row default path and
// the row-tile kernel, thread-count invariance, and argument errors.
#include "core/exact/exact_prefill.h"

#include <cmath>
#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/approximator.h"
#include "core/exact/exact_kernels.h"
#include "core/registry.h"
#include "core/util/half.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/testing/reference_attention.h"

namespace kvsketch {
namespace {

using ::kvsketch::testing::AttentionTolerance;
using ::kvsketch::testing::kBf16Unit;
using ::kvsketch::testing::kF16Unit;
using ::kvsketch::testing::kF32Unit;
using ::kvsketch::testing::MaxAbsDiff;
using ::kvsketch::testing::RandomNormal;
using ::kvsketch::testing::ReferenceCausalAttention;
using ::testing::HasSubstr;

double StoreUnit(const std::string& store) {
  if (store == "f16") return kF16Unit;
  if (store == "bf16") return kBf16Unit;
  return kF32Unit;
}

std::unique_ptr<Approximator> MakeExact(const std::string& store, int d, int dv,
                                        float scale) {
  auto a = CreateApproximator(absl::StrCat("exact:store=", store),
                              HeadShape{d, dv, scale});
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? *std::move(a) : nullptr;
}

// Rows [h·t, (h+1)·t) of an [g][t] matrix of width w.
std::vector<float> HeadRows(const std::vector<float>& x, int h, int64_t t,
                            int w) {
  return std::vector<float>(x.begin() + h * t * w, x.begin() + (h + 1) * t * w);
}

struct Case {
  std::string store;
  int64_t n_prev;
  int64_t t;
  int group;
  int d;
  int dv;
};

std::string CaseString(const Case& c) {
  return absl::StrCat(c.store, "_prev", c.n_prev, "_T", c.t, "_g", c.group,
                      "_d", c.d, "_dv", c.dv);
}

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return CaseString(info.param);
}

// gtest prints a failing case with this instead of its bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << CaseString(c); }

class ExactPrefillTest : public ::testing::TestWithParam<Case> {};

// Appends the prefix in uneven pieces (so it is not one Append's layout),
// prefills T tokens, and checks every head against the double reference.
TEST_P(ExactPrefillTest, MatchesCausalReference) {
  const Case& c = GetParam();
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.d));
  const int64_t n = c.n_prev + c.t;
  const auto k = RandomNormal(100 + n, n * c.d);
  const auto v = RandomNormal(200 + n, n * c.dv);
  const auto q = RandomNormal(300 + c.t, c.group * c.t * c.d);
  auto a = MakeExact(c.store, c.d, c.dv, scale);
  ASSERT_NE(a, nullptr);
  for (int64_t done = 0; done < c.n_prev;) {
    const int64_t take = std::min<int64_t>(c.n_prev - done, 700);
    ASSERT_TRUE(a->Append({k.data() + done * c.d, take, c.d},
                          {v.data() + done * c.dv, take, c.dv})
                    .ok());
    done += take;
  }
  std::vector<float> out(c.group * c.t * c.dv, -7.0f);
  ASSERT_TRUE(a->Prefill({q.data(), c.group * c.t, c.d}, c.group,
                         {k.data() + c.n_prev * c.d, c.t, c.d},
                         {v.data() + c.n_prev * c.dv, c.t, c.dv},
                         {out.data(), c.group * c.t, c.dv})
                  .ok());
  EXPECT_EQ(a->num_tokens(), n);
  for (int h = 0; h < c.group; ++h) {
    const auto qh = HeadRows(q, h, c.t, c.d);
    const auto ref =
        ReferenceCausalAttention(qh, c.t, k, v, n, c.d, c.dv, scale);
    const double tol = AttentionTolerance(qh, c.t, k, v, n, c.d, c.dv, scale,
                                          StoreUnit(c.store));
    EXPECT_LE(MaxAbsDiff(HeadRows(out, h, c.t, c.dv), ref), tol)
        << "head " << h;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Sizes, ExactPrefillTest,
    ::testing::Values(
        // No prefix: T below, at and above the query/key block sizes.
        Case{"f32", 0, 1, 1, 40, 24}, Case{"f32", 0, 3, 1, 40, 24},
        Case{"f32", 0, 257, 1, 40, 24}, Case{"f32", 0, 1000, 1, 40, 24},
        // A prefix; the new tokens cross the 2048 / 4096 chunk ends.
        Case{"f32", 2047, 1, 1, 40, 24}, Case{"f32", 2046, 3, 1, 40, 24},
        Case{"f32", 2030, 257, 1, 40, 24}, Case{"f32", 3500, 1000, 1, 40, 24},
        // GQA groups (stacked heads, 32 positions per block at g = 4).
        Case{"f32", 0, 3, 4, 40, 24}, Case{"f32", 2030, 257, 4, 40, 24},
        Case{"f32", 100, 1000, 4, 24, 40}, Case{"f32", 500, 300, 2, 128, 64},
        // Half-precision stores (widened per key block).
        Case{"f16", 2030, 257, 4, 40, 24}, Case{"f16", 3500, 1000, 1, 40, 24},
        Case{"f16", 0, 3, 1, 40, 24}, Case{"bf16", 2030, 257, 4, 40, 24},
        Case{"bf16", 3500, 1000, 1, 40, 24}, Case{"bf16", 0, 1, 1, 40, 24}),
    CaseName);

// Scores up to about ±100: a float softmax without the max shift overflows
// (exp(89) > FLT_MAX) or underflows to 0/0; the online max must keep every
// output finite and accurate. Keys grow along the sequence so the running max
// changes many times across key blocks (the rescaling path).
TEST(ExactPrefillStabilityTest, LargeLogits) {
  const int d = 32, dv = 16, g = 2;
  const int64_t n_prev = 300, t = 700, n = n_prev + t;
  const float scale = 3.0f;
  auto k = RandomNormal(1, n * d);
  for (int64_t j = 0; j < n; ++j) {
    const float grow = 0.4f + 1.2f * static_cast<float>(j) / n;
    for (int i = 0; i < d; ++i) k[j * d + i] *= grow;
  }
  const auto v = RandomNormal(2, n * dv);
  const auto q = RandomNormal(3, g * t * d);
  for (const std::string store : {"f32", "f16", "bf16"}) {
    auto a = MakeExact(store, d, dv, scale);
    ASSERT_TRUE(a->Append({k.data(), n_prev, d}, {v.data(), n_prev, dv}).ok());
    std::vector<float> out(g * t * dv);
    ASSERT_TRUE(
        a->Prefill({q.data(), g * t, d}, g, {k.data() + n_prev * d, t, d},
                   {v.data() + n_prev * dv, t, dv}, {out.data(), g * t, dv})
            .ok());
    double max_score = 0;
    for (int h = 0; h < g; ++h) {
      const auto qh = HeadRows(q, h, t, d);
      for (int64_t r = 0; r < t; r += 7) {
        for (int64_t j = 0; j <= n_prev + r; ++j) {
          double s = 0;
          for (int i = 0; i < d; ++i) s += qh[r * d + i] * k[j * d + i];
          max_score = std::max(max_score, std::abs(scale * s));
        }
      }
      const auto ref = ReferenceCausalAttention(qh, t, k, v, n, d, dv, scale);
      const auto got = HeadRows(out, h, t, dv);
      for (float x : got) ASSERT_TRUE(std::isfinite(x)) << store;
      EXPECT_LE(
          MaxAbsDiff(got, ref),
          AttentionTolerance(qh, t, k, v, n, d, dv, scale, StoreUnit(store)))
          << store << " head " << h;
    }
    // The data really exercises the overflow regime.
    EXPECT_GT(max_score, 89.0) << store;
  }
}

// The bulk path against the row-by-row default of Approximator::Prefill
// (append one token, attend its g rows) and against the row-tile kernel the
// old Prefill used, on the same stored state.
TEST(ExactPrefillDefaultPathTest, EqualsRowByRowAndTileKernel) {
  const int d = 48, dv = 40, g = 3;
  const float scale = 0.15f;
  const int64_t n_prev = 1900, t = 300, n = n_prev + t;
  const auto k = RandomNormal(11, n * d);
  const auto v = RandomNormal(12, n * dv);
  const auto q = RandomNormal(13, g * t * d);
  for (const std::string store : {"f32", "f16", "bf16"}) {
    auto bulk = MakeExact(store, d, dv, scale);
    auto rows = MakeExact(store, d, dv, scale);
    for (auto* a : {bulk.get(), rows.get()}) {
      ASSERT_TRUE(
          a->Append({k.data(), n_prev, d}, {v.data(), n_prev, dv}).ok());
    }
    std::vector<float> got(g * t * dv), want(g * t * dv);
    ASSERT_TRUE(
        bulk->Prefill({q.data(), g * t, d}, g, {k.data() + n_prev * d, t, d},
                      {v.data() + n_prev * dv, t, dv}, {got.data(), g * t, dv})
            .ok());
    // Qualified call: the base class's row-by-row default, not the override.
    ASSERT_TRUE(rows->Approximator::Prefill({q.data(), g * t, d}, g,
                                            {k.data() + n_prev * d, t, d},
                                            {v.data() + n_prev * dv, t, dv},
                                            {want.data(), g * t, dv})
                    .ok());
    EXPECT_EQ(rows->num_tokens(), bulk->num_tokens());
    double tol = 0;
    for (int h = 0; h < g; ++h) {
      tol = std::max(tol, AttentionTolerance(HeadRows(q, h, t, d), t, k, v, n,
                                             d, dv, scale, StoreUnit(store)));
    }
    const std::vector<double> want_d(want.begin(), want.end());
    EXPECT_LE(MaxAbsDiff(got, want_d), 2 * tol) << store;
    EXPECT_GT(MaxAbsDiff(got, std::vector<double>(want.size(), 0.0)), 0.1);

    // The row-tile kernel on the whole cache, with the causal limits.
    std::vector<float> k_all(k), v_all(v);
    std::vector<uint16_t> k16(k.size()), v16(v.size());
    KvBlock block{k_all.data(), v_all.data(), n};
    StoreType st = StoreType::kF32;
    if (store != "f32") {
      st = store == "f16" ? StoreType::kF16 : StoreType::kBf16;
      for (size_t i = 0; i < k.size(); ++i) {
        k16[i] = st == StoreType::kF16 ? FloatToHalf(k[i]) : FloatToBf16(k[i]);
      }
      for (size_t i = 0; i < v.size(); ++i) {
        v16[i] = st == StoreType::kF16 ? FloatToHalf(v[i]) : FloatToBf16(v[i]);
      }
      block = {k16.data(), v16.data(), n};
    }
    std::vector<int64_t> limits(g * t);
    for (int h = 0; h < g; ++h) {
      for (int64_t i = 0; i < t; ++i) limits[h * t + i] = n_prev + i + 1;
    }
    std::vector<float> tile(g * t * dv);
    ExactCausalAttention(st, q.data(), g * t, d, dv, scale, {&block, 1},
                         limits.data(), tile.data());
    const std::vector<double> tile_d(tile.begin(), tile.end());
    EXPECT_LE(MaxAbsDiff(got, tile_d), 2 * tol) << store;
  }
}

// Splitting query blocks over threads changes nothing (each block is
// computed by the same code on the same data), and key spans follow the
// given blocks of uneven sizes.
TEST(ExactPrefillKernelTest, ThreadsGiveIdenticalResults) {
  const int d = 64, dv = 32, g = 2;
  const int64_t n_prev = 437, t = 901, n = n_prev + t;
  const auto k = RandomNormal(21, n * d);
  const auto v = RandomNormal(22, n * dv);
  const auto q = RandomNormal(23, g * t * d);
  // Blocks of 100, 37, 700 and the rest: spans end where the blocks do.
  const std::vector<int64_t> cuts = {0, 100, 137, 837, n};
  std::vector<KvBlock> blocks;
  for (size_t i = 0; i + 1 < cuts.size(); ++i) {
    blocks.push_back({k.data() + cuts[i] * d, v.data() + cuts[i] * dv,
                      cuts[i + 1] - cuts[i]});
  }
  const float scale = 0.125f;
  std::vector<float> one(g * t * dv), two(g * t * dv), three(g * t * dv);
  ExactPrefillAttention(StoreType::kF32, q.data(), g, t, n_prev, d, dv, scale,
                        blocks, one.data(), 1);
  ExactPrefillAttention(StoreType::kF32, q.data(), g, t, n_prev, d, dv, scale,
                        blocks, two.data(), 2);
  ExactPrefillAttention(StoreType::kF32, q.data(), g, t, n_prev, d, dv, scale,
                        blocks, three.data(), 3);
  EXPECT_EQ(one, two);
  EXPECT_EQ(one, three);
  for (int h = 0; h < g; ++h) {
    const auto qh = HeadRows(q, h, t, d);
    const auto ref = ReferenceCausalAttention(qh, t, k, v, n, d, dv, scale);
    EXPECT_LE(MaxAbsDiff(HeadRows(one, h, t, dv), ref),
              AttentionTolerance(qh, t, k, v, n, d, dv, scale, kF32Unit));
  }
}

// Two prefills in a row: the second one's prefix is the first one's tokens.
TEST(ExactPrefillApiTest, ConsecutivePrefills) {
  const int d = 24, dv = 24;
  const float scale = 0.3f;
  const int64_t t1 = 130, t2 = 270, n = t1 + t2;
  const auto k = RandomNormal(31, n * d);
  const auto v = RandomNormal(32, n * dv);
  const auto q = RandomNormal(33, n * d);
  auto a = MakeExact("f32", d, dv, scale);
  std::vector<float> out(n * dv);
  ASSERT_TRUE(a->Prefill({q.data(), t1, d}, 1, {k.data(), t1, d},
                         {v.data(), t1, dv}, {out.data(), t1, dv})
                  .ok());
  ASSERT_TRUE(
      a->Prefill({q.data() + t1 * d, t2, d}, 1, {k.data() + t1 * d, t2, d},
                 {v.data() + t1 * dv, t2, dv}, {out.data() + t1 * dv, t2, dv})
          .ok());
  const auto ref = ReferenceCausalAttention(q, n, k, v, n, d, dv, scale);
  EXPECT_LE(MaxAbsDiff(out, ref),
            AttentionTolerance(q, n, k, v, n, d, dv, scale, kF32Unit));
}

TEST(ExactPrefillApiTest, EmptyPrefillIsANoOp) {
  auto a = MakeExact("f16", 8, 8, 0.5f);
  const auto k = RandomNormal(41, 5 * 8);
  ASSERT_TRUE(a->Append({k.data(), 5, 8}, {k.data(), 5, 8}).ok());
  const int64_t bytes = a->MemoryBytes();
  ASSERT_TRUE(a->Prefill({nullptr, 0, 8}, 2, {nullptr, 0, 8}, {nullptr, 0, 8},
                         {nullptr, 0, 8})
                  .ok());
  EXPECT_EQ(a->num_tokens(), 5);
  EXPECT_EQ(a->MemoryBytes(), bytes);
}

TEST(ExactPrefillApiTest, BadArgumentsNameTheArgumentAndChangeNothing) {
  const int d = 8, dv = 6;
  auto a = MakeExact("f32", d, dv, 0.5f);
  const auto k = RandomNormal(51, 10 * d), v = RandomNormal(52, 10 * dv);
  const auto q = RandomNormal(53, 20 * d);
  ASSERT_TRUE(a->Append({k.data(), 4, d}, {v.data(), 4, dv}).ok());
  const int64_t bytes = a->MemoryBytes();
  std::vector<float> out(20 * dv, 5.0f);
  // group < 1
  absl::Status s = a->Prefill({q.data(), 3, d}, 0, {k.data(), 3, d},
                              {v.data(), 3, dv}, {out.data(), 3, dv});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("group"));
  // queries rows != group·T
  s = a->Prefill({q.data(), 5, d}, 2, {k.data(), 3, d}, {v.data(), 3, dv},
                 {out.data(), 6, dv});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("queries"));
  // out width != dv
  s = a->Prefill({q.data(), 3, d}, 1, {k.data(), 3, d}, {v.data(), 3, dv},
                 {out.data(), 3, dv + 1});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("out"));
  // keys and values of different lengths
  s = a->Prefill({q.data(), 3, d}, 1, {k.data(), 3, d}, {v.data(), 2, dv},
                 {out.data(), 3, dv});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a->num_tokens(), 4);
  EXPECT_EQ(a->MemoryBytes(), bytes);
  EXPECT_EQ(out, std::vector<float>(20 * dv, 5.0f));
}

}  // namespace
}  // namespace kvsketch
