#!/usr/bin/env bash
# bench-relay.sh — TURN relay benchmark on loopback: trav's relay against coturn's, one core each.
#
#   Scripts/bench-relay.sh [--duration S] [--warmup S] [--payloads "100 1200"] [--lanes N] [--window N]
#                          [--rate PPS] [--alloc-duration S] [--concurrency N] [--transports "udp tcp tls"]
#                          [--media "N:PPS:BYTES ..."] [--media-direction to-peer|to-client|both]
#                          [--media-duration S] [--media-cores "one all"] [--only "flood allocate media"] [--no-build]
#
# Builds release, then, one after the other in the same run, for each server:
#   1. starts it pinned to core 0 (`taskset -c 0`): `trav relay`, then coturn's `turnserver` configured
#      the same way (one relay thread, long-term credentials for the same user and realm, loopback
#      peers allowed, no per-user quota or bandwidth cap, no CLI, its database in the temporary
#      directory, TLS with the same generated certificate, logging to a file);
#   2. drives it with `turn-flood` (Benchmarks/TURNFlood) pinned to core 1:
#      - relay: over each transport in TRANSPORTS, LANES allocations, each with CreatePermission +
#        ChannelBind to a peer socket the generator owns on loopback, ChannelData of each size in
#        PAYLOADS sent as fast as a WINDOW-packet window per lane allows (or at RATE packets/s) for
#        DURATION seconds after WARMUP; counted: payloads that reach the peers (packets/s, payload
#        Mbit/s, loss). Over udp each lane floods from its own socket (sendmmsg, UDP GSO); over tcp and
#        tls each lane holds its own connection (tls: to the TLS port) and writes its ChannelData
#        padded to 4 bytes (RFC 8656 §12.5), up to 16 KiB of frames per write; the server relays it to
#        the peers over UDP either way;
#      - allocate: CONCURRENCY cycles at once of connect → Allocate (401, then signed) → Refresh
#        LIFETIME 0 → close, over each transport in TRANSPORTS, for ALLOC_DURATION seconds;
#   3. stops it (coturn with SIGKILL: it ignores SIGTERM in some states);
#   4. media (capacity at media rates): for each scenario N:PPS:BYTES in MEDIA, the servers are started
#      afresh, one after the other, and `turn-flood media` holds N allocations over UDP, each with a
#      channel to one of 64 peer sockets, and sends PPS packets/s of BYTES through each, each way
#      (MEDIA_DIRECTION), spread evenly, for MEDIA_WARMUP + MEDIA_DURATION seconds; counted over the
#      measured period: loss, one-way latency p50/p99, and what the relay added to it (the same packets
#      between the same sockets without a relay, `--direct`, measured in the same run), the server's
#      CPU (/proc/PID/stat, all threads, plus ksoftirqd) as a share of one core, and its resident
#      memory per allocation ((VmRSS with the media flowing − VmRSS before setup) / N). With MEDIA_CORES
#      "one", each server is pinned to core 0 (coturn --relay-threads 1) and the generator to core 1;
#      with "all", each server may use every core (coturn --relay-threads $(nproc), ours --threads
#      $(nproc)) and shares them with the generator;
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
TRANSPORTS="udp tcp tls" # client transports of the relay flood and of the allocation cycles
MEDIA="1000:50:160 2000:50:160 4000:25:160 1000:100:1200"   # capacity scenarios: allocations:packets/s each way:payload bytes
MEDIA_DIRECTION=both    # to-peer, to-client or both (each at the full rate)
MEDIA_WARMUP=2          # seconds of media before counting
MEDIA_DURATION=5        # seconds of media counted per scenario, server and core setting
MEDIA_CORES="one all"   # one: server on core 0, generator on core 1; all: server on every core
PARTS="flood allocate media"
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
        --media) MEDIA="$2"; shift 2 ;;
        --media-direction) MEDIA_DIRECTION="$2"; shift 2 ;;
        --media-duration) MEDIA_DURATION="$2"; shift 2 ;;
        --media-cores) MEDIA_CORES="$2"; shift 2 ;;
        --only) PARTS="$2"; shift 2 ;;
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

SCRATCH=.build-release   # release builds kept apart from the debug build's .build
if [ "$BUILD" = 1 ]; then
    swift build -c release --product trav --scratch-path "$SCRATCH" >&2
    swift build -c release --product turn-flood --scratch-path "$SCRATCH" >&2
fi
BIN="$(swift build -c release --show-bin-path --scratch-path "$SCRATCH")"
has_part() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
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

# $1 server label, $2 pid, $3 port (the TLS port for tls), $4 transport, $5 payload
relay_run() {
    local server="$1" pid="$2" port="$3" transport="$4" payload="$5" out="$WORK/$1-relay-$4-$5.out"
    local before after t0 t1 rate_arg=()
    [ -n "$RATE" ] && rate_arg=(--rate "$RATE")
    before="$(cpu_ticks "$pid")"
    t0="$(date +%s.%N)"
    taskset -c 1 "$BIN/turn-flood" relay --target "127.0.0.1:$port" --user "$USER_NAME:$USER_PASSWORD" \
        --transport "$transport" --payload "$payload" --lanes "$LANES" --window "$WINDOW" --warmup "$WARMUP" \
        --duration "$DURATION" "${rate_arg[@]}" > "$out" 2>&1 \
        || { cat "$out" >&2; echo "bench-relay: relay flood of $server over $transport failed" >&2; return 1; }
    after="$(cpu_ticks "$pid")"
    t1="$(date +%s.%N)"
    local result; result="$(grep -a '^RESULT' "$out")"
    local total; total="$(field relayed_total "$result")"
    local label="$transport $payload B"
    add_metric "relayed packets/s, $label"; VALUE["$server|relayed packets/s, $label"]="$(field packets_per_s "$result")"
    add_metric "relayed Mbit/s, $label"; VALUE["$server|relayed Mbit/s, $label"]="$(field mbit_per_s "$result")"
    add_metric "loss %, $label"; VALUE["$server|loss %, $label"]="$(field loss_pct "$result")"
    add_metric "server CPU µs/packet, $label"
    VALUE["$server|server CPU µs/packet, $label"]="$(awk -v a="$before" -v b="$after" -v hz="$HZ" -v n="$total" \
        'BEGIN { if (n > 0) printf "%.2f", 1e6 * (b - a) / hz / n; else print "n/a" }')"
    # Server CPU over the whole flood (set-up, warm-up and drain included), as a share of one core.
    add_metric "server CPU %, $label"
    VALUE["$server|server CPU %, $label"]="$(cpu_share "$before" "$after" "$t0" "$t1")"
    add_metric "generator CPU %, $label"; VALUE["$server|generator CPU %, $label"]="$(field client_cpu_pct "$result")"
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
    local transport p payload
    if has_part flood; then
        for transport in $TRANSPORTS; do
            p="$port"; [ "$transport" = tls ] && p="$tls_port"
            for payload in $PAYLOADS; do relay_run "$server" "$pid" "$p" "$transport" "$payload"; done
        done
    fi
    if has_part allocate; then
        for transport in $TRANSPORTS; do
            p="$port"; [ "$transport" = tls ] && p="$tls_port"
            allocate_run "$server" "$pid" "$p" "$transport"
        done
    fi
}

# Starts our relay on CPUs $1 with extra arguments after it; sets SERVER_PID.
start_ours() {
    local cpus="$1"; shift
    taskset -c "$cpus" "$BIN/trav" relay --listen 127.0.0.1 --port "$OURS_PORT" --tls-port "$OURS_TLS_PORT" \
        --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem" --user "$USER_NAME:$USER_PASSWORD" --realm "$REALM" \
        --relay-allow-peers 127.0.0.0/8 --user-quota 100000 --user-bandwidth 0 --challenge-rate 1000000 \
        --drain-seconds 0 "$@" >> "$WORK/trav.log" 2>&1 &
    SERVER_PID=$!
    STARTED+=("$SERVER_PID")
}

# Starts coturn on CPUs $1 with $2 relay threads; sets SERVER_PID.
start_coturn() {
    taskset -c "$1" turnserver -n --no-cli --listening-ip 127.0.0.1 --relay-ip 127.0.0.1 \
        --listening-port "$COTURN_PORT" --tls-listening-port "$COTURN_TLS_PORT" --cert "$WORK/cert.pem" --pkey "$WORK/key.pem" \
        --lt-cred-mech --user "$USER_NAME:$USER_PASSWORD" --realm "$REALM" --allow-loopback-peers --no-dtls \
        --relay-threads "$2" --no-rfc5780 --no-software-attribute \
        --db "$WORK/turndb" --pidfile "$WORK/turnserver.pid" \
        --no-stdout-log --log-file "$WORK/coturn.log" --simple-log > /dev/null 2>&1 &
    SERVER_PID=$!
    STARTED+=("$SERVER_PID")
}

# $1 label (trav, coturn or direct), $2 scenario N:PPS:BYTES, $3 core setting, $4 generator CPUs, rest: watched pids
media_run() {
    local server="$1" scenario="$2" cores="$3" gen_cpus="$4"; shift 4
    local n pps bytes port target_args=() watch_args=() pid
    IFS=: read -r n pps bytes <<<"$scenario"
    case "$server" in
        trav) port="$OURS_PORT" ;;
        coturn) port="$COTURN_PORT" ;;
        direct) port="$OURS_PORT"; target_args=(--direct) ;;
    esac
    for pid in "$@"; do watch_args+=(--watch-pid "$pid"); done
    local out="$WORK/$server-media-$n-$pps-$bytes-$cores.out"
    # Servers are compared back to back: the load each run met is part of its figure.
    echo "bench-relay: $server $scenario $cores: load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    taskset -c "$gen_cpus" "$BIN/turn-flood" media --target "127.0.0.1:$port" --user "$USER_NAME:$USER_PASSWORD" \
        --allocations "$n" --pps "$pps" --payload "$bytes" --direction "$MEDIA_DIRECTION" \
        --warmup "$MEDIA_WARMUP" --duration "$MEDIA_DURATION" "${target_args[@]}" "${watch_args[@]}" > "$out" 2>&1 \
        || { cat "$out" >&2; echo "bench-relay: media run of $server ($scenario, $cores) failed" >&2; return 1; }
    grep -a '^setup' "$out" | sed "s/^/bench-relay: $server $scenario $cores: /" >&2
    local result; result="$(grep -a '^RESULT' "$out")"
    local label="$n × $pps/s × $bytes B, $cores core"
    [ "$cores" = all ] && label="$n × $pps/s × $bytes B, all cores"
    if [ "$server" = direct ]; then
        DIRECT_P50="$(field p50_us "$result")"; DIRECT_P99="$(field p99_us "$result")"
        return 0
    fi
    add_metric "$label: loss %"; VALUE["$server|$label: loss %"]="$(field loss_pct "$result")"
    local p50 p99; p50="$(field p50_us "$result")"; p99="$(field p99_us "$result")"
    add_metric "$label: added latency p50 µs"
    VALUE["$server|$label: added latency p50 µs"]="$(awk -v a="$p50" -v b="$DIRECT_P50" 'BEGIN { if (a != "" && b != "") print a - b; else print "n/a" }')"
    add_metric "$label: added latency p99 µs"
    VALUE["$server|$label: added latency p99 µs"]="$(awk -v a="$p99" -v b="$DIRECT_P99" 'BEGIN { if (a != "" && b != "") print a - b; else print "n/a" }')"
    add_metric "$label: server CPU %"; VALUE["$server|$label: server CPU %"]="$(field server_cpu_pct "$result")"
    add_metric "$label: memory B/allocation"; VALUE["$server|$label: memory B/allocation"]="$(field bytes_per_allocation "$result")"
}

# The media scenarios: per core setting and scenario, the direct anchor, then our relay, then coturn, each started afresh.
measure_media() {
    local cores scenario server_cpus gen_cpus threads softirq ours_args=()
    local all_cpus="0-$(( $(nproc) - 1 ))"
    for cores in $MEDIA_CORES; do
        if [ "$cores" = one ]; then
            server_cpus=0; gen_cpus=1; threads=1; softirq="$SOFTIRQ_PID"
        else
            server_cpus="$all_cpus"; gen_cpus="$all_cpus"; threads="$(nproc)"
            softirq="$(pgrep '^ksoftirqd/' | tr '\n' ' ')"
        fi
        ours_args=(--threads "$threads")
        for scenario in $MEDIA; do
            media_run direct "$scenario" "$cores" "$gen_cpus"
            start_ours "$server_cpus" "${ours_args[@]}"
            wait_ready "$SERVER_PID" "$OURS_PORT" "$OURS_TLS_PORT"
            # shellcheck disable=SC2086
            media_run trav "$scenario" "$cores" "$gen_cpus" "$SERVER_PID" $softirq
            stop_pid "$SERVER_PID" INT
            start_coturn "$server_cpus" "$threads"
            wait_ready "$SERVER_PID" "$COTURN_PORT" "$COTURN_TLS_PORT"
            # shellcheck disable=SC2086
            media_run coturn "$scenario" "$cores" "$gen_cpus" "$SERVER_PID" $softirq
            stop_pid "$SERVER_PID" KILL
        done
    done
}

echo "bench-relay: $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "bench-relay: parts: ${PARTS}"
has_part flood && echo "bench-relay: relay over ${TRANSPORTS}, ${LANES} lanes × window ${WINDOW}, payloads ${PAYLOADS} B," \
    "rate ${RATE:-max}, warm-up ${WARMUP}s, measured ${DURATION}s"
has_part allocate && echo "bench-relay: allocations ${CONCURRENCY} at once over ${TRANSPORTS}, measured ${ALLOC_DURATION}s"
has_part media && echo "bench-relay: media ${MEDIA} (allocations:packets/s:bytes, ${MEDIA_DIRECTION}), cores ${MEDIA_CORES}," \
    "warm-up ${MEDIA_WARMUP}s, measured ${MEDIA_DURATION}s"

if has_part flood || has_part allocate; then
    start_ours 0 --threads 1
    measure trav "$SERVER_PID" "$OURS_PORT" "$OURS_TLS_PORT"
    stop_pid "$SERVER_PID" INT
    start_coturn 0 1
    measure coturn "$SERVER_PID" "$COTURN_PORT" "$COTURN_TLS_PORT"
    stop_pid "$SERVER_PID" KILL
fi
has_part media && measure_media

echo
printf '%-56s %12s %12s %8s\n' metric "trav" coturn "ratio"
for m in "${METRICS[@]}"; do
    a="${VALUE["trav|$m"]:-n/a}"; b="${VALUE["coturn|$m"]:-n/a}"
    r="$(awk -v a="$a" -v b="$b" 'BEGIN { if (a != "n/a" && b != "n/a" && b > 0) printf "%.2f×", a / b; else print "" }')"
    printf '%-56s %12s %12s %8s\n' "$m" "$a" "$b" "$r"
done
if has_part flood; then
    echo
    first="${TRANSPORTS%% *} ${PAYLOADS%% *} B"
    echo "goal: trav ≥ 1.2× coturn's relayed packets/s (ratio above, ${first}: ${VALUE["trav|relayed packets/s, $first"]:-n/a} vs ${VALUE["coturn|relayed packets/s, $first"]:-n/a})"
fi
if has_part media; then
    echo "goals at media rates: no loss, added latency well under 1000 µs, server CPU and memory per allocation ≤ coturn's (ratio ≤ 1)"
fi
