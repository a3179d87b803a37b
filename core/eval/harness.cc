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
  double append_s = 0, query_s = 0, prefill_s = 0;
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

const char* EvalPathName(EvalPath path) {
  return path == EvalPath::kPrefill ? "prefill" : "stream";
}

bool IsDenseTrace(const Trace& t) {
  if (t.m() != t.n) return false;
  for (int64_t i = 0; i < t.m(); ++i) {
    if (t.query_pos[i] != i) return false;
  }
  return true;
}

namespace {

// Runs one (layer, KV head) of the trace through approximator `a` and scores
// the outputs into `acc`.
class HeadRunner {
 public:
  HeadRunner(const Trace& t, int layer, int kv_head, const std::string& spec,
             Approximator* a, Accum* acc)
      : t_(t),
        l_(layer),
        kh_(kv_head),
        group_(t.q_heads / t.kv_heads),
        spec_(spec),
        a_(a),
        acc_(acc),
        ref_(t.dv),
        nref_(t.dv) {
    last_needle_ = t.needles.empty()
                       ? -1
                       : *std::max_element(t.needles.begin(), t.needles.end());
  }

  // Decode path: Append up to each query position, Attend the query rows.
  absl::Status Stream() {
    std::vector<float> q(static_cast<size_t>(group_) * t_.d);
    std::vector<float> o(static_cast<size_t>(group_) * t_.dv);
    for (int64_t i = 0; i < t_.m(); ++i) {
      const int64_t pos = t_.query_pos[i];
      KVSKETCH_RETURN_IF_ERROR(AppendTo(pos + 1));
      for (int g = 0; g < group_; ++g) {
        std::copy_n(t_.q_row(l_, kh_ * group_ + g, i), t_.d,
                    q.data() + static_cast<size_t>(g) * t_.d);
      }
      const auto t0 = Clock::now();
      absl::Status s =
          a_->Attend({q.data(), group_, t_.d}, {o.data(), group_, t_.dv});
      const double dt = Seconds(t0, Clock::now());
      if (!s.ok()) return Named("Attend", s);
      if (!t_.is_scored(i)) continue;  // a warm row only feeds `a`
      acc_->query_s += dt;
      for (int g = 0; g < group_; ++g) {
        Score(q.data() + static_cast<size_t>(g) * t_.d,
              o.data() + static_cast<size_t>(g) * t_.dv, pos);
      }
    }
    return AppendTo(t_.n);
  }

  // Bulk path: Prefill chunks of `chunk` tokens with all their query rows.
  // REQUIRES: IsDenseTrace(t).
  absl::Status Prefill(int64_t chunk) {
    if (chunk <= 0) chunk = t_.n;
    std::vector<float> q, o;
    for (int64_t start = 0; start < t_.n; start += chunk) {
      const int64_t len = std::min(chunk, t_.n - start);
      // Layout [g][T]: the group's query heads, each with len rows.
      q.resize(static_cast<size_t>(group_ * len) * t_.d);
      o.assign(static_cast<size_t>(group_ * len) * t_.dv, 0.f);
      for (int g = 0; g < group_; ++g) {
        std::copy_n(t_.q_row(l_, kh_ * group_ + g, start), len * t_.d,
                    q.data() + static_cast<size_t>(g * len) * t_.d);
      }
      const auto t0 = Clock::now();
      absl::Status s = a_->Prefill({q.data(), group_ * len, t_.d}, group_,
                                   {t_.k_row(l_, kh_, start), len, t_.d},
                                   {t_.v_row(l_, kh_, start), len, t_.dv},
                                   {o.data(), group_ * len, t_.dv});
      acc_->prefill_s += Seconds(t0, Clock::now());
      acc_->tokens += len;
      if (!s.ok()) return Named("Prefill", s);
      for (int64_t r = 0; r < len; ++r) {
        if (!t_.is_scored(start + r)) continue;
        for (int g = 0; g < group_; ++g) {
          const size_t row = static_cast<size_t>(g * len + r);
          Score(q.data() + row * t_.d, o.data() + row * t_.dv, start + r);
        }
      }
    }
    return absl::OkStatus();
  }

 private:
  absl::Status AppendTo(int64_t end) {
    if (end <= appended_) return absl::OkStatus();
    const auto t0 = Clock::now();
    absl::Status s =
        a_->Append({t_.k_row(l_, kh_, appended_), end - appended_, t_.d},
                   {t_.v_row(l_, kh_, appended_), end - appended_, t_.dv});
    acc_->append_s += Seconds(t0, Clock::now());
    acc_->tokens += end - appended_;
    appended_ = end;
    return s.ok() ? s : Named("Append", s);
  }

  absl::Status Named(const char* op, const absl::Status& s) const {
    return absl::Status(s.code(),
                        absl::StrCat(spec_, ": ", op, ": ", s.message()));
  }

  // Scores one output row o of query q at position pos against the double
  // reference over keys 0..pos: O(pos·(d + dv)).
  void Score(const float* q, const float* o, int64_t pos) {
    ReferenceAttention(q, t_.k_row(l_, kh_, 0), t_.v_row(l_, kh_, 0), pos + 1,
                       t_.d, t_.dv, t_.scale, {}, ref_.data());
    const double rel = RelativeL2(o, ref_.data(), t_.dv);
    const double cos = Cosine(o, ref_.data(), t_.dv);
    ++acc_->rows;
    acc_->rel_sum += rel;
    acc_->rel_max = std::max(acc_->rel_max, rel);
    acc_->cos_sum += cos;
    acc_->cos_min = std::min(acc_->cos_min, cos);
    if (last_needle_ >= 0 && pos >= last_needle_) {
      ReferenceAttention(q, t_.k_row(l_, kh_, 0), t_.v_row(l_, kh_, 0), pos + 1,
                         t_.d, t_.dv, t_.scale, t_.needles, nref_.data());
      ++acc_->needle_rows;
      if (Cosine(o, nref_.data(), t_.dv) >= kNeedleCosine) ++acc_->needle_hits;
    }
  }

  const Trace& t_;
  const int l_, kh_, group_;
  const std::string& spec_;
  Approximator* const a_;
  Accum* const acc_;
  int64_t appended_ = 0;
  int64_t last_needle_ = -1;
  std::vector<double> ref_, nref_;
};

}  // namespace

absl::StatusOr<std::vector<EvalRow>> RunEval(
    const Trace& t, absl::Span<const std::string> specs,
    const EvalOptions& options, const ProgressFn& progress) {
  std::vector<EvalSpec> plain;
  for (const std::string& s : specs) plain.push_back({s, s, nullptr});
  return RunEval(t, plain, options, progress);
}

absl::StatusOr<std::vector<EvalRow>> RunEval(const Trace& t,
                                             absl::Span<const EvalSpec> specs,
                                             const EvalOptions& options,
                                             const ProgressFn& progress) {
  const HeadShape shape{t.d, t.dv, t.scale};
  std::vector<std::string> canonical;
  for (const EvalSpec& es : specs) {
    KVSKETCH_ASSIGN_OR_RETURN(std::string c, CanonicalizeSpec(es.spec));
    KVSKETCH_RETURN_IF_ERROR(CreateApproximator(c, shape).status());
    canonical.push_back(std::move(c));
  }
  const bool prefill = options.path == EvalPath::kPrefill;
  if (prefill && !IsDenseTrace(t)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the prefill path needs a dense trace (a query at every position); ",
        t.name, " has ", t.m(), " query rows for ", t.n, " tokens"));
  }
  if (options.chunk < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk (", options.chunk, ") must be >= 0"));
  }
  std::vector<EvalRow> rows;
  for (size_t si = 0; si < canonical.size(); ++si) {
    std::string spec = canonical[si];
    Accum acc;
    SelfMeasurements self;
    for (int l = 0; l < t.layers; ++l) {
      for (int kh = 0; kh < t.kv_heads; ++kh) {
        KVSKETCH_ASSIGN_OR_RETURN(std::unique_ptr<Approximator> a,
                                  CreateApproximator(canonical[si], shape));
        if (specs[si].wrap) {
          absl::StatusOr<std::unique_ptr<Approximator>> w =
              specs[si].wrap(std::move(a), l, kh);
          if (!w.ok()) {
            return absl::Status(
                w.status().code(),
                absl::StrCat(specs[si].label, ": layer ", l, " KV head ", kh,
                             ": ", w.status().message()));
          }
          a = std::move(*w);
          spec = a->Spec();
        }
        HeadRunner runner(t, l, kh, spec, a.get(), &acc);
        KVSKETCH_RETURN_IF_ERROR(prefill ? runner.Prefill(options.chunk)
                                         : runner.Stream());
        acc.state += a->MemoryBytes();
        self += a->Measurements();
        if (progress) {
          progress(absl::StrCat(spec, " n=", t.n, " layer ", l, " head ", kh));
        }
      }
    }
    EvalRow r;
    r.label = specs[si].label;
    r.spec = spec;
    r.trace = t.name;
    r.path = EvalPathName(options.path);
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
    if (acc.tokens > 0) {
      r.append_us_per_token = 1e6 * acc.append_s / acc.tokens;
      r.prefill_us_per_token = 1e6 * acc.prefill_s / acc.tokens;
    }
    if (self.recall_checks > 0) {
      r.self_recall_mean = self.recall_sum / self.recall_checks;
    }
    if (self.fit_checks > 0) {
      r.self_fit_error_mean = self.fit_error_sum / self.fit_checks;
    }
    r.self_fit_fallbacks = self.fit_fallbacks;
    rows.push_back(std::move(r));
  }
  return rows;
}

}  // namespace kvsketch::eval
