// File: tests/core/exact_test.cc
//
// The `exact` approximator against the double-precision reference, for
// every store type, across chunk (16..2048 tokens) and kernel block (64 keys)
// boundaries, with GQA tiles of 1..4 query rows and their remainders.
#include "core/exact/exact.h"

#include <cmath>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
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
using ::kvsketch::testing::MaxAbs;
using ::kvsketch::testing::MaxAbsDiff;
using ::kvsketch::testing::RandomNormal;
using ::kvsketch::testing::ReferenceAttention;
using ::testing::HasSubstr;

double StoreUnit(const std::string& store) {
  if (store == "f16") return kF16Unit;
  if (store == "bf16") return kBf16Unit;
  return kF32Unit;
}

// What the store keeps of x.
std::vector<float> RoundToStore(const std::vector<float>& x,
                                const std::string& store) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    if (store == "f16") {
      out[i] = HalfToFloat(FloatToHalf(x[i]));
    } else if (store == "bf16") {
      out[i] = Bf16ToFloat(FloatToBf16(x[i]));
    } else {
      out[i] = x[i];
    }
  }
  return out;
}

std::unique_ptr<Approximator> MakeExact(const std::string& store, int d, int dv,
                                        float scale) {
  auto a = CreateApproximator(absl::StrCat("exact:store=", store),
                              HeadShape{d, dv, scale});
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? *std::move(a) : nullptr;
}

struct Case {
  std::string store;
  int64_t n;
  int d;
  int dv;
};

class ExactVsReferenceTest : public ::testing::TestWithParam<Case> {};

TEST_P(ExactVsReferenceTest, MatchesDoubleReference) {
  const Case& c = GetParam();
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.d));
  const std::vector<float> k = RandomNormal(1 + c.n, c.n * c.d);
  const std::vector<float> v = RandomNormal(2 + c.n, c.n * c.dv);
  auto a = MakeExact(c.store, c.d, c.dv, scale);
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(a->Append({k.data(), c.n, c.d}, {v.data(), c.n, c.dv}).ok());
  ASSERT_EQ(a->num_tokens(), c.n);
  for (int64_t m : {1, 2, 3, 4, 7}) {
    const std::vector<float> q = RandomNormal(3 + m, m * c.d);
    std::vector<float> out(m * c.dv, -1.0f);
    ASSERT_TRUE(a->Query({q.data(), m, c.d}, {out.data(), m, c.dv}).ok());

    // Against the exact inputs: storage rounding plus kernel error.
    const auto ref = ReferenceAttention(q, m, k, v, c.n, c.d, c.dv, scale);
    const double tol = AttentionTolerance(q, m, k, v, c.n, c.d, c.dv, scale,
                                          StoreUnit(c.store));
    EXPECT_LE(MaxAbsDiff(out, ref), tol) << "m=" << m;

    // Against the rounded inputs: the kernel error alone.
    const std::vector<float> kr = RoundToStore(k, c.store);
    const std::vector<float> vr = RoundToStore(v, c.store);
    const auto ref_r = ReferenceAttention(q, m, kr, vr, c.n, c.d, c.dv, scale);
    const double tol_r =
        AttentionTolerance(q, m, kr, vr, c.n, c.d, c.dv, scale, 0.0);
    EXPECT_LE(MaxAbsDiff(out, ref_r), tol_r) << "m=" << m;
  }
}

std::vector<Case> AllCases() {
  std::vector<Case> cases;
  for (const char* store : {"f32", "f16", "bf16"}) {
    for (int64_t n : {1, 2, 7, 1000, 5000}) {
      for (auto [d, dv] : {std::pair{1, 3}, {8, 8}, {64, 40}, {128, 128}}) {
        cases.push_back({store, n, d, dv});
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(AllStores, ExactVsReferenceTest,
                         ::testing::ValuesIn(AllCases()),
                         [](const ::testing::TestParamInfo<Case>& case_info) {
                           return absl::StrCat(case_info.param.store, "_n",
                                               case_info.param.n, "_d",
                                               case_info.param.d, "_dv",
                                               case_info.param.dv);
                         });

// The tolerance of the f32 path on ordinary data is about 1e-5 of max|V|:
// pin that the derived bound is not vacuous.
TEST(ExactTest, F32ToleranceIsTightOnOrdinaryData) {
  const int d = 128, n = 1000, m = 4;
  const float scale = 1.0f / std::sqrt(128.0f);
  const auto k = RandomNormal(11, n * d), v = RandomNormal(12, n * d);
  const auto q = RandomNormal(13, m * d);
  const double tol = AttentionTolerance(q, m, k, v, n, d, d, scale, kF32Unit);
  EXPECT_LT(tol, 1e-4 * MaxAbs(v));  // relative to max|V|
  auto a = MakeExact("f32", d, d, scale);
  ASSERT_TRUE(a->Append({k.data(), n, d}, {v.data(), n, d}).ok());
  std::vector<float> out(m * d);
  ASSERT_TRUE(a->Query({q.data(), m, d}, {out.data(), m, d}).ok());
  const auto ref = ReferenceAttention(q, m, k, v, n, d, d, scale);
  // Observed error of the float kernel is far below the bound.
  EXPECT_LT(MaxAbsDiff(out, ref), 1e-5);
}

// Scores of ±80 and far beyond must neither overflow nor produce NaN.
TEST(ExactTest, PeakedSoftmaxIsStable) {
  const int d = 64, n = 3000, m = 3;
  for (const char* store : {"f32", "f16", "bf16"}) {
    for (double magnitude : {80.0, 500.0, 5000.0}) {
      // Unit-norm random directions, scaled so |score| reaches magnitude.
      auto k = RandomNormal(21, n * d), v = RandomNormal(22, n * d);
      auto q = RandomNormal(23, m * d);
      const double norm = std::sqrt(static_cast<double>(d));
      for (float& x : k)
        x = static_cast<float>(x / norm * std::sqrt(magnitude) * 2);
      for (float& x : q)
        x = static_cast<float>(x / norm * std::sqrt(magnitude) * 2);
      const float scale = 1.0f;
      auto a = MakeExact(store, d, d, scale);
      ASSERT_TRUE(a->Append({k.data(), n, d}, {v.data(), n, d}).ok());
      std::vector<float> out(m * d);
      ASSERT_TRUE(a->Query({q.data(), m, d}, {out.data(), m, d}).ok());
      for (float x : out) ASSERT_TRUE(std::isfinite(x)) << store << magnitude;
      const auto kr = RoundToStore(k, store), vr = RoundToStore(v, store);
      const auto ref = ReferenceAttention(q, m, kr, vr, n, d, d, scale);
      const double tol = AttentionTolerance(q, m, kr, vr, n, d, d, scale, 0.0);
      EXPECT_LE(MaxAbsDiff(out, ref), tol) << store << " " << magnitude;
    }
  }
}

// One key dominates by a margin of 1000 in score: the output is its value.
TEST(ExactTest, DominantKeySelectsItsValue) {
  const int d = 8, dv = 5, n = 4100;
  std::vector<float> k(n * d, 0.0f), v = RandomNormal(31, n * dv);
  const int64_t hot = 2049;  // in the second full-size chunk
  for (int i = 0; i < d; ++i) k[hot * d + i] = 100.0f;
  std::vector<float> q(d, 10.0f);  // score 1000·8·scale at hot, 0 elsewhere
  auto a = MakeExact("f32", d, dv, 0.125f);
  ASSERT_TRUE(a->Append({k.data(), n, d}, {v.data(), n, dv}).ok());
  std::vector<float> out(dv);
  ASSERT_TRUE(a->Query({q.data(), 1, d}, {out.data(), 1, dv}).ok());
  for (int c = 0; c < dv; ++c) EXPECT_EQ(out[c], v[hot * dv + c]);
}

TEST(ExactTest, AllEqualKeysAverageTheValues) {
  const int d = 16, dv = 16, n = 5000;
  std::vector<float> row = RandomNormal(41, d);
  std::vector<float> k(n * d);
  for (int j = 0; j < n; ++j)
    std::copy(row.begin(), row.end(), k.begin() + j * d);
  const auto v = RandomNormal(42, n * dv);
  std::vector<double> mean(dv, 0.0);
  for (int j = 0; j < n; ++j) {
    for (int c = 0; c < dv; ++c) mean[c] += v[j * dv + c] / double{n};
  }
  auto a = MakeExact("f32", d, dv, 0.25f);
  ASSERT_TRUE(a->Append({k.data(), n, d}, {v.data(), n, dv}).ok());
  const auto q = RandomNormal(43, d);
  std::vector<float> out(dv);
  ASSERT_TRUE(a->Query({q.data(), 1, d}, {out.data(), 1, dv}).ok());
  EXPECT_LE(MaxAbsDiff(out, mean), 1e-6);
}

TEST(ExactTest, ChunkedAppendGivesBitIdenticalOutput) {
  const int d = 32, dv = 24, n = 4500;
  const auto k = RandomNormal(51, n * d), v = RandomNormal(52, n * dv);
  const auto q = RandomNormal(53, 5 * d);
  for (const char* store : {"f32", "f16", "bf16"}) {
    auto whole = MakeExact(store, d, dv, 0.2f);
    auto pieces = MakeExact(store, d, dv, 0.2f);
    ASSERT_TRUE(whole->Append({k.data(), n, d}, {v.data(), n, dv}).ok());
    int64_t done = 0, step = 1;
    while (done < n) {
      const int64_t t = std::min<int64_t>(step, n - done);
      ASSERT_TRUE(pieces
                      ->Append({k.data() + done * d, t, d},
                               {v.data() + done * dv, t, dv})
                      .ok());
      done += t;
      step = step * 3 % 1001 + 1;
    }
    std::vector<float> a(5 * dv), b(5 * dv);
    ASSERT_TRUE(whole->Query({q.data(), 5, d}, {a.data(), 5, dv}).ok());
    ASSERT_TRUE(pieces->Query({q.data(), 5, d}, {b.data(), 5, dv}).ok());
    EXPECT_EQ(a, b) << store;
    EXPECT_EQ(whole->MemoryBytes(), pieces->MemoryBytes()) << store;
  }
}

TEST(ExactTest, MemoryBytesCountsCapacityAndIsBounded) {
  const int d = 64, dv = 32;
  for (const char* store : {"f32", "f16", "bf16"}) {
    const int64_t elem = std::string(store) == "f32" ? 4 : 2;
    auto a = MakeExact(store, d, dv, 0.1f);
    const int64_t empty = a->MemoryBytes();
    EXPECT_EQ(empty, 0) << store;  // nothing allocated yet
    const auto row_k = RandomNormal(61, d), row_v = RandomNormal(62, dv);
    int64_t last = empty;
    for (int64_t n = 1; n <= 10000; ++n) {
      ASSERT_TRUE(a->Append({row_k.data(), 1, d}, {row_v.data(), 1, dv}).ok());
      const int64_t bytes = a->MemoryBytes();
      ASSERT_GE(bytes, last);
      ASSERT_GE(bytes, n * (d + dv) * elem);
      // Geometric growth to 2048-token chunks: at most one spare chunk.
      const int64_t cap_bound =
          std::max({2 * n, n + ExactApproximator::kMaxChunkTokens,
                    ExactApproximator::kMinChunkTokens});
      ASSERT_LE(bytes, cap_bound * (d + dv) * elem + 4096) << n;
      last = bytes;
    }
  }
}

TEST(ExactTest, ErrorsNameTheArgumentAndChangeNothing) {
  auto a = MakeExact("f32", 4, 3, 0.5f);
  std::vector<float> q(4), out(3);
  absl::Status s = a->Query({q.data(), 1, 4}, {out.data(), 1, 3});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  std::vector<float> k(8), v(6);
  s = a->Append({k.data(), 2, 4}, {v.data(), 1, 3});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("values"));
  s = a->Append({k.data(), 2, 4}, {v.data(), 2, 2});
  EXPECT_THAT(s.message(), HasSubstr("values is 2x2, expected 3 columns"));
  s = a->Append({k.data(), 1, 8}, {v.data(), 1, 3});
  EXPECT_THAT(s.message(), HasSubstr("keys is 1x8, expected 4 columns"));
  EXPECT_EQ(a->num_tokens(), 0);
  ASSERT_TRUE(a->Append({k.data(), 2, 4}, {v.data(), 2, 3}).ok());
  s = a->Query({q.data(), 1, 4}, {out.data(), 1, 2});
  EXPECT_THAT(s.message(), HasSubstr("out is 1x2, expected 3 columns"));
  std::vector<float> out2(6);
  s = a->Query({q.data(), 1, 4}, {out2.data(), 2, 3});
  EXPECT_THAT(s.message(), HasSubstr("queries have 1 rows but out has 2"));
  EXPECT_EQ(a->num_tokens(), 2);
}

TEST(ExactTest, SaveLoadRoundTripIsBitExact) {
  const int d = 16, dv = 8, n = 2100;
  const auto k = RandomNormal(71, n * d), v = RandomNormal(72, n * dv);
  const auto q = RandomNormal(73, 3 * d);
  for (const char* store : {"f32", "f16", "bf16"}) {
    auto a = MakeExact(store, d, dv, 0.3f);
    ASSERT_TRUE(a->Append({k.data(), n, d}, {v.data(), n, dv}).ok());
    ByteWriter w;
    ASSERT_TRUE(a->SaveState(w).ok());
    auto b = MakeExact(store, d, dv, 0.3f);
    ByteReader r(w.data());
    ASSERT_TRUE(b->LoadState(r).ok());
    EXPECT_EQ(r.remaining(), 0u);
    EXPECT_EQ(b->num_tokens(), n);
    std::vector<float> oa(3 * dv), ob(3 * dv);
    ASSERT_TRUE(a->Query({q.data(), 3, d}, {oa.data(), 3, dv}).ok());
    ASSERT_TRUE(b->Query({q.data(), 3, d}, {ob.data(), 3, dv}).ok());
    EXPECT_EQ(oa, ob);
    ByteWriter w2;
    ASSERT_TRUE(b->SaveState(w2).ok());
    EXPECT_EQ(w.data(), w2.data());

    // A different store's state is refused and leaves b as it was.
    auto other =
        MakeExact(std::string(store) == "f32" ? "f16" : "f32", d, dv, 0.3f);
    ByteReader r2(w.data());
    absl::Status s = other->LoadState(r2);
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
    EXPECT_EQ(other->num_tokens(), 0);
    // Truncations are refused and leave the state as it was.
    for (size_t cut :
         {size_t{0}, size_t{1}, size_t{9}, w.size() / 2, w.size() - 1}) {
      ByteReader rc(absl::string_view(w.data()).substr(0, cut));
      s = b->LoadState(rc);
      EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << cut;
      EXPECT_EQ(b->num_tokens(), n);
    }
  }
}

TEST(ExactTest, HostileTokenCountIsRefusedBeforeAllocating) {
  auto a = MakeExact("f32", 128, 128, 0.1f);
  ByteWriter w;
  w.PutU8(0);
  w.PutI64(int64_t{1} << 50);
  w.PutFloats(std::vector<float>(10, 1.0f));
  ByteReader r(w.data());
  absl::Status s = a->LoadState(r);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("claims"));
  ByteWriter neg;
  neg.PutU8(0);
  neg.PutI64(-5);
  ByteReader rn(neg.data());
  EXPECT_EQ(a->LoadState(rn).code(), absl::StatusCode::kDataLoss);
}

// The bulk causal path (masked tiles of 4 rows) against the causal
// reference, for group sizes that leave tile remainders and prefixes that
// cross chunk (16..2048) and sub-block (64) boundaries.
TEST(ExactTest, BulkPrefillMatchesCausalReference) {
  const int d = 32, dv = 24;
  const float scale = 0.18f;
  for (const char* store : {"f32", "f16", "bf16"}) {
    for (auto [prev, t, g] : {std::tuple<int64_t, int64_t, int>{0, 1, 1},
                              {0, 70, 1},
                              {5, 9, 3},
                              {2040, 150, 2},
                              {63, 130, 5}}) {
      const int64_t n = prev + t;
      const auto k = RandomNormal(81 + n, n * d),
                 v = RandomNormal(82 + n, n * dv);
      const auto q = RandomNormal(83 + g, g * t * d);
      auto a = MakeExact(store, d, dv, scale);
      ASSERT_TRUE(a->Append({k.data(), prev, d}, {v.data(), prev, dv}).ok());
      std::vector<float> out(g * t * dv, NAN);
      ASSERT_TRUE(
          a->Prefill({q.data(), g * t, d}, g, {k.data() + prev * d, t, d},
                     {v.data() + prev * dv, t, dv}, {out.data(), g * t, dv})
              .ok());
      EXPECT_EQ(a->num_tokens(), n);
      const auto kr = RoundToStore(k, store), vr = RoundToStore(v, store);
      for (int h = 0; h < g; ++h) {
        const std::vector<float> qh(q.begin() + h * t * d,
                                    q.begin() + (h + 1) * t * d);
        const auto ref =
            testing::ReferenceCausalAttention(qh, t, kr, vr, n, d, dv, scale);
        const std::vector<float> got(out.begin() + h * t * dv,
                                     out.begin() + (h + 1) * t * dv);
        EXPECT_LE(MaxAbsDiff(got, ref),
                  AttentionTolerance(qh, t, kr, vr, n, d, dv, scale, 0.0))
            << store << " prev=" << prev << " t=" << t << " head " << h;
      }
    }
  }
}

TEST(ExactKernelTest, ExpNonPositiveRelativeError) {
  std::vector<float> x, y;
  for (double t = -87.0; t <= 0.0; t += 0.000731)
    x.push_back(static_cast<float>(t));
  x.push_back(0.0f);
  x.push_back(-0.0f);
  y.resize(x.size());
  ExpNonPositive(x.data(), y.data(), static_cast<int64_t>(x.size()));
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = std::exp(double{x[i]});
    worst = std::max(worst, std::abs(y[i] - want) / want);
  }
  EXPECT_LT(worst, 3e-7);
  EXPECT_EQ(y[y.size() - 1], 1.0f);
  EXPECT_EQ(y[y.size() - 2], 1.0f);
  const float below[9] = {-88, -100, -1e4f, -1e30f, -87.5f,
                          -90, -95,  -200,  -1e6f};
  float out[9];
  ExpNonPositive(below, out, 9);
  for (float o : out) EXPECT_EQ(o, 0.0f);
}

}  // namespace
}  // namespace kvsketch
