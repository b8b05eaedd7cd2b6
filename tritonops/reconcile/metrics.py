"""Prometheus textfile-collector output for one reconcile run (node_exporter --collector.textfile)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tritonops.fileio import atomic_write_bytes


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**kw: str) -> str:
    return "{" + ",".join(f'{k}="{_esc(str(v))}"' for k, v in sorted(kw.items())) + "}"


Metric = Callable[[str, str, str, list[tuple[dict[str, str], float]]], None]


def render(report: dict[str, Any]) -> str:
    """Metrics text from a run report (see ``runner.RunReport.to_json``)."""
    region = report["region"]
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{_labels(region=region, **labels)} {value:g}")

    _actions(report, metric)
    _memory(report, metric)
    _health(report, metric)
    return "\n".join(lines) + "\n"


def _actions(report: dict[str, Any], metric: Metric) -> None:
    counts: dict[tuple[str, str], int] = {}
    for r in report["results"]:
        counts[(r["kind"], r["result"])] = counts.get((r["kind"], r["result"]), 0) + 1
    metric(
        "tritonops_reconcile_actions",
        "gauge",
        "Actions in the last run by kind and result.",
        [({"kind": k, "result": res}, n) for (k, res), n in sorted(counts.items())],
    )
    metric(
        "tritonops_reconcile_load_duration_seconds",
        "gauge",
        "Duration of each load in the last run.",
        [
            ({"server": r["server"], "model": r["model"]}, r["duration_s"])
            for r in report["results"]
            if r["kind"] in ("load", "reload")
        ],
    )
    metric(
        "tritonops_reconcile_failed_action",
        "gauge",
        "1 for each action of the last run that failed or was skipped.",
        [
            ({"server": r["server"], "model": r["model"], "version": str(r.get("version")), "kind": r["kind"],
              "result": r["result"]}, 1)  # fmt: skip
            for r in report["results"]
            if r["result"] != "ok"
        ],
    )


def _memory(report: dict[str, Any], metric: Metric) -> None:
    metric(
        "tritonops_device_memory_used_bytes",
        "gauge",
        "Measured memory used per device after the run.",
        [({"server": d["server"], "device": d["device"]}, d["used_bytes"]) for d in report["memory"]],
    )
    metric(
        "tritonops_device_memory_free_bytes",
        "gauge",
        "Measured memory free per device after the run.",
        [({"server": d["server"], "device": d["device"]}, d["free_bytes"]) for d in report["memory"]],
    )
    metric(
        "tritonops_memory_prediction_error_bytes",
        "gauge",
        "Measured minus predicted footprint of a load.",
        [
            ({"server": r["server"], "model": r["model"]}, r["prediction_error_bytes"])
            for r in report["results"]
            if r.get("prediction_error_bytes") is not None
        ],
    )


def _health(report: dict[str, Any], metric: Metric) -> None:
    metric("tritonops_quarantined_models", "gauge", "Model versions in quarantine.", [({}, len(report["quarantined"]))])
    metric("tritonops_reconcile_drift", "gauge", "Desired vs actual differences left after the run.",
           [({}, report["drift"])])  # fmt: skip
    skipped = report["skipped_servers"]
    metric("tritonops_reconcile_servers_skipped", "gauge", "Servers down or timing out in the last run.",
           [({}, len(skipped))])  # fmt: skip
    metric("tritonops_reconcile_skipped_server", "gauge", "1 for each server the last run skipped (down, frozen, "
           "unreachable).", [({"server": s}, 1) for s in skipped])  # fmt: skip
    metric("tritonops_reconcile_degraded", "gauge", "1 if the last run skipped a server or an action failed "
           "(exit code 5).", [({}, 1 if report.get("degraded") else 0)])  # fmt: skip
    metric("tritonops_reconcile_last_run_timestamp_seconds", "gauge", "End of the last run.",
           [({}, report["finished"])])  # fmt: skip
    metric("tritonops_reconcile_last_run_success", "gauge", "1 if every action of the last run succeeded.",
           [({}, 0 if report["failed"] else 1)])  # fmt: skip


def write_textfile(path: Path, report: dict[str, Any]) -> None:
    atomic_write_bytes(path, render(report).encode())
