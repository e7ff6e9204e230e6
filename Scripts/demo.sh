#!/usr/bin/env bash
# The README's first command: installs the system library trav links (usrsctp, the SCTP stack behind
# its channels) when running as root and it is missing, then runs `trav demo` (arguments pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -e /usr/include/usrsctp.h ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "installing: libusrsctp-dev"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends libusrsctp-dev >/dev/null
    else
        echo "trav needs libusrsctp-dev (usrsctp): run this as root once, or: sudo apt-get install libusrsctp-dev" >&2
        exit 1
    fi
fi
exec swift run trav demo "$@"
