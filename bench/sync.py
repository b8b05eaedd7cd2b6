"""Benchmark: `tritonops sync` vs `aws s3 sync`, `s5cmd sync` and `rclone sync`, same server, same run.

One local S3 server for every tool (`moto_server` by default; `--server rclone` for `rclone serve s3`,
which stalls under parallel PUTs on the 2-core machines here); each tool writes into its own bucket. Cases:

  a. 500 files of 256 KiB in 50 models (first sync into an empty prefix)
  b. 4 files of 128 MiB (first sync into an empty prefix)
  c. a no-op re-sync of a repository of 1,000 models (small files), after one untimed first sync

Every tool is run as a user runs it: a fresh process per sync (for tritonops that includes Python's
start-up), default settings. Each repetition of (a) and (b) goes to a new, empty prefix, removed
afterwards. Medians and the ratio to s5cmd go to bench/results/sync.json and sync.md.

    python bench/sync.py                 # full sizes, 3 repetitions
    python bench/sync.py --sizes small   # a quick run (smaller cases, 2 repetitions)
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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
    "full": {"a": (50, 10, 256 << 10), "b": (4, 128 << 20), "c": 1000, "reps": 3},
    "small": {"a": (10, 10, 256 << 10), "b": (4, 16 << 20), "c": 200, "reps": 2},
}


def make_repo(root: Path, models: dict[str, dict[str, int]], seed: int = 0) -> None:
    """Models with version 1 holding model.py and files of the given sizes (random bytes)."""
    rnd = os.urandom
    for name, files in models.items():
        vdir = root / name / "1"
        vdir.mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(CONFIG.format(name=name))
        (vdir / "model.py").write_bytes(MODEL_PY)
        for rel, size in files.items():
            with open(vdir / rel, "wb") as f:
                left = size
                while left:
                    n = min(left, 8 << 20)
                    f.write(rnd(n))
                    left -= n
        man = ModelManifest(
            name, {1: VersionEntry(1, scan_files(vdir))}, sha256_file(root / name / "config.pbtxt")
        )
        man.save(root / name / "tritonops-manifest.json")
    write_index(root)


class Bench:
    def __init__(self, work: Path, server: str = "rclone") -> None:
        self.work = work
        self.data = work / "s3-data"
        self.creds = stack.Credentials.generate()
        self.cred_file = work / "credentials"
        self.creds.write_shared_file(self.cred_file)
        self.server = stack.start_s3(self.data, work / "s3.log", self.creds, kind=server)
        self.endpoint = self.server.endpoint_url
        self.on_disk = server == "rclone"
        for t in TOOLS:
            if self.on_disk:
                (self.data / f"bench-{t}").mkdir(parents=True, exist_ok=True)
            else:
                self._client().create_bucket(Bucket=f"bench-{t}")
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

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.creds.access_key,
            aws_secret_access_key=self.creds.secret_key,
            region_name="us-east-1",
        )

    def close(self) -> None:
        stack.stop(self.server.record)

    def command(self, tool: str, src: Path, prefix: str) -> list[str]:
        bucket = f"bench-{tool}"
        if tool == "tritonops":
            cfg = Config(
                repository=src,
                regions={"bench": RegionConfig(bucket=f"s3://{bucket}/{prefix}", endpoint_url=self.endpoint,
                                               profile=stack.DEV_PROFILE, credentials_file=self.cred_file)},
            )  # fmt: skip
            path = self.work / f"tritonops-{prefix.replace('/', '_')}.yaml"
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
                self.endpoint,
                "sync",
                f"{src}/",
                f"s3://{bucket}/{prefix}/",
            ]
        if tool == "aws":
            return [str(BIN / "aws"), "s3", "sync", str(src), f"s3://{bucket}/{prefix}", "--endpoint-url",
                    self.endpoint, "--only-show-errors"]  # fmt: skip
        if tool == "rclone":
            return [
                str(BIN / "rclone"),
                "sync",
                str(src),
                f"bench:{bucket}/{prefix}",
                "--config",
                "/dev/null",
            ]
        raise ValueError(tool)

    def run(self, tool: str, src: Path, prefix: str) -> tuple[float, str]:
        cmd = self.command(tool, src, prefix)
        t0 = time.perf_counter()
        p = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=1800)
        dt = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"{tool} failed ({p.returncode}): {p.stderr.strip()[-500:]}")
        return dt, p.stdout

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
        if not self.on_disk:
            c = self._client()
            for page in c.get_paginator("list_objects_v2").paginate(
                Bucket=f"bench-{tool}", Prefix=prefix + "/"
            ):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    c.delete_objects(Bucket=f"bench-{tool}", Delete={"Objects": keys})
            return
        shutil.rmtree(self.data / f"bench-{tool}" / prefix, ignore_errors=True)


def case_first_sync(b: Bench, name: str, src: Path, reps: int) -> dict:
    times: dict[str, list[float]] = {t: [] for t in TOOLS}
    counts: dict[str, tuple[int, int]] = {}
    for r in range(reps):
        for tool in TOOLS:  # interleaved, so load on the shared machine hits every tool alike
            prefix = f"{name}-{r}"
            dt, _ = b.run(tool, src, prefix)
            times[tool].append(dt)
            counts[tool] = b.count(tool, prefix)
            b.drop(tool, prefix)
            print(f"  {name} rep {r} {tool:9s} {dt:7.2f} s  ({counts[tool][0]} objects)", file=sys.stderr)
    return {"times_s": times, "objects": {t: c[0] for t, c in counts.items()},
            "bytes": {t: c[1] for t, c in counts.items()}}  # fmt: skip


def case_noop(b: Bench, name: str, src: Path, reps: int) -> dict:
    times: dict[str, list[float]] = {t: [] for t in TOOLS}
    first: dict[str, float] = {}
    uploads: dict[str, list[int]] = {t: [] for t in TOOLS}
    for tool in TOOLS:
        first[tool], _ = b.run(tool, src, name)
        print(f"  {name} first sync {tool:9s} {first[tool]:7.2f} s", file=sys.stderr)
    for r in range(reps):
        for tool in TOOLS:
            dt, out = b.run(tool, src, name)
            times[tool].append(dt)
            if tool == "tritonops":
                uploads[tool].append(json.loads(out)["uploaded_files"])
            print(f"  {name} re-sync rep {r} {tool:9s} {dt:7.2f} s", file=sys.stderr)
    for tool in TOOLS:
        b.drop(tool, name)
    return {"times_s": times, "first_sync_s": first, "tritonops_uploads": uploads["tritonops"]}


def summarize(results: dict) -> None:
    for case in results["cases"].values():
        med = {t: statistics.median(v) for t, v in case["times_s"].items()}
        case["median_s"] = {t: round(v, 3) for t, v in med.items()}
        case["ratio_to_s5cmd"] = {t: round(v / med["s5cmd"], 2) for t, v in med.items()}
        case["times_s"] = {t: [round(x, 3) for x in v] for t, v in case["times_s"].items()}


def write_md(results: dict, path: Path) -> None:
    lines = [
        "# tritonops sync vs aws s3 sync, s5cmd sync, rclone sync",
        "",
        f"Same run, same local S3 server (`{results['server']}`), each tool into its own bucket, one fresh "
        f"process per sync, default settings. Machine: {results['machine']}. Sizes: `{results['sizes']}`, "
        f"{results['reps']} repetitions; medians in seconds (ratio to s5cmd; lower is better).",
        "",
        "| case | target | tritonops | s5cmd | aws s3 sync | rclone sync |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    targets = {"a": "<= 1.5x s5cmd", "b": "<= 1.5x s5cmd", "c": "<= 0.2x s5cmd"}
    for key, case in results["cases"].items():
        cells = [f"{case['median_s'][t]:.2f} ({case['ratio_to_s5cmd'][t]:.2f}x)" for t in TOOLS]
        lines.append(f"| {key}: {case['label']} | {targets[key[0]]} | " + " | ".join(cells) + " |")
    cmd = " ".join(["python", "bench/sync.py", *sys.argv[1:]])
    lines += ["", f"Raw times and object counts: `sync.json`. Reproduce: `{cmd}`", ""]
    path.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", choices=sorted(SIZES), default="full")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--cases", default="abc")
    ap.add_argument(
        "--server",
        choices=["rclone", "moto"],
        default="moto",
        help="the local S3 server (moto in memory, or rclone serve s3 on disk)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    # A SIGTERM (timeout, Ctrl-C from a wrapper) still stops the S3 server and removes /tmp data.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    size = SIZES[args.sizes]
    reps = args.reps or int(size["reps"])  # type: ignore[call-overload]
    work = Path(tempfile.mkdtemp(prefix="tritonops-bench-sync-", dir="/tmp"))
    results: dict = {
        "format_version": 1,
        "sizes": args.sizes,
        "reps": reps,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
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
        "cases": {},
    }
    results["server"] = args.server
    b = Bench(work, args.server)
    try:
        if "a" in args.cases:
            n_models, n_files, fsize = size["a"]  # type: ignore[misc]
            src = work / "repo-a"
            make_repo(src, {f"m{i:03d}": {f"w{j:02d}.bin": fsize for j in range(n_files)}
                            for i in range(n_models)})  # fmt: skip
            print(
                f"case a: {n_models * n_files} files of ~{fsize >> 10} KiB in {n_models} models",
                file=sys.stderr,
            )
            results["cases"]["a"] = {"label": f"{n_models * n_files} files of 256 KiB in {n_models} models",
                                     **case_first_sync(b, "a", src, reps)}  # fmt: skip
            shutil.rmtree(src)
        if "b" in args.cases:
            n, fsize = size["b"]  # type: ignore[misc]
            src = work / "repo-b"
            make_repo(src, {"big": {f"part{j}.bin": fsize for j in range(n)}})
            print(f"case b: {n} files of {fsize >> 20} MiB", file=sys.stderr)
            results["cases"]["b"] = {
                "label": f"{n} files of {fsize >> 20} MiB",
                **case_first_sync(b, "b", src, reps),
            }
            shutil.rmtree(src)
        if "c" in args.cases:
            n = size["c"]
            src = work / "repo-c"
            make_repo(src, {f"m{i:04d}": {} for i in range(n)})  # type: ignore[call-overload]
            print(f"case c: no-op re-sync of {n} models", file=sys.stderr)
            results["cases"]["c"] = {"label": f"no-op re-sync, {n} models", **case_noop(b, "c", src, reps)}
            shutil.rmtree(src)
    finally:
        b.close()
        shutil.rmtree(work, ignore_errors=True)
    summarize(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sync.json").write_text(json.dumps(results, indent=2) + "\n")
    write_md(results, args.out / "sync.md")
    print((args.out / "sync.md").read_text())


if __name__ == "__main__":
    main()
