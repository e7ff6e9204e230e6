#!/usr/bin/env bash
# bench-browser.sh — a browser viewer's time from "connect" to its first decoded frame, on loopback.
#
#   Scripts/bench-browser.sh [--runs N] [--no-build] [--debug]
#
# Starts `trav cloud --web-port 0` and `trav camera --video default` on 127.0.0.1, then opens the cloud's
# viewer page in headless Chromium N times (default 10), the UID and password in the fragment as a
# bookmark would carry them. Each page reports to the cloud over its WebSocket the time from pressing
# connect to its first frame decoded by WebCodecs (`browser report {…}` in the cloud's output); the
# script prints their median and p99 and the path taken. The anchor, measured in the same run against
# the same camera: N native viewers' `trav connect` setups (connect to the camera's welcome, the same
# password check). Every run comes from 127.0.0.1, so the cloud's look-up limit is raised and its relay
# grants last 10 s (it holds at most 32 per source for their lifetime; loopback needs no relay). Every
# process and file it starts is removed at exit. The lab goal (issue 15) is a median ≤ 1 s on the
# `dsl` profile through NAT; this loopback run is the floor under that.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=10
BUILD=1
BIN=.build-release/release/trav
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --debug) BIN=.build/debug/trav; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "bench-browser.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROMIUM" ] || { echo "bench-browser.sh: needs chromium" >&2; exit 2; }
if [ "$BUILD" = 1 ]; then
    if [ "$BIN" = .build/debug/trav ]; then swift build --product trav >&2
    else swift build -c release --product trav --scratch-path .build-release >&2; fi
fi

work=$(mktemp -d /tmp/trav-bench-browser.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# The first line of FILE matching PATTERN, waiting up to 30 s for it.
await_line() {
    for _ in $(seq 300); do
        if line=$(grep -m1 -E "$2" "$1" 2>/dev/null); then echo "$line"; return 0; fi
        sleep 0.1
    done
    echo "bench-browser.sh: no '$2' in $1:" >&2; tail -5 "$1" >&2; return 1
}

# median and p99 of the numbers on stdin (nearest rank).
stats() { sort -n | awk '{v[NR]=$1} END {if (NR==0) {print "none"; exit} m=int((NR+1)/2); p=int(NR*0.99+0.999); if (p>NR) p=NR; if (p<1) p=1; printf "median %d ms, p99 %d ms (n=%d)\n", v[m], v[p], NR}'; }

"$BIN" cloud --listen 127.0.0.1 --data "$work/cloud" --stun-port 0 --tls-port 0 --relay-port 0 --web-port 0 \
    --relay-allow-peers 127.0.0.0/8 --device-store memory --lookup-burst 1000 --lookups-per-second 1000 --relay-grant-seconds 10 >"$work/cloud.log" 2>&1 &
pids+=($!)
tls=$(await_line "$work/cloud.log" '^cloud signalling tls ' | awk '{print $4}')
stun=$(await_line "$work/cloud.log" '^cloud stun udp ' | awk '{print $4}' | sed 's/.*://')
web=$(await_line "$work/cloud.log" '^cloud web ' | awk '{print $3}')
ca=$(await_line "$work/cloud.log" '^cloud ca ' | awk '{print $3}')
uid=$("$BIN" identity new --out "$work/cam.key" | grep -o -m1 'TRAV-[0-9A-Z-]*')
"$BIN" camera --identity "$work/cam.key" --cloud "$tls" --cloud-ca "$ca" --stun-port "$stun" --password bench --video default \
    --browser-host 127.0.0.1 --no-presence --lan-port 0 >"$work/camera.log" 2>&1 &
pids+=($!)
await_line "$work/camera.log" 'serving' >/dev/null
sleep 1
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

for i in $(seq "$RUNS"); do
    "$CHROMIUM" --headless=new --no-sandbox --disable-gpu --no-first-run --ignore-certificate-errors \
        --allow-loopback-in-peer-connection --disable-features=WebRtcHideLocalIpsWithMdns \
        --user-data-dir="$work/chromium-$i" "${web}#uid=$uid&password=bench&report=5" >"$work/chromium-$i.log" 2>&1 &
    browser=$!
    for _ in $(seq 600); do
        [ "$(grep -c '^browser report ' "$work/cloud.log" || true)" -ge "$i" ] && break
        sleep 0.1
    done
    kill "$browser" 2>/dev/null || true
    wait "$browser" 2>/dev/null || true
    rm -rf "$work/chromium-$i"
done
reports=$(grep '^browser report ' "$work/cloud.log" || true)
echo "browser (headless Chromium, WebRTC data channel, WebCodecs), connect → first decoded frame:"
echo "  $(grep -o '"firstFrameMs":[0-9]*' <<<"$reports" | cut -d: -f2 | stats)"
echo "  paths: $(grep -o '"path":"[a-z]*"' <<<"$reports" | sort | uniq -c | tr -s ' ' | tr '\n' ' ')"
echo "  failed: $(grep -c '"error"' <<<"$reports" || true) of $RUNS"

for i in $(seq "$RUNS"); do
    "$BIN" connect "$uid" --cloud "$tls" --cloud-ca "$ca" --stun-port "$stun" --password bench --echo-bytes 0 --lan-port 0 --json \
        >>"$work/native.json" 2>>"$work/native.err" || true
done
grep -o '"setupMs":[0-9.]*' "$work/native.json" | cut -d: -f2 | cut -d. -f1 >"$work/native"
echo "anchor: native viewers (trav connect), connect → the camera's welcome:"
echo "  $(stats <"$work/native")"
failed=$((RUNS - $(wc -l <"$work/native")))
echo "  failed: $failed of $RUNS$( [ "$failed" -gt 0 ] && echo " (first: $(grep -o '"error":"[^"]*"' "$work/native.json" | head -1; head -c 200 "$work/native.err"))")"
