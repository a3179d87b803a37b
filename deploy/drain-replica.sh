#!/usr/bin/env bash
# Moves every session off one kvsketch replica with `kvsketch migrate`
# (Export -> Import -> Delete, one session at a time), so the replica can be
# stopped or scaled away without losing sessions. Run it AFTER the replica
# was taken out of the proxy's upstream list and the proxy reloaded
# (docs/deployment.md, "Draining a replica"): with --to the proxy address,
# each import carries the session's x-session-id and the proxy places it on
# the replica that will receive its calls from now on.
#
# Usage: deploy/drain-replica.sh --from HOST:PORT --to HOST:PORT
#          [--cli PATH] [--timeout D] [--dry-run]
#   --from     the replica to empty (its own address, not the proxy)
#   --to       the proxy (or one replica to receive everything)
#   --cli      the kvsketch CLI (default: `kvsketch` on PATH, else
#              build/release/client/kvsketch)
#   --dry-run  list what would move
# Exits 0 when the replica holds no session afterwards; 1 otherwise, after
# trying every session (a failed session stays on the source, intact).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FROM="" TO="" CLI="" TIMEOUT="5m" DRY=0
while (($#)); do
  case "$1" in
    --from) FROM="$2"; shift ;;
    --from=*) FROM="${1#*=}" ;;
    --to) TO="$2"; shift ;;
    --to=*) TO="${1#*=}" ;;
    --cli) CLI="$2"; shift ;;
    --cli=*) CLI="${1#*=}" ;;
    --timeout) TIMEOUT="$2"; shift ;;
    --timeout=*) TIMEOUT="${1#*=}" ;;
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "drain-replica.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
[[ -n "$FROM" && -n "$TO" ]] ||
  { echo "drain-replica.sh: --from and --to are required (--help)" >&2; exit 2; }
if [[ -z "$CLI" ]]; then
  CLI="$(command -v kvsketch || echo "$REPO/build/release/client/kvsketch")"
fi
[[ -x "$CLI" ]] || { echo "drain-replica.sh: no kvsketch CLI at $CLI (--cli)" >&2; exit 2; }

list_ids() {
  "$CLI" list --server "$FROM" --timeout "$TIMEOUT" --json |
    /usr/bin/python3 -c 'import json, sys
for s in json.load(sys.stdin).get("sessions", []): print(s["session_id"])'
}

ids="$(list_ids)" || { echo "drain-replica.sh: cannot list sessions on $FROM" >&2; exit 1; }
total=$(grep -c . <<<"$ids" || true)
echo "drain: $total sessions on $FROM -> $TO"
if ((DRY)); then
  [[ -z "$ids" ]] || sed 's/^/drain: would move /' <<<"$ids"
  exit 0
fi
moved=0 failed=0
while read -r id; do
  [[ -n "$id" ]] || continue
  if out="$("$CLI" migrate --session "$id" --from "$FROM" --to "$TO" \
      --timeout "$TIMEOUT" 2>&1)"; then
    moved=$((moved + 1))
    echo "drain: $out"
  else
    failed=$((failed + 1))
    echo "drain: FAILED $id: $out" >&2
  fi
done <<<"$ids"
left="$(list_ids | grep -c . || true)"
echo "drain: moved $moved, failed $failed; $left sessions left on $FROM"
((failed == 0 && left == 0))
