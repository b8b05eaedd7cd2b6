# Written for tritonops' tests after python_backend's examples/decoupled/square_model.py: a decoupled
# model answering IN = n with n responses, each OUT = n (so the responses sum to n squared), then the
# final flag; each request is answered from a thread of its own.
import threading

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.threads = []

    def execute(self, requests):
        for request in requests:
            n = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            t = threading.Thread(target=self.respond, args=(request.get_response_sender(), n), daemon=True)
            self.threads.append(t)
            t.start()
        return None

    def respond(self, sender, n):
        for _ in range(max(0, n)):
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([n], np.int32))]))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def finalize(self):
        for t in self.threads:
            t.join(timeout=5)
