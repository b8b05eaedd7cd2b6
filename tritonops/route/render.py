"""A region's Envoy configuration as plain data: a pure function of what is served where.

Per model ``m``:

- cluster ``http.m`` (Triton's HTTP ports) and ``grpc.m`` (its gRPC ports, HTTP/2): priority 0 holds
  the region's servers with ``m`` READY, priority 1 the peer regions' Envoys that serve ``m`` and
  whose residency allows it (failover). Each replica is health-checked on ``/v2/models/m/ready``;
  ``healthy_panic_threshold`` is 0, so Envoy never sends to a server that lacks the model.
- ``http.m.local`` / ``grpc.m.local``: the same without peers, for requests that already failed over
  once (the loop-guard header ``x-tritonops-via``): they are never forwarded again.
- ``http.m.vN`` / ``grpc.m.vN``: only while the region's servers hold different versions (a canary):
  the servers READY at N, for ``/v2/models/m/versions/N/...`` and the ``tritonops-model-version`` header.

HTTP is routed by path, gRPC by the ``tritonops-model`` header (the model name is inside the
protobuf body). A model known here but placed nowhere routes to its empty cluster: a 503 with
Retry-After, counted by Envoy as ``upstream_cx_none_healthy`` (the ``envoy`` demand source reads it).
An unknown model gets 404.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import astuple, dataclass, field
from typing import Any

MODEL_HEADER = "tritonops-model"
VERSION_HEADER = "tritonops-model-version"
VIA_HEADER = "x-tritonops-via"  # set on every routed request: a request carrying it is never forwarded again
ROUTE_NAME = "tritonops"
LISTENER_NAME = "tritonops"
GRPC_PREFIX = "/inference.GRPCInferenceService/"
# Priority 0 keeps all traffic while any local replica is healthy (Envoy's default, 140, sends a share
# to the peers as soon as some local replicas are down: a region degrades locally before it fails over).
OVERPROVISIONING = 100000

_T = "type.googleapis.com/envoy."
T_CLUSTER = _T + "config.cluster.v3.Cluster"
T_LISTENER = _T + "config.listener.v3.Listener"
T_ROUTES = _T + "config.route.v3.RouteConfiguration"
T_HCM = _T + "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
T_ROUTER = _T + "extensions.filters.http.router.v3.Router"
T_HTTP_OPTS = _T + "extensions.upstreams.http.v3.HttpProtocolOptions"
T_PREV_HOSTS = _T + "extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
T_PREV_PRIO = _T + "extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig"


@dataclass(frozen=True, order=True)
class Endpoint:
    """One Triton server of the region, as Envoy reaches it."""

    server: str
    host: str
    http_port: int
    grpc_port: int | None = None


@dataclass(frozen=True, order=True)
class Peer:
    """A peer region's Envoy and the models it serves that may be answered from there."""

    region: str
    host: str
    port: int
    models: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RouteInputs:
    region: str
    listen_host: str
    listen_port: int
    # model -> version -> the servers holding it READY (what is served, not what was asked for)
    served: Mapping[str, Mapping[int, tuple[Endpoint, ...]]]
    known: frozenset[str]  # models that may be served here: a request for another gets 404
    peers: tuple[Peer, ...] = ()
    retry_after_s: int = 60
    health_interval_s: float = 1.0
    config_dir: str = ""  # where the routes file lives (the listener's RDS source)
    # (server, model) pairs about to leave (an unload): out of the routes before it happens
    leaving: frozenset[tuple[str, str]] = frozenset()
    # model -> version -> share of requests (a canary by traffic); empty: by replica count
    weights: Mapping[str, Mapping[int, float]] = field(default_factory=dict)


@dataclass
class EnvoyConfig:
    clusters: list[dict[str, Any]]
    routes: dict[str, Any]
    listeners: list[dict[str, Any]]
    version: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "clusters": self.clusters, "routes": self.routes,
                "listeners": self.listeners}  # fmt: skip

    def cluster_names(self) -> list[str]:
        return [c["name"] for c in self.clusters]


def _served_here(inp: RouteInputs) -> dict[str, dict[int, list[Endpoint]]]:
    out: dict[str, dict[int, list[Endpoint]]] = {}
    for m, versions in inp.served.items():
        for v, eps in versions.items():
            keep = sorted(e for e in eps if (e.server, m) not in inp.leaving)
            if keep:
                out.setdefault(m, {})[v] = keep
    return out


def _lb_endpoint(host: str, port: int, health_port: int | None = None) -> dict[str, Any]:
    ep: dict[str, Any] = {"address": {"socket_address": {"address": host, "port_value": port}}}
    if health_port is not None and health_port != port:
        ep["health_check_config"] = {"port_value": health_port}
    return {"endpoint": ep}


def _cluster(
    name: str, grpc: bool, local: list[Endpoint], peers: list[Peer], health_path: str, interval_s: float
) -> dict[str, Any]:
    if grpc:
        p0 = [_lb_endpoint(e.host, e.grpc_port, e.http_port) for e in local if e.grpc_port]
    else:
        p0 = [_lb_endpoint(e.host, e.http_port) for e in local]
    localities: list[dict[str, Any]] = [{"priority": 0, "lb_endpoints": p0}] if p0 else []
    if peers:
        localities.append({"priority": 1 if p0 else 0, "lb_endpoints": [_lb_endpoint(p.host, p.port) for p in peers]})
    c: dict[str, Any] = {
        "@type": T_CLUSTER,
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "LEAST_REQUEST",
        "common_lb_config": {"healthy_panic_threshold": {"value": 0.0}},
        "load_assignment": {
            "cluster_name": name,
            "endpoints": localities,
            "policy": {"overprovisioning_factor": OVERPROVISIONING},
        },
        "health_checks": [{
            # Triton answers /ready slowly while it loads another model (its HTTP thread runs the load):
            # one slow answer must not take a healthy replica out. Hard failures (a server gone)
            # are for outlier detection and retries, which move a request at once.
            "timeout": "2s",
            "interval": f"{interval_s}s",
            "no_traffic_interval": f"{max(interval_s, 5.0)}s",
            "unhealthy_threshold": 3,
            "healthy_threshold": 1,
            "http_health_check": {
                "path": health_path,
                # A peer Envoy answers for its own servers only (never forwards a health check on).
                "request_headers_to_add": [{"header": {"key": VIA_HEADER, "value": "health"}}],
            },
        }],
        "outlier_detection": {
            "consecutive_5xx": 3,
            "consecutive_gateway_failure": 1,
            "interval": "1s",
            "base_ejection_time": "5s",
            "max_ejection_percent": 100,
        },
    }  # fmt: skip
    if grpc:
        c["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": T_HTTP_OPTS,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return c


def _retry_policy() -> dict[str, Any]:
    """Retries skip hosts already tried, and after two tries in a priority go to the next one (the
    gRPC conditions apply to gRPC responses only). Set once, on the virtual host."""
    return {
        "retry_on": "connect-failure,refused-stream,reset,retriable-status-codes,unavailable",
        "retriable_status_codes": [503, 404],  # 404: Triton lacks the model (unloaded meanwhile)
        "num_retries": 3,
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                                  "typed_config": {"@type": T_PREV_HOSTS}}],
        "host_selection_retry_max_attempts": 5,
        "retry_priority": {"name": "envoy.retry_priorities.previous_priorities",
                           "typed_config": {"@type": T_PREV_PRIO, "update_frequency": 2}},
    }  # fmt: skip


def _to(cluster: str, empty: bool, retry_after_s: int) -> dict[str, Any]:
    """A route action to ``cluster``; an empty cluster (placed nowhere) answers 503 with Retry-After."""
    r: dict[str, Any] = {"route": {"cluster": cluster, "timeout": "0s"}}
    if empty:
        r["response_headers_to_add"] = [{"header": {"key": "retry-after", "value": str(retry_after_s)}}]
    return r


def _http_match(model: str, version: int | None = None) -> list[dict[str, Any]]:
    # path_separated_prefix: the path itself or the path followed by "/": never another model's prefix.
    return [{"path_separated_prefix": f"/v2/models/{model}" + (f"/versions/{version}" if version is not None else "")}]


def _grpc_match(model: str, version: int | None = None) -> dict[str, Any]:
    headers = [{"name": MODEL_HEADER, "string_match": {"exact": model}}]
    if version is not None:
        headers.append({"name": VERSION_HEADER, "string_match": {"exact": str(version)}})
    return {"prefix": GRPC_PREFIX, "headers": headers}


def _guarded(match: dict[str, Any]) -> dict[str, Any]:
    return {**match, "headers": [*match.get("headers", []), {"name": VIA_HEADER, "present_match": True}]}


def _weighted(model: str, grpc: bool, weights: Mapping[int, float]) -> dict[str, Any]:
    """Split a model's requests between its version clusters by share (a canary by traffic)."""
    kind = "grpc" if grpc else "http"
    total = sum(weights.values()) or 1.0
    ws = {v: max(0, round(1000 * w / total)) for v, w in sorted(weights.items())}
    ws[max(ws)] += 1000 - sum(ws.values())
    clusters = [{"name": f"{kind}.{model}.v{v}", "weight": w} for v, w in ws.items() if w > 0]
    return {"route": {"weighted_clusters": {"clusters": clusters}, "timeout": "0s"}}


def _model_parts(
    inp: RouteInputs, model: str, versions: dict[int, list[Endpoint]], peers: list[Peer]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One model's clusters and routes (the guarded ones first: routes match in order)."""
    allv = sorted({e for eps in versions.values() for e in eps})
    split = len(versions) > 1
    clusters: list[dict[str, Any]] = []
    routes: list[dict[str, Any]] = []
    empty = not allv and not peers
    for grpc in (False, True):
        kind = "grpc" if grpc else "http"
        main = f"{kind}.{model}"
        health = f"/v2/models/{model}/ready"
        clusters.append(_cluster(main, grpc, allv, peers, health, inp.health_interval_s))
        matches = [_grpc_match(model)] if grpc else _http_match(model)
        if split:
            for v, eps in sorted(versions.items()):
                name = f"{main}.v{v}"
                clusters.append(_cluster(name, grpc, eps, [], f"/v2/models/{model}/versions/{v}/ready",
                                         inp.health_interval_s))  # fmt: skip
                vm = [_grpc_match(model, v)] if grpc else _http_match(model, v)
                routes += [{"match": m, **_to(name, False, inp.retry_after_s)} for m in vm]
        if peers and allv:
            # A request that already failed over once is served here or nowhere: never sent on.
            clusters.append(_cluster(f"{main}.local", grpc, allv, [], health, inp.health_interval_s))
            routes += [{"match": _guarded(m), **_to(f"{main}.local", False, inp.retry_after_s)} for m in matches]
        elif peers:
            routes += [{"match": _guarded(m), "direct_response": {"status": 503, "body": {"inline_string":
                        f"model {model!r} is not served in region {inp.region!r}\n"}},
                        "response_headers_to_add": [{"header": {"key": "retry-after",
                                                                "value": str(inp.retry_after_s)}}]}
                       for m in matches]  # fmt: skip
        w = inp.weights.get(model)
        for m in matches:
            if split and w and set(w) <= set(versions):
                routes.append({"match": m, **_weighted(model, grpc, w)})
            else:
                routes.append({"match": m, **_to(main, empty, inp.retry_after_s)})
    return clusters, routes


def _not_found(body: str, status: int = 404) -> dict[str, Any]:
    return {"direct_response": {"status": status, "body": {"inline_string": body}}}


def render(inp: RouteInputs) -> EnvoyConfig:
    """The region's clusters, routes and listener; the same inputs give the same config (and version)."""
    served = _served_here(inp)
    models = sorted(set(inp.known) | set(served) | {m for p in inp.peers for m in p.models})
    clusters: list[dict[str, Any]] = []
    routes: list[dict[str, Any]] = [
        {"match": {"path": "/v2/health/live"}, "direct_response": {"status": 200}},
        {"match": {"path": "/v2/health/ready"}, "direct_response": {"status": 200}},
    ]
    for m in models:
        peers = sorted(p for p in inp.peers if m in p.models)
        c, r = _model_parts(inp, m, served.get(m, {}), peers)
        clusters += c
        routes += r
    routes += [
        {"match": {"prefix": GRPC_PREFIX}, **_not_found(
            f"unknown model: set the {MODEL_HEADER} header to a model served in region {inp.region!r}\n")},
        {"match": {"prefix": "/v2/models/"}, **_not_found(
            json.dumps({"error": f"unknown model: not served in region {inp.region!r}"}))},
        {"match": {"prefix": "/"}, **_not_found(json.dumps({"error": "not routed by tritonops"}))},
    ]  # fmt: skip
    vhost = {
        "name": f"tritonops-{inp.region}",
        "domains": ["*"],
        "routes": routes,
        "retry_policy": _retry_policy(),
        # Every routed request says where it was routed: a peer region never forwards it again.
        "request_headers_to_add": [{"header": {"key": VIA_HEADER, "value": inp.region},
                                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
    }  # fmt: skip
    cfg = EnvoyConfig(clusters, {"@type": T_ROUTES, "name": ROUTE_NAME, "virtual_hosts": [vhost]}, [_listener(inp)])
    cfg.version = inputs_digest(inp, served)
    return cfg


RENDER_SCHEMA = 2  # bump when render's output changes for the same inputs


def inputs_digest(inp: RouteInputs, served: Mapping[str, Mapping[int, list[Endpoint]]]) -> str:
    """The configuration's version: a digest of the inputs (render is a pure function of them; ``served``
    is what is routed, leaving replicas taken out), cheaper than hashing megabytes of output."""
    doc = {
        "schema": RENDER_SCHEMA, "region": inp.region, "listen": [inp.listen_host, inp.listen_port],
        "served": sorted((m, v, [astuple(e) for e in eps]) for m, vs in served.items() for v, eps in vs.items()),
        "known": sorted(inp.known), "peers": [(p.region, p.host, p.port, sorted(p.models)) for p in sorted(inp.peers)],
        "retry_after_s": inp.retry_after_s, "health_interval_s": inp.health_interval_s, "config_dir": inp.config_dir,
        "weights": {m: sorted(w.items()) for m, w in sorted(inp.weights.items())},
    }  # fmt: skip
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _listener(inp: RouteInputs) -> dict[str, Any]:
    rds_path = f"{inp.config_dir.rstrip('/')}/rds.json" if inp.config_dir else "rds.json"
    hcm = {
        "@type": T_HCM,
        "stat_prefix": f"tritonops_{inp.region}",
        "codec_type": "AUTO",  # HTTP/1.1 and HTTP/2 (gRPC) on the one port
        "rds": {
            "route_config_name": ROUTE_NAME,
            "config_source": {"resource_api_version": "V3", "path_config_source": {"path": rds_path}},
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": T_ROUTER}}],
        "stream_idle_timeout": "300s",
    }
    return {
        "@type": T_LISTENER,
        "name": LISTENER_NAME,
        "address": {"socket_address": {"address": inp.listen_host, "port_value": inp.listen_port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}],
    }  # fmt: skip
