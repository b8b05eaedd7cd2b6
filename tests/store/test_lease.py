"""Conditional writes and leases on the real S3 server of the stack (moto), on file://, and on
`rclone serve s3`, which ignores the conditions and must be found out, never trusted."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import Stack
from tritonops.config import Config, OnUnsupported, RegionConfig, load_config
from tritonops.dev import stack
from tritonops.errors import ConfigError, LockHeldError
from tritonops.store.base import ConditionalStore, ConditionalWritesUnsupported, PreconditionFailed
from tritonops.store.lease import (
    Holder,
    Lease,
    LeaseHeldError,
    LeaseLostError,
    check_conditional_writes,
    hold,
    lease_key,
    list_holders,
    read_holder,
)
from tritonops.store.local import FileStore
from tritonops.store.s3 import S3Store


def _moto_region(dev_stack: Stack) -> RegionConfig:
    base = dev_stack.config.region("eu-west-1")
    return base.model_copy(update={"bucket": f"s3://{base.bucket_name}/lease-{uuid.uuid4().hex[:10]}"})


@pytest.fixture(params=["moto", "file"])
def cstore(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ConditionalStore]:
    if request.param == "moto":
        s = S3Store(_moto_region(request.getfixturevalue("dev_stack")), "eu-west-1", max_workers=32)
    else:
        s = FileStore(tmp_path / "bucket", "eu-west-1")  # type: ignore[assignment]
        s.create()  # a bucket exists before a lease is taken in it
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def rclone_region(dev_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegionConfig]:
    d = tmp_path_factory.mktemp("rclone-lease")
    (d / "data" / "leases").mkdir(parents=True)  # before the server starts: rclone caches listings
    srv = stack.start_s3(d / "data", d / "rclone.log", dev_stack.credentials, kind="rclone")
    try:
        yield dev_stack.config.region("eu-west-1").model_copy(
            update={"bucket": "s3://leases/p", "endpoint_url": srv.endpoint_url}
        )
    finally:
        stack.stop(srv.record)


def test_conditional_writes_create_replace_delete(cstore: ConditionalStore) -> None:
    e1 = cstore.put_if_absent("k.json", b"one")
    with pytest.raises(PreconditionFailed) as exc:
        cstore.put_if_absent("k.json", b"two")
    assert exc.value.key == "k.json" and "k.json" in str(exc.value)
    v = cstore.get_versioned("k.json")
    assert v is not None and v.data == b"one" and v.etag == e1
    with pytest.raises(PreconditionFailed):
        cstore.put_if_match("k.json", b"three", '"0123456789abcdef0123456789abcdef"')
    e2 = cstore.put_if_match("k.json", b"three", e1)
    assert e2 != e1
    with pytest.raises(PreconditionFailed):
        cstore.delete_if_match("k.json", e1)  # a version no longer there
    assert cstore.get_versioned("k.json").data == b"three"  # type: ignore[union-attr]
    cstore.delete_if_match("k.json", e2)
    assert cstore.get_versioned("k.json") is None
    with pytest.raises(PreconditionFailed):
        cstore.put_if_match("k.json", b"four", e2)  # gone: nothing to replace
    check_conditional_writes(cstore)  # the store honours both conditions


def test_second_holder_is_refused_naming_the_first(cstore: ConditionalStore) -> None:
    a = Lease(cstore, "region", "reconcile eu-west-1", ttl_s=30, confirm_s=0.05)
    b = Lease(cstore, "region", "reconcile eu-west-1", ttl_s=30, confirm_s=0.05)
    with a.held():
        with pytest.raises(LeaseHeldError) as exc:
            b.try_acquire()
        e = exc.value
        assert isinstance(e, LockHeldError) and e.exit_code == 3
        assert e.holder is not None and e.holder.id == a.id
        assert socket.gethostname() in str(e) and f"pid {os.getpid()}" in str(e) and "reconcile eu-west-1" in str(e)
        assert read_holder(cstore, "region").id == a.id  # type: ignore[union-attr]
        assert set(list_holders(cstore)) == {"region"}
    assert cstore.get_versioned(lease_key("region")) is None  # released: deleted
    with b.held():
        assert read_holder(cstore, "region").id == b.id  # type: ignore[union-attr]


def test_renewal_keeps_a_short_lease_alive_past_its_ttl(cstore: ConditionalStore) -> None:
    a = Lease(cstore, "region", "loop", ttl_s=3, confirm_s=0.05)
    b = Lease(cstore, "region", "other", ttl_s=3, confirm_s=0.05)
    with a.held():
        first = read_holder(cstore, "region")
        time.sleep(4.5)  # past the first expiry: renewed meanwhile
        now = read_holder(cstore, "region")
        assert first is not None and now is not None and now.id == a.id
        assert now.expires_at > first.expires_at and now.taken_at == first.taken_at
        with pytest.raises(LeaseHeldError):
            b.try_acquire()


def _write_expired(cstore: ConditionalStore, name: str) -> Holder:
    old = Holder("dead-host", 424242, uuid.uuid4().hex, "reconcile eu-west-1", time.time() - 120, time.time() - 60)
    cstore.put_if_absent(lease_key(name), old.dumps())
    return old


def test_expired_lease_is_taken_over_and_the_old_holder_learns_it_lost(cstore: ConditionalStore) -> None:
    old = Lease(cstore, "region", "old", ttl_s=3, confirm_s=0.05, clock=lambda: time.time() - 10)
    old.try_acquire()  # written as if 10 s ago: already expired for everyone else
    new = Lease(cstore, "region", "new", ttl_s=30, confirm_s=0.05)
    taken = new.try_acquire()
    assert taken.id == new.id
    with pytest.raises(LeaseLostError, match="now held by"):
        old.renew()
    old.release()  # never deletes the new holder's lease
    assert read_holder(cstore, "region").id == new.id  # type: ignore[union-attr]


def test_fifty_concurrent_takeovers_of_one_expired_lease_have_exactly_one_winner(cstore: ConditionalStore) -> None:
    old = _write_expired(cstore, "region")
    n = 50
    takers = [Lease(cstore, "region", f"taker {i}", ttl_s=60, confirm_s=0.25) for i in range(n)]
    won: list[str] = []
    lost: list[Holder | None] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def take(lease: Lease) -> None:
        barrier.wait()
        try:
            won.append(lease.try_acquire().id)
        except LeaseHeldError as e:
            lost.append(e.holder)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=take, args=(t,)) for t in takers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(won) == 1, won
    assert len(lost) == n - 1
    there = read_holder(cstore, "region")
    assert there is not None and there.id == won[0] and there.id != old.id
    # Every loser was told who won (or that it changed under it), never the dead holder.
    assert all(h is None or h.id == won[0] for h in lost)


def test_a_corrupt_lease_is_an_error_naming_its_key(cstore: ConditionalStore) -> None:
    cstore.put_if_absent(lease_key("region"), b"not json")
    with pytest.raises(Exception, match=r"tritonops-lease\.region\.json: not a tritonops lease"):
        Lease(cstore, "region", "x").try_acquire()


# -- stores without conditional writes ------------------------------------------------------------


def test_rclone_serve_s3_ignores_conditions_and_is_found_out(rclone_region: RegionConfig) -> None:
    s = S3Store(rclone_region, "eu-west-1")
    try:
        s.create()
        with pytest.raises(ConditionalWritesUnsupported) as exc:
            check_conditional_writes(s)
        assert exc.value.store == s.url and "ignores conditional writes" in str(exc.value)
    finally:
        s.close()


def _config(tmp_path: Path, region: RegionConfig, on_unsupported: OnUnsupported) -> Config:
    data = {
        "state_dir": str(tmp_path / "state"),
        "regions": {"eu-west-1": json.loads(region.model_dump_json(exclude_none=True))},
        "lease": {"on_unsupported": on_unsupported.value, "confirm_s": 0.05},
    }
    path = tmp_path / "tritonops.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


def test_hold_refuses_a_store_without_conditions_unless_told_one_host(
    rclone_region: RegionConfig, tmp_path: Path
) -> None:
    refuse = _config(tmp_path, rclone_region, OnUnsupported.refuse)
    with pytest.raises(ConfigError) as exc, hold(refuse, "eu-west-1", "region", "reconcile eu-west-1"):
        pass
    msg = str(exc.value)
    assert "s3://leases/p" in msg and "lease.on_unsupported: local" in msg and "\n" not in msg
    local = _config(tmp_path, rclone_region, OnUnsupported.local)
    with hold(local, "eu-west-1", "region", "reconcile eu-west-1") as lease:
        assert lease is None  # the local lock alone


def test_hold_takes_and_releases_the_region_lease_on_s3(dev_stack: Stack, tmp_path: Path) -> None:
    rc = _moto_region(dev_stack)
    cfg = _config(tmp_path, rc, OnUnsupported.refuse)
    with hold(cfg, "eu-west-1", "region", "reconcile eu-west-1") as lease:
        assert lease is not None
        s = S3Store(rc, "eu-west-1")
        assert read_holder(s, "region").purpose == "reconcile eu-west-1"  # type: ignore[union-attr]
        with pytest.raises(LeaseHeldError), hold(cfg, "eu-west-1", "region", "reconcile eu-west-1"):
            pass
    assert read_holder(s, "region") is None
