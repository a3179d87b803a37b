#!/usr/bin/env bash
# Builds the kvsketch container image with podman, without any registry:
#
#   1. a local `debian:bookworm` base image, made once with
#      `debootstrap --variant=minbase` from the Debian mirror this machine's
#      apt already uses (skipped when the image exists), so the Dockerfile's
#      `FROM debian:bookworm` resolves locally and apt inside the build uses
#      the same mirror;
#   2. `podman build --isolation=chroot --pull=never -t kvsketch:latest .`
#      from the repository root (the working tree, edits included), or with
#      --git-ref REF from `git archive REF` (exactly a commit: what CI and
#      releases should build, unaffected by uncommitted edits).
#
# Usage: deploy/container/build.sh [--base-only] [--tag NAME] [--rebuild-base]
#                                  [--git-ref REF]
# Needs root (debootstrap, podman storage). Installs podman, buildah,
# debootstrap and runc through apt when they are missing.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TAG="kvsketch:latest"
BASE="debian:bookworm"
BASE_ONLY=0
REBUILD_BASE=0
GIT_REF=""
while (($#)); do
  case "$1" in
    --base-only) BASE_ONLY=1 ;;
    --rebuild-base) REBUILD_BASE=1 ;;
    --tag) TAG="$2"; shift ;;
    --tag=*) TAG="${1#--tag=}" ;;
    --git-ref) GIT_REF="$2"; shift ;;
    --git-ref=*) GIT_REF="${1#--git-ref=}" ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

need=()
for tool in podman buildah debootstrap runc; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if ((${#need[@]})); then
  echo "build.sh: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

# The first Debian archive URI this machine's apt is configured with (deb822
# .sources files first, then one-line sources.list entries). Security and
# updates suites are taken from the same files when present.
find_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    awk '/^URIs:/ {uri=$2} /^Suites:/ && / bookworm( |$)/ {print uri; exit}' "$f"
  done | head -n1 | grep . && return 0
  grep -hsE '^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?[a-z]+://[^[:space:]]+[[:space:]]+bookworm[[:space:]]' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
    sed -E 's/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' | awk '{print $1; exit}'
}
find_security_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    awk '/^URIs:/ {uri=$2} /^Suites:/ && /bookworm-security/ {print uri; exit}' "$f"
  done | head -n1 | grep . && return 0
  grep -hsE '^deb[[:space:]].*[[:space:]]bookworm-security[[:space:]]' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
    sed -E 's/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' | awk '{print $1; exit}'
}

MIRROR="${KVSKETCH_DEBIAN_MIRROR:-$(find_mirror || true)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${KVSKETCH_DEBIAN_SECURITY_MIRROR:-$(find_security_mirror || true)}"

if ((REBUILD_BASE)) && podman image exists "$BASE"; then
  podman rmi "$BASE"
fi
if podman image exists "$BASE"; then
  echo "build.sh: base image $BASE exists (cached); --rebuild-base remakes it"
else
  ROOTFS="$(mktemp -d /var/tmp/kvsketch-rootfs.XXXXXX)"
  trap 'rm -rf "$ROOTFS"' EXIT
  echo "build.sh: debootstrap minbase bookworm from $MIRROR into $ROOTFS"
  debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR"
  # The same mirror for apt inside the image (deb822, like Debian's images).
  {
    echo "Types: deb"
    echo "URIs: $MIRROR"
    echo "Suites: bookworm bookworm-updates"
    echo "Components: main"
    echo "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
    if [[ -n "$SECURITY_MIRROR" ]]; then
      echo
      echo "Types: deb"
      echo "URIs: $SECURITY_MIRROR"
      echo "Suites: bookworm-security"
      echo "Components: main"
      echo "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
    fi
  } >"$ROOTFS/etc/apt/sources.list.d/debian.sources"
  rm -f "$ROOTFS/etc/apt/sources.list"
  # Keep the base small, as the official image does.
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
  tar -C "$ROOTFS" -c . | podman import - "$BASE"
  rm -rf "$ROOTFS"
  trap - EXIT
fi

if ((BASE_ONLY)); then
  exit 0
fi

CONTEXT="$REPO"
if [[ -n "$GIT_REF" ]]; then
  CONTEXT="$(mktemp -d /var/tmp/kvsketch-context.XXXXXX)"
  trap 'rm -rf "$CONTEXT"' EXIT
  git -C "$REPO" archive --format=tar "$GIT_REF" | tar -x -C "$CONTEXT"
  echo "build.sh: context is git archive $GIT_REF" \
    "($(git -C "$REPO" rev-parse --short "$GIT_REF"))"
fi
cd "$CONTEXT"
echo "build.sh: podman build -t $TAG (this compiles the project: ~10+ min on 2 cores)"
start=$(date +%s)
# docker format: OCI images cannot carry the HEALTHCHECK.
podman build --isolation=chroot --pull=never --format docker -t "$TAG" \
  -f Dockerfile .
echo "build.sh: built $TAG in $(($(date +%s) - start)) s;" \
  "size $(podman image inspect --format '{{.Size}}' "$TAG") bytes"
