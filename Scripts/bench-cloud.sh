#!/usr/bin/env bash
# bench-cloud.sh — presence capacity and a reconnect storm: N registered cameras, idle, then the cloud
# killed and restarted; once with every camera on TLS presence, once on UDP presence (and, with
# --presence stream or all, once behind networks that block UDP: presence streams).
#
#   Scripts/bench-cloud.sh [--cameras N] [--per-process M] [--presence both|all|tls|udp|stream] [--idle-seconds S]
#                          [--keepalive S] [--debug] [--build-path DIR] [--no-build] [--memory-store] [--keep DIR]
#                          [--seed] [--namespaces K]
#
# --seed prepares the fleet without any scrypt (for N beyond what the machine can derive UIDs for): each
# generator's cameras get made-up UIDs whose bindings are written into the cloud's store as verified
# (`cloud-storm --seed-store`); registrations then cost what a known device's does, a signature check.
# --namespaces K runs the generators in K network namespaces of their own (10.203.J.2 on a bridge with the cloud at
# 10.203.0.1, addresses that exist only there), so N is not capped by one source address's 28 232 ephemeral ports.
# The stream mode needs them: its namespaces drop every UDP datagram to the cloud (nftables), as a network that
# blocks UDP does, so each camera's probes go unanswered and it keeps its presence on a TCP stream to the signalling
# port (`S` events); the cloud is the UDP mode's, and after the restart a camera's stream reconnects and its next
# keepalive restores the session from its ticket.
#
# Builds release (or uses the debug build with --debug), then on loopback only, for each presence mode:
#   1. starts `trav cloud --listen 127.0.0.1` with its data directory (its SQLite device store;
#      `--no-presence` in the TLS mode, so it holds nothing but the TLS sessions); the modes share it, and the
#      generators keep their cameras' keys and UIDs (`cloud-storm --identities`), so only the first mode pays
#      the scrypts; with --keep DIR both live in DIR and later runs pay none (for large N, whose first
#      registrations cost 2·N scrypts on the machine's cores);
#   2. starts ceil(N/M) `cloud-storm` processes, each with an open-files budget (`ulimit -n`) of 2·M + 64 in
#      the UDP mode (a camera registering holds its TLS connection and its UDP socket, and after a restart all
#      of a process's cameras register at once) and M + 64 in the TLS mode, each keeping M cameras registered with the real camera client (`--presence tls`:
#      on TLS; `udp`: TLS closed 1 s after registering, presence kept by UDP keepalives); prints how long
#      the N first registrations took (each pays the UID's scrypt once) and, once every camera is idle
#      in its mode, the cloud's resident memory per camera;
#   3. lets them idle for --idle-seconds and prints the cloud's CPU time per camera and per keepalive
#      (TLS: a ping every 10 s; UDP: a datagram every --keepalive s), and its resident memory per camera again
#      (the cloud returns freed memory to the system every 30 s, `--heap-trim-seconds`: the TLS buffers of
#      the registrations; give --idle-seconds ≥ 32 to see it);
#   4. kills the cloud with SIGKILL, starts it again on the same port and data directory, and prints
#      the seconds from the restart until 50 / 90 / 99 / 100 % of the cameras are back at the cloud, counted
#      by the restarted cloud's metrics (`cloud_registrations_total` over TLS plus `cloud_presence_restored_total`:
#      on UDP a camera's next keepalive restores its session, without TLS), and how many re-registered over TLS.
# The TLS figures are the anchor the UDP ones are read against, measured in the same run.
# Every process and file the script creates is removed on exit, on Ctrl-C and on failure; each wait
# is bounded. Other load on the machine skews the figures: the load average at start is printed.
set -euo pipefail
cd "$(dirname "$0")/.."

CAMERAS=2000
PER_PROCESS=1000
CONFIG=release
BUILD_PATH=.build   # --build-path: SwiftPM's scratch path
BUILD=1
STORE=sqlite
MODES="tls udp"
IDLE=60             # seconds of idle in which the cloud's CPU is measured
KEEPALIVE=20        # UDP presence keepalive interval, seconds
LINGER=1            # seconds a camera keeps TLS after registering, in the UDP mode
PORT=45349          # loopback TLS port of the cloud (and UDP port of presence); must be free
WAIT_FIRST=900      # seconds allowed for the first registrations
WAIT_UDP=120        # seconds allowed for every camera to close TLS, in the UDP mode
WAIT_STORM=300      # seconds allowed for the storm
SEED=0
NAMESPACES=0
CLOUD_IP=127.0.0.1
while [ $# -gt 0 ]; do
    case "$1" in
        --cameras) CAMERAS="$2"; shift 2 ;;
        --per-process) PER_PROCESS="$2"; shift 2 ;;
        --presence)
            case "$2" in both) MODES="tls udp" ;; all) MODES="tls udp stream" ;; tls|udp|stream) MODES="$2" ;;
                *) echo "bench-cloud.sh: --presence is both, all, tls, udp or stream" >&2; exit 2 ;; esac
            shift 2 ;;
        --idle-seconds) IDLE="$2"; shift 2 ;;
        --keepalive) KEEPALIVE="$2"; shift 2 ;;
        --debug) CONFIG=debug; shift ;;
        --build-path) BUILD_PATH="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --memory-store) STORE=memory; shift ;;
        --keep) KEEP="$2"; shift 2 ;;
        --seed) SEED=1; shift ;;
        --namespaces) NAMESPACES="$2"; shift 2 ;;
        -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
        *) echo "bench-cloud.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
if [ "$BUILD" = 1 ]; then
    swift build -c "$CONFIG" --scratch-path "$BUILD_PATH" --product trav >&2
    swift build -c "$CONFIG" --scratch-path "$BUILD_PATH" --product cloud-storm >&2
fi
BIN="$BUILD_PATH/$CONFIG"
WORK=$(mktemp -d /tmp/trav-bench-cloud.XXXXXX)
KEEP=${KEEP:-$WORK}
mkdir -p "$KEEP"
CLOUD_PID=""
CG_CLOUD=""; CG_GEN=""; CG_V2_ENABLED=""
GENERATORS=()
cleanup() {
    [ -n "$CLOUD_PID" ] && kill -9 "$CLOUD_PID" 2>/dev/null || true
    for pid in "${GENERATORS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    # The veth too: a namespace a process still holds outlives `ip netns del`, and so does its pair's root end.
    for ((j = 0; j < NAMESPACES; j++)); do
        ip netns del "travstorm-$j" 2>/dev/null || true
        ip link del "travstorm-v$j" 2>/dev/null || true
    done
    [ "$NAMESPACES" -gt 0 ] && ip link del travstorm0 2>/dev/null || true
    rm -rf "$WORK"
    # A cgroup is removed once its processes are gone (killed and waited for above).
    for dir in "$CG_CLOUD" "$CG_GEN"; do [ -z "$dir" ] || rmdir "$dir" 2>/dev/null || true; done
    [ -z "$CG_V2_ENABLED" ] || echo -cpu > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
}
trap cleanup EXIT INT TERM

if [ "$NAMESPACES" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "bench-cloud.sh: --namespaces needs root" >&2; exit 1; }
    ip link add travstorm0 type bridge
    ip addr add 10.203.0.1/16 dev travstorm0
    ip link set travstorm0 up
    for ((j = 0; j < NAMESPACES; j++)); do
        ip netns add "travstorm-$j"
        ip link add "travstorm-v$j" type veth peer name eth0 netns "travstorm-$j"
        ip link set "travstorm-v$j" master travstorm0 up
        ip -n "travstorm-$j" addr add "10.203.$((j + 1)).2/16" dev eth0
        ip -n "travstorm-$j" link set eth0 up
        ip -n "travstorm-$j" link set lo up
    done
    CLOUD_IP=10.203.0.1
fi

# CPU shares: the cloud and the generators (cameras on machines of their own) each get half the machine's CPU
# when both want more, and either may use what the other leaves (cgroup `cpu.shares` 1024 each, or `cpu.weight`
# 100 on cgroup v2). Not `nice`: libdispatch gives each thread it starts the nice value of its QoS class (0, or
# -4), so niced generators ran nearly all their threads at the cloud's priority and the cloud's presence thread
# waited on the run queue seven times as long as it ran; and not SCHED_IDLE for the generators, under which a
# cloud busy with a TLS storm starved the clients of their handshakes. Without a writable cgroup hierarchy
# (not root), everything runs in the caller's.
#
# The hierarchy with a cpu controller, found once: v1's cpu mount, or v2's root with cpu enabled for its children
# (enabled here when it was not, and disabled again at exit).
CG_BASE=""; CG_KNOB=""; CG_SHARE=""
if [ "$(id -u)" = 0 ]; then
    if [ -f /sys/fs/cgroup/cpu/cpu.shares ] && [ -w /sys/fs/cgroup/cpu ]; then
        CG_BASE=/sys/fs/cgroup/cpu; CG_KNOB=cpu.shares; CG_SHARE=1024
    elif grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null && [ -w /sys/fs/cgroup ]; then
        if ! grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control; then
            echo +cpu > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null && CG_V2_ENABLED=1
        fi
        grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control && { CG_BASE=/sys/fs/cgroup; CG_KNOB=cpu.weight; CG_SHARE=100; }
    fi
fi
make_cgroup() {   # $1 name; prints the directory, or nothing
    [ -n "$CG_BASE" ] || return 0
    mkdir "$CG_BASE/$1" 2>/dev/null && echo "$CG_SHARE" > "$CG_BASE/$1/$CG_KNOB" 2>/dev/null && echo "$CG_BASE/$1"
}
CG_CLOUD=$(make_cgroup "travbench-cloud-$$" || true)
CG_GEN=$(make_cgroup "travbench-cameras-$$" || true)
if [ -n "$CG_CLOUD" ] && [ -n "$CG_GEN" ]; then
    echo "cpu: the cloud and the generators get half the CPU each when both want more ($(dirname "$CG_CLOUD"))"
else
    for dir in "$CG_CLOUD" "$CG_GEN"; do [ -z "$dir" ] || rmdir "$dir" 2>/dev/null || true; done
    CG_CLOUD=""; CG_GEN=""
    echo "cpu: no writable cgroup hierarchy; the cloud and the generators share the CPU unweighted"
fi
# Moves the calling (sub)shell into cgroup $1, so whatever it execs and every thread of that is in it.
join_cgroup() { [ -z "$1" ] || echo "$BASHPID" > "$1/cgroup.procs"; }

now_ms() { date +%s%3N; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# The cloud's resident memory now, over its start ($2 KiB), per camera; $1 says when.
report_memory() {
    awk -v n="$CAMERAS" -v base="$2" -v rss="$(rss_kib "$CLOUD_PID")" -v mode="$MODE" -v when="$1" 'BEGIN {
        printf "cloud memory (%s presence) %s: %.1f MiB at start, %.1f MiB with %d cameras: %.1f KiB per camera\n",
            mode, when, base / 1024, rss / 1024, n, (rss - base) / n }'
}
# Datagrams the kernel dropped at the cloud's presence socket because its receive buffer was full (`ss`'s skmem d…):
# keepalives the cloud never saw; 0 in the TLS mode.
presence_drops() {
    ss -uamn "sport = :$PORT" 2>/dev/null | grep -o 'd[0-9]*)' | tr -d 'd)' | awk '{ n += $1 } END { print n + 0 }'
}
# The running cloud's metrics (Prometheus text), empty before it printed where they are.
cloud_metrics() {
    local url
    url=$(awk '/^cloud metrics / { print $3; exit }' "$WORK/cloud.log")
    [ -n "$url" ] || return 0
    curl -s --max-time 2 "$url" || true
}
# The cloud's heap trims so far (`malloc_trim` holds the allocator's locks while it runs: every thread that allocates waits).
heap_trims() {
    cloud_metrics | awk '/^process_heap_trim_duration_seconds_sum / { s = $2 } /^process_heap_trim_duration_seconds_count / { n = $2 }
        END { if (n > 0) printf "%d heap trims, %.3f s in all, %.1f ms each on average", n, s, 1000 * s / n; else print "no heap trim yet" }'
}
# User + system CPU of a process in clock ticks (fields 14 and 15 of /proc/PID/stat; the name may hold spaces).
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
TICKS=$(getconf CLK_TCK)

start_cloud() {
    : > "$WORK/cloud.log"
    # Every camera here shares one source address (127.0.0.1): its presence rate limit is lifted.
    local presence=(--presence-keepalive "$KEEPALIVE" --presence-datagrams-per-second 1000000)
    if [ "$MODE" = tls ]; then presence=(--no-presence); fi
    ( join_cgroup "$CG_CLOUD"; exec "$BIN/trav" cloud --listen "$CLOUD_IP" --data "$KEEP/data" --stun-port 0 --tls-port "$PORT" --no-relay --metrics-listen 127.0.0.1:0 \
        --max-connections $((CAMERAS + 1000)) --max-connections-per-source $((CAMERAS + 100)) \
        --unverified-registration-burst "$CAMERAS" --unverified-registrations-per-second 100000 \
        --device-store "$STORE" "${presence[@]}" >"$WORK/cloud.log" 2>&1 ) &
    CLOUD_PID=$!
    for _ in $(seq 1 200); do
        grep -q "cloud signalling tls" "$WORK/cloud.log" && return 0
        sleep 0.05
    done
    echo "bench-cloud.sh: the cloud did not start:" >&2; cat "$WORK/cloud.log" >&2; exit 1
}

# Cameras back at the cloud since it started: registered over TLS plus presence sessions restored from keepalives.
cloud_back() {
    cloud_metrics | awk '/^cloud_registrations_total / || /^cloud_presence_restored_total / { n += $2 } END { print n + 0 }'
}

# Cameras (generator file and index) that registered at or after $1 (unix ms).
count_since() { awk -v since="$1" '$1 == "R" && $3 >= since { seen[FILENAME ":" $2] = 1 } END { print length(seen) }' "$WORK"/gen-*.log; }
# Cameras whose latest presence event is $1 (U: TLS closed, present over UDP alone; S: on a presence stream alone).
count_presence() {
    awk -v want="$1" '$1 == "U" || $1 == "S" || $1 == "T" { last[FILENAME ":" $2] = $1 }
        END { n = 0; for (k in last) if (last[k] == want) n++; print n }' "$WORK"/gen-*.log
}
# The letter of the mode's presence events and what it is called.
presence_letter() { if [ "$MODE" = stream ]; then echo S; else echo U; fi; }
presence_name() { if [ "$MODE" = stream ]; then echo "a presence stream"; else echo "UDP"; fi; }
# Drops, in every generator namespace, UDP to the cloud (on) or stops dropping it (off).
block_udp() {
    for ((j = 0; j < NAMESPACES; j++)); do
        if [ "$1" = on ]; then
            ip netns exec "travstorm-$j" nft -f - <<NFT
table inet travstorm_noudp {
    chain out { type filter hook output priority 0; policy accept; ip daddr $CLOUD_IP udp dport $PORT drop; }
}
NFT
        else
            ip netns exec "travstorm-$j" nft delete table inet travstorm_noudp 2>/dev/null || true
        fi
    done
}

# With --seed: made-up UIDs for every generator's cameras, their bindings written into the store (once per --keep DIR).
seed_fleet() {
    local remaining=$CAMERAS i=0 n
    [ -e "$KEEP/seeded-$CAMERAS-$PER_PROCESS" ] && return 0
    mkdir -p "$KEEP/data"
    while [ "$remaining" -gt 0 ]; do
        n=$(( remaining < PER_PROCESS ? remaining : PER_PROCESS ))
        "$BIN/cloud-storm" --cameras "$n" --identities "$KEEP/ids-$i" --seed-store "$KEEP/data/devices.sqlite" >/dev/null
        remaining=$((remaining - n)); i=$((i + 1))
    done
    touch "$KEEP/seeded-$CAMERAS-$PER_PROCESS"
}

run_mode() {
    MODE=$1
    echo
    echo "== presence $MODE: cameras $CAMERAS, $PER_PROCESS per process, $CONFIG build, device store $STORE"
    if [ "$MODE" = stream ]; then
        [ "$NAMESPACES" -gt 0 ] || { echo "bench-cloud.sh: the stream mode needs --namespaces (UDP is blocked there)" >&2; exit 1; }
        block_udp on
    fi
    rm -f "$WORK"/gen-*.log
    start_cloud
    local base_rss ca first_start first_end cpu0 cpu1 t0 t1 interval killed restarted remaining n i
    base_rss=$(rss_kib "$CLOUD_PID")
    ca="$KEEP/data/ca.pem"

    first_start=$(now_ms)
    remaining=$CAMERAS
    i=0
    while [ "$remaining" -gt 0 ]; do
        n=$(( remaining < PER_PROCESS ? remaining : PER_PROCESS ))
        # A camera registering with presence holds TLS and its UDP socket, and behind a UDP block its stream too.
        files=$((n + 64)); if [ "$MODE" = udp ]; then files=$((2 * n + 64)); elif [ "$MODE" = stream ]; then files=$((3 * n + 64)); fi
        local generator_mode=$MODE
        if [ "$MODE" = stream ]; then generator_mode=udp; fi
        local netns=()
        if [ "$NAMESPACES" -gt 0 ]; then netns=(ip netns exec "travstorm-$((i % NAMESPACES))"); fi
        # In the cameras' CPU share (see join_cgroup); the log exists before the generator starts, for the counts below.
        : >"$WORK/gen-$i.log"
        ( ulimit -n "$files"; join_cgroup "$CG_GEN"; exec "${netns[@]}" "$BIN/cloud-storm" --host "$CLOUD_IP" --port "$PORT" --ca "$ca" --cameras "$n" --presence "$generator_mode" \
            --linger "$LINGER" --identities "$KEEP/ids-$i" --seconds $((WAIT_FIRST + WAIT_UDP + IDLE + WAIT_STORM + 60)) >"$WORK/gen-$i.log" ) &
        GENERATORS+=($!)
        remaining=$((remaining - n)); i=$((i + 1))
    done

    local deadline=$(( $(date +%s) + WAIT_FIRST ))
    while [ "$(count_since 0)" -lt "$CAMERAS" ]; do
        [ "$(date +%s)" -lt "$deadline" ] || { echo "bench-cloud.sh: only $(count_since 0) of $CAMERAS registered in ${WAIT_FIRST}s; $(presence_drops) keepalives dropped at the presence socket" >&2; exit 1; }
        sleep 0.5
    done
    first_end=$(awk '$1 == "R" { if ($3 > m) m = $3 } END { print m }' "$WORK"/gen-*.log)
    awk -v n="$CAMERAS" -v ms=$((first_end - first_start)) 'BEGIN { printf "first registrations (a new device costs a scrypt in the cloud and one in its generator, a known one none): %d in %.1f s (%.0f/s)\n", n, ms / 1000, n * 1000 / ms }'
    if [ "$MODE" != tls ]; then
        deadline=$(( $(date +%s) + WAIT_UDP ))
        while [ "$(count_presence "$(presence_letter)")" -lt "$CAMERAS" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.5; done
        echo "present over $(presence_name) alone (TLS closed): $(count_presence "$(presence_letter)") of $CAMERAS"
        if [ "$MODE" = stream ]; then
            echo "presence streams open at the cloud: $(cloud_metrics | awk '/^cloud_presence_streams / { print $2 + 0 }')"
        fi
    fi
    sleep 3
    report_memory "once every camera is idle" "$base_rss"
    echo "keepalives dropped at the cloud's presence socket so far (receive buffer full): $(presence_drops)"

    cpu0=$(cpu_ticks "$CLOUD_PID"); t0=$(now_ms)
    sleep "$IDLE"
    cpu1=$(cpu_ticks "$CLOUD_PID"); t1=$(now_ms)
    interval=10
    if [ "$MODE" != tls ]; then interval=$KEEPALIVE; fi
    awk -v n="$CAMERAS" -v ticks=$((cpu1 - cpu0)) -v hz="$TICKS" -v ms=$((t1 - t0)) -v every="$interval" -v mode="$MODE" 'BEGIN {
        cpu = ticks / hz; seconds = ms / 1000; keepalives = n * seconds / every
        printf "idle CPU (%s presence, a keepalive every %d s): %.2f s in %.0f s (%.2f %% of a core): %.2f µs per camera per second, %.0f µs per keepalive\n",
            mode, every, cpu, seconds, 100 * cpu / seconds, 1e6 * cpu / seconds / n, 1e6 * cpu / keepalives }'
    if [ "$MODE" != tls ]; then echo "present over $(presence_name) alone after the idle: $(count_presence "$(presence_letter)") of $CAMERAS"; fi
    report_memory "after $IDLE s idle (freed memory returned every 30 s)" "$base_rss"
    echo "keepalives dropped at the cloud's presence socket so far (receive buffer full): $(presence_drops)"
    echo "the cloud's $(heap_trims)"

    killed=$(now_ms)
    kill -9 "$CLOUD_PID"
    wait "$CLOUD_PID" 2>/dev/null || true
    restarted=$(now_ms)
    start_cloud
    deadline=$(( $(date +%s) + WAIT_STORM ))
    : > "$WORK/storm.txt"
    while true; do
        back=$(cloud_back)
        echo "$(now_ms) $back" >>"$WORK/storm.txt"
        [ "$back" -lt "$CAMERAS" ] || break
        [ "$(date +%s)" -lt "$deadline" ] || break
        sleep 0.2
    done
    python3 - "$WORK/storm.txt" "$CAMERAS" "$restarted" "$killed" "$MODE" "$(count_since "$killed")" <<'EOF'
import sys
samples = [tuple(map(int, line.split())) for line in open(sys.argv[1]) if line.strip()]
n, restarted, killed, mode, over_tls = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
print(f"storm ({mode} presence): SIGKILL, restart {restarted - killed} ms later; back at the cloud, seconds after the restart:")
for share in (50, 90, 99, 100):
    need = max(1, -(-n * share // 100))
    at = next((t for t, back in samples if back >= need), None)
    print(f"  {share:3d} %: {f'{(at - restarted) / 1000:.2f}' if at is not None else 'not reached'}")
print(f"  {min(n, samples[-1][1]) if samples else 0} of {n} back; {over_tls} registered again over TLS")
EOF
    kill -9 "$CLOUD_PID" 2>/dev/null || true
    wait "$CLOUD_PID" 2>/dev/null || true
    CLOUD_PID=""
    for pid in "${GENERATORS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    GENERATORS=()
    if [ "$MODE" = stream ]; then block_udp off; fi
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
if [ "$SEED" = 1 ]; then seed_fleet; fi
for mode in $MODES; do run_mode "$mode"; done
