"""Factory for converters/iris_sklearn.yaml: a classifier trained on the iris data shipped with
scikit-learn (no download), deterministically (fixed random_state, fixed split).

``python converters/iris_sklearn.py`` writes iris_val.npz / iris_calib.npz beside this file
(held-out and training samples), which the recipe uses for the accuracy gate and int8 calibration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SEED = 0


def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    x, y = load_iris(return_X_y=True)
    return train_test_split(x.astype(np.float32), y, test_size=0.3, random_state=SEED, stratify=y)  # type: ignore[return-value]


def build() -> Any:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, _, y_train, _ = _split()
    clf = make_pipeline(
        StandardScaler(), MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=2000, random_state=SEED)
    )
    return clf.fit(x_train, y_train)


if __name__ == "__main__":
    x_train, x_test, _, _ = _split()
    here = Path(__file__).parent
    np.savez(here / "iris_val.npz", input=x_test)
    np.savez(here / "iris_calib.npz", input=x_train)
    print(
        f"wrote {here / 'iris_val.npz'} ({len(x_test)} samples), "
        f"{here / 'iris_calib.npz'} ({len(x_train)} samples)"
    )
