#!/usr/bin/env bash
# The demo behind `make demo`: the whole data flow on a local stack (a real S3 server and one real
# Triton per region, on loopback). Expects `tritonops` on PATH (the Makefile puts .venv/bin first).
set -euo pipefail
cd "$(dirname "$0")/.."
STATE_DIR=${STATE_DIR:-.tritonops/dev}
export AWS_EC2_METADATA_DISABLED=true

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# A previous demo leaves its stack, its state (release records, ledger) and model_repos/demo behind; the
# demo's story (v1, v2, a bad v3) needs a clean start. Only a folder `dev up` made (it holds state.json) is
# removed, with model_repos/demo, the demo's own repository (ignored by git).
if [ -f "$STATE_DIR/state.json" ] || [ -d model_repos/demo ]; then
  echo "starting from nothing: stopping and removing the previous demo ($STATE_DIR, model_repos/demo)"
  if [ -f "$STATE_DIR/state.json" ]; then
    tritonops dev down --state-dir "$STATE_DIR" >/dev/null
    rm -rf "$STATE_DIR"
  fi
  rm -rf model_repos/demo
fi

step "1. local stack: an S3 server, two Tritons in eu-west-1, one in us-east-1 (iris is EU-only: scripts/demo-policy.yaml)"
tritonops dev up --state-dir "$STATE_DIR" --repository model_repos/demo --policy scripts/demo-policy.yaml --servers 2
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

step "9. releases: publish echo v1 and v2; in explicit mode v2 is published but not live"
REL=$(mktemp -d)
cp scripts/demo-release/model.py "$REL/model.py"
for v in 1 2; do
  echo "# build $v" >> "$REL/model.py"   # a rebuild: different bytes, a new version
  tritonops repo add echo --from "$REL/model.py" --config scripts/demo-release/echo.pbtxt >/dev/null
  tritonops sync --all-regions >/dev/null   # v1: the model's first publish is its first release; v2: published only
  for region in eu-west-1 us-east-1; do tritonops reconcile --region "$region" >/dev/null; done
done
tritonops release status echo

advance_until_done() {  # $1: the outcome this step of the demo shows (done, or rolled back)
  local rc i phase want=$1
  for i in $(seq 120); do
    rc=0
    tritonops rollout advance echo || rc=$?
    if [ "$rc" = 4 ]; then             # rolled back after a failed gate
      [ "$want" = rolled-back ] && return 0
      echo "the rollout was rolled back where the demo expects it to finish: see above" >&2
      return 1
    fi
    [ "$rc" != 0 ] && return "$rc"
    phase=$(tritonops release status echo -o json | python -c 'import json,sys; d=json.load(sys.stdin); print(d["rollouts"][0]["phase"] if d["rollouts"] else "")')
    case "$phase" in
      done) [ "$want" = done ] && return 0; echo "the rollout finished where the demo expects a rollback" >&2; return 1 ;;
      failed|aborted) [ "$want" = rolled-back ] && return 0; echo "the rollout ended $phase where the demo expects it to finish" >&2; return 1 ;;
    esac
    sleep 1
  done
  echo "rollout still in progress after 120 advances: see tritonops release status echo" >&2
  return 1
}

step "10. staged rollout of v2 under traffic: canary server -> eu-west-1 -> us-east-1, each after its bake and gates"
python scripts/demo_traffic.py "$TRITONOPS_CONFIG" 300 & TRAFFIC=$!
trap 'kill $TRAFFIC 2>/dev/null || true' EXIT
sleep 1
tritonops rollout start echo --version 2
advance_until_done done
tritonops release status echo --all-regions

step "11. a bad v3 (a third of its requests fail) is caught on the canary server and rolled back; us-east-1 never loads it"
sed 's/^FAIL_EVERY = 0/FAIL_EVERY = 3/' scripts/demo-release/model.py > "$REL/model.py"
tritonops repo add echo --from "$REL/model.py" --config scripts/demo-release/echo.pbtxt >/dev/null
tritonops sync --all-regions >/dev/null
tritonops rollout start echo --version 3
advance_until_done rolled-back
tritonops release status echo --all-regions

step "12. rollback: eu-west-1 back from v2 to v1, reconciled at once"
tritonops rollback echo --region eu-west-1 --now
tritonops release status echo --region eu-west-1
kill $TRAFFIC 2>/dev/null || true

echo
echo "The stack is still running. Use it:   export TRITONOPS_CONFIG=$TRITONOPS_CONFIG"
echo "Stop it:                              make demo-down   (or: tritonops dev down --state-dir $STATE_DIR)"
