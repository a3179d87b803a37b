// File: tests/fuzz/npy_fuzzer.cc
//
// libFuzzer target: the .npy reader (core/io/npy.h), which the CLI, the
// eval harness (trace directories) and `kvsketch llama` feed with files a
// user or a script made. The input is the file's bytes. Checked:
//   - every rejection is InvalidArgument or DataLoss (npy.h), never a crash,
//     an overread or an allocation the file's size does not justify;
//   - an accepted array has product(shape) == data.size() elements and
//     round-trips bit-exactly through SerializeNpy (f4, version 1.0), the
//     writer the project uses for everything it saves.
// Cost per input: O(file size).
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/io/npy.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvsketch;  // NOLINT(build/namespaces): harness entry
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<NpyArray> parsed = ParseNpy(bytes, "fuzz.npy");
  if (!parsed.ok()) {
    const absl::StatusCode code = parsed.status().code();
    KVSKETCH_FUZZ_CHECK(code == absl::StatusCode::kInvalidArgument ||
                            code == absl::StatusCode::kDataLoss,
                        parsed.status().ToString());
    return 0;
  }
  // A zero dimension makes any others legal, however large: the product is
  // taken only when it is not zero, and must then not overflow.
  int64_t elements = 1;
  bool empty = false;
  for (int64_t dim : parsed->shape) {
    KVSKETCH_FUZZ_CHECK(dim >= 0, absl::StrCat("dimension ", dim));
    empty = empty || dim == 0;
  }
  for (int64_t dim : parsed->shape) {
    if (empty) {
      elements = 0;
      break;
    }
    KVSKETCH_FUZZ_CHECK(!__builtin_mul_overflow(elements, dim, &elements),
                        "shape product overflows int64");
  }
  KVSKETCH_FUZZ_CHECK(
      static_cast<size_t>(elements) == parsed->data.size(),
      absl::StrCat(elements, " elements vs ", parsed->data.size(), " read"));
  // Every element took at least 2 bytes of the file (f2 is the narrowest).
  KVSKETCH_FUZZ_CHECK(
      parsed->data.size() <= size / 2,
      absl::StrCat(parsed->data.size(), " elements from ", size, " bytes"));

  const std::string written = SerializeNpy(parsed->shape, parsed->data);
  const absl::StatusOr<NpyArray> again = ParseNpy(written, "rewritten.npy");
  KVSKETCH_FUZZ_CHECK(again.ok(), again.status().ToString());
  KVSKETCH_FUZZ_CHECK(again->shape == parsed->shape, "shape changed");
  KVSKETCH_FUZZ_CHECK(
      again->data.size() == parsed->data.size() &&
          (parsed->data.empty() ||
           std::memcmp(again->data.data(), parsed->data.data(),
                       parsed->data.size() * sizeof(float)) == 0),
      "data changed in the f4 round trip");
  return 0;
}
