#!/usr/bin/env bash
# Overload and soak measurements for issue #8 item 4 (docs/reliability.md,
# "Overload"). Starts the real kvsketch-server on loopback ports once per
# phase, drives it past one limit at a time with kvsketch-loadgen, samples
# RSS (/proc/PID/status) and /metrics every second, and writes
#   <out>/overload.csv   phases 1-3 (sessions, memory, message rate)
#   <out>/soak.csv       phase 4 (steady load, sessions created/deleted)
#   <out>/*.log          loadgen and server output (messages quoted in docs)
#   <out>/overload.svg, soak.svg   via scripts/plot_overload.py
#
# Usage: scripts/overload-soak.sh [--build-dir DIR] [--out DIR]
#                                 [--soak DURATION(s|m)] [--quick]
#                                 [--phases 1234]
# Default: build/release (built when the binaries are missing),
# docs/reliability, 10 minute soak (~14 min in all);
# --quick: short phases and a 60 s soak (under 2 min).
set -euo pipefail

BUILD_DIR=build/release
OUT=docs/reliability
SOAK=10m
QUICK=0
PHASES=1234
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --soak) SOAK="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --phases) PHASES="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ $QUICK == 1 && $SOAK == 10m ]]; then SOAK=60s; fi
case "$SOAK" in
  *m) SOAK_S=$(( ${SOAK%m} * 60 )) ;;
  *s) SOAK_S=${SOAK%s} ;;
  *) echo "--soak: want e.g. 10m or 90s, got '$SOAK'" >&2; exit 2 ;;
esac

SERVER="$BUILD_DIR/server/kvsketch-server"
LOADGEN="$BUILD_DIR/client/kvsketch-loadgen"
CLI="$BUILD_DIR/client/kvsketch"
if [[ ! -x "$SERVER" || ! -x "$LOADGEN" || ! -x "$CLI" ]]; then
  "$(dirname "${BASH_SOURCE[0]}")/build.sh" --dir "$BUILD_DIR" \
    --target kvsketch-server --target kvsketch_loadgen --target kvsketch_cli
fi
for b in "$SERVER" "$LOADGEN" "$CLI"; do
  [[ -x "$b" ]] || { echo "missing binary $b (build it first)" >&2; exit 2; }
done
mkdir -p "$OUT"
command -v curl >/dev/null || { echo "curl is required" >&2; exit 2; }

# Phase lengths (seconds): full / --quick.
if [[ $QUICK == 1 ]]; then P1=8; P2=8; P3=10; P3_CALM=5; else
  P1=30; P2=30; P3=40; P3_CALM=15; fi

GRPC_PORT=$(( 52000 + RANDOM % 2000 ))
METRICS_PORT=$(( GRPC_PORT + 1 ))
ADDR=127.0.0.1:$GRPC_PORT
T0=$(date +%s.%N)
SERVER_PID=
SAMPLER_PID=
BG_PIDS=()

cleanup() {
  for p in "${BG_PIDS[@]}" $SAMPLER_PID $SERVER_PID; do
    kill "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap cleanup EXIT

now() { awk -v t0="$T0" -v t="$(date +%s.%N)" 'BEGIN{printf "%.1f", t-t0}'; }

start_server() {  # $1 = log name, rest = extra flags
  local log="$OUT/$1.server.log"; shift
  "$SERVER" --listen "$ADDR" --metrics_listen "127.0.0.1:$METRICS_PORT" \
    "$@" >"$log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 50); do
    curl -sf --max-time 1 "http://127.0.0.1:$METRICS_PORT/metrics" \
      >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not start; see $log" >&2; exit 1
}

stop_server() {
  kill "$SAMPLER_PID" 2>/dev/null || true; wait "$SAMPLER_PID" 2>/dev/null || true
  SAMPLER_PID=
  kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

# One CSV row per second for the running server. Counters are cumulative;
# the per-second rates are differences of consecutive scrapes (the server
# restarts between phases, so each sampler starts from its own zero).
CSV_HEADER="t_s,phase,rss_bytes,state_bytes,sessions,resource_exhausted_total,unavailable_total,other_errors_total,resource_exhausted_per_s,steps_per_s"
sampler() {  # $1 = phase label, $2 = csv file
  local phase="$1" csv="$2" prev_re=0 prev_steps=0 first=1
  while kill -0 "$SERVER_PID" 2>/dev/null; do
    local m rss line
    m=$(curl -s --max-time 1 "http://127.0.0.1:$METRICS_PORT/metrics" || true)
    rss=$(awk '/^VmRSS:/{print $2*1024}' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0)
    line=$(awk -v rss="$rss" -v t="$(now)" -v ph="$phase" \
      -v pre="$prev_re" -v pst="$prev_steps" -v first="$first" '
      /^kvsketch_state_bytes/ {state += $NF}
      /^kvsketch_sessions / {sessions = $NF}
      /^kvsketch_decode_steps_total / {steps = $NF}
      /^kvsketch_rpc_errors_total/ {
        if ($0 ~ /code="RESOURCE_EXHAUSTED"/) re += $NF
        else if ($0 ~ /code="UNAVAILABLE"/) un += $NF
        else other += $NF
      }
      END {
        dre = first ? 0 : re - pre; dst = first ? 0 : steps - pst
        printf "%s,%s,%d,%d,%d,%d,%d,%d,%d,%d\n%d %d\n", t, ph, rss, state,
          sessions, re, un, other, dre, dst, re, steps
      }' <<<"$m")
    echo "${line%%$'\n'*}" >>"$csv"
    read -r prev_re prev_steps <<<"${line#*$'\n'}"
    first=0
    sleep 1
  done
}
start_sampler() { sampler "$1" "$2" & SAMPLER_PID=$!; }

LG_COMMON=(--server "$ADDR" --quiet --json --warmup 0s)
# Runs the loadgen, keeps its JSON (or error) in $OUT/<name>.log; never
# fails the script (refusals are what we are here to see).
loadgen() {  # $1 = log name, rest = flags
  local log="$OUT/$1.log"; shift
  echo "\$ kvsketch-loadgen $*" >>"$log"
  "$LOADGEN" "${LG_COMMON[@]}" "$@" >>"$log" 2>&1 || echo "(exit $?)" >>"$log"
}

metric() {  # sum of a metric's samples (regex on the line start)
  curl -s --max-time 2 "http://127.0.0.1:$METRICS_PORT/metrics" |
    awk -v re="^$1" '$0 ~ re {s += $NF} END {printf "%d\n", s}'
}

OV_CSV="$OUT/overload.csv"
[[ $PHASES == *[123]* ]] && echo "$CSV_HEADER" >"$OV_CSV"
# Phases 1-3 and phase 4 can run as separate invocations (--phases).
for ((i = 0; i < ${#PHASES}; i++)); do rm -f "$OUT/p${PHASES:i:1}"-*.log; done
[[ $PHASES == *[123]* ]] && rm -f "$OUT/phase-markers.txt"
mark() {  # phase markers of the overload plot (times as in overload.csv)
  [[ $1 != 4* ]] && echo "$(now),$1" >>"$OUT/phase-markers.txt"
  echo "[$(date -u +%T)] [$(now)s] $1"
}

# --- Phase 1: sessions past --max_sessions=8 -------------------------------
if [[ $PHASES == *1* ]]; then
  mark "1 sessions"
  start_server p1 --max_sessions=8 --worker_threads=2
  start_sampler sessions "$OV_CSV"
  # 8 admitted sessions decode for the whole phase at 50 steps/s each.
  loadgen p1-admitted --sessions 8 --rate 50 --duration "${P1}s" \
    --session-prefix adm- &
  BG_PIDS+=($!)
  sleep 2
  # Excess: a second client asks for 8 more, again and again.
  end=$(( $(date +%s) + P1 - 4 ))
  while (( $(date +%s) < end )); do
    loadgen p1-excess --sessions 8 --duration 1s --session-prefix exc-
    "$CLI" create --server "$ADDR" --retries 0 --layers 1 --kv-heads 8 --query-heads 8 \
      --head-dim 128 >>"$OUT/p1-cli.log" 2>&1 || true
    sleep 0.5
  done
  wait "${BG_PIDS[@]}"; BG_PIDS=()
  mark "1 recovery"
  echo "sessions after the load: $(metric 'kvsketch_sessions ')" >>"$OUT/p1-cli.log"
  "$CLI" create --server "$ADDR" --id recovered-1 --retries 0 --layers 1 \
    --kv-heads 8 --query-heads 8 --head-dim 128 >>"$OUT/p1-cli.log" 2>&1 &&
    echo "RECOVERY: create after load ok" >>"$OUT/p1-cli.log"
  "$CLI" delete --server "$ADDR" recovered-1 >>"$OUT/p1-cli.log" 2>&1 || true
  sleep 2
  stop_server
fi

# --- Phase 2: state past --memory_budget=64M --------------------------------
# exact f32 state: 2 (K,V) x 8 heads x 128 x 4 B = 8 KiB per token, but the
# exact store grows in chunks (core/exact/exact.h), so a 1536-token prefill
# holds 2048 tokens of capacity, 16 MiB: 3 admitted sessions hold ~48 MiB
# and at 10 steps/s stay inside that capacity for the phase.
if [[ $PHASES == *2* ]]; then
  mark "2 memory"
  start_server p2 --memory_budget=64M --worker_threads=2
  start_sampler memory "$OV_CSV"
  loadgen p2-admitted --sessions 3 --prefill 1536 --rate 10 \
    --duration "${P2}s" --session-prefix adm- &
  BG_PIDS+=($!)
  sleep 3
  end=$(( $(date +%s) + P2 - 6 ))
  while (( $(date +%s) < end )); do
    loadgen p2-excess --sessions 4 --prefill 1536 --duration 1s \
      --session-prefix exc-
    sleep 0.5
  done
  wait "${BG_PIDS[@]}"; BG_PIDS=()
  mark "2 recovery"
  echo "state bytes after the load: $(metric kvsketch_state_bytes)" \
    >>"$OUT/p2-recovery.log"
  loadgen p2-recovery --sessions 3 --prefill 1536 --rate 10 --duration 2s \
    --session-prefix rec-
  sleep 2
  stop_server
fi

# --- Phase 3: message rate past --worker_threads=1 --max_queued_tasks=2 -----
# Every Decode entry goes to the pool (--decode_inline_work_limit=0) so the
# queue bound is what admits or sheds. A shed ends the whole Decode stream
# with RESOURCE_EXHAUSTED; --reopen-streams makes the loadgen open a new one
# (10 ms later) so the 32 closed-loop streams keep offering load.
if [[ $PHASES == *3* ]]; then
  mark "3 rate"
  start_server p3 --worker_threads=1 --max_queued_tasks=2 \
    --decode_inline_work_limit=0
  start_sampler rate "$OV_CSV"
  loadgen p3-storm --sessions 32 --prefill 256 --duration "${P3}s" \
    --reopen-streams
  mark "3 calm"
  loadgen p3-calm --sessions 2 --prefill 256 --rate 20 --duration "${P3_CALM}s"
  sleep 2
  stop_server
fi

# --- Phase 4: soak -----------------------------------------------------------
if [[ $PHASES == *4* ]]; then
  SOAK_CSV="$OUT/soak.csv"
  echo "$CSV_HEADER" >"$SOAK_CSV"
  mark "4 soak ${SOAK_S}s"
  start_server p4 --worker_threads=2 --memory_budget=1G
  start_sampler soak "$SOAK_CSV"
  # Back-to-back 20 s runs (10 s in --quick): each creates 8 sessions,
  # prefills 512 tokens, decodes 8 x 50 steps/s and deletes them.
  RUN_S=$(( QUICK == 1 ? 10 : 20 ))
  end=$(( $(date +%s) + SOAK_S ))
  while (( $(date +%s) + RUN_S <= end )); do
    loadgen p4-soak --sessions 8 --prefill 512 --rate 50 --duration "${RUN_S}s"
  done
  sleep 2
  stop_server
fi

echo "[$(date -u +%T)] [$(now)s] done"
if [[ -n "$(command -v /usr/bin/python3)" ]]; then
  /usr/bin/python3 "$(dirname "$0")/plot_overload.py" --dir "$OUT"
fi
