#!/usr/bin/env bash
# README command #2 (and CI): installs every dependency, builds the whole tree
# with tests and benchmarks in build/test, and runs the GoogleTest suite
# through ctest. Exits non-zero on any build or test failure.
#
# Usage: scripts/test.sh [--dir build/test] [--type Release] [--werror]
#                        [ctest args...]
#   e.g. scripts/test.sh -R Snapshot      (only tests matching a regex)
#   KVSKETCH_TEST_TIMEOUT (default 300) is the per-test timeout in seconds
#   for tests that do not set their own; KVSKETCH_SKIP_DEPS=1 skips apt.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

DIR="build/test"
TYPE="Release"
BUILD_ARGS=()
CTEST_ARGS=()
while (($#)); do
  case "$1" in
    --dir) DIR="$2"; shift ;;
    --dir=*) DIR="${1#--dir=}" ;;
    --type) TYPE="$2"; shift ;;
    --type=*) TYPE="${1#--type=}" ;;
    --werror) BUILD_ARGS+=("--werror") ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) CTEST_ARGS+=("$1") ;;
  esac
  shift
done

start=$(date +%s)
if [[ "${KVSKETCH_SKIP_DEPS:-0}" != 1 ]]; then
  scripts/install-deps.sh
fi
if ! scripts/build.sh --type "$TYPE" --dir "$DIR" "${BUILD_ARGS[@]}" \
  -DKVSKETCH_BUILD_TESTS=ON -DKVSKETCH_BUILD_BENCHMARKS=ON; then
  echo "test.sh: FAILED: the build failed after $(($(date +%s) - start)) s; no test ran" >&2
  exit 1
fi
built=$(date +%s)

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
rc=0
ctest --test-dir "$DIR" --output-on-failure --no-tests=error -j 2 \
  --timeout "${KVSKETCH_TEST_TIMEOUT:-300}" "${CTEST_ARGS[@]}" 2>&1 |
  tee "$log" || rc=$?

# ctest's own summary: "NN% tests passed, F tests failed out of T".
summary="$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n1 || true)"
end=$(date +%s)
if [[ -n "$summary" ]]; then
  failed="$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$summary")"
  total="$(sed -E 's/.* failed out of ([0-9]+).*/\1/' <<<"$summary")"
  passed=$((total - failed))
  if ((failed > 0)) && ((rc == 0)); then rc=1; fi
else
  passed=0
  failed="?"
  ((rc != 0)) || rc=1
fi
echo "test.sh: build $((built - start)) s, tests $((end - built)) s, exit $rc"
echo "kvsketch: $passed passed, $failed failed"
exit "$rc"
