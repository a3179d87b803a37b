#!/usr/bin/env bash
# End-to-end test of session-affine scale-out (issue #7), all on loopback:
#
#   1. starts N kvsketch-server replicas (default 3) and a proxy in front of
#      them: nginx running deploy/nginx/nginx.conf (`hash $http_x_session_id
#      consistent`), or with --proxy haproxy, HAProxy running
#      deploy/haproxy/haproxy.cfg (`balance hdr(x-session-id)`); only the
#      listen address and the replica list are rewritten;
#   2. runs kvsketch-loadgen through the proxy with one session per Decode
#      stream (a stream is routed by one x-session-id, so it must only carry
#      sessions of one replica) and --keep-sessions;
#   3. checks, on each replica directly (ListSessions and /metrics):
#      - every session lives on exactly one replica, with prefill + its own
#        decode steps tokens in every layer; every replica holds some;
#      - per replica: sessions created == sessions listed, tokens appended ==
#        the sum of its sessions' tokens, no RPC errors at all (a call routed
#        to the wrong replica would have failed with NOT_FOUND);
#      - summed over replicas: steps, layer-tokens and query rows equal the
#        loadgen's own totals;
#      - the proxy's access log: each session id reached one upstream only;
#   4. drains the last replica the way docs/deployment.md says: removes it
#      from the proxy's list, reloads the proxy, runs deploy/drain-replica.sh
#      (`kvsketch migrate` of each session to the proxy address: the import
#      carries x-session-id, so the proxy picks the new home), and checks that every session is
#      again reachable through the proxy with the same tokens, and that the
#      drained replica is empty.
# Exits non-zero on any mismatch; the last line is "scale-out: PASS ...".
#
# Usage: deploy/scale-out-test.sh [--build-dir DIR] [--replicas N]
#          [--sessions N] [--duration D] [--proxy nginx|haproxy] [--keep]
# DIR (default build/release) must hold server/kvsketch-server,
# client/kvsketch and client/kvsketch-loadgen (scripts/build.sh). Installs
# nginx (or haproxy) with apt-get when it is missing.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="$REPO/build/release"
REPLICAS=3
SESSIONS=24
DURATION=3s
PROXY=nginx
KEEP=0
while (($#)); do
  case "$1" in
    --build-dir) BUILD_DIR="$2"; shift ;;
    --build-dir=*) BUILD_DIR="${1#*=}" ;;
    --replicas) REPLICAS="$2"; shift ;;
    --replicas=*) REPLICAS="${1#*=}" ;;
    --sessions) SESSIONS="$2"; shift ;;
    --sessions=*) SESSIONS="${1#*=}" ;;
    --duration) DURATION="$2"; shift ;;
    --duration=*) DURATION="${1#*=}" ;;
    --proxy) PROXY="$2"; shift ;;
    --proxy=*) PROXY="${1#*=}" ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    *) echo "scale-out-test.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
[[ "$BUILD_DIR" = /* ]] || BUILD_DIR="$PWD/$BUILD_DIR"
[[ "$REPLICAS" =~ ^[0-9]+$ ]] && ((REPLICAS >= 2)) ||
  { echo "scale-out-test.sh: --replicas must be >= 2" >&2; exit 2; }
[[ "$SESSIONS" =~ ^[0-9]+$ ]] && ((SESSIONS >= REPLICAS)) ||
  { echo "scale-out-test.sh: --sessions must be >= --replicas" >&2; exit 2; }
[[ "$PROXY" == nginx || "$PROXY" == haproxy ]] ||
  { echo "scale-out-test.sh: --proxy must be nginx or haproxy" >&2; exit 2; }

SERVER="$BUILD_DIR/server/kvsketch-server"
CLI="$BUILD_DIR/client/kvsketch"
LOADGEN="$BUILD_DIR/client/kvsketch-loadgen"
PY=/usr/bin/python3
for b in "$SERVER" "$CLI" "$LOADGEN"; do
  [[ -x "$b" ]] || {
    echo "scale-out-test.sh: $b not found; build it first" \
      "(scripts/build.sh --dir ${BUILD_DIR#"$REPO/"})" >&2
    exit 2
  }
done

log() { echo "scale-out: $*"; }
fail() { echo "scale-out: FAIL: $*" >&2; exit 1; }

if ! command -v "$PROXY" >/dev/null 2>&1 && [[ ! -x "/usr/sbin/$PROXY" ]]; then
  log "installing $PROXY (apt-get)"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$PROXY" >/dev/null ||
    { $SUDO apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$PROXY" >/dev/null; }
fi
PROXY_BIN="$(command -v "$PROXY" || echo "/usr/sbin/$PROXY")"

WORK="$(mktemp -d /tmp/kvsketch-scale-out.XXXXXX)"
mkdir -p "$WORK/logs" "$WORK/tmp"
PIDS=()
PROXY_PID=""
cleanup() {
  local pid
  [[ -n "$PROXY_PID" ]] && kill "$PROXY_PID" 2>/dev/null || true
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}" $PROXY_PID; do wait "$pid" 2>/dev/null || true; done
  if ((KEEP)); then echo "scale-out: logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# Free loopback ports: 2 per replica (gRPC, metrics) and 1 for the proxy.
read -r -a PORTS <<<"$("$PY" - $((2 * REPLICAS + 1)) <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)"
PROXY_ADDR="127.0.0.1:${PORTS[0]}"
GRPC=(); METRICS=()
for ((i = 0; i < REPLICAS; i++)); do
  GRPC+=("127.0.0.1:${PORTS[1 + 2 * i]}")
  METRICS+=("127.0.0.1:${PORTS[2 + 2 * i]}")
done

wait_healthy() {  # wait_healthy ADDR NAME
  local i
  for i in $(seq 1 100); do
    if "$CLI" health --server "$1" --timeout 1s >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  fail "$2 at $1 not SERVING after 10 s"
}

for ((i = 0; i < REPLICAS; i++)); do
  "$SERVER" --listen="${GRPC[i]}" --metrics_listen="${METRICS[i]}" \
    --worker_threads=1 --session_idle_ttl=0 >"$WORK/logs/replica-$i.log" 2>&1 &
  PIDS+=($!)
done
for ((i = 0; i < REPLICAS; i++)); do wait_healthy "${GRPC[i]}" "replica $i"; done
log "$REPLICAS replicas serving: ${GRPC[*]}"

# Writes the proxy configuration for replicas 0 .. $1-1 from the shipped
# file: only the listen address and the replica list change.
render_proxy_config() {
  local n="$1" i
  if [[ "$PROXY" == nginx ]]; then
    {
      for ((i = 0; i < n; i++)); do
        echo "    server ${GRPC[i]} max_fails=0;"
      done
    } >"$WORK/replicas.txt"
    "$PY" - "$REPO/deploy/nginx/nginx.conf" "$WORK/replicas.txt" "$PROXY_ADDR" \
      >"$WORK/proxy.conf" <<'PY'
import re, sys
conf = open(sys.argv[1]).read()
replicas = open(sys.argv[2]).read()
conf, n = re.subn(r"(# BEGIN replicas\n).*?(\s*# END replicas)",
                  lambda m: m.group(1) + replicas.rstrip("\n") + m.group(2),
                  conf, flags=re.S)
assert n == 1, "nginx.conf: no BEGIN/END replicas block"
conf, n = re.subn(r"listen \S+ http2;", f"listen {sys.argv[3]} http2;", conf)
assert n == 1, "nginx.conf: no 'listen ... http2;' line"
sys.stdout.write(conf)
PY
  else
    {
      for ((i = 0; i < n; i++)); do
        echo "  server replica-$i ${GRPC[i]} proto h2"
      done
    } >"$WORK/replicas.txt"
    "$PY" - "$REPO/deploy/haproxy/haproxy.cfg" "$WORK/replicas.txt" \
      "$PROXY_ADDR" >"$WORK/proxy.conf" <<'PY'
import re, sys
conf = open(sys.argv[1]).read()
replicas = open(sys.argv[2]).read()
conf, n = re.subn(r"(# BEGIN replicas\n).*?(\s*# END replicas)",
                  lambda m: m.group(1) + replicas.rstrip("\n") + m.group(2),
                  conf, flags=re.S)
assert n == 1, "haproxy.cfg: no BEGIN/END replicas block"
conf, n = re.subn(r"bind \S+ proto h2", f"bind {sys.argv[3]} proto h2", conf)
assert n == 1, "haproxy.cfg: no 'bind ... proto h2' line"
sys.stdout.write(conf)
PY
  fi
}

start_proxy() {
  if [[ "$PROXY" == nginx ]]; then
    "$PROXY_BIN" -t -q -p "$WORK/" -c "$WORK/proxy.conf" -e "$WORK/logs/error.log" ||
      fail "nginx -t rejected the configuration"
    "$PROXY_BIN" -p "$WORK/" -c "$WORK/proxy.conf" -e "$WORK/logs/error.log" \
      -g 'daemon off;' &
  else
    "$PROXY_BIN" -c -q -f "$WORK/proxy.conf" ||
      fail "haproxy -c rejected the configuration"
    # -W: master-worker, so SIGUSR2 reloads the configuration.
    "$PROXY_BIN" -W -db -f "$WORK/proxy.conf" >"$WORK/logs/access.log" 2>&1 &
  fi
  PROXY_PID=$!
}

reload_proxy() {
  if [[ "$PROXY" == nginx ]]; then
    "$PROXY_BIN" -t -q -p "$WORK/" -c "$WORK/proxy.conf" -e "$WORK/logs/error.log" ||
      fail "nginx -t rejected the drained configuration"
    kill -HUP "$PROXY_PID"
  else
    "$PROXY_BIN" -c -q -f "$WORK/proxy.conf" ||
      fail "haproxy -c rejected the drained configuration"
    kill -USR2 "$PROXY_PID"
  fi
  sleep 1  # new workers take over; old ones finish their connections
}

render_proxy_config "$REPLICAS"
start_proxy
wait_healthy "$PROXY_ADDR" "$PROXY"
log "$PROXY ($("$PROXY_BIN" -v 2>&1 | head -n1)) on $PROXY_ADDR"

# --- Load through the proxy ---
LAYERS=2 KV_HEADS=2 Q_HEADS=4 PREFILL=16
PREFIX="so-$$-"
log "loadgen: $SESSIONS sessions, one per Decode stream, $DURATION, through $PROXY"
"$LOADGEN" --server "$PROXY_ADDR" --sessions "$SESSIONS" --sessions-per-stream 1 \
  --layers "$LAYERS" --kv-heads "$KV_HEADS" --query-heads "$Q_HEADS" \
  --head-dim 32 --prefill "$PREFILL" --duration "$DURATION" --warmup 0s \
  --session-prefix "$PREFIX" --keep-sessions --quiet --json >"$WORK/loadgen.json" ||
  { cat "$WORK/loadgen.json" >&2; fail "kvsketch-loadgen failed (errors above)"; }

# The proxy logs a call when it has finished it, which can trail the
# client's view by a moment: wait (up to 5 s) for every Decode stream's line.
for _ in $(seq 1 50); do
  (($(grep -c "$PREFIX.*/Decode" "$WORK/logs/access.log" || true) >= SESSIONS)) && break
  sleep 0.1
done
for ((i = 0; i < REPLICAS; i++)); do
  "$CLI" list --server "${GRPC[i]}" --json >"$WORK/list-$i.json" ||
    fail "ListSessions on replica $i"
  curl -fsS "http://${METRICS[i]}/metrics" >"$WORK/metrics-$i.txt" ||
    fail "GET /metrics of replica $i"
done

# Every check on the collected files; prints one line per replica.
check_placement() {  # check_placement N_REPLICAS PHASE
  "$PY" - "$WORK" "$1" "$SESSIONS" "$PREFIX" "$LAYERS" "$Q_HEADS" "$PREFILL" \
    "$2" "$PROXY" <<'PY'
import json, re, sys
work, n, sessions, prefix, layers, qh, prefill, phase, proxy = sys.argv[1:]
n, sessions, layers, qh, prefill = map(int, (n, sessions, layers, qh, prefill))
errors = []
lg = json.load(open(f"{work}/loadgen.json"))

def metric(text, name, labels=None):
    total, seen = 0.0, False
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        if labels and not all(f'{k}="{v}"' in (m.group(2) or "") for k, v in labels.items()):
            continue
        total += float(m.group(3)); seen = True
    return total if seen else 0.0

home = {}
sum_tokens = sum_steps = 0
for i in range(n):
    listing = json.load(open(f"{work}/list-{i}.json")).get("sessions", [])
    text = open(f"{work}/metrics-{i}.txt").read()
    mine = [s for s in listing if s["session_id"].startswith(prefix)]
    if len(mine) != len(listing):
        errors.append(f"replica {i}: sessions not made by this run")
    tokens = 0
    for s in mine:
        sid = s["session_id"]
        if sid in home:
            errors.append(f"session {sid} on replicas {home[sid]} and {i}")
        home[sid] = i
        per_layer = [int(t) for t in s.get("tokens_per_layer", [])]
        if len(per_layer) != layers or len(set(per_layer)) != 1:
            errors.append(f"{sid}: tokens per layer {per_layer}")
            continue
        steps = per_layer[0] - prefill
        if steps < 1:
            errors.append(f"{sid}: no decode step reached it ({per_layer})")
        sum_steps += steps
        tokens += sum(per_layer)
    sum_tokens += tokens
    m_tokens = metric(text, "kvsketch_tokens_appended_total")
    m_sessions = metric(text, "kvsketch_sessions")
    m_created = metric(text, "kvsketch_sessions_created_total")
    m_errors = metric(text, "kvsketch_rpc_errors_total")
    if m_sessions != len(mine):
        errors.append(f"replica {i}: kvsketch_sessions {m_sessions:g} != {len(mine)} listed")
    if phase == "load":
        if not mine:
            errors.append(f"replica {i}: no session was placed on it")
        if m_created != len(mine):
            errors.append(f"replica {i}: {m_created:g} created here but {len(mine)} live here")
        if m_tokens != tokens:
            errors.append(f"replica {i}: kvsketch_tokens_appended_total {m_tokens:g} != "
                          f"{tokens} layer-tokens held by its sessions")
    if m_errors != 0:
        errors.append(f"replica {i}: kvsketch_rpc_errors_total {m_errors:g} (expected 0)")
    print(f"scale-out: [{phase}] replica {i}: {len(mine)} sessions, {tokens} layer-tokens, "
          f"metrics: sessions {m_sessions:g}, created {m_created:g}, tokens "
          f"{m_tokens:g}, errors {m_errors:g}")

missing = [f"{prefix}{k}" for k in range(sessions) if f"{prefix}{k}" not in home]
if missing:
    errors.append(f"sessions on no replica: {missing}")
if phase == "load":
    if lg["steps"] != sum_steps:
        errors.append(f"loadgen answered {lg['steps']} steps, replicas hold {sum_steps}")
    want_tokens = layers * (sessions * prefill + lg["steps"])
    if sum_tokens != want_tokens:
        errors.append(f"replicas hold {sum_tokens} layer-tokens, loadgen sent {want_tokens}")
    if lg["queries"] != lg["steps"] * layers * qh:
        errors.append(f"loadgen queries {lg['queries']} != steps x layers x heads")
    all_metrics = [open(f"{work}/metrics-{i}.txt").read() for i in range(n)]
    q = sum(metric(t, "kvsketch_queries_total") for t in all_metrics)
    if q != lg["queries"]:
        errors.append(f"replicas answered {q:g} query rows, loadgen counted {lg['queries']}")
    steps_m = sum(metric(t, "kvsketch_decode_steps_total") for t in all_metrics)
    if steps_m != lg["steps"]:
        errors.append(f"replicas answered {steps_m:g} Decode steps, loadgen {lg['steps']}")
    print(f"scale-out: [load] totals: loadgen {lg['steps']} steps / {lg['queries']} query rows "
          f"({lg['steps_per_second']:.0f} steps/s); replicas {sum_steps} steps, "
          f"{sum_tokens} layer-tokens, {q:g} query rows, {steps_m:g} Decode steps")
    # The proxy's log: every session id went to one upstream only.
    upstreams = {}
    for line in open(f"{work}/logs/access.log", errors="replace"):
        if proxy == "nginx":
            m = re.search(r'sid="([^"]*)" upstream=(\S+)', line)
        else:
            m = re.search(r'sid=(\S+) upstream=(\S+)', line)
        if m and m.group(1).startswith(prefix):
            upstreams.setdefault(m.group(1), set()).add(m.group(2))
    split = {s: u for s, u in upstreams.items() if len(u) != 1}
    if split:
        errors.append(f"{proxy} sent one session to several replicas: {split}")
    if len(upstreams) != sessions:
        errors.append(f"{proxy} log names {len(upstreams)} of {sessions} sessions")
    calls = sum(1 for line in open(f"{work}/logs/access.log", errors="replace")
                if prefix in line)
    print(f"scale-out: [load] {proxy} log: {calls} calls of {len(upstreams)} sessions, "
          f"each session on one upstream")
json.dump(home, open(f"{work}/home-{phase}.json", "w"))
for e in errors:
    print("scale-out: FAIL: " + e, file=sys.stderr)
sys.exit(1 if errors else 0)
PY
}
check_placement "$REPLICAS" load || fail "placement after the load run (above)"
# Tokens per layer of every session, to compare after the drain.
"$PY" - "$WORK" "$REPLICAS" >"$WORK/before-tokens.txt" <<'PY'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    for s in json.load(open(f"{work}/list-{i}.json")).get("sessions", []):
        print(s["session_id"], " ".join(str(t) for t in s["tokens_per_layer"]))
PY

# --- Drain the last replica (docs/deployment.md) ---
LAST=$((REPLICAS - 1))
render_proxy_config "$LAST"
reload_proxy
"$REPO/deploy/drain-replica.sh" --from "${GRPC[LAST]}" --to "$PROXY_ADDR" \
  --cli "$CLI" >"$WORK/drain.log" 2>&1 || { cat "$WORK/drain.log" >&2; fail "drain-replica.sh"; }
sed -n '1p;$p' "$WORK/drain.log" | sed 's/^/scale-out: /'
for ((i = 0; i < REPLICAS; i++)); do
  "$CLI" list --server "${GRPC[i]}" --json >"$WORK/list-$i.json" || fail "list $i"
  curl -fsS "http://${METRICS[i]}/metrics" >"$WORK/metrics-$i.txt" || fail "metrics $i"
done
check_placement "$REPLICAS" drained || fail "placement after the drain (above)"
"$PY" - "$WORK" "$LAST" <<'PY' || fail "the drained replica still holds sessions"
import json, sys
home = json.load(open(f"{sys.argv[1]}/home-drained.json"))
sys.exit(1 if any(r == int(sys.argv[2]) for r in home.values()) else 0)
PY
# Every session answers through the proxy, with the tokens it had before:
# the moved ones at their new homes, and the others where they were, which
# shows the hashing is consistent (removing a replica remapped only its ids).
bad=0
while read -r id want; do
  got="$("$CLI" get "$id" --server "$PROXY_ADDR" --json |
    "$PY" -c 'import json,sys; print(" ".join(json.load(sys.stdin)["tokens_per_layer"]))')" ||
    { echo "scale-out: FAIL: $id not reachable through $PROXY" >&2; bad=1; continue; }
  [[ "$got" == "$want" ]] || { echo "scale-out: FAIL: $id tokens '$got' != '$want'" >&2; bad=1; }
done <"$WORK/before-tokens.txt"
((bad == 0)) || fail "sessions not reachable through the proxy after the drain"
log "all $SESSIONS sessions answer through $PROXY after the drain, tokens unchanged"
log "PASS ($REPLICAS replicas, $SESSIONS sessions, $PROXY, drain of replica $LAST)"
