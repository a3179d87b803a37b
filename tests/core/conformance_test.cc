// File: tests/core/conformance_test.cc
//
// The contract of core/approximator.h, checked for every spec listed in
// AllConformanceSpecs() (tests/core/testing/conformance_specs.cc).
#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/approximator.h"
#include "core/registry.h"
#include "core/spec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/testing/conformance_specs.h"
#include "tests/core/testing/reference_attention.h"

namespace kvsketch {
namespace {

using ::kvsketch::testing::AllConformanceSpecs;
using ::kvsketch::testing::AttentionTolerance;
using ::kvsketch::testing::ConformanceSpec;
using ::kvsketch::testing::MaxAbs;
using ::kvsketch::testing::MaxAbsDiff;
using ::kvsketch::testing::RandomNormal;
using ::kvsketch::testing::ReferenceAttention;
using ::kvsketch::testing::ReferenceCausalAttention;

constexpr int kD = 24;
constexpr int kDv = 20;
constexpr float kScale = 0.2f;

class ConformanceTest : public ::testing::TestWithParam<ConformanceSpec> {
 protected:
  std::unique_ptr<Approximator> Make() const {
    auto a = CreateApproximator(GetParam().spec, {kD, kDv, kScale});
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() ? *std::move(a) : nullptr;
  }
  double Tolerance(const std::vector<float>& q, int64_t m,
                   const std::vector<float>& k, const std::vector<float>& v,
                   int64_t n) const {
    return AttentionTolerance(q, m, k, v, n, kD, kDv, kScale,
                              GetParam().store_unit) +
           GetParam().extra_rel_error * MaxAbs(v);
  }
};

TEST_P(ConformanceTest, SpecRoundTrips) {
  auto a = Make();
  ASSERT_NE(a, nullptr);
  auto canonical = CanonicalizeSpec(GetParam().spec);
  ASSERT_TRUE(canonical.ok());
  EXPECT_EQ(a->Spec(), *canonical);
  auto again = CreateApproximator(a->Spec(), a->shape());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->Spec(), a->Spec());
  EXPECT_EQ(a->shape().head_dim, kD);
  EXPECT_EQ(a->shape().value_dim, kDv);
}

TEST_P(ConformanceTest, QueryOnEmptyIsFailedPrecondition) {
  auto a = Make();
  std::vector<float> q(kD), out(kDv, 3.0f);
  EXPECT_EQ(a->Query({q.data(), 1, kD}, {out.data(), 1, kDv}).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(out, std::vector<float>(kDv, 3.0f));
}

TEST_P(ConformanceTest, ShapeErrorsLeaveStateUnchanged) {
  auto a = Make();
  const auto k = RandomNormal(1, 10 * kD), v = RandomNormal(2, 10 * kDv);
  ASSERT_TRUE(a->Append({k.data(), 5, kD}, {v.data(), 5, kDv}).ok());
  const int64_t bytes = a->MemoryBytes();
  const auto q = RandomNormal(3, 2 * kD);
  std::vector<float> before(2 * kDv);
  ASSERT_TRUE(a->Query({q.data(), 2, kD}, {before.data(), 2, kDv}).ok());
  std::vector<float> big(100 * 100);
  EXPECT_EQ(a->Append({k.data(), 5, kD + 1}, {v.data(), 5, kDv}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a->Append({k.data(), 5, kD}, {v.data(), 5, kDv - 1}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a->Append({k.data(), 5, kD}, {v.data(), 4, kDv}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a->Query({q.data(), 2, kD - 1}, {big.data(), 2, kDv}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a->Query({q.data(), 2, kD}, {big.data(), 3, kDv}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a->Prefill({q.data(), 2, kD}, 1, {k.data(), 1, kD},
                       {v.data(), 1, kDv}, {big.data(), 2, kDv})
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a->Prefill({q.data(), 2, kD}, 0, {k.data(), 2, kD},
                       {v.data(), 2, kDv}, {big.data(), 0, kDv})
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a->num_tokens(), 5);
  EXPECT_EQ(a->MemoryBytes(), bytes);
  std::vector<float> after(2 * kDv);
  ASSERT_TRUE(a->Query({q.data(), 2, kD}, {after.data(), 2, kDv}).ok());
  EXPECT_EQ(before, after);
}

TEST_P(ConformanceTest, MatchesReferenceWithinDocumentedError) {
  for (int64_t n : {1, 3, 64, 65, 700, 2500}) {
    auto a = Make();
    const auto k = RandomNormal(10 + n, n * kD),
               v = RandomNormal(20 + n, n * kDv);
    ASSERT_TRUE(a->Append({k.data(), n, kD}, {v.data(), n, kDv}).ok());
    EXPECT_EQ(a->num_tokens(), n);
    for (int64_t m : {1, 4, 6}) {
      const auto q = RandomNormal(30 + m, m * kD);
      std::vector<float> out(m * kDv);
      ASSERT_TRUE(a->Query({q.data(), m, kD}, {out.data(), m, kDv}).ok());
      const auto ref = ReferenceAttention(q, m, k, v, n, kD, kDv, kScale);
      EXPECT_LE(MaxAbsDiff(out, ref), Tolerance(q, m, k, v, n))
          << "n=" << n << " m=" << m;
      std::vector<float> out2(m * kDv);
      ASSERT_TRUE(a->Attend({q.data(), m, kD}, {out2.data(), m, kDv}).ok());
      EXPECT_LE(MaxAbsDiff(out2, ref), Tolerance(q, m, k, v, n));
    }
  }
}

TEST_P(ConformanceTest, ChunkingInvariance) {
  const int64_t n = 1500;
  const auto k = RandomNormal(41, n * kD), v = RandomNormal(42, n * kDv);
  const auto q = RandomNormal(43, 3 * kD);
  auto whole = Make();
  ASSERT_TRUE(whole->Append({k.data(), n, kD}, {v.data(), n, kDv}).ok());
  std::mt19937_64 rng(44);
  for (int trial = 0; trial < 3; ++trial) {
    auto pieces = Make();
    int64_t done = 0;
    while (done < n) {
      const int64_t t = std::min<int64_t>(n - done, 1 + rng() % 200);
      ASSERT_TRUE(pieces
                      ->Append({k.data() + done * kD, t, kD},
                               {v.data() + done * kDv, t, kDv})
                      .ok());
      done += t;
    }
    std::vector<float> a(3 * kDv), b(3 * kDv);
    ASSERT_TRUE(whole->Query({q.data(), 3, kD}, {a.data(), 3, kDv}).ok());
    ASSERT_TRUE(pieces->Query({q.data(), 3, kD}, {b.data(), 3, kDv}).ok());
    EXPECT_EQ(a, b) << "trial " << trial;
  }
}

TEST_P(ConformanceTest, SaveLoadQueryIsBitEqual) {
  const int64_t n = 777;
  const auto k = RandomNormal(51, n * kD), v = RandomNormal(52, n * kDv);
  const auto q = RandomNormal(53, 5 * kD);
  auto a = Make();
  ASSERT_TRUE(a->Append({k.data(), n, kD}, {v.data(), n, kDv}).ok());
  ByteWriter w;
  ASSERT_TRUE(a->SaveState(w).ok());
  auto b = Make();
  ByteReader r(w.data());
  ASSERT_TRUE(b->LoadState(r).ok());
  EXPECT_EQ(r.remaining(), 0u);
  EXPECT_EQ(b->num_tokens(), n);
  std::vector<float> oa(5 * kDv), ob(5 * kDv);
  ASSERT_TRUE(a->Query({q.data(), 5, kD}, {oa.data(), 5, kDv}).ok());
  ASSERT_TRUE(b->Query({q.data(), 5, kD}, {ob.data(), 5, kDv}).ok());
  EXPECT_EQ(oa, ob);
  // Both continue identically after more tokens.
  ASSERT_TRUE(a->Append({k.data(), 10, kD}, {v.data(), 10, kDv}).ok());
  ASSERT_TRUE(b->Append({k.data(), 10, kD}, {v.data(), 10, kDv}).ok());
  ASSERT_TRUE(a->Query({q.data(), 5, kD}, {oa.data(), 5, kDv}).ok());
  ASSERT_TRUE(b->Query({q.data(), 5, kD}, {ob.data(), 5, kDv}).ok());
  EXPECT_EQ(oa, ob);
  // A truncated state is DataLoss and leaves the target as it was.
  auto c = Make();
  ASSERT_TRUE(c->Append({k.data(), 3, kD}, {v.data(), 3, kDv}).ok());
  ByteReader cut(absl::string_view(w.data()).substr(0, w.size() / 2));
  EXPECT_EQ(c->LoadState(cut).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(c->num_tokens(), 3);
}

TEST_P(ConformanceTest, MemoryBytesGrowsAndCoversTheData) {
  auto a = Make();
  int64_t last = a->MemoryBytes();
  EXPECT_GE(last, 0);
  const auto k = RandomNormal(61, 3000 * kD), v = RandomNormal(62, 3000 * kDv);
  int64_t n = 0;
  std::mt19937_64 rng(63);
  while (n < 3000) {
    const int64_t t = std::min<int64_t>(3000 - n, 1 + rng() % 97);
    ASSERT_TRUE(
        a->Append({k.data() + n * kD, t, kD}, {v.data() + n * kDv, t, kDv})
            .ok());
    n += t;
    const int64_t bytes = a->MemoryBytes();
    EXPECT_GE(bytes, last);
    last = bytes;
  }
  // Every kind stores at least something per head; exact-storing kinds hold
  // all n tokens at >= 2 bytes per element.
  EXPECT_GT(last, 0);
  if (GetParam().spec.rfind("exact", 0) == 0) {
    EXPECT_GE(last, n * (kD + kDv) * 2);
  }
}

TEST_P(ConformanceTest, PrefillEqualsRowByRowStreaming) {
  const int64_t prev = 90, t = 70;
  const int g = 3;
  const auto k = RandomNormal(71, (prev + t) * kD);
  const auto v = RandomNormal(72, (prev + t) * kDv);
  const auto q = RandomNormal(73, g * t * kD);  // [g][t]
  auto bulk = Make();
  auto rows = Make();
  for (auto* a : {bulk.get(), rows.get()}) {
    ASSERT_TRUE(a->Append({k.data(), prev, kD}, {v.data(), prev, kDv}).ok());
  }
  std::vector<float> out(g * t * kDv);
  ASSERT_TRUE(
      bulk->Prefill({q.data(), g * t, kD}, g, {k.data() + prev * kD, t, kD},
                    {v.data() + prev * kDv, t, kDv}, {out.data(), g * t, kDv})
          .ok());
  EXPECT_EQ(bulk->num_tokens(), prev + t);
  std::vector<float> streamed(g * t * kDv);
  for (int64_t i = 0; i < t; ++i) {
    ASSERT_TRUE(rows->Append({k.data() + (prev + i) * kD, 1, kD},
                             {v.data() + (prev + i) * kDv, 1, kDv})
                    .ok());
    for (int h = 0; h < g; ++h) {
      ASSERT_TRUE(rows->Attend({q.data() + (h * t + i) * kD, 1, kD},
                               {streamed.data() + (h * t + i) * kDv, 1, kDv})
                      .ok());
    }
  }
  // Same error budget as a query (a bulk path may reorder arithmetic).
  for (int h = 0; h < g; ++h) {
    std::vector<float> qh(q.begin() + h * t * kD, q.begin() + (h + 1) * t * kD);
    const auto ref =
        ReferenceCausalAttention(qh, t, k, v, prev + t, kD, kDv, kScale);
    std::vector<float> got(out.begin() + h * t * kDv,
                           out.begin() + (h + 1) * t * kDv);
    std::vector<float> want(streamed.begin() + h * t * kDv,
                            streamed.begin() + (h + 1) * t * kDv);
    const double tol = Tolerance(qh, t, k, v, prev + t);
    EXPECT_LE(MaxAbsDiff(got, ref), tol) << "head " << h;
    std::vector<double> want_d(want.begin(), want.end());
    EXPECT_LE(MaxAbsDiff(got, want_d), 2 * tol) << "head " << h;
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllSpecs, ConformanceTest, ::testing::ValuesIn(AllConformanceSpecs()),
    [](const ::testing::TestParamInfo<ConformanceSpec>& spec_info) {
      std::string name;
      for (char c : spec_info.param.spec) {
        name.push_back(std::isalnum(static_cast<unsigned char>(c)) ? c : '_');
      }
      return name;
    });

TEST(ConformanceListTest, EveryRegisteredKindIsCovered) {
  std::set<std::string> listed;
  for (const ConformanceSpec& c : AllConformanceSpecs()) {
    auto parsed = ParseSpec(c.spec);
    ASSERT_TRUE(parsed.ok()) << c.spec;
    listed.insert(parsed->kind);
    EXPECT_TRUE(CanonicalizeSpec(c.spec).ok()) << c.spec;
  }
  for (const KindDef& k : RegisteredKinds()) {
    EXPECT_TRUE(listed.count(k.kind))
        << "kind " << k.kind << " is missing from AllConformanceSpecs()";
  }
}

}  // namespace
}  // namespace kvsketch
