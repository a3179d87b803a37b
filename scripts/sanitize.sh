#!/usr/bin/env bash
# The sanitizer job (CI runs it after scripts/test.sh): builds the tree with
# AddressSanitizer + UndefinedBehaviorSanitizer (RelWithDebInfo, no
# benchmarks) in build/asan and runs the GoogleTest suite under them. Any
# heap error, leak or undefined behaviour aborts the test that hit it.
#
# Usage: scripts/sanitize.sh [--dir build/asan] [ctest args...]
#   e.g. scripts/sanitize.sh -L server      (only the server tests)
#   KVSKETCH_SKIP_DEPS=1 skips apt (scripts/install-deps.sh).
#
# ThreadSanitizer is not run: Debian's gRPC and Abseil are not built with it,
# so every lock inside them would be reported as a race (docs/development.md).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
DIR="build/asan"
CTEST_ARGS=()
while (($#)); do
  case "$1" in
    --dir) DIR="$2"; shift ;;
    --dir=*) DIR="${1#--dir=}" ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) CTEST_ARGS+=("$1") ;;
  esac
  shift
done

start=$(date +%s)
if [[ "${KVSKETCH_SKIP_DEPS:-0}" != 1 ]]; then
  scripts/install-deps.sh
fi
if ! scripts/build.sh --type RelWithDebInfo --dir "$DIR" \
  -DKVSKETCH_SANITIZE="address;undefined" -DKVSKETCH_BUILD_TESTS=ON \
  -DKVSKETCH_BUILD_BENCHMARKS=OFF; then
  echo "sanitize.sh: FAILED: the sanitizer build failed; no test ran" >&2
  exit 1
fi
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# Sanitized code runs ~2-4x slower: CMake scales per-test timeouts by 4.
rc=0
ctest --test-dir "$DIR" --output-on-failure --no-tests=error -j 2 \
  --timeout 900 "${CTEST_ARGS[@]}" || rc=$?
echo "sanitize.sh: ASan+UBSan suite $( ((rc == 0)) && echo passed || echo FAILED) in $(($(date +%s) - start)) s"
exit "$rc"
