#!/usr/bin/env bash
# bench-browser.sh — a browser viewer's time from "connect" to its first decoded frame, on loopback or in the NAT lab.
#
#   Scripts/bench-browser.sh [--runs N] [--no-build] [--debug] [--press MS]
#                            [--lab PROFILE [--camera-nat KIND] [--browser-nat KIND | --lan]]
#
# Starts `trav cloud --web-port` and `trav camera --video default`, then opens the cloud's viewer page in
# headless Chromium N times (default 10), the UID and password in the fragment as a bookmark would carry them:
# the page connects as it loads, or with --press MS that long after it loaded (a person who typed them; the
# page has prepared by then: its signalling socket, the ICE servers, its gathered candidates and the UID check of
# the camera's key, `locate`).
# Each page reports to the cloud over its WebSocket the time from pressing connect to its first frame decoded
# by WebCodecs, and when it reached each step on the way (`browser report {…}` in the cloud's output); the
# script prints their median and p99, each step's median, and the path taken. The anchor, measured in the same
# run against the same camera from the browser's host: N native viewers' `trav connect` setups (connect to the
# camera's welcome, the same password check).
#
# Loopback (the default): everything on 127.0.0.1, the floor under the lab figures. With --lab PROFILE (needs
# root): a NAT lab (Scripts/natlab.sh) with the cloud on its internet, the camera on one site and Chromium on
# another, both sites' access lines emulating PROFILE (`natlab.sh profiles`: dsl is 30 ms each way, 10 Mbit/s
# down, 1 Mbit/s up); the sites' NATs are --camera-nat and --browser-nat (`natlab.sh kinds`; default
# port-restricted-cone for both). The lab goal (issue 15) is a median ≤ 1 s on `dsl` (`--press 2000`: 762 ms).
# The lab pairs of LabBrowserTests: the default (direct through both NATs); `--camera-nat symmetric --browser-nat
# symmetric` (through the cloud's relay); `--browser-nat tcp443-only` (a network that lets only TCP to port 443 out:
# the cloud serves signalling, the page and TURN over TLS on its port 443, as it does in every lab run); `--lan` (the
# browser on a second host of the camera's site, behind the same access line: host candidates, no NAT between them).
#
# Every run comes from one address, so the cloud's look-up limit is raised and its relay grants last 10 s (it
# holds at most 32 per source for their lifetime). The load average at the start is printed: other load skews
# the figures. Every process, file and namespace it starts is removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=10
PRESS=0
BUILD=1
BIN=.build-release/release/trav
LAB_PROFILE=""
CAMERA_NAT=port-restricted-cone
BROWSER_NAT=port-restricted-cone
LAN=0
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --debug) BIN=.build/debug/trav; shift ;;
        --lab) LAB_PROFILE="$2"; shift 2 ;;
        --press) PRESS="$2"; shift 2 ;;
        --camera-nat) CAMERA_NAT="$2"; shift 2 ;;
        --browser-nat) BROWSER_NAT="$2"; shift 2 ;;
        --lan) LAN=1; shift ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "bench-browser.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]{0,3}$ ]] || { echo "bench-browser.sh: --runs 1…9999" >&2; exit 2; }
[[ $PRESS =~ ^[0-9]{1,5}$ ]] && [ "$PRESS" -le 60000 ] || { echo "bench-browser.sh: --press 0…60000 (ms)" >&2; exit 2; }
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROMIUM" ] || { echo "bench-browser.sh: needs chromium" >&2; exit 2; }
if [ -n "$LAB_PROFILE" ]; then
    [ "$(id -u)" = 0 ] || { echo "bench-browser.sh: --lab needs root (network namespaces)" >&2; exit 2; }
    Scripts/natlab.sh resolve "$LAB_PROFILE" >/dev/null
elif [ "$LAN" = 1 ]; then
    echo "bench-browser.sh: --lan needs --lab PROFILE" >&2; exit 2
fi
if [ "$BUILD" = 1 ]; then
    if [ "$BIN" = .build/debug/trav ]; then swift build --product trav >&2
    else swift build -c release --product trav --scratch-path .build-release >&2; fi
fi
BIN=$(realpath "$BIN")

work=$(mktemp -d /tmp/trav-bench-browser.XXXXXX)
pids=()
LAB=""
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "$LAB" ]; then Scripts/natlab.sh down "$LAB" || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# Where each part runs: the cloud, the camera and the browser with its anchor viewers (hosts of the lab, or here).
if [ -n "$LAB_PROFILE" ]; then
    LAB="wb$(printf '%04x' $((RANDOM % 65536)))$$"
    LAB=${LAB:0:12}
    export NATLAB_TRAV="$BIN" NATLAB_OWNER_PID=$$
    if [ "$LAN" = 1 ]; then
        Scripts/natlab.sh up "$LAB" "cam:$CAMERA_NAT:2@$LAB_PROFILE" >"$work/lab.hosts"
        CLOUD_HOST=cloud CAMERA_HOST=cam-h1 BROWSER_HOST=cam-h2
    else
        Scripts/natlab.sh up "$LAB" "cam:$CAMERA_NAT@$LAB_PROFILE" "web:$BROWSER_NAT@$LAB_PROFILE" >"$work/lab.hosts"
        CLOUD_HOST=cloud CAMERA_HOST=cam-h1 BROWSER_HOST=web-h1
    fi
    LISTEN=$(Scripts/natlab.sh addr "$LAB" cloud)
    CAMERA_IP=$(Scripts/natlab.sh addr "$LAB" cam-h1)
    # The relay may reach the lab's internet and its open sites' public addresses.
    ALLOW="203.0.113.0/24 198.51.100.0/24"
    # The cloud has its host to itself: signalling, TURN over TLS and the page share port 443.
    TLS_PORT=443
    browser_site="browser $BROWSER_NAT@$LAB_PROFILE"
    [ "$LAN" = 1 ] && browser_site="browser on the camera's LAN"
    where="lab $LAB: camera $CAMERA_NAT@$LAB_PROFILE, $browser_site ($(Scripts/natlab.sh resolve "$LAB_PROFILE"))"
else
    CLOUD_HOST=- CAMERA_HOST=- BROWSER_HOST=-
    LISTEN=127.0.0.1 CAMERA_IP=127.0.0.1 ALLOW=127.0.0.0/8 TLS_PORT=0
    where="loopback"
fi

# Runs a command on HOST (a lab host, or "-": here): `run` in the foreground; `spawn` is started with & and
# becomes the command (so the job's pid is the command's own).
run() { local host=$1; shift; if [ "$host" = - ]; then "$@"; else Scripts/natlab.sh exec "$LAB" "$host" "$@"; fi; }
spawn() { local host=$1; shift; if [ "$host" = - ]; then exec "$@"; else exec Scripts/natlab.sh exec "$LAB" "$host" "$@"; fi; }

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

spawn "$CLOUD_HOST" "$BIN" cloud --listen "$LISTEN" --data "$work/cloud" --stun-port 0 --tls-port "$TLS_PORT" --relay-port 0 --web-port "$TLS_PORT" \
    --relay-allow-peers $ALLOW --device-store memory --lookup-burst 1000 --lookups-per-second 1000 --relay-grant-seconds 10 \
    >"$work/cloud.log" 2>&1 &
pids+=($!)
tls=$(await_line "$work/cloud.log" '^cloud signalling tls ' | awk '{print $4}')
stun=$(await_line "$work/cloud.log" '^cloud stun udp ' | awk '{print $4}' | sed 's/.*://')
web=$(await_line "$work/cloud.log" '^cloud web ' | awk '{print $3}')
ca=$(await_line "$work/cloud.log" '^cloud ca ' | awk '{print $3}')
uid=$("$BIN" identity new --out "$work/cam.key" | grep -o -m1 'TRAV-[0-9A-Z-]*')
spawn "$CAMERA_HOST" "$BIN" camera --identity "$work/cam.key" --cloud "$tls" --cloud-ca "$ca" --stun-port "$stun" --password bench \
    --video default --browser-host "$CAMERA_IP" --no-presence --lan-port 0 >"$work/camera.log" 2>&1 &
pids+=($!)
await_line "$work/camera.log" 'serving' >/dev/null
sleep 1
[ "$PRESS" = 0 ] || where="$where; connect pressed $PRESS ms after the page loaded"
echo "$where; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

for i in $(seq "$RUNS"); do
    # In a session of its own, so its process group is Chromium and every child it starts.
    spawn "$BROWSER_HOST" setsid "$CHROMIUM" --headless=new --no-sandbox --disable-gpu --no-first-run --ignore-certificate-errors \
        --allow-loopback-in-peer-connection --disable-features=WebRtcHideLocalIpsWithMdns \
        --user-data-dir="$work/chromium-$i" "${web}#uid=$uid&password=bench&report=5&press=$PRESS" >"$work/chromium-$i.log" 2>&1 &
    browser=$!
    for _ in $(seq $((600 + PRESS / 100))); do
        [ "$(grep -c '^browser report ' "$work/cloud.log" || true)" -ge "$i" ] && break
        sleep 0.1
    done
    kill -- -"$browser" 2>/dev/null || kill "$browser" 2>/dev/null || true
    wait "$browser" 2>/dev/null || true
    rm -rf "$work/chromium-$i"
done
grep '^browser report ' "$work/cloud.log" | sed 's/^browser report //' >"$work/reports" || true
echo "browser (headless Chromium, WebRTC data channel, WebCodecs), connect → first decoded frame:"
echo "  $(grep -o '"firstFrameMs":[0-9]*' "$work/reports" | cut -d: -f2 | stats)"
python3 - "$work/reports" <<'EOF'
import json, sys
steps = ["signalling", "servers", "offer", "challenge", "proof", "sealed", "answer", "checked", "ice", "dtls", "channel", "received", "decoded"]
reports = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
phases = [r.get("phases") or {} for r in reports if "error" not in r]
def median(values):
    values = sorted(values)
    return values[(len(values) - 1) // 2] if values else None
shown = []
for step in steps:
    m = median([p[step] for p in phases if step in p])
    if m is not None:
        shown.append(f"{step} {m}")
print("  steps (median ms from connect): " + (", ".join(shown) if shown else "none reported"))
EOF
echo "  paths: $(grep -o '"path":"[a-z]*"' "$work/reports" | sort | uniq -c | tr -s ' ' | tr '\n' ' ')"
echo "  access proof sent with the watch (a deposited key, no challenge round trip): $(grep -c '"deposited":true' "$work/reports" || true) of $RUNS"
# A run without a first frame: an error, a page that saw no video in 30 s, or no report at all.
framed=$(grep -c '"firstFrameMs":[0-9]' "$work/reports" || true)
echo "  failed: $((RUNS - framed)) of $RUNS$(grep -o -m1 '"error":"[^"]*"' "$work/reports" | sed 's/^/ (first error: /; s/$/)/' || true)"

for i in $(seq "$RUNS"); do
    run "$BROWSER_HOST" "$BIN" connect "$uid" --cloud "$tls" --cloud-ca "$ca" --stun-port "$stun" --password bench --echo-bytes 0 \
        --lan-port 0 --json >>"$work/native.json" 2>>"$work/native.err" || true
done
grep -o '"setupMs":[0-9.]*' "$work/native.json" | cut -d: -f2 | cut -d. -f1 >"$work/native" || true
echo "anchor: native viewers (trav connect), connect → the camera's welcome:"
echo "  $(stats <"$work/native")"
failed=$((RUNS - $(wc -l <"$work/native")))
echo "  failed: $failed of $RUNS$( [ "$failed" -gt 0 ] && echo " (first: $(grep -o '"error":"[^"]*"' "$work/native.json" | head -1; head -c 200 "$work/native.err"))")"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
