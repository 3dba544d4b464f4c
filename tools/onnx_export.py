"""Exports a Brevitas QAT module to ONNX for fhe-nn's importer (`fhe_nn::onnx`), its
quantizers as QuantizeLinear/Clip/DequantizeLinear chains (Brevitas' QCDQ export).

Unlike brevitas_export.py this traces `forward`, so functional activations
(`torch.relu(x)`), `x.flatten(1)` and BatchNorm layers need no rewriting.

    python tools/onnx_export.py MODULE.pt OUT.onnx SHAPE...     (SHAPE: one sample, e.g. 1 8 8)

or from Python: `export_onnx(module, path, example_input)`. Then
`cargo run --release --example onnx -- OUT.onnx` prints the network in the DSL's spelling.
"""

import sys

import torch


def export_onnx(module, path, example_input):
    """Writes `module` (in eval mode) to `path` as QCDQ ONNX, traced on `example_input`."""
    from brevitas.export import export_onnx_qcdq

    module = module.eval()
    export_onnx_qcdq(module, args=example_input, export_path=path)
    return path


def main(argv):
    if len(argv) < 4:
        print(__doc__)
        return 2
    module = torch.load(argv[1], weights_only=False)
    shape = [1] + [int(d) for d in argv[3:]]
    export_onnx(module, argv[2], torch.zeros(shape))
    print(f"wrote {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
