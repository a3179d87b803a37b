#include "client/cli/args.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace kvsketch::client::cli {
namespace {

const std::string& EmptyString() {
  static const std::string* const kEmpty = new std::string();
  return *kEmpty;
}

const std::vector<std::string>& EmptyList() {
  static const std::vector<std::string>* const kEmpty =
      new std::vector<std::string>();
  return *kEmpty;
}

std::string ValidOptions(absl::Span<const OptionSpec> specs) {
  std::vector<std::string> names;
  names.reserve(specs.size() + 1);
  for (const OptionSpec& s : specs) names.push_back("--" + s.name);
  names.push_back("--help");
  return absl::StrJoin(names, ", ");
}

}  // namespace

const std::string& ParsedArgs::Get(absl::string_view name) const {
  if (auto it = given_.find(name); it != given_.end() && !it->second.empty()) {
    return it->second.back();
  }
  if (auto it = defaults_.find(name); it != defaults_.end()) return it->second;
  return EmptyString();
}

const std::vector<std::string>& ParsedArgs::GetAll(
    absl::string_view name) const {
  auto it = given_.find(name);
  return it == given_.end() ? EmptyList() : it->second;
}

bool ParsedArgs::Has(absl::string_view name) const {
  return given_.find(name) != given_.end();
}

absl::StatusOr<int64_t> ParsedArgs::GetInt(absl::string_view name) const {
  int64_t v = 0;
  const std::string& s = Get(name);
  if (!absl::SimpleAtoi(s, &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": expected an integer, got '", s, "'"));
  }
  return v;
}

absl::StatusOr<double> ParsedArgs::GetDouble(absl::string_view name) const {
  double v = 0;
  const std::string& s = Get(name);
  if (!absl::SimpleAtod(s, &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": expected a number, got '", s, "'"));
  }
  return v;
}

absl::StatusOr<absl::Duration> ParsedArgs::GetDuration(
    absl::string_view name) const {
  const std::string& s = Get(name);
  double seconds = 0;
  if (absl::SimpleAtod(s, &seconds) && seconds >= 0) {
    return absl::Seconds(seconds);
  }
  absl::Duration d;
  if (absl::ParseDuration(s, &d) && d >= absl::ZeroDuration()) return d;
  return absl::InvalidArgumentError(absl::StrCat(
      "--", name, ": expected a duration like 30s, 500ms or 2m, got '", s,
      "'"));
}

absl::StatusOr<ParsedArgs> ParseArgs(absl::Span<const OptionSpec> specs,
                                     absl::Span<const char* const> args) {
  ParsedArgs parsed;
  for (const OptionSpec& s : specs) parsed.defaults_[s.name] = s.default_value;
  bool options_done = false;
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (options_done || arg.size() < 2 || arg[0] != '-' || arg == "-") {
      parsed.positional_.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    if (arg == "--help" || arg == "-h") {
      parsed.help_ = true;
      continue;
    }
    if (!absl::ConsumePrefix(&arg, "--")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown option '", arg,
          "' (options take two dashes); valid options: ", ValidOptions(specs)));
    }
    absl::string_view name = arg;
    absl::string_view value;
    bool has_value = false;
    if (size_t eq = arg.find('='); eq != absl::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    auto spec =
        std::find_if(specs.begin(), specs.end(),
                     [&](const OptionSpec& s) { return s.name == name; });
    if (spec == specs.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown option '--", name,
                       "'; valid options: ", ValidOptions(specs)));
    }
    if (spec->is_flag()) {
      if (has_value) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, " is a flag and takes no value"));
      }
    } else if (!has_value) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--", name, " needs a value (", spec->value_name, ")"));
      }
      value = args[++i];
      has_value = true;
    }
    auto& values = parsed.given_[std::string(name)];
    if (!values.empty() && !spec->repeated && !spec->is_flag()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, " given more than once"));
    }
    values.emplace_back(value);
  }
  if (!parsed.help_) {
    for (const OptionSpec& s : specs) {
      if (s.required && !parsed.Has(s.name)) {
        return absl::InvalidArgumentError(
            absl::StrCat("missing required option --", s.name));
      }
    }
  }
  return parsed;
}

std::string FormatUsage(absl::string_view program, absl::string_view synopsis,
                        absl::string_view description,
                        absl::Span<const OptionSpec> specs) {
  std::string out = absl::StrCat("usage: ", program, " ", synopsis, "\n");
  if (!description.empty()) absl::StrAppend(&out, "\n", description, "\n");
  if (specs.empty()) return out;
  absl::StrAppend(&out, "\noptions:\n");
  std::vector<std::string> left;
  size_t width = 0;
  for (const OptionSpec& s : specs) {
    std::string l = absl::StrCat("  --", s.name);
    if (!s.is_flag()) absl::StrAppend(&l, " ", s.value_name);
    width = std::max(width, l.size());
    left.push_back(std::move(l));
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    const OptionSpec& s = specs[i];
    std::string line = left[i];
    line.resize(width + 2, ' ');
    absl::StrAppend(&line, s.help);
    if (s.required) {
      absl::StrAppend(&line, " (required)");
    } else if (!s.is_flag() && !s.default_value.empty()) {
      absl::StrAppend(&line, " (default: ", s.default_value, ")");
    }
    if (s.repeated) absl::StrAppend(&line, " [repeatable]");
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

}  // namespace kvsketch::client::cli
