#!/usr/bin/env bash
# Regenerates the committed seed corpora tests/fuzz/corpus/{spec,npy,
# snapshot,request} with kvsketch_fuzz_seeds (seed_corpus_main.cc): real
# inputs from the project's own writers plus hand-made edge cases. Run it
# after a change to a snapshot, .npy or wire format, then commit the result
# (it stays well under 1 MB). Files named regress_* are reproducers of
# fixed findings, added by hand, and are kept. Builds in the fuzz build
# directory that scripts/fuzz.sh configures (clang-14).
#
# Usage: tests/fuzz/make_corpus.sh [--dir build/fuzz]
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
DIR="build/fuzz"
case "${1:-}" in
  --dir) DIR="$2" ;;
  --dir=*) DIR="${1#--dir=}" ;;
  "") ;;
  *) sed -n '2,9p' "$0"; exit 2 ;;
esac

if [[ ! -f "$DIR/CMakeCache.txt" ]]; then
  CC=clang-14 CXX=clang++-14 cmake -S . -B "$DIR" -G Ninja \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVSKETCH_BUILD_FUZZERS=ON \
    -DKVSKETCH_BUILD_TESTS=OFF -DKVSKETCH_BUILD_BENCHMARKS=OFF >/dev/null
fi
ninja -C "$DIR" -j "${KVSKETCH_JOBS:-$(nproc)}" kvsketch_fuzz_seeds
OUT="tests/fuzz/corpus"
# Reproducers of fixed findings (regress_*) are kept: they were not made by
# the generator and must keep replaying (ctest -L fuzz in the fuzz build).
if [[ -d "$OUT" ]]; then find "$OUT" -type f ! -name 'regress_*' -delete; fi
ASAN_OPTIONS=detect_leaks=0 "$DIR/tests/fuzz/kvsketch_fuzz_seeds" "$OUT"
du -sh "$OUT"
