"""What one replica serves, from Triton-shaped statistics; the config's replicas and served_rps rules."""

from __future__ import annotations

import pytest

from tritonops.config import parse_config
from tritonops.errors import ConfigError
from tritonops.placement.served import BUSY_SHARE, served_per_s


def row(name: str, count: int, infer_ns: int, io_ns: int = 0, as_str: bool = False) -> dict[str, object]:
    def v(x: int) -> object:
        return str(x) if as_str else x  # the gRPC JSON writes uint64 as strings

    return {"name": name, "version": "1", "inference_count": v(count),
            "inference_stats": {"compute_infer": {"count": v(count), "ns": v(infer_ns)},
                                "compute_input": {"count": v(count), "ns": v(io_ns)},
                                "compute_output": {"count": v(count), "ns": v(io_ns)}}}  # fmt: skip


def test_requests_per_second_of_compute_summed_over_servers() -> None:
    # 1000 requests in 1 s of compute on one server, 1000 in 3 s on another: 2000 in 4 s
    got = served_per_s([row("a", 1000, 8 * 10**8, 10**8), row("a", 1000, 3 * 10**9, as_str=True)])
    assert got == {"a": pytest.approx(BUSY_SHARE * 500.0)}


def test_too_few_requests_or_no_time_is_no_measurement() -> None:
    assert served_per_s([row("a", 10, 10**6), row("b", 500, 0), {"name": "c"}]) == {}


def test_replicas_rule_and_served_rps_in_config() -> None:
    cfg = parse_config({"models": {"m": {"replicas": {"min": 2, "max": 4}, "served_rps": 12.5}}})
    assert cfg.models["m"].replicas is not None and cfg.models["m"].replicas.min == 2
    assert cfg.models["m"].served_rps == 12.5
    with pytest.raises(ConfigError, match=r"models\.m\.replicas.*max \(1\) is below min \(2\)"):
        parse_config({"models": {"m": {"replicas": {"min": 2, "max": 1}}}})
    with pytest.raises(ConfigError, match=r"models\.m\.served_rps"):
        parse_config({"models": {"m": {"served_rps": 0}}})
