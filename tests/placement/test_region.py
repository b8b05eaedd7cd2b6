"""The region placement's table of cases: spread, replicas, pinned, allow lists, budget, cap, stability."""

from __future__ import annotations

import random

import pytest

from tritonops.placement import (
    ModelInput,
    PlacementPolicy,
    RegionPlacement,
    ReplicaDecision,
    ServerInput,
    place_region,
    replicas_wanted,
)

MB = 1 << 20
POL = PlacementPolicy(interval_s=60, hysteresis=0.25, max_loads=None)


def srv(name: str, slots: float, allowed: set[str] | None = None, max_loads: int | None = None) -> ServerInput:
    return ServerInput(name, int(slots * 100 * MB), None if allowed is None else frozenset(allowed), max_loads)


def mod(name: str, demand: float, *, mb: int = 100, on: tuple[str, ...] = (), pinned: bool = False,
        served: float | None = None, lo: int = 0, hi: int | None = None) -> ModelInput:  # fmt: skip
    return ModelInput(name, mb * MB, 1.0, demand, pinned, frozenset(on), served, "config" if served else "", lo, hi)


def where(rp: RegionPlacement) -> dict[str, tuple[str, ...]]:
    return rp.assignment()


def check_budget(rp: RegionPlacement) -> None:
    for name, use in rp.servers.items():
        assert use.used_bytes <= use.room_bytes, name


CASES = [
    # ties: same demand, room for one: the name decides (deterministic)
    ("tie-name", [srv("a", 1)], [mod("y", 5), mod("x", 5)], POL, {"x": ("a",)}),
    # ties: the loaded one stays (hysteresis, then loaded first)
    ("tie-loaded", [srv("a", 1)], [mod("x", 5), mod("y", 5, on=("a",))], POL, {"y": ("a",)}),
    # pinned: on every server allowed to hold it, without demand; the rest share what is left
    ("pinned", [srv("a", 2), srv("b", 2, allowed={"p", "m1", "m2"}), srv("c", 2, allowed={"m1", "m2"})],
     [mod("p", 0, pinned=True), mod("m1", 9), mod("m2", 8)], POL,
     {"p": ("a", "b"), "m1": ("c",), "m2": ("c",)}),
    # allow lists: a model goes only where allowed; a model allowed nowhere is not placed
    ("allow", [srv("a", 2, allowed={"m1"}), srv("b", 2, allowed={"m2"})], [mod("m1", 1), mod("m2", 1), mod("m3", 9)],
     POL, {"m1": ("a",), "m2": ("b",)}),
    # replicas min: held without demand, on distinct servers
    ("min", [srv("a", 1), srv("b", 1), srv("c", 1)], [mod("m", 0, lo=2)], POL, {"m": ("a", "c")}),
    # replicas by demand: 250 requests at 100 per replica want 3, capped by max 2
    ("max", [srv("a", 1), srv("b", 1), srv("c", 1)], [mod("m", 250, served=100, hi=2)], POL, {"m": ("a", "c")}),
    # budget exactly full: three of 100 MB in 300 MB, the fourth waits
    ("exact", [srv("a", 3)], [mod(f"m{i}", 10 - i) for i in range(4)], POL,
     {"m0": ("a",), "m1": ("a",), "m2": ("a",)}),
    # zero demand: never loaded; a loaded one is kept while its memory is not needed
    ("zero", [srv("a", 2)], [mod("z", 0), mod("k", 0, on=("a",)), mod("m", 3)], POL, {"k": ("a",), "m": ("a",)}),
    # zero demand, memory needed: the loaded one without demand makes room
    ("zero-evict", [srv("a", 1)], [mod("k", 0, on=("a",)), mod("m", 3)], POL, {"m": ("a",)}),
    # one server: the most requested that fit
    ("one", [srv("a", 2)], [mod("m1", 1), mod("m2", 50), mod("m3", 40)], POL, {"m2": ("a",), "m3": ("a",)}),
    # a server with no room holds nothing; the others take the models
    ("no-room", [srv("a", 0), srv("b", 2)], [mod("m1", 5), mod("m2", 4), mod("m3", 3)], POL,
     {"m1": ("b",), "m2": ("b",)}),
    # every model with demand gets one replica before any gets a second
    ("spread-first", [srv("a", 2), srv("b", 2)],
     [mod("hot", 1000, served=100), mod("m1", 3), mod("m2", 2), mod("m3", 1)], POL,
     {"hot": ("a",), "m1": ("b",), "m2": ("b",), "m3": ("a",)}),
    # hysteresis: similar demand does not swap, clearly higher does
    ("hyst-stay", [srv("a", 1)], [mod("x", 100, on=("a",)), mod("y", 110)], POL, {"x": ("a",)}),
    ("hyst-swap", [srv("a", 1)], [mod("x", 100, on=("a",)), mod("y", 200)], POL, {"y": ("a",)}),
]


@pytest.mark.parametrize(("servers", "models", "policy", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cases(servers: list[ServerInput], models: list[ModelInput], policy: PlacementPolicy,
               want: dict[str, tuple[str, ...]]) -> None:  # fmt: skip
    rp = place_region(servers, models, policy)
    got = where(rp)
    # which servers is rendezvous hashing's choice where the case leaves it open: compare counts there
    exact = {m: v for m, v in want.items() if len(servers) == 1 or v == tuple(s.name for s in servers
                                                                             if s.allowed and m in s.allowed)}
    assert {m: got.get(m) for m in exact} == exact
    assert {m: len(v) for m, v in got.items()} == {m: len(v) for m, v in want.items()}
    check_budget(rp)


def test_replicas_follow_demand_on_distinct_servers() -> None:
    servers = [srv(n, 2) for n in "abcd"]
    rp = place_region(servers, [mod("hot", 350, served=100), mod("cold", 10, served=100)], POL)
    assert len(set(rp.servers_of("hot"))) == 4 and len(rp.servers_of("cold")) == 1
    mp = rp.models["hot"]
    assert mp.wanted == 4 and all(r.decision is ReplicaDecision.load for r in mp.replicas)
    assert "replica 1 (every model with demand gets one" in mp.replicas[0].reason or any(
        "replica 1" in r.reason for r in mp.replicas)
    assert any("demand 350 over" in r.reason for r in mp.replicas)


def test_cap_on_loads_per_server_defers_the_rest() -> None:
    rp = place_region([srv("a", 5, max_loads=1), srv("b", 5, max_loads=1)], [mod(f"m{i}", 10 - i) for i in range(5)], POL)
    assert sorted(where(rp)) == ["m0", "m1"] and rp.loads == 2
    assert all(x.why == "cap" for m in ("m2", "m3", "m4") for x in rp.models[m].missing)
    assert "cap of" in rp.models["m2"].missing[0].reason


def test_capped_run_evicts_nothing_for_loads_it_does_not_make() -> None:
    servers = [srv("a", 1, max_loads=0)]
    rp = place_region(servers, [mod("old", 1, on=("a",)), mod("new", 100)], POL)
    assert where(rp) == {"old": ("a",)} and rp.evictions == 0


def test_incomplete_demand_keeps_every_loaded_replica() -> None:
    rp = place_region([srv("a", 1), srv("b", 1)], [mod("old", 0, on=("a",)), mod("new", 100), mod("n2", 50)], POL,
                      evict=False)  # fmt: skip
    assert where(rp) == {"old": ("a",), "new": ("b",)} and rp.evictions == 0


def test_a_server_that_leaves_moves_only_its_models() -> None:
    rng = random.Random(1)
    models = [mod(f"m{i:02d}", rng.uniform(1, 100)) for i in range(30)]
    servers = [srv(n, 4) for n in "abcdef"]
    before = place_region(servers, models, POL).assignment()
    held = [ModelInput(m.name, m.footprint_bytes, m.load_s, m.demand, loaded_on=frozenset(before.get(m.name, ())))
            for m in models]  # fmt: skip
    after = place_region([s for s in servers if s.name != "c"], held, POL).assignment()
    assert len(before) == 24 and len(after) == 20  # 6 and then 5 servers of 4
    # a model that stays placed stays where it was; the hottest of the lost server's models is placed again
    assert all(after[m] == before[m] for m in after if m in before and before[m] != ("c",))
    lost = sorted((m for m, s in before.items() if s == ("c",)), key=lambda m: -next(x.demand for x in models
                                                                                       if x.name == m))
    assert lost and lost[0] in after and after[lost[0]] != ("c",)


def test_small_demand_change_moves_few_models_and_rerun_moves_none() -> None:
    rng = random.Random(7)
    demand = {f"m{i:03d}": 1000.0 / (i + 1) for i in range(200)}
    servers = [srv(f"s{j:02d}", 5) for j in range(20)]
    rp = place_region(servers, [mod(m, d) for m, d in demand.items()], POL)
    held = rp.assignment()
    again = place_region(servers, [mod(m, d, on=held.get(m, ())) for m, d in demand.items()], POL)
    assert again.loads == 0 and again.evictions == 0 and again.assignment() == held
    drift = {m: d * rng.uniform(0.95, 1.05) for m, d in demand.items()}
    moved = place_region(servers, [mod(m, d, on=held.get(m, ())) for m, d in drift.items()], POL)
    assert moved.loads <= 2 and len(moved.assignment()) == 100


def test_never_over_budget_and_deterministic() -> None:
    rng = random.Random(3)
    for _ in range(30):
        servers = [srv(f"s{j}", rng.choice([0, 1, 2.5, 4])) for j in range(rng.randint(1, 5))]
        names = [s.name for s in servers]
        models = [mod(f"m{i}", rng.choice([0, 1, 5, 50]), mb=rng.choice([50, 100, 150]),
                      on=tuple(rng.sample(names, rng.randint(0, 1))), pinned=rng.random() < 0.1,
                      served=rng.choice([None, 10]), lo=rng.choice([0, 0, 2])) for i in range(12)]  # fmt: skip
        a = place_region(servers, models, POL)
        b = place_region(list(reversed(servers)), list(reversed(models)), POL)
        assert a.assignment() == b.assignment()
        for name, use in a.servers.items():
            pinned = sum(r.footprint_bytes for mp in a.models.values() if mp.pinned
                         for r in mp.replicas if r.server == name)  # fmt: skip
            assert use.used_bytes <= max(use.room_bytes, pinned), name
        for mp in a.models.values():
            assert len(set(mp.servers)) == len(mp.servers)


@pytest.mark.parametrize(("demand", "served", "lo", "hi", "want"), [
    (0, None, 0, None, 0), (5, None, 0, None, 1), (250, 100, 0, None, 3), (250, 100, 0, 2, 2),
    (0, 100, 2, None, 2), (50, 100, 3, 1, 3), (100, 100, 0, None, 1),
])  # fmt: skip
def test_replicas_wanted(demand: float, served: float | None, lo: int, hi: int | None, want: int) -> None:
    assert replicas_wanted(demand, served, lo, hi) == want


def test_the_value_is_plain_data() -> None:
    rp = place_region([srv("a", 1), srv("b", 1)], [mod("m", 300, served=100), mod("p", 0, pinned=True, mb=0)], POL)
    d = rp.data
    assert d["models"]["m"]["wanted"] == 3 and set(d["models"]["m"]["servers"]) == {"a", "b"}
    assert d["models"]["m"]["missing"][0]["why"] == "servers"
    assert d["servers"]["a"]["room_bytes"] == 100 * MB and d["distinct_models"] == 2
