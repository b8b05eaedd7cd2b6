"""Releases on the local stack (two regions, two Tritons in the first, real traffic through tritonclient):

- time to detect a bad canary: from the first request the bad version answers (or fails) to the
  moment every step is rolled back (a version failing a third of its requests; one 3x slower);
- time to roll back a region: from `tritonops rollback --now` to every server answering the old version;
- SIGKILL trials: `tritonops rollout advance` (a subprocess, as cron runs it) killed at a random moment,
  rerun until the rollout ends; after every kill, no server outside the steps the gates allowed serves
  or answers with the new version, and every rollout ends where its gates say (good: live everywhere;
  bad: rolled back, never beyond its canary server).

    PYTHONPATH=. python bench/release.py [--trials 3] [--bad-trials 2] [--bake 1]

Each rollout is driven only by `rollout advance` subprocesses, most of them SIGKILLed at a random
moment (each kill is one trial of "resume after SIGKILL"); the results count the kills.

Writes bench/results/release.json and release.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

import yaml  # noqa: E402

from tests.release.conftest import EU, MODEL, POLICY, US, LoadGen, RelStack, infer_version, served  # noqa: E402
from tritonops.cli.reconcile import reconcile_region  # noqa: E402
from tritonops.config import load_config  # noqa: E402
from tritonops.dev import stack  # noqa: E402
from tritonops.release import controller  # noqa: E402
from tritonops.release.ops import promote  # noqa: E402


def snapshot(rel: RelStack) -> dict[str, list[int]]:
    return {n: served(u) for n, u in rel.all_servers().items()}


def cli(rel: RelStack, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tritonops", "--config", str(rel.config_path), *args],
                          capture_output=True, text=True, env=env, timeout=timeout_s, check=False)  # fmt: skip


def reset(rel: RelStack, version: int) -> None:
    """Every region back on ``version`` (promote + reconcile), no rollout in progress."""
    from tritonops.reconcile.runner import context, reconcile

    for r in (EU, US):
        promote(rel.config, MODEL, version, r)
        reconcile(context(rel.config, r))


def allowed_servers(ro: dict[str, Any]) -> set[str]:
    """Servers the new version may be on now: the targets of every step up to the current one."""
    if ro["phase"] in ("failed", "aborted"):
        return set()
    upto = len(ro["steps"]) - 1 if ro["phase"] == "done" else ro["step"]
    return {s for st in ro["steps"][: upto + 1] for ss in st["targets"].values() for s in ss}


def detect(rel: RelStack, lg: LoadGen, version: int) -> dict[str, Any]:
    res = cli(rel, "rollout", "start", MODEL, "--version", str(version))
    assert res.returncode == 0, res.stderr
    t_start = time.time()
    while True:
        ro, _ = controller.advance(rel.config, MODEL, reconcile_region)
        assert ro is not None
        if ro["phase"] in controller.TERMINAL:
            break
        time.sleep(0.2)
    t_end = time.time()
    first = min((t for t, _, v, e in lg.answers if t >= t_start and (v == version or (e and "bad" in e))),
                default=None)  # fmt: skip
    return {"version": version, "phase": ro["phase"], "failure": ro.get("failure"),
            "start_to_rolled_back_s": round(t_end - t_start, 2),
            "first_request_to_rolled_back_s": None if first is None else round(t_end - first, 2)}  # fmt: skip


def time_rollback(rel: RelStack, to: int) -> float:
    t0 = time.monotonic()
    res = cli(rel, "rollback", MODEL, "--region", EU, "--to", str(to), "--now")
    assert res.returncode == 0, res.stderr
    while not all(infer_version(u) == to for u in rel.servers(EU).values()):
        time.sleep(0.02)
    return time.monotonic() - t0


def sigkill_trial(rel: RelStack, lg: LoadGen, version: int, rng: random.Random) -> dict[str, Any]:
    res = cli(rel, "rollout", "start", MODEL, "--version", str(version))
    assert res.returncode == 0, res.stderr
    kills, runs, violations = 0, 0, []
    t_start = time.time()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    while True:
        runs += 1
        argv = [sys.executable, "-m", "tritonops", "--config", str(rel.config_path), "rollout", "advance", MODEL]
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            # A run that applies a step (startup, records, a reconcile with measured loads) takes ~5-15 s
            # on the loaded 2-core machine; a judging or baking run ~2-4 s: the kills land anywhere.
            p.wait(timeout=rng.uniform(0.3, 12.0))
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            kills += 1
        ro = controller.load_rollout(rel.config, MODEL)
        assert ro is not None
        ok = allowed_servers(ro) | ({s for st in ro["steps"][: ro["step"] + 1] for ss in st["targets"].values()
                                     for s in ss} if ro["phase"] in ("rollback", "abort") else set())  # fmt: skip
        for name, vs in snapshot(rel).items():
            if version in vs and name not in ok:
                violations.append(f"{name} serves v{version} at step {ro['step']} {ro['phase']}")
        if ro["phase"] in controller.TERMINAL:
            break
        if time.time() - t_start > 600:
            violations.append("did not finish in 600 s")
            controller.abort(rel.config, MODEL, reconcile_region)
            break
        time.sleep(0.3)
    # answers: a server outside every step the gates allowed never answered with the new version
    reached = {s for st in ro["steps"][: ro["step"] + 1] for ss in st["targets"].values() for s in ss}
    for t, s, v, _ in list(lg.answers):
        if t >= t_start and v == version and s not in reached:
            violations.append(f"{s} answered v{version}")
            break
    return {"version": version, "phase": ro["phase"], "kills": kills, "runs": runs,
            "seconds": round(time.time() - t_start, 1), "violations": violations}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=3, help="good rollouts, each SIGKILLed repeatedly")
    ap.add_argument("--bad-trials", type=int, default=2)
    ap.add_argument("--bake", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="tritonops-bench-release-"))
    policy = json.loads(json.dumps(POLICY))
    policy["release"]["rollout"]["bake_s"] = args.bake
    (root / "policy.yaml").write_text(yaml.safe_dump(policy))
    st = stack.up(root / "state", root / "repo", regions=(EU, US), servers=2, policy_file=root / "policy.yaml")

    def save() -> None:  # after every phase: a long run interrupted still leaves what it measured
        res_dir = ROOT / "bench" / "results"
        (res_dir / "release.json").write_text(json.dumps(out, indent=2) + "\n")
        (res_dir / "release.md").write_text(render(out))

    out: dict[str, Any] = {"machine": f"{platform.node()} {os.cpu_count()} cpus", "bake_s": args.bake,
                           "min_requests": policy["release"]["rollout"]["gates"]["min_requests"]}  # fmt: skip
    try:
        rel = RelStack(st, load_config(Path(st.config)), Path(st.config), root)
        rel.add(1)
        reset(rel, 1)
        rel.add(2)
        rel.add(3, fail_every=3)
        rel.add(4, sleep_ms=30)
        with LoadGen(rel.all_servers()) as lg:
            time.sleep(1)
            reset(rel, 2)
            out["detect"] = [detect(rel, lg, 3), detect(rel, lg, 4)]
            save()
            rb = []
            for _ in range(3):
                rb.append(time_rollback(rel, 1))
                reset(rel, 2)
            out["rollback_region_s"] = {"runs": [round(x, 2) for x in rb], "median": round(statistics.median(rb), 2),
                                        "servers": len(rel.servers(EU))}  # fmt: skip
            save()
            trials: list[dict[str, Any]] = []
            for i in range(args.trials):
                reset(rel, 1)
                trials.append(sigkill_trial(rel, lg, 2, rng))
                print(f"trial {i + 1}: {trials[-1]}", file=sys.stderr)
                out["sigkill"] = summary(trials)
                save()
            for i in range(args.bad_trials):
                reset(rel, 2)
                v = 5 + i
                rel.add(v, fail_every=3)
                trials.append(sigkill_trial(rel, lg, v, rng))
                print(f"bad trial {i + 1}: {trials[-1]}", file=sys.stderr)
                out["sigkill"] = summary(trials)
                save()
            out["sigkill"] = summary(trials)
    finally:
        stack.down(root / "state")
    save()
    print(render(out))


def summary(trials: list[dict[str, Any]]) -> dict[str, Any]:
    return {"trials": trials, "kills": sum(t["kills"] for t in trials),
            "violations": sum(len(t["violations"]) for t in trials),
            "good_done": sum(1 for t in trials if t["version"] == 2 and t["phase"] == "done"),
            "bad_failed": sum(1 for t in trials if t["version"] >= 5 and t["phase"] == "failed")}  # fmt: skip


def render(out: dict[str, Any]) -> str:
    lines = ["# Releases on the local stack", "",
             f"{out['machine']}; bake {out['bake_s']} s per step; gates need {out['min_requests']} requests.", "",
             "| bad canary | verdict | first bad request -> rolled back (s) | rollout start -> rolled back (s) |",
             "| --- | --- | --- | --- |"]  # fmt: skip
    for d in out.get("detect", []):
        lines.append(f"| v{d['version']} | {d['failure']} | {d['first_request_to_rolled_back_s']} | "
                     f"{d['start_to_rolled_back_s']} |")  # fmt: skip
    rb = out.get("rollback_region_s")
    if rb:
        lines += ["", f"Rollback of a region ({rb['servers']} servers), command to every server answering the old "
                  f"version: median {rb['median']} s (runs {rb['runs']})."]  # fmt: skip
    sk = out.get("sigkill")
    if sk:
        lines += ["", f"SIGKILL trials: {sk['kills']} kills of `rollout advance` over {len(sk['trials'])} rollouts; "
                  f"good rollouts live everywhere: {sk['good_done']}; bad rollouts rolled back: {sk['bad_failed']}; "
                  f"invariant violations: {sk['violations']}."]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
