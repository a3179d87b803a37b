#include "core/eval/harness.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>

#include "absl/strings/str_cat.h"
#include "core/registry.h"
#include "core/status_macros.h"

namespace kvsketch::eval {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Running sums of one spec's metrics.
struct Accum {
  int64_t rows = 0;
  double rel_sum = 0, rel_max = 0, cos_sum = 0, cos_min = 1;
  int64_t needle_rows = 0, needle_hits = 0;
  double append_s = 0, query_s = 0;
  int64_t tokens = 0, state = 0;
};

}  // namespace

double RelativeL2(const float* out, const double* ref, int size) {
  double diff = 0, norm = 0;
  for (int i = 0; i < size; ++i) {
    const double e = out[i] - ref[i];
    diff += e * e;
    norm += ref[i] * ref[i];
  }
  if (norm == 0) return diff == 0 ? 0 : std::numeric_limits<double>::infinity();
  return std::sqrt(diff / norm);
}

double Cosine(const float* out, const double* ref, int size) {
  double dot = 0, a = 0, b = 0;
  for (int i = 0; i < size; ++i) {
    dot += out[i] * ref[i];
    a += static_cast<double>(out[i]) * out[i];
    b += ref[i] * ref[i];
  }
  if (a == 0 || b == 0) return a == b ? 1 : 0;
  return dot / std::sqrt(a * b);
}

void ReferenceAttention(const float* q, const float* keys, const float* values,
                        int64_t count, int d, int dv, double scale,
                        absl::Span<const int64_t> rows, double* out) {
  const int64_t r = rows.empty() ? count : static_cast<int64_t>(rows.size());
  std::vector<double> s(r);
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < r; ++i) {
    const float* k = keys + (rows.empty() ? i : rows[i]) * d;
    double dot = 0;
    for (int c = 0; c < d; ++c) dot += static_cast<double>(q[c]) * k[c];
    s[i] = scale * dot;
    mx = std::max(mx, s[i]);
  }
  std::fill(out, out + dv, 0.0);
  double z = 0;
  for (int64_t i = 0; i < r; ++i) {
    const double w = std::exp(s[i] - mx);
    z += w;
    const float* v = values + (rows.empty() ? i : rows[i]) * dv;
    for (int c = 0; c < dv; ++c) out[c] += w * v[c];
  }
  for (int c = 0; c < dv; ++c) out[c] /= z;
}

absl::StatusOr<std::vector<EvalRow>> RunEval(
    const Trace& t, absl::Span<const std::string> specs,
    const ProgressFn& progress) {
  const HeadShape shape{t.d, t.dv, t.scale};
  std::vector<std::string> canonical;
  for (const std::string& spec : specs) {
    KVSKETCH_ASSIGN_OR_RETURN(std::string c, CanonicalizeSpec(spec));
    KVSKETCH_RETURN_IF_ERROR(CreateApproximator(c, shape).status());
    canonical.push_back(std::move(c));
  }
  const int group = t.q_heads / t.kv_heads;
  const int64_t last_needle =
      t.needles.empty() ? -1
                        : *std::max_element(t.needles.begin(), t.needles.end());
  std::vector<EvalRow> rows;
  std::vector<float> qbuf(static_cast<size_t>(group) * t.d);
  std::vector<float> obuf(static_cast<size_t>(group) * t.dv);
  std::vector<double> ref(t.dv), nref(t.dv);
  for (size_t si = 0; si < canonical.size(); ++si) {
    const std::string& spec = canonical[si];
    Accum acc;
    for (int l = 0; l < t.layers; ++l) {
      for (int kh = 0; kh < t.kv_heads; ++kh) {
        KVSKETCH_ASSIGN_OR_RETURN(std::unique_ptr<Approximator> a,
                                  CreateApproximator(spec, shape));
        int64_t appended = 0;
        const auto append_to = [&](int64_t end) -> absl::Status {
          if (end <= appended) return absl::OkStatus();
          const auto t0 = Clock::now();
          absl::Status s =
              a->Append({t.k_row(l, kh, appended), end - appended, t.d},
                        {t.v_row(l, kh, appended), end - appended, t.dv});
          acc.append_s += Seconds(t0, Clock::now());
          acc.tokens += end - appended;
          appended = end;
          if (!s.ok()) {
            return absl::Status(s.code(),
                                absl::StrCat(spec, ": Append: ", s.message()));
          }
          return absl::OkStatus();
        };
        for (int64_t i = 0; i < t.m(); ++i) {
          const int64_t pos = t.query_pos[i];
          KVSKETCH_RETURN_IF_ERROR(append_to(pos + 1));
          for (int g = 0; g < group; ++g) {
            std::copy_n(t.q_row(l, kh * group + g, i), t.d,
                        qbuf.data() + static_cast<size_t>(g) * t.d);
          }
          const auto t0 = Clock::now();
          absl::Status s =
              a->Attend({qbuf.data(), group, t.d}, {obuf.data(), group, t.dv});
          const double dt = Seconds(t0, Clock::now());
          if (!s.ok()) {
            return absl::Status(s.code(),
                                absl::StrCat(spec, ": Attend: ", s.message()));
          }
          if (!t.is_scored(i)) continue;  // a warm row only feeds `a`
          acc.query_s += dt;
          for (int g = 0; g < group; ++g) {
            const float* q = qbuf.data() + static_cast<size_t>(g) * t.d;
            const float* o = obuf.data() + static_cast<size_t>(g) * t.dv;
            ReferenceAttention(q, t.k_row(l, kh, 0), t.v_row(l, kh, 0), pos + 1,
                               t.d, t.dv, t.scale, {}, ref.data());
            const double rel = RelativeL2(o, ref.data(), t.dv);
            const double cos = Cosine(o, ref.data(), t.dv);
            ++acc.rows;
            acc.rel_sum += rel;
            acc.rel_max = std::max(acc.rel_max, rel);
            acc.cos_sum += cos;
            acc.cos_min = std::min(acc.cos_min, cos);
            if (last_needle >= 0 && pos >= last_needle) {
              ReferenceAttention(q, t.k_row(l, kh, 0), t.v_row(l, kh, 0),
                                 pos + 1, t.d, t.dv, t.scale, t.needles,
                                 nref.data());
              ++acc.needle_rows;
              if (Cosine(o, nref.data(), t.dv) >= kNeedleCosine) {
                ++acc.needle_hits;
              }
            }
          }
        }
        KVSKETCH_RETURN_IF_ERROR(append_to(t.n));
        acc.state += a->MemoryBytes();
        if (progress) {
          progress(absl::StrCat(spec, " n=", t.n, " layer ", l, " head ", kh));
        }
      }
    }
    EvalRow r;
    r.label = std::string(specs[si]);
    r.spec = spec;
    r.trace = t.name;
    r.n = t.n;
    r.query_rows = acc.rows;
    if (acc.rows > 0) {
      r.rel_l2_mean = acc.rel_sum / acc.rows;
      r.cosine_mean = acc.cos_sum / acc.rows;
      r.query_us_per_row = 1e6 * acc.query_s / acc.rows;
    }
    r.rel_l2_max = acc.rel_max;
    r.cosine_min = acc.rows > 0 ? acc.cos_min : 0;
    if (acc.needle_rows > 0) {
      r.needle_rate = static_cast<double>(acc.needle_hits) / acc.needle_rows;
    }
    r.state_bytes = acc.state;
    r.bytes_per_token = static_cast<double>(acc.state) / t.n;
    r.append_us_per_token =
        acc.tokens > 0 ? 1e6 * acc.append_s / acc.tokens : 0;
    rows.push_back(std::move(r));
  }
  return rows;
}

}  // namespace kvsketch::eval
