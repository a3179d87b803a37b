// File: core/topk/topk.cc
#include "core/topk/topk.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "Eigen/Core"
#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "core/topk/sparse_softmax.h"

namespace kvsketch {
namespace {

constexpr uint8_t kStateVersion = 1;

using RowMatrix =
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

absl::StatusOr<std::unique_ptr<Approximator>> CreateTopk(
    const SpecParams& params, const HeadShape& shape,
    std::string canonical_spec) {
  TopkOptions opt;
  opt.alpha = params.GetFloat("alpha");
  opt.c = params.GetFloat("c");
  opt.k = params.GetInt("k");
  opt.k_min = params.GetInt("k_min");
  opt.sinks = params.GetInt("sinks");
  opt.window = params.GetInt("window");
  opt.blocks = params.GetEnum("select") == "blocks";
  opt.block = static_cast<int>(params.GetInt("block"));
  opt.oversample = params.GetFloat("oversample");
  return std::unique_ptr<Approximator>(
      new TopkApproximator(shape, opt, std::move(canonical_spec)));
}

// Scores scale·(K q) of rows [begin, end) of a row-major n×d key matrix.
void ScoreRange(const float* keys, int d, int64_t begin, int64_t end,
                const float* q, double scale, double* out) {
  if (end <= begin) return;
  Eigen::Map<const RowMatrix> k(keys + begin * d, end - begin, d);
  Eigen::Map<const Eigen::VectorXf> qv(q, d);
  const Eigen::VectorXf s = k * qv;
  for (int64_t i = 0; i < end - begin; ++i) out[i] = scale * s[i];
}

// Keeps the `keep` best (score desc, position asc) of idx/score pairs at the
// front. O(size).
void KeepTop(std::vector<std::pair<double, int64_t>>& cand, int64_t keep) {
  if (keep >= static_cast<int64_t>(cand.size())) return;
  std::nth_element(cand.begin(), cand.begin() + keep, cand.end(),
                   [](const auto& a, const auto& b) {
                     return a.first > b.first ||
                            (a.first == b.first && a.second < b.second);
                   });
  cand.resize(keep);
}

}  // namespace

const KindDef& TopkKindDef() {
  static const KindDef* const def = new KindDef{
      "topk",
      "full KV cache; softmax over the top k(n)=clamp(alpha*n^c) keys plus "
      "sinks and window, exact or block-bound selection (papers/A_B.md B.3)",
      {
          ParamDef{"alpha",
                   ParamType::kFloat,
                   "1",
                   {},
                   0,
                   1e9,
                   "budget scale: k(n) = ceil(alpha * n^c)"},
          ParamDef{"c",
                   ParamType::kFloat,
                   "0.5",
                   {},
                   0,
                   1,
                   "budget exponent C in (0,1)"},
          ParamDef{"k",
                   ParamType::kInt,
                   "0",
                   {},
                   0,
                   1LL << 40,
                   "fixed budget in keys (0 = use alpha*n^c; no k_min floor)"},
          ParamDef{"k_min",
                   ParamType::kInt,
                   "16",
                   {},
                   1,
                   1LL << 40,
                   "budget floor; the effective floor is max(k_min, "
                   "ceil(4*log2 n))"},
          ParamDef{"sinks",
                   ParamType::kInt,
                   "4",
                   {},
                   0,
                   1LL << 40,
                   "first tokens always attended"},
          ParamDef{"window",
                   ParamType::kInt,
                   "64",
                   {},
                   0,
                   1LL << 40,
                   "most recent tokens always attended"},
          ParamDef{"select",
                   ParamType::kEnum,
                   "exact",
                   {"exact", "blocks"},
                   -1e300,
                   1e300,
                   "exact: score every key; blocks: Quest-style block "
                   "bounds, score only the best blocks"},
          ParamDef{"block",
                   ParamType::kInt,
                   "32",
                   {},
                   1,
                   4096,
                   "keys per block (select=blocks)"},
          ParamDef{"oversample",
                   ParamType::kFloat,
                   "2",
                   {},
                   1,
                   1e6,
                   "keys scored per selected key (select=blocks)"},
      },
      &CreateTopk};
  return *def;
}

int64_t TopkBudget(const TopkOptions& opt, int64_t n) {
  if (opt.k > 0) return std::min(opt.k, n);
  const double rule =
      std::ceil(opt.alpha * std::pow(static_cast<double>(n), opt.c));
  const int64_t floor = std::max<int64_t>(
      opt.k_min,
      static_cast<int64_t>(std::ceil(4.0 * std::log2(static_cast<double>(n)))));
  const int64_t k = rule >= 9e18 ? n : static_cast<int64_t>(rule);
  return std::min(n, std::max(k, floor));
}

TopkApproximator::TopkApproximator(const HeadShape& shape,
                                   const TopkOptions& options,
                                   std::string canonical_spec)
    : Approximator(shape), opt_(options), spec_(std::move(canonical_spec)) {}

int64_t TopkApproximator::MemoryBytes() const {
  return static_cast<int64_t>((keys_.capacity() + values_.capacity() +
                               bmin_.capacity() + bmax_.capacity()) *
                              sizeof(float));
}

void TopkApproximator::UpdateBlocks(int64_t first_new) {
  if (!opt_.blocks) return;
  const int d = shape().head_dim;
  const int64_t nblocks = (n_ + opt_.block - 1) / opt_.block;
  bmin_.resize(nblocks * d);
  bmax_.resize(nblocks * d);
  for (int64_t p = first_new; p < n_; ++p) {
    const float* k = keys_.data() + p * d;
    float* lo = bmin_.data() + (p / opt_.block) * d;
    float* hi = bmax_.data() + (p / opt_.block) * d;
    if (p % opt_.block == 0) {
      std::copy(k, k + d, lo);
      std::copy(k, k + d, hi);
    } else {
      for (int i = 0; i < d; ++i) {
        lo[i] = std::min(lo[i], k[i]);
        hi[i] = std::max(hi[i], k[i]);
      }
    }
  }
}

absl::Status TopkApproximator::Append(ConstMatrixView keys,
                                      ConstMatrixView values) {
  KVSKETCH_RETURN_IF_ERROR(CheckAppendArgs(keys, values));
  const int dv = shape().value_dim;
  const int64_t first = n_;
  // Capacity is a function of n alone (the next power of two, at least 16
  // tokens), so equal states report equal MemoryBytes however they were built.
  const int64_t need = n_ + keys.rows;
  if (need * shape().head_dim > static_cast<int64_t>(keys_.capacity())) {
    int64_t cap = 16;
    while (cap < need) cap *= 2;
    keys_.reserve(cap * shape().head_dim);
    values_.reserve(cap * dv);
    if (opt_.blocks) {
      const int64_t nb = (cap + opt_.block - 1) / opt_.block;
      bmin_.reserve(nb * shape().head_dim);
      bmax_.reserve(nb * shape().head_dim);
    }
  }
  keys_.insert(keys_.end(), keys.data, keys.data + keys.size());
  values_.insert(values_.end(), values.data, values.data + values.size());
  n_ += keys.rows;
  for (int64_t i = 0; i < values.rows; ++i) {
    double s = 0;
    for (int c = 0; c < dv; ++c)
      s += double{values.row(i)[c]} * values.row(i)[c];
    max_value_norm_ = std::max(max_value_norm_, std::sqrt(s));
  }
  UpdateBlocks(first);
  return absl::OkStatus();
}

void TopkApproximator::Select(const float* q, std::vector<int64_t>* chosen,
                              std::vector<double>* chosen_scores,
                              int64_t* scored) const {
  const int d = shape().head_dim;
  const double scale = shape().scale;
  const int64_t n = n_;
  const int64_t s_end = std::min<int64_t>(opt_.sinks, n);
  const int64_t w_begin = std::max<int64_t>(s_end, n - opt_.window);
  const int64_t rest = w_begin - s_end;
  const int64_t kb = TopkBudget(opt_, n);
  chosen->clear();
  chosen_scores->clear();
  // Forced: sinks and window.
  std::vector<double> buf(std::max<int64_t>(s_end, n - w_begin));
  ScoreRange(keys_.data(), d, 0, s_end, q, scale, buf.data());
  for (int64_t p = 0; p < s_end; ++p) {
    chosen->push_back(p);
    chosen_scores->push_back(buf[p]);
  }
  ScoreRange(keys_.data(), d, w_begin, n, q, scale, buf.data());
  for (int64_t p = w_begin; p < n; ++p) {
    chosen->push_back(p);
    chosen_scores->push_back(buf[p - w_begin]);
  }
  *scored = s_end + (n - w_begin);
  if (rest <= 0) return;
  std::vector<std::pair<double, int64_t>> cand;
  if (kb >= rest || !opt_.blocks) {
    std::vector<double> sc(rest);
    ScoreRange(keys_.data(), d, s_end, w_begin, q, scale, sc.data());
    cand.reserve(rest);
    for (int64_t i = 0; i < rest; ++i) cand.emplace_back(sc[i], s_end + i);
    *scored += rest;
  } else {
    // Upper bound of q·k over each block touching [s_end, w_begin):
    // Σ_i max(q_i·lo_i, q_i·hi_i) = hi·q⁺ + lo·q⁻.
    const int64_t b0 = s_end / opt_.block;
    const int64_t b1 = (w_begin - 1) / opt_.block;
    const int64_t nb = b1 - b0 + 1;
    Eigen::Map<const Eigen::VectorXf> qv(q, d);
    const Eigen::VectorXf qpos = qv.cwiseMax(0.0f);
    const Eigen::VectorXf qneg = qv.cwiseMin(0.0f);
    Eigen::Map<const RowMatrix> lo(bmin_.data() + b0 * d, nb, d);
    Eigen::Map<const RowMatrix> hi(bmax_.data() + b0 * d, nb, d);
    const Eigen::VectorXf ub = hi * qpos + lo * qneg;
    std::vector<std::pair<double, int64_t>> blocks(nb);
    for (int64_t b = 0; b < nb; ++b) blocks[b] = {ub[b], b0 + b};
    // Enough blocks for oversample·k keys even if the two edge blocks are
    // partial.
    const int64_t want = static_cast<int64_t>(
        std::ceil(opt_.oversample * static_cast<double>(kb) / opt_.block));
    KeepTop(blocks, std::min(nb, want + 2));
    std::vector<double> sc(opt_.block);
    for (const auto& [bound, b] : blocks) {
      const int64_t lo_p = std::max(s_end, b * opt_.block);
      const int64_t hi_p = std::min(w_begin, (b + 1) * opt_.block);
      ScoreRange(keys_.data(), d, lo_p, hi_p, q, scale, sc.data());
      for (int64_t p = lo_p; p < hi_p; ++p) cand.emplace_back(sc[p - lo_p], p);
      *scored += hi_p - lo_p;
    }
  }
  KeepTop(cand, kb);
  for (const auto& [score, p] : cand) {
    chosen->push_back(p);
    chosen_scores->push_back(score);
  }
}

absl::Status TopkApproximator::QueryWithStats(
    ConstMatrixView queries, MatrixView out,
    std::vector<TopkQueryStats>* stats) const {
  KVSKETCH_RETURN_IF_ERROR(CheckQueryArgs(queries, out));
  if (n_ == 0) {
    return absl::FailedPreconditionError(
        "query: no token has been appended to this head yet");
  }
  const int d = shape().head_dim, dv = shape().value_dim;
  if (stats != nullptr) stats->assign(queries.rows, TopkQueryStats{});
  std::vector<int64_t> chosen;
  std::vector<double> chosen_scores, all;
  for (int64_t row = 0; row < queries.rows; ++row) {
    const float* q = queries.row(row);
    int64_t scored = 0;
    Select(q, &chosen, &chosen_scores, &scored);
    SubsetSoftmax(chosen_scores.data(), chosen.data(),
                  static_cast<int64_t>(chosen.size()), values_.data(), dv,
                  out.row(row), nullptr);
    if (stats == nullptr) continue;
    // τ from one consistent score vector over all n keys.
    all.resize(n_);
    ScoreRange(keys_.data(), d, 0, n_, q, shape().scale, all.data());
    const double m = *std::max_element(all.begin(), all.end());
    double total = 0, kept = 0;
    for (double s : all) total += std::exp(s - m);
    for (int64_t p : chosen) kept += std::exp(all[p] - m);
    TopkQueryStats& st = (*stats)[row];
    st.budget = TopkBudget(opt_, n_);
    st.selected = static_cast<int64_t>(chosen.size());
    st.scored = scored;
    st.tau = std::clamp(1.0 - kept / total, 0.0, 1.0);
    st.bound = 2.0 * st.tau * max_value_norm_;
  }
  return absl::OkStatus();
}

absl::Status TopkApproximator::Query(ConstMatrixView queries,
                                     MatrixView out) const {
  return QueryWithStats(queries, out, nullptr);
}

absl::Status TopkApproximator::QueryDiagnostics(
    ConstMatrixView queries, std::vector<QueryDiagnostic>* out) const {
  out->clear();
  if (queries.rows == 0 && queries.cols == shape().head_dim) {
    return absl::OkStatus();  // the support probe
  }
  std::vector<float> scratch(
      static_cast<size_t>(std::max<int64_t>(queries.rows, 0)) *
      shape().value_dim);
  std::vector<TopkQueryStats> stats;
  KVSKETCH_RETURN_IF_ERROR(QueryWithStats(
      queries, {scratch.data(), queries.rows, shape().value_dim}, &stats));
  out->reserve(stats.size());
  for (const TopkQueryStats& st : stats) {
    out->push_back({st.tau, st.bound, st.selected});
  }
  return absl::OkStatus();
}

// SaveState payload (version 1): u8 version, i64 n, keys n×d f32,
// values n×dv f32. Block bounds and max‖v‖ are recomputed on load.
absl::Status TopkApproximator::SaveState(ByteWriter& writer) const {
  writer.PutU8(kStateVersion);
  writer.PutI64(n_);
  writer.PutFloats(keys_);
  writer.PutFloats(values_);
  return absl::OkStatus();
}

absl::Status TopkApproximator::LoadState(ByteReader& reader) {
  const int d = shape().head_dim, dv = shape().value_dim;
  uint8_t version = 0;
  KVSKETCH_RETURN_IF_ERROR(reader.GetU8(&version, "topk state version"));
  if (version != kStateVersion) {
    return absl::DataLossError(
        absl::StrCat("topk state: unknown version ", version));
  }
  int64_t n = 0;
  KVSKETCH_RETURN_IF_ERROR(reader.GetI64(&n, "topk num_tokens"));
  // Divide, not multiply: n * (d + dv) * 4 wraps for a hostile n and let
  // it through (tests/fuzz/snapshot_fuzzer.cc).
  if (n < 0 || static_cast<uint64_t>(n) >
                   reader.remaining() / (static_cast<uint64_t>(d + dv) * 4)) {
    return absl::DataLossError(
        absl::StrCat("topk state: truncated or bad num_tokens ", n, " (",
                     reader.remaining(), " bytes left)"));
  }
  TopkApproximator fresh(shape(), opt_, spec_);
  std::vector<float> k(n * d), v(n * dv);
  KVSKETCH_RETURN_IF_ERROR(reader.GetFloats(k.data(), k.size(), "topk keys"));
  KVSKETCH_RETURN_IF_ERROR(reader.GetFloats(v.data(), v.size(), "topk values"));
  if (n > 0) {
    KVSKETCH_RETURN_IF_ERROR(fresh.Append({k.data(), n, d}, {v.data(), n, dv}));
  }
  *this = std::move(fresh);
  return absl::OkStatus();
}

}  // namespace kvsketch
