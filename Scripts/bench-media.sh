#!/usr/bin/env bash
# bench-media.sh — the media plane over emulated access lines in the NAT lab (needs root).
#
#   Scripts/bench-media.sh [--no-build] [trav bench-media options: --rate-kbps N --delay-ms N --seconds N --video-seconds N
#                          --video-only --video-loss P --clip live|earlier]
#
# Builds release and runs `trav bench-media`: a camera on a public address, a viewer behind a NAT
# whose line is emulated (tbf rate, nftables loss, a userspace delay line). Prints, in one run,
# the goodput of a reliable channel against kernel TCP (CUBIC, iperf3) on the same line at 0 % and
# 1 % loss, and for a 4 Mbit/s H.264 stream on a 5 Mbit/s line at 0 % and 5 % loss: frame latency
# p50/p99 (capture to complete frame), frames dropped, the longest stall. `--video-seconds 600` is the
# 10-minute run (p50 and p99 per minute; `--video-only --video-loss 0` for that run alone). `--clip live`
# bounds the clip's frames as a live camera's encoder would (500 kbit VBV instead of 2000).
# Installs iperf3 and ffmpeg when missing (root). Other load skews the figures: the load average
# at the start is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=1
if [ "${1:-}" = "--no-build" ]; then BUILD=0; shift; fi
[ "$(id -u)" = 0 ] || { echo "bench-media.sh: needs root (network namespaces)" >&2; exit 2; }
need=()
command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
[ -e /usr/include/usrsctp.h ] || need+=(libusrsctp-dev)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    systemctl stop iperf3 >/dev/null 2>&1 || true
fi
if [ "$BUILD" = 1 ]; then swift build -c release --product trav >&2; fi
exec .build/release/trav bench-media "$@"
