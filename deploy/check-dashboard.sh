#!/usr/bin/env bash
# Checks the observability set-up against a live kvsketch server:
#
#   1. `promtool check config` (prometheus.yml with its rule files),
#      `promtool check rules`, and `promtool test rules` (the alert unit
#      tests in deploy/prometheus/rules_test.yml);
#   2. every query of the Grafana dashboard parses as PromQL (each is fed
#      to `promtool check rules` as a recording rule, Grafana's variables
#      replaced by plain values);
#   3. starts kvsketch-server from a build directory, drives a little
#      traffic through the CLI and kvsketch-loadgen (sessions of two
#      approximators, Append, Attend, Decode, Export, Delete, and failing
#      calls: NOT_FOUND, INVALID_ARGUMENT, ALREADY_EXISTS), fetches the live
#      /metrics and runs `promtool check metrics` on it;
#   4. every metric name the dashboard and the rules query exists in that
#      live /metrics (recording rules must be defined in the rules file;
#      `up` is Prometheus's own), and every label they filter or group by
#      exists on the metrics they query;
#   5. a real Prometheus (the Debian package's server, started before the
#      traffic) scrapes that server with deploy/prometheus/prometheus.yml
#      and the rules (intervals shortened to 1 s, target rewritten): every
#      rule is loaded and healthy, and every dashboard query and recording
#      rule returns data through the HTTP API (Grafana's variables replaced).
# The last line is "check-dashboard: PASS ..." (exit 0) or a FAIL (exit 1).
#
# Usage: deploy/check-dashboard.sh [--build-dir DIR]   (default build/release)
# Needs promtool and prometheus (apt-get install prometheus; installed here
# when missing). Grafana itself is not run (it is not a Debian package).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="$REPO/build/release"
while (($#)); do
  case "$1" in
    --build-dir) BUILD_DIR="$2"; shift ;;
    --build-dir=*) BUILD_DIR="${1#*=}" ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "check-dashboard.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
[[ "$BUILD_DIR" = /* ]] || BUILD_DIR="$PWD/$BUILD_DIR"
SERVER="$BUILD_DIR/server/kvsketch-server"
CLI="$BUILD_DIR/client/kvsketch"
LOADGEN="$BUILD_DIR/client/kvsketch-loadgen"
PY=/usr/bin/python3
DASHBOARD="$REPO/deploy/grafana/dashboards/kvsketch.json"
RULES="$REPO/deploy/prometheus/rules/kvsketch-rules.yml"

log() { echo "check-dashboard: $*"; }
fail() { echo "check-dashboard: FAIL: $*" >&2; exit 1; }

for b in "$SERVER" "$CLI" "$LOADGEN"; do
  [[ -x "$b" ]] || fail "$b not found; build it first (scripts/build.sh --dir ${BUILD_DIR#"$REPO/"})"
done
if ! command -v promtool >/dev/null; then
  log "installing promtool (apt-get install prometheus)"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus >/dev/null
fi

WORK="$(mktemp -d /tmp/kvsketch-check-dashboard.XXXXXX)"
SERVER_PID=""
PROM_PID=""
cleanup() {
  local pid
  for pid in $PROM_PID $SERVER_PID; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- 1. Prometheus configuration and rules ---
promtool check config "$REPO/deploy/prometheus/prometheus.yml" >"$WORK/promtool.log" 2>&1 ||
  { cat "$WORK/promtool.log" >&2; fail "promtool check config"; }
promtool check rules "$RULES" >>"$WORK/promtool.log" 2>&1 ||
  { cat "$WORK/promtool.log" >&2; fail "promtool check rules"; }
(cd "$REPO/deploy/prometheus" && promtool test rules rules_test.yml) >>"$WORK/promtool.log" 2>&1 ||
  { cat "$WORK/promtool.log" >&2; fail "promtool test rules"; }
log "promtool check config, check rules ($(grep -o '[0-9]* rules found' "$WORK/promtool.log" | head -n1)), test rules: ok"

# --- 2. The dashboard's queries parse ---
"$PY" - "$DASHBOARD" >"$WORK/dashboard-rules.yml" <<'PY'
import json, sys
dash = json.load(open(sys.argv[1]))
exprs = []
def walk(panels):
    for p in panels:
        for t in p.get("targets", []):
            if t.get("expr"):
                exprs.append((p["title"], t["expr"]))
        walk(p.get("panels", []))
walk(dash["panels"])
print("groups:\n  - name: dashboard\n    rules:")
for i, (title, e) in enumerate(exprs):
    # Grafana's variables -> values Prometheus accepts.
    e = (e.replace("$__rate_interval", "5m").replace("$__interval", "1m")
          .replace("$job", ".*").replace("$instance", ".*"))
    print(f"      - record: dashboard:q{i}")
    print("        expr: " + json.dumps(e))
PY
promtool check rules "$WORK/dashboard-rules.yml" >"$WORK/dash-check.log" 2>&1 ||
  { cat "$WORK/dash-check.log" >&2; fail "a dashboard query is not valid PromQL (above)"; }
log "dashboard: $(grep -c 'record:' "$WORK/dashboard-rules.yml") queries parse as PromQL"

# --- 3. A live server with some traffic, errors included ---
read -r GRPC_PORT METRICS_PORT PROM_PORT <<<"$("$PY" -c '
import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')"
ADDR="127.0.0.1:$GRPC_PORT"
# --max_sessions=5: the sixth session below is refused, so a server-side
# code (RESOURCE_EXHAUSTED) is among the errors too.
"$SERVER" --listen="$ADDR" --metrics_listen="127.0.0.1:$METRICS_PORT" \
  --worker_threads=1 --memory_budget=256M --max_sessions=5 >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

# Prometheus from the shipped configuration, scraping this server every
# second (started now, so that it sees the traffic as it happens).
mkdir -p "$WORK/prom"
sed -e 's/15s/1s/g' -e "s#\"kvsketch:9464\"#\"127.0.0.1:$METRICS_PORT\"#" \
  -e "s#\"localhost:9090\"#\"127.0.0.1:$PROM_PORT\"#" \
  -e "s#rules/kvsketch-rules.yml#$WORK/prom/rules.yml#" \
  "$REPO/deploy/prometheus/prometheus.yml" >"$WORK/prom/prometheus.yml"
sed -e 's/interval: 30s/interval: 1s/' "$RULES" >"$WORK/prom/rules.yml"
grep -q "127.0.0.1:$METRICS_PORT" "$WORK/prom/prometheus.yml" ||
  fail "prometheus.yml: no \"kvsketch:9464\" target to rewrite"
prometheus --config.file="$WORK/prom/prometheus.yml" \
  --storage.tsdb.path="$WORK/prom/data" --web.listen-address="127.0.0.1:$PROM_PORT" \
  --log.level=warn >"$WORK/prom/log" 2>&1 &
PROM_PID=$!
for i in $(seq 1 100); do
  "$CLI" health --server "$ADDR" --timeout 1s >/dev/null 2>&1 && break
  sleep 0.1
  ((i < 100)) || fail "server not SERVING after 10 s: $(tail -n3 "$WORK/server.log")"
done
kv() { "$CLI" "$@" --server "$ADDR"; }
# Decode traffic of two approximators (sessions kept for the state gauges).
for spec in exact topk; do
  "$LOADGEN" --server "$ADDR" --sessions 2 --layers 2 --kv-heads 2 --query-heads 4 \
    --head-dim 32 --prefill 64 --duration 1s --warmup 0s --spec "$spec" \
    --session-prefix "dash-$spec-" --keep-sessions --quiet >"$WORK/loadgen-$spec.txt" ||
    fail "kvsketch-loadgen --spec $spec: $(cat "$WORK/loadgen-$spec.txt")"
done
kv get dash-exact-0 >/dev/null || fail "GetSession"
kv export --session dash-exact-1 --out "$WORK/snap.kvs" >/dev/null || fail "ExportSession"
kv delete dash-exact-1 >/dev/null || fail "DeleteSession"
kv import --in "$WORK/snap.kvs" >/dev/null || fail "ImportSession"
# Failing calls, so kvsketch_rpc_errors_total has series.
expect_code() {  # expect_code CODE command...
  local code="$1"; shift
  if out="$("$@" --server "$ADDR" 2>&1)"; then fail "'$*' succeeded; expected $code"; fi
  grep -q "$code" <<<"$out" || fail "'$*': expected $code, got: $out"
}
expect_code NOT_FOUND "$CLI" get no-such-session
expect_code ALREADY_EXISTS "$CLI" import --in "$WORK/snap.kvs"
expect_code INVALID_ARGUMENT "$CLI" create --layers 1 --kv-heads 3 --query-heads 4 --head-dim 8
kv create --id dash-fifth --layers 1 --kv-heads 1 --head-dim 8 >/dev/null || fail "CreateSession"
expect_code RESOURCE_EXHAUSTED "$CLI" create --id dash-sixth --layers 1 --kv-heads 1 --head-dim 8

curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" >"$WORK/metrics.txt" || fail "GET /metrics"
promtool check metrics <"$WORK/metrics.txt" >"$WORK/lint.log" 2>&1 ||
  { cat "$WORK/lint.log" >&2; fail "promtool check metrics"; }
log "live /metrics: $(grep -vc '^#' "$WORK/metrics.txt") samples, promtool check metrics: ok"

# --- 4. Every name and label the dashboard and the rules use is live ---
"$PY" - "$DASHBOARD" "$RULES" "$WORK/metrics.txt" <<'PY'
import json, re, sys
dash_file, rules_file, metrics_file = sys.argv[1:]

# Live series: name -> set of label names.
live = {}
for line in open(metrics_file):
    m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? ", line)
    if not m:
        continue
    labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(3) or ""))
    live.setdefault(m.group(1), set()).update(labels)

# Rule expressions and the names they record (a tiny YAML reader for the
# file's own layout, so no PyYAML is needed).
rules_text = open(rules_file).read()
recorded = set(re.findall(r"^\s*- record: (\S+)", rules_text, re.M))
rule_exprs = []
for m in re.finditer(r"^(\s*)expr: (\|\n((?:\1  .*\n|\s*\n)+)|(.*)\n)", rules_text, re.M):
    rule_exprs.append(("rules", m.group(3) if m.group(3) else m.group(4)))

dash = json.load(open(dash_file))
dash_exprs = []
def walk(panels):
    for p in panels:
        for t in p.get("targets", []):
            if t.get("expr"):
                dash_exprs.append((f"dashboard panel '{p['title']}'", t["expr"]))
        walk(p.get("panels", []))
walk(dash["panels"])
for v in dash.get("templating", {}).get("list", []):
    q = v.get("query")
    if isinstance(q, dict) and q.get("query"):
        dash_exprs.append((f"dashboard variable ${v['name']}", q["query"]))

# Label names Prometheus attaches at scrape time, and histogram's `le`.
target_labels = {"job", "instance", "le"}
prom_own = {"up": {"job", "instance"}}
KEYWORDS = {"sum", "rate", "by", "without", "max", "min", "avg", "count",
            "histogram_quantile", "increase", "label_values", "on", "ignoring",
            "bool", "and", "or", "unless", "offset", "irate", "topk"}

errors, names_checked = [], set()
for where, expr in rule_exprs + dash_exprs:
    # Strip strings (label values, regexes) before looking for identifiers.
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    used = []
    for m in re.finditer(r"(?<![\w:$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?", bare):
        name, sel = m.group(1), m.group(2) or ""
        after = bare[m.end():m.end() + 1]
        if name in KEYWORDS or after == "(" or name in target_labels:
            continue
        if re.match(r"^\d", name):
            continue
        used.append((name, set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", sel))))
    # Labels in by (...) / without (...) / on (...) / ignoring (...).
    grouped = set()
    for g in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", bare):
        grouped.update(x.strip() for x in g.split(",") if x.strip())
    metric_labels = set(target_labels)
    for name, sel_labels in used:
        if name.startswith("kvsketch:"):
            if name not in recorded:
                errors.append(f"{where}: recording rule {name} is not defined in the rules file")
            continue
        # Words inside by (...) were matched as identifiers too.
        if name in grouped:
            continue
        names_checked.add(name)
        labels = prom_own.get(name, live.get(name))
        if labels is None:
            errors.append(f"{where}: metric {name} is not in the live /metrics")
            continue
        metric_labels |= labels
        for l in sel_labels - labels - target_labels:
            errors.append(f"{where}: {name} has no label '{l}' (it has {sorted(labels)})")
    recorded_used = any(n.startswith("kvsketch:") for n, _ in used)
    if not recorded_used:
        for l in grouped - metric_labels:
            errors.append(f"{where}: groups by '{l}', which none of its metrics has")

for e in errors:
    print("check-dashboard: FAIL: " + e, file=sys.stderr)
if errors:
    sys.exit(1)
print(f"check-dashboard: {len(dash_exprs)} dashboard queries and {len(rule_exprs)} rule "
      f"expressions use {len(names_checked)} metric names "
      f"({', '.join(sorted(names_checked))}), "
      f"all in the live /metrics with the labels they use; "
      f"{len(recorded)} recording rules defined")
PY

# --- 5. The same through a real Prometheus ---
"$PY" - "$DASHBOARD" "$RULES" "127.0.0.1:$PROM_PORT" "127.0.0.1:$METRICS_PORT" <<'PY' ||
import json, re, sys, time, urllib.parse, urllib.request
dash_file, rules_file, prom, target = sys.argv[1:]

def api(path, **params):
    url = f"http://{prom}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{path}: {body}")
    return body["data"]

# Wait (up to 20 s) until the target is up and every recording rule has been
# evaluated after the traffic; a few scrapes after it make rate() non-zero.
deadline = time.time() + 20
while True:
    try:
        up = api("query", query=f'up{{instance="{target}"}}')["result"]
        if up and up[0]["value"][1] == "1":
            groups = api("rules")["groups"]
            if groups and all(r.get("lastEvaluation", "").startswith("20") and
                              not r["lastEvaluation"].startswith("0001")
                              for g in groups for r in g["rules"]):
                break
    except Exception as e:  # Prometheus still starting
        last = e
    if time.time() > deadline:
        sys.exit(f"check-dashboard: FAIL: Prometheus never scraped {target} and evaluated the rules")
    time.sleep(0.5)
time.sleep(3)

errors = []
groups = api("rules")["groups"]
rules = [r for g in groups for r in g["rules"]]
alerts = [r for r in rules if r["type"] == "alerting"]
for r in rules:
    if r.get("health") != "ok":
        errors.append(f"rule {r['name']}: health {r.get('health')}: {r.get('lastError')}")

# A recording rule may be empty only when the thing it measures did not
# happen here: no Decode entry failed (the CLI cannot send a bad entry).
may_be_empty = {"kvsketch:decode_entry_errors_per_step:rate5m"}
empty = []
for r in rules:
    if r["type"] != "recording":
        continue
    if not api("query", query=r["name"])["result"] and r["name"] not in may_be_empty:
        errors.append(f"recording rule {r['name']} has no data")
    elif r["name"] in may_be_empty:
        empty.append(r["name"])

dash = json.load(open(dash_file))
queries = []
def walk(panels):
    for p in panels:
        for t in p.get("targets", []):
            if t.get("expr"):
                queries.append((p["title"], t.get("legendFormat", ""), t["expr"]))
        walk(p.get("panels", []))
walk(dash["panels"])
with_data = 0
for title, legend, e in queries:
    q = (e.replace("$__rate_interval", "1m").replace("$__interval", "1s")
          .replace("$job", "kvsketch").replace("$instance", ".*"))
    try:
        result = api("query", query=q)["result"]
    except Exception as ex:
        errors.append(f"panel '{title}' ({legend}): query failed: {ex}")
        continue
    if not result:
        errors.append(f"panel '{title}' ({legend}): no data for {q}")
    else:
        with_data += 1
for e in errors:
    print("check-dashboard: FAIL: " + e, file=sys.stderr)
if errors:
    sys.exit(1)
version = api("status/buildinfo")["version"]
print(f"check-dashboard: Prometheus {version} scraping the server: {len(rules)} rules "
      f"loaded and healthy ({len(alerts)} alerts); {with_data}/{len(queries)} dashboard "
      f"queries and {len(rules) - len(alerts) - len(empty)}/{len(rules) - len(alerts)} "
      f"recording rules return data (empty, as nothing failed that way: "
      f"{', '.join(empty) or 'none'})")
PY
  { tail -n 5 "$WORK/prom/log" >&2; fail "the dashboard through Prometheus (above)"; }
log "PASS"
