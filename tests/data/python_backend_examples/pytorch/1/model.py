# Written for tritonops' tests after python_backend's examples/pytorch: sum and difference by a torch
# module, on the CPU.
import torch
import triton_python_backend_utils as pb_utils


class AddSubNet(torch.nn.Module):
    def forward(self, a, b):
        return a + b, a - b


class TritonPythonModel:
    def initialize(self, args):
        self.net = AddSubNet().to("cpu").eval()

    def execute(self, requests):
        responses = []
        for request in requests:
            a = torch.as_tensor(pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy())
            b = torch.as_tensor(pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy())
            with torch.no_grad():
                s, d = self.net(a, b)
            outs = [pb_utils.Tensor("OUTPUT0", s.numpy()), pb_utils.Tensor("OUTPUT1", d.numpy())]
            responses.append(pb_utils.InferenceResponse(output_tensors=outs))
        return responses
