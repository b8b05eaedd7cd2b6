# Written for tritonops' tests after python_backend's examples/decoupled/repeat_model.py: a decoupled
# model sending each element of IN back as its own response (OUT, with its index IDX), DELAY[i] ms
# apart, then waiting WAIT ms before the final flag.
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.threads = []

    def execute(self, requests):
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            delays = pb_utils.get_input_tensor_by_name(request, "DELAY").as_numpy()
            wait = pb_utils.get_input_tensor_by_name(request, "WAIT").as_numpy()
            if values.shape != delays.shape:
                raise pb_utils.TritonModelException("IN and DELAY must have the same shape")
            args = (request.get_response_sender(), values, delays, int(wait[0]))
            t = threading.Thread(target=self.respond, args=args, daemon=True)
            self.threads.append(t)
            t.start()
        return None

    def respond(self, sender, values, delays, wait_ms):
        for i, (v, d) in enumerate(zip(values, delays, strict=True)):
            time.sleep(int(d) / 1000)
            outs = [pb_utils.Tensor("OUT", np.array([v], np.int32)), pb_utils.Tensor("IDX", np.array([i], np.uint32))]
            sender.send(pb_utils.InferenceResponse(outs))
        time.sleep(wait_ms / 1000)
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def finalize(self):
        for t in self.threads:
            t.join(timeout=5)
