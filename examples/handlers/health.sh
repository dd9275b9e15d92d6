#!/bin/sh
# The bench's health: exit 0 when it is fit for work. The last line becomes the message.
if [ -w "${TMPDIR:-/tmp}" ]; then
    echo "disk writable, power ok"
else
    echo "cannot write to ${TMPDIR:-/tmp}"
    exit 1
fi
