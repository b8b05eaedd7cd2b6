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


Samples = list[tuple[dict[str, str], float]]


def _action_counts(report: dict[str, Any]) -> Samples:
    counts: dict[tuple[str, str], int] = {}
    for r in report["results"]:
        counts[(r["kind"], r["result"])] = counts.get((r["kind"], r["result"]), 0) + 1
    return [({"kind": k, "result": res}, n) for (k, res), n in sorted(counts.items())]


def _load_durations(report: dict[str, Any]) -> Samples:
    return [
        ({"server": r["server"], "model": r["model"]}, r["duration_s"])
        for r in report["results"]
        if r["kind"] in ("load", "reload")
    ]


def _failed_actions(report: dict[str, Any]) -> Samples:
    return [
        ({"server": r["server"], "model": r["model"], "version": str(r.get("version")), "kind": r["kind"],
          "result": r["result"]}, 1)  # fmt: skip
        for r in report["results"]
        if r["result"] not in ("ok", "deferred")  # a deferred load is drift, not a failure
    ]


def _per_device(field: str) -> Callable[[dict[str, Any]], Samples]:
    return lambda report: [({"server": d["server"], "device": d["device"]}, d[field]) for d in report["memory"]]


def _prediction_errors(report: dict[str, Any]) -> Samples:
    return [
        ({"server": r["server"], "model": r["model"]}, r["prediction_error_bytes"])
        for r in report["results"]
        if r.get("prediction_error_bytes") is not None
    ]


def _unmeasured(report: dict[str, Any]) -> Samples:
    return [
        ({"server": r["server"], "model": r["model"], "version": str(r.get("version"))}, r["estimate_bytes"])
        for r in report["results"]
        if r.get("footprint_source") == "estimate"
    ]


def _one(value: Callable[[dict[str, Any]], float]) -> Callable[[dict[str, Any]], Samples]:
    return lambda report: [({}, value(report))]


# (name, help, samples from the run report), in the order they are written; every one a gauge.
_GAUGES: list[tuple[str, str, Callable[[dict[str, Any]], Samples]]] = [
    ("tritonops_reconcile_actions", "Actions in the last run by kind and result.", _action_counts),
    ("tritonops_reconcile_load_duration_seconds", "Duration of each load in the last run.", _load_durations),
    ("tritonops_reconcile_failed_action", "1 for each action of the last run that failed or was skipped.",
     _failed_actions),
    ("tritonops_device_memory_used_bytes", "Measured memory used per device after the run.", _per_device("used_bytes")),
    ("tritonops_device_memory_free_bytes", "Measured memory free per device after the run.", _per_device("free_bytes")),
    ("tritonops_memory_prediction_error_bytes", "Measured minus predicted footprint of a load.", _prediction_errors),
    ("tritonops_reconcile_unmeasured_load_bytes",
     "Estimate held for each load of the last run that serves but whose footprint could not be measured.",
     _unmeasured),
    ("tritonops_reconcile_unmeasured_loads", "Loads of the last run that serve but could not be measured.",
     _one(lambda r: len(_unmeasured(r)))),
    ("tritonops_quarantined_models", "Model versions in quarantine.", _one(lambda r: len(r["quarantined"]))),
    ("tritonops_reconcile_drift", "Desired vs actual differences left after the run.", _one(lambda r: r["drift"])),
    (
        "tritonops_reconcile_servers_skipped",
        "Servers down or timing out in the last run.",
        _one(lambda r: len(r["skipped_servers"])),
    ),
    ("tritonops_reconcile_skipped_server", "1 for each server the last run skipped (down, frozen, unreachable).",
     lambda r: [({"server": s}, 1) for s in r["skipped_servers"]]),
    ("tritonops_reconcile_degraded", "1 if the last run skipped a server or an action failed (exit code 5).",
     _one(lambda r: 1 if r.get("degraded") else 0)),
    ("tritonops_reconcile_last_run_timestamp_seconds", "End of the last run.", _one(lambda r: r["finished"])),
    (
        "tritonops_reconcile_last_run_success",
        "1 if every action of the last run succeeded.",
        _one(lambda r: 0 if r["failed"] else 1),
    ),
]


def _number(value: float) -> str:
    """A sample's value, exactly: bytes and timestamps as integers (``%g`` kept 6 digits: 2.01327e+08)."""
    v = float(value)
    return str(int(v)) if v.is_integer() else repr(v)


def render(report: dict[str, Any]) -> str:
    """Metrics text from a run report (see ``runner.RunReport.to_json``)."""
    region = report["region"]
    lines: list[str] = []
    for name, help_, samples in _GAUGES:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} gauge")
        for labels, value in samples(report):
            lines.append(f"{name}{_labels(region=region, **labels)} {_number(value)}")
    return "\n".join(lines) + "\n"


def write_textfile(path: Path, report: dict[str, Any]) -> None:
    atomic_write_bytes(path, render(report).encode())
