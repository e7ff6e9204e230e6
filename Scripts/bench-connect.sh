#!/usr/bin/env bash
# bench-connect.sh — connect time per camera × viewer pair over real kernel NAT (needs root).
#
#   Scripts/bench-connect.sh [--runs N] [--no-build] [--json] [--html FILE]
#
# Builds release, then runs `trav compare --race-only --runs N` (default 20): the NAT lab in network
# namespaces (documentation and private ranges only, removed afterwards), one camera per NAT
# behaviour, and for each pair N connections with every strategy raced, the viewer's key paired
# with the camera. It prints per pair the winner, median and p99 setup time (from the start of
# `connect` to the camera's welcome), one setup with the password instead (the camera's scrypt
# check), and `trav probe`'s prediction.
#
# The first run of each pair also checks the camera's UID (one scrypt, ~40 ms); later runs know the
# camera's key (`trav connect --known-cameras`), as an app would. Goal for the pairs that do not
# need the birthday method: p50 ≤ 50 ms, p99 ≤ 200 ms. Other load on the machine skews the figures:
# the script prints the load average it started with.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=20   # raced connections per pair (median and p99 over these)
BUILD=1
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --json) EXTRA+=(--json); shift ;;
        --html) EXTRA+=(--html "$2"); shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "bench-connect.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "bench-connect.sh: needs root (network namespaces)" >&2; exit 2; }
if [ "$BUILD" = 1 ]; then swift build -c release --product trav >&2; fi
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exec .build/release/trav compare --race-only --runs "$RUNS" "${EXTRA[@]}"
