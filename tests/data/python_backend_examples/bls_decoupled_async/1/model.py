# Written for tritonops' tests after python_backend's examples/bls_decoupled/async_model.py: two decoupled
# BLS requests to "square_int32" at once, summing the OUT of every response of both.
import asyncio

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def execute(self, requests):
        responses = []
        for request in requests:
            inp = pb_utils.get_input_tensor_by_name(request, "IN")
            calls = [
                pb_utils.InferenceRequest(
                    model_name="square_int32", requested_output_names=["OUT"], inputs=[inp]
                ).async_exec(decoupled=True)
                for _ in range(2)
            ]
            total = 0
            for stream in await asyncio.gather(*calls):
                for answer in stream:
                    if answer.has_error():
                        raise pb_utils.TritonModelException(answer.error().message())
                    out = pb_utils.get_output_tensor_by_name(answer, "OUT")
                    if out is not None:
                        total += int(out.as_numpy()[0])
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("SUM", np.array([total], np.int32))]))
        return responses
