# Written for tritonops' tests after python_backend's examples/auto_complete/batch_model.py: the config
# names only the model and its backend; auto_complete_config declares the inputs, outputs and batching.
import json

import triton_python_backend_utils as pb_utils

TENSORS = [("INPUT0", "add_input"), ("INPUT1", "add_input"), ("OUTPUT0", "add_output"), ("OUTPUT1", "add_output")]


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        current = config.as_dict()
        have = {t["name"] for t in current.get("input", []) + current.get("output", [])}
        for name, add in TENSORS:
            if name not in have:
                getattr(config, add)({"name": name, "data_type": "TYPE_FP32", "dims": [4]})
        config.set_max_batch_size(4)
        config.set_dynamic_batching()
        return config

    def initialize(self, args):
        self.model_config = json.loads(args["model_config"])

    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            outs = [pb_utils.Tensor("OUTPUT0", a + b), pb_utils.Tensor("OUTPUT1", a - b)]
            responses.append(pb_utils.InferenceResponse(output_tensors=outs))
        return responses
