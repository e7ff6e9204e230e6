#!/usr/bin/env bash
# The README's first command: installs the system libraries trav links when running as root and they are
# missing (usrsctp, the SCTP stack behind its channels; OpenSSL, the DTLS of its browser sessions), then runs
# `trav demo` (arguments pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
[ -e /usr/include/usrsctp.h ] || need+=(libusrsctp-dev)
[ -e /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "installing: ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "trav needs ${need[*]}: run this as root once, or: sudo apt-get install ${need[*]}" >&2
        exit 1
    fi
fi
exec swift run trav demo "$@"
