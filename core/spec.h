// File: core/spec.h
//
// Approximator spec strings: "kind" or "kind:key=value,key=value". This
// header does the syntax only; core/registry.h checks kinds and keys against
// the registered table and prints the canonical form.
//
//   ParseSpec("topk:alpha=2,c=0.5") -> {kind "topk",
//   {{"alpha","2"},{"c","0.5"}}}
//
// Grammar: kind and keys are [a-z0-9_]+; values are non-empty and contain no
// ',' ':' '=' or whitespace. Surrounding whitespace of the whole string is
// trimmed. A key given twice is an error.
#ifndef KVSKETCH_CORE_SPEC_H_
#define KVSKETCH_CORE_SPEC_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvsketch {

struct ParsedSpec {
  std::string kind;
  std::vector<std::pair<std::string, std::string>> params;  // as written
};

absl::StatusOr<ParsedSpec> ParseSpec(absl::string_view spec);

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_SPEC_H_
