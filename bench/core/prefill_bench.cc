// File: bench/core/prefill_bench.cc
//
// Causal prefill of T tokens (one head, g = 1, d = dv = 128, scale 1/√d),
// every contender measured in this process, one thread each:
//   naive   the textbook O(T²·d) loop: per query row the scores, their max,
//           exp, sum and the weighted value sum (float, scalar exp). Run only
//           while its time, predicted from the last measured T as ∝ T², stays
//           under --naive_max_s; larger T print "skip" (nothing is
//           extrapolated into the table).
//   exact   CreateApproximator("exact") + Prefill: the blocked GEMM path of
//           core/exact/exact_prefill.h.
//   conv    CreateApproximator(--conv_spec) + Prefill on two inputs: a
//           RoPE-like positional head (q_t = R(t)·a, k_s = R(s)·a, so
//           q_t·k_s depends on t − s only: the Toeplitz structure Papers C.2
//           needs, plus 1% noise) and i.i.d. Gaussian data (no structure).
//           The cell shows seconds, the bases conv's fit used (or "<=" its
//           spec's k when it does not say), the error measured here on 64
//           sampled rows against a double reference row,
//           sqrt(Σ‖o − ô‖² / Σ‖o‖²), conv's own estimate ("self") and
//           "fallback" when conv answered exactly instead. An error from the
//           registry or from Prefill is printed in the notes.
//   sgemm   Eigen sgemm GFLOP/s at 1024×128 · 128×1024 (the roofline,
//           measured again before each T), and
//           the exact path's achieved GFLOP/s = T²·(d + dv) / time (the
//           useful causal flops, Papers C.8's "≈ 2·n²·d") as a fraction of it.
//   torch   --torch_cmd=LABEL=COMMAND (repeatable: one column each): for
//           each T, right after the contenders above, runs
//           `COMMAND --sizes T --out -` through /bin/sh, COMMAND being
//           bench/python/torch_attention.py with its environment
//           (scripts/bench-prefill.sh builds these commands).
//
//   bench_prefill [--sizes=4096,8192,...] [--quick] [--naive_max_s=S]
//                 [--conv_spec=SPEC] [--torch_cmd=LABEL=COMMAND]...
//   --quick: sizes 1024,2048,4096 (unless --sizes), naive budget 5 s
//   (default 120 s).
#include <time.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/approximator.h"
#include "core/conv/conv.h"
#include "core/registry.h"

namespace kvsketch {
namespace {

constexpr int kDim = 128;

double Now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

std::vector<float> Gaussian(int64_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist;
  std::vector<float> x(static_cast<size_t>(count));
  for (float& f : x) f = dist(rng);
  return x;
}

// Rotary embedding of `a` at position t: pairs (2i, 2i+1) rotated by t·θ_i,
// θ_i = 10000^(-2i/d) (RoFormer), plus `noise`-scaled Gaussian jitter.
std::vector<float> RopeRows(int64_t t_count, const std::vector<float>& a,
                            float noise, uint64_t seed) {
  std::vector<float> out = Gaussian(t_count * kDim, seed);
  for (int64_t t = 0; t < t_count; ++t) {
    float* row = out.data() + t * kDim;
    for (int i = 0; i < kDim / 2; ++i) {
      const double theta = std::pow(10000.0, -2.0 * i / kDim);
      const double c = std::cos(t * theta), s = std::sin(t * theta);
      const double x = a[2 * i], y = a[2 * i + 1];
      row[2 * i] = static_cast<float>(c * x - s * y) + noise * row[2 * i];
      row[2 * i + 1] =
          static_cast<float>(s * x + c * y) + noise * row[2 * i + 1];
    }
  }
  return out;
}

struct Data {
  std::vector<float> q, k, v;
};

Data RandomData(int64_t t) {
  return {Gaussian(t * kDim, 1), Gaussian(t * kDim, 2), Gaussian(t * kDim, 3)};
}

Data RopeData(int64_t t) {
  const std::vector<float> a = Gaussian(kDim, 4);
  Data data;
  data.q = RopeRows(t, a, 0.01f, 5);
  data.k = RopeRows(t, a, 0.01f, 6);
  data.v = Gaussian(t * kDim, 7);
  return data;
}

// The textbook loop (see the file comment). out is T×d.
void NaivePrefill(const Data& x, int64_t t_count, float scale, float* out) {
  std::vector<float> s(static_cast<size_t>(t_count));
  for (int64_t i = 0; i < t_count; ++i) {
    const float* q = x.q.data() + i * kDim;
    float mx = -INFINITY;
    for (int64_t j = 0; j <= i; ++j) {
      const float* k = x.k.data() + j * kDim;
      float dot = 0;
      for (int c = 0; c < kDim; ++c) dot += q[c] * k[c];
      s[j] = scale * dot;
      mx = std::max(mx, s[j]);
    }
    float sum = 0;
    for (int64_t j = 0; j <= i; ++j) {
      s[j] = std::exp(s[j] - mx);
      sum += s[j];
    }
    float* o = out + i * kDim;
    std::fill(o, o + kDim, 0.0f);
    for (int64_t j = 0; j <= i; ++j) {
      const float* v = x.v.data() + j * kDim;
      for (int c = 0; c < kDim; ++c) o[c] += s[j] * v[c];
    }
    for (int c = 0; c < kDim; ++c) o[c] /= sum;
  }
}

// Row i of the causal attention in double.
std::vector<double> ReferenceRow(const Data& x, int64_t i, double scale) {
  std::vector<double> s(static_cast<size_t>(i + 1));
  double mx = -INFINITY;
  for (int64_t j = 0; j <= i; ++j) {
    double dot = 0;
    for (int c = 0; c < kDim; ++c) {
      dot += double{x.q[i * kDim + c]} * x.k[j * kDim + c];
    }
    s[j] = scale * dot;
    mx = std::max(mx, s[j]);
  }
  std::vector<double> o(kDim, 0.0);
  double sum = 0;
  for (int64_t j = 0; j <= i; ++j) {
    const double w = std::exp(s[j] - mx);
    sum += w;
    for (int c = 0; c < kDim; ++c) o[c] += w * x.v[j * kDim + c];
  }
  for (double& c : o) c /= sum;
  return o;
}

// sqrt(Σ‖o − ô‖² / Σ‖o‖²) over 64 rows spread over [0, T) (the last row
// included).
double SampledRelError(const Data& x, int64_t t_count, float scale,
                       const std::vector<float>& out) {
  double num = 0, den = 0;
  const int kRows = 64;
  for (int r = 0; r < kRows; ++r) {
    const int64_t i = (t_count - 1) * (r + 1) / kRows;
    const std::vector<double> ref = ReferenceRow(x, i, scale);
    for (int c = 0; c < kDim; ++c) {
      const double e = out[i * kDim + c] - ref[c];
      num += e * e;
      den += ref[c] * ref[c];
    }
  }
  return std::sqrt(num / den);
}

// Eigen sgemm GFLOP/s at 1024×128 · 128×1024 (best of 3 runs of >= 0.2 s).
double SgemmGflops() {
  const int m = 1024, k = kDim, n = 1024;
  Eigen::MatrixXf a = Eigen::MatrixXf::Random(m, k);
  Eigen::MatrixXf b = Eigen::MatrixXf::Random(k, n);
  Eigen::MatrixXf c(m, n);
  double best = 0;
  for (int run = 0; run < 3; ++run) {
    int reps = 0;
    const double t0 = Now();
    double t1 = t0;
    while (t1 - t0 < 0.2) {
      c.noalias() = a * b;
      ++reps;
      t1 = Now();
    }
    best = std::max(best, 2.0 * m * n * k * reps / (t1 - t0) / 1e9);
  }
  // Keep the product observable so it is not optimised away.
  if (c(0, 0) == 12345.0f) std::printf(" ");
  return best;
}

struct PrefillResult {
  std::string error;  // empty on success
  double seconds = 0;
  std::vector<float> out;
  std::string spec;
  SelfMeasurements self;
  int bases = -1;  // conv: bases its fit used (-1: not reported)
};

PrefillResult RunPrefill(const std::string& spec, const Data& x,
                         int64_t t_count, float scale) {
  PrefillResult r;
  auto a = CreateApproximator(spec, HeadShape{kDim, kDim, scale});
  if (!a.ok()) {
    r.error = std::string(a.status().ToString());
    return r;
  }
  r.spec = (*a)->Spec();
  r.out.assign(static_cast<size_t>(t_count * kDim), 0.0f);
  const double t0 = Now();
  const absl::Status s =
      (*a)->Prefill({x.q.data(), t_count, kDim}, 1, {x.k.data(), t_count, kDim},
                    {x.v.data(), t_count, kDim}, {r.out.data(), t_count, kDim});
  r.seconds = Now() - t0;
  if (!s.ok()) r.error = std::string(s.ToString());
  r.self = (*a)->Measurements();
  if (const auto* conv = dynamic_cast<const ConvApproximator*>(a->get());
      conv != nullptr && !conv->last_prefill_stats().empty()) {
    r.bases = conv->last_prefill_stats()[0].bases;
  }
  return r;
}

// "k=<value>" from a canonical spec, or "?" when the spec has no k.
std::string SpecK(const std::string& spec) {
  for (absl::string_view part : absl::StrSplit(spec, absl::ByAnyChar(":,"))) {
    if (absl::StartsWith(part, "k=")) return std::string(part.substr(2));
  }
  return "?";
}

std::string ConvCell(const char* label, const PrefillResult& r, const Data& x,
                     int64_t t_count, float scale,
                     std::vector<std::string>& notes) {
  if (!r.error.empty()) {
    notes.push_back(
        absl::StrCat("conv (", label, ") at T=", t_count, ": ", r.error));
    return "error*";
  }
  const double err = SampledRelError(x, t_count, scale, r.out);
  const std::string k =
      r.bases >= 0 ? absl::StrCat(r.bases) : absl::StrCat("<=", SpecK(r.spec));
  std::string cell = absl::StrFormat("%.3f (k=%s, %.1e)", r.seconds, k, err);
  // conv's own sampled estimate, and whether it fell back to exact.
  if (r.self.fit_checks > 0) {
    absl::StrAppendFormat(&cell, " self %.1e",
                          r.self.fit_error_sum / r.self.fit_checks);
  }
  if (r.self.fit_fallbacks > 0) absl::StrAppend(&cell, " fallback");
  return cell;
}

// One markdown table row, cells right-aligned to `widths`.
void PrintRow(const std::vector<std::string>& cells,
              const std::vector<int>& widths) {
  std::string line = "|";
  for (size_t i = 0; i < cells.size(); ++i) {
    absl::StrAppendFormat(&line, " %*s |", widths[i], cells[i]);
  }
  std::printf("%s\n", line.c_str());
}

// One torch contender: a command that runs bench/python/torch_attention.py.
struct TorchRun {
  std::string label;
  std::string command;
  std::map<int64_t, std::pair<double, std::string>> rows;  // T -> (s, note)
  bool have_notes = false;
};

// Runs `command --sizes T --out -` through /bin/sh, so torch is timed right
// next to the C++ contenders of the same T (the machine may be shared and
// its load drift over a long run). Its "T seconds note" lines go to
// run.rows; its '#' lines go to notes, once per run.
void RunTorch(TorchRun& run, int64_t t, std::vector<std::string>& notes) {
  const std::string cmd = absl::StrCat(run.command, " --sizes ", t, " --out -");
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) {
    notes.push_back(absl::StrCat("torch ", run.label, ": cannot run ", cmd));
    return;
  }
  std::string text;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), pipe)) > 0;) {
    text.append(buf, n);
  }
  if (const int rc = pclose(pipe); rc != 0) {
    notes.push_back(absl::StrCat("torch ", run.label, " at T=", t,
                                 ": command failed (status ", rc, "): ", cmd));
    return;
  }
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (line[0] == '#') {
      if (!run.have_notes) {
        notes.push_back(absl::StrCat("torch ", run.label, ":", line.substr(1)));
      }
      continue;
    }
    std::istringstream fields{std::string(line)};
    int64_t row_t = 0;
    double seconds = 0;
    std::string note;
    if (fields >> row_t >> seconds) {
      std::getline(fields, note);
      run.rows[row_t] = {seconds,
                         std::string(absl::StripAsciiWhitespace(note))};
    }
  }
  run.have_notes = true;
}

int Main(int argc, char** argv) {
  std::vector<int64_t> sizes;
  bool quick = false;
  double naive_max_s = -1;
  std::string conv_spec = "conv";
  std::vector<TorchRun> torch;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&arg](absl::string_view flag) -> std::string {
      return arg.substr(flag.size() + 1);
    };
    if (arg == "--help" || arg == "-h") {
      std::printf(
          "bench_prefill [--sizes=T,T,...] [--quick] [--naive_max_s=S] "
          "[--conv_spec=SPEC] [--torch_cmd=LABEL=COMMAND]...\n");
      return 0;
    } else if (arg == "--quick") {
      quick = true;
    } else if (absl::StartsWith(arg, "--sizes=")) {
      for (absl::string_view s :
           absl::StrSplit(value("--sizes"), ',', absl::SkipEmpty())) {
        int64_t t = 0;
        if (!absl::SimpleAtoi(s, &t) || t < 1) {
          std::fprintf(stderr, "bad --sizes entry '%s'\n",
                       std::string(s).c_str());
          return 2;
        }
        sizes.push_back(t);
      }
    } else if (absl::StartsWith(arg, "--naive_max_s=")) {
      if (!absl::SimpleAtod(value("--naive_max_s"), &naive_max_s)) {
        std::fprintf(stderr, "bad --naive_max_s\n");
        return 2;
      }
    } else if (absl::StartsWith(arg, "--conv_spec=")) {
      conv_spec = value("--conv_spec");
    } else if (absl::StartsWith(arg, "--torch_cmd=")) {
      const std::string v = value("--torch_cmd");
      const size_t eq = v.find('=');
      if (eq == std::string::npos || eq == 0) {
        std::fprintf(stderr, "--torch_cmd wants LABEL=COMMAND\n");
        return 2;
      }
      torch.push_back({v.substr(0, eq), v.substr(eq + 1), {}, false});
    } else {
      std::fprintf(stderr, "unknown argument '%s' (see --help)\n", arg.c_str());
      return 2;
    }
  }
  if (sizes.empty()) {
    sizes = quick ? std::vector<int64_t>{1024, 2048, 4096}
                  : std::vector<int64_t>{4096, 8192, 16384, 32768, 65536};
  }
  if (naive_max_s < 0) naive_max_s = quick ? 5 : 120;
  std::sort(sizes.begin(), sizes.end());

  std::vector<std::string> notes;
  const float scale = 1.0f / std::sqrt(static_cast<float>(kDim));

  std::printf(
      "causal prefill, d = dv = %d, one head (g = 1), 1 thread each; seconds "
      "per prefill of T tokens\n\n",
      kDim);
  std::vector<std::string> header = {"T", "naive s", "exact s",
                                     "conv rope s (k, err)",
                                     "conv random s (k, err)"};
  for (const TorchRun& run : torch) {
    header.push_back(absl::StrCat("torch ", run.label, " s"));
  }
  for (const char* h :
       {"sgemm GF/s", "exact GF/s", "exact/sgemm", "naive/ex"}) {
    header.push_back(h);
  }
  for (const TorchRun& run : torch) {
    header.push_back(absl::StrCat("torch ", run.label, "/ex"));
  }
  std::vector<int> widths;
  for (const std::string& h : header) {
    widths.push_back(std::max<int>(h.size(), h.rfind("conv", 0) == 0 ? 44 : 8));
  }
  PrintRow(header, widths);
  std::string rule = "|";
  for (int w : widths) absl::StrAppend(&rule, std::string(w + 1, '-'), ":|");
  std::printf("%s\n", rule.c_str());

  double naive_per_t2 = 0;  // seconds / T² of the last naive run
  for (const int64_t t : sizes) {
    const Data rnd = RandomData(t);
    // The roofline is measured per T, next to the run it is compared with.
    const double sgemm = SgemmGflops();
    // exact: best of 3 below 16K tokens, one run above (seconds each).
    PrefillResult exact;
    for (int rep = 0; rep < (t < 16384 ? 3 : 1); ++rep) {
      PrefillResult r = RunPrefill("exact", rnd, t, scale);
      if (rep == 0 || r.seconds < exact.seconds) exact = std::move(r);
    }
    if (!exact.error.empty()) {
      std::fprintf(stderr, "exact prefill failed: %s\n", exact.error.c_str());
      return 1;
    }
    const double flops = static_cast<double>(t) * t * (2 * kDim);
    const double exact_gflops = flops / exact.seconds / 1e9;

    std::string naive_cell = "skip";
    double naive_s = 0;
    const double predicted = naive_per_t2 * t * t;
    if (naive_max_s > 0 && (naive_per_t2 == 0 || predicted <= naive_max_s)) {
      std::vector<float> out(static_cast<size_t>(t * kDim));
      const double t0 = Now();
      NaivePrefill(rnd, t, scale, out.data());
      naive_s = Now() - t0;
      naive_per_t2 = naive_s / (static_cast<double>(t) * t);
      naive_cell = absl::StrFormat("%.3f", naive_s);
      float diff = 0;
      for (size_t i = 0; i < out.size(); ++i) {
        diff = std::max(diff, std::abs(out[i] - exact.out[i]));
      }
      notes.push_back(absl::StrFormat(
          "T=%d: max |naive - exact| = %.1e (exact vs double on 64 rows: "
          "%.1e rel)",
          t, diff, SampledRelError(rnd, t, scale, exact.out)));
    } else {
      notes.push_back(absl::StrFormat(
          "T=%d: naive not run (predicted %.0f s > --naive_max_s=%.0f)", t,
          predicted, naive_max_s));
    }

    const std::string conv_random = ConvCell(
        "random", RunPrefill(conv_spec, rnd, t, scale), rnd, t, scale, notes);
    const Data rope = RopeData(t);
    const std::string conv_rope = ConvCell(
        "rope", RunPrefill(conv_spec, rope, t, scale), rope, t, scale, notes);

    std::vector<std::string> row = {absl::StrCat(t), naive_cell,
                                    absl::StrFormat("%.3f", exact.seconds),
                                    conv_rope, conv_random};
    std::vector<std::string> torch_ratios;
    for (TorchRun& run : torch) {
      RunTorch(run, t, notes);
      auto it = run.rows.find(t);
      if (it == run.rows.end()) {
        row.push_back("-");
        torch_ratios.push_back("-");
        continue;
      }
      const auto& [seconds, note] = it->second;
      row.push_back(
          absl::StrFormat("%.3f%s", seconds, note.empty() ? "" : "*"));
      torch_ratios.push_back(absl::StrFormat("%.2f", seconds / exact.seconds));
      if (!note.empty()) {
        notes.push_back(
            absl::StrCat("torch ", run.label, " at T=", t, " (*): ", note));
      }
    }
    row.push_back(absl::StrFormat("%.1f", sgemm));
    row.push_back(absl::StrFormat("%.1f", exact_gflops));
    row.push_back(absl::StrFormat("%.2f", exact_gflops / sgemm));
    row.push_back(naive_s > 0 ? absl::StrFormat("%.1f", naive_s / exact.seconds)
                              : "-");
    for (std::string& r : torch_ratios) row.push_back(std::move(r));
    PrintRow(row, widths);
    std::fflush(stdout);
  }
  std::printf(
      "\nsgemm, exact: GFLOP/s (exact counts the useful causal flops "
      "T²·(d+dv)); naive/ex, torch/ex: time ratios "
      "(> 1: exact is faster)\n");
  for (const std::string& n : notes) std::printf("  %s\n", n.c_str());
  return 0;
}

}  // namespace
}  // namespace kvsketch

int main(int argc, char** argv) { return kvsketch::Main(argc, argv); }
