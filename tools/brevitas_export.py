"""Export a trained Brevitas network to fhe-nn's weight format (safetensors).

Importable:  ``from brevitas_export import export; export(module, "model.safetensors")``
Command line: ``python tools/brevitas_export.py MODULE.pt OUT.safetensors`` where MODULE.pt
holds a whole module saved with ``torch.save(module)``.

The module's leaf layers, in registration order, must be the layers fhe-nn supports:
``QuantIdentity``, ``QuantLinear``, ``QuantConv2d``, ``Flatten``, ``AvgPool2d`` and activations
(``ReLU``, ``Sigmoid``, ...). Each becomes one DSL layer; its tensors are stored as
``layers.<i>.scale`` (quantizer), ``layers.<i>.weight`` (integers), ``layers.<i>.weight_scale``,
``layers.<i>.bias``, and the DSL spelling of the whole network is stored in the metadata
key ``fhe_nn.architecture`` so that the runtime can refuse a mismatched declaration.
"""

import sys

import numpy as np
import torch
from torch import nn

ACTIVATIONS = {
    nn.ReLU: "ReLU", nn.ReLU6: "ReLU6", nn.Sigmoid: "Sigmoid", nn.Tanh: "Tanh", nn.GELU: "GELU",
    nn.SiLU: "SiLU", nn.Hardsigmoid: "HardSigmoid", nn.Hardswish: "HardSwish", nn.SELU: "SELU",
    nn.Softsign: "Softsign", nn.Mish: "Mish", nn.LogSigmoid: "LogSigmoid", nn.Tanhshrink: "Tanhshrink",
}


def _fmt(x):
    """Formats a parameter the way Rust's `{}` prints an f64."""
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(x)


def _activation(m):
    if type(m) in ACTIVATIONS:
        return ACTIVATIONS[type(m)]
    if isinstance(m, nn.LeakyReLU):
        return f"LeakyReLU({_fmt(m.negative_slope)})"
    if isinstance(m, nn.Hardtanh):
        return f"HardTanh({_fmt(m.min_val)}, {_fmt(m.max_val)})"
    if isinstance(m, nn.ELU):
        return f"ELU({_fmt(m.alpha)})"
    if isinstance(m, nn.CELU):
        return f"CELU({_fmt(m.alpha)})"
    if isinstance(m, nn.Threshold):
        return f"Threshold({_fmt(m.threshold)}, {_fmt(m.value)})"
    if isinstance(m, nn.Softplus):
        return f"Softplus({_fmt(m.beta)}, {_fmt(m.threshold)})"
    if isinstance(m, nn.Hardshrink):
        return f"Hardshrink({_fmt(m.lambd)})"
    if isinstance(m, nn.Softshrink):
        return f"Softshrink({_fmt(m.lambd)})"
    return None


def _leaves(module):
    children = list(module.children())
    if not children or type(module).__module__.startswith("brevitas.nn"):
        return [module]
    out = []
    for c in children:
        out.extend(_leaves(c))
    return out


def _weight_options(layer, qw):
    bits = int(qw.bit_width.item())
    opts = f"w = {bits}"
    if layer.bias is None:
        opts += ", bias = false"
    return bits, opts


def export(module, path, input_size=None):
    """Writes `module`'s integer weights and scales to `path`; returns the DSL spelling.

    `input_size`: the `(height, width)` of the images a network starting with a convolution
    reads (spelled `input = (h, w)` on that convolution, as the declaration must say).
    """
    import brevitas.nn as qnn
    from safetensors.numpy import save_file

    module = module.eval()
    tensors, spelled = {}, []
    for i, m in enumerate(_leaves(module)):
        if isinstance(m, qnn.QuantIdentity):
            aq = m.act_quant
            bits = int(aq.bit_width().item())
            signed = bool(aq.is_signed)
            scale = aq.scale().detach().double().numpy().reshape(-1)
            zero_point = aq.zero_point().detach().double().numpy().reshape(-1)
            tensors[f"layers.{i}.scale"] = scale
            tensors[f"layers.{i}.zero_point"] = zero_point
            spelled.append(f"QuantIdentity({bits}{'' if signed else ', unsigned'})")
        elif isinstance(m, (qnn.QuantLinear, qnn.QuantConv2d)):
            qw = m.quant_weight()
            bits, opts = _weight_options(m, qw)
            if not bool(qw.signed) or not getattr(m.weight_quant, "is_narrow_range", True):
                raise ValueError(f"layer {i}: weights must be signed narrow-range (Brevitas' default)")
            ints = qw.int().detach().numpy().astype(np.int32)
            scale = qw.scale.detach().double().numpy().reshape(-1)
            if isinstance(m, qnn.QuantConv2d):
                if m.stride[0] != m.stride[1] or m.padding[0] != m.padding[1] or m.kernel_size[0] != m.kernel_size[1]:
                    raise ValueError(f"layer {i}: only square kernels, strides and paddings are supported")
                spelled.append(
                    f"QuantConv2d({m.in_channels}, {m.out_channels}, {m.kernel_size[0]}"
                    + (f", stride = {m.stride[0]}" if m.stride[0] != 1 else "")
                    + (f", padding = {m.padding[0]}" if m.padding[0] != 0 else "")
                    + (f", input = ({input_size[0]}, {input_size[1]})" if input_size and not any(l.startswith("Quant") and not l.startswith("QuantIdentity") for l in spelled) else "")
                    + f", {opts})"
                )
                ints = ints.reshape(ints.shape[0], -1)
            else:
                spelled.append(f"QuantLinear({m.in_features}, {m.out_features}, {opts})")
            tensors[f"layers.{i}.weight"] = ints
            tensors[f"layers.{i}.weight_scale"] = scale
            if m.bias is not None:
                tensors[f"layers.{i}.bias"] = m.bias.detach().double().numpy()
        elif isinstance(m, nn.Flatten):
            spelled.append("Flatten")
        elif isinstance(m, nn.AvgPool2d):
            spelled.append(f"AvgPool2d({m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]})")
        elif _activation(m) is not None:
            spelled.append(_activation(m))
        else:
            raise ValueError(f"layer {i}: {type(m).__name__} is not supported by fhe-nn")
    architecture = ", ".join(spelled)
    save_file(tensors, path, metadata={"fhe_nn.architecture": architecture})
    return architecture


def main(argv):
    if len(argv) != 3:
        print(__doc__)
        return 2
    module = torch.load(argv[1], weights_only=False)
    print(export(module, argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
