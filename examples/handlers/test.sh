#!/bin/sh
# Run the test suite named by the task's `suite` parameter (pretend to). $1: the commit.
set -eu
suite=${BENCH_PARAM_SUITE:-smoke}
echo "running suite $suite against commit $1 (task $BENCH_TASK_ID, attempt $BENCH_ATTEMPT)"
for case in can_bus_up boot_time watchdog; do
    echo "  $case: passed"
done
echo "3 passed" | tee "${TEST_REPORT:-report.txt}"
