// File: core/conv/conv.cc
#include "core/conv/conv.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <utility>

#include "Eigen/Core"
#include "absl/strings/str_cat.h"
#include "core/conv/conv_basis.h"
#include "core/exact/exact_kernels.h"
#include "core/exact/exact_prefill.h"
#include "core/status_macros.h"

namespace kvsketch {
namespace {

constexpr uint8_t kStateVersion = 1;
// §C.4: rows whose normaliser is below this fraction of the largest lose
// relative accuracy to the (absolute) double FFT error; they are recomputed.
constexpr double kTinyNormaliser = 1e-8;
// More tiny rows than T / this and the fit is treated as failed: the exact
// recomputation would cost as much as the exact path.
constexpr int64_t kMaxTinyRowFraction = 8;
// Row and key blocks of the exact new×old rectangle.
constexpr int64_t kRowBlock = 128;
constexpr int64_t kKeyBlock = 512;

using RowMatrix =
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMap = Eigen::Map<const RowMatrix>;

absl::StatusOr<std::unique_ptr<Approximator>> CreateConv(
    const SpecParams& params, const HeadShape& shape,
    std::string canonical_spec) {
  ConvOptions opt;
  opt.k = static_cast<int>(params.GetInt("k"));
  opt.probe = static_cast<int>(params.GetInt("probe"));
  opt.tau = params.GetFloat("tau");
  opt.fit = params.GetEnum("fit") == "segmented" ? ConvFit::kSegmented
                                                 : ConvFit::kSearch;
  opt.samples = static_cast<int>(params.GetInt("samples"));
  opt.max_error = params.GetFloat("max_error");
  opt.min_tokens = params.GetInt("min_tokens");
  opt.seed = static_cast<uint64_t>(params.GetInt("seed"));
  return std::unique_ptr<Approximator>(
      new ConvApproximator(shape, opt, std::move(canonical_spec)));
}

// Softmax attention of one query row over a set of keys, kept as
// (log-sum-exp split into max m and z = Σ e^{s−m}, normalised output o) so
// two disjoint key sets merge exactly.
struct Partial {
  double m = -std::numeric_limits<double>::infinity();
  double z = 0;
  std::vector<double> o;  // dv, normalised
};

// Exact Partial of query q over `count` keys/values (rows of k, v).
// O(count·(d + dv)).
Partial ExactPartial(const float* q, const float* k, const float* v,
                     int64_t count, int d, int dv, float scale) {
  Partial p;
  p.o.assign(dv, 0.0);
  if (count == 0) return p;
  const Eigen::VectorXf s =
      ConstMap(k, count, d) * Eigen::Map<const Eigen::VectorXf>(q, d);
  for (int64_t j = 0; j < count; ++j) {
    p.m = std::max(p.m, double{scale} * s[j]);
  }
  for (int64_t j = 0; j < count; ++j) {
    const double w = std::exp(double{scale} * s[j] - p.m);
    p.z += w;
    const float* vj = v + j * dv;
    for (int c = 0; c < dv; ++c) p.o[c] += w * vj[c];
  }
  for (int c = 0; c < dv; ++c) p.o[c] /= p.z;
  return p;
}

// a ∪ b (disjoint key sets) into out (dv floats).
void MergeInto(const Partial& a, const Partial& b, int dv, float* out) {
  const double m = std::max(a.m, b.m);
  const double wa = a.z > 0 ? a.z * std::exp(a.m - m) : 0.0;
  const double wb = b.z > 0 ? b.z * std::exp(b.m - m) : 0.0;
  const double inv = 1.0 / (wa + wb);
  for (int c = 0; c < dv; ++c) {
    const double oa = wa > 0 ? wa * a.o[c] : 0.0;
    const double ob = wb > 0 ? wb * b.o[c] : 0.0;
    out[c] = static_cast<float>((oa + ob) * inv);
  }
}

// Exact Partials of t rows of q over `count` keys (the new×old rectangle),
// blocked: S = scale·Qb·Kbᵀ and P·Vb are float GEMMs, the running (m, z, o)
// merge is double (the numerics of exact_prefill.h). O(t·count·(d + dv)).
std::vector<Partial> ExactRectangle(const float* q, int64_t t, const float* k,
                                    const float* v, int64_t count, int d,
                                    int dv, float scale) {
  std::vector<Partial> parts(t);
  for (Partial& p : parts) p.o.assign(dv, 0.0);
  RowMatrix scores, weights, ob;
  std::vector<float> shifted;
  for (int64_t r0 = 0; r0 < t; r0 += kRowBlock) {
    const int64_t rb = std::min(kRowBlock, t - r0);
    const ConstMap qb(q + r0 * d, rb, d);
    for (int64_t k0 = 0; k0 < count; k0 += kKeyBlock) {
      const int64_t kb = std::min(kKeyBlock, count - k0);
      scores.noalias() = (qb * ConstMap(k + k0 * d, kb, d).transpose()) * scale;
      weights.resize(rb, kb);
      std::vector<double> block_max(rb), block_z(rb);
      shifted.resize(kb);
      for (int64_t i = 0; i < rb; ++i) {
        const float mx = scores.row(i).maxCoeff();
        for (int64_t j = 0; j < kb; ++j) shifted[j] = scores(i, j) - mx;
        ExpNonPositive(shifted.data(), weights.row(i).data(), kb);
        block_max[i] = mx;
        block_z[i] = weights.row(i).cast<double>().sum();
      }
      ob.noalias() = weights * ConstMap(v + k0 * dv, kb, dv);
      for (int64_t i = 0; i < rb; ++i) {
        Partial& p = parts[r0 + i];
        const double m = std::max(p.m, block_max[i]);
        const double a = p.z > 0 ? std::exp(p.m - m) : 0.0;
        const double b = std::exp(block_max[i] - m);
        // p.o is normalised by p.z; keep it so after the merge.
        const double z = p.z * a + block_z[i] * b;
        for (int c = 0; c < dv; ++c) {
          p.o[c] = (p.o[c] * p.z * a + double{ob(i, c)} * b) / z;
        }
        p.m = m;
        p.z = z;
      }
    }
  }
  return parts;
}

// Column access to A[i][j] = exp(scale·q_i·k_j − shift) over the new block.
class ScoreColumns : public ColumnSource {
 public:
  ScoreColumns(const float* q, const float* k, int64_t n, int d, float scale,
               double shift)
      : q_(q), k_(k), n_(n), d_(d), scale_(scale), shift_(shift) {}
  int64_t size() const override { return n_; }
  void Column(int64_t j, int64_t len, double* out) const override {
    const Eigen::VectorXf s =
        ConstMap(q_ + j * d_, len, d_) *
        Eigen::Map<const Eigen::VectorXf>(k_ + j * d_, d_);
    for (int64_t t = 0; t < len; ++t) {
      out[t] = std::exp(double{scale_} * s[t] - shift_);
    }
  }

 private:
  const float* q_;
  const float* k_;
  int64_t n_;
  int d_;
  float scale_;
  double shift_;
};

}  // namespace

const KindDef& ConvKindDef() {
  static const KindDef* const def = new KindDef{
      "conv",
      "full KV cache, exact decode; prefill fits the causal exp-score block "
      "by k Toeplitz bases applied with FFTs, exact where a sampled check "
      "fails (papers/C_D_E.md C)",
      {
          ParamDef{"k",
                   ParamType::kInt,
                   "16",
                   {},
                   1,
                   1 << 20,
                   "most conv bases per head (fit=segmented: grid segments)"},
          ParamDef{"probe",
                   ParamType::kInt,
                   "32",
                   {},
                   1,
                   1 << 20,
                   "lags per window of the basis search (fit=search)"},
          ParamDef{"tau",
                   ParamType::kFloat,
                   "0.05",
                   {},
                   0,
                   1e6,
                   "window change threshold, relative l1 (fit=search)"},
          ParamDef{"fit",
                   ParamType::kEnum,
                   "search",
                   {"search", "segmented"},
                   -1e300,
                   1e300,
                   "search: binary search for basis starts (C.3); "
                   "segmented: uniform grid, sampled profiles (C.8)"},
          ParamDef{"samples",
                   ParamType::kInt,
                   "32",
                   {},
                   1,
                   1 << 20,
                   "exact rows sampled per head for the error check (and "
                   "columns per segment, fit=segmented)"},
          ParamDef{"max_error",
                   ParamType::kFloat,
                   "0.01",
                   {},
                   0,
                   1e6,
                   "largest sampled output error, in units of max ||v||_2, "
                   "before a head falls back to exact prefill"},
          ParamDef{"min_tokens",
                   ParamType::kInt,
                   "1024",
                   {},
                   1,
                   1LL << 40,
                   "prefills of fewer new tokens run exactly"},
          ParamDef{"seed",
                   ParamType::kInt,
                   "1",
                   {},
                   0,
                   1LL << 62,
                   "seed of the sampled rows and columns"},
      },
      &CreateConv};
  return *def;
}

ConvApproximator::ConvApproximator(const HeadShape& shape,
                                   const ConvOptions& options,
                                   std::string canonical_spec)
    : Approximator(shape), opt_(options), spec_(std::move(canonical_spec)) {}

int64_t ConvApproximator::MemoryBytes() const {
  return static_cast<int64_t>((keys_.capacity() + values_.capacity()) *
                              sizeof(float));
}

absl::Status ConvApproximator::Append(ConstMatrixView keys,
                                      ConstMatrixView values) {
  KVSKETCH_RETURN_IF_ERROR(CheckAppendArgs(keys, values));
  const int d = shape().head_dim, dv = shape().value_dim;
  // Capacity is a function of n alone (the next power of two, at least 16
  // tokens), so equal states report equal MemoryBytes however they were
  // built.
  const int64_t need = n_ + keys.rows;
  if (need * d > static_cast<int64_t>(keys_.capacity())) {
    int64_t cap = 16;
    while (cap < need) cap *= 2;
    keys_.reserve(cap * d);
    values_.reserve(cap * dv);
  }
  keys_.insert(keys_.end(), keys.data, keys.data + keys.size());
  values_.insert(values_.end(), values.data, values.data + values.size());
  n_ += keys.rows;
  return absl::OkStatus();
}

absl::Status ConvApproximator::Query(ConstMatrixView queries,
                                     MatrixView out) const {
  KVSKETCH_RETURN_IF_ERROR(CheckQueryArgs(queries, out));
  if (n_ == 0) {
    return absl::FailedPreconditionError(
        "query: no token has been appended to this head yet");
  }
  if (queries.rows == 0) return absl::OkStatus();
  const KvBlock block{keys_.data(), values_.data(), n_};
  ExactAttention(StoreType::kF32, queries.data, queries.rows, shape().head_dim,
                 shape().value_dim, shape().scale, {&block, 1}, out.data);
  return absl::OkStatus();
}

absl::Status ConvApproximator::Prefill(ConstMatrixView queries, int group,
                                       ConstMatrixView keys,
                                       ConstMatrixView values, MatrixView out) {
  // Nothing changes before the checks pass.
  KVSKETCH_RETURN_IF_ERROR(CheckPrefillArgs(queries, group, keys, values, out));
  const int64_t t_new = keys.rows;
  const int d = shape().head_dim;
  const int dv = shape().value_dim;
  const int64_t n_prev = n_;
  KVSKETCH_RETURN_IF_ERROR(Append(keys, values));
  last_stats_.clear();
  if (t_new == 0) return absl::OkStatus();
  const KvBlock block{keys_.data(), values_.data(), n_};
  if (t_new < opt_.min_tokens) {
    ExactPrefillAttention(StoreType::kF32, queries.data, group, t_new, n_prev,
                          d, dv, shape().scale, {&block, 1}, out.data);
    return absl::OkStatus();
  }
  SelfMeasurements delta;
  for (int h = 0; h < group; ++h) {
    const float* q_h = queries.data + h * t_new * d;
    float* out_h = out.data + h * t_new * dv;
    ConvHeadStats stats = PrefillHead(q_h, h, n_prev, out_h);
    if (stats.fallback) {
      ExactPrefillAttention(StoreType::kF32, q_h, 1, t_new, n_prev, d, dv,
                            shape().scale, {&block, 1}, out_h);
    }
    ++delta.fit_checks;
    delta.fit_error_sum += stats.fit_error;
    delta.fit_fallbacks += stats.fallback ? 1 : 0;
    last_stats_.push_back(stats);
  }
  absl::MutexLock lock(&mu_);
  measured_ += delta;
  return absl::OkStatus();
}

ConvHeadStats ConvApproximator::PrefillHead(const float* q_h, int head,
                                            int64_t n_prev,
                                            float* out_h) const {
  const int d = shape().head_dim, dv = shape().value_dim;
  const float scale = shape().scale;
  const int64_t t = n_ - n_prev;
  const float* kn = keys_.data() + n_prev * d;
  const float* vn = values_.data() + n_prev * dv;
  ConvHeadStats stats;

  // Sampled rows: exact new-block outputs for the error estimate. The seed
  // mixes in the head and position so successive prefills sample anew.
  std::mt19937_64 rng(opt_.seed * 0x9E3779B97F4A7C15ULL +
                      static_cast<uint64_t>(n_prev) * 0xBF58476D1CE4E5B9ULL +
                      static_cast<uint64_t>(head));
  std::vector<int64_t> all(t), sampled;
  std::iota(all.begin(), all.end(), 0);
  std::sample(all.begin(), all.end(), std::back_inserter(sampled),
              std::min<int64_t>(opt_.samples, t), rng);
  std::vector<Partial> sampled_exact;
  double shift = -std::numeric_limits<double>::infinity();
  for (int64_t i : sampled) {
    sampled_exact.push_back(
        ExactPartial(q_h + i * d, kn, vn, i + 1, d, dv, scale));
    shift = std::max(shift, sampled_exact.back().m);
  }
  // Diagonal scores, O(T·d): with the sampled maxima, the global shift c.
  for (int64_t i = 0; i < t; ++i) {
    const double s = double{scale} *
                     Eigen::Map<const Eigen::VectorXf>(q_h + i * d, d)
                         .dot(Eigen::Map<const Eigen::VectorXf>(kn + i * d, d));
    shift = std::max(shift, s);
  }

  const ScoreColumns columns(q_h, kn, t, d, scale, shift);
  ConvBasis basis;
  if (opt_.fit == ConvFit::kSearch) {
    basis = FitConvBasisSearch(columns, {opt_.k, opt_.probe, opt_.tau});
  } else {
    basis = FitConvBasisSegmented(
        columns,
        {opt_.k, opt_.samples, opt_.seed + static_cast<uint64_t>(head)});
  }
  stats.bases = basis.bases();

  // Error estimate on the sampled rows before any FFT (each fitted row is
  // O(k·T) from the increments, conv_basis.h), so a failing head costs
  // only the fit and the samples. In units of max ‖v_j‖₂: a convex
  // combination moves by at most 2 of those, the value charged to a row
  // the fit cannot normalise.
  double max_v = 0;
  for (int64_t j = 0; j < t; ++j) {
    max_v = std::max<double>(
        max_v, Eigen::Map<const Eigen::VectorXf>(vn + j * dv, dv).norm());
  }
  double error = 0;
  std::vector<double> row(t);
  for (size_t s = 0; s < sampled.size(); ++s) {
    const int64_t i = sampled[s];
    ConvBasisRow(basis, i, row.data());
    double di = 0;
    std::vector<double> o(dv, 0.0);
    for (int64_t j = 0; j <= i; ++j) {
      di += row[j];
      const float* vj = vn + j * dv;
      for (int c = 0; c < dv; ++c) o[c] += row[j] * vj[c];
    }
    double e = 2;
    if (std::isfinite(di) && di > 0) {
      double sq = 0;
      for (int c = 0; c < dv; ++c) {
        const double diff = o[c] / di - sampled_exact[s].o[c];
        sq += diff * diff;
      }
      e = max_v > 0 ? std::sqrt(sq) / max_v : 0.0;
      if (!std::isfinite(e)) e = 2;
    }
    error = std::max(error, e);
  }
  stats.fit_error = error;
  if (error > opt_.max_error) {
    stats.fallback = true;
    return stats;
  }

  // Y = Â·[V | 1]: the last column is the normaliser D from the same Â, so
  // rows stay convex combinations (§C.4).
  const int channels = dv + 1;
  std::vector<double> x(t * channels), y(t * channels);
  for (int64_t i = 0; i < t; ++i) {
    std::copy(vn + i * dv, vn + (i + 1) * dv, x.begin() + i * channels);
    x[i * channels + dv] = 1.0;
  }
  ApplyConvBasis(basis, x.data(), channels, y.data());

  double max_d = 0;
  for (int64_t i = 0; i < t; ++i) {
    const double di = y[i * channels + dv];
    if (std::isfinite(di)) max_d = std::max(max_d, di);
  }
  std::vector<char> exact_row(t, 0);
  int64_t tiny = 0;
  for (int64_t i = 0; i < t; ++i) {
    const double di = y[i * channels + dv];
    if (!(std::isfinite(di) && di > kTinyNormaliser * max_d)) {
      exact_row[i] = 1;
      ++tiny;
    }
  }
  if (tiny * kMaxTinyRowFraction > t) {
    stats.fallback = true;
    return stats;
  }

  // New-block Partials: exact where sampled or tiny, the fit elsewhere. The
  // fit's log normaliser is shift + log D_i (m = shift, z = D_i).
  std::vector<Partial> fresh(t);
  for (size_t s = 0; s < sampled.size(); ++s) {
    fresh[sampled[s]] = std::move(sampled_exact[s]);
    exact_row[sampled[s]] = 2;
  }
  for (int64_t i = 0; i < t; ++i) {
    Partial& p = fresh[i];
    if (exact_row[i] == 1) {
      p = ExactPartial(q_h + i * d, kn, vn, i + 1, d, dv, scale);
    } else if (exact_row[i] == 0) {
      const double di = y[i * channels + dv];
      p.m = shift;
      p.z = di;
      p.o.resize(dv);
      for (int c = 0; c < dv; ++c) p.o[c] = y[i * channels + c] / di;
    }
  }
  for (int64_t i = 0; i < t; ++i) stats.exact_rows += exact_row[i] ? 1 : 0;

  std::vector<Partial> old;
  if (n_prev > 0) {
    old = ExactRectangle(q_h, t, keys_.data(), values_.data(), n_prev, d, dv,
                         scale);
  }
  const Partial none;
  for (int64_t i = 0; i < t; ++i) {
    MergeInto(fresh[i], n_prev > 0 ? old[i] : none, dv, out_h + i * dv);
  }
  return stats;
}

SelfMeasurements ConvApproximator::Measurements() const {
  absl::MutexLock lock(&mu_);
  return measured_;
}

// SaveState payload (version 1): u8 version, i64 n, keys n×d f32, values
// n×dv f32.
absl::Status ConvApproximator::SaveState(ByteWriter& writer) const {
  writer.PutU8(kStateVersion);
  writer.PutI64(n_);
  writer.PutFloats(keys_);
  writer.PutFloats(values_);
  return absl::OkStatus();
}

absl::Status ConvApproximator::LoadState(ByteReader& reader) {
  const int d = shape().head_dim, dv = shape().value_dim;
  uint8_t version = 0;
  KVSKETCH_RETURN_IF_ERROR(reader.GetU8(&version, "conv state version"));
  if (version != kStateVersion) {
    return absl::DataLossError(
        absl::StrCat("conv state: unknown version ", version));
  }
  int64_t n = 0;
  KVSKETCH_RETURN_IF_ERROR(reader.GetI64(&n, "conv num_tokens"));
  // Divide, not multiply: n * (d + dv) * 4 wraps for a hostile n and let
  // it through (tests/fuzz/snapshot_fuzzer.cc).
  if (n < 0 || static_cast<uint64_t>(n) >
                   reader.remaining() / (static_cast<uint64_t>(d + dv) * 4)) {
    return absl::DataLossError(
        absl::StrCat("conv state: truncated or bad num_tokens ", n, " (",
                     reader.remaining(), " bytes left)"));
  }
  std::vector<float> k(n * d), v(n * dv);
  KVSKETCH_RETURN_IF_ERROR(reader.GetFloats(k.data(), k.size(), "conv keys"));
  KVSKETCH_RETURN_IF_ERROR(reader.GetFloats(v.data(), v.size(), "conv values"));
  // Rebuild through Append so capacity (and MemoryBytes) match a state
  // built by appending.
  std::vector<float> old_k, old_v;
  std::swap(old_k, keys_);
  std::swap(old_v, values_);
  const int64_t old_n = n_;
  n_ = 0;
  absl::Status st =
      n > 0 ? Append({k.data(), n, d}, {v.data(), n, dv}) : absl::OkStatus();
  if (!st.ok()) {
    keys_ = std::move(old_k);
    values_ = std::move(old_v);
    n_ = old_n;
    return st;
  }
  last_stats_.clear();
  return absl::OkStatus();
}

}  // namespace kvsketch
