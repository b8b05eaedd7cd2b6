"""A stack of its own for releases: two regions, two Tritons in the first, release mode explicit with
short bakes; a python model whose versions answer Y = X * version (so every answer names its version),
and a load generator sending real inference requests through tritonclient to every server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.conftest import REGIONS
from tests.models import python_model
from tritonops.config import Config, load_config
from tritonops.dev import stack

EU, US = REGIONS
MODEL = "relm"

POLICY = {
    "release": {
        "mode": "explicit",
        "rollout": {
            "canary_share": 0.5,
            "bake_s": 2,
            "gates": {"min_requests": 20, "max_failure_rate": 0.05, "max_latency_ratio": 1.5,
                      "min_latency_delta_ms": 4},
        },
    }
}  # fmt: skip

CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ 1 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""

GOOD_MS = 10


@dataclass
class RelStack:
    state: stack.StackState
    config: Config
    config_path: Path
    root: Path

    def servers(self, region: str) -> dict[str, str]:
        return {s.name: s.http_url or "" for s in self.config.region(region).servers}

    def all_servers(self) -> dict[str, str]:
        return {**self.servers(EU), **self.servers(US)}

    def add(self, version: int, *, sleep_ms: int = GOOD_MS, fail_every: int = 0) -> None:
        from tritonops.release.pointer import publish_release
        from tritonops.repo.repository import add_version
        from tritonops.store.sync import SyncOptions, sync

        src = self.root / f"src-{version}"
        src.mkdir(parents=True, exist_ok=True)
        # fail_every: every n-th request of live traffic fails (LoadGen sends ones; the reconcile gate's
        # warmup sends zeros and always passes, however much traffic reached the version before it: the
        # metrics judge); sleep_ms per request.
        code = python_model(version, sleep_ms=sleep_ms, fail_every=fail_every)
        (src / "model.py").write_text(code)
        conf = self.root / "relm.pbtxt"
        conf.write_text(CONFIG.format(name=MODEL))
        add_version(self.config.repository_path, MODEL, src / "model.py", config=conf)
        assert max(self.local_versions()) == version
        sync(self.config, [EU, US], SyncOptions(), releases=publish_release)

    def local_versions(self) -> list[int]:
        from tritonops.repo.manifest import ModelManifest

        return sorted(ModelManifest.load(self.config.repository_path / MODEL / "tritonops-manifest.json").versions)


@pytest.fixture(scope="package")
def rel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelStack]:
    root = tmp_path_factory.mktemp("release")
    policy = root / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    state_dir = root / "state"
    st = stack.up(state_dir, root / "repo", regions=REGIONS, servers=2, policy_file=policy)
    try:
        yield RelStack(st, load_config(Path(st.config)), Path(st.config), root)
    finally:
        stack.down(state_dir)


def infer_version(url: str, timeout_s: float = 5.0) -> int:
    """One request; the answer is X * version, so it names the version that served it."""
    import tritonclient.http as th

    c = th.InferenceServerClient(url.removeprefix("http://"), connection_timeout=timeout_s, network_timeout=timeout_s)
    try:
        i = th.InferInput("X", [1, 1], "FP32")
        i.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
        res = c.infer(MODEL, [i])
        return int(round(float(res.as_numpy("Y")[0][0])))
    finally:
        c.close()


def served(url: str) -> list[int]:
    from tritonops.triton.client import ControlClient

    return ControlClient.connect(url).loaded_versions(MODEL)


@dataclass
class LoadGen:
    """One thread per server (as a region's load balancer would spread requests), ~40 requests/s each."""

    servers: dict[str, str]
    interval_s: float = 0.02
    answers: list[tuple[float, str, int | None, str]] = field(default_factory=list)  # (t, server, version, error)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self, name: str, url: str) -> None:
        import tritonclient.http as th

        c = th.InferenceServerClient(url.removeprefix("http://"), connection_timeout=5, network_timeout=5)
        x = th.InferInput("X", [1, 1], "FP32")
        x.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
        while not self._stop.is_set():
            try:
                res = c.infer(MODEL, [x])
                self.answers.append((time.time(), name, int(round(float(res.as_numpy("Y")[0][0]))), ""))
            except Exception as e:  # noqa: BLE001 - every failure is recorded and asserted on
                self.answers.append((time.time(), name, None, str(e)[:200]))
            self._stop.wait(self.interval_s)
        c.close()

    def __enter__(self) -> LoadGen:
        for name, url in sorted(self.servers.items()):
            t = threading.Thread(target=self._run, args=(name, url), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def versions_by_server(self, since: float = 0.0) -> dict[str, set[int | None]]:
        out: dict[str, set[int | None]] = {}
        for t, s, v, _ in list(self.answers):
            if t >= since:
                out.setdefault(s, set()).add(v)
        return out

    def errors(self, server: str, since: float = 0.0) -> list[str]:
        return [e for t, s, _, e in list(self.answers) if s == server and e and t >= since]
