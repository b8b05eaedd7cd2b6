"""Benchmark: `tritonops sync` vs `aws s3 sync`, `s5cmd sync` and `rclone sync`, same server, same run.

One local S3 server for every tool (`moto_server` by default; `--server rclone` for `rclone serve s3`,
which stalls under parallel PUTs on the 2-core machines here); each tool writes into its own bucket. Cases:

  a. 500 files of 256 KiB in 50 models (first sync into an empty prefix)
  b. 4 files of 128 MiB (first sync into an empty prefix)
  c. a no-op re-sync of a repository of 1,000 models (small files), after one untimed first sync
  d. 1,000 models x 5 versions (2 small files each: 12,001 objects for tritonops): the first sync
     (one run per tool), then no-op re-syncs

`--rtt-ms 0,20,50` runs the cases once per round trip: for a non-zero one, every tool talks to the
S3 server through bench/latency_proxy.py (each chunk delayed by half the round trip each way),
which stands in for a far-away bucket on a kernel without netem.

Every tool is run as a user runs it: a fresh process per sync (for tritonops that includes Python's
start-up), default settings. Each repetition of (a) and (b) goes to a new, empty prefix, removed
afterwards. Medians and the ratio to s5cmd go to bench/results/sync.json and sync.md.

    python bench/sync.py                 # full sizes, 3 repetitions
    python bench/sync.py --sizes small   # a quick run (smaller cases, 2 repetitions)
    python bench/sync.py --cases d --rtt-ms 20,50 --reps 3 --out-name sync_latency
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latency_proxy import LatencyProxy, measured_rtt_s  # noqa: E402  (bench/ is sys.path[0])

from tritonops.config import Config, RegionConfig, dump_config  # noqa: E402
from tritonops.dev import stack  # noqa: E402
from tritonops.fileio import sha256_file  # noqa: E402
from tritonops.repo.manifest import ModelManifest, VersionEntry, scan_files, write_index  # noqa: E402

TOOLS = ("tritonops", "s5cmd", "aws", "rclone")
BIN = Path(sys.executable).parent

CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ 4 ] }} ]
version_policy: {{ latest: {{ num_versions: 1 }} }}
"""
MODEL_PY = b"import triton_python_backend_utils as pb_utils\n\n\nclass TritonPythonModel:\n    pass\n"

SIZES = {
    "full": {"a": (50, 10, 256 << 10), "b": (4, 128 << 20), "c": 1000, "d": (1000, 5), "reps": 3},
    "small": {"a": (10, 10, 256 << 10), "b": (4, 16 << 20), "c": 200, "d": (200, 5), "reps": 2},
}
# The targets for tritonops: on loopback at most s5cmd's time; at 50 ms the no-op of
# 1,000 models x 5 versions at least 5x faster than s5cmd; large uploads within 1.1x the fastest.
TARGETS = {"a": "<= 1.0x s5cmd", "b": "<= 1.1x fastest", "c": "<= 1.0x s5cmd", "d": "<= 1.0x s5cmd",
           "d@50": "<= 0.2x s5cmd"}  # fmt: skip


def make_repo(root: Path, models: dict[str, dict[str, int]], seed: int = 0, versions: int = 1) -> None:
    """Models with versions 1..N each holding model.py and files of the given sizes (random bytes)."""
    rnd = os.urandom
    for name, files in models.items():
        (root / name).mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(CONFIG.format(name=name))
        entries = {}
        for v in range(1, versions + 1):
            vdir = root / name / str(v)
            vdir.mkdir()
            (vdir / "model.py").write_bytes(MODEL_PY)
            for rel, size in files.items():
                with open(vdir / rel, "wb") as f:
                    left = size
                    while left:
                        n = min(left, 8 << 20)
                        f.write(rnd(n))
                        left -= n
            entries[v] = VersionEntry(v, scan_files(vdir))
        man = ModelManifest(name, entries, sha256_file(root / name / "config.pbtxt"))
        man.save(root / name / "tritonops-manifest.json")
    write_index(root)


class Bench:
    def __init__(self, work: Path, server: str = "rclone") -> None:
        self.work = work
        self.data = work / "s3-data"
        self.creds = stack.Credentials.generate()
        self.cred_file = work / "credentials"
        self.creds.write_shared_file(self.cred_file)
        self.on_disk = server == "rclone"
        if self.on_disk:  # bucket folders before the server starts: rclone caches listings
            for t in TOOLS:
                (self.data / f"bench-{t}").mkdir(parents=True, exist_ok=True)
        self.server = stack.start_s3(self.data, work / "s3.log", self.creds, kind=server)
        self.last_cpu = (0.0, 0.0)  # CPU seconds of the last run: the tool, the S3 server
        self.last_rss_mib = 0.0  # the tool's peak resident memory in the last run
        self.endpoint = self.server.endpoint_url
        self.tool_endpoint = self.endpoint  # where the tools connect: the server, or a latency proxy
        self.rtt_ms = 0
        if not self.on_disk:
            for t in TOOLS:
                self._client().create_bucket(Bucket=f"bench-{t}")
        self._proxies: dict[int, str] = {}
        self.env = {
            **os.environ,
            **self.creds.env(),
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
            "RCLONE_CONFIG_BENCH_TYPE": "s3",
            "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
            "RCLONE_CONFIG_BENCH_ENDPOINT": self.endpoint,
            "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": self.creds.access_key,
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": self.creds.secret_key,
            "PYTHONPATH": str(ROOT),
            "NO_COLOR": "1",
        }

    def _client(self):  # noqa: ANN202 - a boto3 client
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.creds.access_key,
            aws_secret_access_key=self.creds.secret_key,
            region_name="us-east-1",
            # rclone refuses boto3's default CRC32 trailers, as it does for every tool here.
            config=Config(request_checksum_calculation="when_required", response_checksum_validation="when_required"),
        )

    def close(self) -> None:
        stack.stop(self.server.record)

    def set_rtt(self, rtt_ms: int) -> float | None:
        """Point every tool at a proxy adding ``rtt_ms`` (0: the server itself); the measured round trip."""
        self.rtt_ms = rtt_ms
        if rtt_ms == 0:
            self.tool_endpoint = self.endpoint
            return None
        if rtt_ms not in self._proxies:
            host, _, port = self.endpoint.removeprefix("http://").rpartition(":")
            proxy = LatencyProxy(host, int(port), rtt_ms / 1000).start_in_thread()
            self._proxies[rtt_ms] = f"http://127.0.0.1:{proxy.port}"
        self.tool_endpoint = self._proxies[rtt_ms]
        return measured_rtt_s(int(self.tool_endpoint.rpartition(":")[2]))

    def command(self, tool: str, src: Path, prefix: str) -> list[str]:
        bucket = f"bench-{tool}"
        endpoint = self.tool_endpoint
        if tool == "tritonops":
            cfg = Config(
                repository=src,
                regions={"bench": RegionConfig(bucket=f"s3://{bucket}/{prefix}", endpoint_url=endpoint,
                                               profile=stack.DEV_PROFILE, credentials_file=self.cred_file)},
            )  # fmt: skip
            path = self.work / f"tritonops-{prefix.replace('/', '_')}-{self.rtt_ms}.yaml"
            path.write_text(dump_config(cfg))
            return [
                sys.executable,
                "-m",
                "tritonops",
                "--config",
                str(path),
                "sync",
                "--region",
                "bench",
                "-o",
                "json",
            ]
        if tool == "s5cmd":
            return [
                str(BIN / "s5cmd"),
                "--endpoint-url",
                endpoint,
                "sync",
                f"{src}/",
                f"s3://{bucket}/{prefix}/",
            ]
        if tool == "aws":
            return [str(BIN / "aws"), "s3", "sync", str(src), f"s3://{bucket}/{prefix}", "--endpoint-url",
                    endpoint, "--only-show-errors"]  # fmt: skip
        if tool == "rclone":
            return [
                str(BIN / "rclone"),
                "sync",
                str(src),
                f"bench:{bucket}/{prefix}",
                "--config",
                "/dev/null",
                "--s3-endpoint",
                endpoint,
            ]
        raise ValueError(tool)

    def _server_cpu_s(self) -> float:
        proc = self.server.record.process()
        if proc is None:
            raise RuntimeError("the S3 server is gone")
        t = proc.cpu_times()
        return t.user + t.system

    def run(self, tool: str, src: Path, prefix: str) -> tuple[float, str]:
        cmd = self.command(tool, src, prefix)
        s0 = self._server_cpu_s()
        with tempfile.TemporaryFile() as err:
            t0 = time.perf_counter()
            p = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=err)
            killer = threading.Timer(1800, p.kill)
            killer.start()
            peak = _PeakRss(p.pid)
            assert p.stdout is not None
            out = p.stdout.read().decode()
            # wait4: this child's own CPU (its reaped children included).
            _, status, ru = os.wait4(p.pid, 0)
            dt = time.perf_counter() - t0
            killer.cancel()
            peak.stop()
            p.returncode = os.waitstatus_to_exitcode(status)
            p.stdout.close()
            err.seek(0)
            stderr = err.read().decode(errors="replace")
        s1 = self._server_cpu_s()
        self.last_cpu = (round(ru.ru_utime + ru.ru_stime, 3), round(s1 - s0, 3))
        self.last_rss_mib = round(peak.kib / 1024, 1)
        if p.returncode != 0:
            raise RuntimeError(f"{tool} failed ({p.returncode}): {stderr.strip()[-500:]}")
        return dt, out

    def count(self, tool: str, prefix: str) -> tuple[int, int]:
        if not self.on_disk:
            objs = [
                o
                for page in self._client()
                .get_paginator("list_objects_v2")
                .paginate(Bucket=f"bench-{tool}", Prefix=prefix + "/")
                for o in page.get("Contents", [])
            ]
            return len(objs), sum(int(o["Size"]) for o in objs)
        d = self.data / f"bench-{tool}" / prefix
        files = [p for p in d.rglob("*") if p.is_file()]
        return len(files), sum(p.stat().st_size for p in files)

    def drop(self, tool: str, prefix: str) -> None:
        """Through the server, on either kind: rclone would keep listing files removed beside it."""
        c = self._client()
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=f"bench-{tool}", Prefix=prefix + "/"):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                c.delete_objects(Bucket=f"bench-{tool}", Delete={"Objects": keys})


class _PeakRss:
    """The peak resident memory of one process: VmHWM from /proc/PID/status, read every 20 ms until
    it exits (wait4's ru_maxrss would not do: after fork and exec it counts the forking parent's memory)."""

    def __init__(self, pid: int) -> None:
        self.kib = 0
        self._path = f"/proc/{pid}/status"
        self._done = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()

    def _poll(self) -> None:
        while not self._done.is_set():
            try:
                with open(self._path) as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            self.kib = max(self.kib, int(line.split()[1]))
            except OSError:
                return
            self._done.wait(0.02)

    def stop(self) -> None:
        self._done.set()
        self._t.join()


def case_first_sync(b: Bench, name: str, src: Path, reps: int) -> dict:
    times: dict[str, list[float]] = {t: [] for t in TOOLS}
    cpu: dict[str, list[tuple[float, float]]] = {t: [] for t in TOOLS}
    rss: dict[str, list[float]] = {t: [] for t in TOOLS}  # the tool's peak RSS per run, MiB
    counts: dict[str, tuple[int, int]] = {}
    for r in range(reps):
        for tool in TOOLS:  # interleaved, so load on the shared machine hits every tool alike
            prefix = f"{name}-{r}"
            dt, _ = b.run(tool, src, prefix)
            times[tool].append(dt)
            cpu[tool].append(b.last_cpu)
            rss[tool].append(b.last_rss_mib)
            counts[tool] = b.count(tool, prefix)
            b.drop(tool, prefix)
            print(f"  {name} rep {r} {tool:9s} {dt:7.2f} s  ({counts[tool][0]} objects)", file=sys.stderr)
    return {"times_s": times, "cpu_s": cpu, "rss_mib": rss, "objects": {t: c[0] for t, c in counts.items()},
            "bytes": {t: c[1] for t, c in counts.items()}}  # fmt: skip


def case_noop(b: Bench, name: str, src: Path, reps: int) -> dict:
    times: dict[str, list[float]] = {t: [] for t in TOOLS}
    cpu: dict[str, list[tuple[float, float]]] = {t: [] for t in TOOLS}
    rss: dict[str, list[float]] = {t: [] for t in TOOLS}  # the tool's peak RSS per run, MiB
    first: dict[str, float] = {}
    uploads: dict[str, list[int]] = {t: [] for t in TOOLS}
    for tool in TOOLS:
        first[tool], _ = b.run(tool, src, name)
        print(f"  {name} first sync {tool:9s} {first[tool]:7.2f} s", file=sys.stderr)
    for r in range(reps):
        for tool in TOOLS:
            dt, out = b.run(tool, src, name)
            times[tool].append(dt)
            cpu[tool].append(b.last_cpu)
            rss[tool].append(b.last_rss_mib)
            if tool == "tritonops":
                uploads[tool].append(json.loads(out)["uploaded_files"])
            print(f"  {name} re-sync rep {r} {tool:9s} {dt:7.2f} s", file=sys.stderr)
    for tool in TOOLS:
        b.drop(tool, name)
    return {"times_s": times, "cpu_s": cpu, "rss_mib": rss, "first_sync_s": first,
            "tritonops_uploads": uploads["tritonops"]}  # fmt: skip


def summarize(results: dict) -> None:
    for case in results["cases"].values():
        tools = [t for t in TOOLS if t in case["times_s"]]
        med = {t: statistics.median(case["times_s"][t]) for t in tools}
        case["median_s"] = {t: round(v, 3) for t, v in med.items()}
        case["ratio_to_s5cmd"] = {t: round(v / med["s5cmd"], 2) for t, v in med.items()}
        case["ratio_to_fastest"] = {t: round(v / min(med.values()), 2) for t, v in med.items()}
        case["times_s"] = {t: [round(x, 3) for x in case["times_s"][t]] for t in tools}
        if "cpu_s" in case:  # per run: (the tool's CPU seconds, the S3 server's)
            cpu = {t: case["cpu_s"][t] for t in tools}
            case["median_tool_cpu_s"] = {t: round(statistics.median(c[0] for c in cpu[t]), 2) for t in tools}
            case["median_server_cpu_s"] = {t: round(statistics.median(c[1] for c in cpu[t]), 2) for t in tools}
        if "rss_mib" in case:
            case["median_rss_mib"] = {t: round(statistics.median(case["rss_mib"][t]), 1) for t in tools}


def write_md(results: dict, path: Path) -> None:
    tools = results["tools_run"]
    names = {"tritonops": "tritonops", "s5cmd": "s5cmd", "aws": "aws s3 sync", "rclone": "rclone sync"}
    lines = [
        "# tritonops sync vs aws s3 sync, s5cmd sync, rclone sync",
        "",
        f"Same run, same local S3 server (`{results['server']}`), each tool into its own bucket, one fresh "
        f"process per sync, default settings. Machine: {results['machine']}. Sizes: `{results['sizes']}`, "
        f"{results['reps']} repetitions; medians in seconds (ratio to s5cmd; lower is better). "
        f"Load: {results['load_before']} at the start, {results['load_after']} at the end "
        "(a machine shared with other work: compare tools within a row, not across runs).",
        "",
        "A round trip of 0 ms is loopback; 20 and 50 ms go through `bench/latency_proxy.py` "
        "(measured round trip of one small request, server time included: "
        + (", ".join(f"{k} ms -> {v * 1000:.0f} ms" for k, v in results["measured_rtt_s"].items()) or "n/a")
        + ").",
        "",
        "| case | rtt | target | tritonops: | " + " | ".join(names[t] for t in tools) + " |",
        "| --- | --- | --- | --- | " + " | ".join("---" for _ in tools) + " |",
    ]
    for case in results["cases"].values():
        cells = [f"{case['median_s'][t]:.2f} ({case['ratio_to_s5cmd'][t]:.2f}x)" for t in tools]
        row = [case["label"], f"{case['rtt_ms']} ms", case["target"], verdict(case), *cells]
        lines.append("| " + " | ".join(row) + " |")
    cases = results["cases"].values()
    lines += _side_table(
        [c for c in cases if "median_server_cpu_s" in c], tools, names,
        "CPU seconds per run, medians: the tool's own (its process and children) / the S3 server's, measured "
        "around each run. The server is one Python process: when its CPU is close to the wall time, the "
        "run was bound by the server, and what a tool adds is the time before its first request and after "
        "its last.",
        lambda c, t: f"{c['median_tool_cpu_s'][t]:.2f} / {c['median_server_cpu_s'][t]:.2f}",
    )  # fmt: skip
    lines += _side_table(
        [c for c in cases if "median_rss_mib" in c], tools, names,
        "Peak resident memory of the tool's process per run (VmHWM, read every 20 ms), MiB, medians.",
        lambda c, t: f"{c['median_rss_mib'][t]:.0f}",
    )  # fmt: skip
    cmd = results.get("command") or " ".join(["python", "bench/sync.py", *sys.argv[1:]])
    lines += ["", f"Raw times and object counts: `{path.stem}.json`. Reproduce: `{cmd}`", ""]
    path.write_text("\n".join(lines))


def _side_table(rows: list[dict], tools: list[str], names: dict[str, str], intro: str, cell) -> list[str]:  # noqa: ANN001
    """A table of one figure per case and tool, after an intro paragraph; nothing when no case has it."""
    if not rows:
        return []
    out = ["", intro, "", "| case | rtt | " + " | ".join(names[t] for t in tools) + " |",
           "| --- | --- | " + " | ".join("---" for _ in tools) + " |"]  # fmt: skip
    for case in rows:
        cells = [cell(case, t) for t in tools]
        out.append("| " + " | ".join([case["label"], f"{case['rtt_ms']} ms", *cells]) + " |")
    return out


def verdict(case: dict) -> str:
    """Whether tritonops met the case's target, with the ratio the target is about."""
    target = case["target"]
    if not target:
        return ""
    limit = float(target.split()[1].rstrip("x"))  # "<= 1.1x fastest"
    what = target.split()[2]
    r = case["ratio_to_fastest" if what == "fastest" else "ratio_to_s5cmd"]["tritonops"]
    return f"{r:.2f}x {what}, {'met' if r <= limit else 'missed'}"


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min)"


def run_cases(b: Bench, work: Path, size: dict, cases: str, reps: int, results: dict, rtt: int) -> None:
    def add(key: str, label: str, data: dict) -> None:
        target = TARGETS.get(f"{key}@{rtt}", TARGETS[key] if rtt == 0 else "")
        if key == "d" and rtt and size["d"][0] < 1000:
            target = ""  # the round-trip target is about 1,000 models
        results["cases"][f"{key}@{rtt}"] = {"label": f"{key}: {label}", "rtt_ms": rtt, "target": target, **data}

    if "a" in cases:
        n_models, n_files, fsize = size["a"]
        src = work / "repo-a"
        make_repo(src, {f"m{i:03d}": {f"w{j:02d}.bin": fsize for j in range(n_files)} for i in range(n_models)})
        print(f"case a @{rtt} ms: {n_models * n_files} files of ~{fsize >> 10} KiB", file=sys.stderr)
        add("a", f"{n_models * n_files} files of 256 KiB in {n_models} models", case_first_sync(b, "a", src, reps))
        shutil.rmtree(src)
    if "b" in cases:
        n, fsize = size["b"]
        src = work / "repo-b"
        make_repo(src, {"big": {f"part{j}.bin": fsize for j in range(n)}})
        print(f"case b @{rtt} ms: {n} files of {fsize >> 20} MiB", file=sys.stderr)
        add("b", f"{n} files of {fsize >> 20} MiB", case_first_sync(b, "b", src, reps))
        shutil.rmtree(src)
    if "c" in cases:
        n = size["c"]
        src = work / "repo-c"
        make_repo(src, {f"m{i:04d}": {} for i in range(n)})
        print(f"case c @{rtt} ms: no-op re-sync of {n} models", file=sys.stderr)
        add("c", f"no-op re-sync, {n} models", case_noop(b, f"c{rtt}", src, reps))
        shutil.rmtree(src)
    if "d" in cases:
        n, versions = size["d"]
        src = work / "repo-d"
        make_repo(src, {f"m{i:04d}": {"w.bin": 1024} for i in range(n)}, versions=versions)
        print(f"case d @{rtt} ms: {n} models x {versions} versions", file=sys.stderr)
        data = case_noop(b, f"d{rtt}", src, reps)
        first = data.pop("first_sync_s")
        results["cases"][f"d-first@{rtt}"] = {
            "label": f"d: first sync, {n} models x {versions} versions (1 run)", "rtt_ms": rtt, "target": "",
            "times_s": {t: [v] for t, v in first.items()},
        }  # fmt: skip
        add("d", f"no-op re-sync, {n} models x {versions} versions", data)
        shutil.rmtree(src)


def main() -> None:
    global TOOLS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", choices=sorted(SIZES), default="full")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--cases", default="abc")
    ap.add_argument("--rtt-ms", default="0", help="round trips to add, comma-separated (0: loopback)")
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of " + ",".join(TOOLS))
    ap.add_argument(
        "--server",
        choices=["rclone", "moto"],
        default="moto",
        help="the local S3 server (moto in memory, or rclone serve s3 on disk)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--out-name", default="sync", help="results go to OUT/NAME.json and OUT/NAME.md")
    args = ap.parse_args()
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    # A SIGTERM (timeout, Ctrl-C from a wrapper) still stops the S3 server and removes /tmp data.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    TOOLS = tuple(t for t in TOOLS if t in args.tools.split(","))
    assert "s5cmd" in TOOLS, "ratios are to s5cmd: keep it in --tools"
    size = SIZES[args.sizes]
    reps = args.reps or int(size["reps"])  # type: ignore[call-overload]
    work = Path(tempfile.mkdtemp(prefix="tritonops-bench-sync-", dir="/tmp"))
    results: dict = {
        "format_version": 2,
        "sizes": args.sizes,
        "reps": reps,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_before": load_note(),
        "tools_run": list(TOOLS),
        "tools": {
            "s5cmd": subprocess.run(
                [str(BIN / "s5cmd"), "version"], capture_output=True, text=True
            ).stdout.strip(),
            "aws": subprocess.run(
                [str(BIN / "aws"), "--version"], capture_output=True, text=True
            ).stdout.strip(),
            "rclone": subprocess.run(
                [str(BIN / "rclone"), "version"], capture_output=True, text=True
            ).stdout.splitlines()[0],
        },
        "command": " ".join(["python", "bench/sync.py", *sys.argv[1:]]),
        "measured_rtt_s": {},
        "cases": {},
    }
    results["server"] = args.server
    b = Bench(work, args.server)
    try:
        for rtt in (int(x) for x in args.rtt_ms.split(",")):
            measured = b.set_rtt(rtt)
            if measured is not None:
                results["measured_rtt_s"][str(rtt)] = round(measured, 4)
            run_cases(b, work, size, args.cases, reps, results, rtt)
    finally:
        b.close()
        shutil.rmtree(work, ignore_errors=True)
    results["load_after"] = load_note()
    summarize(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.out_name}.json").write_text(json.dumps(results, indent=2) + "\n")
    write_md(results, args.out / f"{args.out_name}.md")
    print((args.out / f"{args.out_name}.md").read_text())


if __name__ == "__main__":
    main()
