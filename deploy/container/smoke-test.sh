#!/usr/bin/env bash
# End-to-end smoke test of the kvsketch image (build it first with
# deploy/container/build.sh). Runs the container with a data volume and
# checks, in order:
#   1. the HEALTHCHECK (`kvsketch health`) turns healthy;
#   2. the image's CLI (podman exec) creates a GQA session, appends .npy
#      keys/values and attends; the output matches a double-precision
#      reference computed here (max abs error <= 1e-5);
#   3. export -> delete -> import round trip keeps the session;
#   4. /metrics, through the published port, has kvsketch_ metrics with the
#      right values (and passes `promtool check metrics` when promtool is
#      installed);
#   5. SIGTERM (podman stop) exits 0, and a new container on the same volume
#      restores the session from /data;
#   6. the server runs as the image's non-root user (uid 10001), checked
#      on the running process, not only on the image's metadata;
#   7. with a host build (--host-build DIR, default build/release when it
#      has the binaries), a host kvsketch-loadgen drives Decode streams
#      through the published gRPC port;
#   8. prints the image size.
# Usage: deploy/container/smoke-test.sh [--reuse] [--git-ref REF]
#          [--host-build DIR] [IMAGE]              (default kvsketch:latest)
#   By default the image is built first with deploy/container/build.sh
#   (passing --git-ref); --reuse tests the existing image as it is.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
IMAGE="kvsketch:latest"
REUSE=0
GIT_REF=""
HOST_BUILD="$REPO/build/release"
while (($#)); do
  case "$1" in
    --reuse) REUSE=1 ;;
    --git-ref) GIT_REF="$2"; shift ;;
    --git-ref=*) GIT_REF="${1#*=}" ;;
    --host-build) HOST_BUILD="$2"; shift ;;
    --host-build=*) HOST_BUILD="${1#*=}" ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    -*) echo "smoke-test.sh: unknown option '$1'" >&2; exit 2 ;;
    *) IMAGE="$1" ;;
  esac
  shift
done
NAME="kvsketch-smoke-$$"
VOLUME="kvsketch-smoke-data-$$"
RUN_FLAGS=(--runtime runc)
# This sandbox (and some CI hosts) refuse raising RLIMIT_NOFILE/NPROC to the
# engine's defaults: ask for limits the kernel grants.
CONTAINER_FLAGS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
WORK="$(mktemp -d)"
cid=""

log() { echo "smoke: $*"; }
fail() {
  echo "smoke: FAIL: $*" >&2
  if [[ -n "$cid" ]]; then
    echo "--- container logs ---" >&2
    podman logs --tail 40 "$cid" >&2 || true
  fi
  exit 1
}
cleanup() {
  podman rm -f -t 2 "$NAME" >/dev/null 2>&1 || true
  podman volume rm -f "$VOLUME" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v curl >/dev/null || fail "curl is needed (apt-get install curl)"
command -v python3 >/dev/null || fail "python3 is needed for the reference"
if ((REUSE)); then
  podman image exists "$IMAGE" ||
    fail "image $IMAGE not found; run deploy/container/build.sh (or drop --reuse)"
  log "reusing image $IMAGE ($(podman image inspect --format '{{.Created}}' "$IMAGE"))"
else
  build_args=(--tag "$IMAGE")
  [[ -n "$GIT_REF" ]] && build_args+=(--git-ref "$GIT_REF")
  log "building $IMAGE (deploy/container/build.sh ${build_args[*]})"
  "$REPO/deploy/container/build.sh" "${build_args[@]}" >"$WORK/build.log" 2>&1 ||
    { tail -n 30 "$WORK/build.log" >&2; fail "image build failed (log tail above)"; }
  tail -n1 "$WORK/build.log" | sed 's/^/smoke: /'
fi

# --- Inputs and the reference output (stdlib only: no numpy needed) ---
python3 - "$WORK" <<'PY'
import math, random, struct, sys
out = sys.argv[1]
rng = random.Random(7)
KV, Q, T, D = 2, 4, 5, 8          # GQA: query heads 0,1 -> kv 0; 2,3 -> kv 1

def save(name, shape, flat):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % (
        "".join("%d, " % s for s in shape) if len(shape) == 1 else
        ", ".join(str(s) for s in shape))
    pad = 64 - (10 + len(header) + 1) % 64
    header += " " * pad + "\n"
    with open(f"{out}/{name}", "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)))
        f.write(header.encode("latin1"))
        f.write(struct.pack("<%df" % len(flat), *flat))

def f32(x): return struct.unpack("<f", struct.pack("<f", x))[0]
k = [[[f32(rng.uniform(-1, 1)) for _ in range(D)] for _ in range(T)] for _ in range(KV)]
v = [[[f32(rng.uniform(-1, 1)) for _ in range(D)] for _ in range(T)] for _ in range(KV)]
q = [[f32(rng.uniform(-1, 1)) for _ in range(D)] for _ in range(Q)]
save("k.npy", [KV, T, D], [x for h in k for t in h for x in t])
save("v.npy", [KV, T, D], [x for h in v for t in h for x in t])
save("q.npy", [Q, 1, D], [x for h in q for x in h])
scale = 1 / math.sqrt(D)
ref = []
for h in range(Q):
    g = h // (Q // KV)
    s = [scale * sum(a * b for a, b in zip(q[h], k[g][t])) for t in range(T)]
    m = max(s)
    w = [math.exp(x - m) for x in s]
    z = sum(w)
    ref += [sum(w[t] * v[g][t][j] for t in range(T)) / z for j in range(D)]
with open(f"{out}/ref.txt", "w") as f:
    f.write(" ".join(repr(x) for x in ref))
PY

compare_output() {  # compare_output FILE.npy
  python3 - "$1" "$WORK/ref.txt" <<'PY'
import ast, struct, sys
raw = open(sys.argv[1], "rb").read()
assert raw[:6] == b"\x93NUMPY", "not an .npy file"
hlen = struct.unpack("<H", raw[8:10])[0]
hdr = ast.literal_eval(raw[10:10 + hlen].decode("latin1"))
assert hdr["descr"] == "<f4" and tuple(hdr["shape"]) == (4, 1, 8), hdr
data = struct.unpack("<32f", raw[10 + hlen:10 + hlen + 128])
ref = [float(x) for x in open(sys.argv[2]).read().split()]
err = max(abs(a - b) for a, b in zip(data, ref))
print(f"smoke: attend output [4, 1, 8], max abs error vs float64 reference {err:.3g}")
sys.exit(0 if err <= 1e-5 else 1)
PY
}

# Without systemd, podman cannot schedule the periodic HEALTHCHECK timer and
# logs "unable to get systemd connection"; `podman healthcheck run` below
# runs the same check on demand.
start_container() {
  cid="$(podman "${RUN_FLAGS[@]}" run -d --name "$NAME" "${CONTAINER_FLAGS[@]}" \
    -p 127.0.0.1::50051 -p 127.0.0.1::9464 -v "$VOLUME:/data" "$IMAGE")" ||
    fail "podman run failed"
  local i status
  for i in $(seq 1 60); do
    if podman healthcheck run "$cid" >/dev/null 2>&1; then
      log "healthy after ${i}s (kvsketch health via HEALTHCHECK)"
      return 0
    fi
    status="$(podman inspect --format '{{.State.Status}}' "$cid" 2>/dev/null || echo gone)"
    [[ "$status" == running ]] || fail "container $status before it was healthy"
    sleep 1
  done
  fail "not healthy after 60 s"
}

kv() { podman exec "$cid" kvsketch "$@"; }

podman volume create "$VOLUME" >/dev/null
log "image $IMAGE; starting container $NAME"
start_container
metrics_port="$(podman port "$cid" 9464/tcp | head -n1 | sed 's/.*://')"
grpc_port="$(podman port "$cid" 50051/tcp | head -n1 | sed 's/.*://')"
log "gRPC published on 127.0.0.1:$grpc_port, metrics on 127.0.0.1:$metrics_port"

# Non-root: the image's configured user, and the uid the server (pid 1 of
# the container) actually runs with.
image_user="$(podman image inspect --format '{{.Config.User}}' "$IMAGE")"
server_uid="$(podman exec "$cid" sh -c 'awk "/^Uid:/ {print \$2}" /proc/1/status')"
exec_uid="$(podman exec "$cid" id -u)"
log "image USER '$image_user'; server process uid $server_uid; exec uid $exec_uid"
[[ -n "$image_user" && "$image_user" != root && "$image_user" != 0 ]] ||
  fail "the image does not set a non-root USER"
[[ "$server_uid" =~ ^[0-9]+$ && "$server_uid" != 0 ]] ||
  fail "the server runs as uid '$server_uid'"

podman exec "$cid" mkdir -p /tmp/smoke
for f in k.npy v.npy q.npy; do podman cp "$WORK/$f" "$cid:/tmp/smoke/$f"; done

kv create --id smoke-1 --layers 2 --kv-heads 2 --query-heads 4 --head-dim 8 \
  --spec exact || fail "create"
kv append --session smoke-1 --layer 0 --keys /tmp/smoke/k.npy \
  --values /tmp/smoke/v.npy || fail "append"
kv attend --session smoke-1 --layer 0 --queries /tmp/smoke/q.npy \
  --out /tmp/smoke/out.npy || fail "attend"
podman cp "$cid:/tmp/smoke/out.npy" "$WORK/out.npy"
compare_output "$WORK/out.npy" || fail "attend output differs from the reference"

kv export --session smoke-1 --out /tmp/smoke/snap.bin || fail "export"
kv delete smoke-1 || fail "delete"
if kv get smoke-1 >/dev/null 2>&1; then fail "session still there after delete"; fi
kv import --in /tmp/smoke/snap.bin || fail "import"
kv get smoke-1 | tee "$WORK/get.txt"
grep -Eq '^tokens_per_layer: +5 0$' "$WORK/get.txt" ||
  fail "imported session does not have 5 tokens in layer 0"
log "export/delete/import round trip kept the session"

curl -fsS "http://127.0.0.1:$metrics_port/metrics" >"$WORK/metrics.txt" ||
  fail "GET /metrics"
grep -E '^kvsketch_(sessions|sessions_created_total|tokens_appended_total|queries_total)[{ ]' \
  "$WORK/metrics.txt" | tee "$WORK/metrics.kv"
grep -Eq '^kvsketch_sessions 1$' "$WORK/metrics.kv" ||
  fail "kvsketch_sessions is not 1"
grep -Eq '^kvsketch_tokens_appended_total\{[^}]*approximator="exact"[^}]*\} 5$' \
  "$WORK/metrics.kv" || fail "kvsketch_tokens_appended_total{exact} is not 5"
grep -Eq '^kvsketch_queries_total\{[^}]*approximator="exact"[^}]*\} 4$' \
  "$WORK/metrics.kv" || fail "kvsketch_queries_total{exact} is not 4 (4 heads x 1)"
if command -v promtool >/dev/null; then
  promtool check metrics <"$WORK/metrics.txt" || fail "promtool check metrics"
  log "promtool check metrics: ok"
fi
log "/metrics: $(grep -c '^kvsketch_' "$WORK/metrics.txt") kvsketch_ samples"

if [[ -x "$HOST_BUILD/client/kvsketch-loadgen" ]]; then
  "$HOST_BUILD/client/kvsketch-loadgen" --server "127.0.0.1:$grpc_port" \
    --sessions 2 --layers 2 --kv-heads 2 --query-heads 4 --head-dim 32 \
    --prefill 32 --duration 2s --warmup 0s --quiet --json >"$WORK/loadgen.json" ||
    fail "host kvsketch-loadgen against the container: $(cat "$WORK/loadgen.json")"
  python3 - "$WORK/loadgen.json" <<'PY' || fail "loadgen report"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["steps"] > 0 and not r["errors"], r
print(f"smoke: host loadgen via the published port: {r['steps']} Decode steps, "
      f"{r['steps_per_second']:.0f} steps/s, p99 {r['latency_ms']['p99']:.2f} ms, 0 errors")
PY
else
  log "no host build at $HOST_BUILD: skipping the host loadgen run"
fi

t0=$(date +%s)
podman stop -t 30 "$cid" >/dev/null
code="$(podman inspect --format '{{.State.ExitCode}}' "$cid")"
log "SIGTERM -> exited $code after $(($(date +%s) - t0)) s"
[[ "$code" == 0 ]] || fail "server exit code $code after SIGTERM"
podman logs --tail 5 "$cid" 2>&1 | sed 's/^/  | /'
podman rm "$cid" >/dev/null

log "restarting on the same volume"
start_container
kv get smoke-1 | grep -E '^tokens_per_layer: +5 0$' ||
  fail "session smoke-1 was not restored from /data"
log "session restored from the /data snapshot"
podman stop -t 30 "$cid" >/dev/null

size="$(podman image inspect --format '{{.Size}}' "$IMAGE")"
log "image $IMAGE size $size bytes ($((size / 1024 / 1024)) MiB)"
log "PASS"
