#!/bin/sh
# Flash the image named by the task's `image` parameter (pretend to).
set -eu
image=${BENCH_PARAM_IMAGE:-firmware.bin}
echo "flashing $image onto the bench for commit ${BENCH_COMMIT_SHA}"
echo "erase: ok"
echo "write: ok"
echo "verify: ok"
