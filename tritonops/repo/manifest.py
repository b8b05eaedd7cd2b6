"""Manifests: what every published byte is, so the same name and version always mean the same bytes.

Layout (local repository and bucket prefix alike)::

    <root>/tritonops-index.json            repository index: every model's digest, and one digest of it all
    <root>/<model>/config.pbtxt            Triton's config (explicit version_policy)
    <root>/<model>/tritonops-manifest.json per-model manifest: every version's files, sizes, sha256s
    <root>/<model>/<N>/...                 version files (immutable)

The per-model manifest sits in the model folder, outside the version folders: Triton ignores it
(only numeric folders and config.pbtxt are read) and it travels with the model. The index at the
root gives an O(1) "did anything change" check: one GET per region instead of a LIST or HEAD per
object.

Digests are sha256 over a canonical text listing, so they are stable across machines and JSON
formatting:
- version digest: ``"<path>\\t<size>\\t<sha256>\\n"`` for every file, sorted by path;
- model digest: ``"config\\t<config sha256>\\n"`` then ``"<N>\\t<version digest>\\n"`` by N;
- repository digest: ``"<model>\\t<model digest>\\n"`` sorted by model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonops.errors import RepositoryError
from tritonops.fileio import atomic_write_bytes, sha256_bytes, sha256_file, utc_now

FORMAT_VERSION = 1
STAGING_PREFIX = ".tritonops-"  # staging folders of a writer in progress: never a model
MANIFEST_NAME = "tritonops-manifest.json"
INDEX_NAME = "tritonops-index.json"
CONFIG_NAME = "config.pbtxt"


def canonical_json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def check_digest(source: str, field_name: str, recorded: Any, computed: str) -> None:
    """A digest written in a manifest or index must be the one its content gives: one that is not
    means the file was edited by hand or damaged, and nothing in it can be trusted."""
    if recorded is not None and recorded != computed:
        raise RepositoryError(
            f"{source}: {field_name}: {str(recorded)[:16]}... is not the digest of what the file lists "
            f"({computed[:16]}...): edited by hand or damaged; rebuild it with `tritonops repo add`/`sync`"
        )


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the version folder, '/'-separated
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256}


def scan_files(folder: Path) -> list[FileEntry]:
    """Every regular file below ``folder`` with its size and streamed sha256, sorted by path."""
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            rel = p.relative_to(folder).as_posix()
            out.append(FileEntry(rel, p.stat().st_size, sha256_file(p)))
    return out


def files_digest(files: Iterable[FileEntry]) -> str:
    lines = "".join(f"{f.path}\t{f.size}\t{f.sha256}\n" for f in sorted(files, key=lambda f: f.path))
    return sha256_bytes(lines.encode())


@dataclass
class VersionEntry:
    version: int
    files: list[FileEntry]
    created: str = field(default_factory=utc_now)
    # Where it came from: recipe path and sha256, tool versions.
    source: dict[str, Any] = field(default_factory=dict)
    # Filled by later stages: accuracy results, speed, measured memory footprints.
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return files_digest(self.files)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "size": self.size,
            "created": self.created,
            "files": {f.path: f.to_json() for f in sorted(self.files, key=lambda f: f.path)},
            "source": self.source,
            "metadata": self.metadata,
        }

    @classmethod
    def from_json(cls, version: int, d: dict[str, Any]) -> VersionEntry:
        files = [_file_entry(version, p, v) for p, v in d["files"].items()]
        return cls(version, files, d.get("created", ""), d.get("source", {}), d.get("metadata", {}))


_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_VERSION_RE = re.compile(r"[1-9][0-9]*")


def _file_entry(version: int, path: str, v: dict[str, Any]) -> FileEntry:
    """One manifest file, refused when a reader could be misled by it: sync reads files by these paths."""
    where = f"versions.{version}.files.{path!r}"
    size = v["size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"{where}: size must be a non-negative integer, not {size!r}")
    sha = v["sha256"]
    if not isinstance(sha, str) or not _SHA256_RE.fullmatch(sha):
        raise ValueError(f"{where}: sha256 must be 64 lowercase hex digits, not {sha!r}")
    return FileEntry(path, size, sha)


@dataclass
class ModelManifest:
    model: str
    versions: dict[int, VersionEntry] = field(default_factory=dict)
    config_sha256: str = ""

    @property
    def digest(self) -> str:
        lines = f"config\t{self.config_sha256}\n" + "".join(
            f"{n}\t{self.versions[n].digest}\n" for n in sorted(self.versions)
        )
        return sha256_bytes(lines.encode())

    def latest(self) -> int | None:
        return max(self.versions) if self.versions else None

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "digest": self.digest,
            "config_sha256": self.config_sha256,
            "versions": {str(n): self.versions[n].to_json() for n in sorted(self.versions)},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], source: str = "<manifest>", verify: bool = True) -> ModelManifest:
        """``verify``: the digests it records must be those of what it lists (RepositoryError if not)."""
        try:
            if d.get("format_version") != FORMAT_VERSION:
                raise RepositoryError(f"{source}: format_version: unsupported {d.get('format_version')!r}")
            for n in d["versions"]:
                if not _VERSION_RE.fullmatch(str(n)):
                    raise RepositoryError(
                        f"{source}: malformed manifest: versions: {n!r} is not a version number "
                        "(1, 2, ...; Triton ignores 0 and zero-prefixed folders)"
                    )
            versions = {int(n): VersionEntry.from_json(int(n), v) for n, v in d["versions"].items()}
            man = cls(str(d["model"]), versions, str(d.get("config_sha256", "")))
        except RepositoryError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise RepositoryError(f"{source}: malformed manifest ({type(e).__name__}: {e})") from None
        if verify:
            for n, v in d["versions"].items():
                check_digest(source, f"versions.{n}.digest", v.get("digest"), man.versions[int(n)].digest)
            check_digest(source, "digest", d.get("digest"), man.digest)
        return man

    def dumps(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def loads(cls, data: bytes, source: str = "<manifest>", verify: bool = True) -> ModelManifest:
        try:
            d = json.loads(data)
        except ValueError as e:
            raise RepositoryError(f"{source}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise RepositoryError(f"{source}: expected a JSON object")
        return cls.from_json(d, source, verify)

    @classmethod
    def load(cls, path: Path) -> ModelManifest:
        """A local manifest. Its file paths must stay inside their version folder: local code opens them.
        (A remote manifest's keys are checked where they are used, by ``store.check_key``.)"""
        # Digests are checked last: a path that escapes its folder is the more precise finding.
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise RepositoryError(f"{path}: manifest missing") from None
        man = cls.loads(raw, str(path), verify=False)
        for n, v in man.versions.items():
            for f in v.files:
                parts = f.path.split("/")
                if f.path.startswith("/") or "\\" in f.path or any(p in ("", ".", "..") for p in parts):
                    raise RepositoryError(
                        f"{path}: versions.{n}.files.{f.path!r}: path must stay inside the version folder"
                    )
        return cls.loads(raw, str(path))

    def save(self, path: Path) -> None:
        atomic_write_bytes(path, self.dumps())


@dataclass
class RepoIndex:
    """The repository at a glance: model -> digest and version digests; one digest over all."""

    models: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        lines = "".join(f"{m}\t{self.models[m]['digest']}\n" for m in sorted(self.models))
        return sha256_bytes(lines.encode())

    @classmethod
    def from_manifests(cls, manifests: Iterable[ModelManifest]) -> RepoIndex:
        return cls(
            {
                m.model: {
                    "digest": m.digest,
                    "versions": {str(n): m.versions[n].digest for n in sorted(m.versions)},
                }
                for m in manifests
            }
        )

    def to_json(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "digest": self.digest, "models": self.models}

    def dumps(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def loads(cls, data: bytes, source: str = "<index>", verify: bool = True) -> RepoIndex:
        """``verify``: the digest it records must be the one its models give (RepositoryError if not)."""
        try:
            d = json.loads(data)
            if d.get("format_version") != FORMAT_VERSION:
                raise RepositoryError(f"{source}: format_version: unsupported {d.get('format_version')!r}")
            models = {str(k): {"digest": str(v["digest"]), "versions": dict(v["versions"])}
                      for k, v in d["models"].items()}
        except RepositoryError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise RepositoryError(f"{source}: malformed repository index ({type(e).__name__}: {e})") from None
        index = cls(models)
        if verify:
            check_digest(source, "digest", d.get("digest"), index.digest)
        return index


def load_model_manifests(root: Path) -> list[ModelManifest]:
    """Every model manifest under a local repository root, sorted by model name."""
    return [ModelManifest.load(p) for p in sorted(root.glob(f"*/{MANIFEST_NAME}"))]


def write_index(root: Path) -> RepoIndex:
    index = RepoIndex.from_manifests(load_model_manifests(root))
    atomic_write_bytes(root / INDEX_NAME, index.dumps())
    return index
