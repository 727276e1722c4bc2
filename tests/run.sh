#!/bin/bash
# run.sh - run every test program of each build dir given and sum the results.
# Usage: tests/run.sh BUILD_DIR [ASAN_BUILD_DIR] [AARCH64_DIR]
# Each program is a cmocka group; its exit status is the number of failed
# tests. The last line is the overall "N passed, N failed".
set -u
passed=0; failed=0; failures=()

run_one() {   # label, command...
    local label=$1; shift
    local out rc n_pass n_fail
    out=$("$@" 2>&1); rc=$?
    echo "$out"
    # A program may run several cmocka groups: add up every group's summary.
    n_pass=$(echo "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
    n_fail=$(echo "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
    if [ "$rc" -ne 0 ] && [ "$n_fail" -eq 0 ]; then n_fail=1; fi   # crashed
    passed=$((passed + n_pass)); failed=$((failed + n_fail))
    [ "$n_fail" -ne 0 ] && failures+=("$label")
}

for dir in "$@"; do
    case $dir in
    *aarch64*)
        for t in "$dir"/test_simd*; do
            [ -x "$t" ] && run_one "aarch64/${t##*/}" \
                env QEMU_LD_PREFIX=/usr/aarch64-linux-gnu qemu-aarch64-static "$t"
        done ;;
    *)
        for t in "$dir"/tests/test_*; do
            case $t in *.o|*.d) continue;; esac
            [ -x "$t" ] || continue
            run_one "$t" env KVTIER_BUILD="$dir" "$t"
        done ;;
    esac
done

[ ${#failures[@]} -gt 0 ] && echo "failed programs: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
