#!/usr/bin/env bash
# Static checks of every configuration under deploy/ (no server needed,
# a few seconds):
#   - nginx: `nginx -t` on deploy/nginx/nginx.conf and on the nginx.conf in
#     deploy/k8s/nginx.yaml's ConfigMap (upstream host names swapped for
#     loopback addresses, since they only resolve inside the cluster);
#   - HAProxy: `haproxy -c` on deploy/haproxy/haproxy.cfg;
#   - YAML: every *.yml / *.yaml parses (PyYAML); the Kubernetes manifests
#     have apiVersion/kind/metadata.name, the kustomization lists files that
#     exist, the selectors of the StatefulSet, Services and ServiceMonitor
#     match the pod labels, and every probe is a gRPC probe on port 50051;
#   - compose: the files it mounts exist;
#   - the Grafana dashboard is valid JSON with unique panel ids.
# Prometheus configuration and rules are checked by deploy/check-dashboard.sh.
# Installs nginx, haproxy and python3-yaml with apt-get when missing.
# The last line is "check-configs: PASS" (exit 0) or a FAIL (exit 1).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY=/usr/bin/python3
log() { echo "check-configs: $*"; }
fail() { echo "check-configs: FAIL: $*" >&2; exit 1; }

need=()
[[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null || need+=(nginx)
[[ -x /usr/sbin/haproxy ]] || command -v haproxy >/dev/null || need+=(haproxy)
"$PY" -c 'import yaml' 2>/dev/null || need+=(python3-yaml)
if ((${#need[@]})); then
  log "installing ${need[*]} (apt-get)"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
HAPROXY="$(command -v haproxy || echo /usr/sbin/haproxy)"

WORK="$(mktemp -d /tmp/kvsketch-check-configs.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/logs" "$WORK/tmp"

"$NGINX" -t -q -p "$WORK/" -c "$REPO/deploy/nginx/nginx.conf" -e "$WORK/logs/error.log" ||
  fail "nginx -t deploy/nginx/nginx.conf"
"$PY" - "$REPO/deploy/k8s/nginx.yaml" >"$WORK/k8s-nginx.conf" <<'PY'
import re, sys, yaml
cm = next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "ConfigMap")
conf = cm["data"]["nginx.conf"]
# kvsketch-N:50051 only resolves in the cluster; loopback stands in.
conf = re.sub(r"server kvsketch-(\d+):", lambda m: f"server 127.0.0.{int(m.group(1)) + 1}:", conf)
sys.stdout.write(conf)
PY
# The ConfigMap writes under /tmp (its emptyDir); test it in the work dir.
sed -i "s#/tmp/#$WORK/tmp/#g; s#/dev/stderr#$WORK/logs/k8s-error.log#" "$WORK/k8s-nginx.conf"
"$NGINX" -t -q -p "$WORK/" -c "$WORK/k8s-nginx.conf" -e "$WORK/logs/error.log" ||
  fail "nginx -t on the ConfigMap of deploy/k8s/nginx.yaml"
log "nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///'): nginx.conf and the k8s ConfigMap pass nginx -t"

"$HAPROXY" -c -q -f "$REPO/deploy/haproxy/haproxy.cfg" || fail "haproxy -c deploy/haproxy/haproxy.cfg"
log "haproxy $("$HAPROXY" -v | head -n1 | awk '{print $3}'): haproxy.cfg passes haproxy -c"

"$PY" - "$REPO" <<'PY'
import glob, json, os, sys, yaml
repo = sys.argv[1]
errors = []
files = sorted(glob.glob(f"{repo}/deploy/**/*.yml", recursive=True) +
               glob.glob(f"{repo}/deploy/**/*.yaml", recursive=True))
docs = {}
for f in files:
    try:
        docs[f] = [d for d in yaml.safe_load_all(open(f)) if d is not None]
    except yaml.YAMLError as e:
        errors.append(f"{f}: {e}")

k8s = f"{repo}/deploy/k8s"
objects = []
for f, ds in docs.items():
    if not f.startswith(k8s):
        continue
    for d in ds:
        if d.get("kind") == "Kustomization":
            for r in d.get("resources", []):
                if not os.path.exists(f"{k8s}/{r}"):
                    errors.append(f"kustomization.yaml: resource {r} does not exist")
            continue
        for key in ("apiVersion", "kind"):
            if key not in d:
                errors.append(f"{f}: a document has no {key}")
        if not d.get("metadata", {}).get("name"):
            errors.append(f"{f}: {d.get('kind')} without metadata.name")
        objects.append(d)

def by_kind(kind):
    return [o for o in objects if o["kind"] == kind]

def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())

workloads = by_kind("StatefulSet") + by_kind("Deployment")
pod_labels = {o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"] for o in workloads}
for o in workloads:
    sel = o["spec"]["selector"]["matchLabels"]
    if not matches(sel, o["spec"]["template"]["metadata"]["labels"]):
        errors.append(f"{o['kind']} {o['metadata']['name']}: selector does not match its pods")
sts = by_kind("StatefulSet")
for s in sts:
    svc = s["spec"]["serviceName"]
    if not any(x["metadata"]["name"] == svc and x["spec"].get("clusterIP") == "None"
               for x in by_kind("Service")):
        errors.append(f"StatefulSet {s['metadata']['name']}: no headless Service {svc}")
    for c in s["spec"]["template"]["spec"]["containers"]:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            p = c.get(probe)
            if not p or p.get("grpc", {}).get("port") != 50051:
                errors.append(f"StatefulSet container {c['name']}: {probe} is not a gRPC probe on 50051")
    sc = s["spec"]["template"]["spec"].get("securityContext", {})
    if not sc.get("runAsNonRoot") or not sc.get("runAsUser"):
        errors.append("StatefulSet: pods must run as non-root")
for svc in by_kind("Service"):
    sel = svc["spec"].get("selector", {})
    name = svc["metadata"]["name"]
    if "statefulset.kubernetes.io/pod-name" in sel:
        pod = sel["statefulset.kubernetes.io/pod-name"]
        base, _, ordinal = pod.rpartition("-")
        if base not in [s["metadata"]["name"] for s in sts] or not ordinal.isdigit():
            errors.append(f"Service {name}: selects pod {pod} of no StatefulSet")
        elif int(ordinal) >= max(s["spec"]["replicas"] for s in sts if s["metadata"]["name"] == base):
            errors.append(f"Service {name}: pod {pod} is beyond the StatefulSet's replicas")
    elif not any(matches(sel, l) for l in pod_labels.values()):
        errors.append(f"Service {name}: selector {sel} matches no pod template")
for sm in by_kind("ServiceMonitor"):
    sel = sm["spec"]["selector"]["matchLabels"]
    ports = {e["port"] for e in sm["spec"]["endpoints"]}
    hits = [x for x in by_kind("Service") if matches(sel, x["metadata"].get("labels", {}))
            and ports <= {p["name"] for p in x["spec"]["ports"]}]
    if not hits:
        errors.append(f"ServiceMonitor {sm['metadata']['name']}: selects no Service with ports {ports}")
# The proxy's upstream list names only per-replica Services that exist.
import re
cm = next(o for o in by_kind("ConfigMap") if "nginx.conf" in o.get("data", {}))
svc_names = {x["metadata"]["name"] for x in by_kind("Service")}
for host in re.findall(r"server (kvsketch-\d+):50051", cm["data"]["nginx.conf"]):
    if host not in svc_names:
        errors.append(f"nginx ConfigMap: upstream {host} has no Service")

compose = f"{repo}/deploy/compose/compose.yaml"
for name, svc in docs.get(compose, [{}])[0].get("services", {}).items():
    for v in svc.get("volumes", []):
        src = v.split(":")[0]
        if src.startswith("."):
            if not os.path.exists(os.path.join(os.path.dirname(compose), src)):
                errors.append(f"compose service {name}: mounted path {src} does not exist")

dash = json.load(open(f"{repo}/deploy/grafana/dashboards/kvsketch.json"))
ids = [p["id"] for p in dash["panels"]]
if len(ids) != len(set(ids)):
    errors.append("dashboard: duplicate panel ids")

for e in errors:
    print("check-configs: FAIL: " + e, file=sys.stderr)
if errors:
    sys.exit(1)
print(f"check-configs: {len(files)} YAML files parse; {len(objects)} Kubernetes objects "
      f"({', '.join(sorted({o['kind'] for o in objects}))}) consistent; compose mounts exist; "
      f"dashboard JSON has {len(ids)} panels")
PY
log "PASS"
