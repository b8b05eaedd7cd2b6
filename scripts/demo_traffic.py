"""Traffic for the release demo: one thread per server of every region sends `echo` requests through
tritonclient for SECONDS, and prints once a second which versions answered on each server.

    python scripts/demo_traffic.py CONFIG SECONDS
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.http as th

from tritonops.config import load_config


def main() -> None:
    cfg = load_config(Path(sys.argv[1]))
    seconds = float(sys.argv[2])
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    stop = time.monotonic() + seconds

    def run(name: str, url: str) -> None:
        c = th.InferenceServerClient(url.removeprefix("http://"))
        x = th.InferInput("X", [1, 1], "FP32")
        x.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
        while time.monotonic() < stop:
            try:
                counts[name][f"v{int(c.infer('echo', [x]).as_numpy('Y')[0][0])}"] += 1
            except Exception:  # noqa: BLE001 - a failure is what the demo shows
                counts[name]["failed"] += 1
            time.sleep(0.02)

    threads = [threading.Thread(target=run, args=(s.name, s.http_url), daemon=True)
               for r in cfg.regions.values() for s in r.servers]  # fmt: skip
    for t in threads:
        t.start()
    while time.monotonic() < stop:
        time.sleep(2)
        line = "  ".join(f"{n}: {dict(c)}" for n, c in sorted(counts.items()))
        print(f"[traffic] {line}", file=sys.stderr, flush=True)
        counts.clear()


if __name__ == "__main__":
    main()
