#!/bin/sh
# A test that fails: the task fails (not retried) and the run's verdict is `failed`.
echo "running suite ${BENCH_PARAM_SUITE:-smoke}"
echo "  can_bus_up: passed"
echo "  boot_time: FAILED (4.2 s > 3.0 s)" >&2
exit 1
