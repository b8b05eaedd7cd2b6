# The release demo's model: answers Y = X * its version number, so every answer says which version served it.
import time

import numpy as np
import triton_python_backend_utils as pb_utils

FAIL_EVERY = 0  # the demo's bad version sets 3: every third request fails


class TritonPythonModel:
    def initialize(self, args):
        self.version = float(args["model_version"])
        self.n = 0

    def execute(self, requests):
        out = []
        for r in requests:
            self.n += 1
            time.sleep(0.005)
            if FAIL_EVERY and self.n > 5 and self.n % FAIL_EVERY == 0:  # warmups pass: the metrics judge
                raise pb_utils.TritonModelException("bad version on purpose")
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", (x * self.version).astype(np.float32))]))
        return out
