"""tritonops.yaml: where the repository lives, the regions, their buckets and servers, placement rules.

Found via ``--config``, then ``$TRITONOPS_CONFIG``, then ``./tritonops.yaml``. Credentials never live
here: S3 access uses boto3's usual chain (environment, profile, instance role); a region may name a
``profile`` and a ``credentials_file`` (a path, not a secret) for that chain.
"""

from __future__ import annotations

import os
import re
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tritonops.errors import ConfigError

CONFIG_ENV = "TRITONOPS_CONFIG"
DEFAULT_CONFIG_NAME = "tritonops.yaml"
FORMAT_VERSION = 1

_REGION_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Placement(str, Enum):
    pinned = "pinned"
    on_demand = "on-demand"


class ServerConfig(_Strict):
    name: str
    http_url: str | None = None
    grpc_url: str | None = None
    metrics_url: str | None = None
    # Memory the reconciler may fill on this server, per device; None means "what the probe reports free".
    memory_budget_bytes: int | None = Field(default=None, gt=0)
    headroom_bytes: int = Field(default=0, ge=0)
    # Models this server should keep loaded; empty means "every model allowed in the region".
    models: list[str] = Field(default_factory=list)

    @field_validator("http_url", "metrics_url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is not None and urlparse(v).scheme not in ("http", "https"):
            raise ValueError("not an http:// or https:// URL")
        return v

    @model_validator(mode="after")
    def _one_url(self) -> ServerConfig:
        if not self.http_url and not self.grpc_url:
            raise ValueError("a server needs http_url or grpc_url")
        return self


class RegionConfig(_Strict):
    bucket: str
    endpoint_url: str | None = None
    # The signing region for S3 (AWS region name); defaults to us-east-1 for S3-compatible stores.
    s3_region: str | None = None
    profile: str | None = None
    credentials_file: Path | None = None
    servers: list[ServerConfig] = Field(default_factory=list)

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        u = urlparse(v)
        if u.scheme == "s3" and u.netloc:
            return v.rstrip("/")
        if u.scheme == "file" and u.path:
            return v.rstrip("/")
        raise ValueError("not an s3:// or file:// URL")

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and urlparse(v).scheme not in ("http", "https"):
            raise ValueError("not an http:// or https:// URL")
        return v

    @model_validator(mode="after")
    def _unique_servers(self) -> RegionConfig:
        names = [s.name for s in self.servers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate server name {dup[0]!r}")
        return self

    @property
    def bucket_name(self) -> str:
        return urlparse(self.bucket).netloc

    @property
    def prefix(self) -> str:
        """Key prefix inside the bucket, without leading or trailing slash."""
        return urlparse(self.bucket).path.strip("/")

    def triton_repository_url(self) -> str:
        """The --model-repository URL Triton needs for this bucket.

        Triton spells an S3-compatible endpoint inside the URL: ``s3://http://host:port/bucket/prefix``.
        """
        u = urlparse(self.bucket)
        if u.scheme == "file":
            return u.path
        path = f"{self.bucket_name}/{self.prefix}".rstrip("/")
        if self.endpoint_url:
            return f"s3://{self.endpoint_url.rstrip('/')}/{path}"
        return f"s3://{path}"


class ModelRule(_Strict):
    # Regions the model may be published to; None means every configured region.
    regions: list[str] | None = None
    placement: Placement = Placement.on_demand


# -- release (tritonops.release reads these; see README "Releases") --------------------------


class ReleaseMode(str, Enum):
    on_publish = "on-publish"  # a newly published version is live at once (the behaviour before releases)
    explicit = "explicit"  # sync only publishes; promote / rollback / rollout move the live version


class GateConfig(_Strict):
    min_requests: int = Field(default=50, ge=1)  # per step, on the new version, before any verdict
    max_failure_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    max_latency_ratio: float = Field(default=1.5, gt=1.0)  # new mean request duration / reference
    max_queue_ratio: float = Field(default=2.0, gt=1.0)
    # Differences smaller than this never fail a latency or queue gate (noise on fast models).
    min_latency_delta_ms: float = Field(default=2.0, ge=0.0)


class RolloutConfig(_Strict):
    waves: list[list[str]] | None = None  # None: the first region, then all the others
    canary_share: float = Field(default=0.5, gt=0.0, le=1.0)  # of each region's servers, at least one
    bake_s: float = Field(default=300.0, ge=0.0)
    gates: GateConfig = Field(default_factory=GateConfig)


class ReleaseConfig(_Strict):
    mode: ReleaseMode = ReleaseMode.on_publish
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)


class Config(_Strict):
    format_version: int = FORMAT_VERSION
    repository: Path = Path("model_repos/default")
    state_dir: Path = Path(".tritonops")
    regions: dict[str, RegionConfig] = Field(default_factory=dict)
    models: dict[str, ModelRule] = Field(default_factory=dict)
    default_placement: Placement = Placement.on_demand
    release: ReleaseConfig = Field(default_factory=ReleaseConfig)

    # Where the file was read from; paths in it are relative to its folder.
    source: Path | None = Field(default=None, exclude=True)

    @field_validator("format_version")
    @classmethod
    def _fv(cls, v: int) -> int:
        if v != FORMAT_VERSION:
            raise ValueError(f"unsupported format_version {v} (this tritonops reads {FORMAT_VERSION})")
        return v

    @field_validator("regions")
    @classmethod
    def _region_names(cls, v: dict[str, RegionConfig]) -> dict[str, RegionConfig]:
        for name in v:
            if not _REGION_NAME.match(name):
                raise ValueError(f"region name {name!r} must be lowercase letters, digits and '-'")
        return v

    @model_validator(mode="after")
    def _references(self) -> Config:
        for model, rule in self.models.items():
            if not _MODEL_NAME.match(model):
                raise _KeyedError(f"models.{model}", "not a valid Triton model name")
            for i, rname in enumerate(rule.regions or []):
                if rname not in self.regions:
                    raise _KeyedError(f"models.{model}.regions[{i}]", f"unknown region {rname!r}")
        for rname, region in self.regions.items():
            for i, server in enumerate(region.servers):
                for j, m in enumerate(server.models):
                    mrule = self.models.get(m)
                    if mrule is not None and mrule.regions is not None and rname not in mrule.regions:
                        raise _KeyedError(
                            f"regions.{rname}.servers[{i}].models[{j}]",
                            f"model {m!r} is not allowed in region {rname!r} (models.{m}.regions)",
                        )
        for i, wave in enumerate(self.release.rollout.waves or []):
            for j, rname in enumerate(wave):
                if rname not in self.regions:
                    raise _KeyedError(f"release.rollout.waves[{i}][{j}]", f"unknown region {rname!r}")
        return self

    # -- helpers -------------------------------------------------------------------------------

    def resolve(self, p: Path) -> Path:
        """A path from the file, made absolute relative to the file's folder."""
        p = p.expanduser()
        if p.is_absolute() or self.source is None:
            return p.absolute()
        return (self.source.parent / p).absolute()

    @property
    def repository_path(self) -> Path:
        return self.resolve(self.repository)

    @property
    def state_path(self) -> Path:
        return self.resolve(self.state_dir)

    def region(self, name: str) -> RegionConfig:
        try:
            return self.regions[name]
        except KeyError:
            known = ", ".join(sorted(self.regions)) or "none configured"
            where = f" in {self.source}" if self.source else ""
            raise ConfigError(f"unknown region {name!r}{where} (known: {known})") from None

    def rule(self, model: str) -> ModelRule:
        return self.models.get(model) or ModelRule(placement=self.default_placement)

    def allowed_regions(self, model: str) -> list[str]:
        rule = self.rule(model)
        return sorted(self.regions) if rule.regions is None else sorted(rule.regions)

    def is_allowed(self, model: str, region: str) -> bool:
        return region in self.allowed_regions(model)

    def placement(self, model: str) -> Placement:
        return self.rule(model).placement


class _KeyedError(ValueError):
    """A validation error that knows its own key path (raised from model-level validators)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _format_validation_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    ctx_err = first.get("ctx", {}).get("error")
    if isinstance(ctx_err, _KeyedError):
        return f"{source}: {ctx_err.key}: {ctx_err.message}"
    key = _key_path(tuple(first["loc"]))
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "required key is missing"
    more = len(err.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {key}: {msg}{suffix}"


def parse_config(data: Any, source: Path | None = None) -> Config:
    """Validate already-loaded YAML data; errors name the file and the key path."""
    label = str(source) if source else "<config>"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: (top level): expected a mapping, got {type(data).__name__}")
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(label, e)) from None
    return cfg.model_copy(update={"source": source.absolute() if source else None})


def find_config_path(explicit: Path | None = None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    return Path(DEFAULT_CONFIG_NAME)


def load_config(path: Path | None = None) -> Config:
    """Read and validate tritonops.yaml (``--config``, then ``$TRITONOPS_CONFIG``, then ``./tritonops.yaml``)."""
    p = find_config_path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = "" if path or os.environ.get(CONFIG_ENV) else f" (pass --config or set {CONFIG_ENV})"
        raise ConfigError(f"{p}: config file not found{hint}") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config file: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}: malformed YAML: {where}{problem}") from None
    return parse_config(data, p)


def dump_config(cfg: Config) -> str:
    data = cfg.model_dump(mode="json", exclude_none=True, exclude={"source"})
    return yaml.safe_dump(data, sort_keys=False)
