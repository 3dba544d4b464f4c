"""Makes the ONNX fixtures of tests/onnx.rs (one-off, not part of CI; needs torch, brevitas,
onnx and safetensors, e.g. Concrete ML's environment):

    python tools/onnx_fixtures.py

- tests/fixtures/onnx_functional_bn.onnx: a Brevitas CNN written with functional
  activations (`torch.relu`, `x.flatten(1)`) and a BatchNorm2d after its first convolution,
  trained briefly on the digits; tests/fixtures/onnx_functional_bn.safetensors: Brevitas'
  outputs on the test digits.
- tests/fixtures/onnx_maxpool.onnx: a network with a MaxPool node (unsupported).
- tests/fixtures/onnx_bad_tensor.onnx: an initializer whose data is shorter than its shape.
"""

import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from concrete_fixture import digits_split, train  # noqa: E402
from onnx_export import export_onnx  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


class FunctionalCnn(nn.Module):
    def __init__(self, bits=3, pool=False):
        import brevitas.nn as qnn

        super().__init__()
        self.pool = pool
        self.q0 = qnn.QuantIdentity(bit_width=bits, return_quant_tensor=True)
        self.conv1 = qnn.QuantConv2d(1, 8, 3, weight_bit_width=bits, bias=True)
        self.bn1 = nn.BatchNorm2d(8)
        self.q1 = qnn.QuantIdentity(bit_width=bits, return_quant_tensor=True)
        self.conv2 = qnn.QuantConv2d(8, 16, 3, stride=2, weight_bit_width=bits, bias=True)
        self.q2 = qnn.QuantIdentity(bit_width=bits, return_quant_tensor=True)
        self.fc = qnn.QuantLinear(16 * 4 if not pool else 16, 10, bias=True, weight_bit_width=bits)

    def forward(self, x):
        x = self.q1(torch.relu(self.bn1(self.conv1(self.q0(x)))))
        x = torch.relu(self.conv2(x))
        if self.pool:
            x = nn.functional.max_pool2d(x, 2)
        return self.fc(self.q2(x).flatten(1))


def main():
    import onnx
    from onnx import helper, TensorProto
    from safetensors.numpy import save_file

    torch.manual_seed(0)
    x_train, y_train, x_test, y_test = digits_split()
    x_train, x_test = x_train.reshape(-1, 1, 8, 8), x_test.reshape(-1, 1, 8, 8)
    model = FunctionalCnn()
    train(model, x_train, y_train, 20)
    model.eval()
    with torch.no_grad():
        out = model(torch.tensor(x_test, dtype=torch.float32)).numpy()
    print(f"Brevitas accuracy {(out.argmax(1) == y_test).mean():.4f}")
    example = torch.tensor(x_test[:1], dtype=torch.float32)
    export_onnx(model, os.path.join(FIXTURES, "onnx_functional_bn.onnx"), example)
    save_file(
        {
            "inputs": x_test.reshape(len(x_test), -1).astype(np.float64),
            "labels": y_test.astype(np.int64),
            "outputs": out.astype(np.float64),
        },
        os.path.join(FIXTURES, "onnx_functional_bn.safetensors"),
    )
    export_onnx(FunctionalCnn(pool=True), os.path.join(FIXTURES, "onnx_maxpool.onnx"), example)

    # One MatMul whose weight initializer holds 8 bytes for 10 float elements.
    bad = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[10], raw_data=b"\0" * 8)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")],
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        initializer=[bad],
    )
    with open(os.path.join(FIXTURES, "onnx_bad_tensor.onnx"), "wb") as f:
        f.write(helper.make_model(graph).SerializeToString())
    print("wrote the fixtures")


if __name__ == "__main__":
    main()
