#!/usr/bin/env bash
# The demo behind `make demo`: bring up the local stack (real S3 + one real Triton per region) and
# run the main job on it. Expects `tritonops` on PATH (the Makefile puts .venv/bin first).
set -euo pipefail
STATE_DIR=${STATE_DIR:-.tritonops/dev}
export AWS_EC2_METADATA_DISABLED=true

echo "== 1. local stack: an S3 server and a Triton per region, on loopback"
tritonops dev up --state-dir "$STATE_DIR"
export TRITONOPS_CONFIG="$STATE_DIR/tritonops.yaml"

echo "== 2. end to end: publish a model to each region's bucket, load it through model control, query it"
tritonops dev check --state-dir "$STATE_DIR"

echo
echo "The stack is still running. Use it:   export TRITONOPS_CONFIG=$TRITONOPS_CONFIG"
echo "Stop it:                              make demo-down   (or: tritonops dev down --state-dir $STATE_DIR)"
