"""Ask every region's Triton for one answer from each model it serves, and check it.

Used by `make demo`. For each region in tritonops.yaml: the models READY on its servers, one request
each (inputs generated from the model's metadata) sent through the region's Envoy when it has one
(`route:`; see docs/routing.md), and for `mlp*` models the answer compared with the fp32 ONNX file in
the local repository run by onnxruntime.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient

from tritonops.config import load_config

_NP = {"FP32": np.float32, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32}


def main() -> int:
    cfg = load_config(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
    rng = np.random.default_rng(0)
    failures = 0
    for region_name, region in sorted(cfg.regions.items()):
        for server in region.servers:
            assert server.http_url
            client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
            ready = sorted({m["name"] for m in client.get_model_repository_index() if m.get("state") == "READY"})
            via = f" (requests through Envoy at {region.route.listen})" if region.route else ""
            print(f"{region_name} / {server.name}: serving {', '.join(ready) or 'nothing'}{via}")
            if region.route:
                client.close()
                client = httpclient.InferenceServerClient(region.route.listen)
            for model in ready:
                meta = client.get_model_metadata(model)
                inputs = []
                feed = {}
                for spec in meta["inputs"]:
                    shape = [2 if d == -1 else d for d in spec["shape"]]
                    x = rng.uniform(0, 1, size=shape).astype(_NP[spec["datatype"]])
                    feed[spec["name"]] = x
                    inp = httpclient.InferInput(spec["name"], shape, spec["datatype"])
                    inp.set_data_from_numpy(x)
                    inputs.append(inp)
                res = client.infer(model, inputs)
                out = meta["outputs"][0]["name"]
                y = res.as_numpy(out)
                assert y is not None
                first = [round(float(v), 4) for v in y.ravel()[:3]]
                line = f"    {model:<18} {out} shape={list(y.shape)} first={first}"
                ref_path = cfg.repository_path / "mlp"
                if model.startswith("mlp") and ref_path.exists():
                    import onnxruntime as ort

                    newest = max(int(p.name) for p in ref_path.iterdir() if p.name.isdigit())
                    sess = ort.InferenceSession(str(ref_path / str(newest) / "model.onnx"))
                    ref = sess.run([out], feed)[0]
                    scale = float(np.abs(ref).max()) or 1.0
                    err = float(np.abs(y.astype(np.float32) - ref).max()) / scale
                    ok = err < 0.1
                    failures += 0 if ok else 1
                    line += f"  vs fp32 onnxruntime: normalised max error {err:.1e} {'ok' if ok else 'TOO LARGE'}"
                print(line)
            client.close()
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
