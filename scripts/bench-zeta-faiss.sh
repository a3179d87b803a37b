#!/usr/bin/env bash
# zeta against faiss (issue #4): builds bench/core/zeta_faiss_bench, which is
# only configured when Debian's libfaiss-dev (a static libfaiss.a) and the
# OpenMP, BLAS and LAPACK it links are installed, then runs it single-threaded.
#
# Usage: scripts/bench-zeta-faiss.sh [--dir build/release] [--jobs 2]
#                                    [--no-install] [-- bench flags...]
#   bench flags go to zeta_faiss_bench, e.g. -- --n=65536 --queries=20
#   (default: --queries=100 over n = 64K, 256K, 1M; about 10 minutes and
#   ~2 GiB of memory at 1M on one core).
#   --no-install  do not apt-get install libfaiss-dev, libblas-dev, liblapack-dev
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="build/release"
JOBS=2
INSTALL=1
BENCH_ARGS=()
while (($#)); do
  case "$1" in
    --dir) DIR="$2"; shift ;;
    --dir=*) DIR="${1#--dir=}" ;;
    --jobs|-j) JOBS="$2"; shift ;;
    --jobs=*) JOBS="${1#--jobs=}" ;;
    --no-install) INSTALL=0 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    --) shift; BENCH_ARGS=("$@"); break ;;
    *) echo "bench-zeta-faiss.sh: unknown argument '$1' (see --help)" >&2
       exit 2 ;;
  esac
  shift
done
[[ "$DIR" = /* ]] || DIR="$REPO/$DIR"
((${#BENCH_ARGS[@]})) || BENCH_ARGS=(--queries=100)

# --- faiss and a BLAS/LAPACK (Debian packages) -------------------------------
PACKAGES=(libfaiss-dev libblas-dev liblapack-dev)
install_flag=()
((INSTALL)) || install_flag=(--no-install)
"$REPO/scripts/apt-ensure.sh" "${install_flag[@]}" --caller bench-zeta-faiss.sh \
  "${PACKAGES[@]}"

# --- build (re-configures, so a build dir made before faiss finds it now) ----
"$REPO/scripts/build.sh" --dir "$DIR" --jobs "$JOBS" \
  --target zeta_faiss_bench -DKVSKETCH_ARCH=x86-64-v3 >/dev/null
BENCH="$DIR/bench/core/zeta_faiss_bench"
if [[ ! -x "$BENCH" ]]; then
  echo "bench-zeta-faiss.sh: $BENCH was not built (see the CMake output of" \
    "scripts/build.sh --dir $DIR: faiss, OpenMP, BLAS or LAPACK not found)" >&2
  exit 1
fi

# --- run ---------------------------------------------------------------------
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
echo "bench-zeta-faiss.sh: $BENCH ${BENCH_ARGS[*]}" >&2
"$BENCH" "${BENCH_ARGS[@]}"
