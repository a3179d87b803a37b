// File: tests/core/spec_registry_test.cc
#include <string>

#include "core/registry.h"
#include "core/registry_internal.h"
#include "core/spec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvsketch {
namespace {

using ::testing::HasSubstr;
using ::testing::Pair;

TEST(ParseSpecTest, ParsesKindAndParams) {
  auto p = ParseSpec("  topk:alpha=2,c=0.5 \n");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->kind, "topk");
  EXPECT_THAT(p->params,
              ::testing::ElementsAre(Pair("alpha", "2"), Pair("c", "0.5")));
  auto bare = ParseSpec("exact");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->kind, "exact");
  EXPECT_TRUE(bare->params.empty());
  auto odd = ParseSpec("k_1:x=-1.5e+3,y=A/b");
  ASSERT_TRUE(odd.ok());
  EXPECT_EQ(odd->params[1].second, "A/b");
}

TEST(ParseSpecTest, ErrorsGivePositionAndCharacter) {
  struct Bad {
    const char* spec;
    const char* message;
  };
  const Bad bad[] = {
      {"", "spec is empty"},
      {"   ", "spec is empty"},
      {"Exact", "unexpected 'E' at position 0, expected a kind name"},
      {"exact:", "unexpected end at position 6, expected a parameter name"},
      {"exact;store=f16", "unexpected ';' at position 5"},
      {"exact:store",
       "unexpected end at position 11, expected '=' after \"store\""},
      {"exact:store=", "expected a value for \"store\""},
      {"exact:store=f16,", "unexpected end at position 16"},
      {"exact:store=f16,,a=1", "unexpected ',' at position 16"},
      {"exact:store=f 16", "unexpected ' ' at position 13"},
      {"exact:store=a=b", "unexpected '=' at position 13"},
      {"exact:store=f16,store=f32", "parameter \"store\" is given twice"},
      {"exact:STORE=f16", "unexpected 'S' at position 6"},
      {"exact:a\tb=1", "unexpected byte 0x09 at position 7"},
  };
  for (const Bad& b : bad) {
    auto p = ParseSpec(b.spec);
    ASSERT_FALSE(p.ok()) << b.spec;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(p.status().message(), HasSubstr(b.message)) << b.spec;
  }
}

TEST(RegistryTest, CanonicalFormFillsDefaultsAndIsIdempotent) {
  for (const char* s :
       {"exact", "exact:store=f32", " exact:store=f16 ", "exact:store=bf16"}) {
    auto c = CanonicalizeSpec(s);
    ASSERT_TRUE(c.ok()) << c.status();
    auto cc = CanonicalizeSpec(*c);
    ASSERT_TRUE(cc.ok());
    EXPECT_EQ(*c, *cc);
    auto a = CreateApproximator(s, {8, 4, 0.5f});
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ((*a)->Spec(), *c);
    EXPECT_EQ((*a)->num_tokens(), 0);
  }
  EXPECT_EQ(*CanonicalizeSpec("exact"), "exact:store=f32");
  EXPECT_EQ(*CanonicalizeSpec("exact:store=bf16"), "exact:store=bf16");
}

TEST(RegistryTest, ErrorsListTheValidOptions) {
  auto kind = CanonicalizeSpec("exakt:store=f16");
  EXPECT_EQ(kind.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      kind.status().message(),
      HasSubstr("unknown approximator kind \"exakt\"; valid kinds: exact"));
  auto key = CanonicalizeSpec("exact:stor=f16");
  EXPECT_THAT(
      key.status().message(),
      HasSubstr("unknown parameter \"stor\" for kind exact; valid keys: "
                "store"));
  auto value = CanonicalizeSpec("exact:store=f64");
  EXPECT_THAT(value.status().message(),
              HasSubstr("exact:store=f64: expected one of f32, f16, bf16"));
  EXPECT_FALSE(CreateApproximator("exact:store=f64", {8, 8, 1}).ok());
}

TEST(RegistryTest, ShapeIsValidated) {
  struct Bad {
    HeadShape shape;
    const char* message;
  };
  const Bad bad[] = {
      {{0, 8, 1}, "head_dim (0) must be in [1, 65536]"},
      {{65537, 8, 1}, "head_dim (65537)"},
      {{8, 0, 1}, "value_dim (0)"},
      {{8, 8, 0}, "scale (0) must be finite and > 0"},
      {{8, 8, -1}, "scale (-1)"},
      {{8, 8, INFINITY}, "scale (inf)"},
  };
  for (const Bad& b : bad) {
    auto a = CreateApproximator("exact", b.shape);
    ASSERT_FALSE(a.ok()) << b.message;
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(a.status().message(), HasSubstr(b.message));
  }
  EXPECT_TRUE(CreateApproximator("exact", {65536, 1, 1e-3f}).ok());
}

TEST(RegistryTest, DescribeListsEveryKindAndParameter) {
  const std::string text = DescribeRegisteredKinds();
  for (const KindDef& k : RegisteredKinds()) {
    EXPECT_THAT(text, HasSubstr(k.kind + ": "));
    for (const ParamDef& p : k.params) {
      EXPECT_THAT(text, HasSubstr("  " + p.name + "=")) << k.kind;
    }
  }
  EXPECT_THAT(text, HasSubstr("store=f32|f16|bf16 (default f32)"));
}

// Every parameter type, through a private kind table.
std::vector<KindDef> TypedKinds() {
  KindDef k;
  k.kind = "demo";
  k.summary = "test kind";
  k.params = {
      {"n", ParamType::kInt, "4", {}, 1, 100, "an int"},
      {"alpha", ParamType::kFloat, "0.5", {}, 0, 10, "a float"},
      {"mode", ParamType::kEnum, "fast", {"fast", "slow"}, -1e300, 1e300, ""},
      {"on", ParamType::kBool, "false", {}, -1e300, 1e300, "a bool"},
  };
  KindDef empty;
  empty.kind = "plain";
  return {k, empty};
}

absl::StatusOr<std::string> Canon(const std::string& spec) {
  static const std::vector<KindDef>* kinds =
      new std::vector<KindDef>(TypedKinds());
  auto c = internal::CanonicalizeWithKinds(spec, *kinds);
  if (!c.ok()) return c.status();
  return c->text;
}

TEST(RegistryTypedTest, NormalisesEveryType) {
  EXPECT_EQ(*Canon("demo"), "demo:n=4,alpha=0.5,mode=fast,on=false");
  EXPECT_EQ(*Canon("demo:on=1,alpha=2.50,n=007"),
            "demo:n=7,alpha=2.5,mode=fast,on=true");
  EXPECT_EQ(*Canon("demo:alpha=1e-1"), "demo:n=4,alpha=0.1,mode=fast,on=false");
  EXPECT_EQ(*Canon("demo:alpha=-0"), "demo:n=4,alpha=0,mode=fast,on=false");
  EXPECT_EQ(*Canon("demo:alpha=0.30000000000000004"),
            "demo:n=4,alpha=0.30000000000000004,mode=fast,on=false");
  EXPECT_EQ(*Canon("demo:on=0,mode=slow"),
            "demo:n=4,alpha=0.5,mode=slow,on=false");
  EXPECT_EQ(*Canon("demo:n=100,alpha=10"),
            "demo:n=100,alpha=10,mode=fast,on=false");
  EXPECT_EQ(*Canon("plain"), "plain");
  for (const char* s : {"demo:alpha=3.25e0,on=true", "demo:n=1", "plain"}) {
    auto once = Canon(s);
    ASSERT_TRUE(once.ok()) << s;
    EXPECT_EQ(*Canon(*once), *once);
  }
  auto c = internal::CanonicalizeWithKinds("demo:n=9,on=true,alpha=7.5",
                                           TypedKinds());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->params.GetInt("n"), 9);
  EXPECT_EQ(c->params.GetFloat("alpha"), 7.5);
  EXPECT_EQ(c->params.GetEnum("mode"), "fast");
  EXPECT_TRUE(c->params.GetBool("on"));
}

TEST(RegistryTypedTest, BadValuesSayWhatWasExpected) {
  struct Bad {
    const char* spec;
    const char* message;
  };
  const Bad bad[] = {
      {"demo:n=0", "demo:n=0: out of range, expected an integer in [1, 100]"},
      {"demo:n=101", "out of range"},
      {"demo:n=1.5", "demo:n=1.5: expected an integer in [1, 100]"},
      {"demo:n=+3", "expected an integer"},
      {"demo:n=99999999999999999999", "expected an integer"},
      {"demo:alpha=abc", "demo:alpha=abc: expected a finite number in [0, 10]"},
      {"demo:alpha=nan", "expected a finite number"},
      {"demo:alpha=inf", "expected a finite number"},
      {"demo:alpha=1e400", "expected a finite number"},
      {"demo:alpha=10.5", "out of range, expected a number in [0, 10]"},
      {"demo:alpha=-1", "out of range"},
      {"demo:mode=medium", "demo:mode=medium: expected one of fast, slow"},
      {"demo:on=yes", "demo:on=yes: expected true, false, 1 or 0"},
      {"demo:x=1",
       "unknown parameter \"x\" for kind demo; valid keys: n, "
       "alpha, mode, on"},
      {"plain:x=1", "valid keys: (none)"},
      {"other", "valid kinds: demo, plain"},
  };
  for (const Bad& b : bad) {
    auto r = Canon(b.spec);
    ASSERT_FALSE(r.ok()) << b.spec;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr(b.message)) << b.spec;
  }
}

TEST(SpecParamsTest, GettersReturnNormalisedValues) {
  SpecParams p;
  p.Set("n", ParamType::kInt, "42");
  p.Set("x", ParamType::kFloat, "0.25");
  p.Set("e", ParamType::kEnum, "f16");
  p.Set("b", ParamType::kBool, "true");
  EXPECT_EQ(p.GetInt("n"), 42);
  EXPECT_EQ(p.GetFloat("x"), 0.25);
  EXPECT_EQ(p.GetEnum("e"), "f16");
  EXPECT_TRUE(p.GetBool("b"));
}

}  // namespace
}  // namespace kvsketch
