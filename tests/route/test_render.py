"""The render is a pure function: the properties Envoy's behaviour rests on, without a server."""

from __future__ import annotations

import json

from tritonops.route.render import VIA_HEADER, Endpoint, Peer, RouteInputs, render

A = Endpoint("a", "10.0.0.1", 8000, 8001)
B = Endpoint("b", "10.0.0.2", 8000, 8001)


def inputs(**kw: object) -> RouteInputs:
    base: dict[str, object] = {
        "region": "eu", "listen_host": "127.0.0.1", "listen_port": 8080,
        "served": {"m": {1: (A, B)}}, "known": frozenset({"m", "cold"}),
    }  # fmt: skip
    base.update(kw)
    return RouteInputs(**base)  # type: ignore[arg-type]


def clusters(cfg: object) -> dict[str, dict]:
    return {c["name"]: c for c in cfg.clusters}  # type: ignore[attr-defined]


def endpoints(c: dict) -> dict[int, list[str]]:
    return {
        loc.get("priority", 0): [
            f"{e['endpoint']['address']['socket_address']['address']}:{e['endpoint']['address']['socket_address']['port_value']}"
            for e in loc["lb_endpoints"]
        ]
        for loc in c["load_assignment"]["endpoints"]
    }


def test_same_inputs_same_config_and_version() -> None:
    one, two = render(inputs()), render(inputs(served={"m": {1: (B, A)}}))
    assert one.version == two.version
    assert json.dumps(one.to_json(), sort_keys=True) == json.dumps(two.to_json(), sort_keys=True)
    assert render(inputs(served={"m": {1: (A,)}})).version != one.version


def test_each_model_cluster_holds_only_its_servers_never_panics_and_is_health_checked() -> None:
    cs = clusters(render(inputs()))
    assert endpoints(cs["http.m"]) == {0: ["10.0.0.1:8000", "10.0.0.2:8000"]}
    assert endpoints(cs["grpc.m"]) == {0: ["10.0.0.1:8001", "10.0.0.2:8001"]}
    for c in cs.values():
        assert c["common_lb_config"]["healthy_panic_threshold"]["value"] == 0.0
        assert c["outlier_detection"]["max_ejection_percent"] == 100
    assert cs["http.m"]["health_checks"][0]["http_health_check"]["path"] == "/v2/models/m/ready"
    # gRPC replicas are health-checked on the server's HTTP port.
    grpc_eps = cs["grpc.m"]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert {e["endpoint"]["health_check_config"]["port_value"] for e in grpc_eps} == {8000}


def test_leaving_replicas_are_out_and_unplaced_models_answer_503_with_retry_after() -> None:
    cfg = render(inputs(leaving=frozenset({("a", "m")}), retry_after_s=9))
    assert endpoints(clusters(cfg)["http.m"]) == {0: ["10.0.0.2:8000"]}
    assert clusters(cfg)["http.cold"]["load_assignment"]["endpoints"] == []
    routes = cfg.routes["virtual_hosts"][0]["routes"]
    cold = [r for r in routes if r["match"].get("path_separated_prefix") == "/v2/models/cold"]
    assert cold[0]["response_headers_to_add"][0]["header"] == {"key": "retry-after", "value": "9"}
    assert routes[-2]["direct_response"]["status"] == 404  # any other /v2/models/...


def test_peers_are_lower_priority_and_guarded_requests_never_leave_again() -> None:
    peer = Peer("us", "10.1.0.1", 9000, frozenset({"m"}))
    cfg = render(inputs(peers=(peer,)))
    cs = clusters(cfg)
    assert endpoints(cs["http.m"]) == {0: ["10.0.0.1:8000", "10.0.0.2:8000"], 1: ["10.1.0.1:9000"]}
    assert endpoints(cs["http.m.local"]) == {0: ["10.0.0.1:8000", "10.0.0.2:8000"]}
    assert "http.cold" in cs and endpoints(cs["http.cold"]) == {}  # the peer does not serve it
    guarded = {json.dumps(r["match"], sort_keys=True): r for r in cfg.routes["virtual_hosts"][0]["routes"]
               if any(h["name"] == VIA_HEADER for h in r["match"].get("headers", []))}  # fmt: skip
    assert sorted(r["route"]["cluster"] for r in guarded.values()) == ["grpc.m.local", "http.m.local"]
    # A model only a peer serves: forwarded once; a forwarded request for it is not sent on (503).
    only_peer = render(inputs(served={}, peers=(peer,)))
    assert endpoints(clusters(only_peer)["http.m"]) == {0: ["10.1.0.1:9000"]}
    guarded_m = [r for r in only_peer.routes["virtual_hosts"][0]["routes"]
                 if any(h["name"] == VIA_HEADER for h in r["match"].get("headers", []))]  # fmt: skip
    assert len(guarded_m) == 2 and all(r["direct_response"]["status"] == 503 for r in guarded_m)
    # Every routed request carries the region it was routed by.
    assert cfg.routes["virtual_hosts"][0]["request_headers_to_add"][0]["header"] == {"key": VIA_HEADER, "value": "eu"}


def test_versions_split_into_clusters_and_weights_split_traffic() -> None:
    cfg = render(inputs(served={"m": {1: (A,), 2: (B,)}}, weights={"m": {1: 0.95, 2: 0.05}}))
    cs = clusters(cfg)
    assert endpoints(cs["http.m.v1"]) == {0: ["10.0.0.1:8000"]}
    assert endpoints(cs["http.m.v2"]) == {0: ["10.0.0.2:8000"]}
    routes = cfg.routes["virtual_hosts"][0]["routes"]
    split = [r for r in routes if "weighted_clusters" in r.get("route", {})]
    assert split
    assert {c["name"]: c["weight"] for c in split[0]["route"]["weighted_clusters"]["clusters"]} == {
        "http.m.v1": 950, "http.m.v2": 50,
    }  # fmt: skip
