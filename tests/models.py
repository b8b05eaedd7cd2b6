"""The test models: python-backend model.py sources the tests publish and load, in one place.

Each test used to write its own. :func:`python_model` is the one that serves: ``OUTPUT = INPUT x
factor`` (float32), so each version can answer differently and a test can tell which one serves; the
options add what some tests need (an ``initialize`` statement, latency, failing requests).
``STUB_MODEL_PY`` is a model.py that is never served (the validator and the local repository only
look at it).
"""

from __future__ import annotations

STUB_MODEL_PY = "import triton_python_backend_utils as pb_utils\n\n\nclass TritonPythonModel:\n    pass\n"


def python_model(
    factor: float,
    *,
    init: str = "pass",
    sleep_ms: float = 0,
    fail_every: int = 0,
    input: str = "X",
    output: str = "Y",
) -> str:
    """model.py for ``output = input * factor``.

    ``init``: one statement run in ``initialize`` (``raise ...`` makes a model that cannot load;
    ``import time; time.sleep(8)`` a slow load). ``sleep_ms``: per request. ``fail_every``: every n-th
    request with a non-zero input raises (raised, not returned: Triton 2.51 counts a python model's
    error *response* as a success); all-zero inputs (warmup) always pass.
    """
    lines: list[str | None] = [
        "import time" if sleep_ms else None,
        "import numpy as np",
        "import triton_python_backend_utils as pb_utils",
        "",
        "",
        "class TritonPythonModel:",
        "    def initialize(self, args):",
        "        self.n = 0",
        f"        {init}",
        "",
        "    def execute(self, requests):",
        "        out = []",
        "        for r in requests:",
        f"            time.sleep({sleep_ms} / 1000.0)" if sleep_ms else None,
        f'            x = pb_utils.get_input_tensor_by_name(r, "{input}").as_numpy()',
    ]
    if fail_every:
        lines += [
            "            if x.any():",
            "                self.n += 1",
            f"                if self.n % {fail_every} == 0:",
            '                    raise pb_utils.TritonModelException("bad on purpose")',
        ]
    lines += [
        f'            y = (x * {factor}).astype(np.float32)',
        f'            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("{output}", y)]))',
        "        return out",
    ]
    return "\n".join(line for line in lines if line is not None) + "\n"
