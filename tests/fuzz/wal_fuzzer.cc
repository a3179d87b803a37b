// File: tests/fuzz/wal_fuzzer.cc
//
// libFuzzer target: the write-ahead log segment reader
// (server/durability/wal.h), which recovery runs at every start over files a
// crash may have torn or a disk may have damaged. The input is one segment
// file's bytes. Checked: the parse answers OK (a clean log, or one whose
// torn tail recovery would cut) or DataLoss, never anything else, and never
// crashes, overreads or allocates more than the input justifies (ASan).
// Cost per input: O(size) (the reader's contract).
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "server/durability/wal.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  const absl::Status status =
      kvsketch::server::durability::ParseWalForFuzzing(bytes);
  KVSKETCH_FUZZ_CHECK(
      status.ok() || status.code() == absl::StatusCode::kDataLoss,
      status.ToString());
  return 0;
}
