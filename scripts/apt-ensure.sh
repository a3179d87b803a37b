#!/usr/bin/env bash
# Makes sure Debian packages are installed (for the benchmark scripts that
# need packages the build does not: PyTorch, faiss, ...).
#
# Usage: scripts/apt-ensure.sh [--no-install] [--caller NAME] PACKAGE...
#   installs the missing ones with apt-get when run as root (unless
#   --no-install); otherwise names them and exits 1. NAME prefixes messages.
set -euo pipefail

INSTALL=1
CALLER="apt-ensure.sh"
while (($#)); do
  case "$1" in
    --no-install) INSTALL=0; shift ;;
    --caller) CALLER="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    -*) echo "apt-ensure.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
if (($# == 0)); then
  echo "apt-ensure.sh: no packages given" >&2
  exit 2
fi

missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$p")
done
((${#missing[@]})) || exit 0
if ((INSTALL)) && [[ $(id -u) -eq 0 ]]; then
  echo "$CALLER: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
else
  echo "$CALLER: missing ${missing[*]}; install them as root" \
    "(apt-get install ${missing[*]}) or run this script as root" >&2
  exit 1
fi
