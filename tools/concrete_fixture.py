"""Trains a network with Brevitas on the digits data, exports it for fhe-nn, and records
Concrete ML's ``fhe="disable"`` outputs on the test split as a fixture.

One-off (not part of CI):  pip install concrete-ml safetensors
                           python tools/concrete_fixture.py [seed|cnn]

seed (default): Concrete ML's seed network (64-30-30-10); cnn: the CNN of fhe-nn's
``datasets::Cnn`` (three 3-bit convolutions and a linear layer). Writes
models/NAME_brevitas.safetensors (and for the CNN models/cnn_brevitas.onnx, the same network
exported to ONNX) and tests/fixtures/NAME_concrete_ml.safetensors. The split
reproduces fhe-nn/src/datasets.rs exactly (SplitMix64 seeded 42, Fisher-Yates).
"""

import gzip
import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from brevitas_export import export  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..")
MASK = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n):
        zone = MASK - MASK % n
        while True:
            v = self.next_u64()
            if v < zone:
                return v % n

    def shuffle(self, items):
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]


def digits_split():
    with gzip.open(os.path.join(ROOT, "fhe-nn", "data", "digits.csv.gz"), "rt") as f:
        rows = [line.strip().split(",") for line in f if line.strip()]
    SplitMix64(42).shuffle(rows)
    data = np.array(rows, dtype=np.float64)
    x, y = data[:, :64], data[:, 64].astype(np.int64)
    return x[:1437], y[:1437], x[1437:], y[1437:]


def train(model, x, y, epochs):
    """Adam (lr 0.01), batches of 64 in a fresh random order each epoch."""
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for k in range(0, len(xt), 64):
            idx = perm[k:k + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()


def seed_network(n_bits=3):
    import brevitas.nn as qnn

    return nn.Sequential(
        qnn.QuantIdentity(bit_width=n_bits, return_quant_tensor=True),
        qnn.QuantLinear(64, 30, bias=True, weight_bit_width=n_bits),
        nn.ReLU(),
        qnn.QuantIdentity(bit_width=n_bits, return_quant_tensor=True),
        qnn.QuantLinear(30, 30, bias=True, weight_bit_width=n_bits),
        nn.ReLU(),
        qnn.QuantIdentity(bit_width=n_bits, return_quant_tensor=True),
        qnn.QuantLinear(30, 10, bias=True, weight_bit_width=n_bits),
    )


def cnn_network(n_bits=3):
    import brevitas.nn as qnn

    def conv(i, o, k, stride=1):
        return qnn.QuantConv2d(i, o, k, stride=stride, bias=True, weight_bit_width=n_bits)

    return nn.Sequential(
        qnn.QuantIdentity(bit_width=n_bits, return_quant_tensor=True),
        conv(1, 8, 3),
        nn.ReLU(),
        qnn.QuantIdentity(bit_width=n_bits, return_quant_tensor=True),
        conv(8, 16, 3, stride=2),
        nn.ReLU(),
        qnn.QuantIdentity(bit_width=n_bits, return_quant_tensor=True),
        conv(16, 32, 2),
        nn.ReLU(),
        qnn.QuantIdentity(bit_width=n_bits, return_quant_tensor=True),
        nn.Flatten(),
        qnn.QuantLinear(32, 10, bias=True, weight_bit_width=n_bits),
    )


def main():
    from concrete.ml.torch.compile import compile_brevitas_qat_model
    from safetensors.numpy import save_file

    name = sys.argv[1] if len(sys.argv) > 1 else "seed"
    torch.manual_seed(0)
    x_train, y_train, x_test, y_test = digits_split()
    if name == "cnn":
        model, input_size = cnn_network(), (8, 8)
        x_train, x_test = x_train.reshape(-1, 1, 8, 8), x_test.reshape(-1, 1, 8, 8)
    else:
        model, input_size = seed_network(), None
    train(model, x_train, y_train, 40)
    model.eval()
    with torch.no_grad():
        acc = (model(torch.tensor(x_test, dtype=torch.float32)).argmax(1).numpy() == y_test).mean()
    print(f"Brevitas test accuracy: {acc:.4f}")

    os.makedirs(os.path.join(ROOT, "models"), exist_ok=True)
    spelled = export(model, os.path.join(ROOT, "models", f"{name}_brevitas.safetensors"), input_size)
    if name == "cnn":
        from onnx_export import export_onnx

        example = torch.tensor(x_test[:1], dtype=torch.float32)
        export_onnx(model, os.path.join(ROOT, "models", "cnn_brevitas.onnx"), example)
    print("exported:", spelled)

    qm = compile_brevitas_qat_model(model, x_train, rounding_threshold_bits=None)
    out = qm.forward(x_test, fhe="disable")
    q_in = qm.quantize_input(x_test)
    cml_acc = (out.argmax(1) == y_test).mean()
    print(f"Concrete ML fhe=disable test accuracy: {cml_acc:.4f}")
    os.makedirs(os.path.join(ROOT, "tests", "fixtures"), exist_ok=True)
    save_file(
        {
            "inputs": x_test.reshape(len(x_test), -1).astype(np.float64),
            "labels": y_test.astype(np.int64),
            "quantized_inputs": np.asarray(q_in).reshape(len(x_test), -1).astype(np.int64),
            "outputs": np.asarray(out).astype(np.float64),
        },
        os.path.join(ROOT, "tests", "fixtures", f"{name}_concrete_ml.safetensors"),
        metadata={"concrete_ml": "1.9.0", "mode": "fhe=disable", "rounding_threshold_bits": "None", "brevitas_accuracy": f"{acc:.4f}"},
    )


if __name__ == "__main__":
    main()
