// File: core/registry_internal.h
//
// The registry's spec checking against an explicit kind table, so tests can
// exercise every parameter type (int ranges, floats, enums, bools) with a
// table of their own. Production code uses core/registry.h.
#ifndef KVSKETCH_CORE_REGISTRY_INTERNAL_H_
#define KVSKETCH_CORE_REGISTRY_INTERNAL_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/registry.h"

namespace kvsketch::internal {

struct CanonicalSpec {
  const KindDef* kind = nullptr;  // points into the table passed in
  std::string text;               // canonical spec string
  SpecParams params;              // checked, normalised values
};

// As CanonicalizeSpec, against `kinds` instead of RegisteredKinds().
absl::StatusOr<CanonicalSpec> CanonicalizeWithKinds(
    absl::string_view spec, const std::vector<KindDef>& kinds);

}  // namespace kvsketch::internal

#endif  // KVSKETCH_CORE_REGISTRY_INTERNAL_H_
