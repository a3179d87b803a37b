// The llama forward pass checked independently (issue #6): each block
// (RMSNorm, RoPE, grouped-query attention, SwiGLU) on a hand-computed small
// case and against double precision; a whole tiny random model, whose
// checkpoint this test writes byte by byte, against a double-precision
// re-implementation; WriteCheckpoint against the format; sampling,
// generation and the fidelity metrics; trace recording. Checkpoint errors:
// llama_checkpoint_test.cc.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/llama/backends.h"
#include "client/llama/checkpoint.h"
#include "client/llama/fidelity.h"
#include "client/llama/forward.h"
#include "client/llama/generate.h"
#include "core/eval/trace.h"
#include "core/io/npy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/test_util.h"
#include "tests/core/testing/reference_attention.h"

namespace kvsketch::llama {
namespace {

using ::kvsketch::testing::MakeTempDir;
using ::kvsketch::testing::MultiHeadReference;
using ::kvsketch::testing::RandomNormal;
using ::testing::HasSubstr;

// ---------------------------------------------------------------------------
// A tiny model written by the test itself (not through WriteCheckpoint), so
// the loader is checked against the format description, not against itself.

struct TinySpec {
  int dim = 16, hidden = 24, layers = 2, heads = 4, kv_heads = 2;
  int vocab = 24, seq_len = 12;
  bool shared = false;
};

struct TinyModel {
  TinySpec s;
  std::vector<float> emb, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3,
      rms_final, cls;
  int hd() const { return s.dim / s.heads; }
  int kv_dim() const { return hd() * s.kv_heads; }
  const std::vector<float>& classifier() const { return s.shared ? emb : cls; }
};

std::vector<float> Scaled(uint64_t seed, int64_t n, double stddev,
                          double mean = 0) {
  std::vector<float> v = RandomNormal(seed, n, stddev);
  for (float& x : v) x += static_cast<float>(mean);
  return v;
}

TinyModel MakeTiny(const TinySpec& s, uint64_t seed = 7) {
  TinyModel m;
  m.s = s;
  const int64_t d = s.dim, f = s.hidden, l = s.layers, kv = m.kv_dim();
  // Weights ~ N(0, 1/in): activations keep unit scale through the layers.
  const double wd = 1 / std::sqrt(double(d)), wf = 1 / std::sqrt(double(f));
  m.emb = Scaled(seed + 1, s.vocab * d, 1.0);
  m.rms_att = Scaled(seed + 2, l * d, 0.1, 1.0);
  m.wq = Scaled(seed + 3, l * d * d, wd);
  m.wk = Scaled(seed + 4, l * kv * d, wd);
  m.wv = Scaled(seed + 5, l * kv * d, wd);
  m.wo = Scaled(seed + 6, l * d * d, wd);
  m.rms_ffn = Scaled(seed + 7, l * d, 0.1, 1.0);
  m.w1 = Scaled(seed + 8, l * f * d, wd);
  m.w2 = Scaled(seed + 9, l * d * f, wf);
  m.w3 = Scaled(seed + 10, l * f * d, wd);
  m.rms_final = Scaled(seed + 11, d, 0.1, 1.0);
  if (!s.shared) m.cls = Scaled(seed + 12, s.vocab * d, wd * 4);
  return m;
}

std::string TinyBytes(const TinyModel& m) {
  const int32_t header[7] = {m.s.dim,      m.s.hidden,
                             m.s.layers,   m.s.heads,
                             m.s.kv_heads, m.s.shared ? m.s.vocab : -m.s.vocab,
                             m.s.seq_len};
  std::string b(reinterpret_cast<const char*>(header), sizeof(header));
  for (const std::vector<float>* v :
       {&m.emb, &m.rms_att, &m.wq, &m.wk, &m.wv, &m.wo, &m.rms_ffn, &m.w1,
        &m.w2, &m.w3, &m.rms_final}) {
    b.append(reinterpret_cast<const char*>(v->data()), v->size() * 4);
  }
  // The two legacy RoPE tables: garbage on purpose (they must be skipped).
  const std::vector<float> junk = Scaled(99, int64_t{m.s.seq_len} * m.hd(), 5);
  b.append(reinterpret_cast<const char*>(junk.data()), junk.size() * 4);
  if (!m.s.shared) {
    b.append(reinterpret_cast<const char*>(m.cls.data()), m.cls.size() * 4);
  }
  return b;
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// The double-precision re-implementation: run.c's forward pass written out
// directly with full attention over the stored keys and values.
class ReferenceLlama {
 public:
  explicit ReferenceLlama(const TinyModel& m)
      : m_(m), k_(m.s.layers), v_(m.s.layers) {}

  std::vector<double> Forward(int token, int pos) {
    const int d = m_.s.dim, f = m_.s.hidden, hd = m_.hd(), kv = m_.kv_dim();
    std::vector<double> x(d);
    for (int i = 0; i < d; ++i) x[i] = m_.emb[token * d + i];
    for (int l = 0; l < m_.s.layers; ++l) {
      std::vector<double> h = Rms(x, &m_.rms_att[l * d]);
      std::vector<double> q = MatVec(&m_.wq[int64_t{l} * d * d], d, d, h);
      std::vector<double> k = MatVec(&m_.wk[int64_t{l} * kv * d], kv, d, h);
      std::vector<double> v = MatVec(&m_.wv[int64_t{l} * kv * d], kv, d, h);
      Rope(pos, &q);
      Rope(pos, &k);
      k_[l].push_back(k);
      v_[l].push_back(v);
      std::vector<double> att(d, 0.0);
      const int group = m_.s.heads / m_.s.kv_heads;
      for (int head = 0; head < m_.s.heads; ++head) {
        const int kvh = head / group;
        std::vector<double> scores(pos + 1);
        double mx = -1e300;
        for (int t = 0; t <= pos; ++t) {
          double dot = 0;
          for (int i = 0; i < hd; ++i) {
            dot += q[head * hd + i] * k_[l][t][kvh * hd + i];
          }
          scores[t] = dot / std::sqrt(double(hd));
          mx = std::max(mx, scores[t]);
        }
        double sum = 0;
        for (double& sc : scores) sum += (sc = std::exp(sc - mx));
        for (int t = 0; t <= pos; ++t) {
          for (int i = 0; i < hd; ++i) {
            att[head * hd + i] += scores[t] / sum * v_[l][t][kvh * hd + i];
          }
        }
      }
      std::vector<double> o = MatVec(&m_.wo[int64_t{l} * d * d], d, d, att);
      for (int i = 0; i < d; ++i) x[i] += o[i];
      h = Rms(x, &m_.rms_ffn[l * d]);
      std::vector<double> g = MatVec(&m_.w1[int64_t{l} * f * d], f, d, h);
      std::vector<double> u = MatVec(&m_.w3[int64_t{l} * f * d], f, d, h);
      for (int i = 0; i < f; ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
      std::vector<double> y = MatVec(&m_.w2[int64_t{l} * d * f], d, f, g);
      for (int i = 0; i < d; ++i) x[i] += y[i];
    }
    x = Rms(x, m_.rms_final.data());
    return MatVec(m_.classifier().data(), m_.s.vocab, d, x);
  }

  static std::vector<double> Rms(const std::vector<double>& x, const float* w) {
    double ss = 0;
    for (double xi : x) ss += xi * xi;
    const double inv = 1 / std::sqrt(ss / x.size() + 1e-5);
    std::vector<double> out(x.size());
    for (size_t i = 0; i < x.size(); ++i) out[i] = w[i] * x[i] * inv;
    return out;
  }
  static std::vector<double> MatVec(const float* w, int rows, int cols,
                                    const std::vector<double>& x) {
    std::vector<double> out(rows, 0.0);
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cols; ++c) out[r] += w[int64_t{r} * cols + c] * x[c];
    }
    return out;
  }
  void Rope(int pos, std::vector<double>* v) const {
    const int hd = m_.hd();
    for (size_t base = 0; base < v->size(); base += hd) {
      for (int j = 0; j < hd / 2; ++j) {
        const double a = pos * std::pow(10000.0, -2.0 * j / hd);
        const double x0 = (*v)[base + 2 * j], x1 = (*v)[base + 2 * j + 1];
        (*v)[base + 2 * j] = x0 * std::cos(a) - x1 * std::sin(a);
        (*v)[base + 2 * j + 1] = x0 * std::sin(a) + x1 * std::cos(a);
      }
    }
  }

 private:
  const TinyModel& m_;
  std::vector<std::vector<std::vector<double>>> k_, v_;
};

class LlamaFileTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = MakeTempDir(); }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path(const std::string& name) const {
    return absl::StrCat(dir_, "/", name);
  }
  std::string dir_;
};

// ---------------------------------------------------------------------------
// Blocks.

TEST(LlamaBlocksTest, RmsNormHandValue) {
  // mean(x²) = 30/4 = 7.5, so every element is w_i x_i / sqrt(7.5 + 1e-5).
  const std::vector<float> x = {1, 2, 3, 4};
  const std::vector<float> w = {1, 0.5f, 2, -1};
  std::vector<float> out(4);
  RmsNorm(x, w, absl::MakeSpan(out));
  const double hand[] = {0.3651481282381064, 0.3651481282381064,
                         2.1908887694286383, -1.4605925129524255};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(out[i], hand[i], 1e-6) << i;
}

TEST(LlamaBlocksTest, RmsNormMatchesDoubleAndMayAlias) {
  const std::vector<float> x = RandomNormal(1, 96, 3.0);
  const std::vector<float> w = RandomNormal(2, 96, 1.0);
  std::vector<float> out(96);
  RmsNorm(x, w, absl::MakeSpan(out));
  std::vector<double> xd(x.begin(), x.end());
  const std::vector<double> ref = ReferenceLlama::Rms(xd, w.data());
  for (int i = 0; i < 96; ++i) {
    EXPECT_NEAR(out[i], ref[i], 1e-6 * (1 + std::abs(ref[i]))) << i;
  }
  std::vector<float> in_place = x;
  RmsNorm(in_place, w, absl::MakeSpan(in_place));
  EXPECT_EQ(in_place, out);
}

TEST(LlamaBlocksTest, RopeAtPositionZeroIsIdentity) {
  const std::vector<float> v = RandomNormal(3, 32);
  std::vector<float> rotated = v;
  ApplyRope(0, 8, absl::MakeSpan(rotated));
  EXPECT_EQ(rotated, v);
}

TEST(LlamaBlocksTest, RopeHandValueWithHeadRelativeFrequencies) {
  // head_dim 4, two heads, pos 1: pair 0 turns by 1 rad (freq 1), pair 1 by
  // 10000^(-2/4) = 0.01 rad. Head 1 gets the same angles as head 0 (run.c
  // indexes frequencies within the head), not 10000^(-4/4) etc.
  std::vector<float> v = {1, 0, 0, 1, 1, 0, 0, 1};
  ApplyRope(1, 4, absl::MakeSpan(v));
  const double hand[] = {std::cos(1.0), std::sin(1.0), -std::sin(0.01),
                         std::cos(0.01)};
  for (int h = 0; h < 2; ++h) {
    for (int i = 0; i < 4; ++i) {
      EXPECT_NEAR(v[h * 4 + i], hand[i], 1e-7) << "head " << h << " dim " << i;
    }
  }
}

TEST(LlamaBlocksTest, RopeMatchesDoubleAndKeepsPairNorms) {
  TinySpec s;
  s.dim = 24;
  s.heads = 3;
  s.kv_heads = 1;
  TinyModel m = MakeTiny(s);
  ReferenceLlama ref(m);
  const std::vector<float> v = RandomNormal(4, 24);
  for (int pos : {1, 5, 300, 4000}) {
    std::vector<float> got = v;
    ApplyRope(pos, 8, absl::MakeSpan(got));
    std::vector<double> want(v.begin(), v.end());
    ref.Rope(pos, &want);
    for (int i = 0; i < 24; ++i) {
      EXPECT_NEAR(got[i], want[i], 2e-6) << "pos " << pos << " dim " << i;
    }
    for (int i = 0; i < 24; i += 2) {
      EXPECT_NEAR(std::hypot(got[i], got[i + 1]), std::hypot(v[i], v[i + 1]),
                  2e-6);
    }
  }
}

TEST(LlamaBlocksTest, SwiGluHandValue) {
  // dim 2, hidden 3, x = (1, 2): w1 x = (1, 2, -1), w3 x = (1.5, 2, -2),
  // silu(w1 x) * w3 x, then w2: (1.6344707106849976, 2.447422626431549).
  const std::vector<float> w1 = {1, 0, 0, 1, 1, -1};
  const std::vector<float> w3 = {0.5f, 0.5f, 2, 0, 0, -1};
  const std::vector<float> w2 = {1, 0, 1, 0, 1, -2};
  const std::vector<float> x = {1, 2};
  std::vector<float> scratch(6), out(2);
  SwiGlu(w1.data(), w2.data(), w3.data(), 2, 3, x, absl::MakeSpan(scratch),
         absl::MakeSpan(out));
  EXPECT_NEAR(out[0], 1.6344707106849976, 1e-6);
  EXPECT_NEAR(out[1], 2.447422626431549, 1e-6);
}

TEST(LlamaBlocksTest, SwiGluMatchesDouble) {
  const int d = 16, f = 40;
  const std::vector<float> w1 = RandomNormal(5, f * d, 0.3);
  const std::vector<float> w2 = RandomNormal(6, d * f, 0.3);
  const std::vector<float> w3 = RandomNormal(7, f * d, 0.3);
  const std::vector<float> x = RandomNormal(8, d);
  std::vector<float> scratch(2 * f), out(d);
  SwiGlu(w1.data(), w2.data(), w3.data(), d, f, x, absl::MakeSpan(scratch),
         absl::MakeSpan(out));
  std::vector<double> xd(x.begin(), x.end());
  std::vector<double> g = ReferenceLlama::MatVec(w1.data(), f, d, xd);
  std::vector<double> u = ReferenceLlama::MatVec(w3.data(), f, d, xd);
  for (int i = 0; i < f; ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
  const std::vector<double> want = ReferenceLlama::MatVec(w2.data(), d, f, g);
  for (int i = 0; i < d; ++i) EXPECT_NEAR(out[i], want[i], 1e-5) << i;
}

LlamaConfig SmallConfig(int heads, int kv_heads, int head_dim, int layers = 1,
                        int seq_len = 16) {
  LlamaConfig c;
  c.dim = heads * head_dim;
  c.hidden_dim = 8;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.vocab_size = 8;
  c.seq_len = seq_len;
  return c;
}

TEST(LlamaBlocksTest, GqaAttentionHandValue) {
  // head_dim 2, one KV head shared by two query heads, scale 1/sqrt(2).
  // Keys k0 = (0, 0), k1 = (1, 0); values (4, 0), (0, 8).
  // Head 0: q = (sqrt2 ln 3, 0) scores 0 and ln 3 -> weights 1/4, 3/4 ->
  // (1, 6). Head 1: q = 0 -> uniform -> (2, 4).
  const LlamaConfig c = SmallConfig(2, 1, 2);
  auto b = LocalBackend::Create(c, "exact");
  ASSERT_TRUE(b.ok()) << b.status();
  std::vector<float> out(4);
  const float q0[] = {0, 0, 0, 0};
  const float k0[] = {0, 0}, v0[] = {4, 0};
  ASSERT_TRUE((*b)->Attend(0, 0, q0, k0, v0, absl::MakeSpan(out)).ok());
  EXPECT_THAT(out, ::testing::ElementsAre(4, 0, 4, 0));  // one key: its value
  const float q1[] = {static_cast<float>(std::sqrt(2.0) * std::log(3.0)), 0, 0,
                      0};
  const float k1[] = {1, 0}, v1[] = {0, 8};
  ASSERT_TRUE((*b)->Attend(0, 1, q1, k1, v1, absl::MakeSpan(out)).ok());
  EXPECT_NEAR(out[0], 1, 1e-5);
  EXPECT_NEAR(out[1], 6, 1e-5);
  EXPECT_NEAR(out[2], 2, 1e-5);
  EXPECT_NEAR(out[3], 4, 1e-5);
}

TEST(LlamaBlocksTest, GqaAttentionMatchesDoubleReference) {
  // 4 query heads over 2 KV heads (2 per group), head_dim 8, 10 positions:
  // query head h must read KV head h / 2, causally.
  const LlamaConfig c = SmallConfig(4, 2, 8);
  auto b = LocalBackend::Create(c, "exact");
  ASSERT_TRUE(b.ok()) << b.status();
  const int hq = 4, hkv = 2, hd = 8, n = 10;
  std::vector<float> keys, values;  // [pos][hkv][hd]
  for (int pos = 0; pos < n; ++pos) {
    const std::vector<float> q = RandomNormal(100 + pos, hq * hd, 1.5);
    const std::vector<float> k = RandomNormal(200 + pos, hkv * hd, 1.5);
    const std::vector<float> v = RandomNormal(300 + pos, hkv * hd);
    keys.insert(keys.end(), k.begin(), k.end());
    values.insert(values.end(), v.begin(), v.end());
    std::vector<float> out(hq * hd);
    ASSERT_TRUE((*b)->Attend(0, pos, q, k, v, absl::MakeSpan(out)).ok());
    // [pos][hkv][hd] -> [hkv][pos][hd] for the reference.
    std::vector<float> kt, vt;
    for (int h = 0; h < hkv; ++h) {
      for (int t = 0; t <= pos; ++t) {
        kt.insert(kt.end(), &keys[(t * hkv + h) * hd],
                  &keys[(t * hkv + h) * hd] + hd);
        vt.insert(vt.end(), &values[(t * hkv + h) * hd],
                  &values[(t * hkv + h) * hd] + hd);
      }
    }
    const std::vector<double> want = MultiHeadReference(
        q, hq, 1, kt, vt, hkv, pos + 1, hd, hd, 1 / std::sqrt(8.0));
    for (int i = 0; i < hq * hd; ++i) {
      EXPECT_NEAR(out[i], want[i], 1e-5) << "pos " << pos << " i " << i;
    }
  }
}

TEST(LlamaBlocksTest, BackendRejectsBadArgumentsWithoutChangingState) {
  const LlamaConfig c = SmallConfig(4, 2, 4, /*layers=*/2);
  auto b = LocalBackend::Create(c, "exact");
  ASSERT_TRUE(b.ok());
  std::vector<float> q(16, 0.5f), k(8, 0.5f), v(8, 1), out(16);
  absl::Status s = (*b)->Attend(2, 0, q, k, v, absl::MakeSpan(out));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("layer: 2"));
  std::vector<float> short_k(7);
  s = (*b)->Attend(0, 0, q, short_k, v, absl::MakeSpan(out));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("k: 7 floats, expected 8"));
  s = (*b)->Attend(0, 1, q, k, v, absl::MakeSpan(out));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("expects position 0"));
  EXPECT_EQ((*b)->state().num_tokens(0), 0);
  EXPECT_TRUE((*b)->Attend(0, 0, q, k, v, absl::MakeSpan(out)).ok());
  EXPECT_EQ((*b)->state().num_tokens(0), 1);
  auto bad = LocalBackend::Create(c, "nope");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("spec 'nope'"));
}

// ---------------------------------------------------------------------------
// The whole model.

class LlamaModelTest : public LlamaFileTest,
                       public ::testing::WithParamInterface<bool> {};

TEST_P(LlamaModelTest, TinyModelMatchesDoubleReference) {
  TinySpec s;
  s.shared = GetParam();
  const TinyModel tiny = MakeTiny(s);
  WriteBytes(Path("tiny.bin"), TinyBytes(tiny));
  auto ck = LoadCheckpoint(Path("tiny.bin"));
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ(ck->config.shared_classifier, s.shared);
  EXPECT_EQ(ck->config.vocab_size, s.vocab);
  EXPECT_EQ(ck->config.head_dim(), 4);
  LlamaModel model(std::move(*ck));
  auto backend = LocalBackend::Create(model.config(), "exact");
  ASSERT_TRUE(backend.ok());
  ReferenceLlama ref(tiny);
  const int ids[] = {1, 5, 23, 0, 7, 7, 12, 3, 19, 2, 11, 4};  // seq_len 12
  std::vector<float> logits(s.vocab);
  for (int pos = 0; pos < s.seq_len; ++pos) {
    ASSERT_TRUE(
        model.Forward(ids[pos], pos, **backend, absl::MakeSpan(logits)).ok());
    const std::vector<double> want = ref.Forward(ids[pos], pos);
    double scale = 1;
    for (double w : want) scale = std::max(scale, std::abs(w));
    // Float rounding through two layers of length-16..24 dot products, a
    // softmax and two RMSNorms is ~1e-6 relative; 1e-4 leaves margin while
    // any semantic slip (a RoPE frequency, the GQA mapping, a residual)
    // moves logits by 1e-2 or more.
    for (int i = 0; i < s.vocab; ++i) {
      EXPECT_NEAR(logits[i], want[i], 1e-4 * scale)
          << "pos " << pos << " logit " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Classifier, LlamaModelTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "Shared" : "Separate";
                         });

// Counts calls, for checking that a rejected Forward touched nothing.
class CountingBackend : public AttentionBackend {
 public:
  explicit CountingBackend(AttentionBackend* inner) : inner_(inner) {}
  absl::Status Attend(int layer, int pos, absl::Span<const float> q,
                      absl::Span<const float> k, absl::Span<const float> v,
                      absl::Span<float> out) override {
    ++calls;
    return inner_->Attend(layer, pos, q, k, v, out);
  }
  int calls = 0;

 private:
  AttentionBackend* inner_;
};

TEST_F(LlamaFileTest, ForwardRejectsBadArguments) {
  const TinyModel tiny = MakeTiny({});
  WriteBytes(Path("tiny.bin"), TinyBytes(tiny));
  auto ck = LoadCheckpoint(Path("tiny.bin"));
  ASSERT_TRUE(ck.ok());
  LlamaModel model(std::move(*ck));
  auto local = LocalBackend::Create(model.config(), "exact");
  ASSERT_TRUE(local.ok());
  CountingBackend counting(local->get());
  std::vector<float> logits(24), short_logits(23);
  absl::Status s = model.Forward(24, 0, counting, absl::MakeSpan(logits));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("token: 24"));
  s = model.Forward(-1, 0, counting, absl::MakeSpan(logits));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  s = model.Forward(1, 12, counting, absl::MakeSpan(logits));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("pos: 12"));
  s = model.Forward(1, 0, counting, absl::MakeSpan(short_logits));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("logits: size 23"));
  EXPECT_EQ(counting.calls, 0);
  EXPECT_TRUE(model.Forward(1, 0, counting, absl::MakeSpan(logits)).ok());
  EXPECT_EQ(counting.calls, 2);  // one per layer
}

TEST_F(LlamaFileTest, WriteCheckpointMatchesTheFormatAndChecksSizes) {
  for (bool shared : {true, false}) {
    TinySpec s;
    s.shared = shared;
    WriteBytes(Path("a.bin"), TinyBytes(MakeTiny(s)));
    auto a = LoadCheckpoint(Path("a.bin"));  // written by the test
    ASSERT_TRUE(a.ok());
    ASSERT_TRUE(WriteCheckpoint(Path("b.bin"), *a).ok());
    auto b = LoadCheckpoint(Path("b.bin"));
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(b->wq, a->wq);
    EXPECT_EQ(b->classifier, a->classifier);
    EXPECT_EQ(b->rms_final, a->rms_final);
    // Byte for byte what the test wrote, except the ignored RoPE tables.
    std::ifstream in(Path("b.bin"), std::ios::binary);
    const std::string written((std::istreambuf_iterator<char>(in)), {});
    const std::string want = TinyBytes(MakeTiny(s));
    const size_t rope_at =
        want.size() - 4 * (12 * 4) - (shared ? 0 : 4 * 24 * 16);
    EXPECT_EQ(written.substr(0, rope_at), want.substr(0, rope_at));
    EXPECT_EQ(written.substr(rope_at + 4 * 12 * 4),
              want.substr(rope_at + 4 * 12 * 4));
    EXPECT_EQ(std::filesystem::file_size(Path("b.bin")),
              static_cast<uintmax_t>(CheckpointFileBytes(a->config)));
    a->w2.pop_back();
    absl::Status st = WriteCheckpoint(Path("c.bin"), *a);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(st.message(), HasSubstr("w2 has"));
  }
}

// ---------------------------------------------------------------------------
// Prompts, sampling, generation.

TEST(LlamaGenerateTest, ParsePromptIds) {
  auto ids = ParsePromptIds(" 1 5\n\t23 0 ", 24);
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ::testing::ElementsAre(1, 5, 23, 0));
  EXPECT_THAT(ParsePromptIds("1 24", 24).status().message(),
              HasSubstr("item 2 (id 24) is outside the vocabulary [0, 24)"));
  EXPECT_THAT(ParsePromptIds("1 x", 24).status().message(),
              HasSubstr("item 2 ('x') is not an integer"));
  EXPECT_EQ(ParsePromptIds(" \n", 24).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LlamaGenerateTest, SamplerFollowsTheDistribution) {
  // logits (0, ln 3): p = (1/4, 3/4) at temperature 1; at temperature 2,
  // p ∝ (1, sqrt 3): 0.634 for id 1. 20000 draws: sd of a frequency is
  // ~0.003, so 0.015 is five sigma (and the stream is fixed by the seed).
  const std::vector<float> logits = {0, static_cast<float>(std::log(3.0))};
  for (const auto& [temperature, p1] :
       {std::pair{1.0, 0.75},
        std::pair{2.0, std::sqrt(3.0) / (1 + std::sqrt(3.0))}}) {
    Sampler sampler(temperature, 42);
    int ones = 0;
    for (int i = 0; i < 20000; ++i) ones += sampler.Sample(logits);
    EXPECT_NEAR(ones / 20000.0, p1, 0.015) << temperature;
  }
  Sampler greedy(0, 1);
  EXPECT_EQ(greedy.Sample(std::vector<float>{0.5f, 2, 2, -1}), 1);
  Sampler a(1.0, 9), b(1.0, 9), c(1.0, 10);
  const std::vector<float> flat(64, 0.0f);
  std::vector<int> sa, sb, sc;
  for (int i = 0; i < 32; ++i) {
    sa.push_back(a.Sample(flat));
    sb.push_back(b.Sample(flat));
    sc.push_back(c.Sample(flat));
  }
  EXPECT_EQ(sa, sb);
  EXPECT_NE(sa, sc);
}

class LlamaTinyRunTest : public LlamaFileTest {
 protected:
  void SetUp() override {
    LlamaFileTest::SetUp();
    tiny_ = MakeTiny({});
    WriteBytes(Path("tiny.bin"), TinyBytes(tiny_));
    auto ck = LoadCheckpoint(Path("tiny.bin"));
    ASSERT_TRUE(ck.ok()) << ck.status();
    model_ = std::make_unique<LlamaModel>(std::move(*ck));
  }
  TinyModel tiny_;
  std::unique_ptr<LlamaModel> model_;
};

TEST_F(LlamaTinyRunTest, GenerateKeepsPromptAndChecksLength) {
  auto backend = LocalBackend::Create(model_->config(), "exact");
  ASSERT_TRUE(backend.ok());
  GenerateOptions opt;
  opt.tokens = 9;  // prompt 4 + 9 - 1 = 12 = seq_len: the longest allowed
  opt.temperature = 0;
  opt.keep_logits = true;
  auto g = Generate(*model_, **backend, {3, 1, 4, 1}, opt);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_EQ(g->ids.size(), 13u);
  EXPECT_THAT(std::vector<int>(g->ids.begin(), g->ids.begin() + 4),
              ::testing::ElementsAre(3, 1, 4, 1));
  EXPECT_EQ(g->positions, 12);
  // Greedy: each generated id is the argmax of the previous position.
  for (int pos = 3; pos < 12; ++pos) {
    EXPECT_EQ(g->ids[pos + 1],
              Argmax(absl::MakeConstSpan(g->logits.data() + pos * 24, 24)));
  }
  // The double reference agrees on the greedy path.
  ReferenceLlama ref(tiny_);
  for (int pos = 0; pos < 12; ++pos) {
    const std::vector<double> want = ref.Forward(g->ids[pos], pos);
    if (pos >= 3) {
      EXPECT_EQ(g->ids[pos + 1],
                std::max_element(want.begin(), want.end()) - want.begin());
    }
  }
  auto fresh = LocalBackend::Create(model_->config(), "exact");
  opt.tokens = 10;
  absl::Status s = Generate(*model_, **fresh, {3, 1, 4, 1}, opt).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("seq_len is 12 (at most 9 tokens)"));
  EXPECT_EQ((*fresh)->state().num_tokens(0), 0);
  opt.tokens = 2;
  opt.temperature = -1;
  EXPECT_THAT(Generate(*model_, **fresh, {}, opt).status().message(),
              HasSubstr("temperature"));
}

TEST_F(LlamaTinyRunTest, TeacherForcingReproducesGeneration) {
  auto gen_backend = LocalBackend::Create(model_->config(), "exact");
  GenerateOptions opt;
  opt.tokens = 12;
  opt.seed = 3;
  opt.keep_logits = true;
  auto g = Generate(*model_, **gen_backend, {}, opt);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->ids[0], kBosToken);
  auto tf_backend = LocalBackend::Create(model_->config(), "exact");
  auto tf = TeacherForce(*model_, **tf_backend, g->ids);
  ASSERT_TRUE(tf.ok());
  EXPECT_EQ(tf->logits, g->logits);  // same computation, bit for bit
}

// ---------------------------------------------------------------------------
// Fidelity metrics.

TEST(LlamaFidelityTest, CompareLogitsHandValues) {
  // vocab 2, two positions, ids 0 -> 1 -> 0. Reference p = (1/2, 1/2) at
  // both; test q = (1/4, 3/4) then (1/2, 1/2).
  const float l3 = static_cast<float>(std::log(3.0));
  const std::vector<float> ref = {0, 0, 0, 0};
  const std::vector<float> test = {0, l3, 5, 5};
  const std::vector<int> ids = {0, 1, 0};
  auto r = CompareLogits(ref, test, 2, ids, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->positions, 2);
  // KL((.5,.5)||(.25,.75)) = .5 ln 2 + .5 ln(2/3); zero at position 1.
  EXPECT_NEAR(r->mean_kl, (0.5 * std::log(2.0) + 0.5 * std::log(2.0 / 3)) / 2,
              1e-6);
  // Next ids: 1 (q = 3/4), 0 (q = 1/2): ppl = exp(-(ln .75 + ln .5) / 2).
  EXPECT_NEAR(r->perplexity, std::exp(-(std::log(0.75) + std::log(0.5)) / 2),
              1e-6);
  // Argmax: ref picks 0 (first of ties) at both; test picks 1, then 0.
  EXPECT_DOUBLE_EQ(r->agreement, 0.5);
  auto same = CompareLogits(ref, ref, 2, ids, 1);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->positions, 1);
  EXPECT_EQ(same->mean_kl, 0);
  EXPECT_NEAR(same->perplexity, 2, 1e-12);
  EXPECT_EQ(CompareLogits(ref, test, 2, ids, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CompareLogits(ref, {0, 0}, 2, ids, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(LlamaTinyRunTest, RunFidelityLocal) {
  FidelityOptions opt;
  opt.generate.tokens = 12;
  opt.specs = {"exact", "exact:store=bf16",
               "topk:k=2,k_min=1,sinks=0,window=0"};
  opt.factory = LocalBackendFactory(model_->config());
  opt.trace_dir = Path("trace");
  auto report = RunFidelity(*model_, opt);
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->rows.size(), 4u);
  EXPECT_TRUE(report->rows[0].reference);
  EXPECT_EQ(report->rows[0].spec, "exact:store=f32");
  for (int i : {0, 1}) {  // the reference and the same spec re-run
    EXPECT_EQ(report->rows[i].metrics.mean_kl, 0) << i;
    EXPECT_EQ(report->rows[i].metrics.agreement, 1) << i;
    EXPECT_EQ(report->rows[i].metrics.perplexity,
              report->rows[0].metrics.perplexity);
  }
  EXPECT_GT(report->rows[2].metrics.mean_kl, 0);
  EXPECT_LT(report->rows[2].metrics.mean_kl, 1e-2);
  EXPECT_LT(report->rows[2].state_bytes, report->rows[0].state_bytes);
  // Top-2 of up to 12 keys drops real mass.
  EXPECT_GT(report->rows[3].metrics.mean_kl, report->rows[2].metrics.mean_kl);
  for (const FidelityRow& r : report->rows) {
    EXPECT_EQ(r.metrics.positions, 12);
    EXPECT_GT(r.tokens_per_s, 0);
  }
  const std::string md = FormatFidelityMarkdown(report->rows);
  EXPECT_THAT(md,
              HasSubstr("| `exact:store=f32` (reference) | 12 | 1.0000 | 0 |"));
  EXPECT_THAT(FormatFidelityRowsJson(report->rows),
              HasSubstr("\"spec\": \"exact:store=bf16\""));
  auto trace = eval::LoadTraceDir(Path("trace"));
  ASSERT_TRUE(trace.ok()) << trace.status();
  EXPECT_EQ(trace->n, 12);
  opt.specs = {"exact", "nope"};
  absl::Status s = RunFidelity(*model_, opt).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("spec 'nope'"));
}

// ---------------------------------------------------------------------------
// Trace recording: what the forward pass handed to attention, in the DESIGN
// §7 layout.

class CapturingBackend : public AttentionBackend {
 public:
  explicit CapturingBackend(AttentionBackend* inner) : inner_(inner) {}
  absl::Status Attend(int layer, int pos, absl::Span<const float> q,
                      absl::Span<const float> k, absl::Span<const float> v,
                      absl::Span<float> out) override {
    calls.push_back({layer,
                     pos,
                     {q.begin(), q.end()},
                     {k.begin(), k.end()},
                     {v.begin(), v.end()}});
    return inner_->Attend(layer, pos, q, k, v, out);
  }
  struct Call {
    int layer, pos;
    std::vector<float> q, k, v;
  };
  std::vector<Call> calls;

 private:
  AttentionBackend* inner_;
};

TEST_F(LlamaTinyRunTest, RecordedTraceHoldsWhatTheForwardComputed) {
  const LlamaConfig& c = model_->config();
  auto local = LocalBackend::Create(c, "exact");
  CapturingBackend capture(local->get());
  RecordingBackend recorder(c, &capture);
  GenerateOptions opt;
  opt.tokens = 10;
  auto g = Generate(*model_, recorder, {}, opt);
  ASSERT_TRUE(g.ok());
  ASSERT_TRUE(recorder.WriteTraceDir(Path("t")).ok());
  auto q = ReadNpy(Path("t/q.npy"));
  auto k = ReadNpy(Path("t/k.npy"));
  auto v = ReadNpy(Path("t/v.npy"));
  ASSERT_TRUE(q.ok() && k.ok() && v.ok());
  const int64_t t = 10, hd = 4;
  EXPECT_THAT(q->shape, ::testing::ElementsAre(2, 4, t, hd));
  EXPECT_THAT(k->shape, ::testing::ElementsAre(2, 2, t, hd));
  EXPECT_THAT(v->shape, ::testing::ElementsAre(2, 2, t, hd));
  ASSERT_EQ(capture.calls.size(), 20u);
  for (const auto& call : capture.calls) {
    for (int h = 0; h < 4; ++h) {
      for (int i = 0; i < hd; ++i) {
        ASSERT_EQ(q->data[((call.layer * 4 + h) * t + call.pos) * hd + i],
                  call.q[h * hd + i]);
      }
    }
    for (int h = 0; h < 2; ++h) {
      for (int i = 0; i < hd; ++i) {
        ASSERT_EQ(k->data[((call.layer * 2 + h) * t + call.pos) * hd + i],
                  call.k[h * hd + i]);
        ASSERT_EQ(v->data[((call.layer * 2 + h) * t + call.pos) * hd + i],
                  call.v[h * hd + i]);
      }
    }
  }
  // The recorded q and k are post-RoPE: the double reference's rotated key
  // of layer 0 at position 3 matches (pre-RoPE it would not, pos > 0).
  ReferenceLlama ref(tiny_);
  std::vector<double> h0(c.dim);
  for (int i = 0; i < c.dim; ++i) h0[i] = tiny_.emb[g->ids[3] * c.dim + i];
  std::vector<double> k3 =
      ReferenceLlama::MatVec(tiny_.wk.data(), c.kv_dim(), c.dim,
                             ReferenceLlama::Rms(h0, tiny_.rms_att.data()));
  ref.Rope(3, &k3);
  for (int i = 0; i < c.kv_dim(); ++i) {
    EXPECT_NEAR(capture.calls[3 * 2].k[i], k3[i], 1e-5) << i;
  }
  RecordingBackend empty(c, local->get());
  EXPECT_EQ(empty.WriteTraceDir(Path("e")).code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace kvsketch::llama
