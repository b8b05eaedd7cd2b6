"""verify_version on a file:// store (no server needed) and on the real S3 server: each kind of
difference is named, the positive-check cache skips the HEADs only while the listing is unchanged."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tritonops.fileio import sha256_bytes
from tritonops.repo.manifest import FileEntry, ModelManifest, VersionEntry
from tritonops.store.base import ObjectInfo
from tritonops.store.local import FileStore
from tritonops.store.verify import VerifyCache, verify_version

FILES = {"model.py": b"print('v1')\n", "sub/weights.bin": bytes(range(200))}


def publish(store: Any, model: str = "m", version: int = 1) -> ModelManifest:
    entries = []
    for rel, data in FILES.items():
        store.put_bytes(f"{model}/{version}/{rel}", data, sha256_bytes(data))
        entries.append(FileEntry(rel, len(data), sha256_bytes(data)))
    return ModelManifest(model, {version: VersionEntry(version, entries)})


class Counting:
    """A store that counts the requests verify_version makes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {"list": 0, "head": 0, "get": 0}

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        self.calls["list"] += 1
        return list(self.inner.list(prefix))

    def head(self, key: str) -> ObjectInfo | None:
        self.calls["head"] += 1
        return self.inner.head(key)  # type: ignore[no-any-return]

    def get(self, key: str) -> bytes | None:
        self.calls["get"] += 1
        return self.inner.get(key)  # type: ignore[no-any-return]

    def hash_bytes(self, key: str) -> str | None:
        self.calls["get"] += 1  # a download all the same, streamed
        return self.inner.hash_bytes(key)  # type: ignore[no-any-return]


def test_file_store_each_difference_is_named(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "bucket")
    man = publish(store)
    assert verify_version(store, man, 1, region="r1") == []
    assert verify_version(store, man, 1, full=True) == []

    (tmp_path / "bucket/m/1/model.py").write_bytes(b"print('v9')\n")  # same size, other bytes
    (tmp_path / "bucket/m/1/extra.txt").write_bytes(b"x")
    (tmp_path / "bucket/m/1/sub/weights.bin").unlink()
    bad = verify_version(store, man, 1, region="r1")
    assert [(m.key, m.extra) for m in bad] == [
        ("m/1/extra.txt", True), ("m/1/sub/weights.bin", False),
    ]  # fmt: skip
    assert bad[1].line().startswith("region r1: model 'm' version 1: m/1/sub/weights.bin: expected 200 bytes")
    assert bad[1].found == "no object"
    # Listing problems come first; with them fixed the changed bytes are found.
    (tmp_path / "bucket/m/1/extra.txt").unlink()
    store.put_bytes("m/1/sub/weights.bin", FILES["sub/weights.bin"], "")
    bad = verify_version(store, man, 1)
    assert [m.key for m in bad] == ["m/1/model.py"] and "sha256" in bad[0].found
    assert verify_version(store, man, 2)[0].found == "not in the manifest"


def test_cache_skips_heads_until_the_listing_changes(tmp_path: Path) -> None:
    store = Counting(FileStore(tmp_path / "bucket"))
    man = publish(store.inner)
    # Nanosecond mtimes and one writer: no need to wait for objects to settle.
    cache = VerifyCache(tmp_path / "state" / "verified.json", settle_s=0)
    assert verify_version(store, man, 1, cache=cache) == []
    assert store.calls["head"] == 2
    assert verify_version(store, man, 1, cache=cache) == []
    assert store.calls == {"list": 2, "head": 2, "get": 0}  # the second check cost one LIST
    # A positive cheap check does not stand in for a content check.
    assert verify_version(store, man, 1, cache=cache, full=True) == []
    assert store.calls["get"] == 2
    # Rewrite one object in place (same size): the listing fingerprint moves, so it is checked again.
    p = tmp_path / "bucket/m/1/model.py"
    p.write_bytes(b"print('v9')\n")
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    bad = verify_version(store, man, 1, cache=cache)
    assert [m.key for m in bad] == ["m/1/model.py"]
    # A damaged cache file only costs a re-check.
    cache.path.write_text("{not json")
    store.inner.put_bytes("m/1/model.py", FILES["model.py"], "")
    assert verify_version(store, man, 1, cache=cache) == []


@pytest.mark.slow
def test_s3_metadata_lie_and_unrecorded_bytes(dev_stack, tmp_path: Path) -> None:
    from tritonops.store.s3 import S3Store, s3_client

    base = dev_stack.config.region("eu-west-1")
    rc = base.model_copy(update={"bucket": f"s3://{base.bucket_name}/verify-{uuid.uuid4().hex[:8]}"})
    store = Counting(S3Store(rc, region_name="eu-west-1"))
    man = publish(store.inner)
    cache = VerifyCache(tmp_path / "verified.json")
    assert verify_version(store, man, 1, cache=cache) == []
    assert store.calls == {"list": 1, "head": 2, "get": 0}  # recorded sha256: no download
    # Written this second: S3's Last-Modified (to the second) could not tell a rewrite now, so not cached.
    assert verify_version(store, man, 1, cache=cache) == []
    assert store.calls == {"list": 2, "head": 4, "get": 0}
    time.sleep(cache.settle_s + 1)
    assert verify_version(store, man, 1, cache=cache) == []
    assert verify_version(store, man, 1, cache=cache) == []
    assert store.calls == {"list": 4, "head": 6, "get": 0}  # the last check was one LIST

    s3 = s3_client(rc)
    key = f"{rc.prefix}/m/1/model.py"
    s3.copy_object(
        Bucket=rc.bucket_name, Key=key, CopySource={"Bucket": rc.bucket_name, "Key": key},
        MetadataDirective="REPLACE", Metadata={"sha256": "0" * 64},
    )  # fmt: skip
    bad = verify_version(store, man, 1, cache=cache, region="eu-west-1")
    assert [m.key for m in bad] == ["m/1/model.py"], bad
    assert bad[0].found == "recorded sha256 000000000000..."
    # Bytes put by another tool carry no sha256: they are hashed instead, and the right ones pass.
    s3.put_object(Bucket=rc.bucket_name, Key=key, Body=FILES["model.py"])
    gets = store.calls["get"]
    assert verify_version(store, man, 1, cache=cache) == []
    assert store.calls["get"] == gets + 1
    s3.put_object(Bucket=rc.bucket_name, Key=key, Body=b"print('v9')\n")
    assert [m.key for m in verify_version(store, man, 1, cache=cache)] == ["m/1/model.py"]
    store.close()
