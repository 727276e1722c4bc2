#!/bin/bash
# run.sh - run each fuzz target for SECONDS on a scratch copy of its seed
# corpus (tests/fuzz/corpus/<target>, never modified), then print one
# summary line. Fails if any target found a crash, a leak or a timeout;
# the input that did it is left in the scratch directory (path printed).
# Usage: tests/fuzz/run.sh BUILD_DIR SECONDS TARGET...
set -u
build=$1 seconds=$2; shift 2
root=$(cd "$(dirname "$0")/../.." && pwd)
scratch=$(mktemp -d "${TMPDIR:-/tmp}/kvtier-fuzz-run.XXXXXX")
total_runs=0 crashes=0 failed=()

for t in "$@"; do
    mkdir -p "$scratch/$t/corpus" "$scratch/$t/artifacts"
    cp "$root/tests/fuzz/corpus/$t/"* "$scratch/$t/corpus/"
    log=$scratch/$t/log
    # -timeout: one input taking this long is a hang, reported as a crash.
    "$build/tests/fuzz/$t" -max_total_time="$seconds" -timeout=60 -rss_limit_mb=4096 \
        -print_final_stats=1 -artifact_prefix="$scratch/$t/artifacts/" \
        "$scratch/$t/corpus" >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    runs=${runs:-0}
    found=$(find "$scratch/$t/artifacts" -type f | wc -l)
    if [ "$rc" -ne 0 ] && [ "$found" -eq 0 ]; then found=1; fi
    total_runs=$((total_runs + runs)); crashes=$((crashes + found))
    echo "fuzz: $t: $runs runs in ${seconds}s, $found crashes"
    if [ "$found" -ne 0 ]; then
        failed+=("$t")
        grep -E 'ERROR|SUMMARY|check failed|^    #[0-9] ' "$log" | head -30
        echo "fuzz: $t: log $log, inputs in $scratch/$t/artifacts/"
    fi
done

echo "fuzz: $# targets, $total_runs runs, $crashes crashes"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: failed: ${failed[*]} (scratch dir $scratch kept)"
    exit 1
fi
rm -rf "$scratch"
