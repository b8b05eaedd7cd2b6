"""The capacity simulator on hand-checkable traces, the trace parser's bad inputs, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tritonops.capacity import baselines
from tritonops.capacity.simulate import Fleet, Models, replay
from tritonops.capacity.trace import Trace, TraceError, read_trace, zipf_trace
from tritonops.cli import app
from tritonops.placement import PlacementPolicy

GB = 10**9


def trace(rows: list[tuple[float, str]]) -> Trace:
    names = sorted({m for _, m in rows})
    return Trace(np.array([t for t, _ in rows]), np.array([names.index(m) for _, m in rows]), tuple(names), "test")


def models(n: int, gb: int = 1, load_s: float = 10.0) -> Models:
    return Models(np.full(n, gb * GB, np.int64), np.full(n, load_s), ("given",) * n, ("given",) * n)


def test_replay_hand_checked() -> None:
    """One server with room for one model, interval 60 s, load 10 s.

    a at 0 (cold: nothing loaded; tick 60 loads a, available at 70 -> waits 70), a at 65 (cold, waits 5),
    a at 100 and 110 (warm). b at 130 (cold: a's demand 4 beats b's 1; never served) -> 2 warm of 5.
    """
    tr = trace([(0, "a"), (65, "a"), (100, "a"), (110, "a"), (130, "b")])
    r = replay(tr, models(2), Fleet(1, GB, 2.0), PlacementPolicy(60, 0.25, 4), window_s=0)
    assert r.warm_share == pytest.approx(2 / 5)
    assert r.unserved_share == pytest.approx(1 / 5)
    assert r.cold_wait_p50_s == pytest.approx(70)  # waits sorted [5, 70, inf]: nearest-rank median
    assert r.cold_wait_p99_s is None  # the unserved request is the p99
    assert r.cost_per_hour == 2.0
    assert r.loads_per_hour == pytest.approx(1 / (180 / 3600))  # one load over 3 ticks of 60 s


def test_replay_evicts_for_the_more_requested_model() -> None:
    rows = [(float(t), "a") for t in range(0, 60, 10)] + [(float(t), "b") for t in range(60, 240, 2)]
    r = replay(trace(rows), models(2, load_s=1), Fleet(1, GB, 1.0), PlacementPolicy(60, 0.25, 4), window_s=0)
    # tick 60 loads a (6 requests), tick 120 swaps to b (30 requests vs a's 0): b warm from 121 s on
    assert r.warm_share == pytest.approx(sum(1 for t, m in rows if m == "b" and t >= 121) / len(rows))


def test_baselines_hand_checked() -> None:
    idx = np.array([0, 1, 0, 2, 0, 1])  # capacity: two models
    size = np.full(3, GB, np.int64)
    assert baselines.lru_hits(idx, size, 2 * GB) == 2  # 0 at 2, 0 at 4
    assert baselines.lfu_hits(idx, size, 2 * GB) == 2
    assert baselines.belady_hits(idx, size, 2 * GB) == 3  # 2 is bypassed: 0, 0 and 1 hit
    assert list(baselines.next_use(idx)) == [2, 5, 4, 6, 6, 6]


def test_policy_near_belady_on_zipf() -> None:
    tr = zipf_trace(200, 100_000, 1.0, seed=3)
    m = models(200, gb=1, load_s=5)
    r = replay(tr, m, Fleet(10, 5 * GB, 1.0), PlacementPolicy(60, 0.25, 4))
    bound = baselines.hit_ratio("belady", tr.model_idx, m.footprint_bytes, 5 * GB, 10)
    assert r.memory_use_max <= 1.0
    assert 0.9 * bound < r.warm_share <= bound


@pytest.mark.parametrize(
    ("name", "text", "error"),
    [
        ("t.csv", "time,model\n1,a\nxx,b\n", "t.csv:3: time: not a number or ISO 8601 time: 'xx'"),
        ("t.csv", "when,model\n1,a\n", "t.csv:1: header: missing column(s) time"),
        ("t.csv", "time,model\n1,\n", "t.csv:2: model: missing"),
        ("t.csv", "time,model\n", "t.csv: no requests"),
        ("t.csv", "time,model\ninf,a\n", "t.csv:2: time: not finite"),
        ("t.jsonl", '{"time": 1, "model": "a"}\n{"time": 2}\n', "t.jsonl:2: model: missing"),
        ("t.jsonl", '{"time": 1, "model": "a"}\n[1]\n', "t.jsonl:2: not a JSON object"),
        ("t.jsonl", '{"time": 1, "model": "a"}\n{oops\n', "t.jsonl:2: not a JSON object"),
        ("t.jsonl", '{"model": "a"}\n', "t.jsonl:1: time: missing"),
        ("t.jsonl", '{"time": true, "model": "a"}\n', "t.jsonl:1: time: not a number"),
    ],
)
def test_trace_bad_inputs(tmp_path: Path, name: str, text: str, error: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(TraceError) as e:
        read_trace(tmp_path / name)
    assert str(e.value).startswith(str(tmp_path / name)[: -len(name)]) and error in str(e.value)


def test_trace_csv_iso_times_region_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("time,model,region\n2026-01-01T00:00:10Z,b,eu\n2026-01-01T00:00:00Z,a,us\n5,c,\n")
    t = read_trace(tmp_path / "t.csv", region="eu")
    assert t.models == ("b", "c") and t.requests == 2
    (tmp_path / "t.jsonl").write_text('{"time": 3, "model": "x"}\n\n{"time": 1, "model": "y"}\n')
    t = read_trace(tmp_path / "t.jsonl")
    assert list(t.times_s) == [1.0, 3.0] and [t.models[i] for i in t.model_idx] == ["y", "x"]


def test_cli_json_and_pictures(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["capacity", "--zipf", "1.0", "--models", "50", "--requests", "20000",
                                   "--footprint", "1GB", "--gpu-memory", "5GB", "--load-s", "5", "--servers", "1,5,10",
                                   "--target", "0.9", "--out-dir", str(tmp_path), "-o", "json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["format_version"] == 1 and [s["servers"] for s in d["sizes"]] == [1, 5, 10]
    assert d["sizes"][-1]["warm_share"] > d["sizes"][0]["warm_share"]
    assert d["recommended"]["servers"] in (5, 10) and d["recommended"]["warm_share"] >= 0.9
    assert d["models"]["footprint_sources"] == {"given": 50}
    assert "<svg" in (tmp_path / "capacity.html").read_text()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--gpu-memory", "lots"], "expected a size such as 16GB"),
        (["--servers", "0,2"], "expected server counts"),
        (["--compare", "fifo"], "expected a list of lru, lfu, belady"),
        ([], "no footprint in the ledger"),
        (["--footprint", "20GB"], "footprint larger than a server's memory"),
    ],
)
def test_cli_bad_options(args: list[str], error: str) -> None:
    res = CliRunner().invoke(app, ["capacity", "--zipf", "1", "--models", "5", "--requests", "100", *args])
    assert res.exit_code != 0 and error in res.output and "Traceback" not in res.output


def test_cli_bad_trace_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("time,model\n1,a\nnope,b\n")
    p = subprocess.run([sys.executable, "-m", "tritonops", "capacity", "--trace", str(tmp_path / "t.csv"),
                        "--footprint", "1GB"], capture_output=True, text=True)  # fmt: skip
    assert p.returncode == 1 and p.stderr.strip() == f"error: {tmp_path / 't.csv'}:3: time: not a number or ISO 8601 time: 'nope'"
