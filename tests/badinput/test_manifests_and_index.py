"""Damaged manifests and repository indexes: `repo add` (which reads the manifest) must refuse in one
line naming the manifest, with the repository unchanged; `repo validate` must report the culprit on
stdout and its one-line verdict on stderr, exit 1.

Categories: manifest (syntax, encoding, shape, fields, values), index (syntax, shape, staleness).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.badinput.harness import assert_refused, invoke, tree_hash
from tests.repo.conftest import make_python_model, python_config


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    res = invoke(["repo", "add", "m", "--from", str(make_python_model(tmp_path / "v1")),
                  "--config", str(python_config(tmp_path / "c.pbtxt")), "--repo", str(root)])  # fmt: skip
    assert res.exit_code == 0, res.output
    return root


def _edit(fn: Callable[[dict[str, Any]], Any]) -> Callable[[bytes], bytes]:
    def apply(raw: bytes) -> bytes:
        d = json.loads(raw)
        fn(d)
        return json.dumps(d).encode()

    return apply


def _v1(d: dict[str, Any]) -> dict[str, Any]:
    return d["versions"]["1"]  # type: ignore[no-any-return]


MANIFEST: list[Any] = [
    ("not-json", lambda raw: b"{ nope", "not valid JSON"),
    ("empty", lambda raw: b"", "not valid JSON"),
    ("binary", lambda raw: b"\xff\xfe\x00", "not valid JSON"),
    ("list", lambda raw: b"[]", "expected a JSON object"),
    ("format-version", _edit(lambda d: d.update(format_version=7)), "format_version"),
    ("no-model", _edit(lambda d: d.pop("model")), "malformed manifest"),
    ("no-versions", _edit(lambda d: d.pop("versions")), "malformed manifest"),
    ("versions-list", _edit(lambda d: d.update(versions=[1])), "malformed manifest"),
    ("version-key-word", _edit(lambda d: d.update(versions={"one": _v1(d)})), "malformed manifest"),
    ("files-missing", _edit(lambda d: _v1(d).pop("files")), "malformed manifest"),
    ("files-list", _edit(lambda d: _v1(d).update(files=["model.py"])), "malformed manifest"),
    ("size-word", _edit(lambda d: _v1(d)["files"]["model.py"].update(size="big")), "malformed manifest"),
    ("sha-missing", _edit(lambda d: _v1(d)["files"]["model.py"].pop("sha256")), "malformed manifest"),
    pytest.param("size-negative", _edit(lambda d: _v1(d)["files"]["model.py"].update(size=-1)), "size"),
    pytest.param("sha-not-hex", _edit(lambda d: _v1(d)["files"]["model.py"].update(sha256="zz")), "sha256"),
    pytest.param("path-escapes", _edit(lambda d: _v1(d).update(files={"../../x": {"size": 1, "sha256": "0" * 64}})),
                 "../../x"),
    pytest.param("version-zero", _edit(lambda d: d.update(versions={"0": _v1(d)})), "version"),
]


def _params(cases: list[Any]) -> list[Any]:
    """(id, damage, culprit) tuples and pytest.param(id, damage, culprit, marks=...) alike."""
    out = []
    for c in cases:
        values, marks = (c.values, c.marks) if hasattr(c, "values") else (c, ())
        out.append(pytest.param(*values[1:], id=values[0], marks=marks))
    return out


@pytest.mark.parametrize(("damage", "culprit"), _params(MANIFEST))
def test_repo_add_refuses_a_damaged_manifest(repo: Path, tmp_path: Path, damage: Any, culprit: str) -> None:
    mpath = repo / "m" / "tritonops-manifest.json"
    mpath.write_bytes(damage(mpath.read_bytes()))
    before = tree_hash(repo)
    res = invoke(["repo", "add", "m", "--from", str(make_python_model(tmp_path / "v2")), "--repo", str(repo)])
    assert_refused(res, [str(mpath), culprit], code=1)
    assert tree_hash(repo) == before


INDEX: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("not-json", lambda raw: b"{", "malformed repository index"),
    ("empty", lambda raw: b"", "malformed repository index"),
    ("list", lambda raw: b"[1]", "tritonops-index.json"),
    ("format-version", _edit(lambda d: d.update(format_version=3)), "format_version"),
    ("no-models", _edit(lambda d: d.pop("models")), "malformed repository index"),
    ("stale-digest", _edit(lambda d: d["models"]["m"].update(digest="0" * 64)), "out of date"),
    ("extra-model", _edit(lambda d: d["models"].update(ghost={"digest": "0" * 64, "versions": {}})), "ghost"),
    ("missing-model", _edit(lambda d: d.update(models={})), "out of date"),
]


@pytest.mark.parametrize(("damage", "culprit"), [c[1:] for c in INDEX], ids=[c[0] for c in INDEX])
def test_repo_validate_names_a_damaged_index(repo: Path, damage: Callable[[bytes], bytes], culprit: str) -> None:
    ipath = repo / "tritonops-index.json"
    ipath.write_bytes(damage(ipath.read_bytes()))
    before = tree_hash(repo)
    line = assert_refused(invoke(["repo", "validate", str(repo)]), [str(ipath), culprit], code=1, report=True)
    assert str(repo) in line
    assert tree_hash(repo) == before


TREE: list[tuple[str, Callable[[Path], Path]]] = [
    ("byte-changed", lambda r: (r / "m" / "1" / "model.py").write_text("changed") and r / "m" / "1" / "model.py"),
    ("file-added", lambda r: (r / "m" / "1" / "extra.bin").write_bytes(b"x") and r / "m" / "1" / "extra.bin"),
    ("config-edited", lambda r: (r / "m" / "config.pbtxt").write_text((r / "m" / "config.pbtxt").read_text() + "\n# x\n")
     and r / "m" / "config.pbtxt"),
    ("manifest-gone", lambda r: (r / "m" / "tritonops-manifest.json").unlink() or r / "m" / "tritonops-manifest.json"),
    ("version-0-folder", lambda r: (r / "m" / "01").mkdir() or r / "m" / "01"),
    ("fifo", lambda r: __import__("os").mkfifo(r / "m" / "1" / "p") or r / "m" / "1" / "p"),
    ("symlink-in", lambda r: __import__("os").symlink("model.py", r / "m" / "1" / "l") or r / "m" / "1" / "l"),
    ("symlink-out", lambda r: __import__("os").symlink("/etc/passwd", r / "m" / "1" / "pw") or r / "m" / "1" / "pw"),
]


@pytest.mark.parametrize("damage", [c[1] for c in TREE], ids=[c[0] for c in TREE])
def test_repo_validate_names_a_damaged_tree(repo: Path, damage: Callable[[Path], Path]) -> None:
    culprit = damage(repo)
    before = tree_hash(repo)
    assert_refused(invoke(["repo", "validate", str(repo)]), [str(culprit)], code=1, report=True)
    assert tree_hash(repo) == before
