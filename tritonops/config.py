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

from tritonops.demand.settings import DemandSettings
from tritonops.errors import ConfigError
from tritonops.validation import KeyedError, format_validation_error, load_yaml

CONFIG_ENV = "TRITONOPS_CONFIG"
DEFAULT_CONFIG_NAME = "tritonops.yaml"
FORMAT_VERSION = 1

_REGION_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(v: str | None) -> str | None:
    if v is not None and urlparse(v).scheme not in ("http", "https"):
        raise ValueError("not an http:// or https:// URL")
    return v


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
    # Loads reconcile runs at once on this server when their footprints are known: set it to the
    # server's --model-load-thread-count (Triton's default is 4). Unknown footprints load one at a time.
    load_threads: int = Field(default=4, ge=1, le=64)

    _http = field_validator("http_url", "metrics_url")(_http_url)

    @model_validator(mode="after")
    def _one_url(self) -> ServerConfig:
        if not self.http_url and not self.grpc_url:
            raise ValueError("a server needs http_url or grpc_url")
        return self


class RouteSettings(_Strict):
    """The region's Envoy (``tritonops route``; docs/routing.md): where it listens and where it reads
    the configuration tritonops writes for it."""

    listen: str = "127.0.0.1:8080"  # host:port of Envoy's listener (HTTP/1.1, HTTP/2 and gRPC)
    admin: str = "127.0.0.1:9901"  # host:port of Envoy's admin interface (acceptance, stats)
    # The folder Envoy watches (relative to this file); default: <state_dir>/envoy/<region>.
    config_dir: Path | None = None
    # How peer regions reach this Envoy (failover); defaults to ``listen``.
    peer_address: str | None = None
    retry_after_s: int = Field(default=60, ge=1)  # Retry-After on a 503 for a model placed nowhere
    health_interval_s: float = Field(default=1.0, gt=0.0)  # active health checks of each replica
    failover: bool = True  # list peer regions' Envoys as lower-priority endpoints
    # While a model's servers hold two versions (a rollout's canary step), send the newest one
    # release.rollout.canary_share of the model's requests (Envoy weighted clusters), not a share by server count.
    canary_by_traffic: bool = False

    @field_validator("listen", "admin", "peer_address")
    @classmethod
    def _hostport(cls, v: str | None) -> str | None:
        if v is None:
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("expected host:port")
        return v


class RegionConfig(_Strict):
    bucket: str
    endpoint_url: str | None = None
    # The signing region for S3 (AWS region name); defaults to us-east-1 for S3-compatible stores.
    s3_region: str | None = None
    profile: str | None = None
    credentials_file: Path | None = None
    servers: list[ServerConfig] = Field(default_factory=list)
    # Requests per model, read once per reconcile run to place on-demand models (README: demand).
    demand: DemandSettings | None = None
    # The region's Envoy in front of its servers (tritonops.route); None: not routed by tritonops.
    route: RouteSettings | None = None

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        u = urlparse(v)
        if any(seg in (".", "..") for seg in f"{u.netloc}/{u.path}".split("/")):
            raise ValueError("a '.' or '..' path segment is not allowed (object keys are literal, not resolved)")
        if u.scheme == "s3" and u.netloc:
            return v.rstrip("/")
        if u.scheme == "file" and u.path:
            return v.rstrip("/")
        raise ValueError("not an s3:// or file:// URL")

    _endpoint = field_validator("endpoint_url")(_http_url)

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


class ReplicaRule(_Strict):
    """``replicas: {min: N, max: M}``: how many servers of a region hold an on-demand model
    (docs/region-placement.md). ``min`` holds even without demand; ``max`` caps what demand asks for."""

    min: int = Field(default=0, ge=0)
    max: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _order(self) -> ReplicaRule:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self


class ModelRule(_Strict):
    # Regions the model may be published to; None means every configured region.
    regions: list[str] | None = None
    placement: Placement = Placement.on_demand
    replicas: ReplicaRule | None = None
    # Requests per second one replica serves; None: measured from Triton's statistics where it can be.
    served_rps: float | None = Field(default=None, gt=0)


# -- release (tritonops.release reads these; see README "Releases") --------------------------


class ReleaseMode(str, Enum):
    on_publish = "on-publish"  # a newly published version is live at once (the behaviour before releases)
    explicit = "explicit"  # sync only publishes; promote / rollback / rollout move the live version


class AnswersGateConfig(_Strict):
    """The correctness gate (tritonops.release.answers): the new version's outputs against the live one's."""

    enabled: bool = True
    inputs: dict[str, Path] = Field(default_factory=dict)  # model -> .npz (arrays by input name)
    atol: float | None = Field(default=None, ge=0.0)  # None: the conversion's tolerance, else 1e-5
    rtol: float | None = Field(default=None, ge=0.0)  # None: the conversion's tolerance, else 1e-3


class MetricGateConfig(_Strict):
    """A user-defined gate: a Prometheus query, evaluated at the end of each step's bake; every series it
    returns must stay within ``max`` / ``min``. ``$model``, ``$version``, ``$old_version`` and ``$bake_s``
    in the query are filled in, e.g. ``sum(rate(app_errors{model="$model"}[${bake_s}s]))``."""

    name: str = Field(min_length=1)
    url: str = Field(min_length=1)  # Prometheus base URL (its /api/v1/query is asked)
    query: str = Field(min_length=1)
    max: float | None = None  # fail when the value is above
    min: float | None = None  # fail when the value is below

    @model_validator(mode="after")
    def _one_bound(self) -> MetricGateConfig:
        if self.max is None and self.min is None:
            raise ValueError("give max or min (the threshold the query's value must respect)")
        return self


class GateConfig(_Strict):
    min_requests: int = Field(default=50, ge=1)  # per step, on the new version, before any verdict
    max_failure_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    max_latency_ratio: float = Field(default=1.5, gt=1.0)  # new mean request duration / reference
    max_queue_ratio: float = Field(default=2.0, gt=1.0)
    # Differences smaller than this never fail a latency or queue gate (noise on fast models).
    min_latency_delta_ms: float = Field(default=2.0, ge=0.0)
    answers: AnswersGateConfig = Field(default_factory=AnswersGateConfig)
    metrics: list[MetricGateConfig] = Field(default_factory=list)


class RolloutConfig(_Strict):
    waves: list[list[str]] | None = None  # None: the first region, then all the others
    canary_share: float = Field(default=0.5, gt=0.0, le=1.0)  # of each region's servers, at least one
    bake_s: float = Field(default=300.0, ge=0.0)
    gates: GateConfig = Field(default_factory=GateConfig)


class ReleaseConfig(_Strict):
    mode: ReleaseMode = ReleaseMode.on_publish
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)


class OnUnsupported(str, Enum):
    refuse = "refuse"  # exit 1 naming the store: a second host could apply the same plan
    local = "local"  # one host only: the state dir's lock alone, said on every run


class LeaseConfig(_Strict):
    """Leases in the region's bucket (docs/multi-host.md): one controller per region across hosts."""

    enabled: bool = True
    ttl_s: float = Field(default=60.0, ge=3.0)  # renewed every ttl_s / 3 while a run lasts
    # A winning conditional write is read back after this long (servers that check, then write).
    confirm_s: float = Field(default=0.25, ge=0.0, le=10.0)
    on_unsupported: OnUnsupported = OnUnsupported.refuse


class Config(_Strict):
    format_version: int = FORMAT_VERSION
    repository: Path = Path("model_repos/default")
    state_dir: Path = Path(".tritonops")
    regions: dict[str, RegionConfig] = Field(default_factory=dict)
    models: dict[str, ModelRule] = Field(default_factory=dict)
    default_placement: Placement = Placement.on_demand
    release: ReleaseConfig = Field(default_factory=ReleaseConfig)
    lease: LeaseConfig = Field(default_factory=LeaseConfig)

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
                raise KeyedError(f"models.{model}", "not a valid Triton model name")
            for i, rname in enumerate(rule.regions or []):
                if rname not in self.regions:
                    raise KeyedError(f"models.{model}.regions[{i}]", f"unknown region {rname!r}")
        for rname, region in self.regions.items():
            for i, server in enumerate(region.servers):
                for j, m in enumerate(server.models):
                    mrule = self.models.get(m)
                    if mrule is not None and mrule.regions is not None and rname not in mrule.regions:
                        raise KeyedError(
                            f"regions.{rname}.servers[{i}].models[{j}]",
                            f"model {m!r} is not allowed in region {rname!r} (models.{m}.regions)",
                        )
        for i, wave in enumerate(self.release.rollout.waves or []):
            for j, rname in enumerate(wave):
                if rname not in self.regions:
                    raise KeyedError(f"release.rollout.waves[{i}][{j}]", f"unknown region {rname!r}")
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

    def envoy_dir(self, region: str) -> Path:
        """The folder the region's Envoy watches (``regions.<r>.route.config_dir``)."""
        rs = self.region(region).route
        if rs is not None and rs.config_dir is not None:
            return self.resolve(rs.config_dir)
        return self.state_path / "envoy" / region


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
        raise ConfigError(format_validation_error(label, e)) from None
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
        raw = p.read_bytes()
    except FileNotFoundError:
        hint = "" if path or os.environ.get(CONFIG_ENV) else f" (pass --config or set {CONFIG_ENV})"
        raise ConfigError(f"{p}: config file not found{hint}") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config file: {e.strerror}") from None
    data = load_yaml(p, raw, ConfigError)
    if data is None:
        raise ConfigError(f"{p}: (top level): the file is empty (an empty config is almost always a mistake)")
    return parse_config(data, p)


def check_local(cfg: Config) -> None:
    """What ``config validate`` checks beyond the schema: the paths it names exist here (the profiles
    are checked by ``tritonops.store.s3.check_profiles``, the one module that talks to boto).

    Not part of loading, since ``repo add`` creates a missing repository and other commands need
    only some regions. Raises ConfigError naming the file and key of the first problem.
    """
    src = cfg.source or "<config>"
    repo = cfg.repository_path
    if not repo.is_dir():
        why = "is not a folder" if repo.exists() else "does not exist"
        raise ConfigError(f"{src}: repository: {repo} {why} (create it with `tritonops repo add`)")
    state = cfg.state_path
    if state.exists() and not state.is_dir():
        raise ConfigError(f"{src}: state_dir: {state} is a file, not a folder")
    for name, region in sorted(cfg.regions.items()):
        key = f"regions.{name}"
        creds = region.credentials_file.expanduser() if region.credentials_file else None
        if creds is not None and not creds.is_file():
            raise ConfigError(f"{src}: {key}.credentials_file: {creds} does not exist or is not a file")


def dump_config(cfg: Config) -> str:
    data = cfg.model_dump(mode="json", exclude_none=True, exclude={"source"})
    return yaml.safe_dump(data, sort_keys=False)
