"""Factory for converters/mlp.yaml: a 3-layer MLP, deterministic weights (seeded).

Wide enough (512 -> 1024 -> 1024 -> 16) that int8 matters on a CPU: the matrix multiplications
dominate the run time, which is what quantisation speeds up.
"""

from __future__ import annotations

import torch

IN_FEATURES = 512
HIDDEN = 1024
CLASSES = 16


def build() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(IN_FEATURES, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, CLASSES),
    ).eval()
