"""Fixtures for reconcile's end-to-end tests: a region per test on its own bucket prefix, with its own
fresh Triton (so the test owns the server state), and a publisher that writes real manifests."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REGIONS, Stack
from tests.models import python_model
from tritonops.config import Config, RegionConfig, load_config
from tritonops.dev import stack
from tritonops.fileio import sha256_bytes
from tritonops.repo.manifest import (
    CONFIG_NAME,
    INDEX_NAME,
    MANIFEST_NAME,
    FileEntry,
    ModelManifest,
    RepoIndex,
    VersionEntry,
)
from tritonops.store.s3 import s3_client

CONFIG_TMPL = """\
backend: "python"
max_batch_size: 8
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ 4 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
version_policy: {{ specific: {{ versions: [ {version} ] }} }}
"""

def model_py(factor: float, broken: bool = False) -> bytes:
    """Y = X * factor: each version answers differently, so a test can tell which one serves."""
    init = 'raise RuntimeError("broken on purpose")' if broken else "pass"
    return python_model(factor, init=init).encode()


@dataclass
class Publisher:
    """Publishes like `tritonops sync`: version files, then config and manifest, then the index."""

    region: RegionConfig
    manifests: dict[str, ModelManifest] = field(default_factory=dict)

    def _key(self, rel: str) -> str:
        return f"{self.region.prefix}/{rel}" if self.region.prefix else rel

    def publish(self, model: str, version: int, files: dict[str, bytes], config_text: str | None = None) -> None:
        s3 = s3_client(self.region)
        for rel, data in sorted(files.items()):
            s3.put_object(
                Bucket=self.region.bucket_name, Key=self._key(f"{model}/{version}/{rel}"), Body=data,
                Metadata={"sha256": sha256_bytes(data)},  # as sync records it (reconcile's bucket gate reads it)
            )  # fmt: skip
        config = (config_text or CONFIG_TMPL.format(version=version)).encode()
        man = self.manifests.setdefault(model, ModelManifest(model))
        man.versions[version] = VersionEntry(
            version, [FileEntry(p, len(d), sha256_bytes(d)) for p, d in sorted(files.items())]
        )
        man.config_sha256 = sha256_bytes(config)
        s3.put_object(Bucket=self.region.bucket_name, Key=self._key(f"{model}/{CONFIG_NAME}"), Body=config)
        s3.put_object(
            Bucket=self.region.bucket_name, Key=self._key(f"{model}/{MANIFEST_NAME}"), Body=man.dumps()
        )
        index = RepoIndex.from_manifests(self.manifests.values())
        s3.put_object(Bucket=self.region.bucket_name, Key=self._key(INDEX_NAME), Body=index.dumps())


@dataclass
class RecRegions:
    config_path: Path
    servers: dict[str, stack.TritonServer]
    publishers: dict[str, Publisher]
    data: dict[str, Any]

    @property
    def config(self) -> Config:
        return load_config(self.config_path)

    def rewrite(self, edit: Callable[[dict[str, Any]], None]) -> None:
        edit(self.data)
        self.config_path.write_text(yaml.safe_dump(self.data, sort_keys=False))


@pytest.fixture
def rec_regions(dev_stack: Stack, tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], RecRegions]]:
    """Both regions, each on a unique prefix of its bucket with one fresh Triton reading it."""
    started: list[stack.TritonServer] = []

    def make(models: dict[str, Any]) -> RecRegions:
        regions: dict[str, Any] = {}
        servers: dict[str, stack.TritonServer] = {}
        pubs: dict[str, Publisher] = {}
        for r in REGIONS:
            base = dev_stack.config.region(r)
            bucket = f"s3://{base.bucket_name}/rec-{uuid.uuid4().hex[:10]}"
            rc = base.model_copy(update={"bucket": bucket, "servers": []})
            # Triton refuses a repository prefix with no object under it.
            s3_client(rc).put_object(
                Bucket=rc.bucket_name, Key=f"{rc.prefix}/README", Body=b"reconcile test\n"
            )
            t = stack.start_triton(
                dev_stack.triton_home,
                rc.triton_repository_url(),
                tmp_path / f"triton-{r}.log",
                dev_stack.triton_env(),
            )
            started.append(t)
            servers[r] = t
            pubs[r] = Publisher(rc)
            regions[r] = {
                "bucket": bucket,
                "endpoint_url": base.endpoint_url,
                "profile": base.profile,
                "credentials_file": str(base.credentials_file),
                "servers": [{"name": f"{r}-a", "http_url": t.http_url, "metrics_url": t.metrics_url}],
            }
        data = {
            "repository": str(tmp_path / "repo"),
            "state_dir": str(tmp_path / "state"),
            "regions": regions,
            "models": models,
        }
        path = tmp_path / "tritonops.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return RecRegions(path, servers, pubs, data)

    yield make
    for t in started:
        stack.stop(t.record)
