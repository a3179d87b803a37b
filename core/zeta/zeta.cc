// File: core/zeta/zeta.cc
#include "core/zeta/zeta.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "Eigen/Core"
#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "core/topk/sparse_softmax.h"

namespace kvsketch {
namespace {

constexpr uint8_t kStateVersion = 1;

using RowMatrix =
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// scale·(K q) for rows [begin, end) of keys, appended to (pos, score).
void ScoreRange(const float* keys, int d, int64_t begin, int64_t end,
                const float* q, double scale, std::vector<int64_t>* pos,
                std::vector<double>* score) {
  if (end <= begin) return;
  Eigen::Map<const RowMatrix> k(keys + begin * d, end - begin, d);
  Eigen::Map<const Eigen::VectorXf> qv(q, d);
  const Eigen::VectorXf s = k * qv;
  for (int64_t i = 0; i < end - begin; ++i) {
    pos->push_back(begin + i);
    score->push_back(scale * s[i]);
  }
}

// Better = higher score, then lower position (a total order: deterministic).
bool Better(const std::pair<double, int64_t>& a,
            const std::pair<double, int64_t>& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

absl::Status CheckFiniteKeys(absl::string_view op, ConstMatrixView keys) {
  for (int64_t i = 0; i < keys.size(); ++i) {
    if (!std::isfinite(keys.data[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          op, ": keys row ", i / keys.cols, " has a non-finite entry (",
          keys.data[i], "); zeta cannot index it"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Approximator>> CreateZeta(
    const SpecParams& params, const HeadShape& shape,
    std::string canonical_spec) {
  ZetaOptions opt;
  opt.dims = static_cast<int>(params.GetInt("dims"));
  opt.bits = static_cast<int>(params.GetInt("bits"));
  opt.curves = static_cast<int>(params.GetInt("curves"));
  opt.candidates = params.GetInt("candidates");
  opt.k = params.GetInt("k");
  opt.sinks = params.GetInt("sinks");
  opt.window = params.GetInt("window");
  opt.chunk = params.GetInt("chunk");
  opt.pca = params.GetEnum("projection") == "pca";
  opt.pca_tokens = params.GetInt("pca_tokens");
  opt.seed = static_cast<uint64_t>(params.GetInt("seed"));
  opt.recall_sample = params.GetFloat("recall_sample");
  opt.native = params.GetEnum("mode") == "native";
  opt.gamma = params.GetFloat("gamma");
  KVSKETCH_ASSIGN_OR_RETURN(
      auto z, ZetaApproximator::Create(shape, opt, std::move(canonical_spec)));
  return std::unique_ptr<Approximator>(std::move(z));
}

constexpr double kMaxCount = static_cast<double>(int64_t{1} << 40);

}  // namespace

const KindDef& ZetaKindDef() {
  static const KindDef* const def = new KindDef{
      "zeta",
      "exact KV cache; candidates from a streaming Z-order index over "
      "low-dim key projections (L shifted curves), rescored exactly, softmax "
      "over top-k plus sinks, window and the current chunk "
      "(papers/C_D_E_conv_regression_zeta.md E.5)",
      {
          ParamDef{"dims",
                   ParamType::kInt,
                   "8",
                   {},
                   1,
                   16,
                   "projected dimensions d_K per curve (at most head_dim+1 "
                   "are used)"},
          ParamDef{"bits",
                   ParamType::kInt,
                   "0",
                   {},
                   0,
                   32,
                   "bits per coordinate; 0 = min(32, floor(63/dims)); "
                   "dims*bits <= 64"},
          ParamDef{"curves",
                   ParamType::kInt,
                   "8",
                   {},
                   1,
                   16,
                   "Z-order curves L, each with its own rotation and shift"},
          ParamDef{"candidates",
                   ParamType::kInt,
                   "64",
                   {},
                   1,
                   kMaxCount,
                   "codes taken around the query per curve per run"},
          ParamDef{"k",
                   ParamType::kInt,
                   "32",
                   {},
                   1,
                   kMaxCount,
                   "retrieved keys kept after exact rescoring"},
          ParamDef{"sinks",
                   ParamType::kInt,
                   "4",
                   {},
                   0,
                   kMaxCount,
                   "first tokens always attended"},
          ParamDef{"window",
                   ParamType::kInt,
                   "64",
                   {},
                   0,
                   kMaxCount,
                   "most recent tokens always attended"},
          ParamDef{"chunk",
                   ParamType::kInt,
                   "512",
                   {},
                   1,
                   1 << 20,
                   "tail / prefill chunk M: the current chunk is scored "
                   "exactly, whole chunks are indexed"},
          ParamDef{"projection",
                   ParamType::kEnum,
                   "pca",
                   {"random", "pca"},
                   -1e300,
                   1e300,
                   "random orthonormal map, or PCA of the first pca_tokens "
                   "keys (those stay exact until fitted)"},
          ParamDef{"pca_tokens",
                   ParamType::kInt,
                   "4096",
                   {},
                   1,
                   kMaxCount,
                   "keys the PCA is fitted on (rounded up to whole chunks)"},
          ParamDef{"seed",
                   ParamType::kInt,
                   "1",
                   {},
                   0,
                   9007199254740992.0,
                   "seed of the projections, rotations and shifts"},
          ParamDef{"recall_sample",
                   ParamType::kFloat,
                   "0",
                   {},
                   0,
                   1,
                   "fraction of query rows checked against an exact top-k "
                   "scan (O(n d) each); see Measurements()"},
          ParamDef{"mode",
                   ParamType::kEnum,
                   "retrofit",
                   {"retrofit", "native"},
                   -1e300,
                   1e300,
                   "retrofit: dot-product softmax over retrieved top-k plus "
                   "sinks/window/chunk; native: ZETA heads (head_dim <= 16), "
                   "Cauchy weights over the k nearest plus the mean slot"},
          ParamDef{"gamma",
                   ParamType::kFloat,
                   "0.5",
                   {},
                   1e-6,
                   1e6,
                   "native: Cauchy width, w = 1/(|q-k|^2 + gamma^2)"},
      },
      &CreateZeta};
  return *def;
}

absl::StatusOr<std::unique_ptr<ZetaApproximator>> ZetaApproximator::Create(
    const HeadShape& shape, const ZetaOptions& options,
    std::string canonical_spec) {
  if (options.dims < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("zeta: dims (", options.dims, ") must be >= 1"));
  }
  if (options.bits > 0 && options.dims * options.bits > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("zeta: bits (", options.bits, ") times dims (",
                     options.dims, ") must be <= 64"));
  }
  // A projection to more than d+1 coordinates carries no extra information:
  // use at most d+1 (so the default spec also works for tiny heads).
  ZetaOptions opt = options;
  opt.dims = std::min(options.dims, shape.head_dim + 1);
  if (opt.native) {
    // Native keys are already the low-dimensional ZETA keys: every
    // coordinate goes into the code.
    if (shape.head_dim > 16) {
      return absl::InvalidArgumentError(absl::StrCat(
          "zeta: mode=native uses the keys as they are, so head_dim (",
          shape.head_dim, ") must be <= 16"));
    }
    opt.dims = shape.head_dim;
    if (opt.bits > 0 && opt.dims * opt.bits > 64) {
      return absl::InvalidArgumentError(
          absl::StrCat("zeta: bits (", opt.bits, ") times head_dim (", opt.dims,
                       ") must be <= 64 in mode=native"));
    }
  }
  const int bits = opt.bits > 0 ? opt.bits : std::min(32, 63 / opt.dims);
  if (opt.curves < 1 || opt.chunk < 1 || opt.candidates < 1 || opt.k < 1) {
    return absl::InvalidArgumentError(
        "zeta: curves, chunk, candidates and k must be >= 1");
  }
  std::unique_ptr<ZetaApproximator> z(
      new ZetaApproximator(shape, opt, std::move(canonical_spec)));
  z->bits_ = bits;
  KVSKETCH_ASSIGN_OR_RETURN(MortonCodec codec,
                            MortonCodec::Create(opt.dims, bits));
  z->codec_ = std::make_unique<MortonCodec>(std::move(codec));
  z->st_ = z->EmptyState();
  return z;
}

ZetaApproximator::ZetaApproximator(const HeadShape& shape,
                                   const ZetaOptions& options,
                                   std::string canonical_spec)
    : Approximator(shape), opt_(options), spec_(std::move(canonical_spec)) {}

int64_t ZetaApproximator::PcaPrefix() const {
  return (opt_.pca_tokens + opt_.chunk - 1) / opt_.chunk * opt_.chunk;
}

ZetaApproximator::State ZetaApproximator::EmptyState() const {
  State s;
  s.index = std::make_unique<ZOrderIndex>(opt_.curves, opt_.chunk);
  if (opt_.native) {
    s.key_sum.assign(shape().head_dim, 0.0);
    s.value_sum.assign(shape().value_dim, 0.0);
    FitNative(s);
  } else if (!opt_.pca) {
    FitRandom(s);
  }
  return s;
}

void ZetaApproximator::FlushChunk(State& s) const {
  const int d = shape().head_dim;
  const int64_t m = opt_.chunk;
  if (!s.fitted) {
    s.flushed += m;
    if (s.flushed < PcaPrefix()) return;
    FitPca(s);  // sets Φ above every fitted key: no re-encode below
  } else {
    if (opt_.native) {
      const int dv = shape().value_dim;
      for (int64_t t = s.flushed; t < s.flushed + m; ++t) {
        for (int j = 0; j < d; ++j) s.key_sum[j] += s.keys[t * d + j];
        for (int j = 0; j < dv; ++j) s.value_sum[j] += s.values[t * dv + j];
      }
    }
    s.flushed += m;
  }
  // Index every flushed chunk not yet indexed (one, or the whole PCA prefix).
  std::vector<uint64_t> codes(static_cast<size_t>(m) * opt_.curves);
  for (int64_t first = s.indexed; first < s.flushed; first += m) {
    double max_sq = 0;
    for (int64_t t = first; t < first + m; ++t) {
      const float* k = s.keys.data() + t * d;
      double sq = 0;
      for (int j = 0; j < d; ++j) sq += double{k[j]} * k[j];
      max_sq = std::max(max_sq, sq);
    }
    if (s.quant.empty() || std::sqrt(max_sq) > s.phi) {
      SetPhi(s, kPhiHeadroom * std::sqrt(max_sq));
      if (s.index->size() > 0) {
        s.index->Recode([&](int64_t f, int64_t c, uint64_t* out) {
          EncodeKeys(s, f, c, out);
        });
      }
    }
    EncodeKeys(s, first, m, codes.data());
    s.index->Append(codes.data(), m);
    s.indexed = first + m;
  }
}

void ZetaApproximator::AppendTo(State& s, const float* keys,
                                const float* values, int64_t count) const {
  const int d = shape().head_dim, dv = shape().value_dim;
  // Capacity is a function of n alone (next power of two, >= 16 tokens), so
  // equal states report equal MemoryBytes however they were built.
  const int64_t need = s.n + count;
  if (need * d > static_cast<int64_t>(s.keys.capacity())) {
    int64_t cap = 16;
    while (cap < need) cap *= 2;
    s.keys.reserve(cap * d);
    s.values.reserve(cap * dv);
  }
  for (int64_t i = 0; i < count; ++i) {
    double sq = 0;
    for (int c = 0; c < dv; ++c)
      sq += double{values[i * dv + c]} * values[i * dv + c];
    s.max_value_norm = std::max(s.max_value_norm, std::sqrt(sq));
  }
  int64_t done = 0;
  while (done < count) {
    if (s.n - s.flushed == opt_.chunk) FlushChunk(s);
    const int64_t seg = std::min(count - done, opt_.chunk - (s.n - s.flushed));
    s.keys.insert(s.keys.end(), keys + done * d, keys + (done + seg) * d);
    s.values.insert(s.values.end(), values + done * dv,
                    values + (done + seg) * dv);
    s.n += seg;
    done += seg;
  }
}

absl::Status ZetaApproximator::Append(ConstMatrixView keys,
                                      ConstMatrixView values) {
  KVSKETCH_RETURN_IF_ERROR(CheckAppendArgs(keys, values));
  KVSKETCH_RETURN_IF_ERROR(CheckFiniteKeys("append", keys));
  AppendTo(st_, keys.data, values.data, keys.rows);
  return absl::OkStatus();
}

int64_t ZetaApproximator::MemoryBytes() const {
  const State& s = st_;
  return static_cast<int64_t>(
      (s.keys.capacity() + s.values.capacity() + s.proj.capacity()) *
          sizeof(float) +
      (s.rel_centre.capacity() + s.rel_bound.capacity() + s.shift.capacity()) *
          sizeof(double) +
      s.quant.capacity() * sizeof(Quantizer) +
      (s.key_sum.capacity() + s.value_sum.capacity()) * sizeof(double) +
      s.index->MemoryBytes());
}

void ZetaApproximator::Select(const float* q, int64_t end,
                              Selection* sel) const {
  const State& s = st_;
  const int d = shape().head_dim;
  const double scale = shape().scale;
  sel->pos.clear();
  sel->score.clear();
  const int64_t a = std::min(opt_.sinks, end);
  const int64_t h =
      std::max(a, std::min(end - std::min(opt_.window, end), s.indexed));
  ScoreRange(s.keys.data(), d, 0, a, q, scale, &sel->pos, &sel->score);
  ScoreRange(s.keys.data(), d, h, end, q, scale, &sel->pos, &sel->score);
  sel->retrieved_begin = sel->pos.size();
  sel->region_begin = a;
  sel->region_end = h;
  if (h <= a) return;
  std::vector<uint64_t> qcodes(opt_.curves);
  EncodeQuery(q, qcodes.data());
  std::vector<int64_t> cand;
  s.index->Candidates(qcodes.data(), opt_.candidates, &cand);
  cand.erase(std::remove_if(cand.begin(), cand.end(),
                            [&](int64_t p) { return p < a || p >= h; }),
             cand.end());
  std::sort(cand.begin(), cand.end());
  cand.erase(std::unique(cand.begin(), cand.end()), cand.end());
  Eigen::Map<const Eigen::VectorXf> qv(q, d);
  std::vector<std::pair<double, int64_t>> scored(cand.size());
  // The rescoring is a gather of scattered key rows (memory-latency bound):
  // prefetch a few rows ahead so their cache misses overlap.
  constexpr size_t kAhead = 6;
  const size_t row_bytes = static_cast<size_t>(d) * sizeof(float);
  auto prefetch = [&](size_t i) {
    const char* row =
        reinterpret_cast<const char*>(s.keys.data() + cand[i] * d);
    for (size_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(row + b);
  };
  for (size_t i = 0; i < std::min(kAhead, cand.size()); ++i) prefetch(i);
  for (size_t i = 0; i < cand.size(); ++i) {
    if (i + kAhead < cand.size()) prefetch(i + kAhead);
    Eigen::Map<const Eigen::VectorXf> kv(s.keys.data() + cand[i] * d, d);
    scored[i] = {scale * kv.dot(qv), cand[i]};
  }
  if (static_cast<int64_t>(scored.size()) > opt_.k) {
    std::nth_element(scored.begin(), scored.begin() + opt_.k, scored.end(),
                     Better);
    scored.resize(opt_.k);
  }
  std::sort(scored.begin(), scored.end(),
            [](const auto& x, const auto& y) { return x.second < y.second; });
  for (const auto& [score, p] : scored) {
    sel->pos.push_back(p);
    sel->score.push_back(score);
  }
}

void ZetaApproximator::MaybeCheckRecall(const float* q,
                                        const Selection& sel) const {
  if (opt_.recall_sample <= 0) return;
  const int64_t a = sel.region_begin, h = sel.region_end;
  if (h <= a) return;
  {
    absl::MutexLock lock(&mu_);
    const int64_t c = queries_seen_++;
    // Deterministic stride: row c is checked when ⌊(c+1)·f⌋ > ⌊c·f⌋.
    if (std::floor((c + 1) * opt_.recall_sample) <=
        std::floor(c * opt_.recall_sample)) {
      return;
    }
  }
  std::vector<int64_t> pos;
  std::vector<double> score;
  if (opt_.native) {
    // Nearest = highest −‖q − k‖².
    const int d = shape().head_dim;
    for (int64_t p = a; p < h; ++p) {
      double dist = 0;
      for (int j = 0; j < d; ++j) {
        const double diff = double{q[j]} - st_.keys[p * d + j];
        dist += diff * diff;
      }
      pos.push_back(p);
      score.push_back(-dist);
    }
  } else {
    ScoreRange(st_.keys.data(), shape().head_dim, a, h, q, shape().scale, &pos,
               &score);
  }
  std::vector<std::pair<double, int64_t>> all(pos.size());
  for (size_t i = 0; i < pos.size(); ++i) all[i] = {score[i], pos[i]};
  const int64_t k = std::min<int64_t>(opt_.k, h - a);
  std::nth_element(all.begin(), all.begin() + (k - 1), all.end(), Better);
  std::vector<int64_t> truth;
  for (int64_t i = 0; i < k; ++i) truth.push_back(all[i].second);
  std::sort(truth.begin(), truth.end());
  std::vector<int64_t> got(sel.pos.begin() + sel.retrieved_begin,
                           sel.pos.end());  // ascending
  std::vector<int64_t> both;
  std::set_intersection(truth.begin(), truth.end(), got.begin(), got.end(),
                        std::back_inserter(both));
  absl::MutexLock lock(&mu_);
  measured_.recall_checks += 1;
  measured_.recall_sum +=
      static_cast<double>(both.size()) / static_cast<double>(k);
}

void ZetaApproximator::AttendRow(const float* q, int64_t end,
                                 float* out) const {
  Selection sel;
  if (opt_.native) {
    SelectNative(q, end, &sel);
    CauchyOutput(q, end, sel, out);
  } else {
    Select(q, end, &sel);
    SubsetSoftmax(sel.score.data(), sel.pos.data(),
                  static_cast<int64_t>(sel.pos.size()), st_.values.data(),
                  shape().value_dim, out, nullptr);
  }
  MaybeCheckRecall(q, sel);
}

void ZetaApproximator::SelectedPositions(const float* q, int64_t end,
                                         std::vector<int64_t>* attended,
                                         std::vector<int64_t>* top_k) const {
  Selection sel;
  if (opt_.native) {
    SelectNative(q, std::min(end, st_.n), &sel);
  } else {
    Select(q, std::min(end, st_.n), &sel);
  }
  top_k->assign(sel.pos.begin() + sel.retrieved_begin, sel.pos.end());
  attended->assign(sel.pos.begin(), sel.pos.end());
  std::sort(attended->begin(), attended->end());
}

absl::Status ZetaApproximator::Query(ConstMatrixView queries,
                                     MatrixView out) const {
  KVSKETCH_RETURN_IF_ERROR(CheckQueryArgs(queries, out));
  if (st_.n == 0) {
    return absl::FailedPreconditionError(
        "query: no token has been appended to this head yet");
  }
  for (int64_t r = 0; r < queries.rows; ++r) {
    AttendRow(queries.row(r), st_.n, out.row(r));
  }
  return absl::OkStatus();
}

absl::Status ZetaApproximator::Prefill(ConstMatrixView queries, int group,
                                       ConstMatrixView keys,
                                       ConstMatrixView values, MatrixView out) {
  KVSKETCH_RETURN_IF_ERROR(CheckPrefillArgs(queries, group, keys, values, out));
  const int64_t t_new = keys.rows;
  KVSKETCH_RETURN_IF_ERROR(CheckFiniteKeys("prefill", keys));
  // Chunk-aligned segments: after a segment is appended the index holds
  // exactly the whole chunks before it, as it does in streaming after each
  // of the segment's tokens, so every row gets the streaming answer.
  int64_t t = 0;
  while (t < t_new) {
    const int64_t tail = st_.n - st_.flushed;
    const int64_t room = tail == opt_.chunk ? opt_.chunk : opt_.chunk - tail;
    const int64_t seg = std::min(t_new - t, room);
    AppendTo(st_, keys.row(t), values.row(t), seg);
    const int64_t base = st_.n - seg;
    for (int64_t i = 0; i < seg; ++i) {
      for (int g = 0; g < group; ++g) {
        const int64_t r = g * t_new + t + i;
        AttendRow(queries.row(r), base + i + 1, out.row(r));
      }
    }
    t += seg;
  }
  return absl::OkStatus();
}

absl::Status ZetaApproximator::QueryDiagnostics(
    ConstMatrixView queries, std::vector<QueryDiagnostic>* out) const {
  out->clear();
  if (opt_.native) {
    return absl::UnimplementedError(
        "diagnostics: zeta mode=native is not softmax attention, there is no "
        "dropped softmax mass to report");
  }
  if (queries.rows == 0 && queries.cols == shape().head_dim) {
    return absl::OkStatus();  // the support probe
  }
  if (queries.cols != shape().head_dim || queries.rows < 0 ||
      (queries.rows > 0 && queries.data == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "diagnostics: queries are ", queries.rows, "x", queries.cols,
        ", expected ", shape().head_dim, " columns"));
  }
  if (st_.n == 0) {
    return absl::FailedPreconditionError(
        "diagnostics: no token has been appended to this head yet");
  }
  Selection sel;
  std::vector<int64_t> all_pos;
  std::vector<double> all;
  for (int64_t r = 0; r < queries.rows; ++r) {
    const float* q = queries.row(r);
    Select(q, st_.n, &sel);
    all_pos.clear();
    all.clear();
    ScoreRange(st_.keys.data(), shape().head_dim, 0, st_.n, q, shape().scale,
               &all_pos, &all);
    const double m = *std::max_element(all.begin(), all.end());
    double total = 0, kept = 0;
    for (double s : all) total += std::exp(s - m);
    // τ from the one consistent score vector over all keys.
    for (int64_t p : sel.pos) kept += std::exp(all[p] - m);
    const double tau = std::clamp(1.0 - kept / total, 0.0, 1.0);
    out->push_back({tau, 2.0 * tau * st_.max_value_norm,
                    static_cast<int64_t>(sel.pos.size())});
  }
  return absl::OkStatus();
}

SelfMeasurements ZetaApproximator::Measurements() const {
  absl::MutexLock lock(&mu_);
  return measured_;
}

// SaveState payload (version 1): u8 version, i64 n, keys n×d f32, values
// n×dv f32. The index, Φ and the projections are a deterministic function of
// the token sequence, so LoadState rebuilds them by appending (O(n·L·(dims·d
// + log n))) and the result is bit-identical.
absl::Status ZetaApproximator::SaveState(ByteWriter& writer) const {
  const int d = shape().head_dim, dv = shape().value_dim;
  writer.PutU8(kStateVersion);
  writer.PutI64(st_.n);
  writer.PutFloats(absl::MakeConstSpan(st_.keys.data(), st_.n * d));
  writer.PutFloats(absl::MakeConstSpan(st_.values.data(), st_.n * dv));
  return absl::OkStatus();
}

absl::Status ZetaApproximator::LoadState(ByteReader& reader) {
  const int d = shape().head_dim, dv = shape().value_dim;
  uint8_t version = 0;
  KVSKETCH_RETURN_IF_ERROR(reader.GetU8(&version, "zeta state version"));
  if (version != kStateVersion) {
    return absl::DataLossError(
        absl::StrCat("zeta state: unknown version ", version));
  }
  int64_t n = 0;
  KVSKETCH_RETURN_IF_ERROR(reader.GetI64(&n, "zeta num_tokens"));
  // Divide, not multiply: n * (d + dv) * 4 wraps for a hostile n and let
  // it through (tests/fuzz/snapshot_fuzzer.cc).
  if (n < 0 || static_cast<uint64_t>(n) >
                   reader.remaining() / (static_cast<uint64_t>(d + dv) * 4)) {
    return absl::DataLossError(
        absl::StrCat("zeta state: truncated or bad num_tokens ", n, " (",
                     reader.remaining(), " bytes left)"));
  }
  std::vector<float> k(n * d), v(n * dv);
  KVSKETCH_RETURN_IF_ERROR(reader.GetFloats(k.data(), k.size(), "zeta keys"));
  KVSKETCH_RETURN_IF_ERROR(reader.GetFloats(v.data(), v.size(), "zeta values"));
  for (float x : k) {
    if (!std::isfinite(x)) {
      return absl::DataLossError("zeta state: non-finite key");
    }
  }
  State fresh = EmptyState();
  AppendTo(fresh, k.data(), v.data(), n);
  st_ = std::move(fresh);
  return absl::OkStatus();
}

}  // namespace kvsketch
