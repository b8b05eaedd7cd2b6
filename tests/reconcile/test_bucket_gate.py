"""The bucket gate inside reconcile's planning, on a file:// bucket (the real FileStore, real manifests).

The server here only answers the index: what is under test is which loads the plan keeps after the
gate. The same gate against a real Triton and S3 is in test_served_is_published.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tritonops.config import load_config
from tritonops.fileio import sha256_bytes
from tritonops.memory.ledger import estimate_bytes
from tritonops.reconcile import runner
from tritonops.reconcile.ports import SizeGuess
from tritonops.repo.manifest import CONFIG_NAME, INDEX_NAME, MANIFEST_NAME, FileEntry, ModelManifest, RepoIndex
from tritonops.store.local import FileStore
from tritonops.triton.client import ModelState

CONFIG = 'backend: "python"\nmax_batch_size: 0\ninput [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'


class IndexOnly:
    """Answers the index (version 1 READY once loaded) and records every change it is asked for."""

    name = "s1"
    load_threads = 1

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.loaded: set[str] = set()

    def index(self) -> list[ModelState]:
        return [ModelState(m, 1, "READY") for m in sorted(self.loaded)]

    def ready_versions(self, model: str) -> list[int]:
        return [1] if model in self.loaded else []

    def load_mode(self, model: str, version: int, digest: str, backend: str) -> str:
        return "known"  # nothing to measure: this server has no memory

    def last_inference_ms(self) -> dict[str, int]:
        return {}

    def load(self, model: str, *a: Any, **kw: Any) -> int | None:
        self.calls.append(f"load {model}")
        self.loaded.add(model)
        return None

    def unload(self, model: str) -> None:
        self.calls.append(f"unload {model}")

    def warmup(self, model: str, version: int, config: dict[str, Any]) -> None:
        self.calls.append(f"warmup {model}")


def _publish(store: FileStore, models: dict[str, bytes]) -> None:
    from tritonops.repo.manifest import VersionEntry

    mans = []
    for m, data in models.items():
        store.put_bytes(f"{m}/1/model.py", data, sha256_bytes(data))
        store.put_bytes(f"{m}/{CONFIG_NAME}", CONFIG.encode(), sha256_bytes(CONFIG.encode()))
        man = ModelManifest(m, {1: VersionEntry(1, [FileEntry("model.py", len(data), sha256_bytes(data))])})
        store.put_bytes(f"{m}/{MANIFEST_NAME}", man.dumps(), sha256_bytes(man.dumps()))
        mans.append(man)
    idx = RepoIndex.from_manifests(mans)
    store.put_bytes(INDEX_NAME, idx.dumps(), sha256_bytes(idx.dumps()))


def _ctx(tmp_path: Path, budget: int) -> tuple[runner.Context, IndexOnly]:
    data = {
        "repository": str(tmp_path / "repo"),
        "state_dir": str(tmp_path / "state"),
        "regions": {
            "r1": {
                "bucket": f"file://{tmp_path / 'bucket'}",
                "servers": [{"name": "s1", "http_url": "http://127.0.0.1:9", "memory_budget_bytes": budget}],
            }
        },
        "models": {},
    }
    (tmp_path / "tritonops.yaml").write_text(yaml.safe_dump(data))
    cfg = load_config(tmp_path / "tritonops.yaml")
    ctl = IndexOnly()
    ports = runner.Ports({"s1": ctl}, {"s1": None}, SizeGuess())
    return runner.Context(cfg, "r1", ports, tmp_path / "state" / "reconcile" / "r1"), ctl


def test_a_load_made_possible_by_a_refusal_is_checked_too(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "bucket")
    store.create()
    body = b"x = 1\n" * 100  # 600 bytes: the one size estimate each, and a budget with room for one
    _publish(store, {"a": body, "b": body})
    ctx, ctl = _ctx(tmp_path, budget=estimate_bytes(len(body)) + 1000)
    before = runner.make_region_plan(ctx)
    assert [(a.kind, a.model) for a in before.actions] == [("load", "a")]  # b waits for room

    # Both tampered: holding a must not let b in unchecked.
    (tmp_path / "bucket/a/1/model.py").write_bytes(body.upper())
    (tmp_path / "bucket/b/1/extra.py").write_bytes(b"y = 2\n")
    report = runner.reconcile(ctx)
    assert report.results == [] and ctl.calls == []
    assert [line.split(": ", 3)[2] for line in report.refused] == ["model 'a' version 1", "model 'b' version 1"]
    assert "b/1/extra.py: expected no such object (not in the manifest)" in report.refused[1]
    assert {(q["server"], q["model"]) for q in report.quarantined} == {("(bucket)", "a"), ("(bucket)", "b")}

    # Only a is tampered: b is checked once a is held, and loads.
    (tmp_path / "bucket/b/1/extra.py").unlink()
    report = runner.reconcile(ctx)
    assert [(r.action.model, r.result) for r in report.results] == [("b", "ok")]
    assert ctl.calls == ["load b", "warmup b"]
    assert len(report.refused) == 1 and {q["model"] for q in report.quarantined} == {"a"}
