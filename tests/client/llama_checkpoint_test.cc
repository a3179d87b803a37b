// Checkpoint loading (issue #6): a missing file, a truncated or padded
// one, bad header fields and non-finite weights each fail with the exact
// status code and a message naming the path, the field or the byte counts;
// the shipped stories260K.bin loads with its documented shape.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/llama/checkpoint.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/test_util.h"
#include "tests/core/testing/reference_attention.h"

namespace kvsketch::llama {
namespace {

using ::kvsketch::testing::RandomNormal;
using ::testing::HasSubstr;

// dim 16, hidden 24, 2 layers, 4 heads over 2 KV heads, vocab 24, seq_len 12
// (the byte layout is checked against a hand-written file in
// llama_forward_test.cc).
LlamaCheckpoint Tiny(bool shared) {
  LlamaCheckpoint ck;
  LlamaConfig& c = ck.config;
  c.dim = 16;
  c.hidden_dim = 24;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.vocab_size = 24;
  c.seq_len = 12;
  c.shared_classifier = shared;
  const int64_t d = 16, f = 24, l = 2, kv = 8;
  uint64_t seed = 1;
  for (auto [v, n] : {std::pair{&ck.token_embedding, 24 * d},
                      {&ck.rms_att, l * d},
                      {&ck.wq, l * d * d},
                      {&ck.wk, l * kv * d},
                      {&ck.wv, l * kv * d},
                      {&ck.wo, l * d * d},
                      {&ck.rms_ffn, l * d},
                      {&ck.w1, l * f * d},
                      {&ck.w2, l * d * f},
                      {&ck.w3, l * f * d},
                      {&ck.rms_final, d}}) {
    *v = RandomNormal(seed++, n);
  }
  if (!shared) ck.classifier = RandomNormal(seed, 24 * d);
  return ck;
}

class CheckpointErrorTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::MakeTempDir(); }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path(const std::string& name) const {
    return absl::StrCat(dir_, "/", name);
  }
  std::string TinyBytes(bool shared = false) {
    EXPECT_TRUE(WriteCheckpoint(Path("tiny.bin"), Tiny(shared)).ok());
    std::ifstream in(Path("tiny.bin"), std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), {});
  }
  absl::Status LoadBytes(const std::string& bytes) {
    std::ofstream(Path("m.bin"), std::ios::binary) << bytes;
    return LoadCheckpoint(Path("m.bin")).status();
  }
  std::string WithHeader(int32_t index, int32_t value) {
    std::string b = TinyBytes();
    std::memcpy(b.data() + 4 * index, &value, 4);
    return b;
  }
  std::string dir_;
};

TEST_F(CheckpointErrorTest, MissingFileIsNotFound) {
  absl::Status s = LoadCheckpoint(Path("absent.bin")).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr(Path("absent.bin")));
}

TEST_F(CheckpointErrorTest, TruncatedFileIsDataLossWithByteCounts) {
  const std::string full = TinyBytes();
  absl::Status s = LoadBytes(full.substr(0, full.size() - 4));
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr(absl::StrCat(full.size() - 4,
                                                  " bytes, but the header")));
  EXPECT_THAT(s.message(),
              HasSubstr(absl::StrCat("implies ", full.size(), " (truncated)")));
  s = LoadBytes(full + "xxxx");
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("(trailing bytes)"));
  s = LoadBytes(full.substr(0, 10));
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(
      s.message(),
      HasSubstr("10 bytes, shorter than the 28-byte checkpoint header"));
}

TEST_F(CheckpointErrorTest, ClassifierSignMismatchIsExplained) {
  std::string b = TinyBytes(/*shared=*/true);
  const int32_t negative = -24;  // claims a separate classifier
  std::memcpy(b.data() + 20, &negative, 4);
  absl::Status st = LoadBytes(b);
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(st.message(), HasSubstr("check the sign of vocab_size"));
}

TEST_F(CheckpointErrorTest, BadHeaderFieldsAreInvalidArgument) {
  const struct {
    int index;
    int32_t value;
    const char* message;
  } cases[] = {
      {0, 0, "dim is 0, expected a value in [1, 65536]"},
      {1, -3, "hidden_dim is -3"},
      {2, 0, "n_layers is 0"},
      {3, 3, "dim (16) is not a multiple of n_heads (3)"},
      {4, 3, "n_heads (4) is not a multiple of n_kv_heads (3)"},
      {4, 0, "n_kv_heads is 0"},
      {5, 0, "|vocab_size| is 0"},
      {6, 0, "seq_len is 0"},
      {3, 16, "head_dim = dim / n_heads = 1 is odd"},
      {0, 0x616b3432, "'ak42' magic"},
  };
  for (const auto& c : cases) {
    absl::Status s = LoadBytes(WithHeader(c.index, c.value));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(s.message(), HasSubstr(c.message));
    EXPECT_THAT(s.message(), HasSubstr(Path("m.bin")));
  }
}

TEST_F(CheckpointErrorTest, NonFiniteWeightIsDataLossNamingTheTensor) {
  std::string b = TinyBytes();
  const float nan = std::nanf("");
  // The first float of rms_att: after the header and the 24x16 embedding.
  std::memcpy(b.data() + 28 + 24 * 16 * 4, &nan, 4);
  absl::Status s = LoadBytes(b);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("rms_att[0] (byte 1564) is not finite"));
}

std::string Stories260KPath() {
  for (const char* env : {"KVSKETCH_LLAMA_CHECKPOINT", "KVSKETCH_MODEL"}) {
    const char* p = std::getenv(env);
    if (p != nullptr && *p) return p;
  }
  return "../shared/data/stories260K.bin";
}

TEST(LlamaCheckpointTest, Stories260KLoads) {
  const std::string path = Stories260KPath();
  if (!std::filesystem::exists(path)) {
    GTEST_SKIP() << path << " is absent (set KVSKETCH_LLAMA_CHECKPOINT)";
  }
  auto ck = LoadCheckpoint(path);
  ASSERT_TRUE(ck.ok()) << ck.status();
  const LlamaConfig& c = ck->config;
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.seq_len, 512);
  EXPECT_TRUE(c.shared_classifier);
  EXPECT_EQ(CheckpointFileBytes(c), 1056540);
}

}  // namespace
}  // namespace kvsketch::llama
