#!/usr/bin/env bash
# bench-cloud.sh — a reconnect storm: N registered cameras, the cloud killed and restarted.
#
#   Scripts/bench-cloud.sh [--cameras N] [--per-process M] [--debug] [--build-path DIR] [--no-build] [--memory-store]
#
# Builds release (or uses the debug build with --debug), then on loopback only:
#   1. starts `trav cloud --listen 127.0.0.1` with a fresh data directory (its SQLite device store);
#   2. starts ceil(N/M) `cloud-storm` processes, each with an open-files budget of M + 64
#      (`ulimit -n`), each keeping M cameras registered with the real camera client; prints how long
#      the N first registrations took (each pays the UID's scrypt once) and the cloud's memory per camera;
#   3. kills the cloud with SIGKILL, starts it again on the same port and data directory, and prints
#      the seconds from the restart until 50 / 90 / 99 / 100 % of the cameras registered again, and
#      the scrypts the restarted cloud ran (none, with the device store; --memory-store shows the
#      cost without it).
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
PORT=45349          # loopback TLS port of the cloud; must be free
WAIT_FIRST=900      # seconds allowed for the first registrations
WAIT_STORM=300      # seconds allowed for the storm
while [ $# -gt 0 ]; do
    case "$1" in
        --cameras) CAMERAS="$2"; shift 2 ;;
        --per-process) PER_PROCESS="$2"; shift 2 ;;
        --debug) CONFIG=debug; shift ;;
        --build-path) BUILD_PATH="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --memory-store) STORE=memory; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "bench-cloud.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
if [ "$BUILD" = 1 ]; then
    swift build -c "$CONFIG" --scratch-path "$BUILD_PATH" --product trav >&2
    swift build -c "$CONFIG" --scratch-path "$BUILD_PATH" --product cloud-storm >&2
fi
BIN="$BUILD_PATH/$CONFIG"
WORK=$(mktemp -d /tmp/trav-bench-cloud.XXXXXX)
CLOUD_PID=""
GENERATORS=()
cleanup() {
    [ -n "$CLOUD_PID" ] && kill -9 "$CLOUD_PID" 2>/dev/null || true
    for pid in "${GENERATORS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

now_ms() { date +%s%3N; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

start_cloud() {
    : > "$WORK/cloud.log"
    "$BIN/trav" cloud --listen 127.0.0.1 --data "$WORK/data" --stun-port 0 --tls-port "$PORT" --no-relay \
        --max-connections $((CAMERAS + 1000)) --max-connections-per-source $((CAMERAS + 100)) \
        --unverified-registration-burst "$CAMERAS" --unverified-registrations-per-second 100000 \
        --device-store "$STORE" >"$WORK/cloud.log" 2>&1 &
    CLOUD_PID=$!
    for _ in $(seq 1 200); do
        grep -q "cloud signalling tls" "$WORK/cloud.log" && return 0
        sleep 0.05
    done
    echo "bench-cloud.sh: the cloud did not start:" >&2; cat "$WORK/cloud.log" >&2; exit 1
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "cameras $CAMERAS, $PER_PROCESS per process, $CONFIG build, device store $STORE"
start_cloud
BASE_RSS=$(rss_kib "$CLOUD_PID")
CA="$WORK/data/ca.pem"

FIRST_START=$(now_ms)
remaining=$CAMERAS
i=0
while [ "$remaining" -gt 0 ]; do
    n=$(( remaining < PER_PROCESS ? remaining : PER_PROCESS ))
    ( ulimit -n $((n + 64)); exec "$BIN/cloud-storm" --port "$PORT" --ca "$CA" --cameras "$n" \
        --seconds $((WAIT_FIRST + WAIT_STORM + 60)) >"$WORK/gen-$i.log" ) &
    GENERATORS+=($!)
    remaining=$((remaining - n)); i=$((i + 1))
done

# Cameras (generator file and index) that registered at or after $1 (unix ms).
count_since() { awk -v since="$1" '$1 == "R" && $3 >= since { seen[FILENAME ":" $2] = 1 } END { print length(seen) }' "$WORK"/gen-*.log; }

deadline=$(( $(date +%s) + WAIT_FIRST ))
while [ "$(count_since 0)" -lt "$CAMERAS" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "bench-cloud.sh: only $(count_since 0) of $CAMERAS registered in ${WAIT_FIRST}s" >&2; exit 1; }
    sleep 0.5
done
FIRST_END=$(awk '$1 == "R" { if ($3 > m) m = $3 } END { print m }' "$WORK"/gen-*.log)
sleep 2
RSS=$(rss_kib "$CLOUD_PID")
awk -v n="$CAMERAS" -v ms=$((FIRST_END - FIRST_START)) 'BEGIN { printf "first registrations (one scrypt each, cameras deriving their UIDs too): %d in %.1f s (%.0f/s)\n", n, ms / 1000, n * 1000 / ms }'
awk -v n="$CAMERAS" -v base="$BASE_RSS" -v rss="$RSS" 'BEGIN { printf "cloud memory: %.1f MiB at start, %.1f MiB with %d cameras: %.1f KiB per camera\n", base / 1024, rss / 1024, n, (rss - base) / n }'

KILLED=$(now_ms)
kill -9 "$CLOUD_PID"
wait "$CLOUD_PID" 2>/dev/null || true
RESTARTED=$(now_ms)
start_cloud
deadline=$(( $(date +%s) + WAIT_STORM ))
while [ "$(count_since "$KILLED")" -lt "$CAMERAS" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || break
    sleep 0.2
done
awk -v since="$KILLED" '$1 == "R" && $3 >= since && !((FILENAME ":" $2) in first) { first[FILENAME ":" $2] = $3 }
    END { for (k in first) print first[k] }' "$WORK"/gen-*.log | sort -n >"$WORK/storm.txt"
python3 - "$WORK/storm.txt" "$CAMERAS" "$RESTARTED" "$KILLED" <<'EOF'
import sys
times = [int(line) for line in open(sys.argv[1]) if line.strip()]
n, restarted, killed = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(f"storm: SIGKILL, restart {restarted - killed} ms later; registered again, seconds after the restart:")
for share in (50, 90, 99, 100):
    need = max(1, -(-n * share // 100))
    value = f"{(times[need - 1] - restarted) / 1000:.2f}" if len(times) >= need else "not reached"
    print(f"  {share:3d} %: {value}")
print(f"  {len(times)} of {n} registered again")
EOF
