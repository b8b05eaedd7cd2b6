"""Pure parts of releases: which version is live, canary choice, gate verdicts from counter snapshots.
(The end-to-end test drives the same code on the real stack; these pin the edge cases.)"""

from __future__ import annotations

from tritonops.config import GateConfig, ReleaseMode
from tritonops.release import gates
from tritonops.release.policy import canary_servers, live_version, region_versions
from tritonops.release.state import Canary, ReleaseRecord
from tritonops.repo.manifest import FileEntry, ModelManifest, VersionEntry

G = GateConfig(min_requests=20, max_failure_rate=0.05, max_latency_ratio=1.5, min_latency_delta_ms=2)


def man(*versions: int) -> ModelManifest:
    return ModelManifest("m", {v: VersionEntry(v, [FileEntry("model.py", v, f"{v:064x}")]) for v in versions})


def ptr(*versions: int) -> str:
    return f'backend: "python"\nversion_policy {{ specific {{ versions: [{", ".join(map(str, versions))}] }} }}\n'


def test_live_version_per_mode() -> None:
    m = man(1, 2, 3)
    # no record: on-publish = newest; explicit = what the published config points at
    assert live_version(ReleaseMode.on_publish, None, m) == 3
    assert live_version(ReleaseMode.explicit, None, m, ptr(2)) == 2
    rec = ReleaseRecord("m", live=1, previous=2, watermark=3)
    assert live_version(ReleaseMode.explicit, rec, m) == 1
    assert live_version(ReleaseMode.on_publish, rec, m) == 1  # a rollback is not undone by a re-sync
    m4 = man(1, 2, 3, 4)
    assert live_version(ReleaseMode.on_publish, rec, m4) == 4  # ... but a new publish releases
    assert live_version(ReleaseMode.explicit, rec, m4) == 1  # ... only in on-publish mode
    rec.blocked[m4.versions[4].digest] = "bad"
    assert live_version(ReleaseMode.on_publish, rec, m4) == 1  # never a blocked digest


def test_canary_servers_and_region_versions() -> None:
    assert canary_servers(["b", "a", "c", "d"], 0.5) == ["a", "b"]
    assert canary_servers(["a"], 0.1) == ["a"]
    assert canary_servers(["a", "b", "c"], 0.34) == ["a", "b"]
    rec = ReleaseRecord("m", live=1, canary=Canary(2, ["s0", "gone"]))
    assert region_versions(ReleaseMode.explicit, ["s0", "s1"], {"m": man(1, 2)}, {}, {"m": rec}) == {
        "m": {"": 1, "s0": 2}
    }
    rec.blocked[man(1, 2).versions[2].digest] = "bad"
    assert region_versions(ReleaseMode.explicit, ["s0"], {"m": man(1, 2)}, {}, {"m": rec}) == {"m": {"": 1}}


def snap(**servers: dict[int, tuple[float, float, float, float]]) -> gates.Snapshot:
    return {s: {str(v): dict(zip(("success", "failure", "duration_us", "queue_us"), c, strict=True))
                for v, c in vs.items()} for s, vs in servers.items()}  # fmt: skip


def test_gate_waits_for_traffic_and_never_passes_by_default() -> None:
    base = snap(a={2: (0, 0, 0, 0)}, b={1: (100, 0, 1e6, 0)})
    now = snap(a={2: (10, 0, 1e5, 0)}, b={1: (200, 0, 2e6, 0)})
    v = gates.evaluate(G, {}, base, now, 2, 1, ["a"], ["b"])
    assert v.verdict == "wait" and "10 of 20" in v.reasons[0]


def test_gate_failure_rate_and_latency_against_the_old_version() -> None:
    base = snap(a={2: (0, 0, 0, 0)}, b={1: (0, 0, 0, 0)})
    bad = snap(a={2: (60, 40, 60 * 10_000, 0)}, b={1: (100, 0, 100 * 10_000, 0)})
    v = gates.evaluate(G, {}, base, bad, 2, 1, ["a"], ["b"])
    assert v.verdict == "fail" and "failure rate 40.0%" in v.reasons[0]
    slow = snap(a={2: (100, 0, 100 * 30_000, 0)}, b={1: (100, 0, 100 * 10_000, 0)})
    v = gates.evaluate(G, {}, base, slow, 2, 1, ["a"], ["b"])
    assert v.verdict == "fail" and "latency 30.00 ms" in v.reasons[0], v.reasons
    ok = snap(a={2: (100, 1, 101 * 11_000, 0)}, b={1: (100, 0, 100 * 10_000, 0)})
    assert gates.evaluate(G, {}, base, ok, 2, 1, ["a"], ["b"]).verdict == "pass"


def test_gate_reference_before_the_step_when_no_other_server_serves_the_old_version() -> None:
    pre = snap(a={1: (500, 0, 500 * 10_000, 0)})
    base = snap(a={2: (0, 0, 0, 0)})
    now = snap(a={2: (50, 0, 50 * 40_000, 0)})
    v = gates.evaluate(G, pre, base, now, 2, 1, ["a"], [])
    assert v.verdict == "fail" and "before the step" in v.reasons[0]


def test_counter_going_down_is_a_restart_not_a_verdict() -> None:
    base = snap(a={2: (100, 0, 1e6, 0)})
    now = snap(a={2: (5, 0, 5e4, 0)})
    v = gates.evaluate(G, {}, base, now, 2, 1, ["a"], [])
    assert v.verdict == "wait" and v.restarted and "restarted" in v.reasons[0]


def test_counters_from_triton_text_sum_failure_reasons() -> None:
    text = "\n".join([
        '# HELP nv_inference_request_success x',
        'nv_inference_request_success{model="m",version="2"} 7',
        'nv_inference_request_failure{model="m",reason="BACKEND",version="2"} 2',
        'nv_inference_request_failure{model="m",reason="REJECTED",version="2"} 1',
        'nv_inference_request_success{model="other",version="2"} 99',
    ])  # fmt: skip
    c = gates.counters_from_text(text, "m")["2"]
    assert (c.success, c.failure, c.requests) == (7, 3, 10)
