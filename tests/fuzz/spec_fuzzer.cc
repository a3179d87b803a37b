// File: tests/fuzz/spec_fuzzer.cc
//
// libFuzzer target: approximator spec strings (core/spec.h, core/registry.h),
// the text a client sends in SessionConfig.spec and layer_specs and the
// server reads from --default_spec. The input is the spec string. Checked:
//   - ParseSpec and CanonicalizeSpec agree on syntax errors, and errors are
//     InvalidArgument;
//   - canonicalisation is idempotent and keeps the kind (registry.h);
//   - an accepted spec builds a session (or refuses the shape with
//     InvalidArgument), whose approximators append, answer causal and
//     plain queries with finite outputs, and survive a Save/Load round
//     trip that saves to the same bytes.
// Cost per input: O(spec length) to parse, plus a 1-layer session of at
// most 12 tokens, so O(12 * d) per head beyond the kind's fixed set-up.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/io/byte_io.h"
#include "core/registry.h"
#include "core/session_state.h"
#include "core/spec.h"
#include "tests/fuzz/fuzz_util.h"

namespace kvsketch::fuzz {
namespace {

bool AllFinite(const std::vector<float>& v) {
  for (float x : v) {
    if (!std::isfinite(x)) return false;
  }
  return true;
}

// Builds a 1-layer session of the given shape with the canonical spec and
// drives every SessionState entry point once.
void ExerciseSpec(const std::string& canonical, int d, int dv) {
  SessionConfig c;
  c.num_layers = 1;
  c.num_kv_heads = 1;
  c.num_query_heads = 2;
  c.head_dim = d;
  c.value_dim = dv;
  c.spec = canonical;
  c.max_tokens = 64;
  absl::StatusOr<std::unique_ptr<SessionState>> created =
      SessionState::Create(c);
  if (!created.ok()) {
    // Cross-parameter and shape checks happen at creation (registry.h).
    KVSKETCH_FUZZ_CHECK(
        created.status().code() == absl::StatusCode::kInvalidArgument,
        created.status().ToString());
    return;
  }
  SessionState& s = **created;
  KVSKETCH_FUZZ_CHECK(s.layer_spec(0) == canonical, s.layer_spec(0));

  const int64_t t0 = 9, t1 = 3;
  std::vector<float> k = Ramp(t0 * d, 1), v = Ramp(t0 * dv, 2);
  absl::Status st = s.Step(0, t0, k, v, 0, {}, {});
  KVSKETCH_FUZZ_CHECK(st.ok(), st.ToString());

  // Causal step: T new tokens with one query each (Approximator::Prefill).
  std::vector<float> k1 = Ramp(t1 * d, 3), v1 = Ramp(t1 * dv, 4);
  std::vector<float> q1 = Ramp(2 * t1 * d, 5);
  std::vector<float> out1(2 * t1 * dv);
  st = s.Step(0, t1, k1, v1, t1, q1, absl::MakeSpan(out1));
  KVSKETCH_FUZZ_CHECK(st.ok(), st.ToString());
  KVSKETCH_FUZZ_CHECK(AllFinite(out1), "non-finite causal output");

  // Query-only step over all 12 tokens.
  std::vector<float> q2 = Ramp(2 * d, 6);
  std::vector<float> out2(2 * dv);
  st = s.Step(0, 0, {}, {}, 1, q2, absl::MakeSpan(out2));
  KVSKETCH_FUZZ_CHECK(st.ok(), st.ToString());
  KVSKETCH_FUZZ_CHECK(AllFinite(out2), "non-finite query output");
  KVSKETCH_FUZZ_CHECK(s.num_tokens(0) == t0 + t1,
                      absl::StrCat(s.num_tokens(0), " tokens"));

  ByteWriter w;
  st = s.Save(w);
  KVSKETCH_FUZZ_CHECK(st.ok(), st.ToString());
  ByteReader r(w.data());
  absl::StatusOr<std::unique_ptr<SessionState>> loaded = SessionState::Load(r);
  KVSKETCH_FUZZ_CHECK(loaded.ok(), loaded.status().ToString());
  KVSKETCH_FUZZ_CHECK(r.remaining() == 0, "Load left bytes unread");
  ByteWriter w2;
  st = (*loaded)->Save(w2);
  KVSKETCH_FUZZ_CHECK(st.ok(), st.ToString());
  KVSKETCH_FUZZ_CHECK(w2.data() == w.data(), "Save(Load(Save(s))) differs");
}

}  // namespace
}  // namespace kvsketch::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvsketch;  // NOLINT(build/namespaces): harness entry
  // Real specs are tens of bytes; longer inputs only dilute the search.
  if (size > 256) return 0;
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<ParsedSpec> parsed = ParseSpec(text);
  const absl::StatusOr<std::string> canonical = CanonicalizeSpec(text);
  if (!parsed.ok()) {
    KVSKETCH_FUZZ_CHECK(
        parsed.status().code() == absl::StatusCode::kInvalidArgument,
        parsed.status().ToString());
    KVSKETCH_FUZZ_CHECK(!canonical.ok(), "registry accepted a syntax error");
    return 0;
  }
  if (!canonical.ok()) {
    KVSKETCH_FUZZ_CHECK(
        canonical.status().code() == absl::StatusCode::kInvalidArgument,
        canonical.status().ToString());
    return 0;
  }
  const absl::StatusOr<std::string> again = CanonicalizeSpec(*canonical);
  KVSKETCH_FUZZ_CHECK(
      again.ok() && *again == *canonical,
      absl::StrCat(*canonical, " -> ",
                   again.ok() ? *again : again.status().ToString()));
  const absl::StatusOr<ParsedSpec> reparsed = ParseSpec(*canonical);
  KVSKETCH_FUZZ_CHECK(reparsed.ok() && reparsed->kind == parsed->kind,
                      *canonical);
  // Two shapes: the common d > dv, and a tiny odd d that trips any
  // dimension assumption (PCA to more dims than d, blocks wider than n).
  fuzz::ExerciseSpec(*canonical, 8, 4);
  fuzz::ExerciseSpec(*canonical, 3, 5);
  return 0;
}
