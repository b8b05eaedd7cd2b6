# Written for tritonops' tests after python_backend's examples/bls_decoupled/sync_model.py: a BLS request
# to the decoupled "square_int32" model, summing the OUT of every response it streams back.
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            inp = pb_utils.get_input_tensor_by_name(request, "IN")
            stream = pb_utils.InferenceRequest(
                model_name="square_int32", requested_output_names=["OUT"], inputs=[inp]
            ).exec(decoupled=True)
            total = 0
            for answer in stream:
                if answer.has_error():
                    raise pb_utils.TritonModelException(answer.error().message())
                out = pb_utils.get_output_tensor_by_name(answer, "OUT")
                if out is not None:  # the last response only carries the final flag
                    total += int(out.as_numpy()[0])
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("SUM", np.array([total], np.int32))]))
        return responses
