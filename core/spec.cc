// File: core/spec.cc
#include "core/spec.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvsketch {
namespace {

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

bool IsValueChar(char c) {
  return c != ',' && c != ':' && c != '=' &&
         !absl::ascii_isspace(static_cast<unsigned char>(c)) && c != '\0';
}

std::string Describe(char c) {
  if (absl::ascii_isprint(static_cast<unsigned char>(c))) {
    return absl::StrFormat("'%c'", c);
  }
  return absl::StrFormat("byte 0x%02x", static_cast<unsigned char>(c));
}

// Error for spec text `s` at position `pos` (0-based in the trimmed string).
absl::Status SyntaxError(absl::string_view s, size_t pos,
                         absl::string_view what) {
  const std::string at =
      pos < s.size()
          ? absl::StrCat("unexpected ", Describe(s[pos]), " at position ", pos)
          : absl::StrCat("unexpected end at position ", pos);
  return absl::InvalidArgumentError(
      absl::StrCat("spec \"", s, "\": ", at, ", expected ", what,
                   " (grammar: kind[:key=value,...], names [a-z0-9_]+)"));
}

}  // namespace

absl::StatusOr<ParsedSpec> ParseSpec(absl::string_view spec) {
  const absl::string_view s = absl::StripAsciiWhitespace(spec);
  if (s.empty()) return absl::InvalidArgumentError("spec is empty");
  ParsedSpec out;
  size_t pos = 0;
  while (pos < s.size() && IsNameChar(s[pos])) ++pos;
  if (pos == 0) return SyntaxError(s, 0, "a kind name");
  out.kind = std::string(s.substr(0, pos));
  if (pos == s.size()) return out;
  if (s[pos] != ':') return SyntaxError(s, pos, "':' or the end");
  ++pos;
  while (true) {
    const size_t key_start = pos;
    while (pos < s.size() && IsNameChar(s[pos])) ++pos;
    if (pos == key_start) return SyntaxError(s, pos, "a parameter name");
    std::string key(s.substr(key_start, pos - key_start));
    if (pos >= s.size() || s[pos] != '=') {
      return SyntaxError(s, pos, absl::StrCat("'=' after \"", key, "\""));
    }
    ++pos;
    const size_t value_start = pos;
    while (pos < s.size() && IsValueChar(s[pos])) ++pos;
    if (pos == value_start) {
      return SyntaxError(s, pos, absl::StrCat("a value for \"", key, "\""));
    }
    for (const auto& [k, v] : out.params) {
      if (k == key) {
        return absl::InvalidArgumentError(absl::StrCat(
            "spec \"", s, "\": parameter \"", key, "\" is given twice"));
      }
    }
    out.params.emplace_back(
        std::move(key), std::string(s.substr(value_start, pos - value_start)));
    if (pos == s.size()) return out;
    if (s[pos] != ',') return SyntaxError(s, pos, "',' or the end");
    ++pos;
  }
}

}  // namespace kvsketch
