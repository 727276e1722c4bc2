#!/bin/bash
# run.sh - run every test program of each build dir given and sum the results.
# Usage: tests/run.sh BUILD_DIR [ASAN_BUILD_DIR] [AARCH64_DIR]
# Each program is a cmocka group; its exit status is the number of failed
# tests. The Python package's tests (pytest, tests/python) run against the
# first build dir; pytest's summary line ends their part and its counts join
# the totals. The last line is the overall "N passed, N failed".
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

# pytest against a build dir's daemon and library. Debian's python3 has the
# python3-numpy/-torch/-pytest that tests/deps.sh installs ($PYTHON
# overrides it); pytest's own summary line ("3 passed, 1 failed in 2.1s").
run_pytest() {   # build dir
    local py=${PYTHON:-/usr/bin/python3} out rc line n_pass n_fail
    [ -x "$py" ] || py=python3
    out=$(cd "$(dirname "$0")/.." && PYTHONDONTWRITEBYTECODE=1 KVTIER_BUILD="$1" \
          "$py" -m pytest -q -p no:cacheprovider tests/python 2>&1); rc=$?
    echo "$out"
    line=$(echo "$out" | grep -E '^(=+ )?[0-9]+ (passed|failed|error|skipped)' | tail -1)
    n_pass=$(echo "$line" | grep -oE '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
    n_fail=$(echo "$line" | grep -oE '[0-9]+ (failed|errors?)' | awk '{s+=$1} END {print s+0}')
    if [ "$rc" -ne 0 ] && [ "$n_fail" -eq 0 ]; then n_fail=1; fi   # could not run
    passed=$((passed + n_pass)); failed=$((failed + n_fail))
    [ "$n_fail" -ne 0 ] && failures+=("pytest tests/python")
}

python_dir=
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
        done
        # The ASan build is left out: its library needs libasan preloaded
        # into python3, which then reports the interpreter's own leaks.
        case $dir in *asan*) ;; *) [ -z "$python_dir" ] && python_dir=$dir ;; esac ;;
    esac
done
[ -n "$python_dir" ] && run_pytest "$python_dir"

[ ${#failures[@]} -gt 0 ] && echo "failed programs: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
