// File: bench/core/sublinear_claims.cc
//
// The issue-#3 "must show" experiments for `sketch`, `topk` and `evict` at
// sizes too large for the test suite (the tests check the same properties
// up to 64K). Prints one table per claim; every number is computed here.
//
//   build/sublinear/bench/core/bench_sublinear_claims            (~1-2 min)
//   build/sublinear/bench/core/bench_sublinear_claims --quick    (n ≤ 64K)
//
// Claims (papers/A_B.md §A.8, §B.7, §3):
//   1. sketch: MemoryBytes identical at n = 1K and n = 1M (d = 128).
//   2. sketch: RMS error on the bounded-logit generator vs the plain mean of V.
//   3. sketch: window ≥ n matches exact.
//   4. topk: mean dropped mass τ at k = n^0.75 (C above the planted C0 = 0.3)
//      falls from 1K to 256K; at fixed k = 8 it rises.
//   5. evict: state bytes ~ n^C (fitted exponent), and its error on the
//      planted-structure generator against topk at the same budget.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/evict/evict.h"
#include "core/registry.h"
#include "core/sketch/sketch.h"
#include "core/synthetic/synthetic.h"
#include "core/topk/topk.h"
#include "tests/core/testing/reference_attention.h"

namespace kvsketch {
namespace {

using ::kvsketch::testing::ReferenceAttention;

std::unique_ptr<Approximator> Make(const std::string& spec,
                                   const HeadShape& shape) {
  auto a = CreateApproximator(spec, shape);
  if (!a.ok()) {
    std::fprintf(stderr, "%s: %s\n", spec.c_str(),
                 std::string(a.status().message()).c_str());
    std::exit(1);
  }
  return *std::move(a);
}

void Check(const absl::Status& s) {
  if (!s.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
    std::exit(1);
  }
}

double Rms(const std::vector<float>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (a[i] - b[i]) * (a[i] - b[i]);
  return std::sqrt(s / a.size());
}

std::vector<float> Query(const Approximator& a, const std::vector<float>& q,
                         int64_t m) {
  std::vector<float> out(m * a.shape().value_dim);
  Check(a.Query({q.data(), m, a.shape().head_dim},
                {out.data(), m, a.shape().value_dim}));
  return out;
}

void SketchMemory() {
  std::printf("\n[1] sketch state bytes vs n (d = dv = 128, spec 'sketch')\n");
  auto a = Make("sketch", {128, 128, 1 / std::sqrt(128.f)});
  const auto chunk = GaussianLogits(4096, 128, 128, 1, 1.0, 1);
  int64_t at_1k = 0;
  for (int64_t n = 0; n < (1 << 20);) {
    const int64_t t = n < 1024 ? 1024 : std::min<int64_t>(4096, (1 << 20) - n);
    Check(
        a->Append({chunk.keys.data(), t, 128}, {chunk.values.data(), t, 128}));
    n += t;
    if (n == 1024) at_1k = a->MemoryBytes();
  }
  std::printf("  n=1024: %lld bytes   n=%lld: %lld bytes   identical: %s\n",
              static_cast<long long>(at_1k),
              static_cast<long long>(a->num_tokens()),
              static_cast<long long>(a->MemoryBytes()),
              at_1k == a->MemoryBytes() ? "yes" : "NO");
}

void SketchBoundedError(bool quick) {
  const int64_t n = quick ? 16384 : 65536, m = 32;
  std::printf(
      "\n[2] sketch RMS error, bounded-logit generator (logit std 0.5),"
      " n = %lld, %lld queries\n",
      static_cast<long long>(n), static_cast<long long>(m));
  std::printf("  %-3s %-50s %10s %10s %8s\n", "d", "spec", "rms err", "mean(V)",
              "ratio");
  for (int d : {8, 16}) {
    const auto s = BoundedLogits(n, d, 16, m, 0.5, 7);
    const auto ref =
        ReferenceAttention(s.queries, m, s.keys, s.values, n, d, 16, s.scale);
    std::vector<float> mean(m * 16);
    for (int c = 0; c < 16; ++c) {
      double acc = 0;
      for (int64_t j = 0; j < n; ++j) acc += s.values[j * 16 + c];
      for (int64_t i = 0; i < m; ++i) mean[i * 16 + c] = acc / n;
    }
    const double mean_err = Rms(mean, ref);
    std::vector<std::string> specs = {
        "sketch:map=prf,features=256", "sketch:map=prf,features=1024",
        "sketch:map=taylor,degree=2", "sketch:map=taylor,degree=3"};
    if (d == 8) specs.push_back("sketch:map=taylor,degree=4");
    for (const std::string& spec : specs) {
      auto a = Make(spec, {d, 16, s.scale});
      Check(a->Append({s.keys.data(), n, d}, {s.values.data(), n, 16}));
      const double err = Rms(Query(*a, s.queries, m), ref);
      std::printf("  %-3d %-50s %10.3g %10.3g %7.1fx\n", d, spec.c_str(), err,
                  mean_err, mean_err / err);
    }
  }
}

void SketchWindowExact() {
  std::printf("\n[3] sketch with window >= n vs the double reference\n");
  const int64_t n = 4096;
  const auto s = GaussianLogits(n, 128, 128, 8, 3.0, 3);
  auto a = Make("sketch:sinks=4,window=4096", {128, 128, s.scale});
  Check(a->Append({s.keys.data(), n, 128}, {s.values.data(), n, 128}));
  const auto out = Query(*a, s.queries, 8);
  const auto ref =
      ReferenceAttention(s.queries, 8, s.keys, s.values, n, 128, 128, s.scale);
  double worst = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    worst = std::max(worst, std::fabs(out[i] - ref[i]));
  }
  std::printf("  n=%lld d=128 logit std 3: max |sketch - reference| = %.3g\n",
              static_cast<long long>(n), worst);
}

double MeanTau(const std::string& spec, const SyntheticData& s) {
  auto base = Make(spec, {s.d, s.dv, s.scale});
  auto* a = dynamic_cast<TopkApproximator*>(base.get());
  Check(a->Append({s.keys.data(), s.n, s.d}, {s.values.data(), s.n, s.dv}));
  std::vector<float> out(s.m * s.dv);
  std::vector<TopkQueryStats> st;
  Check(a->QueryWithStats({s.queries.data(), s.m, s.d}, {out.data(), s.m, s.dv},
                          &st));
  double t = 0;
  for (const auto& x : st) t += x.tau / s.m;
  return t;
}

void TopkTau(bool quick) {
  std::printf(
      "\n[4] topk mean dropped mass tau, growing-spread Gaussian logits,"
      " planted C0 = 0.3 (d = 64, 16 queries x 3 seeds)\n");
  std::printf("  %8s %12s %12s %12s %12s\n", "n", "k=n^0.75", "k=sqrt n",
              "k=64", "k=8");
  const int64_t max_n = quick ? 65536 : 262144;
  for (int64_t n = 1024; n <= max_n; n *= 4) {
    double t75 = 0, t50 = 0, t64 = 0, t8 = 0;
    for (uint64_t seed = 0; seed < 3; ++seed) {
      const auto s = GaussianLogits(n, 64, 8, 16, GrowingSpread(n, 0.3), seed);
      t75 += MeanTau("topk:alpha=1,c=0.75,k_min=1,sinks=0,window=0", s) / 3;
      t50 += MeanTau("topk:alpha=1,c=0.5,k_min=1,sinks=0,window=0", s) / 3;
      t64 += MeanTau("topk:k=64,sinks=0,window=0", s) / 3;
      t8 += MeanTau("topk:k=8,sinks=0,window=0", s) / 3;
    }
    std::printf("  %8lld %12.4f %12.4f %12.4f %12.4f\n",
                static_cast<long long>(n), t75, t50, t64, t8);
  }
}

void EvictMemory(bool quick) {
  std::printf(
      "\n[5a] evict state bytes vs n (append-only, d = dv = 64,"
      " alpha = 4, sinks = 0, window = 0: the budget is all n^c)\n");
  for (double c : {0.3, 0.5, 0.7}) {
    auto a = Make("evict:alpha=4,sinks=0,window=0,c=" + std::to_string(c),
                  {64, 64, 0.125f});
    const auto chunk = GaussianLogits(4096, 64, 64, 1, 1.0, 2);
    std::vector<double> xs, ys;
    std::printf("  c=%.1f:", c);
    const int64_t max_n = quick ? (1 << 16) : (1 << 20);
    for (int64_t n = 4096; n <= max_n; n += 4096) {
      Check(a->Append({chunk.keys.data(), 4096, 64},
                      {chunk.values.data(), 4096, 64}));
      if ((n & (n - 1)) == 0) {
        xs.push_back(std::log(double(n)));
        ys.push_back(std::log(double(a->MemoryBytes())));
        std::printf(" %lldK:%lldB", static_cast<long long>(n / 1024),
                    static_cast<long long>(a->MemoryBytes()));
      }
    }
    double mx = 0, my = 0, sxy = 0, sxx = 0;
    for (size_t i = 0; i < xs.size(); ++i) {
      mx += xs[i] / xs.size();
      my += ys[i] / ys.size();
    }
    for (size_t i = 0; i < xs.size(); ++i) {
      sxy += (xs[i] - mx) * (ys[i] - my);
      sxx += (xs[i] - mx) * (xs[i] - mx);
    }
    std::printf("\n        fitted exponent of bytes vs n: %.3f\n", sxy / sxx);
  }
}

void EvictVsTopk(bool quick) {
  std::printf(
      "\n[5b] planted structure (sinks, local window, 8 needles at"
      " 1.2 ln n over noise std 2), d = 64: RMS error of the last 16"
      " queries at equal budget\n");
  std::printf("  %7s %7s %12s %12s %14s\n", "n", "budget", "evict(H2O)", "topk",
              "evict(no attn)");
  const int64_t max_n = quick ? 16384 : 65536;
  for (int64_t n = 4096; n <= max_n; n *= 4) {
    const int d = 64, dv = 16;
    const auto s = PlantedStructure(n, d, dv, PlantedOptions{}, 11);
    const int64_t m = 16;
    const std::vector<float> q(s.queries.end() - m * d, s.queries.end());
    const auto ref =
        ReferenceAttention(q, m, s.keys, s.values, n, d, dv, s.scale);
    EvictOptions eo;
    const int64_t heavy = EvictBudget(eo, n) - eo.sinks - eo.window;
    auto ev = Make("evict", {d, dv, s.scale});
    auto blind = Make("evict", {d, dv, s.scale});
    std::vector<float> out(dv);
    for (int64_t t = 0; t < n; ++t) {
      Check(ev->Append({s.keys.data() + t * d, 1, d},
                       {s.values.data() + t * dv, 1, dv}));
      if (t < n - m) {
        Check(
            ev->Attend({s.queries.data() + t * d, 1, d}, {out.data(), 1, dv}));
      }
    }
    Check(blind->Append({s.keys.data(), n, d}, {s.values.data(), n, dv}));
    auto tk = Make("topk:k=" + std::to_string(heavy), {d, dv, s.scale});
    Check(tk->Append({s.keys.data(), n, d}, {s.values.data(), n, dv}));
    std::printf(
        "  %7lld %7lld %12.4g %12.4g %14.4g\n", static_cast<long long>(n),
        static_cast<long long>(EvictBudget(eo, n)), Rms(Query(*ev, q, m), ref),
        Rms(Query(*tk, q, m), ref), Rms(Query(*blind, q, m), ref));
  }
}

}  // namespace
}  // namespace kvsketch

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  if (!quick) kvsketch::SketchMemory();
  kvsketch::SketchBoundedError(quick);
  kvsketch::SketchWindowExact();
  kvsketch::TopkTau(quick);
  kvsketch::EvictMemory(quick);
  kvsketch::EvictVsTopk(quick);
  return 0;
}
