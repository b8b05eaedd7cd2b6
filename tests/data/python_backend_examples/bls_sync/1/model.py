# Written for tritonops' tests after python_backend's examples/bls/sync_model.py: passes INPUT0 and
# INPUT1 to the model named by MODEL_NAME (a BLS request) and answers with that model's outputs.
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            name = pb_utils.get_input_tensor_by_name(request, "MODEL_NAME").as_numpy()[0]
            name = name.decode() if isinstance(name, bytes) else str(name)
            inputs = [pb_utils.get_input_tensor_by_name(request, n) for n in ("INPUT0", "INPUT1")]
            answer = pb_utils.InferenceRequest(
                model_name=name, requested_output_names=["OUTPUT0", "OUTPUT1"], inputs=inputs
            ).exec()
            if answer.has_error():
                raise pb_utils.TritonModelException(answer.error().message())
            outs = [pb_utils.get_output_tensor_by_name(answer, n) for n in ("OUTPUT0", "OUTPUT1")]
            responses.append(pb_utils.InferenceResponse(output_tensors=outs))
        return responses
