// File: tests/core/testing/conformance_specs.cc
#include "tests/core/testing/conformance_specs.h"

#include "tests/core/testing/reference_attention.h"

namespace kvsketch::testing {

const std::vector<ConformanceSpec>& AllConformanceSpecs() {
  static const std::vector<ConformanceSpec>* const specs =
      new std::vector<ConformanceSpec>{
          {"exact:store=f32", kF32Unit},
          {"exact:store=f16", kF16Unit},
          {"exact:store=bf16", kBf16Unit},
      };
  return *specs;
}

}  // namespace kvsketch::testing
