#include "core/eval/trace.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/io/npy.h"
#include "core/status_macros.h"
#include "core/synthetic/synthetic.h"

namespace kvsketch::eval {
namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status CheckInt(int64_t x, const std::string& what) {
  if (x < 1 || x > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " = ", x, " is out of range"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Trace> LoadTraceDir(const std::string& dir) {
  KVSKETCH_ASSIGN_OR_RETURN(NpyArray q, ReadNpy(dir + "/q.npy"));
  KVSKETCH_ASSIGN_OR_RETURN(NpyArray k, ReadNpy(dir + "/k.npy"));
  KVSKETCH_ASSIGN_OR_RETURN(NpyArray v, ReadNpy(dir + "/v.npy"));
  const std::pair<const char*, const NpyArray*> all[] = {
      {"q.npy", &q}, {"k.npy", &k}, {"v.npy", &v}};
  for (const auto& [name, a] : all) {
    if (a->shape.size() != 4) {
      return absl::InvalidArgumentError(absl::StrCat(
          dir, "/", name, ": expected rank 4 [layers, heads, T, dim], got ",
          ShapeString(a->shape)));
    }
    for (int64_t x : a->shape) {
      if (x < 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            dir, "/", name, ": empty dimension in ", ShapeString(a->shape)));
      }
    }
  }
  const auto mismatch = [&](const char* what, const char* a, int64_t x,
                            const char* b, int64_t y) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir, ": ", what, " differs: ", a, " has ", x, ", ", b, " has ", y));
  };
  if (q.shape[0] != k.shape[0]) {
    return mismatch("layers (dim 0)", "q.npy", q.shape[0], "k.npy", k.shape[0]);
  }
  if (v.shape[0] != k.shape[0]) {
    return mismatch("layers (dim 0)", "v.npy", v.shape[0], "k.npy", k.shape[0]);
  }
  if (v.shape[1] != k.shape[1]) {
    return mismatch("kv_heads (dim 1)", "v.npy", v.shape[1], "k.npy",
                    k.shape[1]);
  }
  if (q.shape[2] != k.shape[2]) {
    return mismatch("T (dim 2)", "q.npy", q.shape[2], "k.npy", k.shape[2]);
  }
  if (v.shape[2] != k.shape[2]) {
    return mismatch("T (dim 2)", "v.npy", v.shape[2], "k.npy", k.shape[2]);
  }
  if (q.shape[3] != k.shape[3]) {
    return mismatch("head_dim (dim 3)", "q.npy", q.shape[3], "k.npy",
                    k.shape[3]);
  }
  if (q.shape[1] % k.shape[1] != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir, ": q_heads (q.npy dim 1) = ", q.shape[1],
        " is not a multiple of kv_heads (k.npy dim 1) = ", k.shape[1]));
  }
  Trace t;
  t.name = absl::StrCat("dir:", dir);
  t.layers = static_cast<int>(q.shape[0]);
  t.q_heads = static_cast<int>(q.shape[1]);
  t.kv_heads = static_cast<int>(k.shape[1]);
  t.n = k.shape[2];
  t.d = static_cast<int>(k.shape[3]);
  t.dv = static_cast<int>(v.shape[3]);
  t.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(t.d)));
  t.query_pos.resize(t.n);
  for (int64_t i = 0; i < t.n; ++i) t.query_pos[i] = i;
  t.q = std::move(q.data);
  t.k = std::move(k.data);
  t.v = std::move(v.data);
  return t;
}

absl::Status SaveTraceDir(const Trace& t, const std::string& dir) {
  bool dense = t.m() == t.n;
  for (int64_t i = 0; dense && i < t.m(); ++i) dense = t.query_pos[i] == i;
  if (!dense) {
    return absl::InvalidArgumentError(
        "SaveTraceDir: trace has no query at every position (query_pos)");
  }
  KVSKETCH_RETURN_IF_ERROR(
      WriteNpy(dir + "/q.npy", {t.layers, t.q_heads, t.n, t.d}, t.q));
  KVSKETCH_RETURN_IF_ERROR(
      WriteNpy(dir + "/k.npy", {t.layers, t.kv_heads, t.n, t.d}, t.k));
  return WriteNpy(dir + "/v.npy", {t.layers, t.kv_heads, t.n, t.dv}, t.v);
}

void SubsampleQueries(Trace* t, int64_t m, int64_t warm) {
  const int64_t have = t->m();
  if (m <= 0 || have <= m + std::max<int64_t>(warm, 0)) return;
  std::vector<uint8_t> flag(have, 0);  // 2 scored, 1 warm, 0 dropped
  for (int64_t i = 0; i < m; ++i) flag[(i + 1) * have / m - 1] = 2;
  for (int64_t i = 0; i < warm; ++i) {
    const int64_t r = (i + 1) * have / (warm + 1) - 1;
    if (r >= 0 && flag[r] == 0) flag[r] = 1;
  }
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < have; ++i) {
    if (flag[i] != 0) keep.push_back(i);
  }
  std::vector<float> q;
  q.reserve(static_cast<size_t>(t->layers) * t->q_heads * keep.size() * t->d);
  for (int l = 0; l < t->layers; ++l) {
    for (int h = 0; h < t->q_heads; ++h) {
      for (int64_t i : keep) {
        q.insert(q.end(), t->q_row(l, h, i), t->q_row(l, h, i) + t->d);
      }
    }
  }
  std::vector<int64_t> pos;
  std::vector<uint8_t> scored;
  for (int64_t i : keep) {
    pos.push_back(t->query_pos[i]);
    scored.push_back(flag[i] == 2 && t->is_scored(i) ? 1 : 0);
  }
  t->q = std::move(q);
  t->query_pos = std::move(pos);
  t->scored = std::move(scored);
}

void MarkScoredQueries(Trace* t, int64_t m) {
  std::vector<int64_t> scored_rows;
  for (int64_t i = 0; i < t->m(); ++i) {
    if (t->is_scored(i)) scored_rows.push_back(i);
  }
  const int64_t have = static_cast<int64_t>(scored_rows.size());
  if (m <= 0 || have <= m) return;
  std::vector<uint8_t> scored(t->m(), 0);
  for (int64_t i = 0; i < m; ++i)
    scored[scored_rows[(i + 1) * have / m - 1]] = 1;
  t->scored = std::move(scored);
}

const std::vector<std::string>& SyntheticKinds() {
  static const auto* kinds = new std::vector<std::string>{
      "gaussian", "sinks", "window", "needles", "planted"};
  return *kinds;
}

absl::StatusOr<Trace> MakeSyntheticTrace(absl::string_view kind, int64_t n,
                                         int d, int64_t m, uint64_t seed,
                                         double c0, int64_t warm, bool dense) {
  KVSKETCH_RETURN_IF_ERROR(CheckInt(n, "n"));
  KVSKETCH_RETURN_IF_ERROR(CheckInt(d, "d"));
  KVSKETCH_RETURN_IF_ERROR(CheckInt(m, "queries"));
  if (n < 2) return absl::InvalidArgumentError("n must be at least 2");
  const auto& kinds = SyntheticKinds();
  if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown synthetic generator '", kind,
                     "'; valid: ", absl::StrJoin(kinds, ", ")));
  }
  if (dense && kind == "gaussian") {
    return absl::InvalidArgumentError(
        "the gaussian generator has no per-position queries (all sit at "
        "n-1): a dense trace needs a planted kind");
  }
  Trace t;
  t.name = std::string(kind);
  t.n = n;
  t.d = t.dv = d;
  SyntheticData s;
  if (kind == "gaussian") {
    s = GaussianLogits(n, d, d, m, GrowingSpread(n, c0), seed);
    t.query_pos.assign(m, n - 1);
    t.q = std::move(s.queries);
  } else {
    PlantedOptions o;
    if (kind == "sinks") {
      o.needles = 0;
      o.local_boost = 0;
    } else if (kind == "window") {
      o.sinks = 0;
      o.needles = 0;
      o.local_span = 8;
    } else if (kind == "needles") {
      o.sinks = 0;
      o.local_boost = 0;
    }
    s = PlantedStructure(n, d, d, o, seed);
    // m scored rows evenly over [n/2, n-1], `warm` unscored rows evenly over
    // [0, n-1]; one row per position, scored winning.
    std::vector<uint8_t> flag(n, 0);
    const int64_t lo = n / 2, span = n - 1 - lo;
    for (int64_t i = 0; i < m; ++i) {
      flag[m == 1 ? n - 1 : lo + span * (i + 1) / m] = 2;
    }
    for (int64_t i = 0; i < std::max<int64_t>(warm, 0); ++i) {
      const int64_t p = (i + 1) * n / (warm + 1) - 1;
      if (p >= 0 && flag[p] == 0) flag[p] = 1;
    }
    if (dense) {
      for (uint8_t& f : flag) f = f == 2 ? 2 : 1;
    }
    for (int64_t p = 0; p < n; ++p) {
      if (flag[p] == 0) continue;
      t.query_pos.push_back(p);
      t.scored.push_back(flag[p] == 2 ? 1 : 0);
    }
    t.q.reserve(t.query_pos.size() * d);
    for (int64_t p : t.query_pos) {
      t.q.insert(t.q.end(), s.queries.begin() + p * d,
                 s.queries.begin() + (p + 1) * d);
    }
    t.needles = s.planted;
  }
  t.scale = s.scale;
  t.k = std::move(s.keys);
  t.v = std::move(s.values);
  return t;
}

}  // namespace kvsketch::eval
