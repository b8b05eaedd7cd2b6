"""Local drift: a repository edited or damaged after its index was written is refused by sync.

Before the stat cache, the no-op path compared index digests only: every case below published
nothing and exited 0. Each case damages one model after a successful sync, then syncs again:
non-zero exit, one line naming the file, the bucket unchanged. The cache itself is proven to keep
the no-op cheap: an untouched model is not re-hashed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.store.conftest import Env, _write_config, model_py, write_model
from tritonops.cli import app
from tritonops.config import load_config
from tritonops.errors import RepositoryError
from tritonops.repo import validate as validate_mod
from tritonops.repo.drift import StatCache, snapshot
from tritonops.store.localrepo import load_local, stat_cache_path

EU = "eu-west-1"
PAST_S = 1_000_000  # mtimes far in the past: entries the cache may trust (not "racy")


def backdate(root: Path, seconds_ago: float, only_fresh: bool = False) -> None:
    """Set every mtime below ``root`` (links untouched) to ``seconds_ago``: stats the cache can trust.
    ``only_fresh``: only those written in the last minute (what a damage just touched)."""
    now = time.time()
    t = now - seconds_ago
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p) or not (os.path.isfile(p) or os.path.isdir(p)):
                continue
            if not only_fresh or os.stat(p).st_mtime > now - 60:
                os.utime(p, (t, t))


@pytest.fixture
def denv(env: Env, tmp_path: Path) -> Env:
    """The env with a private state_dir (the stat cache lives there)."""
    cfg = env.config.model_copy(update={"state_dir": tmp_path / "state"})
    path = _write_config(cfg, env.config_path)
    return Env(load_config(path), path, env.repo, env.stack)


def sync_cli(env: Env, *args: str):  # noqa: ANN201 - click Result
    return CliRunner().invoke(app, ["--config", str(env.config_path), "sync", "--region", EU, *args])


def _flip_byte(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[10] ^= 0x01
    p.write_bytes(bytes(data))


def _replace_same_stat(p: Path) -> None:
    """An editor's save: new inode (write + rename), same size, old mtime put back."""
    st = p.stat()
    data = bytearray(p.read_bytes())
    data[10] ^= 0x01
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_bytes(bytes(data))
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, p)


def _symlink_out(p: Path) -> None:
    (p.parent / "leak").symlink_to("/etc/hostname")


# name -> (damage(model_dir), text the one error line must contain)
DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "changed-byte": (lambda md: _flip_byte(md / "1" / "model.py"), "1/model.py"),
    "same-size-same-mtime-new-inode": (lambda md: _replace_same_stat(md / "1" / "model.py"), "1/model.py"),
    "added-file": (lambda md: (md / "1" / "extra.bin").write_bytes(b"x" * 10), "1/extra.bin"),
    "removed-file": (lambda md: (md / "1" / "w.bin").unlink(), "1/w.bin"),
    "removed-version-folder": (lambda md: shutil.rmtree(md / "2"), "/2"),
    "config-hand-edited": (
        lambda md: (md / "config.pbtxt").write_text((md / "config.pbtxt").read_text() + "# tuned\n"),
        "config.pbtxt",
    ),
    "config-malformed": (lambda md: (md / "config.pbtxt").write_text('name: "x" input [ {\n'), "config.pbtxt"),
    "symlink-out": (lambda md: _symlink_out(md / "1" / "model.py"), "1/leak"),
    "fifo": (lambda md: os.mkfifo(md / "1" / "pipe"), "1/pipe"),
    "folder-01": (lambda md: ((md / "01").mkdir(), (md / "01" / "model.py").write_bytes(b"x")), "/01"),
    "new-model-without-manifest": (
        lambda md: ((md.parent / "stray").mkdir(), (md.parent / "stray" / "config.pbtxt").write_text("")),
        "stray",
    ),
    # The root, with every model folder untouched: the cache vouches for the models, not the index.
    "index-names-another-digest": (lambda md: _edit_index(md, "0" * 64), "tritonops-index.json"),
    "index-removed": (lambda md: (md.parent / "tritonops-index.json").unlink(), "tritonops-index.json"),
    "model-folder-removed": (lambda md: shutil.rmtree(md), "tritonops-index.json"),
}


def _edit_index(md: Path, digest: str) -> None:
    path = md.parent / "tritonops-index.json"
    d = json.loads(path.read_bytes())
    d["models"][md.name]["digest"] = digest
    path.write_text(json.dumps(d))


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_sync_refuses_local_drift(denv: Env, unique, case: str) -> None:
    damage, culprit = DAMAGE[case]
    m, other = unique("drift"), unique("keep")
    write_model(denv.repo, m, {1: {"model.py": model_py(2.0), "w.bin": os.urandom(300)}, 2: {"model.py": model_py(3.0)}})
    write_model(denv.repo, other, {1: {"model.py": model_py(4.0)}})
    backdate(denv.repo, PAST_S)
    assert sync_cli(denv).exit_code == 0
    assert sync_cli(denv).exit_code == 0  # the warm no-op
    before = denv.keys(EU)

    damage(denv.repo / m)
    backdate(denv.repo, PAST_S - 50, only_fresh=True)  # detection must come from the stats, not "racy" mtimes
    res = sync_cli(denv)
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: refusing to publish an invalid repository:"), lines[0]
    assert culprit in lines[0] and "Traceback" not in res.output, lines[0]
    assert denv.keys(EU) == before


def test_noop_rehashes_nothing_and_a_change_rehashes_only_its_model(
    denv: Env, unique, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = unique("a"), unique("b")
    write_model(denv.repo, a, {1: {"model.py": model_py(2.0)}})
    write_model(denv.repo, b, {1: {"model.py": model_py(3.0)}})
    backdate(denv.repo, PAST_S)
    cache = stat_cache_path(denv.config)
    load_local(denv.repo, cache)  # cold: validates (hashes) everything and fills the cache

    hashed: list[str] = []
    real = validate_mod.sha256_file
    monkeypatch.setattr(validate_mod, "sha256_file", lambda p, *a: hashed.append(str(p)) or real(p, *a))
    assert StatCache.load(cache, denv.repo).drifted(snapshot(denv.repo)) == []
    assert [m.model for m in load_local(denv.repo, cache)] == sorted([a, b])
    assert hashed == []

    os.utime(denv.repo / a / "1" / "model.py", (time.time() - PAST_S + 5,) * 2)  # touched, same bytes
    load_local(denv.repo, cache)
    assert hashed and all(f"/{a}/" in p for p in hashed), hashed
    hashed.clear()
    load_local(denv.repo, cache)  # verified again: back to no hashing
    assert hashed == []


def test_fresh_files_are_never_trusted(denv: Env, unique) -> None:
    """A file written in the last RACY_S seconds could change again within the same mtime tick."""
    m = unique("racy")
    write_model(denv.repo, m, {1: {"model.py": model_py(2.0)}})
    cache = stat_cache_path(denv.config)
    load_local(denv.repo, cache)
    assert StatCache.load(cache, denv.repo).drifted(snapshot(denv.repo)) == [m]


def test_a_damaged_cache_costs_a_rehash_not_a_failure(denv: Env, unique) -> None:
    m = unique("cache")
    write_model(denv.repo, m, {1: {"model.py": model_py(2.0)}})
    backdate(denv.repo, PAST_S)
    cache = stat_cache_path(denv.config)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(b"\xff not json")
    assert [x.model for x in load_local(denv.repo, cache)] == [m]
    assert StatCache.load(cache, denv.repo).drifted(snapshot(denv.repo)) == []


def _count_version_hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths of version files the validator hashes (config.pbtxt, checked against its recorded sha, aside)."""
    hashed: list[str] = []
    real = validate_mod.sha256_file
    monkeypatch.setattr(
        validate_mod, "sha256_file", lambda p, *a: (p.name != "config.pbtxt" and hashed.append(str(p))) or real(p, *a)
    )
    return hashed


def test_a_new_model_is_hashed_once_as_it_is_sent(denv: Env, unique, monkeypatch: pytest.MonkeyPatch) -> None:
    """The validator checks a moved model's sizes; the upload hashes its bytes; the cache then trusts it."""
    m = unique("once")
    write_model(denv.repo, m, {1: {"model.py": model_py(2.0), "w.bin": os.urandom(3000)}})
    backdate(denv.repo, PAST_S)
    hashed = _count_version_hashes(monkeypatch)
    res = sync_cli(denv)
    assert res.exit_code == 0, res.output
    assert hashed == []
    assert f"{m}/1/w.bin" in denv.keys(EU)
    cache = stat_cache_path(denv.config)
    assert m not in StatCache.load(cache, denv.repo).drifted(snapshot(denv.repo))


def test_a_file_changed_after_repo_add_is_refused_when_it_is_sent(denv: Env, unique) -> None:
    """Its bytes are first hashed by the upload: the PUT never completes and nothing points at it."""
    m = unique("late")
    write_model(denv.repo, m, {1: {"model.py": model_py(2.0), "w.bin": os.urandom(3000)}})
    _flip_byte(denv.repo / m / "1" / "w.bin")  # after the manifest was written: same size
    backdate(denv.repo, PAST_S)
    before = denv.keys(EU)
    res = sync_cli(denv)
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{m}/1/w.bin" in lines[0] and "differs from the manifest" in lines[0], lines
    after = denv.keys(EU)
    assert f"{m}/1/w.bin" not in after
    assert f"{m}/config.pbtxt" not in after and f"{m}/tritonops-manifest.json" not in after
    assert after.get("tritonops-index.json") == before.get("tritonops-index.json")
    # Not trusted next time either: the model is still unproven, so a rerun refuses it again.
    cache = stat_cache_path(denv.config)
    assert m in StatCache.load(cache, denv.repo).drifted(snapshot(denv.repo))
    assert sync_cli(denv).exit_code == 1


def test_a_noop_parses_no_manifest_and_a_change_in_the_bucket_reads_only_its_own(
    denv: Env, unique, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing moved on disk, digests and file counts come from the stat cache; a model that
    changed in the bucket (another publisher, a lost manifest) has its local manifest read then."""
    from tritonops.repo.manifest import ModelManifest, RepoIndex

    a, b = unique("lazy-a"), unique("lazy-b")
    write_model(denv.repo, a, {1: {"model.py": model_py(2.0)}, 2: {"model.py": model_py(3.0)}})
    write_model(denv.repo, b, {1: {"model.py": model_py(4.0)}})
    backdate(denv.repo, PAST_S)
    assert sync_cli(denv).exit_code == 0
    published = denv.keys(EU)

    read: list[str] = []
    real = ModelManifest.load.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(ModelManifest, "load", classmethod(lambda cls, p: read.append(p.parent.name) or real(cls, p)))
    res = sync_cli(denv, "-o", "json")
    assert res.exit_code == 0, res.output
    assert read == []
    assert json.loads(res.stdout)["skipped_files"] == 3 and json.loads(res.stdout)["uploaded_files"] == 0

    index = json.loads(published["tritonops-index.json"])
    index["models"][a]["digest"] = "0" * 64  # the bucket moved under us (another publisher: a consistent index)
    index["digest"] = RepoIndex({k: v for k, v in index["models"].items()}).digest
    denv.put("tritonops-index.json", json.dumps(index).encode())
    res = sync_cli(denv, "-o", "json")
    assert res.exit_code == 0, res.output
    assert read == [a]
    assert denv.keys(EU) == published  # the index is right again, byte for byte


def test_a_manifest_replaced_between_the_walk_and_its_read_is_refused(denv: Env, unique) -> None:
    """The cache vouched for the manifest's digest at the walk; a different one read later is a race."""
    from tritonops.store.localrepo import open_local

    m = unique("race")
    write_model(denv.repo, m, {1: {"model.py": model_py(2.0)}})
    backdate(denv.repo, PAST_S)
    cache = stat_cache_path(denv.config)
    load_local(denv.repo, cache)
    local = open_local(denv.repo, cache)
    assert local.models.digest(m)  # from the cache: nothing parsed yet
    write_model(denv.repo, m, {1: {"model.py": model_py(5.0)}})  # a `repo add` racing the sync
    with pytest.raises(RepositoryError, match=f"{m}/tritonops-manifest.json: changed during sync"):
        local.models[m]
