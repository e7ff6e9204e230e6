#!/usr/bin/env bash
# Builds the DocC documentation of the library products (swift-docc-plugin) and fails on any warning:
# an unresolved symbol link, a broken article reference. Archives land in
# .build/plugins/Swift-DocC/outputs/<Target>.doccarchive. Options are passed to the plugin, e.g.
#   Scripts/docs.sh --transform-for-static-hosting --hosting-base-path trav
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(Traversal Strategies Media STUNLite TURNLite Rendezvous SourceLimits TravC)
args=()
for t in "${targets[@]}"; do args+=(--target "$t"); done
exec swift package generate-documentation "${args[@]}" --warnings-as-errors "$@"
