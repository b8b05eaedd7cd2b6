"""Leases in a bucket: one controller at a time across hosts (docs/multi-host.md).

A lease is one small JSON object at the root of the region's repository prefix,
``tritonops-lease.<name>.json`` (Triton takes only folders for models and ``sync`` only keys under a
model folder, so neither sees it). It names its holder (host, pid, a random id, what it does), when it
was taken and when it expires. Every write is conditional, so the object itself is the arbiter:

* taken with ``If-None-Match: *`` (create only if absent);
* renewed every ``ttl_s / 3`` by a background thread with ``If-Match: <the ETag it wrote>``;
* taken over, once expired, with ``If-Match: <the ETag the taker read>``: of many takers of one
  expired lease exactly one write names the current ETag;
* deleted at the end with ``If-Match`` (never someone else's lease).

A winning write is read back after ``confirm_s``: S3 itself decides conditions atomically, but some
S3-compatible servers check the condition and then write, so two writers that checked together can
both be told "200" (moto 5.2.6: 2 winners of 50 in one of five trials here). The read back names the
one whose write stayed; the other learns it lost before it acts.

Clock skew: expiry is judged on the taker's clock against ``expires_at`` written from the holder's.
The holder renews when a third of the lease has passed, so a live holder's lease always has at least
``2/3 * ttl_s`` left (less one request deadline); clocks that disagree by less than that never let a
taker in early. With the default 60 s that is 40 s: NTP keeps hosts within milliseconds.

A store that ignores the conditions (``rclone serve s3`` 1.75 does: it answers 200 to both) cannot
hold a lease: :func:`check_conditional_writes` finds that out with a probe object before any lease is
taken, and :func:`hold` refuses, or runs with the local lock alone, as ``lease.on_unsupported`` says.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from tritonops.errors import ConfigError, LockHeldError, StoreError
from tritonops.store.base import (
    ConditionalStore,
    ConditionalWritesUnsupported,
    PreconditionFailed,
    Versioned,
)

if TYPE_CHECKING:
    from tritonops.config import Config, LeaseConfig

log = logging.getLogger(__name__)

LEASE_PREFIX = "tritonops-lease."
PROBE_KEY = "tritonops-lease-probe.json"
REGION_LEASE = "region"
NO_ETAG = '"00000000000000000000000000000000"'  # names no object: an If-Match with it must fail


def lease_key(name: str) -> str:
    return f"{LEASE_PREFIX}{name}.json"


def model_lease_name(model: str) -> str:
    return f"model.{model}"


class LeaseHeldError(LockHeldError):
    """Another controller holds the lease (exit 3, as the local lock). ``holder``: who; ``store``: where."""

    def __init__(self, message: str, holder: Holder | None, store: str, name: str) -> None:
        super().__init__(message)
        self.holder = holder
        self.store = store
        self.name = name


class LeaseLostError(LockHeldError):
    """This controller's lease was taken over (it expired before a renewal landed): stop acting."""


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    id: str  # random per acquisition: the same pid on another host, or again later, is another holder
    purpose: str  # what the holder does ("reconcile eu-west-1", "rollout resnet")
    taken_at: float  # seconds since the epoch, holder's clock
    expires_at: float

    def dumps(self) -> bytes:
        return (json.dumps({"format_version": 1, **asdict(self)}, sort_keys=True) + "\n").encode()

    @classmethod
    def loads(cls, data: bytes, where: str) -> Holder:
        try:
            doc = json.loads(data)
            return cls(str(doc["host"]), int(doc["pid"]), str(doc["id"]), str(doc.get("purpose", "")),
                       float(doc["taken_at"]), float(doc["expires_at"]))  # fmt: skip
        except (ValueError, KeyError, TypeError) as e:
            raise StoreError(
                f"{where}: not a tritonops lease ({type(e).__name__}: {e}); delete it only if no controller runs"
            ) from None

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        left = self.expires_at - now
        state = f"expires in {left:.0f} s" if left > 0 else f"expired {-left:.0f} s ago"
        return f"{self.host} pid {self.pid} ({self.purpose}; id {self.id[:8]}, {state})"

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        return asdict(self) | {"expired": self.expired(now), "expires_in_s": round(self.expires_at - now, 1)}


def read_holder(store: ConditionalStore, name: str) -> Holder | None:
    """Who holds the lease ``name`` now (expired or not), or None."""
    v = store.get_versioned(lease_key(name))
    return None if v is None else Holder.loads(v.data, f"{store.url}/{lease_key(name)}")


def list_holders(store: Any) -> dict[str, Holder]:
    """Every lease in the store (name -> holder); unreadable ones are left out. ``store``: an ObjectStore."""
    out: dict[str, Holder] = {}
    for o in store.list(LEASE_PREFIX):
        if not o.key.endswith(".json") or "/" in o.key:
            continue
        name = o.key[len(LEASE_PREFIX) : -len(".json")]
        try:
            h = read_holder(store, name)
        except StoreError:
            continue
        if h is not None:
            out[name] = h
    return out


_PROBED: set[str] = set()
_PROBED_LOCK = threading.Lock()


def check_conditional_writes(store: ConditionalStore) -> None:
    """Raise :class:`ConditionalWritesUnsupported` unless the store refuses a create of an object that
    exists (``If-None-Match: *``) and a replace naming an ETag it does not have (``If-Match``).
    Two requests on a probe object (created once, never deleted); once per store per process."""
    with _PROBED_LOCK:
        if store.url in _PROBED:
            return
    data = b'{"probe": "tritonops conditional writes"}\n'
    if store.get_versioned(PROBE_KEY) is None:
        with contextlib.suppress(PreconditionFailed):  # another host made it meanwhile
            store.put_if_absent(PROBE_KEY, data)
    for what, write in (
        ("If-None-Match: * on an object that exists", lambda: store.put_if_absent(PROBE_KEY, data)),
        ("If-Match with an ETag the object does not have", lambda: store.put_if_match(PROBE_KEY, data, NO_ETAG)),
    ):
        try:
            write()
        except PreconditionFailed:
            continue
        raise ConditionalWritesUnsupported(
            f"store {store.url} ignores conditional writes ({what} was accepted): it cannot hold a lease", store.url
        )
    with _PROBED_LOCK:
        _PROBED.add(store.url)


class Lease:
    """One lease ``name`` in ``store``, for one holder (this process). Use :meth:`held`."""

    def __init__(
        self,
        store: ConditionalStore,
        name: str,
        purpose: str,
        ttl_s: float = 60.0,
        confirm_s: float = 0.25,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.name, self.purpose = store, name, purpose
        self.key = lease_key(name)
        self.ttl_s, self.confirm_s, self._clock = ttl_s, confirm_s, clock
        self.id = secrets.token_hex(16)
        self.holder: Holder | None = None
        self._etag: str | None = None
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # renewals and release never overlap

    @property
    def where(self) -> str:
        return f"{self.store.url}/{self.key}"

    def _me(self, taken_at: float | None = None) -> Holder:
        now = self._clock()
        return Holder(socket.gethostname(), os.getpid(), self.id, self.purpose,
                      now if taken_at is None else taken_at, now + self.ttl_s)  # fmt: skip

    def _held_error(self, other: Holder | None) -> LeaseHeldError:
        who = other.describe(self._clock()) if other is not None else "another controller (it changed as read)"
        return LeaseHeldError(f"lease {self.name!r} at {self.where} is held by {who}", other, self.store.url, self.name)

    def try_acquire(self) -> Holder:
        """Take the lease if it is free or expired; :class:`LeaseHeldError` naming the holder if not."""
        cur = self.store.get_versioned(self.key)
        me = self._me()
        try:
            if cur is None:
                etag = self.store.put_if_absent(self.key, me.dumps())
            else:
                other = Holder.loads(cur.data, self.where)
                if not other.expired(self._clock()):
                    raise self._held_error(other)
                log.warning("lease %s: taking over from %s", self.name, other.describe(self._clock()))
                etag = self.store.put_if_match(self.key, me.dumps(), cur.etag)
        except PreconditionFailed:
            # Lost the race, or botocore retried a write that had landed: what is there now decides.
            etag = ""
        return self._confirm(me, etag)

    def _confirm(self, me: Holder, etag: str) -> Holder:
        if etag and self.confirm_s > 0:
            time.sleep(self.confirm_s)
        now = self.store.get_versioned(self.key)
        there = None if now is None else Holder.loads(now.data, self.where)
        if now is None or there is None or there.id != self.id:
            raise self._held_error(there)
        self.holder, self._etag = there, now.etag
        return there

    def renew(self) -> None:
        """Push the expiry out by ``ttl_s``; :class:`LeaseLostError` if the lease is no longer ours."""
        with self._lock:
            if self._etag is None or self.holder is None:
                raise LeaseLostError(f"lease {self.name!r} at {self.where}: not held")
            me = self._me(self.holder.taken_at)
            try:
                self.store.put_if_match(self.key, me.dumps(), self._etag)
                if self.confirm_s > 0:
                    time.sleep(self.confirm_s)
            except PreconditionFailed:
                pass  # lost, or botocore retried a write that had landed: what is there decides
            now: Versioned | None = self.store.get_versioned(self.key)
            there = None if now is None else Holder.loads(now.data, self.where)
            if now is None or there is None or there.id != self.id:
                self.lost.set()
                who = there.describe() if there is not None else "nobody (deleted)"
                raise LeaseLostError(f"lease {self.name!r} at {self.where} was lost: now held by {who}")
            self.holder, self._etag = there, now.etag

    def release(self) -> None:
        with self._lock:
            if self._etag is None:
                return
            try:
                self.store.delete_if_match(self.key, self._etag)
            except PreconditionFailed:
                log.warning("lease %s at %s: not released (someone else holds it now)", self.name, self.where)
            except StoreError as e:
                log.warning("lease %s at %s: not released (%s); it expires by itself", self.name, self.where, e)
            self._etag = None

    def _renew_loop(self) -> None:
        every = self.ttl_s / 3
        while not self._stop.wait(every):
            try:
                self.renew()
            except LeaseLostError as e:
                log.error("%s", e)
                return
            except StoreError as e:
                # Keep trying: the lease holds until it expires, and a later renewal may land.
                log.warning("lease %s: renewal failed (%s)", self.name, e)
                if self.holder is not None and self._clock() >= self.holder.expires_at:
                    self.lost.set()
                    log.error("lease %s at %s expired without a renewal", self.name, self.where)
                    return

    @contextmanager
    def held(self) -> Iterator[Lease]:
        """Hold the lease for the block, renewed in the background; released at the end. Raises
        :class:`LeaseHeldError` at entry, and :class:`LeaseLostError` at exit if it was lost meanwhile."""
        self.try_acquire()
        self._stop.clear()
        t = threading.Thread(target=self._renew_loop, name=f"lease-{self.name}", daemon=True)
        t.start()
        try:
            yield self
        finally:
            self._stop.set()
            t.join()
            if not self.lost.is_set():
                self.release()
        if self.lost.is_set():
            raise LeaseLostError(f"lease {self.name!r} at {self.where} was lost while the run held it")


_STORES: dict[str, ConditionalStore] = {}  # one client per bucket and process: a botocore client costs ~0.1 s


def _open_conditional(cfg: Config, region: str) -> ConditionalStore:
    from tritonops.store import open_store

    rc = cfg.region(region)
    key = f"{region}|{rc.bucket}|{rc.endpoint_url}|{rc.s3_region}|{rc.profile}|{rc.credentials_file}"
    with _PROBED_LOCK:
        cached = _STORES.get(key)
    if cached is not None:
        return cached
    store = open_store(rc, region, max_workers=2)
    if not isinstance(store, ConditionalStore):
        raise ConditionalWritesUnsupported(f"store {store.url} has no conditional writes", store.url)
    with _PROBED_LOCK:
        return _STORES.setdefault(key, store)


@contextmanager
def hold(cfg: Config, region: str, name: str, purpose: str) -> Iterator[Lease | None]:
    """Hold lease ``name`` in ``region``'s bucket for the block (None: leases off, or the store cannot
    hold one and ``lease.on_unsupported`` is ``local``). The caller holds its local lock too."""
    settings: LeaseConfig = cfg.lease
    store = conditional_store(cfg, region)
    if store is None:
        yield None
        return
    lease = Lease(store, name, purpose, settings.ttl_s, settings.confirm_s)
    with lease.held():
        yield lease


def conditional_store(cfg: Config, region: str) -> ConditionalStore | None:
    """The region's store, checked for conditional writes; None when leases are off, or the store has
    none and ``lease.on_unsupported`` is ``local``; ConfigError naming the store when it is ``refuse``."""
    from tritonops.config import OnUnsupported

    settings = cfg.lease
    if not settings.enabled:
        return None
    try:
        store = _open_conditional(cfg, region)
        check_conditional_writes(store)
        return store
    except ConditionalWritesUnsupported as e:
        if settings.on_unsupported is OnUnsupported.local:
            log.warning("region %s: %s; lease.on_unsupported is local: this host's lock alone, one host only",
                        region, e)  # fmt: skip
            return None
        src = cfg.source or "tritonops.yaml"
        raise ConfigError(
            f"region {region}: {e} (multi-host runs need it; for one host set lease.on_unsupported: local in {src})"
        ) from None


def region_leases(cfg: Config, region: str) -> dict[str, dict[str, Any]]:
    """Every lease in the region's bucket, expired or not: name -> holder (``status`` shows them)."""
    from tritonops.store import open_store

    if not cfg.lease.enabled:
        return {}
    store = open_store(cfg.region(region), region, max_workers=2)
    try:
        now = time.time()
        return {name: h.to_json(now) for name, h in sorted(list_holders(store).items())}
    finally:
        store.close()
