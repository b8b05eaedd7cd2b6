"""Releases end to end on the real local stack: two regions, two Tritons in the first, real traffic."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.release.conftest import EU, MODEL, US, LoadGen, RelStack, infer_version, served
from tritonops.cli import app
from tritonops.cli.reconcile import reconcile_region
from tritonops.release import controller
from tritonops.release.state import ReleaseError

EU0, EU1, US0 = f"{EU}-triton-0", f"{EU}-triton-1", f"{US}-triton-0"


def cli(rel: RelStack, *args: str) -> Any:
    res = CliRunner().invoke(app, ["--config", str(rel.config_path), *args])
    # The CLI points tritonops' log handler at CliRunner's stderr, closed once it returns; library
    # calls made by this test afterwards must not log into it.
    logging.getLogger("tritonops").handlers.clear()
    return res


def snapshot(rel: RelStack) -> dict[str, list[int]]:
    return {name: served(url) for name, url in rel.all_servers().items()}


def run_rollout(rel: RelStack, version: int, timeout_s: float = 300.0) -> tuple[dict[str, Any], list[dict[str, list[int]]]]:
    """start + advance until a terminal phase; what every server serves after each advance."""
    res = cli(rel, "rollout", "start", MODEL, "--version", str(version), "-o", "json")
    assert res.exit_code == 0, res.output
    seen = []
    deadline = time.monotonic() + timeout_s
    while True:
        ro, _ = controller.advance(rel.config, MODEL, reconcile_region)
        assert ro is not None
        seen.append(snapshot(rel))
        if ro["phase"] in controller.TERMINAL:
            return ro, seen
        assert time.monotonic() < deadline, f"rollout stuck: {ro['phase']} {ro.get('gate')}"
        time.sleep(0.5)


def reconcile_all(rel: RelStack) -> None:
    for r in (EU, US):
        res = cli(rel, "reconcile", "--region", r, "-o", "json")
        assert res.exit_code == 0, res.output


@pytest.mark.slow
@pytest.mark.timeout(1500)  # three rollouts of three steps; each step reconciles, judged on a busy machine
def test_publish_is_not_release_then_staged_rollouts_and_rollback(rel: RelStack) -> None:
    rel.add(1)
    reconcile_all(rel)  # a model's first publish in a region is its first release
    assert snapshot(rel) == {EU0: [1], EU1: [1], US0: [1]}

    rel.add(2)
    reconcile_all(rel)
    assert snapshot(rel) == {EU0: [1], EU1: [1], US0: [1]}, "explicit mode: publishing v2 released it"

    with LoadGen(rel.all_servers()) as lg:
        time.sleep(1.0)
        # -- a good v2: canary server -> whole canary region -> second region
        ro, seen = run_rollout(rel, 2)
        assert ro["phase"] == "done", ro
        assert [s["kind"] for s in ro["steps"]] == ["canary", "all", "all"]
        assert {EU0: [2], EU1: [1], US0: [1]} in seen  # the canary step was observed on its own
        assert seen[-1] == {EU0: [2], EU1: [2], US0: [2]}
        assert all(h["verdict"] == "pass" and h["readings"]["requests"] >= 20 for h in ro["history"])
        t_good = time.time()

        # -- a bad v3 (a third of its requests fail) is caught in the canary step
        rel.add(3, fail_every=3)
        ro, seen = run_rollout(rel, 3)
        assert ro["phase"] == "failed", ro
        # the failure-rate gate catches it under traffic, unless the answers gate's request is the one that fails
        assert "failure rate" in ro["failure"] or "failed the request" in ro["failure"], ro["failure"]
        assert all(s[US0] == [2] and s[EU1] == [2] for s in seen), "v3 went beyond its canary server"
        assert seen[-1] == {EU0: [2], EU1: [2], US0: [2]}
        # -- and separately a 3x slower v4
        rel.add(4, sleep_ms=30)
        ro, seen = run_rollout(rel, 4)
        assert ro["phase"] == "failed", ro
        assert "latency" in ro["failure"], ro["failure"]
        assert all(s[US0] == [2] and s[EU1] == [2] for s in seen)
        assert seen[-1] == {EU0: [2], EU1: [2], US0: [2]}
        time.sleep(0.5)
    # v2 answered throughout on every server the bad versions never reached
    after = lg.versions_by_server(since=t_good)
    assert after[EU1] == {2} and after[US0] == {2}, after
    assert lg.errors(EU1, since=t_good) == [] and lg.errors(US0, since=t_good) == []
    assert {3, 4} & after[EU0], "the canary never answered with the bad versions: no real traffic reached it"

    # blocked: neither a rollout nor reconcile makes v3 or v4 live again
    with pytest.raises(ReleaseError, match="blocked"):
        controller.start(rel.config, MODEL, 3)
    res = cli(rel, "promote", MODEL, "--version", "4", "--region", US)
    assert res.exit_code == 1 and "blocked" in res.output
    reconcile_all(rel)
    assert snapshot(rel) == {EU0: [2], EU1: [2], US0: [2]}

    # status names it all
    res = cli(rel, "release", "status", MODEL, "--all-regions", "-o", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    eu = doc["regions"][0]
    assert eu["models"][MODEL]["live"] == 2 and eu["models"][MODEL]["previous"] == 1
    assert len(eu["models"][MODEL]["blocked"]) == 2 and eu["models"][MODEL]["pointer"] == [2]
    assert eu["servers"][EU1]["models"][MODEL] == [2]
    assert doc["rollouts"][0]["phase"] == "failed"

    # rollback of the live v2 to v1 in a region, timed from the command to every server answering v1
    t0 = time.monotonic()
    res = cli(rel, "rollback", MODEL, "--region", EU, "--now", "-o", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["changes"][0]["live_after"] == 1
    while not all(infer_version(u) == 1 for u in rel.servers(EU).values()):
        assert time.monotonic() - t0 < 30
        time.sleep(0.05)
    print(f"rollback of {EU} (2 servers) took {time.monotonic() - t0:.2f} s")
    assert snapshot(rel) == {EU0: [1], EU1: [1], US0: [2]}
    # v1 and v2 stay in the bucket through a prune: live and rollback target
    from tritonops.release.pointer import publish_release
    from tritonops.store.sync import SyncOptions, sync

    sync(rel.config, [EU], SyncOptions(prune=True, force=True), releases=publish_release)
    res = cli(rel, "promote", MODEL, "--version", "2", "--region", EU, "-o", "json")
    assert res.exit_code == 0, res.output
