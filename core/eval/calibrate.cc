#include "core/eval/calibrate.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvsketch::eval {

int64_t SmallestKForMass(const float* q, const float* keys, int64_t count,
                         int d, double scale, double tau) {
  std::vector<double> s(count);
  double mx = -1e300;
  for (int64_t j = 0; j < count; ++j) {
    const float* k = keys + j * d;
    double dot = 0;
    for (int c = 0; c < d; ++c) dot += static_cast<double>(q[c]) * k[c];
    s[j] = scale * dot;
    mx = std::max(mx, s[j]);
  }
  double z = 0;
  for (double& x : s) {
    x = std::exp(x - mx);
    z += x;
  }
  std::sort(s.begin(), s.end(), std::greater<double>());
  const double target = (1 - tau) * z;
  double acc = 0;
  for (int64_t j = 0; j < count; ++j) {
    acc += s[j];
    // A tiny relative slack so rounding never asks for one key too many.
    if (acc >= target * (1 - 1e-12)) return j + 1;
  }
  return count;
}

absl::StatusOr<std::vector<KTauSample>> MeasureKTau(
    const Trace& t, double tau, absl::Span<const int64_t> prefixes,
    int rows_per_prefix) {
  if (!(tau >= 0 && tau < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tau = ", tau, " must be in [0, 1)"));
  }
  if (rows_per_prefix < 1) {
    return absl::InvalidArgumentError("rows per prefix must be at least 1");
  }
  std::vector<KTauSample> out;
  const int group = t.q_heads / t.kv_heads;
  for (int64_t p : prefixes) {
    if (p < 2 || p > t.n) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prefix ", p, " is outside [2, ", t.n, "] (the trace length)"));
    }
    // Query rows with position in (p/2 - 1, p - 1], latest first.
    std::vector<int64_t> idx;
    for (int64_t i = t.m() - 1; i >= 0 && idx.size() < size_t(rows_per_prefix);
         --i) {
      const int64_t pos = t.query_pos[i];
      if (pos > p - 1) continue;
      if (pos + 1 <= p / 2) break;
      idx.push_back(i);
    }
    if (idx.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("prefix ", p,
                       ": the trace has no query row at a "
                       "position in (",
                       p / 2, ", ", p, "]"));
    }
    for (int l = 0; l < t.layers; ++l) {
      for (int h = 0; h < t.q_heads; ++h) {
        const int kh = h / group;
        double log_sum = 0, n_sum = 0;
        for (int64_t i : idx) {
          const int64_t count = t.query_pos[i] + 1;
          const int64_t k = SmallestKForMass(
              t.q_row(l, h, i), t.k_row(l, kh, 0), count, t.d, t.scale, tau);
          log_sum += std::log(static_cast<double>(k));
          n_sum += std::log(static_cast<double>(count));
        }
        KTauSample s;
        s.layer = l;
        s.head = h;
        s.rows = static_cast<int>(idx.size());
        s.n = static_cast<int64_t>(std::llround(std::exp(n_sum / s.rows)));
        s.k_tau = std::exp(log_sum / s.rows);
        out.push_back(s);
      }
    }
  }
  return out;
}

absl::StatusOr<std::vector<CalibrationFit>> FitCalibration(
    absl::Span<const KTauSample> samples) {
  std::map<std::pair<int, int>, std::vector<const KTauSample*>> by_head;
  for (const KTauSample& s : samples) by_head[{s.layer, s.head}].push_back(&s);
  std::vector<CalibrationFit> fits;
  for (const auto& [key, pts] : by_head) {
    const double m = static_cast<double>(pts.size());
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (const KTauSample* s : pts) {
      const double x = std::log(static_cast<double>(s->n));
      const double y = std::log(s->k_tau);
      sx += x;
      sy += y;
      sxx += x * x;
      sxy += x * y;
    }
    const double var = sxx - sx * sx / m;
    if (pts.size() < 2 || var <= 1e-12) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", key.first, " head ", key.second,
                       ": need at least two distinct prefix lengths to fit C"));
    }
    CalibrationFit f;
    f.layer = key.first;
    f.head = key.second;
    f.points = static_cast<int>(pts.size());
    f.c = (sxy - sx * sy / m) / var;
    const double log_alpha = (sy - f.c * sx) / m;
    f.alpha = std::exp(log_alpha);
    double ss_res = 0, ss_tot = 0;
    const double mean_y = sy / m;
    for (const KTauSample* s : pts) {
      const double x = std::log(static_cast<double>(s->n));
      const double y = std::log(s->k_tau);
      ss_res += (y - log_alpha - f.c * x) * (y - log_alpha - f.c * x);
      ss_tot += (y - mean_y) * (y - mean_y);
    }
    f.r2 = ss_tot > 0 ? 1 - ss_res / ss_tot : 1;
    const double c = std::clamp(f.c, 0.01, 0.99);
    // Round α up to 3 significant digits so the budget never shrinks.
    const double e = std::pow(10.0, std::floor(std::log10(f.alpha)) - 2);
    const double alpha = std::ceil(f.alpha / e - 1e-9) * e;
    f.topk_spec = absl::StrFormat("topk:alpha=%g,c=%.3g", alpha, c);
    f.evict_spec = absl::StrFormat("evict:alpha=%g,c=%.3g", alpha, c);
    fits.push_back(std::move(f));
  }
  return fits;
}

}  // namespace kvsketch::eval
