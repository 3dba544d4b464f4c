//! Branches of an ONNX graph: a value the chain passed, read again later (a skip
//! connection), re-quantized on its own and joined with the chain by `Add`, `Sub`, `Mul` or
//! `Concat` — fhe-nn's `Fork` … `Add(bits)` — and `MaxPool`.

use super::{quantizer_bits, square_pool_kernel, unsupported, Importer, Value};
use crate::arch::layer::{JoinOp, Layer};
use crate::onnx::graph::Node;
use crate::onnx::OnnxError;
use crate::tensors::Tensor;

impl Importer<'_> {
    /// A node on a branch: its first input is a value the chain left behind, or the
    /// branch's quantizer so far.
    pub(super) fn branch_node(&mut self, node: &Node, first: Value) -> Result<(), OnnxError> {
        match (node.op.as_str(), first) {
            ("QuantizeLinear", Value::Data) => {
                let Some(&at) = self.fork_points.get(&node.inputs[0]) else {
                    return Err(unsupported(
                        node,
                        "it reads an earlier value of the data that no quantizer produced: \
                         a branch must start at a QuantIdentity's output",
                    ));
                };
                let scale = self.scalar(node, 1)?;
                let bounds = self.zero_point_range(node)?;
                self.set(node, Value::BranchQuantizing { at, scale, bounds })
            }
            ("Clip", Value::BranchQuantizing { at, scale, bounds }) => {
                let bounds = self.clip_bounds(node, bounds)?;
                self.set(node, Value::BranchQuantizing { at, scale, bounds })
            }
            ("DequantizeLinear", Value::BranchQuantizing { at, scale, bounds }) => {
                if self.scalar(node, 1)? != scale {
                    return Err(unsupported(
                        node,
                        "dequantizes with another scale than it quantized",
                    ));
                }
                self.set(node, Value::BranchQuantized { at, scale, bounds })
            }
            ("Add" | "Sub" | "Mul" | "Concat", Value::BranchQuantized { at, scale, bounds }) => {
                self.join(node, (at, scale, bounds), true)
            }
            (_, Value::Data) => Err(unsupported(
                node,
                "it reads an earlier value of the data: a branch must pass through its own \
                 QuantizeLinear/DequantizeLinear (the join's shared quantizer) first",
            )),
            _ => Err(unsupported(
                node,
                "a branch may only re-quantize its value, then join the chain",
            )),
        }
    }

    /// The join of the branch `(at, scale, bounds)` with the chain's current value, which
    /// must be the output of a quantizer of the same scale and range (the shared quantizer):
    /// that quantizer becomes the join, and a `Fork` goes where the branch starts.
    /// `branch_first`: the branch is the node's first input.
    pub(super) fn join(
        &mut self,
        node: &Node,
        (at, scale, bounds): (usize, f64, (f64, f64)),
        branch_first: bool,
    ) -> Result<(), OnnxError> {
        let chain = if branch_first { 1 } else { 0 };
        if node.inputs.get(chain) != Some(&self.current) {
            return Err(unsupported(
                node,
                "it joins two branches, not a branch and the chain",
            ));
        }
        let op = match node.op.as_str() {
            "Add" => JoinOp::Add,
            "Mul" => JoinOp::Mul,
            "Sub" if branch_first => JoinOp::Sub,
            "Concat" if branch_first && node.int("axis", 0) == 1 => JoinOp::Concat,
            "Sub" | "Concat" => {
                return Err(unsupported(
                    node,
                    "fhe-nn's Sub and Concat take the forked value first (Concat on axis 1)",
                ))
            }
            _ => return Err(unsupported(node, "no fhe-nn join does this")),
        };
        let i = self.layers.len().wrapping_sub(1);
        let shared = self.layers.last().copied().and_then(|l| match l {
            Layer::QuantIdentity { bits, signed } => Some((bits, signed)),
            _ => None,
        });
        let chain_scale = self
            .tensors
            .tensors
            .get(&format!("layers.{i}.scale"))
            .and_then(|t| match &t.values {
                crate::tensors::Values::Float(v) => v.first().copied(),
                crate::tensors::Values::Int(_) => None,
            });
        let Some((bits, signed)) = shared else {
            return Err(unsupported(
                node,
                "the chain's side must end in the quantizer both sides share",
            ));
        };
        if chain_scale != Some(scale) || quantizer_bits(node, bounds)? != (bits, signed) {
            return Err(unsupported(
                node,
                "both sides must pass through one shared quantizer (same scale and range), as \
                 Brevitas writes a residual add",
            ));
        }
        self.layers[i] = Layer::Join { op, bits, signed };
        self.insert_fork(at);
        self.advance(node)
    }

    /// Inserts `Fork` before declared layer `at`: the layers and tensors after it move up
    /// by one, and so do later branch points.
    fn insert_fork(&mut self, at: usize) {
        self.layers.insert(at, Layer::Fork);
        let moved: Vec<(String, Tensor)> = self
            .tensors
            .tensors
            .iter()
            .filter_map(|(name, t)| {
                let rest = name.strip_prefix("layers.")?;
                let (index, suffix) = rest.split_once('.')?;
                let index: usize = index.parse().ok()?;
                (index >= at).then(|| (format!("layers.{}.{suffix}", index + 1), t.clone()))
            })
            .collect();
        self.tensors.tensors.retain(|name, _| {
            name.strip_prefix("layers.")
                .and_then(|r| r.split_once('.'))
                .and_then(|(i, _)| i.parse::<usize>().ok())
                .is_none_or(|i| i < at)
        });
        self.tensors.tensors.extend(moved);
        for point in self.fork_points.values_mut() {
            if *point > at {
                *point += 1;
            }
        }
        for value in self.values.values_mut() {
            if let Value::BranchQuantizing { at: p, .. } | Value::BranchQuantized { at: p, .. } =
                value
            {
                if *p > at {
                    *p += 1;
                }
            }
        }
    }

    /// `MaxPool` with a square kernel, stride = kernel, no padding, of a quantized value.
    pub(super) fn max_pool(&mut self, node: &Node) -> Result<(), OnnxError> {
        let quantized =
            !self.open_weighted && matches!(self.layers.last(), Some(Layer::QuantIdentity { .. }));
        if !quantized {
            return Err(unsupported(
                node,
                "it pools a value no quantizer produced: quantize before MaxPool2d",
            ));
        }
        let kernel = square_pool_kernel(node)?;
        self.push(Layer::MaxPool2d { kernel });
        self.advance(node)
    }
}
