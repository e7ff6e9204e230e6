#!/usr/bin/env bash
# bench-relay.sh — TURN relay benchmark on loopback: trav's relay against coturn's, one core each.
#
#   Scripts/bench-relay.sh [--duration S] [--warmup S] [--payloads "100 1200"] [--lanes N] [--window N]
#                          [--rate PPS] [--alloc-duration S] [--concurrency N] [--transports "udp tcp tls"]
#                          [--no-build]
#
# Builds release, then, one after the other in the same run, for each server:
#   1. starts it pinned to core 0 (`taskset -c 0`): `trav relay`, then coturn's `turnserver` configured
#      the same way (one relay thread, long-term credentials for the same user and realm, loopback
#      peers allowed, no per-user quota or bandwidth cap, no CLI, its database in the temporary
#      directory, TLS with the same generated certificate, logging to a file);
#   2. drives it with `turn-flood` (Benchmarks/TURNFlood) pinned to core 1:
#      - relay: LANES allocations over UDP, each with CreatePermission + ChannelBind to a peer socket
#        the generator owns on loopback, ChannelData of each size in PAYLOADS sent as fast as a
#        WINDOW-packet window per lane allows (or at RATE packets/s) for DURATION seconds after WARMUP;
#        counted: payloads that reach the peers (packets/s, payload Mbit/s, loss);
#      - allocate: CONCURRENCY cycles at once of connect → Allocate (401, then signed) → Refresh
#        LIFETIME 0 → close, over each transport in TRANSPORTS, for ALLOC_DURATION seconds;
#   3. stops it (coturn with SIGKILL: it ignores SIGTERM in some states);
# and prints a table: metric, ours, coturn, ratio ours/coturn. The goal is ≥ 1.2× coturn's relayed
# packets/s. The server's CPU time per relayed packet (from /proc/PID/stat) is printed too: it is the
# figure least disturbed by other load on the machine.
#
# All traffic stays on 127.0.0.1 (turn-flood refuses anything but loopback). Every loop is bounded.
# Every process the script starts is stopped, and the temporary directory removed, on exit, on
# Ctrl-C and on failure. Installs coturn with apt-get when it is missing and the script runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=5              # seconds of relaying counted per payload size and server
WARMUP=1                # seconds of relaying before counting
PAYLOADS="100 1200"     # ChannelData payload sizes, bytes
LANES=4                 # allocations (client socket → peer socket pairs) flooded at once
WINDOW=128              # packets in flight per lane, at most
RATE=""                 # packets/s over all lanes; empty: as fast as the windows allow
ALLOC_DURATION=3        # seconds of allocation cycles counted per transport and server
ALLOC_WARMUP=0.5        # seconds of allocation cycles before counting
CONCURRENCY=16          # allocation cycles in progress at once
TRANSPORTS="udp tcp tls"
BUILD=1
USER_NAME=bench         # the one long-term user both servers know
USER_PASSWORD=bench
REALM=trav
OURS_PORT=34800         # loopback ports used (UDP+TCP, then TLS); all must be free
OURS_TLS_PORT=34801
COTURN_PORT=34810
COTURN_TLS_PORT=34811
READY_TRIES=100         # readiness checks, 0.1 s apart, before giving up on a server
STOP_TRIES=20           # checks, 0.1 s apart, that a stopped server is gone

while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --payloads) PAYLOADS="$2"; shift 2 ;;
        --lanes) LANES="$2"; shift 2 ;;
        --window) WINDOW="$2"; shift 2 ;;
        --rate) RATE="$2"; shift 2 ;;
        --alloc-duration) ALLOC_DURATION="$2"; shift 2 ;;
        --concurrency) CONCURRENCY="$2"; shift 2 ;;
        --transports) TRANSPORTS="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-relay: unknown argument $1" >&2; exit 2 ;;
    esac
done

if ! command -v turnserver >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        echo "bench-relay: installing coturn" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends coturn >/dev/null
        # The package may start a system service; this script runs its own server.
        systemctl stop coturn >/dev/null 2>&1 || true
    else
        echo "bench-relay: coturn (turnserver) is not installed; run as root to install it" >&2; exit 2
    fi
fi
for tool in taskset openssl ss; do
    command -v "$tool" >/dev/null || { echo "bench-relay: $tool is not installed" >&2; exit 2; }
done
[ "$(nproc)" -ge 2 ] || { echo "bench-relay: needs two cores (server on 0, load generator on 1)" >&2; exit 2; }

if [ "$BUILD" = 1 ]; then
    swift build -c release --product trav >&2
    swift build -c release --product turn-flood >&2
fi
BIN="$(swift build -c release --show-bin-path)"
WORK="$(mktemp -d /tmp/bench-relay.XXXXXX)"
STARTED=()

stop_pid() {  # $1 pid, $2 first signal: wait for it to go, then SIGKILL; confirm it is gone
    local pid="$1" signal="$2"
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill "-$signal" "$pid" 2>/dev/null || true
    for _ in $(seq "$STOP_TRIES"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
    if kill -0 "$pid" 2>/dev/null; then echo "bench-relay: process $pid did not stop" >&2; fi
}
cleanup() {
    # coturn ignores SIGTERM in some states: everything this script started gets SIGKILL here.
    for pid in "${STARTED[@]}"; do stop_pid "$pid" KILL; done
    STARTED=()
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for p in "$OURS_PORT" "$OURS_TLS_PORT" "$COTURN_PORT" "$COTURN_TLS_PORT"; do
    if ss -Hulnt "sport = :$p" 2>/dev/null | grep -q .; then echo "bench-relay: port $p is in use" >&2; exit 2; fi
done

# One certificate for both servers, so TLS costs the same key operations on each side.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj "/CN=127.0.0.1" \
    -addext "subjectAltName=IP:127.0.0.1" -keyout "$WORK/key.pem" -out "$WORK/cert.pem" >/dev/null 2>&1

# Under load the kernel may hand loopback packet processing to ksoftirqd on the server's core, where
# it is not charged to the server process: the server's CPU here includes ksoftirqd/0's.
SOFTIRQ_PID="$(pgrep -x ksoftirqd/0 || true)"
cpu_ticks() {
    local pid total=0 t
    for pid in "$1" $SOFTIRQ_PID; do
        t="$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)"
        total=$((total + t))
    done
    echo "$total"
}
HZ="$(getconf CLK_TCK)"
cpu_share() {  # $1 $2 ticks before and after, $3 $4 wall-clock seconds: percent of one core
    awk -v a="$1" -v b="$2" -v hz="$HZ" -v t0="$3" -v t1="$4" 'BEGIN { printf "%d", 100 * (b - a) / hz / (t1 - t0) }'
}

wait_ready() {  # $1 pid, $2 UDP/TCP port, $3 TLS port: Binding answered on UDP, TCP and TLS listening
    for _ in $(seq "$READY_TRIES"); do
        kill -0 "$1" 2>/dev/null || { echo "bench-relay: server $1 exited while starting" >&2; return 1; }
        if "$BIN/trav" stun "127.0.0.1:$2" --timeout 0.3 >/dev/null 2>&1 \
            && ss -Htln "sport = :$2" | grep -q . && ss -Htln "sport = :$3" | grep -q .; then
            return 0
        fi
        sleep 0.1
    done
    echo "bench-relay: server on port $2 never became ready" >&2
    return 1
}

declare -A VALUE   # "$server|$metric" → figure
METRICS=()
add_metric() { local m; for m in "${METRICS[@]}"; do [ "$m" = "$1" ] && return 0; done; METRICS+=("$1"); }
field() { sed -nE "s/.*[ ]$1=([0-9.]+).*/\1/p" <<<" $2"; }

# $1 server label, $2 pid, $3 port, $4 payload
relay_run() {
    local server="$1" pid="$2" port="$3" payload="$4" out="$WORK/$1-relay-$4.out"
    local before after t0 t1 rate_arg=()
    [ -n "$RATE" ] && rate_arg=(--rate "$RATE")
    before="$(cpu_ticks "$pid")"
    t0="$(date +%s.%N)"
    taskset -c 1 "$BIN/turn-flood" relay --target "127.0.0.1:$port" --user "$USER_NAME:$USER_PASSWORD" \
        --payload "$payload" --lanes "$LANES" --window "$WINDOW" --warmup "$WARMUP" --duration "$DURATION" \
        "${rate_arg[@]}" > "$out" 2>&1 || { cat "$out" >&2; echo "bench-relay: relay flood of $server failed" >&2; return 1; }
    after="$(cpu_ticks "$pid")"
    t1="$(date +%s.%N)"
    local result; result="$(grep -a '^RESULT' "$out")"
    local total; total="$(field relayed_total "$result")"
    add_metric "relayed packets/s, $payload B"; VALUE["$server|relayed packets/s, $payload B"]="$(field packets_per_s "$result")"
    add_metric "relayed Mbit/s, $payload B"; VALUE["$server|relayed Mbit/s, $payload B"]="$(field mbit_per_s "$result")"
    add_metric "loss %, $payload B"; VALUE["$server|loss %, $payload B"]="$(field loss_pct "$result")"
    add_metric "server CPU µs/packet, $payload B"
    VALUE["$server|server CPU µs/packet, $payload B"]="$(awk -v a="$before" -v b="$after" -v hz="$HZ" -v n="$total" \
        'BEGIN { if (n > 0) printf "%.2f", 1e6 * (b - a) / hz / n; else print "n/a" }')"
    # Server CPU over the whole flood (set-up, warm-up and drain included), as a share of one core.
    add_metric "server CPU %, $payload B"
    VALUE["$server|server CPU %, $payload B"]="$(cpu_share "$before" "$after" "$t0" "$t1")"
    add_metric "generator CPU %, $payload B"; VALUE["$server|generator CPU %, $payload B"]="$(field client_cpu_pct "$result")"
}

# $1 server label, $2 pid, $3 port, $4 transport
allocate_run() {
    local server="$1" pid="$2" port="$3" transport="$4" out="$WORK/$1-allocate-$4.out"
    local before after t0 t1
    before="$(cpu_ticks "$pid")"
    t0="$(date +%s.%N)"
    taskset -c 1 "$BIN/turn-flood" allocate --target "127.0.0.1:$port" --user "$USER_NAME:$USER_PASSWORD" \
        --transport "$transport" --concurrency "$CONCURRENCY" --warmup "$ALLOC_WARMUP" --duration "$ALLOC_DURATION" \
        > "$out" 2>&1 || { cat "$out" >&2; echo "bench-relay: allocation flood of $server over $transport failed" >&2; return 1; }
    after="$(cpu_ticks "$pid")"
    t1="$(date +%s.%N)"
    local result; result="$(grep -a '^RESULT' "$out")"
    add_metric "allocations/s, $transport"; VALUE["$server|allocations/s, $transport"]="$(field allocations_per_s "$result")"
    add_metric "failed allocations, $transport"; VALUE["$server|failed allocations, $transport"]="$(field failed "$result")"
    add_metric "server CPU %, allocations $transport"; VALUE["$server|server CPU %, allocations $transport"]="$(cpu_share "$before" "$after" "$t0" "$t1")"
    # Server CPU per successful cycle over the whole run (warm-up included; failed cycles cost too).
    add_metric "server CPU µs/allocation, $transport"
    VALUE["$server|server CPU µs/allocation, $transport"]="$(awk -v a="$before" -v b="$after" -v hz="$HZ" \
        -v n="$(field allocations_total "$result")" 'BEGIN { if (n > 0) printf "%.0f", 1e6 * (b - a) / hz / n; else print "n/a" }')"
    add_metric "generator CPU %, allocations $transport"
    VALUE["$server|generator CPU %, allocations $transport"]="$(field client_cpu_pct "$result")"
    grep -a '^first failure' "$out" >&2 || true
}

# $1 server label, $2 pid, $3 port, $4 TLS port
measure() {
    local server="$1" pid="$2" port="$3" tls_port="$4"
    wait_ready "$pid" "$port" "$tls_port"
    for payload in $PAYLOADS; do relay_run "$server" "$pid" "$port" "$payload"; done
    for transport in $TRANSPORTS; do
        local p="$port"; [ "$transport" = tls ] && p="$tls_port"
        allocate_run "$server" "$pid" "$p" "$transport"
    done
}

echo "bench-relay: $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "bench-relay: relay ${LANES} lanes × window ${WINDOW}, payloads ${PAYLOADS} B, rate ${RATE:-max}, warm-up ${WARMUP}s, measured ${DURATION}s;" \
    "allocations ${CONCURRENCY} at once over ${TRANSPORTS}, measured ${ALLOC_DURATION}s"

taskset -c 0 "$BIN/trav" relay --listen 127.0.0.1 --port "$OURS_PORT" --tls-port "$OURS_TLS_PORT" \
    --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem" --user "$USER_NAME:$USER_PASSWORD" --realm "$REALM" \
    --relay-allow-peers 127.0.0.0/8 --user-quota 100000 --user-bandwidth 0 --challenge-rate 1000000 \
    > "$WORK/trav.log" 2>&1 &
OURS_PID=$!
STARTED+=("$OURS_PID")
measure trav "$OURS_PID" "$OURS_PORT" "$OURS_TLS_PORT"
stop_pid "$OURS_PID" INT

taskset -c 0 turnserver -n --no-cli --listening-ip 127.0.0.1 --relay-ip 127.0.0.1 \
    --listening-port "$COTURN_PORT" --tls-listening-port "$COTURN_TLS_PORT" --cert "$WORK/cert.pem" --pkey "$WORK/key.pem" \
    --lt-cred-mech --user "$USER_NAME:$USER_PASSWORD" --realm "$REALM" --allow-loopback-peers --no-dtls \
    --relay-threads 1 --no-rfc5780 --no-software-attribute \
    --db "$WORK/turndb" --pidfile "$WORK/turnserver.pid" \
    --no-stdout-log --log-file "$WORK/coturn.log" --simple-log > /dev/null 2>&1 &
COTURN_PID=$!
STARTED+=("$COTURN_PID")
measure coturn "$COTURN_PID" "$COTURN_PORT" "$COTURN_TLS_PORT"
stop_pid "$COTURN_PID" KILL

echo
printf '%-34s %12s %12s %8s\n' metric "trav" coturn "ratio"
for m in "${METRICS[@]}"; do
    a="${VALUE["trav|$m"]:-n/a}"; b="${VALUE["coturn|$m"]:-n/a}"
    r="$(awk -v a="$a" -v b="$b" 'BEGIN { if (a != "n/a" && b != "n/a" && b > 0) printf "%.2f×", a / b; else print "" }')"
    printf '%-34s %12s %12s %8s\n' "$m" "$a" "$b" "$r"
done
echo
first="${PAYLOADS%% *}"
echo "goal: trav ≥ 1.2× coturn's relayed packets/s (ratio above, ${first} B: ${VALUE["trav|relayed packets/s, $first B"]:-n/a} vs ${VALUE["coturn|relayed packets/s, $first B"]:-n/a})"
