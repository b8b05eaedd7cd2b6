"""Host memory: the Triton process tree's resident memory, and one python model's own stub processes.

Python-backend models run each instance in a stub process of its own (a child of tritonserver), so
their cost shows up here; this is what the CPU local stack and KIND_CPU models are measured with.

How a stub is found. The python backend starts one ``triton_python_backend_stub`` per model instance
with the command line ``<stub> <model file> <shm region> <shm size> <shm growth> <parent pid>
<backend dir> <ipc handle> <instance name> <runtime model dir>``: the instance name is the one before
last. Triton names an instance ``<group name>_<index>`` (``index`` from 0 to the group's count - 1;
Triton releases before 23.xx named a group's only instance ``<group name>``), and an instance group
after the config's ``name`` field, else the model (one unnamed group) or ``<model>_<group index>``
(several). Those names are in the config Triton serves for the loaded model (``/v2/models/<m>/config``:
``instance_group[].name`` and ``count``, filled in after auto-complete and any load-time override),
so the measurement reads them from there (:class:`StubNames`) rather than guessing from the model's name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Protocol

import psutil

from tritonops.errors import MemoryProbeError, TritonError
from tritonops.memory.devices import GONE, HOST_DEVICE, DeviceKind, DeviceMemory, ProbeSource, process_tree

log = logging.getLogger(__name__)

# The python backend runs each model instance in a process of its own with this executable.
STUB_NAME = "triton_python_backend_stub"
_UNREADABLE = (*GONE, psutil.AccessDenied, psutil.ZombieProcess)


@dataclass(frozen=True)
class StubNames:
    """The instance names a model's stubs carry, and how many stubs Triton starts for it."""

    names: frozenset[str]
    expected: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> StubNames | None:
        """From the config Triton serves for a loaded model; None when it lists no instance group."""
        names: set[str] = set()
        expected = 0
        for g in config.get("instance_group") or []:
            group = str(g.get("name") or "")
            if not group:
                continue  # Triton names every group in the config it serves; an unnamed one says nothing
            count = max(1, int(g.get("count", 1) or 1))
            # A GPU group starts its count of instances on each GPU it lists, all with the same names.
            gpus = len(g.get("gpus") or []) if str(g.get("kind", "")) == "KIND_GPU" else 0
            names.update(f"{group}_{i}" for i in range(count))
            if count == 1:
                names.add(group)
            expected += count * max(1, gpus)
        return cls(frozenset(names), expected) if names else None

    def describe(self) -> str:
        return ", ".join(sorted(self.names))


class _ConfigReader(Protocol):
    def model_config(self, model: str, version: int | None = None) -> dict[str, Any]: ...


def served_stub_names(client: _ConfigReader, model: str, version: int | None) -> StubNames | None:
    """The stub names of ``model`` as loaded now, from the config Triton serves (None when it cannot be
    read or names no group: then Triton's default names for the model are looked for)."""
    try:
        return StubNames.from_config(client.model_config(model, version))
    except TritonError as e:
        log.warning("model %r: served config not read (%s); looking for Triton's default stub names", model, e)
        return None


def _default_names(model: str) -> re.Pattern[str]:
    """Triton's own names for a model's instances when its config names no group: ``<model>_<i>``
    (one group), ``<model>_<group>_<i>`` (several), ``<model>`` (a lone instance, older releases)."""
    return re.compile(re.escape(model) + r"(_\d+){0,2}")


class HostProbe:
    """Resident memory of a Triton process tree, and the machine's memory.

    ``metric="rss"`` (default) is what ps and the kernel report, counting a shared page once per
    process; measured on the local stack it reproduces allocation differences exactly.
    ``metric="pss"`` (Linux) splits shared pages between the processes mapping them, so a new
    stub costs only what it really adds; a little noisier, and slower to read.
    """

    source = ProbeSource.host
    # A reading is a fresh look at the process tree (no polling behind it): settling needs no long gaps.
    settle_interval_s = 0.05

    def __init__(self, pid: int, metric: str = "rss") -> None:
        if metric not in ("pss", "rss"):
            raise MemoryProbeError(f"host probe: unknown metric {metric!r} (pss or rss)")
        self.pid = pid
        self.metric = metric
        try:
            psutil.Process(pid)
        except psutil.NoSuchProcess:
            raise MemoryProbeError(f"host probe: no process with pid {pid}") from None

    def _bytes(self, p: psutil.Process) -> int:
        if self.metric == "pss":
            try:
                return int(p.memory_full_info().pss)
            except (AttributeError, psutil.AccessDenied):
                self.metric = "rss"  # not Linux, or not ours: fall back once, for good
        return int(p.memory_info().rss)

    def process_bytes(self, pids: Iterable[int]) -> int:
        total = 0
        for p in process_tree(pids):
            try:
                total += self._bytes(p)
            except GONE:
                continue  # a stub that exited between listing and reading
        return total

    def tree_bytes(self) -> int:
        try:
            psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            raise MemoryProbeError(f"host probe: Triton process {self.pid} is gone") from None
        return self.process_bytes([self.pid])

    def devices(self) -> list[DeviceMemory]:
        vm = psutil.virtual_memory()
        used = int(vm.total - vm.available)
        return [DeviceMemory(HOST_DEVICE, DeviceKind.host, int(vm.total), used, int(vm.available), name="host")]

    def usage(self) -> dict[str, int]:
        return {HOST_DEVICE: self.tree_bytes()}

    def device_type(self) -> str:
        return "cpu"

    def stubs(self) -> list[tuple[psutil.Process, list[str]]]:
        """Every python-backend stub under Triton, with its command line."""
        out = []
        for p in process_tree([self.pid]):
            try:
                argv = p.cmdline()
            except _UNREADABLE:
                continue
            if len(argv) >= 3 and argv[0].endswith(STUB_NAME):
                out.append((p, argv))
        return out

    def stub_pids(self) -> frozenset[int]:
        """The pids of every stub running now (taken before a load, so its own stubs are the new ones)."""
        return frozenset(p.pid for p, _ in self.stubs())

    def stub_processes(
        self, model: str, names: StubNames | None = None, earlier: frozenset[int] = frozenset()
    ) -> list[psutil.Process]:
        """``model``'s python-backend stub processes: those whose instance name is one of ``names`` (from
        the config Triton serves; None: Triton's default names for ``model``), leaving out the pids in
        ``earlier`` (stubs running before the load: another model's, or this model's previous copy).
        Stubs of other models with the same instance names are told apart by their model file (a local
        repository's path names the model); MemoryProbeError when they cannot be."""
        default = _default_names(model)
        by_file: dict[str, list[psutil.Process]] = {}
        for p, argv in self.stubs():
            name = argv[-2]
            if p.pid in earlier or not (name in names.names if names is not None else default.fullmatch(name)):
                continue
            by_file.setdefault(argv[1], []).append(p)
        if len(by_file) > 1:
            # <repository>/<model>/<version>/<file>: where Triton reads the model in place, its path says.
            own = {f: ps for f, ps in by_file.items() if model in PurePosixPath(f).parts[-3:-2]}
            if len(own) != 1:
                raise MemoryProbeError(
                    f"host probe: stubs of model {model!r} cannot be told apart from another model's: "
                    f"instance names {(names.describe() if names else default.pattern)!r} are used by "
                    f"{len(by_file)} model files ({', '.join(sorted(by_file))})"
                )
            by_file = own
        return [p for ps in by_file.values() for p in ps]

    def processes_bytes(self, procs: Iterable[psutil.Process]) -> int:
        """Memory of exactly these processes (no children); raises psutil's error for one that is gone."""
        return sum(self._bytes(p) for p in procs)


class StubUsage:
    """One model's stub processes as a probe reading, so the one settle loop can wait on them.

    The processes are found once (a walk of Triton's process tree, a command line per child: with
    50 models loaded, 50 reads per look) and then read directly; a stub that exits is looked for
    again. ``names`` and ``earlier`` as for :meth:`HostProbe.stub_processes`."""

    source = ProbeSource.host_stub

    def __init__(
        self, host: HostProbe, model: str, names: StubNames | None = None, earlier: frozenset[int] = frozenset()
    ) -> None:
        self.host = host
        self.model = model
        self.names = names
        self.earlier = earlier
        self.settle_interval_s = host.settle_interval_s
        self._procs: list[psutil.Process] = []

    def _missing(self) -> str:
        which = f" (instances {self.names.describe()})" if self.names else ""
        return f"host probe: no python-backend stub process for model {self.model!r}{which}"

    def usage(self) -> dict[str, int]:
        for _ in range(2):  # the stubs found last time, else a fresh look
            if not self._procs:
                self._procs = self.host.stub_processes(self.model, self.names, self.earlier)
                if not self._procs:
                    raise MemoryProbeError(self._missing())
            try:
                return {HOST_DEVICE: self.host.processes_bytes(self._procs)}
            except _UNREADABLE:
                self._procs = []  # a stub exited (a restart, an unload): look again
        raise MemoryProbeError(f"host probe: the stub process of model {self.model!r} exited")
