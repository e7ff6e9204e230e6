#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs the Debian packages the tests use when
# running as root and they are missing, then runs the whole suite. Without root, the tests that
# need root or those packages skip with a one-line reason.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v conntrack >/dev/null 2>&1 || need+=(conntrack)
command -v turnserver >/dev/null 2>&1 || need+=(coturn)
command -v miniupnpd >/dev/null 2>&1 || [ -x /usr/sbin/miniupnpd ] || need+=(miniupnpd-nftables)  # a router granting port mappings (LabPortMappingTests)
[ -e /usr/include/usrsctp.h ] || need+=(libusrsctp-dev)   # the SCTP stack channels run on (linked: needed to build)
[ -e /usr/include/openssl/ssl.h ] || need+=(libssl-dev)   # DTLS for WebRTC (linked: needed to build)
command -v openssl >/dev/null 2>&1 || need+=(openssl)     # a real DTLS peer (DTLSInteropTests)
command -v chromium >/dev/null 2>&1 || need+=(chromium)   # a real browser's data channel (BrowserDataChannelTests)
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)       # checks saved video
command -v curl >/dev/null 2>&1 || need+=(curl)           # scrapes the metrics endpoint
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)   # shows the lab line reorders
command -v cc >/dev/null 2>&1 || need+=(gcc)              # builds the C API examples (CExampleTests)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)  # the database several cloud nodes share (MultiNodeTests)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "installing: ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
        # The coturn package may start a system service; the tests run their own servers.
        systemctl stop coturn >/dev/null 2>&1 || true
        pkill -x turnserver >/dev/null 2>&1 || true
        # Nor the database's own cluster: the tests start a throwaway one as user postgres.
        systemctl stop postgresql >/dev/null 2>&1 || true
    else
        echo "not root: tests needing ${need[*]} will skip"
    fi
fi

# Leftovers of a crashed earlier run (NAT lab namespaces) are removed before starting.
if [ -x Scripts/natlab.sh ] && [ "$(id -u)" = 0 ]; then
    Scripts/natlab.sh cleanup-stale >/dev/null 2>&1 || true
fi

# The lab tests run the `trav` executable in namespaces: build it first. The C examples link the C API's
# shared library.
swift build --product trav
swift build --product TravC
# The library products' documentation must build without a warning (about 2 minutes).
Scripts/docs.sh
# Suites one at a time: several at once on two cores starve each other's deadlines (scrypt in a
# debug build is slow), and the lab suites need the CPU for real-time networking.
status=0
swift test --no-parallel "$@" || status=$?

# The whole suite (no filter given) ends with a bounded libFuzzer run of every fuzz target (README
# "Fuzzing"): our modules instrumented in the same .build, 5 s per target, about two minutes in all.
# It comes last because it rebuilds our modules with instrumentation; it skips with one line when the
# toolchain has no libFuzzer. TRAV_FUZZ_SECONDS changes the time per target (0 skips it).
if [ $# -eq 0 ] && [ "${TRAV_FUZZ_SECONDS:-5}" != 0 ]; then
    Scripts/fuzz.sh --quick "${TRAV_FUZZ_SECONDS:-5}" || status=1
fi
exit $status
