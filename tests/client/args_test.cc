#include "client/cli/args.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvsketch::client::cli {
namespace {

using ::testing::HasSubstr;

std::vector<OptionSpec> Specs() {
  return {
      {.name = "layers", .value_name = "L", .help = "layers", .required = true},
      {.name = "dtype",
       .value_name = "T",
       .default_value = "f32",
       .help = "dtype"},
      {.name = "layer-spec",
       .value_name = "L=S",
       .help = "override",
       .repeated = true},
      {.name = "timeout",
       .value_name = "D",
       .default_value = "30s",
       .help = "deadline"},
      {.name = "json", .help = "json"},
  };
}

absl::StatusOr<ParsedArgs> Parse(std::vector<const char*> args) {
  return ParseArgs(Specs(), args);
}

TEST(ArgsTest, BothValueFormsFlagsAndPositionals) {
  auto a = Parse({"--layers=4", "pos1", "--dtype", "bf16", "--json", "pos2"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->Get("layers"), "4");
  EXPECT_EQ(*a->GetInt("layers"), 4);
  EXPECT_EQ(a->Get("dtype"), "bf16");
  EXPECT_TRUE(a->Flag("json"));
  EXPECT_THAT(a->positional(), ::testing::ElementsAre("pos1", "pos2"));
  EXPECT_FALSE(a->help());
}

TEST(ArgsTest, DefaultsApplyWhenAbsent) {
  auto a = Parse({"--layers", "1"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->Get("dtype"), "f32");
  EXPECT_FALSE(a->Has("dtype"));
  EXPECT_FALSE(a->Flag("json"));
  EXPECT_EQ(*a->GetDuration("timeout"), absl::Seconds(30));
}

TEST(ArgsTest, RepeatedOptionKeepsOrder) {
  auto a = Parse({"--layers=2", "--layer-spec", "0=exact", "--layer-spec=1=x"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(a->GetAll("layer-spec"),
              ::testing::ElementsAre("0=exact", "1=x"));
}

TEST(ArgsTest, UnknownOptionListsValidOnes) {
  auto a = Parse({"--layers=2", "--bogus=1"});
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(a.status().message(), HasSubstr("unknown option '--bogus'"));
  EXPECT_THAT(a.status().message(), HasSubstr("--layers"));
  EXPECT_THAT(a.status().message(), HasSubstr("--json"));
}

TEST(ArgsTest, SingleDashOptionRejected) {
  auto a = Parse({"--layers=2", "-x"});
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(a.status().message(), HasSubstr("unknown option '-x'"));
}

TEST(ArgsTest, MissingValueAndFlagWithValue) {
  auto a = Parse({"--layers"});
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(a.status().message(), HasSubstr("--layers needs a value"));
  auto b = Parse({"--layers=1", "--json=yes"});
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(b.status().message(), HasSubstr("--json is a flag"));
}

TEST(ArgsTest, RequiredOptionAndDuplicate) {
  auto a = Parse({"--dtype=f16"});
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(a.status().message(),
              HasSubstr("missing required option --layers"));
  auto b = Parse({"--layers=1", "--layers=2"});
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(b.status().message(), HasSubstr("--layers given more than once"));
}

TEST(ArgsTest, HelpSkipsRequiredCheck) {
  auto a = Parse({"--help"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->help());
}

TEST(ArgsTest, DoubleDashEndsOptions) {
  auto a = Parse({"--layers=1", "--", "--json"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_FALSE(a->Flag("json"));
  EXPECT_THAT(a->positional(), ::testing::ElementsAre("--json"));
}

TEST(ArgsTest, TypedGettersNameTheOption) {
  auto a = Parse({"--layers=four", "--timeout=soon"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(a->GetInt("layers").status().message(),
              HasSubstr("--layers: expected an integer, got 'four'"));
  EXPECT_THAT(a->GetDuration("timeout").status().message(),
              HasSubstr("--timeout"));
  auto b = Parse({"--layers=1", "--timeout=250ms"});
  EXPECT_EQ(*b->GetDuration("timeout"), absl::Milliseconds(250));
  auto c = Parse({"--layers=1", "--timeout=1.5"});
  EXPECT_EQ(*c->GetDuration("timeout"), absl::Milliseconds(1500));
}

TEST(ArgsTest, UsageShowsOptionsAndDefaults) {
  const std::string usage =
      FormatUsage("kvsketch create", "[options]", "make one", Specs());
  EXPECT_THAT(usage, HasSubstr("usage: kvsketch create [options]"));
  EXPECT_THAT(usage, HasSubstr("--layers L"));
  EXPECT_THAT(usage, HasSubstr("(required)"));
  EXPECT_THAT(usage, HasSubstr("(default: f32)"));
  EXPECT_THAT(usage, HasSubstr("[repeatable]"));
  EXPECT_THAT(usage, HasSubstr("--json"));
}

}  // namespace
}  // namespace kvsketch::client::cli
