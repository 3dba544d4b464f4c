"""Trains the tiny residual network of ``../shared/anchors/cml_resnet.py`` with Brevitas on
fhe-nn's digits split, exports it for fhe-nn, and records Concrete ML's ``fhe="disable"``
outputs on the 360 test digits as a fixture.

One-off (not part of CI):  pip install concrete-ml safetensors
                           python tools/resnet_fixture.py

Writes models/resnet_brevitas.safetensors (layer indices of fhe-nn's
``datasets::Resnet`` declaration), models/resnet_brevitas.onnx (the same network as QCDQ
ONNX, for ``fhe_nn::onnx``) and tests/fixtures/resnet_concrete_ml.safetensors. Pixels
stay in 0..16 as fhe-nn's examples read them (cml_resnet.py divides them by 16; the input
quantizer learns either scale).
"""

import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from concrete_fixture import ROOT, digits_split, train  # noqa: E402

B = 3

# fhe-nn's declaration, one entry per DSL layer: the module holding its tensors, if any.
DSL = [
    ("QuantIdentity(3)", "q0"),
    ("QuantConv2d(1, 4, 3, input = (8, 8), w = 3)", "stem"),
    ("ReLU", None),
    ("QuantIdentity(3)", "q1"),
    ("Fork", None),
    ("QuantConv2d(4, 4, 3, padding = 1, w = 3)", "c1"),
    ("ReLU", None),
    ("QuantIdentity(3)", "q2"),
    ("QuantConv2d(4, 4, 3, padding = 1, w = 3)", "c2"),
    ("Add(3)", "qadd"),
    ("ReLU", None),
    ("QuantIdentity(3)", "q3"),
    ("MaxPool2d(2)", None),
    ("QuantIdentity(3)", "q4"),
    ("Flatten", None),
    ("QuantLinear(36, 10, w = 3)", "fc"),
]


class TinyResNet(nn.Module):
    """cml_resnet.py's QATTinyResNet, module for module."""

    def __init__(self):
        import brevitas.nn as qnn

        super().__init__()
        ident = lambda: qnn.QuantIdentity(bit_width=B, return_quant_tensor=True)  # noqa: E731
        conv = lambda i, o, p: qnn.QuantConv2d(i, o, 3, padding=p, weight_bit_width=B, bias_quant=None)  # noqa: E731
        self.q0, self.stem, self.q1 = ident(), conv(1, 4, 0), ident()
        self.c1, self.q2, self.c2 = conv(4, 4, 1), ident(), conv(4, 4, 1)
        self.qadd, self.q3, self.pool, self.q4 = ident(), ident(), nn.MaxPool2d(2), ident()
        self.fc = qnn.QuantLinear(36, 10, True, weight_bit_width=B, bias_quant=None)

    def forward(self, x):
        x = self.q1(torch.relu(self.stem(self.q0(x))))
        r = self.q2(torch.relu(self.c1(x)))
        r = self.c2(r)
        z = self.qadd(x) + self.qadd(r)
        z = self.q3(torch.relu(z))
        z = self.q4(self.pool(z))
        return self.fc(z.flatten(1))


def export(model, path):
    import brevitas.nn as qnn
    from safetensors.numpy import save_file

    tensors = {}
    for i, (_, name) in enumerate(DSL):
        if name is None:
            continue
        m = getattr(model, name)
        if isinstance(m, qnn.QuantIdentity):
            tensors[f"layers.{i}.scale"] = m.act_quant.scale().detach().double().numpy().reshape(-1)
            tensors[f"layers.{i}.zero_point"] = m.act_quant.zero_point().detach().double().numpy().reshape(-1)
        else:
            qw = m.quant_weight()
            tensors[f"layers.{i}.weight"] = qw.int().detach().numpy().astype(np.int32).reshape(qw.shape[0], -1)
            tensors[f"layers.{i}.weight_scale"] = qw.scale.detach().double().numpy().reshape(-1)
            tensors[f"layers.{i}.bias"] = m.bias.detach().double().numpy()
    architecture = ", ".join(spelled for spelled, _ in DSL)
    save_file(tensors, path, metadata={"fhe_nn.architecture": architecture})
    return architecture


def main():
    from concrete.ml.torch.compile import compile_brevitas_qat_model
    from safetensors.numpy import save_file

    torch.manual_seed(0)
    x_train, y_train, x_test, y_test = digits_split()
    x_train = x_train.reshape(-1, 1, 8, 8)
    x_test = x_test.reshape(-1, 1, 8, 8)
    model = TinyResNet()
    train(model, x_train, y_train, 60)
    model.eval()
    with torch.no_grad():
        acc = (model(torch.tensor(x_test, dtype=torch.float32)).argmax(1).numpy() == y_test).mean()
    print(f"Brevitas test accuracy: {acc:.4f}")
    print("exported:", export(model, os.path.join(ROOT, "models", "resnet_brevitas.safetensors")))
    from onnx_export import export_onnx

    example = torch.tensor(x_test[:1], dtype=torch.float32)
    export_onnx(model, os.path.join(ROOT, "models", "resnet_brevitas.onnx"), example)

    qm = compile_brevitas_qat_model(model, x_train.astype(np.float32), rounding_threshold_bits=None)
    out = qm.forward(x_test.astype(np.float32), fhe="disable")
    q_in = qm.quantize_input(x_test.astype(np.float32))
    print(f"Concrete ML fhe=disable test accuracy: {(out.argmax(1) == y_test).mean():.4f}")
    save_file(
        {
            "inputs": x_test.reshape(len(x_test), -1).astype(np.float64),
            "labels": y_test.astype(np.int64),
            "quantized_inputs": np.asarray(q_in).reshape(len(x_test), -1).astype(np.int64),
            "outputs": np.asarray(out).astype(np.float64),
        },
        os.path.join(ROOT, "tests", "fixtures", "resnet_concrete_ml.safetensors"),
        metadata={"concrete_ml": "1.9.0", "mode": "fhe=disable", "rounding_threshold_bits": "None", "brevitas_accuracy": f"{acc:.4f}"},
    )


if __name__ == "__main__":
    main()
