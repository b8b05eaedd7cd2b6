"""Local repositories built with the manifest API, and per-test bucket prefixes on the real S3 server."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Stack
from tritonops.config import Config, ModelRule
from tritonops.dev.smoke import SMOKE_MODEL_PY
from tritonops.fileio import sha256_file
from tritonops.repo.manifest import MANIFEST_NAME, ModelManifest, VersionEntry, scan_files, write_index
from tritonops.store.s3 import s3_client

PY_CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ 4 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
version_policy: {{ latest: {{ num_versions: {keep} }} }}
"""


def model_py(scale: float) -> bytes:
    """The smoke model (Y = 2X + 1) with a different slope per version, so versions differ in bytes."""
    return SMOKE_MODEL_PY.replace("2.0 * x", f"{scale} * x").encode()


def write_model(root: Path, name: str, versions: dict[int, dict[str, bytes]], keep: int = 2) -> ModelManifest:
    """Write ``root/name`` (config, version folders) and its manifest; the index is rewritten too."""
    mdir = root / name
    mdir.mkdir(parents=True, exist_ok=True)
    (mdir / "config.pbtxt").write_text(PY_CONFIG.format(name=name, keep=keep))
    mpath = mdir / MANIFEST_NAME
    man = ModelManifest.load(mpath) if mpath.exists() else ModelManifest(name)
    for n, files in versions.items():
        vdir = mdir / str(n)
        for rel, data in files.items():
            (vdir / rel).parent.mkdir(parents=True, exist_ok=True)
            (vdir / rel).write_bytes(data)
        man.versions[n] = VersionEntry(n, scan_files(vdir))
    man.config_sha256 = sha256_file(mdir / "config.pbtxt")
    man.save(mpath)
    write_index(root)
    return man


def remove_version(root: Path, name: str, n: int) -> None:
    import shutil

    shutil.rmtree(root / name / str(n))
    man = ModelManifest.load(root / name / MANIFEST_NAME)
    del man.versions[n]
    man.save(root / name / MANIFEST_NAME)
    write_index(root)


def remove_model(root: Path, name: str) -> None:
    import shutil

    shutil.rmtree(root / name)
    write_index(root)


@dataclass
class Env:
    """A config whose regions point at fresh prefixes of the stack's buckets, and a local repo."""

    config: Config
    config_path: Path
    repo: Path
    stack: Stack

    def client(self, region: str = "eu-west-1"):  # noqa: ANN201 - a boto3 client
        return s3_client(self.config.region(region))

    def keys(self, region: str = "eu-west-1") -> dict[str, bytes]:
        """Every object under the region's prefix (relative key -> bytes)."""
        rc = self.config.region(region)
        c = self.client(region)
        out = {}
        for page in c.get_paginator("list_objects_v2").paginate(
            Bucket=rc.bucket_name, Prefix=rc.prefix + "/"
        ):
            for o in page.get("Contents", []):
                out[o["Key"][len(rc.prefix) + 1 :]] = c.get_object(Bucket=rc.bucket_name, Key=o["Key"])[
                    "Body"
                ].read()
        return out

    def put(self, key: str, data: bytes, region: str = "eu-west-1") -> None:
        rc = self.config.region(region)
        self.client(region).put_object(Bucket=rc.bucket_name, Key=f"{rc.prefix}/{key}", Body=data)

    def with_rules(self, rules: dict[str, list[str]]) -> Env:
        cfg = self.config.model_copy(update={"models": {m: ModelRule(regions=r) for m, r in rules.items()}})
        return Env(cfg, _write_config(cfg, self.config_path), self.repo, self.stack)


def _write_config(cfg: Config, path: Path) -> Path:
    from tritonops.config import dump_config, load_config

    path.write_text(dump_config(cfg))
    load_config(path)  # what we wrote is a valid config
    return path


@pytest.fixture
def env(dev_stack: Stack, tmp_path: Path) -> Env:
    prefix = f"t-{uuid.uuid4().hex[:10]}"
    regions = {
        name: rc.model_copy(update={"bucket": f"s3://{rc.bucket_name}/{prefix}"})
        for name, rc in dev_stack.config.regions.items()
    }
    repo = tmp_path / "repo"
    repo.mkdir()
    cfg = dev_stack.config.model_copy(update={"regions": regions, "repository": repo, "source": None})
    path = _write_config(cfg, tmp_path / "tritonops.yaml")
    from tritonops.config import load_config

    return Env(load_config(path), path, repo, dev_stack)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


Builder = Callable[..., ModelManifest]
