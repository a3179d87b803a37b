#!/usr/bin/env bash
# Crash test (issue #8 item 2, docs/reliability.md "Durability"): starts the
# real kvsketch-server with --data_dir on a loopback port, streams Decode
# steps to several sessions with tests/server/crash_driver (which records
# every ACKNOWLEDGED token in a file, fsynced), SIGKILLs the server at a
# random moment, restarts it, and repeats. Each restart first checks that
# every acknowledged token is still there; at the end every session's
# attention output must equal, bit for bit, a SessionState fed the same
# tokens in the driver's process (an uninterrupted run). Then a clean
# SIGTERM shutdown (checkpoints) and one more restart + verify.
#
# Usage: scripts/crash-test.sh [--build-dir DIR] [--rounds N] [--sessions N]
#          [--fsync every_batch|interval|off] [--min-ms MS] [--max-ms MS]
#          [--seed S] [--keep]
# Defaults: build/release, 20 rounds, 6 sessions, every_batch, kill after
# 300-2000 ms. Exit status: 0 when nothing was lost, non-zero otherwise.
set -euo pipefail

BUILD_DIR=build/release
ROUNDS=20
SESSIONS=6
FSYNC=every_batch
MIN_MS=300
MAX_MS=2000
SEED=1
KEEP=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --sessions) SESSIONS="$2"; shift 2 ;;
    --fsync) FSYNC="$2"; shift 2 ;;
    --min-ms) MIN_MS="$2"; shift 2 ;;
    --max-ms) MAX_MS="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n 2,20p "$0"; exit 0 ;;
    *) echo "crash-test: unknown argument $1" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
SERVER="$BUILD_DIR/server/kvsketch-server"
DRIVER="$BUILD_DIR/tests/server/crash_driver"
if [[ ! -x "$SERVER" || ! -x "$DRIVER" ]]; then
  if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
    scripts/build.sh --dir "$BUILD_DIR" >/dev/null
  fi
  cmake --build "$BUILD_DIR" -j2 --target kvsketch_server kvsketch_crash_driver
fi

WORK="$(mktemp -d /tmp/kvsketch-crash.XXXXXX)"
DATA="$WORK/data"
RECORD="$WORK/acked.txt"
LOG="$WORK/server.log"
: > "$RECORD"
SPID=""
cleanup() {
  if [[ -n "$SPID" ]] && kill -0 "$SPID" 2>/dev/null; then kill -9 "$SPID"; fi
  if [[ $KEEP == 0 ]]; then rm -rf "$WORK"; else echo "crash-test: kept $WORK"; fi
}
trap cleanup EXIT

PORT="$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
TARGET="127.0.0.1:$PORT"
RANDOM=$SEED

start_server() {
  "$SERVER" --listen="$TARGET" --metrics_listen= --data_dir="$DATA" \
    --fsync="$FSYNC" --worker_threads=2 --session_idle_ttl=0 >>"$LOG" 2>&1 &
  SPID=$!
  # Wait until it accepts connections (recovery runs before it listens),
  # so that the kill timer measures serving time.
  for ((i = 0; i < 600; ++i)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
    if ! kill -0 "$SPID" 2>/dev/null; then
      echo "crash-test: FAILED: the server exited at start:" >&2
      tail -5 "$LOG" >&2
      exit 1
    fi
    sleep 0.05
  done
  echo "crash-test: FAILED: the server did not listen within 30 s" >&2
  exit 1
}

driver() {
  "$DRIVER" "$1" --target="$TARGET" --record="$RECORD" \
    --sessions="$SESSIONS" --seed="$SEED"
}

echo "crash-test: $ROUNDS rounds, $SESSIONS sessions, --fsync=$FSYNC, kill -9 after ${MIN_MS}-${MAX_MS} ms, work dir $WORK"
START=$(date +%s.%N)
for ((round = 1; round <= ROUNDS; ++round)); do
  start_server
  driver run >>"$WORK/driver.log" 2>&1 &
  DPID=$!
  sleep "$(awk -v a="$MIN_MS" -v b="$MAX_MS" -v r="$RANDOM" \
    'BEGIN { printf "%.3f", (a + (b - a) * r / 32767) / 1000 }')"
  kill -9 "$SPID"
  wait "$SPID" 2>/dev/null || true
  SPID=""
  rc=0
  wait "$DPID" || rc=$?
  if [[ $rc != 0 ]]; then
    echo "crash-test: FAILED in round $round: driver exit $rc" >&2
    tail -5 "$WORK/driver.log" >&2
    exit 1
  fi
  printf 'crash-test: round %d: %d acknowledged tokens so far\n' \
    "$round" "$(wc -l <"$RECORD")"
done

# Last kill -9 image: recover and verify against the reference.
start_server
if ! driver verify | tee "$WORK/verify.txt"; then
  echo "crash-test: FAILED: verify after the last SIGKILL" >&2
  exit 1
fi
# A clean shutdown checkpoints every session; the next start replays none.
kill -TERM "$SPID"; wait "$SPID" || true
start_server
if ! driver verify >"$WORK/verify2.txt"; then
  echo "crash-test: FAILED: verify after a clean shutdown" >&2
  cat "$WORK/verify2.txt" >&2
  exit 1
fi
kill -TERM "$SPID"; wait "$SPID" || true
SPID=""
END=$(date +%s.%N)

RECOVERIES=$(grep -c "kvsketch-server: recovered .* session(s)" "$LOG" || true)
TORN=$(grep -o "[0-9]* torn byte(s) dropped" "$LOG" | awk '{s += $1} END {print s + 0}')
TORN_STARTS=$(grep "kvsketch-server: recovered .* session(s)" "$LOG" | grep -vc " 0 torn byte" || true)
echo "crash-test: PASSED: $ROUNDS SIGKILL rounds survived (--fsync=$FSYNC), $(tail -1 "$WORK/verify.txt" | sed 's/^crash_driver: //')"
echo "crash-test: $RECOVERIES recoveries, $TORN torn bytes dropped in total ($TORN_STARTS starts found a torn tail), $(awk -v s="$START" -v e="$END" 'BEGIN { printf "%.1f", e - s }') s"
