"""A rollout started on one host is finished from another after the first host's state dir is gone;
while one controller holds a model's lease, another exits 3 naming it (docs/multi-host.md).

A stack of its own (two regions, two Tritons in the first, explicit releases, short bakes), built
like tests/release's, with two hosts: two tritonops.yaml that differ only in their state dir."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import REGIONS
from tests.release.conftest import EU, MODEL, POLICY, US, LoadGen, RelStack, served
from tritonops.cli import app
from tritonops.config import load_config
from tritonops.dev import stack
from tritonops.store import open_store
from tritonops.store.lease import hold, model_lease_name, read_holder
from tritonops.store.shared_doc import rollout_key

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rel2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelStack]:
    root = tmp_path_factory.mktemp("mh-release")
    policy = root / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    st = stack.up(root / "stack", root / "repo", regions=REGIONS, servers=2, policy_file=policy)
    try:
        yield RelStack(st, load_config(Path(st.config)), Path(st.config), root)
    finally:
        stack.down(root / "stack")


def host(rel: RelStack, name: str) -> Path:
    data = yaml.safe_load(rel.config_path.read_text())
    data["state_dir"] = str(rel.root / name / "state")
    data["lease"] = {"confirm_s": 0.05}
    path = rel.root / name / "tritonops.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli(config: Path, *args: str) -> Any:
    res = CliRunner().invoke(app, ["--config", str(config), *args])
    logging.getLogger("tritonops").handlers.clear()  # CliRunner's stderr is closed once it returns
    return res


def snapshot(rel: RelStack) -> dict[str, list[int]]:
    return {name: served(url) for name, url in rel.all_servers().items()}


def test_rollout_started_on_one_host_is_finished_from_the_other(rel2: RelStack) -> None:
    a, b = host(rel2, "host-a"), host(rel2, "host-b")
    rel2.add(1)
    for r in (EU, US):
        assert cli(a, "reconcile", "--region", r).exit_code == 0
    rel2.add(2)
    with LoadGen(rel2.all_servers()):
        time.sleep(1.0)
        res = cli(a, "rollout", "start", MODEL, "--version", "2", "-o", "json")
        assert res.exit_code == 0, res.output
        res = cli(a, "rollout", "advance", MODEL, "-o", "json")
        assert res.exit_code == 0, res.output
        first = snapshot(rel2)
        assert sorted(first.values()) == [[1], [1], [2]]  # the canary server only
        # The state lives in the home region's bucket, not only on host A.
        eu = open_store(load_config(a).region(EU), EU)
        doc = json.loads(eu.get(rollout_key(MODEL)) or b"{}")
        assert doc["version"] == 2 and doc["phase"] == "bake"

        # While host A holds the model's lease, host B is refused, naming it.
        with hold(load_config(a), EU, model_lease_name(MODEL), f"rollout {MODEL}") as lease:
            assert lease is not None
            res = cli(b, "rollout", "advance", MODEL)
            assert res.exit_code == 3, res.output
            assert f"rollout {MODEL}" in res.output and "is held by" in res.output

        shutil.rmtree(rel2.root / "host-a")  # host A is gone, state dir and all
        deadline = time.monotonic() + 120
        while True:
            res = cli(b, "rollout", "advance", MODEL, "-o", "json")
            assert res.exit_code == 0, res.output
            ro = json.loads(res.stdout)["rollout"]
            if ro["phase"] in ("done", "failed", "aborted"):
                break
            assert time.monotonic() < deadline, ro
            time.sleep(0.5)
    assert ro["phase"] == "done", ro
    assert snapshot(rel2) == {name: [2] for name in rel2.all_servers()}
    assert read_holder(eu, model_lease_name(MODEL)) is None  # type: ignore[arg-type]
    # Host B's status shows the rollout it finished, read from the bucket.
    res = cli(b, "release", "status", MODEL, "-o", "json")
    st = json.loads(res.stdout)
    assert [(r["model"], r["version"], r["phase"]) for r in st["rollouts"]] == [(MODEL, 2, "done")]
