"""A damaged repository is never listed as fine, and a manifest or index whose own digest is wrong is
caught by `repo validate` and refused by `sync` (on a file:// bucket: no servers needed)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tritonops.cli import app
from tritonops.repo.manifest import INDEX_NAME, MANIFEST_NAME
from tritonops.repo.repository import add_version

CONF = """\
name: "m"
backend: "python"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""


def build(tmp_path: Path) -> Path:
    """A repository with model m, versions 1 and 2; returns its root."""
    root = tmp_path / "repo"
    (tmp_path / "m.pbtxt").write_text(CONF)
    for n in (1, 2):
        src = tmp_path / f"src{n}"
        src.mkdir()
        (src / "model.py").write_text(f"# version {n}\n")
        (src / "w.bin").write_bytes(bytes(range(n, n + 64)))
        add_version(root, "m", src, config=tmp_path / "m.pbtxt" if n == 1 else None)
    return root


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def flip_byte(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[3] ^= 1
    p.write_bytes(bytes(b))


def edit_json(p: Path, fn: Callable[[dict[str, Any]], None]) -> None:
    d = json.loads(p.read_text())
    fn(d)
    p.write_text(json.dumps(d, indent=2))


DAMAGE: dict[str, tuple[Callable[[Path], None], set[int]]] = {
    # case -> (what is done to the repository, the versions that must be marked)
    "manifest missing": (lambda r: (r / "m" / MANIFEST_NAME).unlink(), {1, 2}),
    "changed byte": (lambda r: flip_byte(r / "m" / "2" / "w.bin"), {2}),
    "file added": (lambda r: (r / "m" / "1" / "extra.txt").write_text("x\n"), {1}),
    "file removed": (lambda r: (r / "m" / "2" / "w.bin").unlink(), {2}),
    "fifo": (lambda r: os.mkfifo(r / "m" / "1" / "pipe"), {1}),
    "hand-edited config": (
        lambda r: (r / "m" / "config.pbtxt").write_text((r / "m" / "config.pbtxt").read_text() + "\n# edited\n"),
        {1, 2},
    ),
    "manifest digest": (lambda r: edit_json(r / "m" / MANIFEST_NAME, lambda d: d.update(digest="0" * 64)), {1, 2}),
    "version digest": (
        lambda r: edit_json(r / "m" / MANIFEST_NAME, lambda d: d["versions"]["1"].update(digest="0" * 64)),
        {1, 2},
    ),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_list_marks_each_damaged_version_and_exits_1(tmp_path: Path, case: str) -> None:
    root = build(tmp_path)
    res = cli("repo", "list", "--repo", str(root), "-o", "json")
    assert res.exit_code == 0, res.output
    assert [v["damaged"] for v in json.loads(res.stdout)["models"][0]["versions"]] == [False, False]

    damage, marked = DAMAGE[case]
    damage(root)
    res = cli("repo", "list", "--repo", str(root), "-o", "json")
    assert res.exit_code == 1, res.output
    [m] = json.loads(res.stdout)["models"]
    assert {v["version"] for v in m["versions"] if v["damaged"]} == marked, m
    assert "damaged: " in res.stderr and "Traceback" not in res.output
    table = cli("repo", "list", "--repo", str(root))
    assert table.exit_code == 1 and "DAMAGED" in table.stdout
    assert cli("repo", "validate", str(root)).exit_code == 1


def sync_setup(tmp_path: Path, root: Path) -> Path:
    (tmp_path / "eu").mkdir()
    doc = {"repository": str(root), "state_dir": str(tmp_path / "state"),
           "regions": {"eu-west-1": {"bucket": f"file://{tmp_path}/eu"}}}  # fmt: skip
    p = tmp_path / "tritonops.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


@pytest.mark.parametrize("target", ["manifest", "index"])
def test_a_wrong_digest_is_caught_by_validate_and_refused_by_sync(tmp_path: Path, target: str) -> None:
    root = build(tmp_path)
    path = root / "m" / MANIFEST_NAME if target == "manifest" else root / INDEX_NAME
    edit_json(path, lambda d: d.update(digest="ab" * 32))
    res = cli("repo", "validate", str(root))
    assert res.exit_code == 1 and "digest: abababababababab... is not the digest of what the file lists" in res.output
    cfg = sync_setup(tmp_path, root)
    res = cli("--config", str(cfg), "sync", "--region", "eu-west-1")
    assert res.exit_code == 1 and "digest" in res.stderr and "Traceback" not in res.output, res.output
    assert list((tmp_path / "eu").iterdir()) == []  # nothing published


def test_a_bucket_index_with_a_wrong_digest_is_not_trusted(tmp_path: Path) -> None:
    root = build(tmp_path)
    cfg = sync_setup(tmp_path, root)
    assert cli("--config", str(cfg), "sync", "--region", "eu-west-1").exit_code == 0
    edit_json(tmp_path / "eu" / INDEX_NAME, lambda d: d.update(digest="ab" * 32))
    res = cli("--config", str(cfg), "sync", "--region", "eu-west-1")
    assert res.exit_code == 0, res.output
    assert "remote index untrusted" in res.stderr and "is not the digest of what the file lists" in res.stderr
    assert json.loads((tmp_path / "eu" / INDEX_NAME).read_text())["digest"] != "ab" * 32  # rewritten
