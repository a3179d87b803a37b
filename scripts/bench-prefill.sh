#!/usr/bin/env bash
# Causal prefill benchmark (issue #4 item 3): the naive loop, `exact`
# (blocked GEMM), `conv`, the Eigen sgemm roofline and PyTorch CPU attention,
# all measured in one run on one thread each, printed as one table
# (bench/core/prefill_bench.cc; torch part: bench/python/torch_attention.py).
#
# Usage: scripts/bench-prefill.sh [--quick] [--sizes T,T,...] [--dir DIR]
#                                 [--jobs N] [--coretypes LIST] [--no-install]
#   --quick       T = 1024,2048,4096 and a 5 s budget for the naive loop
#                 (default: T = 4096 .. 65536, naive while <= 120 s per T)
#   --sizes       comma-separated T values (overrides --quick's sizes)
#   --dir         build directory; default build/release
#   --jobs        build jobs; default 2
#   --coretypes   OpenBLAS kernels to time torch with, one column each;
#                 default "default,Haswell": OpenBLAS's own CPU detection
#                 (0.3.21 does not know recent Xeons and may fall back to
#                 its SSE3 "Prescott" kernels) and the AVX2 kernels (the
#                 same ISA as our x86-64-v3 build). E.g. add SkylakeX.
#   --no-install  do not apt-get install python3-torch / libopenblas0-pthread
# Threads: 1 everywhere (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS,
# torch.set_num_threads; Eigen runs single-threaded, exact Prefill too).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="build/release"
JOBS=2
QUICK=0
SIZES=""
CORETYPES="default,Haswell"
INSTALL=1

while (($#)); do
  case "$1" in
    --quick) QUICK=1 ;;
    --sizes) SIZES="$2"; shift ;;
    --sizes=*) SIZES="${1#--sizes=}" ;;
    --dir) DIR="$2"; shift ;;
    --dir=*) DIR="${1#--dir=}" ;;
    --jobs|-j) JOBS="$2"; shift ;;
    --jobs=*) JOBS="${1#--jobs=}" ;;
    --coretypes) CORETYPES="$2"; shift ;;
    --coretypes=*) CORETYPES="${1#--coretypes=}" ;;
    --no-install) INSTALL=0 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "bench-prefill.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$DIR" = /* ]] || DIR="$REPO/$DIR"
if [[ -z "$SIZES" ]]; then
  if ((QUICK)); then SIZES="1024,2048,4096"; else
    SIZES="4096,8192,16384,32768,65536"; fi
fi

# --- PyTorch and OpenBLAS (Debian packages) ---------------------------------
PACKAGES=(python3-torch libopenblas0-pthread)
install_flag=()
((INSTALL)) || install_flag=(--no-install)
"$REPO/scripts/apt-ensure.sh" "${install_flag[@]}" --caller bench-prefill.sh \
  "${PACKAGES[@]}"

# torch loads libblas.so.3; make it OpenBLAS (pthread) for this run only,
# without changing the system's alternatives when they point elsewhere.
OPENBLAS_DIR=/usr/lib/x86_64-linux-gnu/openblas-pthread
PRELOAD=""
current="$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 || true)"
if [[ "$current" != "$OPENBLAS_DIR"/* ]]; then
  PRELOAD="$OPENBLAS_DIR/libblas.so.3:$OPENBLAS_DIR/liblapack.so.3"
  echo "bench-prefill.sh: libblas.so.3 is $current; preloading OpenBLAS"
fi

# --- build -------------------------------------------------------------------
"$REPO/scripts/build.sh" --dir "$DIR" --jobs "$JOBS" --target bench_prefill \
  -DKVSKETCH_ARCH=x86-64-v3 >/dev/null
BENCH="$DIR/bench/core/bench_prefill"

# --- run ---------------------------------------------------------------------
# bench_prefill runs the torch script itself for each T, right after its own
# contenders of that T (same load on a shared machine), one command per
# OpenBLAS kernel choice.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
TORCH_ARGS=()
IFS=',' read -r -a CORES <<<"$CORETYPES"
for core in "${CORES[@]}"; do
  cmd="env"
  [[ -n "$PRELOAD" ]] && cmd+=" LD_PRELOAD=$(printf %q "$PRELOAD")"
  [[ "$core" != default ]] && cmd+=" OPENBLAS_CORETYPE=$(printf %q "$core")"
  cmd+=" /usr/bin/python3 $(printf %q "$REPO/bench/python/torch_attention.py")"
  cmd+=" --threads 1"
  TORCH_ARGS+=("--torch_cmd=$core=$cmd")
done
echo "bench-prefill.sh: bench_prefill, T = $SIZES, torch kernels: $CORETYPES" >&2
QUICK_ARG=()
((QUICK)) && QUICK_ARG=(--quick)
"$BENCH" --sizes="$SIZES" "${QUICK_ARG[@]}" "${TORCH_ARGS[@]}"
