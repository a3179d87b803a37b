// File: core/registry.cc
//
// The one table of kinds, plus typed parameter checking and canonical
// printing. Adding a kind is one line in RegisteredKinds().
#include "core/registry.h"

#include <charconv>
#include <cmath>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/conv/conv.h"
#include "core/evict/evict.h"
#include "core/exact/exact.h"
#include "core/registry_internal.h"
#include "core/sketch/sketch.h"
#include "core/spec.h"
#include "core/status_macros.h"
#include "core/topk/topk.h"
#include "core/zeta/zeta.h"

namespace kvsketch {
namespace {

using internal::CanonicalSpec;

std::string FormatDouble(double v) {
  char buf[64];
  // Shortest representation that parses back to the same double.
  const auto res = std::to_chars(buf, buf + sizeof(buf), v);
  KVSKETCH_CHECK(res.ec == std::errc());
  return std::string(buf, res.ptr);
}

std::string ValidKinds(const std::vector<KindDef>& kinds) {
  std::vector<std::string> names;
  for (const KindDef& k : kinds) names.push_back(k.kind);
  return absl::StrJoin(names, ", ");
}

std::string ValidKeys(const KindDef& kind) {
  if (kind.params.empty()) return "(none)";
  std::vector<std::string> names;
  for (const ParamDef& p : kind.params) names.push_back(p.name);
  return absl::StrJoin(names, ", ");
}

std::string RangeText(const ParamDef& p) {
  return absl::StrCat("[", FormatDouble(p.min_value), ", ",
                      FormatDouble(p.max_value), "]");
}

// Checks and normalises one value; returns its canonical text.
absl::StatusOr<std::string> NormalizeValue(const KindDef& kind,
                                           const ParamDef& p,
                                           absl::string_view value) {
  const std::string where = absl::StrCat(kind.kind, ":", p.name, "=", value);
  switch (p.type) {
    case ParamType::kInt: {
      int64_t v = 0;
      const char* end = value.data() + value.size();
      const auto res = std::from_chars(value.data(), end, v);
      if (res.ec != std::errc() || res.ptr != end) {
        return absl::InvalidArgumentError(absl::StrCat(
            "spec ", where, ": expected an integer in ", RangeText(p)));
      }
      if (static_cast<double>(v) < p.min_value ||
          static_cast<double>(v) > p.max_value) {
        return absl::InvalidArgumentError(absl::StrCat(
            "spec ", where, ": out of range, expected an integer in ",
            RangeText(p)));
      }
      return absl::StrCat(v);
    }
    case ParamType::kFloat: {
      double v = 0;
      const char* end = value.data() + value.size();
      const auto res = std::from_chars(value.data(), end, v);
      if (res.ec != std::errc() || res.ptr != end || !std::isfinite(v)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "spec ", where, ": expected a finite number in ", RangeText(p)));
      }
      if (v < p.min_value || v > p.max_value) {
        return absl::InvalidArgumentError(absl::StrCat(
            "spec ", where, ": out of range, expected a number in ",
            RangeText(p)));
      }
      if (v == 0) v = 0;  // print -0 as 0
      return FormatDouble(v);
    }
    case ParamType::kEnum:
      for (const std::string& c : p.choices) {
        if (c == value) return c;
      }
      return absl::InvalidArgumentError(
          absl::StrCat("spec ", where, ": expected one of ",
                       absl::StrJoin(p.choices, ", ")));
    case ParamType::kBool:
      if (value == "true" || value == "1") return std::string("true");
      if (value == "false" || value == "0") return std::string("false");
      return absl::InvalidArgumentError(
          absl::StrCat("spec ", where, ": expected true, false, 1 or 0"));
  }
  KVSKETCH_CHECK(false);
  return absl::InternalError("unreachable");
}

}  // namespace

absl::StatusOr<CanonicalSpec> internal::CanonicalizeWithKinds(
    absl::string_view spec, const std::vector<KindDef>& kinds) {
  KVSKETCH_ASSIGN_OR_RETURN(ParsedSpec parsed, ParseSpec(spec));
  CanonicalSpec out;
  for (const KindDef& k : kinds) {
    if (k.kind == parsed.kind) out.kind = &k;
  }
  if (out.kind == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown approximator kind \"", parsed.kind,
                     "\"; valid kinds: ", ValidKinds(kinds)));
  }
  const KindDef& kind = *out.kind;
  for (const auto& [key, value] : parsed.params) {
    bool known = false;
    for (const ParamDef& p : kind.params) known = known || p.name == key;
    if (!known) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown parameter \"", key, "\" for kind ", kind.kind,
                       "; valid keys: ", ValidKeys(kind)));
    }
  }
  std::vector<std::string> parts;
  for (const ParamDef& p : kind.params) {
    std::string value = p.default_value;
    for (const auto& [key, v] : parsed.params) {
      if (key == p.name) value = v;
    }
    KVSKETCH_ASSIGN_OR_RETURN(std::string canonical,
                              NormalizeValue(kind, p, value));
    parts.push_back(absl::StrCat(p.name, "=", canonical));
    out.params.Set(p.name, p.type, std::move(canonical));
  }
  out.text = parts.empty()
                 ? kind.kind
                 : absl::StrCat(kind.kind, ":", absl::StrJoin(parts, ","));
  return out;
}

int64_t SpecParams::GetInt(absl::string_view name) const {
  auto it = values_.find(name);
  KVSKETCH_CHECK(it != values_.end() && it->second.type == ParamType::kInt);
  int64_t v = 0;
  const std::string& t = it->second.text;
  std::from_chars(t.data(), t.data() + t.size(), v);
  return v;
}

double SpecParams::GetFloat(absl::string_view name) const {
  auto it = values_.find(name);
  KVSKETCH_CHECK(it != values_.end() && it->second.type == ParamType::kFloat);
  double v = 0;
  const std::string& t = it->second.text;
  std::from_chars(t.data(), t.data() + t.size(), v);
  return v;
}

const std::string& SpecParams::GetEnum(absl::string_view name) const {
  auto it = values_.find(name);
  KVSKETCH_CHECK(it != values_.end() && it->second.type == ParamType::kEnum);
  return it->second.text;
}

bool SpecParams::GetBool(absl::string_view name) const {
  auto it = values_.find(name);
  KVSKETCH_CHECK(it != values_.end() && it->second.type == ParamType::kBool);
  return it->second.text == "true";
}

void SpecParams::Set(absl::string_view name, ParamType type,
                     std::string value) {
  values_[name] = Value{type, std::move(value)};
}

const std::vector<KindDef>& RegisteredKinds() {
  // The table. One line per kind, in the order --help lists them.
  static const std::vector<KindDef>* const kinds = new std::vector<KindDef>{
      ExactKindDef(), SketchKindDef(), TopkKindDef(),
      EvictKindDef(), ZetaKindDef(),   ConvKindDef(),
  };
  return *kinds;
}

absl::StatusOr<std::string> CanonicalizeSpec(absl::string_view spec) {
  KVSKETCH_ASSIGN_OR_RETURN(CanonicalSpec c, internal::CanonicalizeWithKinds(
                                                 spec, RegisteredKinds()));
  return std::move(c.text);
}

absl::StatusOr<std::unique_ptr<Approximator>> CreateApproximator(
    absl::string_view spec, const HeadShape& shape) {
  if (shape.head_dim < 1 || shape.head_dim > 65536) {
    return absl::InvalidArgumentError(
        absl::StrCat("head_dim (", shape.head_dim, ") must be in [1, 65536]"));
  }
  if (shape.value_dim < 1 || shape.value_dim > 65536) {
    return absl::InvalidArgumentError(absl::StrCat(
        "value_dim (", shape.value_dim, ") must be in [1, 65536]"));
  }
  if (!std::isfinite(shape.scale) || !(shape.scale > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("scale (", shape.scale, ") must be finite and > 0"));
  }
  KVSKETCH_ASSIGN_OR_RETURN(CanonicalSpec c, internal::CanonicalizeWithKinds(
                                                 spec, RegisteredKinds()));
  return c.kind->create(c.params, shape, std::move(c.text));
}

std::string DescribeRegisteredKinds() {
  std::string out;
  for (const KindDef& k : RegisteredKinds()) {
    absl::StrAppend(&out, k.kind, ": ", k.summary, "\n");
    for (const ParamDef& p : k.params) {
      std::string type;
      switch (p.type) {
        case ParamType::kInt:
          type = absl::StrCat("int in ", RangeText(p));
          break;
        case ParamType::kFloat:
          type = absl::StrCat("float in ", RangeText(p));
          break;
        case ParamType::kEnum:
          type = absl::StrJoin(p.choices, "|");
          break;
        case ParamType::kBool:
          type = "true|false";
          break;
      }
      absl::StrAppend(&out, "  ", p.name, "=", type, " (default ",
                      p.default_value, "): ", p.help, "\n");
    }
  }
  return out;
}

}  // namespace kvsketch
