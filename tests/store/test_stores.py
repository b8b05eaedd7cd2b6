"""The stores on their own: multipart on both real S3 servers (moto and rclone), and file://."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Stack
from tests.store.conftest import model_py, write_model
from tritonops.config import Config, RegionConfig
from tritonops.dev import stack
from tritonops.errors import StoreError
from tritonops.release.pointer import publish_release
from tritonops.store import open_store
from tritonops.store.local import FileStore
from tritonops.store.s3 import S3Store
from tritonops.store.sync import SyncOptions, sync


@pytest.fixture(scope="module")
def rclone_region(dev_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegionConfig]:
    """`rclone serve s3` on disk, with its own bucket (the bench's server)."""
    d = tmp_path_factory.mktemp("rclone")
    (d / "data" / "bench").mkdir(parents=True)  # before the server starts: rclone caches listings
    srv = stack.start_s3(d / "data", d / "rclone.log", dev_stack.credentials, kind="rclone")
    try:
        rc = dev_stack.config.region("eu-west-1").model_copy(
            update={"bucket": "s3://bench/p", "endpoint_url": srv.endpoint_url}
        )
        yield rc
    finally:
        stack.stop(srv.record)


def _region(server: str, dev_stack: Stack, request: pytest.FixtureRequest) -> RegionConfig:
    """The stack's moto bucket, or the module's rclone one (started only when a test asks for it)."""
    return dev_stack.config.region("eu-west-1") if server == "moto" else request.getfixturevalue("rclone_region")


@pytest.mark.parametrize("server", ["moto", "rclone"])
def test_multipart_parallel_parts_and_metadata(
    server: str, dev_stack: Stack, request, tmp_path: Path
) -> None:
    rc = _region(server, dev_stack, request)
    store = S3Store(rc, "eu-west-1", max_workers=4, multipart_threshold_bytes=6 << 20, part_bytes=5 << 20)
    try:
        data = os.urandom(13 << 20)  # 3 parts: 5 + 5 + 3 MiB
        f = tmp_path / "big.bin"
        f.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        sent: list[int] = []
        key = f"mp-{os.getpid()}-{server}/1/big.bin"
        assert store.put_file(key, str(f), len(data), digest, sent.append) == digest
        assert sorted(sent) == [3 << 20, 5 << 20, 5 << 20]
        assert store.get(key) == data
        info = store.head(key)
        assert info is not None and (info.size, info.sha256) == (len(data), digest)
        # A file whose bytes differ from the manifest is never completed.
        wrong = "0" * 64
        key2 = key.replace("big", "wrong")
        assert store.put_file(key2, str(f), len(data), wrong) == digest
        assert store.head(key2) is None
        store.delete([key])
        assert store.head(key) is None
    finally:
        store.close()


@pytest.mark.parametrize("server", ["moto", "rclone"])
def test_streamed_put_hashes_what_it_sends_and_never_completes_a_mismatch(
    server: str, dev_stack: Stack, request, tmp_path: Path
) -> None:
    """Between the in-memory and the multipart size: one PUT streamed from the file, hashed once."""
    rc = _region(server, dev_stack, request)
    store = S3Store(rc, "eu-west-1", max_workers=4, in_memory_bytes=1 << 20)
    try:
        data = os.urandom(3 << 20)
        f = tmp_path / "mid.bin"
        f.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        sent: list[int] = []
        key = f"st-{os.getpid()}-{server}/1/mid.bin"
        assert store.put_file(key, str(f), len(data), digest, sent.append) == digest
        assert sum(sent) == len(data)
        assert store.get(key) == data
        info = store.head(key)
        assert info is not None and (info.size, info.sha256) == (len(data), digest)
        store.delete([key])
        # Bytes that differ from the manifest (or a file shorter than it says) are never stored:
        # the request is dropped before its last byte, and botocore does not retry it.
        sent.clear()
        assert store.put_file(key + ".wrong", str(f), len(data), "0" * 64, sent.append) == digest
        assert store.head(key + ".wrong") is None and sum(sent) < len(data)
        f.write_bytes(data[:-1])  # truncated after the manifest was written
        assert store.put_file(key + ".short", str(f), len(data), digest) != digest
        assert store.head(key + ".short") is None
    finally:
        store.close()


def test_keys_outside_the_prefix_are_refused(dev_stack: Stack) -> None:
    store = S3Store(dev_stack.config.region("eu-west-1"), "eu-west-1")
    for key in ("../x", "/etc/passwd", "a//b", "a/./b", ""):
        with pytest.raises(StoreError, match="outside the repository prefix"):
            store.get(key)
    store.close()


def test_wrong_endpoint_and_bad_credentials_are_one_line(dev_stack: Stack, tmp_path: Path) -> None:
    rc = dev_stack.config.region("eu-west-1")
    dead = rc.model_copy(update={"endpoint_url": f"http://127.0.0.1:{stack.free_port()}"})
    with pytest.raises(StoreError, match="cannot reach S3 endpoint"):
        S3Store(dead, "eu-west-1").get("tritonops-index.json")
    creds = tmp_path / "creds"
    stack.Credentials("WRONGKEY", "wrong-secret-value").write_shared_file(creds)
    # moto accepts any key; rclone checks them.
    (tmp_path / "d" / "b").mkdir(parents=True)
    srv = stack.start_s3(tmp_path / "d", tmp_path / "r.log", dev_stack.credentials, kind="rclone")
    try:
        bad = rc.model_copy(
            update={"endpoint_url": srv.endpoint_url, "bucket": "s3://b/p", "credentials_file": creds}
        )
        with pytest.raises(StoreError) as ei:
            S3Store(bad, "eu-west-1").get("tritonops-index.json")
        msg = str(ei.value)
        assert "access denied" in msg and "wrong-secret-value" not in msg and "\n" not in msg
    finally:
        stack.stop(srv.record)


def test_file_store_sync(tmp_path: Path) -> None:
    repo, dest = tmp_path / "repo", tmp_path / "published"
    dest.mkdir()
    write_model(
        repo, "fm", {1: {"model.py": model_py(2.0)}, 2: {"model.py": model_py(3.0), "d/w.bin": b"w" * 10}}
    )
    cfg = Config(repository=repo, regions={"local": RegionConfig(bucket=f"file://{dest}")})
    assert isinstance(open_store(cfg.region("local")), FileStore)
    [s] = sync(cfg, ["local"], SyncOptions(verify=True), releases=publish_release)
    assert s.uploaded_files == 3 + 3 and s.verified_files
    assert (dest / "fm" / "2" / "d" / "w.bin").read_bytes() == b"w" * 10
    assert "versions: 1" in (dest / "fm" / "config.pbtxt").read_text()
    assert (dest / "tritonops-index.json").exists()
    [s] = sync(cfg, ["local"], SyncOptions(), releases=publish_release)
    assert s.uploaded_files == 0 and s.skipped_files == 3
    # Tampering with a published file is caught by --verify.
    (dest / "fm" / "1" / "model.py").write_bytes(b"# tampered\n")
    with pytest.raises(StoreError, match="verify failed: .*fm/1/model.py"):
        sync(cfg, ["local"], SyncOptions(verify=True), releases=publish_release)


def test_create_makes_a_missing_bucket_or_folder_once(dev_stack: Stack, tmp_path: Path) -> None:
    rc = dev_stack.config.region("eu-west-1")
    fresh = rc.model_copy(update={"bucket": f"s3://created-{os.getpid()}-{os.urandom(3).hex()}/p"})
    local = RegionConfig(bucket=f"file://{tmp_path / 'a' / 'b'}")
    for region in (fresh, local):
        store = open_store(region, "eu-west-1")
        try:
            with pytest.raises(StoreError, match="does not exist"):
                store.get("m/x")
            store.create()
            store.create()  # a second call finds it and changes nothing
            assert store.get("m/x") is None
            store.put_bytes("m/x", b"x", hashlib.sha256(b"x").hexdigest())
            assert store.get("m/x") == b"x" and store.get("m/y") is None
        finally:
            store.close()


# (files, file size, S3Store options, budget, most MiB the store may hold at once). tracemalloc's
# peak above the start counts every allocation of the uploading threads: the bodies, what botocore
# allocates per request (under 1 MiB for 32 requests in flight here) and, for a multipart upload,
# the thread hashing the file (1 MiB chunks, two at the turn of a chunk).
BUDGET_CASES = {
    "in-memory, 4 MiB budget": (48, 1 << 20, {"in_memory_bytes": 2 << 20}, 4 << 20, 4 + 2),
    "in-memory, budget under one body": (12, 1 << 20, {"in_memory_bytes": 2 << 20}, 512 << 10, 1 + 2),
    "multipart parts, 10 MiB budget": (1, 40 << 20, {"multipart_threshold_bytes": 6 << 20, "part_bytes": 5 << 20},
                                       10 << 20, 10 + 3),
}  # fmt: skip


def _peak_upload_bytes(rc: RegionConfig, tmp_path: Path, case: tuple, budget: int) -> int:
    import tracemalloc
    from concurrent.futures import ThreadPoolExecutor

    n, size, opts, _, _ = case
    files = []
    for i in range(n):
        data = os.urandom(size)
        (tmp_path / f"w{i}.bin").write_bytes(data)
        files.append((tmp_path / f"w{i}.bin", hashlib.sha256(data).hexdigest()))
    store = S3Store(rc, "eu-west-1", max_workers=32, body_budget_bytes=budget, **opts)
    prefix = f"budget-{os.getpid()}-{budget}-{n}"
    try:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        sent: list[int] = []  # progress: list.append is atomic
        with ThreadPoolExecutor(32) as pool:
            got = list(
                pool.map(lambda f: store.put_file(f"{prefix}/1/{f[0].name}", str(f[0]), size, f[1], sent.append), files)
            )
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        assert got == [sha for _, sha in files]
        assert sum(sent) == n * size  # the progress bar counts every byte once
        for path, sha in files:  # every object arrived whole
            info = store.head(f"{prefix}/1/{path.name}")
            assert info is not None and (info.size, info.sha256) == (size, sha)
        store.delete(f"{prefix}/1/{p.name}" for p, _ in files)
        return peak
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        store.close()


@pytest.mark.parametrize("case", list(BUDGET_CASES), ids=list(BUDGET_CASES))
def test_bodies_in_memory_stay_within_the_budget_with_32_transfers_in_flight(
    case: str, dev_stack: Stack, tmp_path: Path
) -> None:
    """`sync --workers 32` (the default) against a far bucket keeps 32 files in flight; the memory
    their bodies take is bounded by the store's budget, not by the number of transfers. The same
    uploads with a budget that does not bind hold several times as much: the measurement sees the
    bodies."""
    rc = dev_stack.config.region("eu-west-1")
    n, size, opts, budget, most_mib = BUDGET_CASES[case]
    for d in ("bounded", "free"):
        (tmp_path / d).mkdir()
    bounded = _peak_upload_bytes(rc, tmp_path / "bounded", BUDGET_CASES[case], budget)
    free = _peak_upload_bytes(rc, tmp_path / "free", BUDGET_CASES[case], 1 << 30)
    assert bounded <= most_mib << 20, f"{bounded / 2**20:.1f} MiB held with a {budget / 2**20:g} MiB budget"
    assert free >= 2 * max(bounded, budget), f"{free / 2**20:.1f} MiB held without a binding budget"


@pytest.mark.parametrize("kind", ["s3", "file"])
def test_verifying_the_bytes_streams_each_object(kind: str, dev_stack: Stack, tmp_path: Path) -> None:
    """`sync --verify`, `--repair --verify` and release checks hash what the bucket holds. They read
    each object in 1 MiB chunks, 8 objects at a time: a version of multi-GB files must not need
    its size in memory. Verifying four 24 MiB files holds a few MiB; reading one of them whole
    (measured too, so the measurement sees the bytes) holds 24 MiB. Bytes that differ under
    metadata that does not are still found."""
    import tracemalloc

    from tritonops.store.verify import verify_version

    store = (
        S3Store(dev_stack.config.region("eu-west-1").model_copy(
            update={"bucket": f"s3://{dev_stack.config.region('eu-west-1').bucket_name}/vs-{os.getpid()}-{tmp_path.name}"}
        ), "eu-west-1")
        if kind == "s3" else FileStore(tmp_path / "bucket")
    )  # fmt: skip
    man = write_model(tmp_path / "repo", "big", {1: {f"w{i}.bin": os.urandom(24 << 20) for i in range(4)}})
    try:
        for f in man.versions[1].files:
            path = tmp_path / "repo" / "big" / "1" / f.path
            assert store.put_file(f"big/1/{f.path}", str(path), f.size, f.sha256) == f.sha256
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        assert verify_version(store, man, 1, full=True) == []
        streamed = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        assert store.get("big/1/w0.bin") is not None
        whole = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        assert streamed < 12 << 20, f"{streamed / 2**20:.1f} MiB held to verify 4 x 24 MiB"
        assert whole >= 24 << 20, f"{whole / 2**20:.1f} MiB held to read 24 MiB whole"
        # Other bytes of the same size under the right metadata: only the bytes tell.
        f0 = man.versions[1].files[0]
        store.put_bytes(f"big/1/{f0.path}", os.urandom(f0.size), f0.sha256)
        [bad] = verify_version(store, man, 1, full=True)
        # (a file:// store has no metadata: its HEAD hashes the file, and names the difference first)
        assert bad.key == f"big/1/{f0.path}" and bad.found.startswith("content" if kind == "s3" else "recorded")
        assert store.hash_bytes("big/1/nothing.bin") is None
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        if isinstance(store, S3Store):
            store.delete(f"big/1/{f.path}" for f in man.versions[1].files)
            store.close()
