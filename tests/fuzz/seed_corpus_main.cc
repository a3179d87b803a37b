// File: tests/fuzz/seed_corpus_main.cc
//
// Writes the seed corpora of the four fuzz targets (tests/fuzz/corpus/<t>/)
// from real inputs made by the project's own writers -- SerializeNpy,
// Session::SavePayload, EncodeTensor, the registry's canonical specs -- plus
// a few hand-made edge cases (other .npy versions and dtypes, truncations,
// shapes that disagree with the session). Seeds give the fuzzer valid
// structure to mutate from; without them it spends its time rediscovering
// magic numbers. Run by tests/fuzz/make_corpus.sh.
//
// Usage: kvsketch_fuzz_seeds OUT_DIR
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/io/npy.h"
#include "core/io/snapshot.h"
#include "core/registry.h"
#include "server/session.h"
#include "tests/fuzz/fuzz_util.h"
#include "wire/tensor_codec.h"

namespace kvsketch::fuzz {
namespace {

namespace fs = std::filesystem;

int g_written = 0;

void Write(const fs::path& dir, const std::string& name,
           const std::string& bytes) {
  std::ofstream f(dir / name, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) {
    std::fprintf(stderr, "cannot write %s\n", (dir / name).c_str());
    std::exit(1);
  }
  ++g_written;
}

// ---- spec ----

void SpecSeeds(const fs::path& dir) {
  int i = 0;
  for (const KindDef& kind : RegisteredKinds()) {
    Write(dir, absl::StrCat("kind_", kind.kind), kind.kind);
    absl::StatusOr<std::string> canonical = CanonicalizeSpec(kind.kind);
    if (canonical.ok()) {
      Write(dir, absl::StrCat("canonical_", kind.kind), *canonical);
    }
  }
  for (const std::string& spec : HarnessSpecs()) {
    Write(dir, absl::StrCat("harness_", i++), spec);
  }
  const char* edge[] = {"",
                        " exact ",
                        "exact:",
                        ":store=f16",
                        "exact:store=",
                        "exact:store=f16,store=f32",
                        "EXACT",
                        "topk:alpha=1e309",
                        "topk:alpha=nan,c=-0",
                        "sketch:features=0",
                        "sketch:features=2048,window=100000",
                        "zeta:dims=64,curves=64,chunk=1",
                        "conv:k=1000,tau=0,max_error=1000,min_tokens=1",
                        "evict:alpha=0.5,c=1.5,sinks=0,window=0",
                        "topk:k=0,select=blocks,block=1"};
  i = 0;
  for (const char* e : edge) Write(dir, absl::StrCat("edge_", i++), e);
}

// ---- npy ----

// A .npy file with a hand-written header (format versions 1-3).
std::string NpyFile(int major, const std::string& dict,
                    const std::string& body) {
  const size_t len_bytes = major == 1 ? 2 : 4;
  std::string header = dict;
  const size_t fixed = 6 + 2 + len_bytes;
  while ((fixed + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  for (size_t b = 0; b < len_bytes; ++b) {
    out += static_cast<char>((header.size() >> (8 * b)) & 0xff);
  }
  return out + header + body;
}

std::string Dict(const std::string& descr, bool fortran,
                 const std::string& shape) {
  return absl::StrCat("{'descr': '", descr,
                      "', 'fortran_order': ", fortran ? "True" : "False",
                      ", 'shape': ", shape, ", }");
}

void NpySeeds(const fs::path& dir) {
  const std::vector<float> v = Ramp(24, 3);
  Write(dir, "f4_2x3x4", SerializeNpy({2, 3, 4}, v));
  Write(dir, "f4_scalar", SerializeNpy({}, {v[0]}));
  Write(dir, "f4_empty", SerializeNpy({0, 4}, {}));
  Write(dir, "f4_rank4",
        SerializeNpy({1, 2, 3, 2},
                     std::vector<float>(v.begin(), v.begin() + 12)));
  const std::string f4(reinterpret_cast<const char*>(v.data()), 6 * 4);
  std::string f2, f8;
  for (int i = 0; i < 6; ++i) {
    const uint16_t h = static_cast<uint16_t>(0x3c00 + i * 0x100);  // 1, 2, ...
    f2.append(reinterpret_cast<const char*>(&h), 2);
    const double d = v[i];
    f8.append(reinterpret_cast<const char*>(&d), 8);
  }
  Write(dir, "f2_v1", NpyFile(1, Dict("<f2", false, "(2, 3)"), f2));
  Write(dir, "f8_v1", NpyFile(1, Dict("<f8", false, "(6,)"), f8));
  Write(dir, "f4_v2", NpyFile(2, Dict("<f4", false, "(3, 2)"), f4));
  Write(dir, "f4_v3", NpyFile(3, Dict("<f4", false, "(6,)"), f4));
  Write(dir, "edge_fortran", NpyFile(1, Dict("<f4", true, "(2, 3)"), f4));
  Write(dir, "edge_bigendian", NpyFile(1, Dict(">f4", false, "(6,)"), f4));
  Write(dir, "edge_int", NpyFile(1, Dict("<i4", false, "(6,)"), f4));
  Write(dir, "edge_short_body", NpyFile(1, Dict("<f4", false, "(7,)"), f4));
  Write(dir, "edge_long_body", NpyFile(1, Dict("<f4", false, "(5,)"), f4));
  Write(dir, "edge_huge_shape",
        NpyFile(1, Dict("<f4", false, "(4294967296, 4294967296)"), f4));
  // Zero elements, so legal however large the other dimensions are (found
  // by the fuzzer: a product of the shape overflowed in a caller).
  Write(dir, "edge_zero_dim_huge",
        NpyFile(1, Dict("<f8", false, "(4294967296, 0, 4294967296)"), ""));
  Write(dir, "edge_negative_dim",
        NpyFile(1, Dict("<f4", false, "(-1, 6)"), f4));
  Write(dir, "edge_keys_reordered",
        NpyFile(1, "{'shape': (6,), 'fortran_order': False, 'descr': '<f4'}",
                f4));
  const std::string ok = SerializeNpy({2, 3}, std::vector<float>(6, 1.0f));
  Write(dir, "edge_truncated_header", ok.substr(0, 20));
  Write(dir, "edge_magic_only", ok.substr(0, 8));
}

// ---- snapshot ----

void SnapshotSeeds(const fs::path& dir) {
  ServerPieces& p = Pieces();
  const std::vector<std::string>& specs = HarnessSpecs();
  for (size_t i = 0; i < specs.size() + 1; ++i) {
    SessionConfig config = HarnessConfig(specs[i % specs.size()]);
    if (i == specs.size()) config.layer_specs[1] = "topk:c=0.5";  // override
    const std::string id = absl::StrCat("seed", i);
    auto session = p.sessions.Create(id, config, "");
    if (!session.ok()) {
      std::fprintf(stderr, "seed session %s: %s\n", config.spec.c_str(),
                   session.status().ToString().c_str());
      std::exit(1);
    }
    const SessionConfig& c = (*session)->config();
    const int64_t t = 10;
    absl::Status s = (*session)->AppendAllLayers(
        t, Ramp(size_t{2} * c.num_kv_heads * t * c.head_dim, i),
        Ramp(size_t{2} * c.num_kv_heads * t * c.value_dim, i + 1));
    // A causal step of 3 (Prefill: conv fits, zeta indexes) and a query.
    for (int layer = 0; layer < c.num_layers && s.ok(); ++layer) {
      std::vector<float> out(size_t{4} * 3 * c.value_dim);
      int64_t tokens = 0;
      s = (*session)->Step(layer, 3, Ramp(size_t{2} * 3 * c.head_dim, 5),
                           Ramp(size_t{2} * 3 * c.value_dim, 6), 3,
                           Ramp(size_t{4} * 3 * c.head_dim, 7),
                           absl::MakeSpan(out), &tokens);
      if (s.ok()) {
        s = (*session)->Step(
            layer, 0, {}, {}, 1, Ramp(size_t{4} * c.head_dim, 8),
            absl::MakeSpan(out).subspan(0, 4 * c.value_dim), &tokens);
      }
    }
    absl::StatusOr<std::string> payload = (*session)->SavePayload();
    if (!s.ok() || !payload.ok()) {
      std::fprintf(stderr, "seed session %s: %s %s\n", config.spec.c_str(),
                   s.ToString().c_str(), payload.status().ToString().c_str());
      std::exit(1);
    }
    Write(dir, absl::StrCat("payload_", i), *payload);
    if (i == 0) {
      Write(dir, "envelope_exact", WrapSnapshot(*payload));
      std::string bad_crc = WrapSnapshot(*payload);
      bad_crc.back() ^= 1;
      Write(dir, "edge_envelope_bad_crc", bad_crc);
      Write(dir, "edge_envelope_truncated",
            WrapSnapshot(*payload).substr(0, 40));
      Write(dir, "edge_payload_truncated",
            payload->substr(0, payload->size() / 2));
    }
    session->reset();
    (void)p.sessions.Delete(id, "");
  }
}

// ---- request ----

enum Kind { kAppend, kAttend, kDecode, kPrefill, kCreate };

std::string Request(Kind kind, int spec, int prefill,
                    const google::protobuf::Message& m) {
  std::string out;
  out += static_cast<char>(kind);
  out += static_cast<char>(spec);
  out += static_cast<char>(prefill);
  return out + m.SerializeAsString();
}

void Fill(v1::Tensor* t, std::vector<int64_t> shape, v1::DType dtype) {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  EncodeTensor(shape, Ramp(n, static_cast<uint32_t>(n)), dtype, t);
}

void RequestSeeds(const fs::path& dir) {
  const SessionConfig c = HarnessConfig("exact");
  const int kv = c.num_kv_heads, q = c.num_query_heads, d = c.head_dim,
            dv = c.value_dim;
  const int topk = 5;  // HarnessSpecs()[5]: diagnostics
  {
    v1::AppendRequest r;
    r.set_layer(1);
    Fill(r.mutable_keys(), {kv, 2, d}, v1::F32);
    Fill(r.mutable_values(), {kv, 2, dv}, v1::F32);
    Write(dir, "append_layer", Request(kAppend, 0, 0, r));
    Fill(r.mutable_keys(), {kv, 2, d}, v1::F16);
    Fill(r.mutable_values(), {kv, 2, dv}, v1::BF16);
    Write(dir, "append_f16_bf16", Request(kAppend, 1, 2, r));
    r.set_all_layers(true);
    Fill(r.mutable_keys(), {c.num_layers, kv, 3, d}, v1::F32);
    Fill(r.mutable_values(), {c.num_layers, kv, 3, dv}, v1::F32);
    Write(dir, "append_all_layers", Request(kAppend, 3, 1, r));
    Fill(r.mutable_keys(), {c.num_layers, kv, d}, v1::F32);
    Fill(r.mutable_values(), {c.num_layers, kv, dv}, v1::F32);
    Write(dir, "append_all_layers_rank3", Request(kAppend, 8, 4, r));
    r.mutable_keys()->set_data("short");
    Write(dir, "edge_append_bad_bytes", Request(kAppend, 0, 0, r));
  }
  {
    v1::AttendRequest r;
    r.set_layer(0);
    Fill(r.mutable_queries(), {q, 1, d}, v1::F32);
    Write(dir, "attend_query", Request(kAttend, 0, 3, r));
    Write(dir, "edge_attend_empty_layer", Request(kAttend, 2, 0, r));
    Fill(r.mutable_keys(), {kv, 1, d}, v1::F32);
    Fill(r.mutable_values(), {kv, 1, dv}, v1::F32);
    r.set_want_diagnostics(true);
    Write(dir, "attend_step_diagnostics", Request(kAttend, topk, 5, r));
    Write(dir, "attend_step_sketch", Request(kAttend, 3, 5, r));
    Fill(r.mutable_queries(), {q, 1, dv}, v1::F32);
    Write(dir, "edge_attend_bad_dim", Request(kAttend, 0, 1, r));
    r.mutable_queries()->clear_shape();
    r.mutable_queries()->add_shape(-1);
    r.mutable_queries()->add_shape(q);
    r.mutable_queries()->add_shape(d);
    Write(dir, "edge_attend_negative_dim", Request(kAttend, 0, 1, r));
  }
  {
    v1::DecodeRequest r;
    r.set_step_id(7);
    v1::DecodeEntry* e0 = r.add_entries();
    e0->set_layer(0);
    Fill(e0->mutable_keys(), {kv, 1, d}, v1::F32);
    Fill(e0->mutable_values(), {kv, 1, dv}, v1::F32);
    Fill(e0->mutable_queries(), {q, 1, d}, v1::F32);
    v1::DecodeEntry* e1 = r.add_entries();
    e1->set_layer(1);
    Fill(e1->mutable_queries(), {q, 1, d}, v1::F16);
    e1->set_want_diagnostics(true);
    v1::DecodeEntry* e2 = r.add_entries();
    e2->set_layer(1);
    Fill(e2->mutable_keys(), {kv, d}, v1::F32);
    Fill(e2->mutable_values(), {kv, dv}, v1::F32);
    Write(dir, "decode_step", Request(kDecode, topk, 2, r));
    Write(dir, "decode_step_zeta", Request(kDecode, 8, 7, r));
    Write(dir, "decode_step_conv", Request(kDecode, 9, 7, r));
    e2->set_layer(5);
    Write(dir, "edge_decode_bad_layer", Request(kDecode, 0, 2, r));
  }
  {
    v1::PrefillRequest r;
    r.set_layer(1);
    Fill(r.mutable_queries(), {q, 4, d}, v1::F32);
    Fill(r.mutable_keys(), {kv, 4, d}, v1::F32);
    Fill(r.mutable_values(), {kv, 4, dv}, v1::F32);
    Write(dir, "prefill", Request(kPrefill, 0, 0, r));
    Write(dir, "prefill_conv", Request(kPrefill, 9, 3, r));
    Write(dir, "prefill_zeta", Request(kPrefill, 8, 6, r));
    Fill(r.mutable_queries(), {q, 3, d}, v1::F32);
    Write(dir, "edge_prefill_m_ne_t", Request(kPrefill, 0, 0, r));
  }
  {
    v1::CreateSessionRequest r;
    r.set_session_id("made-by-seed");
    v1::SessionConfig* sc = r.mutable_config();
    sc->set_num_layers(2);
    sc->set_num_kv_heads(2);
    sc->set_num_query_heads(4);
    sc->set_head_dim(8);
    sc->set_spec("topk:c=0.5");
    (*sc->mutable_layer_specs())[1] = "exact:store=f16";
    sc->set_max_tokens(16);
    Write(dir, "create", Request(kCreate, 0, 0, r));
    r.clear_session_id();
    sc->set_value_dim(3);
    sc->set_scale(0.5f);
    sc->set_spec("sketch:features=8");
    Write(dir, "create_random_id", Request(kCreate, 0, 0, r));
    sc->set_num_query_heads(3);
    Write(dir, "edge_create_bad_group", Request(kCreate, 0, 0, r));
    r.set_session_id("bad id!");
    Write(dir, "edge_create_bad_id", Request(kCreate, 0, 0, r));
  }
}

}  // namespace
}  // namespace kvsketch::fuzz

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const fs::path out(argv[1]);
  for (const char* t : {"spec", "npy", "snapshot", "request"}) {
    fs::create_directories(out / t);
  }
  kvsketch::fuzz::SpecSeeds(out / "spec");
  kvsketch::fuzz::NpySeeds(out / "npy");
  kvsketch::fuzz::SnapshotSeeds(out / "snapshot");
  kvsketch::fuzz::RequestSeeds(out / "request");
  std::printf("kvsketch_fuzz_seeds: wrote %d seeds under %s\n",
              kvsketch::fuzz::g_written, out.c_str());
  return 0;
}
