#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz with clang-14 (libraries with
# -fsanitize=fuzzer-no-link,address,undefined, targets with
# -fsanitize=fuzzer) in build/fuzz, then runs each target for a bounded time
# over its committed seed corpus (tests/fuzz/corpus/<t>, read only) plus a
# work corpus (<dir>/corpus/<t>, kept between runs), and prints executions,
# corpus size and crashes per target. Exits non-zero if a build fails or any
# target crashes (crash, sanitizer report, leak, timeout or OOM); the
# reproducer is left in <dir>/artifacts/<t>/. See docs/fuzzing.md.
#
# Usage: scripts/fuzz.sh [--seconds 30] [--dir build/fuzz] [--jobs N]
#                        [--target spec|npy|snapshot|request]... [--no-build]
#   --seconds  fuzzing time per target (default 30)
#   --runs N   instead of a time: N inputs per target with a fixed libFuzzer
#              seed (--seed, default 1), so the run is the same on every
#              machine for the same binaries (what .ci/run uses)
#   --jobs     build parallelism (default $KVSKETCH_JOBS or nproc)
#   --target   only these targets (repeatable; default all five)
#   --no-build run the binaries already in --dir
#   KVSKETCH_SKIP_DEPS=1 skips apt (scripts/install-deps.sh, clang-14).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
SECONDS_EACH=30
DIR="build/fuzz"
JOBS="${KVSKETCH_JOBS:-$(nproc)}"
BUILD=1
TARGETS=()
RUNS=0
SEED=1
while (($#)); do
  case "$1" in
    --seconds) SECONDS_EACH="$2"; shift ;;
    --seconds=*) SECONDS_EACH="${1#--seconds=}" ;;
    --dir) DIR="$2"; shift ;;
    --dir=*) DIR="${1#--dir=}" ;;
    --jobs|-j) JOBS="$2"; shift ;;
    --jobs=*) JOBS="${1#--jobs=}" ;;
    --target) TARGETS+=("$2"); shift ;;
    --target=*) TARGETS+=("${1#--target=}") ;;
    --no-build) BUILD=0 ;;
    --runs) RUNS="$2"; shift ;;
    --runs=*) RUNS="${1#--runs=}" ;;
    --seed) SEED="$2"; shift ;;
    --seed=*) SEED="${1#--seed=}" ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "fuzz.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if ! [[ "$RUNS" =~ ^[0-9]+$ && "$SEED" =~ ^[0-9]+$ ]]; then
  echo "fuzz.sh: --runs and --seed want non-negative integers" >&2
  exit 2
fi
if ! [[ "$SECONDS_EACH" =~ ^[0-9]+$ ]] || ((SECONDS_EACH < 1)); then
  echo "fuzz.sh: --seconds wants a positive integer, got '$SECONDS_EACH'" >&2
  exit 2
fi
((${#TARGETS[@]})) || TARGETS=(spec npy snapshot request wal)
for t in "${TARGETS[@]}"; do
  if [[ ! -d "tests/fuzz/corpus/$t" ]]; then
    echo "fuzz.sh: unknown target '$t' (spec, npy, snapshot, request)" >&2
    exit 2
  fi
done
[[ "$DIR" = /* ]] || DIR="$REPO/$DIR"

start=$(date +%s)
if [[ "${KVSKETCH_SKIP_DEPS:-0}" != 1 ]]; then
  scripts/install-deps.sh --build-only
  # libFuzzer and the clang sanitizer runtimes come with libclang-rt-14-dev.
  missing=()
  for p in clang-14 libclang-rt-14-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
      grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    echo "fuzz.sh: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
      --no-install-recommends "${missing[@]}"
  fi
fi

if ((BUILD)); then
  echo "fuzz.sh: configuring $DIR (clang-14, RelWithDebInfo, fuzzers)"
  CC=clang-14 CXX=clang++-14 cmake -S "$REPO" -B "$DIR" -G Ninja \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVSKETCH_BUILD_FUZZERS=ON \
    -DKVSKETCH_BUILD_TESTS=OFF -DKVSKETCH_BUILD_BENCHMARKS=OFF >/dev/null
  bins=()
  for t in "${TARGETS[@]}"; do bins+=("kvsketch_fuzz_$t"); done
  if ! ninja -C "$DIR" -j "$JOBS" "${bins[@]}"; then
    echo "fuzz.sh: FAILED: the fuzz build failed; nothing ran" >&2
    exit 1
  fi
fi
built=$(date +%s)
echo "fuzz.sh: build step took $((built - start)) s"

# Leaks are findings too; UBSan aborts (the build has
# -fno-sanitize-recover=undefined) so libFuzzer saves the input.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
failed=0
summary=()
for t in "${TARGETS[@]}"; do
  bin="$DIR/tests/fuzz/kvsketch_fuzz_$t"
  work="$DIR/corpus/$t"
  art="$DIR/artifacts/$t"
  log="$DIR/logs/$t.log"
  mkdir -p "$work" "$art" "$(dirname "$log")"
  if ((RUNS > 0)); then what="$RUNS inputs, seed $SEED"; else what="${SECONDS_EACH} s"; fi
  echo "fuzz.sh: $t for $what (log $log)"
  touch "$log.start"
  rc=0
  # -timeout: one input running 25 s is a hang (every target's inputs take
  # milliseconds; the margin is for a loaded machine, since the clock is
  # wall time); -rss_limit_mb: 2 GiB is an OOM; new inputs go to the work
  # corpus, the seeds are only read.
  if ((RUNS > 0)); then
    # Deterministic: a fixed seed, a fixed number of inputs, and a fresh
    # work corpus (a kept one would change what is mutated); the hang limit
    # is wider since a shared CI machine's wall clock is noisy.
    rm -rf "$work" && mkdir -p "$work"
    limits=(-runs="$RUNS" -seed="$SEED" -timeout=120)
  else
    limits=(-max_total_time="$SECONDS_EACH" -timeout=25)
  fi
  "$bin" "${limits[@]}" -rss_limit_mb=2048 \
    -max_len=16384 -print_final_stats=1 -artifact_prefix="$art/" \
    "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(find "$work" -type f | wc -l)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  # Reproducers written by this run (older ones stay for reference).
  # (slow-unit-* files are only notes: an input slower than 10 s.)
  crashes=$(find "$art" -type f -newer "$log.start" \
    \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) |
    wc -l)
  if ((rc != 0)); then
    failed=1
    ((crashes > 0)) || crashes=1
    echo "fuzz.sh: $t FAILED (exit $rc); the report:" >&2
    grep -m 20 -E 'ERROR|SUMMARY|runtime error|fuzz property|Test unit written' \
      "$log" >&2 || tail -20 "$log" >&2
  fi
  summary+=("$(printf '%-9s %-24s %12s execs %8s/s %7s units %6s cov %4s crashes' \
    "$t" "$what" "${execs:-?}" "${rate:-?}" "$corpus" "${cov:-?}" \
    "$crashes")")
done

echo "fuzz.sh: results (corpus = work corpus units; seeds in tests/fuzz/corpus)"
printf '  %s\n' "${summary[@]}"
end=$(date +%s)
echo "fuzz.sh: $( ((failed)) && echo FAILED || echo passed) in $((end - start)) s" \
  "(build $((built - start)) s, fuzzing $((end - built)) s)"
exit "$failed"
