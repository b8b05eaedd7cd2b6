"""How far fp32 ONNX is from scikit-learn on its bundled datasets: the table behind the gate's
defaults for probabilities (bench/results/gate_spread.md; docs/convert.md, "The accuracy gate").

    python bench/gate_spread.py      # one line per dataset x estimator x (with/without StandardScaler)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tritonops.convert.accuracy import output_errors  # noqa: E402


def estimators(classifier: bool) -> list[tuple[str, Any]]:
    from sklearn import ensemble, linear_model

    if classifier:
        return [
            ("rf", ensemble.RandomForestClassifier(random_state=0)),
            ("et", ensemble.ExtraTreesClassifier(random_state=0)),
            ("gb", ensemble.GradientBoostingClassifier(random_state=0)),
            ("lr", linear_model.LogisticRegression(max_iter=5000)),
        ]
    return [
        ("rf", ensemble.RandomForestRegressor(random_state=0)),
        ("gb", ensemble.GradientBoostingRegressor(random_state=0)),
        ("ridge", linear_model.Ridge()),
    ]


def measure(est: Any, x: np.ndarray, classifier: bool) -> str:
    import onnxruntime as ort
    from skl2onnx import to_onnx

    options = {id(est): {"zipmap": False}} if classifier else None
    m = to_onnx(est, x[:1], options=options, target_opset=17)
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = s.run(None, {s.get_inputs()[0].name: x})
    if classifier:
        proba = est.predict_proba(x)
        lab = output_errors("label", est.predict(x), outs[0])
        pr = output_errors("p", proba.astype(np.float32), outs[1])
        rows_off = float(np.mean(np.abs(proba - outs[1]).max(axis=1) > 1e-4))
        return (
            f"label_mismatch={lab.mismatch:.4f} prob max_abs={pr.max_abs:.2e} "
            f"p99_abs={pr.p99_abs:.2e} rows_off={rows_off:.3f}"
        )
    sc = output_errors("y", est.predict(x).astype(np.float32).reshape(len(x), -1), outs[0])
    return f"score norm_max={sc.norm_max:.2e} norm_p99={sc.norm_p99:.2e} p99_rel={sc.p99_rel:.2e}"


def main() -> None:
    from sklearn import datasets
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    for name in ("iris", "wine", "breast_cancer", "diabetes"):
        x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
        x = x.astype(np.float32)
        classifier = name != "diabetes"
        x_train, x_test, y_train, _ = train_test_split(x, y, test_size=0.3, random_state=0)
        every = np.concatenate([x_test, x_train])
        for short, e in estimators(classifier):
            for scaled in (True, False):
                est = make_pipeline(StandardScaler(), e) if scaled else e
                est.fit(x_train, y_train)
                print(f"{name:14s} {short:5s} scaled={scaled!s:5s} n={len(every)} {measure(est, every, classifier)}")


if __name__ == "__main__":
    main()
