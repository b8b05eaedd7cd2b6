"""Pictures of a capacity result: hit ratio and cost against fleet size.

The HTML page carries its charts as inline SVG written here (no dependency, text stays sharp and
searchable); the PNG is drawn with matplotlib when it is installed (extra ``plot``), else skipped
with a note, since rasterising text by hand is not worth a dependency of our own.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any

from tritonops.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

SERIES = (("warm_share", "tritonops region placement", "#1f77b4"), ("lru", "LRU (request-level)", "#ff7f0e"),
          ("lfu", "LFU (request-level)", "#2ca02c"), ("belady", "Belady bound", "#7f7f7f"))  # fmt: skip
W, H, PAD = 520, 320, 52


def _value(row: dict[str, Any], key: str) -> float | None:
    v = row.get(key, row.get("baselines", {}).get(key))
    return None if v is None else float(v)


def _svg(rows: list[dict[str, Any]], title: str, series: list[tuple[str, str, str]], ymax: float, yfmt: str) -> str:
    xs = [r["servers"] for r in rows]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)

    def px(x: float) -> float:
        return PAD + (x - x0) / (x1 - x0) * (W - 2 * PAD)

    def py(y: float) -> float:
        return H - PAD - y / ymax * (H - 2 * PAD)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
           f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#000"/>',
           f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#000"/>',
           f'<text x="{W / 2}" y="{H - 12}" text-anchor="middle">servers</text>']  # fmt: skip
    for i in range(6):
        y = ymax * i / 5
        out.append(f'<line x1="{PAD}" y1="{py(y):.1f}" x2="{W - PAD}" y2="{py(y):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{PAD - 4}" y="{py(y) + 4:.1f}" text-anchor="end">{yfmt.format(y)}</text>')
    for x in xs:
        out.append(f'<text x="{px(x):.1f}" y="{H - PAD + 14}" text-anchor="middle">{x}</text>')
    for k, (key, label, colour) in enumerate(series):
        pts = [(px(r["servers"]), py(v)) for r in rows if (v := _value(r, key)) is not None]
        if not pts:
            continue
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in pts]
        ly = PAD + 4 + 14 * k
        out.append(f'<rect x="{W - PAD - 150}" y="{ly - 8}" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{W - PAD - 136}" y="{ly + 1}">{html.escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def svg_charts(result: dict[str, Any]) -> tuple[str, str]:
    rows = result["sizes"]
    hit = _svg(rows, "share of requests served warm", list(SERIES), 1.0, "{:.0%}")
    top = max(r["cost_per_hour"] for r in rows) or 1.0
    cost = _svg(rows, "cost per hour", [("cost_per_hour", "fleet cost ($/h)", "#d62728")], top * 1.05, "{:.4g}")
    return hit, cost


def html_page(result: dict[str, Any]) -> str:
    hit, cost = svg_charts(result)
    rec = result["recommended"]
    goal = f"{result['target']:.1%} warm"
    head = (
        f"smallest fleet with at least {goal}: {rec['servers']} servers, {rec['cost_per_hour']:.2f}/h"
        if rec
        else f"no fleet size tried reaches {goal}"
    )
    cols = ("servers", "cost_per_hour", "warm_share", "cold_wait_p50_s", "cold_wait_p99_s", "loads_per_hour",
            "memory_use_mean")  # fmt: skip
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in cols)
        + "".join(f"<td>{r['baselines'].get(b, '')}</td>" for b in ("lru", "lfu", "belady")) + "</tr>"
        for r in result["sizes"]
    )  # fmt: skip
    th = "".join(f"<th>{c}</th>" for c in (*cols, "lru", "lfu", "belady"))
    t = result["trace"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>tritonops capacity</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:2px 8px;text-align:right}}</style></head><body>
<h1>tritonops capacity</h1><p>{html.escape(t['source'])}: {t['requests']} requests over {t['models']} models;
{html.escape(head)}.</p><div>{hit}{cost}</div><table><tr>{th}</tr>{rows}</table></body></html>
"""


def _png(result: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = result["sizes"]
    xs = [r["servers"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label, colour in SERIES:
        pts = [(r["servers"], v) for r in rows if (v := _value(r, key)) is not None]
        if pts:
            a.plot(*zip(*pts, strict=True), marker="o", label=label, color=colour)
    a.axhline(result["target"], ls="--", color="#999", lw=1)
    a.set(xlabel="servers", ylabel="share of requests served warm", ylim=(0, 1.02))
    a.legend(loc="lower right")
    b.plot(xs, [r["cost_per_hour"] for r in rows], marker="o", color="#d62728")
    b.set(xlabel="servers", ylabel="cost per hour")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_charts(result: dict[str, Any], out_dir: Path, stem: str = "capacity") -> dict[str, Any]:
    """Write ``stem.html`` (inline SVG) and ``stem.png`` (when matplotlib is installed) under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / f"{stem}.html"
    atomic_write_bytes(page, html_page(result).encode())
    page.chmod(0o644)  # a page to share, not a secret (atomic writes start private)
    out: dict[str, Any] = {"html": str(page), "png": None}
    png = out_dir / f"{stem}.png"
    if _png(result, png):
        out["png"] = str(png)
    else:
        out["note"] = "PNG skipped: matplotlib is not installed (pip install 'tritonops[plot]')"
        log.warning("capacity: %s", out["note"])
    return out
