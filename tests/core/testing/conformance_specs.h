// File: tests/core/testing/conformance_specs.h
//
// The specs the conformance suite (tests/core/conformance_test.cc) runs, one
// entry per configuration worth testing, with the error the kind documents
// against the double-precision reference. Adding a kind = adding lines here.
#ifndef KVSKETCH_TESTS_CORE_TESTING_CONFORMANCE_SPECS_H_
#define KVSKETCH_TESTS_CORE_TESTING_CONFORMANCE_SPECS_H_

#include <string>
#include <vector>

namespace kvsketch::testing {

struct ConformanceSpec {
  std::string spec;
  // Unit roundoff of the kind's stored representation, fed to
  // AttentionTolerance (reference_attention.h); 0 would mean bit-exact.
  double store_unit = 0;
  // Extra absolute error allowed, relative to max|V| (approximate kinds).
  double extra_rel_error = 0;
};

const std::vector<ConformanceSpec>& AllConformanceSpecs();

}  // namespace kvsketch::testing

#endif  // KVSKETCH_TESTS_CORE_TESTING_CONFORMANCE_SPECS_H_
