// File: bench/core/approx_bench.cc
//
// Append and Query cost of the sublinear approximators against `exact`, at
// d = dv = 128 and n = 1K … 1M tokens, one head, one query row.
//
//   BM_Query/<spec index>/<n>   one Query over a head holding n tokens
//
// Counters (all measured in this process, so ratios are script-free):
//   append_ns_per_token   wall time of building the n-token state ÷ n
//   state_mib             MemoryBytes() of the state
//   vs_exact              this query's time ÷ exact's at the same n
//                         (exact runs first for every n)
//   vs_n1k                this query's time ÷ the same spec's at n = 1K
//                         (target for `sketch`: ≤ 1.2 at n = 1M)
//
//   build/sublinear/bench/core/bench_approx --benchmark_min_time=0.2
// A state is built once per (spec, n) and freed before the next one, so at
// most one 1M-token cache (1 GiB at f32) is alive.
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "benchmark/benchmark.h"
#include "core/approximator.h"
#include "core/registry.h"

namespace kvsketch {
namespace {

constexpr int kDim = 128;
const char* const kSpecs[] = {
    "exact", "sketch", "topk", "topk:select=blocks", "evict",
};
constexpr int kNumSpecs = sizeof(kSpecs) / sizeof(kSpecs[0]);

// Deterministic N(0,1)-ish fill (sum of uniforms): cheap at 256M floats and
// the values do not change the cost of any kind measured here.
void Fill(float* x, int64_t count, uint64_t seed) {
  uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1;
  for (int64_t i = 0; i < count; ++i) {
    float acc = 0;
    for (int j = 0; j < 3; ++j) {
      s = s * 6364136223846793005ULL + 1442695040888963407ULL;
      acc += static_cast<float>(static_cast<int32_t>(s >> 32)) * 0x1p-31f;
    }
    x[i] = acc;
  }
}

struct Built {
  int spec = -1;
  int64_t n = 0;
  std::unique_ptr<Approximator> approx;
  double append_ns_per_token = 0;
};

Built& Cache() {
  static Built* b = new Built;
  return *b;
}

Approximator* GetState(int spec, int64_t n, double* append_ns) {
  Built& b = Cache();
  if (b.spec != spec || b.n != n) {
    b.approx.reset();
    auto a = CreateApproximator(kSpecs[spec], {kDim, kDim, 1.0f / 11.3137085f});
    if (!a.ok()) return nullptr;
    b.approx = *std::move(a);
    constexpr int64_t kChunk = 4096;
    std::vector<float> k(kChunk * kDim), v(kChunk * kDim);
    double append_seconds = 0;  // Append calls only, not the data fill
    for (int64_t done = 0; done < n; done += kChunk) {
      const int64_t t = std::min(kChunk, n - done);
      Fill(k.data(), t * kDim, 2 * done + 1);
      Fill(v.data(), t * kDim, 2 * done + 2);
      const auto t0 = std::chrono::steady_clock::now();
      if (!b.approx->Append({k.data(), t, kDim}, {v.data(), t, kDim}).ok()) {
        return nullptr;
      }
      append_seconds +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
              .count();
    }
    b.append_ns_per_token = append_seconds * 1e9 / n;
    b.spec = spec;
    b.n = n;
  }
  *append_ns = b.append_ns_per_token;
  return b.approx.get();
}

std::map<std::pair<int, int64_t>, double>& QueryTimes() {
  static auto* m = new std::map<std::pair<int, int64_t>, double>;
  return *m;
}

void BM_Query(benchmark::State& state) {
  const int spec = static_cast<int>(state.range(0));
  const int64_t n = state.range(1);
  double append_ns = 0;
  Approximator* a = GetState(spec, n, &append_ns);
  if (a == nullptr) {
    state.SkipWithError("could not build the state");
    return;
  }
  std::vector<float> q(kDim), out(kDim);
  Fill(q.data(), kDim, 99);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    if (!a->Query({q.data(), 1, kDim}, {out.data(), 1, kDim}).ok()) {
      state.SkipWithError("query failed");
      return;
    }
    benchmark::DoNotOptimize(out.data());
  }
  const double per_query =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count() /
      static_cast<double>(state.iterations());
  QueryTimes()[{spec, n}] = per_query;
  state.SetLabel(kSpecs[spec]);
  state.counters["append_ns_per_token"] = append_ns;
  state.counters["state_mib"] =
      static_cast<double>(a->MemoryBytes()) / (1 << 20);
  const auto exact = QueryTimes().find({0, n});
  if (exact != QueryTimes().end()) {
    state.counters["vs_exact"] = per_query / exact->second;
  }
  const auto small = QueryTimes().find({spec, 1024});
  if (small != QueryTimes().end()) {
    state.counters["vs_n1k"] = per_query / small->second;
  }
}

void Register() {
  for (int64_t n : {1024, 16384, 262144, 1048576}) {
    for (int s = 0; s < kNumSpecs; ++s) {
      benchmark::RegisterBenchmark("BM_Query", BM_Query)
          ->Args({s, n})
          ->Unit(benchmark::kMicrosecond);
    }
  }
}

}  // namespace
}  // namespace kvsketch

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  kvsketch::Register();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
