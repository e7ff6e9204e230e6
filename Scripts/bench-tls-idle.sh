#!/usr/bin/env bash
# bench-tls-idle.sh — the heap an idle server-side TLS connection holds in OpenSSL (Debian's libssl), the anchor for
# what an idle TLS camera costs `trav cloud` (README, "What an idle TLS camera costs": swift-nio-ssl and BoringSSL).
#
#   Scripts/bench-tls-idle.sh
#
# Compiles Benchmarks/TLSIdle/openssl-idle.c (gcc, libssl-dev), makes a P-256 certificate, and prints the heap per
# connection of 2 000 idle server connections after a TLS 1.3 handshake and one record each way, with OpenSSL's
# default buffers and with SSL_MODE_RELEASE_BUFFERS. Everything it creates is removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v gcc >/dev/null && command -v openssl >/dev/null || { echo "bench-tls-idle.sh: needs gcc and openssl" >&2; exit 2; }
work=$(mktemp -d /tmp/trav-bench-tls-idle.XXXXXX)
trap 'rm -rf "$work"' EXIT
gcc -O2 Benchmarks/TLSIdle/openssl-idle.c -o "$work/openssl-idle" -lssl -lcrypto
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/k.pem" -out "$work/c.pem" -days 1 \
    -subj /CN=tls-idle >/dev/null 2>&1
(cd "$work" && ./openssl-idle && ./openssl-idle release)
