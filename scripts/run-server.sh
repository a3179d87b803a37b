#!/usr/bin/env bash
# README command #1: installs the build dependencies, builds a Release tree in
# build/release and runs the server in the foreground (Ctrl-C or SIGTERM
# drains it gracefully).
#
# Usage: scripts/run-server.sh [server flags...]
#   Defaults: --listen=127.0.0.1:50051 --metrics_listen=127.0.0.1:9464;
#   any flag given here is passed through and overrides its default, e.g.
#   scripts/run-server.sh --listen=0.0.0.0:50051 --data_dir=/var/lib/kvsketch
#   Set KVSKETCH_SKIP_DEPS=1 to skip the apt step.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

if [[ "${KVSKETCH_SKIP_DEPS:-0}" != 1 ]]; then
  scripts/install-deps.sh --build-only
fi
# Tests and benchmarks are not needed to serve: a faster first build.
scripts/build.sh --type Release --dir build/release \
  -DKVSKETCH_BUILD_TESTS=OFF -DKVSKETCH_BUILD_BENCHMARKS=OFF

defaults=()
has_flag() {
  local name="$1" a
  for a in "${@:2}"; do
    [[ "$a" == "--$name" || "$a" == "--$name="* ]] && return 0
  done
  return 1
}
has_flag listen "$@" || defaults+=("--listen=127.0.0.1:50051")
has_flag metrics_listen "$@" || defaults+=("--metrics_listen=127.0.0.1:9464")

echo "run-server.sh: exec build/release/server/kvsketch-server ${defaults[*]} $*"
exec build/release/server/kvsketch-server "${defaults[@]}" "$@"
