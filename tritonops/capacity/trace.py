"""Request traces: read from CSV or JSONL (time, model[, region]), or generated (Zipf, daily cycle).

A trace is columnar (numpy): times in seconds, sorted, and a model index per request into
``models`` (sorted names). Times are numbers (seconds, e.g. Unix time) or ISO 8601 strings.
A bad row is one error naming ``file:line: field``.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tritonops.errors import TritonOpsError

DAY_S = 86400.0


class TraceError(TritonOpsError):
    """A request trace is missing or malformed (the message names file:line: field)."""


@dataclass(frozen=True)
class Trace:
    times_s: npt.NDArray[np.float64]  # sorted ascending
    model_idx: npt.NDArray[np.int64]  # index into ``models``
    models: tuple[str, ...]  # sorted names
    source: str  # the file, or a description of the generator

    @property
    def requests(self) -> int:
        return len(self.times_s)

    @property
    def span_s(self) -> float:
        return float(self.times_s[-1] - self.times_s[0]) if self.requests else 0.0


def _parse_time(v: Any, where: str) -> float:
    if isinstance(v, bool):
        raise TraceError(f"{where}: time: not a number or ISO 8601 time: {v!r}")
    if isinstance(v, (int, float)):
        t = float(v)
    else:
        s = str(v).strip()
        try:
            t = float(s)
        except ValueError:
            try:
                t = datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
            except ValueError:
                raise TraceError(f"{where}: time: not a number or ISO 8601 time: {s!r}") from None
    if not math.isfinite(t):
        raise TraceError(f"{where}: time: not finite: {v!r}")
    return t


def _row(rec: dict[str, Any], where: str, region: str | None) -> tuple[float, str] | None:
    if "time" not in rec or rec["time"] in (None, ""):
        raise TraceError(f"{where}: time: missing")
    t = _parse_time(rec["time"], where)
    model = rec.get("model")
    if not isinstance(model, str) or not model.strip():
        raise TraceError(f"{where}: model: missing or not a string")
    if region is not None and str(rec.get("region") or "") not in ("", region):
        return None
    return t, model.strip()


def _read_rows(path: Path, region: str | None) -> list[tuple[float, str]]:
    rows: list[tuple[float, str]] = []
    with open(path, encoding="utf-8", newline="") as f:
        if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise TraceError(f"{path}:{n}: not a JSON object ({e.msg})") from None
                if not isinstance(rec, dict):
                    raise TraceError(f"{path}:{n}: not a JSON object")
                r = _row(rec, f"{path}:{n}", region)
                if r:
                    rows.append(r)
            return rows
        reader = csv.DictReader(f)
        missing = {"time", "model"} - set(reader.fieldnames or [])
        if missing:
            cols = ", ".join(sorted(missing))
            raise TraceError(f"{path}:1: header: missing column(s) {cols} (want time,model[,region])")
        for rec in reader:
            r = _row(rec, f"{path}:{reader.line_num}", region)
            if r:
                rows.append(r)
    return rows


def read_trace(path: Path, region: str | None = None) -> Trace:
    """Read a CSV (header ``time,model[,region]``) or JSONL trace; ``region`` keeps that region's rows
    (and rows without one)."""
    path = Path(path)
    try:
        rows = _read_rows(path, region)
    except OSError as e:
        raise TraceError(f"{path}: cannot read trace ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not UTF-8 text") from None
    if not rows:
        raise TraceError(f"{path}: no requests" + (f" for region {region!r}" if region else ""))
    names = sorted({m for _, m in rows})
    index = {m: i for i, m in enumerate(names)}
    times = np.fromiter((t for t, _ in rows), float, len(rows))
    idx = np.fromiter((index[m] for _, m in rows), np.int64, len(rows))
    order = np.argsort(times, kind="stable")
    return Trace(times[order], idx[order], tuple(names), str(path))


def zipf_trace(
    models: int, requests: int, s: float = 1.0, *, days: float = 1.0, daily_swing: float = 0.5, seed: int = 0
) -> Trace:
    """``requests`` over ``days``: model ranks drawn from Zipf(s) over ``models`` (popularity order
    shuffled by ``seed``, so it is not name order), arrivals following a daily cycle whose rate swings
    +-``daily_swing`` around its mean (peak at 14:00)."""
    if models < 1 or requests < 1 or days <= 0 or not 0 <= daily_swing < 1 or s < 0:
        raise TraceError("zipf trace: need models >= 1, requests >= 1, days > 0, 0 <= swing < 1, s >= 0")
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, models + 1) ** s
    ranks = rng.choice(models, size=requests, p=p / p.sum())
    popularity = rng.permutation(models)  # rank r is model popularity[r]
    minutes = int(math.ceil(days * 1440))
    t_min = np.arange(minutes) * 60.0
    rate = 1.0 + daily_swing * np.sin(2 * np.pi * (t_min - 8 * 3600.0) / DAY_S)
    minute = rng.choice(minutes, size=requests, p=rate / rate.sum())
    times = np.sort(minute * 60.0 + rng.random(requests) * 60.0)
    width = len(str(models - 1))
    names = tuple(f"model-{i:0{width}d}" for i in range(models))
    return Trace(times, popularity[ranks].astype(np.int64), names, f"zipf(s={s:g}, models={models}, seed={seed})")
