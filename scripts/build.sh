#!/usr/bin/env bash
# Configures (CMake + Ninja) and builds kvsketch. Installs nothing: run
# scripts/install-deps.sh first (scripts/run-server.sh and scripts/test.sh do).
#
# Usage: scripts/build.sh [--type Release] [--dir build/release] [--werror]
#                         [--jobs N] [--target T]... [-DVAR=VALUE]...
#   --type    CMAKE_BUILD_TYPE (Release, Debug, RelWithDebInfo); default Release
#   --dir     build directory, relative to the repo root or absolute;
#             default build/<type in lower case>
#   --werror  -DKVSKETCH_WERROR=ON (warnings in our targets are errors)
#   --jobs    parallel jobs; default $KVSKETCH_JOBS or nproc
#   --target  build only this target (repeatable); default: all
#   -D...     passed to cmake as is, e.g. -DKVSKETCH_BUILD_TESTS=OFF
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TYPE="Release"
DIR=""
JOBS="${KVSKETCH_JOBS:-$(nproc)}"
CMAKE_ARGS=()
TARGETS=()

while (($#)); do
  case "$1" in
    --type) TYPE="$2"; shift ;;
    --type=*) TYPE="${1#--type=}" ;;
    --dir) DIR="$2"; shift ;;
    --dir=*) DIR="${1#--dir=}" ;;
    --werror) CMAKE_ARGS+=("-DKVSKETCH_WERROR=ON") ;;
    --jobs|-j) JOBS="$2"; shift ;;
    --jobs=*) JOBS="${1#--jobs=}" ;;
    --target) TARGETS+=("$2"); shift ;;
    --target=*) TARGETS+=("${1#--target=}") ;;
    -D*) CMAKE_ARGS+=("$1") ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

DIR="${DIR:-build/${TYPE,,}}"
[[ "$DIR" = /* ]] || DIR="$REPO/$DIR"

for tool in cmake ninja; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "build.sh: '$tool' not found; run scripts/install-deps.sh first" >&2
    exit 1
  fi
done

echo "build.sh: configuring $DIR ($TYPE${CMAKE_ARGS:+; ${CMAKE_ARGS[*]}})"
cmake -S "$REPO" -B "$DIR" -G Ninja -DCMAKE_BUILD_TYPE="$TYPE" \
  "${CMAKE_ARGS[@]}"

start=$(date +%s)
echo "build.sh: building with -j$JOBS${TARGETS:+ (targets: ${TARGETS[*]})}"
if ((${#TARGETS[@]})); then
  ninja -C "$DIR" -j "$JOBS" "${TARGETS[@]}"
else
  ninja -C "$DIR" -j "$JOBS"
fi
echo "build.sh: built in $(($(date +%s) - start)) s -> $DIR"
