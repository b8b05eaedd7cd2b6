"""Release records, pointers and retention on a file:// bucket (no servers needed): promote verifies
then writes the record and the pointer last; sync keeps the pointer and never prunes what a release
names; bad input is one line and a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from tritonops.cli import app
from tritonops.config import load_config
from tritonops.release.pointer import publish_release
from tritonops.release.policy import config_pointer
from tritonops.release.state import read_record
from tritonops.store import open_store
from tritonops.store.sync import SyncOptions, sync

CONF = """\
name: "m"
backend: "python"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""


def setup(tmp_path: Path, mode: str) -> Path:
    doc = {
        "repository": "repo",
        "state_dir": "state",
        "release": {"mode": mode},
        "regions": {
            "eu-west-1": {"bucket": f"file://{tmp_path}/eu", "servers": [{"name": "eu-0", "http_url": "http://127.0.0.1:9"}]},
            "us-east-1": {"bucket": f"file://{tmp_path}/us"},
        },
    }  # fmt: skip
    (tmp_path / "eu").mkdir()
    (tmp_path / "us").mkdir()
    p = tmp_path / "tritonops.yaml"
    p.write_text(yaml.safe_dump(doc))
    (tmp_path / "m.pbtxt").write_text(CONF)
    return p


def add(cfg_path: Path, n: int) -> None:
    from tritonops.repo.repository import add_version

    cfg = load_config(cfg_path)
    src = cfg_path.parent / f"src{n}"
    src.mkdir()
    (src / "model.py").write_text(f"# version {n}\n")
    add_version(cfg.repository_path, "m", src / "model.py", config=cfg_path.parent / "m.pbtxt")
    sync(cfg, ["eu-west-1", "us-east-1"], SyncOptions(), releases=publish_release)


def cli(cfg_path: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["--config", str(cfg_path), *args])


def pointer(tmp_path: Path, region: str = "eu") -> list[int]:
    return config_pointer((tmp_path / region / "m" / "config.pbtxt").read_text())


def test_explicit_mode_publish_promote_rollback_and_retention(tmp_path: Path) -> None:
    cfg_path = setup(tmp_path, "explicit")
    add(cfg_path, 1)
    add(cfg_path, 2)
    assert pointer(tmp_path) == [1], "explicit mode: publishing v2 moved the pointer"

    res = cli(cfg_path, "promote", "m", "--version", "2", "--region", "eu-west-1", "-o", "json")
    assert res.exit_code == 0, res.output
    ch = json.loads(res.stdout)["changes"][0]
    assert (ch["live_before"], ch["live_after"], ch["pointer_written"]) == (1, 2, True)
    assert pointer(tmp_path) == [2] and pointer(tmp_path, "us") == [1]
    store = open_store(load_config(cfg_path).region("eu-west-1"))
    rec = read_record(store, "m")
    assert rec is not None and (rec.live, rec.previous) == (2, 1)

    # v3 published: the pointer stays; the local repository drops v1 and v2; a prune keeps both
    add(cfg_path, 3)
    assert pointer(tmp_path) == [2]
    cfg = load_config(cfg_path)
    for v in (1, 2):
        import shutil

        shutil.rmtree(cfg.repository_path / "m" / str(v))
    from tritonops.repo.manifest import ModelManifest, write_index

    mp = cfg.repository_path / "m" / "tritonops-manifest.json"
    man = ModelManifest.load(mp)
    man.versions = {3: man.versions[3]}
    man.save(mp)
    write_index(cfg.repository_path)
    report = sync(cfg, ["eu-west-1", "us-east-1"], SyncOptions(prune=True, force=True), releases=publish_release)
    assert (tmp_path / "eu" / "m" / "1" / "model.py").exists() and (tmp_path / "eu" / "m" / "2").exists()
    assert not (tmp_path / "us" / "m" / "2").exists() and (tmp_path / "us" / "m" / "1").exists(), report

    res = cli(cfg_path, "rollback", "m", "--region", "eu-west-1", "-o", "json")
    assert res.exit_code == 0, res.output
    assert pointer(tmp_path) == [1]
    res = cli(cfg_path, "release", "status", "m", "--region", "eu-west-1", "-o", "json")
    assert res.exit_code == 1  # its one server is not reachable: said, and not exit 0
    doc = json.loads(res.stdout)
    m = doc["regions"][0]["models"]["m"]
    assert (m["live"], m["previous"], m["pointer"], m["pointer_lags"]) == (1, 2, [1], False)
    assert doc["regions"][0]["servers"]["eu-0"]["reachable"] is False


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    cfg_path = setup(tmp_path, "explicit")
    add(cfg_path, 1)
    for args, msg in [
        (("promote", "m", "--version", "7", "--region", "eu-west-1"), "version 7 is not published"),
        (("promote", "nope", "--version", "1", "--region", "eu-west-1"), "model 'nope' is not published"),
        (("promote", "m", "--version", "1", "--region", "mars"), "mars"),
        (("rollback", "m", "--region", "eu-west-1"), "no previous live version"),
        (("rollout", "advance", "m"), "no rollout"),
    ]:
        res = cli(cfg_path, *args)
        assert res.exit_code == 1, (args, res.output)
        assert msg in res.output and "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    # a damaged object is refused, never released
    (tmp_path / "eu" / "m" / "1" / "model.py").write_text("tampered\n")
    res = cli(cfg_path, "promote", "m", "--version", "1", "--region", "eu-west-1")
    assert res.exit_code == 1 and "differs from the manifest" in res.output


def test_on_publish_mode_refuses_rollouts_and_a_rollback_survives_a_resync(tmp_path: Path) -> None:
    cfg_path = setup(tmp_path, "on-publish")
    add(cfg_path, 1)
    add(cfg_path, 2)
    assert pointer(tmp_path) == [2]  # publish = release, as before
    res = cli(cfg_path, "rollout", "start", "m", "--version", "2")
    assert res.exit_code == 1 and "on-publish" in res.output
    assert cli(cfg_path, "rollback", "m", "--region", "eu-west-1", "--to", "1").exit_code == 0
    sync(load_config(cfg_path), ["eu-west-1"], SyncOptions(), releases=publish_release)
    assert pointer(tmp_path) == [1]
    add(cfg_path, 3)  # a new publish releases it (on-publish)
    assert pointer(tmp_path) == [3]


def test_default_mode_rollback_goes_back_to_the_version_a_publish_replaced(tmp_path: Path) -> None:
    """on-publish (the default): after publishing v2 over v1, `previous` is v1 and a plain `rollback`
    works; the rollback holds through resyncs until v3 is published, whose rollback target is then
    v1 (the version live before it), not v2; a prune never deletes the rollback target."""
    cfg_path = setup(tmp_path, "on-publish")
    add(cfg_path, 1)

    def status(region: str = "eu-west-1") -> dict[str, Any]:
        res = cli(cfg_path, "release", "status", "m", "--region", region, "-o", "json")
        return dict(json.loads(res.stdout)["regions"][0]["models"]["m"])

    assert (status()["live"], status()["previous"]) == (1, None)
    res = cli(cfg_path, "rollback", "m", "--region", "eu-west-1")
    assert res.exit_code == 1 and "no previous live version" in res.output  # nothing before v1
    add(cfg_path, 2)
    m = status()
    assert (m["live"], m["previous"], m["pointer"]) == (2, 1, [2]), m

    res = cli(cfg_path, "rollback", "m", "--region", "eu-west-1", "-o", "json")
    assert res.exit_code == 0, res.output
    ch = json.loads(res.stdout)["changes"][0]
    assert (ch["live_before"], ch["live_after"]) == (2, 1) and pointer(tmp_path) == [1]
    assert pointer(tmp_path, "us") == [2]  # another region is not touched
    assert (status()["live"], status()["previous"]) == (1, 2)

    sync(load_config(cfg_path), ["eu-west-1", "us-east-1"], SyncOptions(), releases=publish_release)
    assert pointer(tmp_path) == [1]  # the rollback holds
    add(cfg_path, 3)
    assert pointer(tmp_path) == [3]
    assert (status()["live"], status()["previous"]) == (3, 1)
    assert (status("us-east-1")["live"], status("us-east-1")["previous"]) == (3, 2)
    assert cli(cfg_path, "rollback", "m", "--region", "eu-west-1").exit_code == 0
    assert pointer(tmp_path) == [1]

    # The local repository drops v1 and v2 and an explicit --prune removes them (as before releases, in
    # this mode): a rollback then says its target is gone, and changes nothing.
    cfg = load_config(cfg_path)
    import shutil

    from tritonops.repo.manifest import ModelManifest, write_index

    for v in (1, 2):
        shutil.rmtree(cfg.repository_path / "m" / str(v))
    mp = cfg.repository_path / "m" / "tritonops-manifest.json"
    man = ModelManifest.load(mp)
    man.versions = {3: man.versions[3]}
    man.save(mp)
    write_index(cfg.repository_path)
    sync(cfg, ["us-east-1"], SyncOptions(prune=True, force=True), releases=publish_release)
    assert not (tmp_path / "us" / "m" / "2").exists()
    res = cli(cfg_path, "rollback", "m", "--region", "us-east-1")
    assert res.exit_code == 1 and "no previous live version" in res.output, res.output
    assert pointer(tmp_path, "us") == [3]


def test_first_sync_into_a_bucket_says_nothing_about_an_index(tmp_path: Path) -> None:
    """A bucket holding only a marker (what `tritonops dev up` writes) is a first sync: no note. A
    bucket whose index is gone while models are published there gets a note saying exactly that."""
    cfg_path = setup(tmp_path, "on-publish")
    (tmp_path / "eu" / "README.tritonops").write_text("published by tritonops\n")
    cfg = load_config(cfg_path)
    from tritonops.repo.repository import add_version

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "model.py").write_text("# v1\n")
    add_version(cfg.repository_path, "m", tmp_path / "src" / "model.py", config=tmp_path / "m.pbtxt")
    res = cli(cfg_path, "sync", "--region", "eu-west-1")
    assert res.exit_code == 0 and "note:" not in res.stderr, res.stderr
    res = cli(cfg_path, "sync", "--region", "eu-west-1")
    assert res.exit_code == 0 and "note:" not in res.stderr, res.stderr
    (tmp_path / "eu" / "tritonops-index.json").unlink()
    res = cli(cfg_path, "sync", "--region", "eu-west-1")
    assert res.exit_code == 0, res.output
    assert "note: eu-west-1: no tritonops-index.json at " in res.stderr and "1 model(s) are published" in res.stderr


def test_rollback_of_all_regions_goes_on_past_a_region_that_fails(tmp_path: Path) -> None:
    """An emergency rollback everywhere: eu-west-1 (tried first) cannot roll back, us-east-1 still does,
    and the exit code and the one line say which region failed and why."""
    cfg_path = setup(tmp_path, "explicit")
    add(cfg_path, 1)
    add(cfg_path, 2)
    assert cli(cfg_path, "promote", "m", "--version", "2", "--region", "us-east-1").exit_code == 0
    assert (pointer(tmp_path), pointer(tmp_path, "us")) == ([1], [2])

    res = cli(cfg_path, "rollback", "m", "--all-regions", "-o", "json")
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout)
    assert [(c["region"], c["live_before"], c["live_after"]) for c in doc["changes"]] == [("us-east-1", 2, 1)]
    assert len(doc["failed"]) == 1 and "'eu-west-1'" in doc["failed"][0], doc
    [line] = res.stderr.strip().splitlines()
    assert line.startswith("error: 1 of 2 regions failed (us-east-1 rolled back): region 'eu-west-1': model 'm' has "
                           "no previous live version"), line  # fmt: skip
    assert (pointer(tmp_path), pointer(tmp_path, "us")) == ([1], [1])

    # A bucket gone in one region: the other is still rolled back (to v2 here, with --to).
    import shutil

    shutil.move(tmp_path / "eu", tmp_path / "eu-away")
    res = cli(cfg_path, "rollback", "m", "--all-regions", "--to", "2")
    assert res.exit_code == 1 and pointer(tmp_path, "us") == [2], res.output
    assert res.stderr.startswith("error: 1 of 2 regions failed (us-east-1 rolled back): ") and "eu-west-1" in res.stderr
    # One region named alone: its own error, as before.
    res = cli(cfg_path, "rollback", "m", "--region", "eu-west-1")
    assert res.exit_code == 1 and not res.stderr.startswith("error: 1 of"), res.output


def test_release_status_of_all_regions_shows_the_regions_it_can_read(tmp_path: Path) -> None:
    cfg_path = setup(tmp_path, "explicit")
    add(cfg_path, 1)
    import shutil

    shutil.move(tmp_path / "eu", tmp_path / "eu-away")
    res = cli(cfg_path, "release", "status", "m", "--all-regions", "-o", "json")
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout)
    assert [r["region"] for r in doc["regions"]] == ["us-east-1"] and doc["regions"][0]["models"]["m"]["live"] == 1
    assert len(doc["failed"]) == 1 and "eu-west-1" in doc["failed"][0]
    [line] = res.stderr.strip().splitlines()
    assert line.startswith("error: 1 of 2 regions failed (us-east-1 shown): region eu-west-1: "), line


def test_a_rollout_rollback_goes_on_past_a_region_whose_bucket_is_down(tmp_path: Path) -> None:
    """A failed gate's rollback blocks the version in every region of the rollout. With eu-west-1's
    bucket down, us-east-1 is still blocked; the rollback stays pending and the next advance ends it."""
    from tritonops.fileio import utc_now
    from tritonops.release.controller import rollouts_dir

    cfg_path = setup(tmp_path, "explicit")
    add(cfg_path, 1)
    add(cfg_path, 2)
    res = cli(cfg_path, "rollout", "start", "m", "--version", "2", "-o", "json")
    assert res.exit_code == 0, res.output
    # The state a controller leaves when a gate failed and it stopped before rolling back (a crash).
    state = rollouts_dir(load_config(cfg_path)) / "m.json"
    ro = json.loads(state.read_text())
    digest = ro["digest"]
    ro["phase"], ro["failure"] = "rollback", "failure rate 40% > 5%"
    ro["updated"] = utc_now()  # newer than the home bucket's copy: the newer copy is the state
    state.write_text(json.dumps(ro))

    import shutil

    shutil.move(tmp_path / "eu", tmp_path / "eu-away")
    res = cli(cfg_path, "rollout", "advance", "m")
    assert res.exit_code == 1, res.output
    # the home region's bucket holds the rollout's lease and shared state: warnings say this host went on alone
    [line] = [ln for ln in res.stderr.strip().splitlines() if not ln.startswith("WARNING")]
    assert "this host's lock alone" in res.stderr, res.stderr
    assert line.startswith("error: 1 of 2 regions failed (us-east-1 rolled back): region eu-west-1: "), line
    us = read_record(open_store(load_config(cfg_path).region("us-east-1")), "m")
    assert us is not None and digest in us.blocked and pointer(tmp_path, "us") == [1]
    assert json.loads(state.read_text())["phase"] == "rollback"

    shutil.move(tmp_path / "eu-away", tmp_path / "eu")
    res = cli(cfg_path, "rollout", "advance", "m")
    assert res.exit_code == 4, res.output  # rolled back after a failed gate
    assert json.loads(state.read_text())["phase"] == "failed"
    eu = read_record(open_store(load_config(cfg_path).region("eu-west-1")), "m")
    assert eu is not None and digest in eu.blocked and pointer(tmp_path) == [1]
