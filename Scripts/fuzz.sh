#!/usr/bin/env bash
# fuzz.sh — builds the libFuzzer targets (Fuzz/, README "Fuzzing") and runs each for a bounded time.
#
#   Scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default 60 s, every target
#   Scripts/fuzz.sh --quick [SECONDS_PER_TARGET] [TARGET...]   the bounded run of Scripts/test.sh (default 5 s)
#
# --quick instruments only our own modules (libFuzzer's coverage, no AddressSanitizer) and builds in the
# normal .build, reusing the dependencies the tests were built with, so it adds about two minutes to the
# suite instead of a second full build; it skips (exit 0, one line) when the toolchain has no libFuzzer.
#
# Each target runs on a copy of its committed seed corpus (Fuzz/Corpus/<target>) under AddressSanitizer,
# with a total time, a per-input timeout and an RSS limit, so a run always ends. New inputs go to
# .build-fuzz/work/corpus/<target>, findings to .build-fuzz/work/artifacts/<target>/. Prints one line
# per target (runs, coverage, corpus size) and exits non-zero if any target crashed, hung, leaked or
# ran out of memory; the log of such a target is printed and kept beside its artifacts.
#
# Environment: FUZZ_RSS_LIMIT_MB (2048), FUZZ_TIMEOUT (per input, s; 10), FUZZ_MAX_LEN (4096).
#
# Targets run one after the other, each on one core.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
if [ "${1:-}" = --quick ]; then QUICK=1; shift; fi
SECONDS_PER_TARGET=${1:-$([ $QUICK = 1 ] && echo 5 || echo 60)}
shift || true
if [ $QUICK = 1 ]; then
    runtime="$(dirname "$(readlink -f "$(command -v swift)")")/../lib/swift/clang/lib/linux/libclang_rt.fuzzer-$(uname -m).a"
    if [ ! -e "$runtime" ]; then
        echo "fuzzing skipped: the toolchain has no libFuzzer runtime ($runtime), so -sanitize=fuzzer cannot link"
        exit 0
    fi
    SCRATCH=.build
    WORK=$SCRATCH/fuzz-work
else
    SCRATCH=.build-fuzz
    WORK=$SCRATCH/work
fi
RSS_LIMIT_MB=${FUZZ_RSS_LIMIT_MB:-2048}
TIMEOUT=${FUZZ_TIMEOUT:-10}
MAX_LEN=${FUZZ_MAX_LEN:-4096}

case "$SECONDS_PER_TARGET" in
    ''|*[!0-9]*) echo "usage: Scripts/fuzz.sh [--quick] [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2 ;;
esac

# The fuzz targets exist in the manifest only with TRAV_FUZZ=1 (they link libFuzzer's driver).
export TRAV_FUZZ=1
if [ $QUICK = 1 ]; then
    export TRAV_FUZZ_QUICK=1   # Package.swift: -sanitize=fuzzer on our modules only
    build=(swift build -c debug --scratch-path "$SCRATCH" --product trav-fuzz)
else
    build=(swift build -c debug --scratch-path "$SCRATCH" --product trav-fuzz -Xswiftc -sanitize=fuzzer,address)
fi
mkdir -p "$WORK"
echo "building: ${build[*]}"
started=$SECONDS
if ! "${build[@]}" >"$WORK/build.log" 2>&1; then
    tail -60 "$WORK/build.log"
    echo "fuzz build failed (log: $WORK/build.log)" >&2
    exit 1
fi
echo "built in $((SECONDS - started)) s"
BIN="$("${build[@]}" --show-bin-path)/trav-fuzz"

if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <("$BIN" --list | cut -f1); fi

failed=()
printf '%-16s %10s %8s %8s %8s  %s\n' target runs cov ft corpus result
for t in "${targets[@]}"; do
    corpus=$WORK/corpus/$t
    artifacts=$WORK/artifacts/$t
    log=$WORK/$t.log
    rm -rf "$corpus" "$artifacts"
    mkdir -p "$corpus" "$artifacts"
    if [ -d "Fuzz/Corpus/$t" ]; then cp Fuzz/Corpus/"$t"/* "$corpus"/ 2>/dev/null || true; fi
    rc=0
    # libFuzzer stops itself after -max_total_time; `timeout` is the backstop should it not.
    # Swift's own crash backtracer reads memory ASan has poisoned; libFuzzer reports the crash instead.
    SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
        timeout --kill-after=10 $((SECONDS_PER_TARGET + 60)) \
        "$BIN" "$t" -max_total_time="$SECONDS_PER_TARGET" -timeout="$TIMEOUT" -rss_limit_mb="$RSS_LIMIT_MB" \
        -max_len="$MAX_LEN" -artifact_prefix="$artifacts/" -print_final_stats=1 "$corpus" >"$log" 2>&1 || rc=$?
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
    status=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(grep -o 'cov: [0-9]*' <<<"$status" | grep -o '[0-9]*' || true)
    ft=$(grep -o 'ft: [0-9]*' <<<"$status" | grep -o '[0-9]*' || true)
    size=$(find "$corpus" -type f | wc -l)
    result=ok
    if [ "$rc" != 0 ]; then result="FAILED (exit $rc)"; failed+=("$t"); fi
    printf '%-16s %10s %8s %8s %8s  %s\n' "$t" "${runs:-?}" "${cov:-?}" "${ft:-?}" "$size" "$result"
    if [ "$rc" != 0 ]; then
        echo "---- $log (last 40 lines) ----"
        tail -40 "$log"
        ls "$artifacts"
        echo "----"
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing found problems in: ${failed[*]} (inputs in $WORK/artifacts/)" >&2
    exit 1
fi
echo "fuzzing: ${#targets[@]} targets, ${SECONDS_PER_TARGET} s each, no findings"
