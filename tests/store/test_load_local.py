"""sync's pre-flight on the local repository: cheap when the index agrees, the validator's words when not."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.models import STUB_MODEL_PY
from tritonops.errors import RepositoryError
from tritonops.repo.manifest import (
    INDEX_NAME,
    MANIFEST_NAME,
    ModelManifest,
    VersionEntry,
    scan_files,
    sha256_file,
    write_index,
)
from tritonops.store.localrepo import load_local

CONFIG = 'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\nversion_policy: {{ specific: {{ versions: [ 1 ] }} }}\n'


def _repo(root: Path, models: list[str]) -> Path:
    for name in models:
        vdir = root / name / "1"
        vdir.mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(CONFIG.format(name=name))
        (vdir / "model.py").write_text(STUB_MODEL_PY)
        man = ModelManifest(name, {1: VersionEntry(1, scan_files(vdir))}, sha256_file(root / name / "config.pbtxt"))
        man.save(root / name / MANIFEST_NAME)
    write_index(root)
    return root


def test_a_consistent_repository_loads_without_the_validator(tmp_path: Path) -> None:
    root = _repo(tmp_path / "r", ["a", "b"])
    old = time.time() - 60  # files written in the last 2 s are never trusted from the stat cache
    for p in root.rglob("*"):
        os.utime(p, (old, old))
    cache = tmp_path / "stat.json"
    assert [m.model for m in load_local(root, cache)] == ["a", "b"]  # the first look validates every model
    # In a fresh interpreter, with the stat cache: the no-op path must not pay for the validator and protobuf.
    probe = (
        "import sys, time; from pathlib import Path; from tritonops.store.localrepo import load_local; "
        f"load_local(Path({str(root)!r}), Path({str(cache)!r})); "
        "print(sorted(m for m in sys.modules if m == 'tritonops.repo.validate' or m.startswith('google.protobuf')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda r: (r / INDEX_NAME).write_text('{"format_version": 1, "models": {}}'),
         "the index is out of date with the manifests of: a, b"),
        (lambda r: (r / INDEX_NAME).unlink(), "repository index missing"),
        (lambda r: (r / INDEX_NAME).write_text("{not json"), "malformed repository index"),
        (lambda r: (r / "b" / MANIFEST_NAME).write_text("{not json"), f"b/{MANIFEST_NAME}"),
    ],
    ids=["stale-index", "no-index", "bad-index", "bad-manifest"],
)
def test_a_repository_the_index_disagrees_with_is_refused(tmp_path: Path, breakage, message: str) -> None:  # noqa: ANN001
    root = _repo(tmp_path / "r", ["a", "b"])
    breakage(root)
    with pytest.raises(RepositoryError) as e:
        load_local(root)
    assert message in str(e.value)


def test_a_missing_repository_is_named(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="repository folder does not exist"):
        load_local(tmp_path / "nope")
