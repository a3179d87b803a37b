// File: core/registry.h
//
// The one table of approximator kinds (core/registry.cc), in the manner of
// faiss's index_factory: a spec string names a kind and its parameters; the
// registry checks them, fills defaults, prints the canonical form, and calls
// the kind's factory.
//
//   auto a = CreateApproximator("exact:store=f16", {128, 128, 0.088f});
//   (*a)->Spec()  == "exact:store=f16"
//   CanonicalizeSpec("exact") == "exact:store=f32"
//
// The canonical form lists every declared parameter of the kind, in declared
// order, with normalised values (shortest round-trip numbers), so
// CanonicalizeSpec(CanonicalizeSpec(s)) == CanonicalizeSpec(s) and two specs
// that build the same approximator print the same.
//
// Adding a kind: write its KindDef in its folder, add one line to the table
// in registry.cc, and add its specs to AllConformanceSpecs() in the tests.
#ifndef KVSKETCH_CORE_REGISTRY_H_
#define KVSKETCH_CORE_REGISTRY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/approximator.h"

namespace kvsketch {

enum class ParamType { kInt, kFloat, kEnum, kBool };

struct ParamDef {
  std::string name;
  ParamType type = ParamType::kInt;
  std::string default_value;         // in canonical form
  std::vector<std::string> choices;  // kEnum only
  double min_value = -1e300;         // kInt / kFloat, inclusive
  double max_value = 1e300;
  std::string help;
};

// Parameter values after the registry has checked and normalised them, so
// the getters cannot fail. REQUIRES: name is a declared parameter of the
// kind with the matching type (a programmer error otherwise: aborts).
class SpecParams {
 public:
  int64_t GetInt(absl::string_view name) const;
  double GetFloat(absl::string_view name) const;
  const std::string& GetEnum(absl::string_view name) const;
  bool GetBool(absl::string_view name) const;

  // Used by the registry only.
  void Set(absl::string_view name, ParamType type, std::string value);

 private:
  struct Value {
    ParamType type;
    std::string text;
  };
  absl::flat_hash_map<std::string, Value> values_;
};

struct KindDef {
  std::string kind;     // e.g. "exact"
  std::string summary;  // one line for --help and error messages
  std::vector<ParamDef> params;
  // Builds an empty approximator. canonical_spec is what Spec() must return.
  // Cross-parameter or shape-dependent checks return InvalidArgument here.
  absl::StatusOr<std::unique_ptr<Approximator>> (*create)(
      const SpecParams& params, const HeadShape& shape,
      std::string canonical_spec) = nullptr;
};

// Every registered kind, in table order.
const std::vector<KindDef>& RegisteredKinds();

// InvalidArgument naming the valid kinds / keys / values on error.
absl::StatusOr<std::string> CanonicalizeSpec(absl::string_view spec);

// InvalidArgument for a bad spec or a bad shape (head_dim and value_dim in
// [1, 65536], scale finite and > 0).
absl::StatusOr<std::unique_ptr<Approximator>> CreateApproximator(
    absl::string_view spec, const HeadShape& shape);

// Multi-line description of every kind and its parameters (for --help).
std::string DescribeRegisteredKinds();

}  // namespace kvsketch

#endif  // KVSKETCH_CORE_REGISTRY_H_
