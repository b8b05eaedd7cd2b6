#!/usr/bin/env bash
# The demo behind `make demo`: the whole data flow on a local stack (a real S3 server and one real
# Triton per region, on loopback). Expects `tritonops` on PATH (the Makefile puts .venv/bin first).
set -euo pipefail
cd "$(dirname "$0")/.."
STATE_DIR=${STATE_DIR:-.tritonops/dev}
export AWS_EC2_METADATA_DISABLED=true

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. local stack: an S3 server and a Triton per region (iris is EU-only: scripts/demo-policy.yaml)"
tritonops dev up --state-dir "$STATE_DIR" --repository model_repos/demo --policy scripts/demo-policy.yaml
export TRITONOPS_CONFIG="$STATE_DIR/tritonops.yaml"

step "2. convert: a PyTorch MLP and a scikit-learn classifier -> ONNX fp32 / fp16 / int8, gated on accuracy"
tritonops convert converters/mlp.yaml converters/iris_sklearn.yaml

step "3. the repository: versions, digests, validation"
tritonops repo list
tritonops repo validate

step "4. sync: publish to both regions (residency keeps iris out of us-east-1)"
tritonops sync --all-regions

step "5. reconcile each region: load what is published, within measured memory"
for region in eu-west-1 us-east-1; do
  tritonops reconcile --region "$region"
done

step "6. a second reconcile changes nothing (exit 0, no load or unload)"
tritonops plan --region eu-west-1 --detailed-exitcode && echo "eu-west-1: nothing to do"

step "7. status of every region"
tritonops status --region eu-west-1
tritonops status --region us-east-1

step "8. an inference answer from each region"
python scripts/demo_infer.py "$TRITONOPS_CONFIG"

echo
echo "The stack is still running. Use it:   export TRITONOPS_CONFIG=$TRITONOPS_CONFIG"
echo "Stop it:                              make demo-down   (or: tritonops dev down --state-dir $STATE_DIR)"
