// File: tests/core/snapshot_test.cc
//
// SessionState::Save/Load inside the snapshot envelope: exact round trips,
// and every truncation and many bit flips of a small snapshot rejected with
// DataLoss (never a crash: run under -fsanitize=address to check that too).
#include "core/io/snapshot.h"

#include <random>
#include <string>
#include <vector>

#include "core/io/byte_io.h"
#include "core/registry.h"
#include "core/session_state.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/core/testing/reference_attention.h"

namespace kvsketch {
namespace {

using ::kvsketch::testing::RandomNormal;
using ::testing::HasSubstr;

std::unique_ptr<SessionState> MakeSession(int64_t tokens) {
  SessionConfig c;
  c.num_layers = 2;
  c.num_kv_heads = 2;
  c.num_query_heads = 4;
  c.head_dim = 4;
  c.value_dim = 3;
  c.max_tokens = 1000;
  c.layer_specs[1] = "exact:store=f16";
  auto s = SessionState::Create(c);
  EXPECT_TRUE(s.ok()) << s.status();
  const auto k = RandomNormal(1, 2 * tokens * 4),
             v = RandomNormal(2, 2 * tokens * 3);
  EXPECT_TRUE((*s)->Append(0, tokens, k, v).ok());
  EXPECT_TRUE((*s)->Append(1, tokens, k, v).ok());
  return *std::move(s);
}

std::string Snapshot(const SessionState& s) {
  ByteWriter w;
  EXPECT_TRUE(s.Save(w).ok());
  return WrapSnapshot(w.data());
}

absl::StatusOr<std::unique_ptr<SessionState>> Restore(absl::string_view blob) {
  auto payload = UnwrapSnapshot(blob);
  if (!payload.ok()) return payload.status();
  ByteReader r(*payload);
  auto s = SessionState::Load(r);
  if (s.ok()) {
    absl::Status end = r.ExpectEnd("session");
    if (!end.ok()) return end;
  }
  return s;
}

std::vector<float> QueryAll(SessionState& s, int layer) {
  const auto q = RandomNormal(9, 4 * 2 * 4);
  std::vector<float> out(4 * 2 * 3);
  EXPECT_TRUE(s.Step(layer, 0, {}, {}, 2, q, absl::MakeSpan(out)).ok());
  return out;
}

TEST(SnapshotTest, EnvelopeRoundTrip) {
  for (const std::string& payload :
       {std::string(), std::string("abc"), std::string(100000, '\x07')}) {
    const std::string blob = WrapSnapshot(payload);
    EXPECT_EQ(blob.size(), payload.size() + 28);
    auto back = UnwrapSnapshot(blob);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, payload);
  }
}

TEST(SnapshotTest, SessionRoundTripIsBitExact) {
  auto s = MakeSession(40);
  const std::string blob = Snapshot(*s);
  auto back = Restore(blob);
  ASSERT_TRUE(back.ok()) << back.status();
  SessionState& r = **back;
  EXPECT_EQ(r.tokens_per_layer(), s->tokens_per_layer());
  EXPECT_EQ(r.config().spec, s->config().spec);
  EXPECT_EQ(r.config().layer_specs, s->config().layer_specs);
  EXPECT_EQ(r.config().max_tokens, 1000);
  EXPECT_EQ(r.config().scale, s->config().scale);
  EXPECT_EQ(r.layer_spec(1), "exact:store=f16");
  EXPECT_EQ(r.MemoryBytes(), s->MemoryBytes());
  for (int layer : {0, 1}) EXPECT_EQ(QueryAll(r, layer), QueryAll(*s, layer));
  EXPECT_EQ(Snapshot(r), blob);
}

TEST(SnapshotTest, EveryTruncationIsDataLoss) {
  auto s = MakeSession(3);
  const std::string blob = Snapshot(*s);
  for (size_t cut = 0; cut < blob.size(); ++cut) {
    auto r = Restore(absl::string_view(blob).substr(0, cut));
    ASSERT_FALSE(r.ok()) << cut;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << cut;
  }
  // Trailing garbage too.
  auto r = Restore(blob + "x");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
}

TEST(SnapshotTest, BitFlipsAreDataLoss) {
  auto s = MakeSession(3);
  const std::string blob = Snapshot(*s);
  // Every bit of the envelope header and trailer, and 2000 random bits.
  std::vector<size_t> bits;
  for (size_t b = 0; b < 24 * 8; ++b) bits.push_back(b);
  for (size_t b = (blob.size() - 4) * 8; b < blob.size() * 8; ++b)
    bits.push_back(b);
  std::mt19937_64 rng(5);
  for (int i = 0; i < 2000; ++i) bits.push_back(rng() % (blob.size() * 8));
  for (size_t b : bits) {
    std::string bad = blob;
    bad[b / 8] = static_cast<char>(bad[b / 8] ^ (1 << (b % 8)));
    auto r = Restore(bad);
    ASSERT_FALSE(r.ok()) << "bit " << b;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << "bit " << b;
  }
}

TEST(SnapshotTest, WrongVersionAndMagicAreNamed) {
  auto s = MakeSession(2);
  std::string blob = Snapshot(*s);
  std::string v2 = blob;
  v2[8] = 2;
  auto r = Restore(v2);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(r.status().message(), HasSubstr("version 2"));
  std::string magic = blob;
  magic[0] = 'X';
  EXPECT_THAT(Restore(magic).status().message(), HasSubstr("magic"));
  std::string crc = blob;
  crc[30] ^= 1;
  EXPECT_THAT(Restore(crc).status().message(), HasSubstr("checksum"));
}

// The payload is parsed defensively even when the checksum is right (a
// buggy or hostile writer): corrupt fields are DataLoss, not crashes.
TEST(SnapshotTest, CorruptPayloadWithValidChecksumIsDataLoss) {
  auto s = MakeSession(3);
  ByteWriter w;
  ASSERT_TRUE(s->Save(w).ok());
  const std::string payload = w.data();
  std::mt19937_64 rng(7);
  int rejected = 0;
  for (size_t i = 0; i < payload.size(); ++i) {
    for (uint8_t x : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xff}}) {
      std::string bad = payload;
      bad[i] = static_cast<char>(bad[i] ^ x);
      auto r = Restore(WrapSnapshot(bad));
      if (!r.ok()) {
        EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << i;
        ++rejected;
      }
    }
  }
  // Flips inside stored floats are legitimately accepted; flips in the
  // structure (tags, counts, lengths, specs) must be caught.
  EXPECT_GT(rejected, 100);
  // Session payload version.
  ByteWriter hostile;
  hostile.PutString("kvsketch.session");
  hostile.PutU32(9);
  EXPECT_THAT(Restore(WrapSnapshot(hostile.data())).status().message(),
              HasSubstr("session format version 9"));
}

TEST(SnapshotTest, HostileHeadCountIsRefusedBeforeBuilding) {
  ByteWriter w;
  w.PutString("kvsketch.session");
  w.PutU32(1);
  for (uint32_t v : {1024u, 1024u, 1024u, 65536u, 65536u}) w.PutU32(v);
  w.PutF32(1.0f / 256);
  w.PutString("exact:store=f32");
  w.PutI64(0);
  w.PutU32(0);
  auto r = Restore(WrapSnapshot(w.data()));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(r.status().message(), HasSubstr("heads"));
}

// Regression (found by tests/fuzz/snapshot_fuzzer.cc, UBSan): topk, zeta,
// conv and evict checked a state's token count with n * (d + dv) * 4 >
// remaining, which wraps for a hostile n; the count then overflowed int64
// in n * d and the rebuild read past the decoded keys. With d = dv = 8 a
// row is 64 bytes (80 for evict's stored rows) and these counts wrap the
// product to 64 bytes, which the blob holds.
TEST(SnapshotTest, TokenCountWhoseSizeWrapsIsDataLoss) {
  const HeadShape shape{8, 8, 0.35f};
  const int64_t wraps_64 = int64_t{1} << 58;      // * 64 = 2^64
  const int64_t wraps_80 = static_cast<int64_t>(  // * 80 = 2^64 + 64
      ((__uint128_t{1} << 64) + 64) / 80);
  for (const char* spec : {"topk", "zeta", "conv", "evict:alpha=1,c=1"}) {
    SCOPED_TRACE(spec);
    auto a = CreateApproximator(spec, shape);
    ASSERT_TRUE(a.ok()) << a.status();
    ByteWriter empty;
    ASSERT_TRUE((*a)->SaveState(empty).ok());
    ByteWriter w;
    w.PutU8(static_cast<uint8_t>(empty.data()[0]));  // the state version
    const bool evict = std::string(spec).starts_with("evict");
    w.PutI64(evict ? wraps_80 + 1 : wraps_64 + 1);  // n
    if (evict) w.PutI64(wraps_80);                  // stored
    const std::string pad(256, '\0');
    w.PutBytes(pad.data(), pad.size());
    ByteReader r(w.data());
    const absl::Status s = (*a)->LoadState(r);
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    EXPECT_EQ((*a)->num_tokens(), 0);
  }
}

}  // namespace
}  // namespace kvsketch
