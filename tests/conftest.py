"""Shared fixtures: the real local stack (S3 server + Triton per region), built on `tritonops dev`."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Keep every AWS SDK (boto3 here, the C++ one inside Triton) off the EC2 metadata address.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ.setdefault("NO_COLOR", "1")

from tests.promstack import exporter, prometheus  # noqa: E402, F401 - fixtures shared by tests/demand and tests/reconcile
from tritonops.config import Config, load_config  # noqa: E402
from tritonops.dev import stack  # noqa: E402

REGIONS = ("eu-west-1", "us-east-1")


@dataclass
class Stack:
    state: stack.StackState
    config: Config
    config_path: Path
    state_dir: Path
    credentials: stack.Credentials

    @property
    def triton_home(self) -> Path:
        return self.state_dir / "tritonserver"

    def triton_env(self) -> dict[str, str]:
        return self.credentials.env()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked slow first (in their order, then the rest in theirs): `make test` spreads the suite
    over several workers, and a 90 s test started last would be the whole run's tail."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One real S3 server and one real Triton per region for the whole session (like `dev up`)."""
    root = tmp_path_factory.mktemp("stack")
    state_dir = root / "state"
    st = stack.up(state_dir, root / "repo", regions=REGIONS)
    creds = stack.Credentials.read_shared_file(state_dir / "credentials")
    assert creds is not None
    try:
        yield Stack(st, load_config(Path(st.config)), Path(st.config), state_dir, creds)
    finally:
        stack.down(state_dir)


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Model names unique per test, so tests sharing the session's servers never collide."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def fresh_triton(dev_stack: Stack) -> Iterator[Callable[[str], stack.TritonServer]]:
    """Start an extra, empty Triton on a region's bucket (for tests that need a server to themselves)."""
    started: list[stack.TritonServer] = []

    def start(region: str) -> stack.TritonServer:
        rcfg = dev_stack.config.region(region)
        log_path = dev_stack.state_dir / "logs" / f"fresh-{region}-{len(started)}-{uuid.uuid4().hex[:6]}.log"
        t = stack.start_triton(dev_stack.triton_home, rcfg.triton_repository_url(), log_path, dev_stack.triton_env())
        started.append(t)
        return t

    yield start
    for t in started:
        stack.stop(t.record)
