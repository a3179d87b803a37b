#!/usr/bin/env bash
# Installs everything kvsketch needs to build, test and run on Debian 12
# (bookworm). Idempotent; the single source of truth for packages: CI, the
# README commands and both stages of the Dockerfile call it.
#
# Usage: scripts/install-deps.sh [--build-only | --runtime | --print MODE]
#   (none)        build + test + lint packages (what scripts/test.sh needs)
#   --build-only  what scripts/build.sh needs to compile the binaries
#   --runtime     only the shared libraries the binaries load (container)
#   --print MODE  print the package list of MODE (full|build|runtime), install
#                 nothing
set -euo pipefail

BUILD_PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libeigen3-dev libfftw3-dev zlib1g-dev prometheus-cpp-dev
  libssl-dev        # server/auth.cc checks TLS key/certificate files
)
TEST_PACKAGES=(
  libgtest-dev libgmock-dev libbenchmark-dev
  prometheus        # promtool, to check the /metrics exposition
  python3-numpy     # .npy interoperability checks
  curl
  openssl           # TLS tests make throw-away certificates with the CLI
  nginx-light haproxy python3-yaml  # deploy/ checks (ctest -L deploy)
  clang-format      # scripts/check-format.sh
)
# What `ldd` of kvsketch-server, kvsketch and kvsketch-loadgen resolves to
# (their other libraries, e.g. libre2, libcares, libssl, come in as
# dependencies of these). Checked by the Dockerfile's runtime stage.
RUNTIME_PACKAGES=(
  libgrpc++1.51 libgrpc29 libprotobuf32 libabsl20220623 libfftw3-single3 libfftw3-double3
  libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 zlib1g libstdc++6
  ca-certificates
)

mode="full"
case "${1:-}" in
  "") ;;
  --build-only) mode="build" ;;
  --runtime) mode="runtime" ;;
  --print) mode="print:${2:-full}" ;;
  -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
  *) echo "install-deps: unknown argument '$1'" >&2; exit 2 ;;
esac

list_for() {
  case "$1" in
    full) echo "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}" ;;
    build) echo "${BUILD_PACKAGES[@]}" ;;
    runtime) echo "${RUNTIME_PACKAGES[@]}" ;;
    *) echo "install-deps: unknown mode '$1'" >&2; return 2 ;;
  esac
}

if [[ "$mode" == print:* ]]; then
  list_for "${mode#print:}" | tr ' ' '\n'
  exit 0
fi

read -r -a want <<<"$(list_for "$mode")"

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#want[@]} packages present ($mode)"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
