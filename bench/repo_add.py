"""`tritonops repo add` on a large model file: wall time and peak memory, against `cp` + `sha256sum`.

Usage: python bench/repo_add.py [--size-mib 1024] [--runs 3] [--work /tmp]

Each command runs as its own process; its peak RSS comes from the kernel (``os.wait4`` rusage
``ru_maxrss``), so nothing samples and nothing is missed. The model file is random bytes (not
sparse: a sparse file reads faster than real weights). All runs read the file from the page cache
after the first, for every tool alike. Writes bench/results/repo_add.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent

PY_CONFIG = """backend: "python"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""
MODEL_PY = "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n"


def run(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Wall seconds and peak RSS bytes of one process (and, for a shell, its largest child)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode() if p.stderr else ""
    if p.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({p.returncode}): {err.strip()}")
    return {"wall_s": wall, "peak_rss_bytes": ru.ru_maxrss * 1024}


def make_model(folder: Path, size_mib: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(MODEL_PY)
    with open(folder / "weights.bin", "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))
    return folder


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def make_onnx_model(folder: Path, size_mib: int) -> Path:
    """model.onnx holding a ``size_mib`` MiB weight inline (raw_data), written without holding it in memory.

    The graph (Y = X + 1, X: [N, 3]) is serialised by onnx; the big initializer is appended to the
    graph message in protobuf wire format, streaming its bytes (GraphProto.initializer = 5,
    TensorProto.raw_data = 9, ModelProto.graph = 7).
    """
    from onnx import TensorProto, helper

    folder.mkdir(parents=True)
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 3])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph([helper.make_node("Add", ["X", "one"], ["Y"])], "big", [x], [y], [one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    g = model.graph.SerializeToString()
    model.ClearField("graph")
    head = model.SerializeToString()
    n_floats = (size_mib << 20) // 4
    tensor_head = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[n_floats]).SerializeToString()
    raw_len = n_floats * 4
    tensor_len = len(tensor_head) + 1 + len(_varint(raw_len)) + raw_len
    init_entry_head = b"\x2a" + _varint(tensor_len) + tensor_head + b"\x4a" + _varint(raw_len)
    graph_len = len(g) + len(init_entry_head) + raw_len
    path = folder / "model.onnx"
    with open(path, "wb") as f:
        f.write(head + b"\x3a" + _varint(graph_len) + g + init_entry_head)
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()))
    args = ap.parse_args()

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "AWS_EC2_METADATA_DISABLED": "true"}
    tritonops = [sys.executable, "-m", "tritonops"]
    work = Path(tempfile.mkdtemp(prefix="bench-repo-add-", dir=args.work))
    try:
        src = make_model(work / "src", args.size_mib)
        onnx_src = work / "onnx-src"
        make_onnx_model(onnx_src, args.size_mib)
        tiny = work / "tiny"
        tiny.mkdir()
        (tiny / "model.py").write_text(MODEL_PY)
        (tiny / "weights.bin").write_bytes(os.urandom(1024))
        cfg = work / "config.pbtxt"
        cfg.write_text(PY_CONFIG)
        results: dict[str, list[dict[str, Any]]] = {
            "tritonops repo add": [],
            "tritonops repo add (model.onnx, config generated from the graph)": [],
            "cp -r + sha256sum": [],
            "tritonops repo validate": [],
            "tritonops repo add, 1 KiB file (baseline)": [],
        }
        for i in range(args.runs):
            repo = work / f"repo{i}"
            results["tritonops repo add"].append(
                run(
                    [
                        *tritonops,
                        "repo",
                        "add",
                        "big",
                        "--from",
                        str(src),
                        "--config",
                        str(cfg),
                        "--repo",
                        str(repo),
                    ],
                    env,
                )
            )
            results["tritonops repo validate"].append(run([*tritonops, "repo", "validate", str(repo)], env))
            shutil.rmtree(repo)
            results["tritonops repo add (model.onnx, config generated from the graph)"].append(
                run(
                    [*tritonops, "repo", "add", "big-onnx", "--from", str(onnx_src), "--repo", str(repo)], env
                )
            )
            shutil.rmtree(repo)
            dest = work / f"cp{i}"
            # What a person does by hand: copy the folder in, then hash it for a checksum file.
            results["cp -r + sha256sum"].append(
                run(
                    [
                        "sh",
                        "-c",
                        f'cp -r "{src}" "{dest}" && sync "{dest}/weights.bin" && '
                        f'sha256sum "{dest}"/* > /dev/null',
                    ]
                )
            )
            shutil.rmtree(dest)
            # Same command on a tiny file: the interpreter + imports, which do not depend on the file size.
            results["tritonops repo add, 1 KiB file (baseline)"].append(
                run(
                    [
                        *tritonops,
                        "repo",
                        "add",
                        "tiny",
                        "--from",
                        str(tiny),
                        "--config",
                        str(cfg),
                        "--repo",
                        str(work / f"tiny{i}"),
                    ],
                    env,
                )
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary = {
        name: {
            "median_wall_s": round(statistics.median(r["wall_s"] for r in rs), 3),
            "median_peak_rss_mib": round(statistics.median(r["peak_rss_bytes"] for r in rs) / 2**20, 1),
            "runs": rs,
        }
        for name, rs in results.items()
    }
    add, manual = summary["tritonops repo add"], summary["cp -r + sha256sum"]
    doc = {
        "benchmark": "repo_add",
        "file_size_bytes": args.size_mib << 20,
        "runs": args.runs,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "system": platform.platform(),
            # Wall times compare only within one run on a quiet machine; peak RSS does not depend on load.
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "results": summary,
        "ratio_wall_repo_add_vs_cp_sha256sum": round(add["median_wall_s"] / manual["median_wall_s"], 2),
        "peak_rss_over_baseline_mib": round(
            add["median_peak_rss_mib"]
            - summary["tritonops repo add, 1 KiB file (baseline)"]["median_peak_rss_mib"],
            1,
        ),
    }
    out = HERE / "results" / "repo_add.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        f"# repo add on a {args.size_mib} MiB file ({args.runs} runs, medians)",
        "",
        "| command | wall s | peak RSS MiB |",
        "| --- | --- | --- |",
        *[f"| {k} | {v['median_wall_s']} | {v['median_peak_rss_mib']} |" for k, v in summary.items()],
        "",
        f"`repo add` / (`cp -r` + `sha256sum`) wall time: {doc['ratio_wall_repo_add_vs_cp_sha256sum']}x. "
        f"Peak RSS above the same command on a 1 KiB file: {doc['peak_rss_over_baseline_mib']} MiB "
        "(hashing is streamed in 1 MiB chunks while copying; memory does not grow with the file).",
        "",
        f"Machine: {doc['machine']}.",
        f"Command: `python bench/repo_add.py --size-mib {args.size_mib} --runs {args.runs}`.",
    ]
    (HERE / "results" / "repo_add.md").write_text("\n".join(lines) + "\n")
    print(
        json.dumps(
            {k: {kk: vv for kk, vv in v.items() if kk != "runs"} for k, v in summary.items()}, indent=2
        )
    )


if __name__ == "__main__":
    main()
