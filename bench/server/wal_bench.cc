// File: bench/server/wal_bench.cc
//
// Write-ahead log throughput on this machine's disk (docs/durability.md):
// acknowledged records/s, bytes/s and fsyncs/s per fsync policy, payload
// size (k and v of one token of one layer in f32 at d = 128 take 1 KB per
// KV head: 1 KB / 16 KB / 64 KB is 1 / 16 / 64 KV heads) and number of
// concurrent appenders. Every
// iteration is Append + WaitDurable, i.e. what one acknowledged step costs.
// The ratio that matters is every_batch with N threads against every_batch
// with 1 thread in the same run: group commit shares each fsync.
//
//   build/release/bench/server/bench_wal [--benchmark_filter=every_batch]
// KVSKETCH_WAL_BENCH_DIR picks the directory (default /tmp); it must be on
// the disk you want to measure.
#include <stdlib.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "core/status_macros.h"
#include "server/durability/file_env.h"
#include "server/durability/wal.h"

namespace kvsketch::server::durability {
namespace {

struct Run {
  std::unique_ptr<WalWriter> writer;
  std::string dir;
  std::string path;
  int generation = 0;
  WalWriter::Stats start;
};
Run* g_run = nullptr;

std::string BenchDir() {
  const char* d = std::getenv("KVSKETCH_WAL_BENCH_DIR");
  return d != nullptr ? d : "/tmp";
}

std::unique_ptr<WritableFile> NewSegmentFile(Run* run) {
  ++run->generation;
  run->path = absl::StrCat(run->dir, "/bench.", run->generation, ".wal");
  auto file = Env::Default()->NewWritableFile(run->path);
  KVSKETCH_CHECK(file.ok());
  KVSKETCH_CHECK((*file)->Append(EncodeSegmentHeader(run->generation)).ok());
  KVSKETCH_CHECK((*file)->Sync().ok());
  return *std::move(file);
}

FsyncPolicy PolicyOf(int64_t p) {
  return p == 0   ? FsyncPolicy::kEveryBatch
         : p == 1 ? FsyncPolicy::kInterval
                  : FsyncPolicy::kOff;
}

void Setup(const benchmark::State& state) {
  g_run = new Run();
  std::string tmpl = BenchDir() + "/kvsketch_wal_bench_XXXXXX";
  KVSKETCH_CHECK(::mkdtemp(tmpl.data()) != nullptr);
  g_run->dir = tmpl;
  auto file = NewSegmentFile(g_run);
  g_run->writer = std::make_unique<WalWriter>(std::move(file), g_run->path, 0,
                                              PolicyOf(state.range(0)),
                                              absl::Milliseconds(2), nullptr);
}

void Teardown(const benchmark::State&) {
  KVSKETCH_CHECK(g_run->writer->Close().ok());
  std::string cmd = absl::StrCat("rm -rf '", g_run->dir, "'");
  KVSKETCH_CHECK(std::system(cmd.c_str()) == 0);
  delete g_run;
  g_run = nullptr;
}

// Args: policy (0 every_batch, 1 interval 2 ms, 2 off), payload bytes.
void BM_AppendAck(benchmark::State& state) {
  const std::string payload(static_cast<size_t>(state.range(1)), 'x');
  WalWriter& w = *g_run->writer;
  if (state.thread_index() == 0) g_run->start = w.stats();
  int64_t n = 0;
  for (auto _ : state) {
    absl::StatusOr<uint64_t> seq = w.Append(RecordType::kDelete, payload);
    KVSKETCH_CHECK(seq.ok());
    KVSKETCH_CHECK(w.WaitDurable(*seq).ok());
    // Keep the file bounded: thread 0 moves to a fresh segment now and then.
    if (state.thread_index() == 0 && ++n % 2048 == 0) {
      const std::string old = g_run->path;
      KVSKETCH_CHECK(w.Rotate(NewSegmentFile(g_run), g_run->path).ok());
      KVSKETCH_CHECK(Env::Default()->DeleteFile(old).ok());
    }
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * state.range(1));
  if (state.thread_index() == 0) {
    const WalWriter::Stats s = w.stats();
    state.counters["fsyncs"] =
        benchmark::Counter(static_cast<double>(s.syncs - g_run->start.syncs),
                           benchmark::Counter::kIsRate);
    state.counters["recs_per_batch"] =
        static_cast<double>(s.records - g_run->start.records) /
        std::max<double>(1.0,
                         static_cast<double>(s.batches - g_run->start.batches));
  }
}

BENCHMARK(BM_AppendAck)
    ->Setup(Setup)
    ->Teardown(Teardown)
    ->ArgNames({"policy", "bytes"})
    ->ArgsProduct({{0, 1, 2}, {1 << 10, 16 << 10, 64 << 10}})
    ->Threads(1)
    ->Threads(4)
    ->UseRealTime()
    ->MinTime(0.5);

}  // namespace
}  // namespace kvsketch::server::durability

BENCHMARK_MAIN();
