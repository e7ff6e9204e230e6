#!/usr/bin/env bash
# bench-stun.sh — STUN Binding throughput on loopback: trav's server against coturn's, one core each.
#
#   Scripts/bench-stun.sh [--duration S] [--warmup S] [--fingerprint] [--window N] [--sockets N]
#                         [--two-threads] [--no-build]
#
# Builds release, then, one after the other in the same run:
#   1. starts `trav stun-server --listen 127.0.0.1 --no-tcp` pinned to core 0 (`taskset -c 0`),
#      floods it with `stun-flood` pinned to core 1 (`taskset -c 1`), stops it;
#   2. starts coturn (`turnserver -n --stun-only … --relay-threads 1`) pinned to core 0, floods it
#      the same way, stops it;
# and prints a table (server, answers/s, loss, CPU of server and load generator) and the ratio
# ours/coturn. The goal is ≥ 1.5×. The last column, server CPU microseconds per answer (from
# /proc/PID/stat), is the figure least disturbed by other load on the machine.
#
# stun-flood sends valid Binding requests (20 bytes; 28 with --fingerprint) with a bounded window of
# outstanding requests, checks every answer (Binding success, right transaction, XOR-MAPPED-ADDRESS
# = its own address, FINGERPRINT when asked) and only ever targets loopback. It sends with UDP GSO
# (one trip through the kernel per batch; the servers still receive ordinary single datagrams) so
# that the generator's core is not the limit; both servers should show server-cpu near 100%.
#
# --two-threads adds a second row set: trav with `--threads 2` (two SO_REUSEPORT sockets on two event
# loops) and coturn with `--relay-threads 2`, both servers allowed cores 0–1 and two generator
# sockets allowed cores 0–1. That shares the two cores with the generator, so it is no longer one
# core against one: read it as a rough indication only.
#
# Every process the script starts is stopped on exit, on Ctrl-C and on failure. Other load on the
# machine (builds, tests) skews the figures: the script prints the load average it started with.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=5       # seconds counted per server
WARMUP=1         # seconds of flooding before counting
WINDOW=1024      # requests in flight per generator socket (enough to keep either server busy)
SOCKETS=1        # generator sockets in the one-core rows
FINGERPRINT=""
TWO_THREADS=0
BUILD=1
OURS_PORT=34780  # loopback ports used; both must be free
COTURN_PORT=34790
READY_TRIES=100  # readiness checks, 0.1 s apart, before giving up on a server

while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --window) WINDOW="$2"; shift 2 ;;
        --sockets) SOCKETS="$2"; shift 2 ;;
        --fingerprint) FINGERPRINT="--fingerprint"; shift ;;
        --two-threads) TWO_THREADS=1; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-stun: unknown argument $1" >&2; exit 2 ;;
    esac
done

command -v turnserver >/dev/null || { echo "bench-stun: coturn (turnserver) is not installed" >&2; exit 2; }
command -v taskset >/dev/null || { echo "bench-stun: taskset (util-linux) is not installed" >&2; exit 2; }
[ "$(nproc)" -ge 2 ] || { echo "bench-stun: needs two cores (server on 0, load generator on 1)" >&2; exit 2; }

if [ "$BUILD" = 1 ]; then
    swift build -c release --product trav >&2
    swift build -c release --product stun-flood >&2
fi
BIN="$(swift build -c release --show-bin-path)"
WORK="$(mktemp -d /tmp/bench-stun.XXXXXX)"
STARTED=()

stop_pid() {  # SIGINT, then SIGKILL after 2 s (coturn ignores signals while starting); confirm it is gone
    local pid="$1"
    kill -0 "$pid" 2>/dev/null || return 0
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
    if kill -0 "$pid" 2>/dev/null; then echo "bench-stun: process $pid did not stop" >&2; fi
}
cleanup() {
    for pid in "${STARTED[@]}"; do stop_pid "$pid"; done
    STARTED=()
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! ss -Huln "sport = :$1" 2>/dev/null | grep -q .; }
for p in "$OURS_PORT" "$COTURN_PORT"; do
    port_free "$p" || { echo "bench-stun: UDP port $p is in use" >&2; exit 2; }
done

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

wait_ready() {  # $1 pid, $2 port: until a Binding request on the port is answered
    for _ in $(seq "$READY_TRIES"); do
        kill -0 "$1" 2>/dev/null || { echo "bench-stun: server $1 exited while starting" >&2; return 1; }
        if "$BIN/trav" stun "127.0.0.1:$2" --timeout 0.3 >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "bench-stun: server on port $2 never answered" >&2
    return 1
}

ROWS=()
declare -A RATE CPU_US

# $1 label, $2 server pid, $3 port, $4 generator cores, $5 generator sockets
flood() {
    local label="$1" pid="$2" port="$3" cores="$4" sockets="$5"
    wait_ready "$pid" "$port"
    local hz; hz="$(getconf CLK_TCK)"
    local before; before="$(cpu_ticks "$pid")"
    local t0; t0="$(date +%s.%N)"
    taskset -c "$cores" "$BIN/stun-flood" --target "127.0.0.1:$port" --warmup "$WARMUP" --duration "$DURATION" \
        --window "$WINDOW" --sockets "$sockets" $FINGERPRINT > "$WORK/$label.out" || {
        cat "$WORK/$label.out" >&2; echo "bench-stun: flood of $label failed" >&2; return 1; }
    local after; after="$(cpu_ticks "$pid")"
    local t1; t1="$(date +%s.%N)"
    local result; result="$(grep '^RESULT' "$WORK/$label.out")"
    local rate loss ccpu total
    rate="$(sed -E 's/.*answers_per_s=([0-9]+).*/\1/' <<<"$result")"
    total="$(sed -E 's/.*answered_total=([0-9]+).*/\1/' <<<"$result")"
    loss="$(sed -E 's/.*loss_pct=([0-9.]+).*/\1/' <<<"$result")"
    ccpu="$(sed -E 's/.*client_cpu_pct=([0-9]+).*/\1/' <<<"$result")"
    # Server CPU over the whole flood (warm-up and drain included), as a share of one core.
    local scpu; scpu="$(awk -v a="$before" -v b="$after" -v hz="$hz" -v t0="$t0" -v t1="$t1" \
        'BEGIN { printf "%d", 100 * (b - a) / hz / (t1 - t0) }')"
    # Server CPU time per answer, over the whole flood: the figure least skewed by other load.
    local us; us="$(awk -v a="$before" -v b="$after" -v hz="$hz" -v n="$total" \
        'BEGIN { if (n > 0) printf "%.2f", 1e6 * (b - a) / hz / n; else print "n/a" }')"
    RATE["$label"]="$rate"
    CPU_US["$label"]="$us"
    ROWS+=("$(printf '%-36s %10s %7s%% %9s%% %9s%% %11s' "$label" "$rate" "$loss" "$scpu" "$ccpu" "$us")")
}

start_ours() {  # $1 cores, $2 threads
    taskset -c "$1" "$BIN/trav" stun-server --listen 127.0.0.1 --port "$OURS_PORT" --no-tcp --threads "$2" \
        > "$WORK/trav.log" 2>&1 &
    OURS_PID=$!
    STARTED+=("$OURS_PID")
}
start_coturn() {  # $1 cores, $2 relay threads
    taskset -c "$1" turnserver -n --stun-only --no-cli --no-tls --no-dtls --no-tcp \
        --listening-ip 127.0.0.1 --listening-port "$COTURN_PORT" --relay-threads "$2" \
        --no-stdout-log --log-file "$WORK/coturn.log" --simple-log > /dev/null 2>&1 &
    COTURN_PID=$!
    STARTED+=("$COTURN_PID")
}

echo "bench-stun: $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "bench-stun: warm-up ${WARMUP}s, measured ${DURATION}s, window $WINDOW, requests of $([ -n "$FINGERPRINT" ] && echo 28 || echo 20) bytes"

start_ours 0 1
flood "trav stun-server (core 0)" "$OURS_PID" "$OURS_PORT" 1 "$SOCKETS"
stop_pid "$OURS_PID"
start_coturn 0 1
flood "coturn, 1 relay thread (core 0)" "$COTURN_PID" "$COTURN_PORT" 1 "$SOCKETS"
stop_pid "$COTURN_PID"

if [ "$TWO_THREADS" = 1 ]; then
    start_ours 0,1 2
    flood "trav --threads 2 (cores 0-1)" "$OURS_PID" "$OURS_PORT" 0,1 2
    stop_pid "$OURS_PID"
    start_coturn 0,1 2
    flood "coturn, 2 relay threads (cores 0-1)" "$COTURN_PID" "$COTURN_PORT" 0,1 2
    stop_pid "$COTURN_PID"
fi

echo
printf '%-36s %10s %8s %10s %10s %11s\n' "server" "answers/s" "loss" "server-cpu" "flood-cpu" "cpu-µs/ans"
for row in "${ROWS[@]}"; do echo "$row"; done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo
echo "ratio trav/coturn, one core each: $(ratio "${RATE["trav stun-server (core 0)"]}" "${RATE["coturn, 1 relay thread (core 0)"]}")× (goal ≥ 1.5×)"
echo "ratio of server CPU per answer, coturn/trav: $(ratio "${CPU_US["coturn, 1 relay thread (core 0)"]}" "${CPU_US["trav stun-server (core 0)"]}")×"
if [ "$TWO_THREADS" = 1 ]; then
    echo "ratio trav/coturn, two threads (cores shared with the generator): $(ratio "${RATE["trav --threads 2 (cores 0-1)"]}" "${RATE["coturn, 2 relay threads (cores 0-1)"]}")×"
fi
