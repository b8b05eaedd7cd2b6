"""Benchmark: a new reconciler host reads what its region publishes (issue 14).

The first reconcile on a host (or the first after a publish of many models) reads the index, then each
model's manifest and config. Compared in the same run with reading them one GET after another, what
reconcile did before and what a script looping over `aws s3 cp` would do at best. One local S3 server
(moto); a non-zero round trip goes through bench/latency_proxy.py, as in bench/sync.py.

    PYTHONPATH=. python bench/read_published.py [--models 200] [--rtt-ms 0,50] [--reps 3]

Writes bench/results/read_published.json and read_published.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latency_proxy import LatencyProxy, measured_rtt_s  # noqa: E402  (bench/ is sys.path[0])

from tests.reconcile.conftest import Publisher, model_py  # noqa: E402
from tritonops.config import RegionConfig  # noqa: E402
from tritonops.dev import stack  # noqa: E402
from tritonops.reconcile.state import read_published  # noqa: E402
from tritonops.repo.manifest import CONFIG_NAME, INDEX_NAME, MANIFEST_NAME, RepoIndex  # noqa: E402
from tritonops.store import open_store  # noqa: E402


def one_after_another(region: RegionConfig) -> int:
    """The index, then each model's manifest and config, one GET at a time; the objects read."""
    store = open_store(region, "bench")
    try:
        raw = store.get(INDEX_NAME)
        assert raw is not None
        models = sorted(RepoIndex.loads(raw, INDEX_NAME).models)
        for m in models:
            assert store.get(f"{m}/{MANIFEST_NAME}") is not None and store.get(f"{m}/{CONFIG_NAME}") is not None
        return 1 + 2 * len(models)
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--rtt-ms", default="0,50", help="round trips to add, comma-separated (0: loopback)")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    rows = []
    with tempfile.TemporaryDirectory(prefix="tritonops-bench-read-") as tmp:
        work = Path(tmp)
        creds = stack.Credentials.generate()
        cred_file = work / "credentials"
        creds.write_shared_file(cred_file)
        srv = stack.start_s3(work / "s3", work / "s3.log", creds, kind="moto")
        try:

            def region(endpoint: str) -> RegionConfig:
                return RegionConfig(bucket="s3://bench/repo", endpoint_url=endpoint, profile=stack.DEV_PROFILE,
                                    credentials_file=cred_file)  # fmt: skip

            direct = region(srv.endpoint_url)
            open_store(direct, "bench").create()
            pub = Publisher(direct)
            for i in range(args.models):
                pub.publish(f"m{i:04d}", 1, {"model.py": model_py(float(i))})
            host, _, port = srv.endpoint_url.removeprefix("http://").rpartition(":")
            for rtt in (int(x) for x in args.rtt_ms.split(",")):
                endpoint, measured = srv.endpoint_url, None
                if rtt:
                    proxy = LatencyProxy(host, int(port), rtt / 1000).start_in_thread()
                    endpoint = f"http://127.0.0.1:{proxy.port}"
                    measured = measured_rtt_s(proxy.port)
                far = region(endpoint)
                ours, naive, warm = [], [], []
                for r in range(args.reps):  # interleaved, so load on the shared machine hits both alike
                    t0 = time.perf_counter()
                    got = read_published(far, "bench", work / f"cache-{rtt}-{r}")
                    ours.append(time.perf_counter() - t0)
                    assert len(got.manifests) == args.models and not got.problems, got.problems[:3]
                    t0 = time.perf_counter()
                    read_published(far, "bench", work / f"cache-{rtt}-{r}")
                    warm.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    objects = one_after_another(far)
                    naive.append(time.perf_counter() - t0)
                med = statistics.median
                rows.append({
                    "rtt_ms": rtt, "measured_rtt_s": measured, "models": args.models, "objects": objects,
                    "read_published_cold_median_s": round(med(ours), 3),
                    "one_get_after_another_median_s": round(med(naive), 3),
                    "ratio_to_one_after_another": round(med(ours) / med(naive), 3),
                    "read_published_warm_cache_median_s": round(med(warm), 3),
                    "cold_s": [round(x, 3) for x in ours], "one_after_another_s": [round(x, 3) for x in naive],
                    "warm_s": [round(x, 3) for x in warm],
                })  # fmt: skip
                print(json.dumps(rows[-1]), file=sys.stderr)
        finally:
            stack.stop(srv.record)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    doc = {"format_version": 1, "benchmark": "read-published", "python": platform.python_version(),
           "cpus": os.cpu_count(), "load_average_1m_end": round(os.getloadavg()[0], 1), "results": rows}  # fmt: skip
    (out / "read_published.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "# reconcile: reading what a region publishes, on a new host\n",
        f"`PYTHONPATH=. python bench/read_published.py --models {args.models} --rtt-ms {args.rtt_ms} "
        f"--reps {args.reps}`. A cold cache (a new host): the index, then a manifest and a config per model, "
        "against the same objects read one GET after another in the same run. Medians in seconds; one run on "
        f"{os.cpu_count()} CPUs.\n",
        "| models | rtt | objects | read_published, cold | one GET after another | ratio | warm cache |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        rtt = f"{r['rtt_ms']} ms" + (f" (measured {r['measured_rtt_s'] * 1000:.0f} ms)" if r["measured_rtt_s"] else "")
        lines.append(
            f"| {r['models']} | {rtt} | {r['objects']} | {r['read_published_cold_median_s']} | "
            f"{r['one_get_after_another_median_s']} | {r['ratio_to_one_after_another']} | "
            f"{r['read_published_warm_cache_median_s']} |"
        )
    (out / "read_published.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
