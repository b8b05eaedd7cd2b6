"""Reconcile's local state, per region, under ``<state_dir>/reconcile/<region>/``.

- ``journal.jsonl``: one JSON line per run (time, plan digest, actions, results, durations);
- ``quarantine.json``: load failures per (server, model, version digest);
- ``owned.json``: models tritonops loaded, so it can unload them after they are unpublished;
- ``reconcile.lock``: the lock (see ``lock.py``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonops.fileio import atomic_write_bytes

QUARANTINE_FAILURES = 3
QUARANTINE_WINDOW_S = 15 * 60


def region_dir(state_path: Path, region: str) -> Path:
    return state_path / "reconcile" / region


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
    except ValueError:
        # A corrupt state file must not stop reconciliation; start over (it is re-learnt).
        return default


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def records(self) -> list[dict[str, Any]]:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]


@dataclass
class Quarantine:
    """N failures of the same version digest on a server within the window quarantine it until
    the window after the last failure has passed; a new digest is a new key, so it is tried at once."""

    path: Path
    failures: int = QUARANTINE_FAILURES
    window_s: float = QUARANTINE_WINDOW_S

    def _load(self) -> dict[str, dict[str, Any]]:
        data = _read_json(self.path, {})
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _key(server: str, model: str, digest: str) -> str:
        return f"{server}|{model}|{digest}"

    def _save(self, data: dict[str, dict[str, Any]]) -> None:
        atomic_write_bytes(self.path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())

    def record_failure(
        self, server: str, model: str, version: int, digest: str, reason: str, now: float | None = None
    ) -> bool:
        """Returns True when this failure puts the version into quarantine."""
        now = time.time() if now is None else now
        data = self._load()
        key = self._key(server, model, digest)
        new: dict[str, Any] = {
            "server": server,
            "model": model,
            "version": version,
            "digest": digest,
            "times": [],
        }
        e = data.get(key) or new
        e["times"] = [t for t in e["times"] if now - t < self.window_s] + [now]
        e["reason"] = reason
        tripped = len(e["times"]) >= self.failures
        if tripped:
            e["until"] = now + self.window_s
        # Forget entries that can no longer matter: no recent failure and no quarantine running.
        data = {
            k: v for k, v in data.items()
            if v.get("until", 0) > now or any(now - t < self.window_s for t in v.get("times", []))
        }  # fmt: skip
        data[key] = e
        self._save(data)
        return tripped

    def refuse(
        self, server: str, model: str, version: int, digest: str, reason: str, now: float | None = None
    ) -> None:
        """Quarantine at once (not after N failures): a version whose bucket objects differ from its
        manifest. Cleared by :meth:`clear` once a later check passes."""
        now = time.time() if now is None else now
        data = self._load()
        data[self._key(server, model, digest)] = {
            "server": server, "model": model, "version": version, "digest": digest,
            "times": [now], "reason": reason, "until": now + self.window_s,
        }  # fmt: skip
        self._save(data)

    def clear(self, server: str, model: str, digest: str) -> None:
        data = self._load()
        if data.pop(self._key(server, model, digest), None) is not None:
            self._save(data)

    def active(self, now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        out = [e for e in self._load().values() if float(e.get("until", 0)) > now]
        return sorted(out, key=lambda e: (e["server"], e["model"], e["digest"]))

    def keys(self, now: float | None = None) -> set[tuple[str, str, str]]:
        return {(e["server"], e["model"], e["digest"]) for e in self.active(now)}


class Owned:
    """Models tritonops loaded in a region (ownership survives the model leaving the index)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self) -> set[str]:
        data = _read_json(self.path, [])
        return {str(m) for m in data} if isinstance(data, list) else set()

    def update(self, add: set[str], remove: set[str]) -> None:
        cur = (self.get() | add) - remove
        atomic_write_bytes(self.path, (json.dumps(sorted(cur)) + "\n").encode())
