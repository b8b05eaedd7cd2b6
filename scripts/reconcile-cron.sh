#!/usr/bin/env bash
# Cron wrapper for `tritonops reconcile`: one region per call, quiet when the previous run still
# holds the lock (exit 3), loud (non-zero, stderr) on anything else: 5 = degraded (a server was
# skipped: down, frozen or unreachable; or an action failed; the journal and the metrics say which),
# 1 = error.
#   usage: reconcile-cron.sh REGION [extra tritonops args...]
set -u -o pipefail
region="${1:?usage: reconcile-cron.sh REGION}"
shift
: "${TRITONOPS_CONFIG:=/etc/tritonops/tritonops.yaml}"
export TRITONOPS_CONFIG AWS_EC2_METADATA_DISABLED="${AWS_EC2_METADATA_DISABLED:-false}"
# The report (JSON) goes to the journal already; keep stdout for cron mail only on failure.
out="$(tritonops reconcile --region "$region" -o json "$@" 2>&1)"
rc=$?
case $rc in
  0) ;;
  3) echo "tritonops reconcile $region: previous run still holds the lock; skipped" >&2; exit 0 ;;
  5) echo "tritonops reconcile $region: degraded (a server skipped or an action failed)" >&2
     printf '%s\n' "$out" >&2 ;;
  *) printf '%s\n' "$out" >&2 ;;
esac
exit $rc
