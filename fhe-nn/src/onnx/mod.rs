//! ONNX import: a quantization-aware network exported to ONNX with its quantizers as
//! `QuantizeLinear`/`Clip`/`DequantizeLinear` chains (Brevitas' QCDQ export,
//! `torch.onnx.export` of fake-quantized models) becomes fhe-nn's layers and tensors.
//!
//! | ONNX | fhe-nn |
//! |---|---|
//! | `QuantizeLinear` [→ `Clip`] → `DequantizeLinear` on the data | `QuantIdentity(bits[, unsigned])` |
//! | integer (or quantized float) weights → `DequantizeLinear`, then `Gemm`, or `MatMul` [+ `Add`] | `QuantLinear` |
//! | the same into `Conv` (square kernel, one group) | `QuantConv2d` |
//! | `Relu`, `Sigmoid`, `Tanh`, `LeakyRelu`, `Elu`, `Softplus`, `Softsign`, `HardSigmoid` (defaults) | the activation |
//! | `Flatten`, `Reshape` | `Flatten` |
//! | `AveragePool` (stride = kernel, no padding) | `AvgPool2d` |
//! | `MaxPool` (stride = kernel, no padding) of a quantizer's output | `MaxPool2d` |
//! | a quantizer's output read again later, re-quantized on its own, then `Add`, `Sub`, `Mul` or `Concat` (axis 1) with the chain's value re-quantized at the same scale | `Fork` … `Add(bits)` (`Sub`, `Mul`, `Concat`) |
//! | `BatchNormalization` right after a weighted layer | folded into its scales and bias |
//! | `Identity`, `Dropout` | nothing |
//!
//! Anything else is [`OnnxError::UnsupportedNode`], naming the node. The network is one
//! chain from its input to its output, with branches that leave it at a quantizer's output
//! and join it again through a shared quantizer (as Brevitas writes residual blocks). Read with [`OnnxModel::read`], print the DSL spelling
//! with [`OnnxModel::spelling`], or load against a declaration with
//! [`QuantModel::from_onnx`](crate::QuantModel::from_onnx).

mod branches;
mod graph;
mod proto;

use std::collections::HashMap;

use crate::arch::activation::Activation;
use crate::arch::layer::{Conv2d, Layer, WeightOptions};
use crate::architecture::Architecture;
use crate::error::LoadError;
use crate::model::QuantModel;
use crate::tensors::ARCHITECTURE_KEY;
use crate::tensors::{Tensor, TensorFile};
use graph::{Attribute, Constant, Graph, Node};

/// Largest ONNX file read (bytes).
pub const MAX_ONNX_BYTES: usize = 1 << 30;

/// Derived constant elements the import may hold per element of the graph's own constants
/// (a weight passes `QuantizeLinear`, `Clip` and `DequantizeLinear`: three copies; the
/// weighted node that reads it takes one more, and a transposed one another).
const DERIVED_PER_CONSTANT: usize = 6;

/// Why an ONNX file could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("not a valid ONNX file: {0}")]
    Malformed(String),
    #[error("the ONNX file is {0} bytes, more than the {MAX_ONNX_BYTES} read")]
    TooLarge(usize),
    #[error("node `{name}` ({op}) is not supported: {why}")]
    UnsupportedNode {
        name: String,
        op: String,
        why: String,
    },
    #[error("tensor `{name}`: {why}")]
    BadTensor { name: String, why: String },
    #[error("the imported network is not a valid fhe-nn network: {0}")]
    Architecture(String),
    #[error("the ONNX network is `{found}`, the declaration is `{declared}`")]
    Mismatch { declared: String, found: String },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("reading {path}: {error}")]
    Io { path: String, error: String },
}

/// A network imported from ONNX: its layers (checked as `fhe_net!` checks them) and the
/// tensors [`QuantModel::from_tensors`] loads.
#[derive(Clone, Debug)]
pub struct OnnxModel {
    pub architecture: Architecture,
    pub weights: TensorFile,
}

impl OnnxModel {
    /// Imports an ONNX model from its bytes.
    pub fn read(bytes: &[u8]) -> Result<OnnxModel, OnnxError> {
        if bytes.len() > MAX_ONNX_BYTES {
            return Err(OnnxError::TooLarge(bytes.len()));
        }
        let graph = Graph::parse(bytes)?;
        let (layers, mut weights) = Importer::new(&graph).run()?;
        let architecture = Architecture::new("onnx", layers)
            .map_err(|e| OnnxError::Architecture(e.to_string()))?;
        weights
            .metadata
            .insert(ARCHITECTURE_KEY.to_string(), architecture.signature());
        Ok(OnnxModel {
            architecture,
            weights,
        })
    }

    /// Imports an ONNX file.
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<OnnxModel, OnnxError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| OnnxError::Io {
            path: path.display().to_string(),
            error: e.to_string(),
        })?;
        Self::read(&bytes)
    }

    /// The network in the DSL's spelling, to paste into `fhe_net!`.
    pub fn spelling(&self) -> String {
        self.architecture.signature()
    }
}

impl QuantModel {
    /// Loads a model from ONNX bytes, checking that the graph is the declared network.
    pub fn from_onnx(arch: &Architecture, bytes: &[u8]) -> Result<QuantModel, OnnxError> {
        let imported = OnnxModel::read(bytes)?;
        // The declaration may add `acc` bounds (checked when the weights load).
        let structure = |layers: &[Layer]| -> Vec<Layer> {
            layers.iter().map(Layer::without_declared_bound).collect()
        };
        if structure(imported.architecture.layers()) != structure(arch.layers()) {
            return Err(OnnxError::Mismatch {
                declared: arch.signature(),
                found: imported.spelling(),
            });
        }
        Ok(QuantModel::from_tensors(arch, &imported.weights)?)
    }
}

/// What a value of the graph is, as the walk meets it.
#[derive(Clone, Debug)]
enum Value {
    /// A constant (initializer or `Constant` node), with the `Clip` bounds applied to it.
    Constant(Constant, Option<(f64, f64)>),
    /// Integer weights and their scale(s) (`DequantizeLinear` of a constant).
    Weight {
        ints: Vec<i64>,
        dims: Vec<usize>,
        scale: Vec<f64>,
        bounds: (f64, f64),
    },
    /// The data, between a `QuantizeLinear` and its `DequantizeLinear`.
    Quantizing { scale: f64, bounds: (f64, f64) },
    /// A branch from the value the chain had before declared layer `at`, between its
    /// `QuantizeLinear` and its `DequantizeLinear`.
    BranchQuantizing {
        at: usize,
        scale: f64,
        bounds: (f64, f64),
    },
    /// A branch re-quantized, ready to join the chain.
    BranchQuantized {
        at: usize,
        scale: f64,
        bounds: (f64, f64),
    },
    /// The data.
    Data,
}

/// A weighted layer's integer weights `[out][fan_in]`, per-output scales and width.
struct Weights {
    ints: Vec<i64>,
    dims: Vec<usize>,
    scale: Vec<f64>,
    bits: u32,
}

struct Importer<'g> {
    graph: &'g Graph,
    values: HashMap<String, Value>,
    layers: Vec<Layer>,
    tensors: TensorFile,
    /// The name of the data value the chain has reached.
    current: String,
    /// The last layer is a weighted layer nothing has followed yet (a bias `Add` or a
    /// `BatchNormalization` may still fold into it).
    open_weighted: bool,
    /// Quantizers' outputs a branch may start from, and where its `Fork` goes (before
    /// that declared layer).
    fork_points: HashMap<String, usize>,
    /// Elements of the constants the nodes derived so far (copies, clipped, quantized), and
    /// how many the import may hold: a few times the graph's own constants.
    derived: usize,
    derived_limit: usize,
}

/// The kernel of a pooling node with a square window, stride = kernel, no padding, dilation
/// or ceiling (`AveragePool`, `MaxPool`).
fn square_pool_kernel(node: &Node) -> Result<usize, OnnxError> {
    let kernel = node.ints("kernel_shape").unwrap_or_default();
    let strides = node
        .ints("strides")
        .unwrap_or_else(|| vec![1; kernel.len()]);
    let pads = node.ints("pads").unwrap_or_default();
    let dilations = node.ints("dilations").unwrap_or_default();
    match kernel[..] {
        [k, k2]
            if k == k2
                && k > 0
                && strides == kernel
                && pads.iter().all(|&p| p == 0)
                && dilations.iter().all(|&d| d == 1)
                && node.int("ceil_mode", 0) == 0
                && node.outputs.len() == 1 =>
        {
            Ok(k as usize)
        }
        _ => Err(unsupported(
            node,
            "only square pooling with stride = kernel, no padding or dilation",
        )),
    }
}

fn unsupported(node: &Node, why: impl Into<String>) -> OnnxError {
    OnnxError::UnsupportedNode {
        name: node.name.clone(),
        op: node.op.clone(),
        why: why.into(),
    }
}

/// Width of a signed narrow-range weight bound `max` (`2^(w-1) - 1`).
fn weight_bits(node: &Node, (min, max): (f64, f64)) -> Result<u32, OnnxError> {
    let ok = (1.0..=32767.0).contains(&max) && min == -max && max.fract() == 0.0;
    let m = max as i64;
    if !ok || !((m + 1) as u64).is_power_of_two() {
        return Err(unsupported(
            node,
            format!("weights clipped to [{min}, {max}]: fhe-nn takes signed narrow-range weights [-(2^(w-1)-1), 2^(w-1)-1]"),
        ));
    }
    Ok((m + 1).ilog2() + 1)
}

/// Width and signedness of an activation quantizer's range.
fn quantizer_bits(node: &Node, (min, max): (f64, f64)) -> Result<(u32, bool), OnnxError> {
    let refuse = || {
        unsupported(
            node,
            format!(
                "quantizer range [{min}, {max}]: fhe-nn takes [0, 2^b-1] or [-2^(b-1), 2^(b-1)-1]"
            ),
        )
    };
    if !(min >= -65536.0 && max <= 65536.0 && min.fract() == 0.0 && max.fract() == 0.0) {
        return Err(refuse());
    }
    let (lo, hi) = (min as i64, max as i64);
    let span = hi - lo + 1;
    if span < 2 || !(span as u64).is_power_of_two() || (lo != 0 && lo != -(span / 2)) {
        return Err(refuse());
    }
    Ok((span.ilog2(), lo < 0))
}

impl<'g> Importer<'g> {
    fn new(graph: &'g Graph) -> Importer<'g> {
        let mut values: HashMap<String, Value> = graph
            .constants
            .iter()
            .map(|(k, c)| (k.clone(), Value::Constant(c.clone(), None)))
            .collect();
        values.insert(graph.input.clone(), Value::Data);
        // The graph's own constants: initializers and `Constant` nodes.
        let initializers: usize = graph.constants.values().map(|c| c.values.len()).sum();
        let constant_nodes: usize = graph
            .nodes
            .iter()
            .filter(|n| n.op == "Constant")
            .filter_map(|n| match n.attributes.get("value") {
                Some(Attribute::Tensor(t)) => Some(t.values.len()),
                _ => None,
            })
            .sum();
        let own = initializers.saturating_add(constant_nodes);
        Importer {
            derived: 0,
            derived_limit: own.saturating_mul(DERIVED_PER_CONSTANT) + (1 << 20),
            graph,
            values,
            layers: Vec::new(),
            tensors: TensorFile::default(),
            current: graph.input.clone(),
            open_weighted: false,
            fork_points: HashMap::new(),
        }
    }

    fn run(mut self) -> Result<(Vec<Layer>, TensorFile), OnnxError> {
        for node in &self.graph.nodes {
            self.node(node)?;
        }
        if self.current != self.graph.output {
            return Err(OnnxError::Malformed(format!(
                "the graph's output `{}` is not the end of the chain from its input (`{}`)",
                self.graph.output, self.current
            )));
        }
        Ok((self.layers, self.tensors))
    }

    fn value(&self, node: &Node, k: usize) -> Result<&Value, OnnxError> {
        let name = node
            .inputs
            .get(k)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| unsupported(node, format!("input {k} is missing")))?;
        self.values.get(name).ok_or_else(|| {
            unsupported(
                node,
                format!("input `{name}` is produced by no earlier node"),
            )
        })
    }

    fn constant(&self, node: &Node, k: usize) -> Result<&Constant, OnnxError> {
        match self.value(node, k)? {
            Value::Constant(c, _) => Ok(c),
            _ => Err(unsupported(node, format!("input {k} must be a constant"))),
        }
    }

    fn scalar(&self, node: &Node, k: usize) -> Result<f64, OnnxError> {
        let c = self.constant(node, k)?;
        match c.values.as_slice() {
            [v] => Ok(*v),
            _ => Err(unsupported(node, format!("input {k} must be a scalar"))),
        }
    }

    /// The zero point (input 2, which must be 0 if present) and the range of its type.
    fn zero_point_range(&self, node: &Node) -> Result<(f64, f64), OnnxError> {
        if node.inputs.get(2).is_none_or(|n| n.is_empty()) {
            return Ok((0.0, 255.0));
        }
        let zp = self.constant(node, 2)?;
        if zp.values.iter().any(|&v| v != 0.0) {
            return Err(unsupported(
                node,
                "zero points must be 0 (symmetric quantizers)",
            ));
        }
        Ok(zp.type_range())
    }

    fn set(&mut self, node: &Node, value: Value) -> Result<(), OnnxError> {
        let out = node
            .outputs
            .first()
            .ok_or_else(|| unsupported(node, "no output"))?;
        // A value's dimensions cost memory as its elements do.
        let elements = match &value {
            Value::Constant(c, _) => c.values.len().saturating_add(c.dims.len()),
            Value::Weight { ints, dims, .. } => ints.len().saturating_add(dims.len()),
            _ => 0,
        };
        self.charge(node, elements)?;
        self.values.insert(out.clone(), value);
        Ok(())
    }

    /// Counts `elements` more derived values (copies, clipped, quantized constants) against
    /// the budget the graph's own constants set.
    fn charge(&mut self, node: &Node, elements: usize) -> Result<(), OnnxError> {
        self.derived = self.derived.saturating_add(elements);
        if self.derived > self.derived_limit {
            return Err(OnnxError::Malformed(format!(
                "node `{}` ({}): the constants derived so far hold more than {} elements, {} times the graph's own",
                node.name, node.op, self.derived_limit, DERIVED_PER_CONSTANT
            )));
        }
        Ok(())
    }

    fn advance(&mut self, node: &Node) -> Result<(), OnnxError> {
        self.set(node, Value::Data)?;
        self.current = node.outputs[0].clone();
        Ok(())
    }

    fn node(&mut self, node: &Node) -> Result<(), OnnxError> {
        if node.op == "Constant" {
            let Some(Attribute::Tensor(t)) = node.attributes.get("value") else {
                return Err(unsupported(node, "only tensor constants (`value`)"));
            };
            return self.set(node, Value::Constant(t.clone(), None));
        }
        let first = self.value(node, 0)?.clone();
        let branch = matches!(
            first,
            Value::BranchQuantizing { .. } | Value::BranchQuantized { .. }
        );
        if branch || (matches!(first, Value::Data) && node.inputs[0] != self.current) {
            return self.branch_node(node, first);
        }
        if !matches!(first, Value::Data | Value::Quantizing { .. }) {
            return self.on_constant(node, first);
        }
        if node.inputs[0] != self.current {
            return Err(unsupported(
                node,
                "it reads an earlier value of the data that is not a quantizer's output",
            ));
        }
        // A join whose branch is the second input.
        if let ("Add" | "Mul", Some(Value::BranchQuantized { at, scale, bounds })) = (
            node.op.as_str(),
            node.inputs.get(1).and_then(|n| self.values.get(n)),
        ) {
            let branch = (*at, *scale, *bounds);
            return self.join(node, branch, false);
        }
        match (node.op.as_str(), first) {
            ("QuantizeLinear", Value::Data) => {
                let scale = self.scalar(node, 1)?;
                let bounds = self.zero_point_range(node)?;
                if !(scale > 0.0 && scale.is_finite()) {
                    return Err(unsupported(node, "scales must be positive and per tensor"));
                }
                self.set(node, Value::Quantizing { scale, bounds })?;
                self.current = node.outputs[0].clone();
            }
            ("Clip", Value::Quantizing { scale, bounds }) => {
                let bounds = self.clip_bounds(node, bounds)?;
                self.set(node, Value::Quantizing { scale, bounds })?;
                self.current = node.outputs[0].clone();
            }
            ("DequantizeLinear", Value::Quantizing { scale, bounds }) => {
                if self.scalar(node, 1)? != scale {
                    return Err(unsupported(
                        node,
                        "dequantizes with another scale than it quantized",
                    ));
                }
                let (bits, signed) = quantizer_bits(node, bounds)?;
                let i = self.layers.len();
                self.tensors.tensors.insert(
                    format!("layers.{i}.scale"),
                    Tensor::float(vec![], vec![scale]),
                );
                self.push(Layer::QuantIdentity { bits, signed });
                self.advance(node)?;
                // A branch may start here: its `Fork` would follow this quantizer.
                self.fork_points
                    .insert(node.outputs[0].clone(), self.layers.len());
            }
            (_, Value::Quantizing { .. }) => {
                return Err(unsupported(
                    node,
                    "only Clip and DequantizeLinear may follow QuantizeLinear",
                ))
            }
            ("Gemm", _) => self.gemm(node)?,
            ("MatMul", _) => self.linear(node, true, false)?,
            ("Add", _) => self.bias_add(node)?,
            ("Conv", _) => self.conv(node)?,
            ("BatchNormalization", _) => self.batch_norm(node)?,
            ("Flatten" | "Reshape", _) => {
                self.push(Layer::Flatten);
                self.advance(node)?;
            }
            ("AveragePool", _) => self.average_pool(node)?,
            ("MaxPool", _) => self.max_pool(node)?,
            ("Identity" | "Dropout", _) => {
                self.set(node, Value::Data)?;
                self.current = node.outputs[0].clone();
            }
            (op, _) => {
                let activation = match op {
                    "Relu" => Activation::ReLU,
                    "Sigmoid" => Activation::Sigmoid,
                    "Tanh" => Activation::Tanh,
                    "Softsign" => Activation::Softsign,
                    "LeakyRelu" => Activation::LeakyReLU {
                        slope: node.float("alpha", 0.01),
                    },
                    "Elu" => Activation::ELU {
                        alpha: node.float("alpha", 1.0),
                    },
                    "Softplus" => Activation::Softplus {
                        beta: 1.0,
                        threshold: 20.0,
                    },
                    "HardSigmoid"
                        if (node.float("alpha", 0.2) - 1.0 / 6.0).abs() < 1e-6
                            && (node.float("beta", 0.5) - 0.5).abs() < 1e-6 =>
                    {
                        Activation::HardSigmoid
                    }
                    _ => return Err(unsupported(node, "no fhe-nn layer does this")),
                };
                // Checked as the DSL and the compiled-model reader check it (finite
                // parameters): what imports can be written and read back.
                let activation = Activation::from_name(activation.name(), &activation.params())
                    .map_err(|why| unsupported(node, why))?;
                self.push(Layer::Activation(activation));
                self.advance(node)?;
            }
        }
        Ok(())
    }

    fn push(&mut self, layer: Layer) {
        self.open_weighted = matches!(layer, Layer::QuantLinear { .. } | Layer::QuantConv2d(_));
        self.layers.push(layer);
    }

    /// `Clip`'s bounds (inputs 1 and 2, or the attributes of older opsets) within `bounds`.
    fn clip_bounds(&self, node: &Node, bounds: (f64, f64)) -> Result<(f64, f64), OnnxError> {
        let min = match node.inputs.get(1).filter(|n| !n.is_empty()) {
            Some(_) => self.scalar(node, 1)?,
            None => node.float("min", bounds.0),
        };
        let max = match node.inputs.get(2).filter(|n| !n.is_empty()) {
            Some(_) => self.scalar(node, 2)?,
            None => node.float("max", bounds.1),
        };
        clip_within(node, (min, max), bounds)
    }

    /// A node whose first input is a constant: the weights' quantization chain.
    fn on_constant(&mut self, node: &Node, first: Value) -> Result<(), OnnxError> {
        match (node.op.as_str(), first) {
            ("Identity", v) => self.set(node, v),
            ("Clip", Value::Constant(c, bounds)) => {
                let b = self.clip_bounds(node, bounds.unwrap_or(c.type_range()))?;
                let clipped = Constant {
                    values: c.values.iter().map(|v| v.clamp(b.0, b.1)).collect(),
                    ..c
                };
                self.set(node, Value::Constant(clipped, Some(b)))
            }
            ("QuantizeLinear", Value::Constant(c, _)) => {
                let scale = self.constant(node, 1)?.values.clone();
                let range = self.zero_point_range(node)?;
                let per = per_channel(node, &scale, &c.dims)?;
                let values = c
                    .values
                    .iter()
                    .enumerate()
                    .map(|(k, v)| {
                        (v / scale[k / per % scale.len()])
                            .round_ties_even()
                            .clamp(range.0, range.1)
                    })
                    .collect();
                let ints = Constant {
                    values,
                    integer: true,
                    ..c
                };
                self.set(node, Value::Constant(ints, Some(range)))
            }
            ("DequantizeLinear", Value::Constant(c, bounds)) => {
                if !c.integer {
                    return Err(unsupported(node, "dequantizes floats"));
                }
                let scale = self.constant(node, 1)?.values.clone();
                let range = self.zero_point_range(node)?;
                per_channel(node, &scale, &c.dims)?;
                if scale.iter().any(|s| !(*s > 0.0 && s.is_finite())) {
                    return Err(unsupported(node, "weight scales must be positive"));
                }
                self.set(
                    node,
                    Value::Weight {
                        ints: c.values.iter().map(|&v| v as i64).collect(),
                        dims: c.dims.clone(),
                        scale,
                        bounds: bounds.unwrap_or(range),
                    },
                )
            }
            _ => Err(unsupported(
                node,
                "not part of a weight's quantization (QuantizeLinear, Clip, DequantizeLinear)",
            )),
        }
    }

    /// The quantized weight at input 1 (of `Gemm`, `MatMul`, `Conv`), as `[out][fan_in]`
    /// integers (transposed from `[in, out]` when `transposed`), its per-output scales and
    /// its width.
    fn weight(&mut self, node: &Node, transposed: bool) -> Result<Weights, OnnxError> {
        let Value::Weight { ints, dims, .. } = self.value(node, 1)? else {
            return Err(unsupported(
                node,
                "its weights are not quantized (DequantizeLinear of integers)",
            ));
        };
        // Checked before anything is built from the shape: a zero dimension beside a huge
        // one holds no value but would size the per-output scales.
        if ints.is_empty() || dims.contains(&0) {
            return Err(unsupported(
                node,
                format!("an empty weight of shape {dims:?}"),
            ));
        }
        // Each node that reads a weight takes a copy of it (and per-output scales): the copies
        // count against the derived-constant budget as the derived constants themselves do.
        let copy = ints.len().saturating_mul(2).saturating_add(dims.len());
        self.charge(node, copy)?;
        let Some(Value::Weight {
            ints,
            dims,
            scale,
            bounds,
        }) = self.value(node, 1).ok().cloned()
        else {
            unreachable!("a weight, read above")
        };
        let bits = weight_bits(node, bounds)?;
        let (ints, dims) = if transposed {
            let [rows, cols] = dims[..] else {
                return Err(unsupported(node, "MatMul weights must be 2-d"));
            };
            let t = (0..cols * rows)
                .map(|j| ints[(j % rows) * cols + j / rows])
                .collect();
            (t, vec![cols, rows])
        } else {
            (ints, dims)
        };
        let out = *dims
            .first()
            .ok_or_else(|| unsupported(node, "scalar weights"))?;
        let scale = match scale.len() {
            1 => vec![scale[0]; out],
            n if n == out && !transposed => scale,
            _ => {
                return Err(unsupported(
                    node,
                    "weight scales must be per tensor or per output channel",
                ))
            }
        };
        Ok(Weights {
            ints,
            dims,
            scale,
            bits,
        })
    }

    fn bias(&self, node: &Node, k: usize, out: usize) -> Result<Option<Vec<f64>>, OnnxError> {
        if node.inputs.get(k).is_none_or(|n| n.is_empty()) {
            return Ok(None);
        }
        let c = self.constant(node, k)?;
        if c.values.len() != out {
            return Err(unsupported(
                node,
                format!("a bias of {} values for {out} outputs", c.values.len()),
            ));
        }
        Ok(Some(c.values.clone()))
    }

    /// Stores a weighted layer's tensors (it becomes the next layer); returns its options.
    fn store_weights(
        &mut self,
        ints: Vec<i64>,
        out: usize,
        scale: Vec<f64>,
        bits: u32,
        bias: Option<Vec<f64>>,
    ) -> WeightOptions {
        let i = self.layers.len();
        let fan_in = ints.len() / out.max(1);
        let options = WeightOptions {
            weight_bits: bits,
            bias: bias.is_some(),
            active: None,
            round: None,
            exact: false,
            acc: None,
        };
        let t = &mut self.tensors.tensors;
        t.insert(
            format!("layers.{i}.weight"),
            Tensor::int(vec![out, fan_in], ints),
        );
        t.insert(
            format!("layers.{i}.weight_scale"),
            Tensor::float(vec![out], scale),
        );
        if let Some(b) = bias {
            t.insert(format!("layers.{i}.bias"), Tensor::float(vec![out], b));
        }
        options
    }

    fn gemm(&mut self, node: &Node) -> Result<(), OnnxError> {
        if node.int("transA", 0) != 0
            || node.float("alpha", 1.0) != 1.0
            || node.float("beta", 1.0) != 1.0
        {
            return Err(unsupported(
                node,
                "only Gemm with transA = 0, alpha = beta = 1",
            ));
        }
        let transposed = node.int("transB", 0) == 0;
        self.linear(node, transposed, true)
    }

    /// A fully connected layer from the weights at input 1, stored `[in, out]` when
    /// `transposed` (`MatMul`'s, `Gemm`'s without `transB`), and the bias at input 2 when
    /// `with_bias` (`Gemm`).
    fn linear(&mut self, node: &Node, transposed: bool, with_bias: bool) -> Result<(), OnnxError> {
        let Weights {
            ints,
            dims,
            scale,
            bits,
        } = self.weight(node, transposed)?;
        let [out, fan_in] = dims[..] else {
            return Err(unsupported(node, "fully connected weights must be 2-d"));
        };
        let bias = if with_bias {
            self.bias(node, 2, out)?
        } else {
            None
        };
        let options = self.store_weights(ints, out, scale, bits, bias);
        self.push(Layer::QuantLinear {
            in_features: fan_in,
            out_features: out,
            options,
        });
        self.advance(node)
    }

    /// `Add` of a constant right after a bias-less `MatMul`: its bias.
    fn bias_add(&mut self, node: &Node) -> Result<(), OnnxError> {
        let i = self.layers.len().wrapping_sub(1);
        let Some(Layer::QuantLinear {
            out_features,
            mut options,
            in_features,
        }) = self.layers.last().copied().filter(|_| self.open_weighted)
        else {
            return Err(unsupported(node, "only a bias added right after a MatMul"));
        };
        if options.bias {
            return Err(unsupported(node, "the layer has a bias already"));
        }
        let bias = self
            .bias(node, 1, out_features)?
            .ok_or_else(|| unsupported(node, "no bias"))?;
        self.tensors.tensors.insert(
            format!("layers.{i}.bias"),
            Tensor::float(vec![out_features], bias),
        );
        options.bias = true;
        self.layers[i] = Layer::QuantLinear {
            in_features,
            out_features,
            options,
        };
        self.set(node, Value::Data)?;
        self.current = node.outputs[0].clone();
        Ok(())
    }

    fn conv(&mut self, node: &Node) -> Result<(), OnnxError> {
        let Weights {
            ints,
            dims,
            scale,
            bits,
        } = self.weight(node, false)?;
        let [out, in_channels, kh, kw] = dims[..] else {
            return Err(unsupported(node, "convolution weights must be 4-d"));
        };
        let square = |name: &str, default: i64, n: usize| -> Result<usize, OnnxError> {
            let v = node.ints(name).unwrap_or_else(|| vec![default; n]);
            match v.first() {
                Some(&x) if x >= 0 && v.iter().all(|&y| y == x) => Ok(x as usize),
                _ => Err(unsupported(
                    node,
                    format!("`{name}` {v:?}: only square, symmetric ones"),
                )),
            }
        };
        if kh != kw || node.int("group", 1) != 1 || square("dilations", 1, 2)? != 1 {
            return Err(unsupported(
                node,
                "only square kernels, one group, no dilation",
            ));
        }
        let stride = square("strides", 1, 2)?;
        let padding = square("pads", 0, 4)?;
        let bias = self.bias(node, 2, out)?;
        // The first weighted layer declares the image it reads.
        let first = !self.layers.iter().any(Layer::is_weighted_sum);
        let input = match (first, self.graph.input_shape.as_slice()) {
            (false, _) => None,
            (true, [_, _, h, w]) if *h > 0 && *w > 0 => Some((*h as usize, *w as usize)),
            (true, shape) => {
                return Err(unsupported(
                    node,
                    format!(
                        "the graph's input shape {shape:?} is not [batch, channels, height, width]"
                    ),
                ))
            }
        };
        let options = self.store_weights(ints, out, scale, bits, bias);
        self.push(Layer::QuantConv2d(Conv2d {
            in_channels,
            out_channels: out,
            kernel: kh,
            stride,
            padding,
            input,
            options,
        }));
        self.advance(node)
    }

    fn average_pool(&mut self, node: &Node) -> Result<(), OnnxError> {
        let kernel = square_pool_kernel(node)?;
        self.push(Layer::AvgPool2d { kernel });
        self.advance(node)
    }

    /// Folds `γ (z - μ) / √(σ² + ε) + β` into the weighted layer just before: per output
    /// channel, the factor joins the weight scale (its sign the integer weights), the rest
    /// the bias.
    fn batch_norm(&mut self, node: &Node) -> Result<(), OnnxError> {
        let i = self.layers.len().wrapping_sub(1);
        let Some(mut layer) = self.layers.last().copied().filter(|_| self.open_weighted) else {
            return Err(unsupported(
                node,
                "only right after a convolution or fully connected layer",
            ));
        };
        let out = match layer {
            Layer::QuantLinear { out_features, .. } => out_features,
            Layer::QuantConv2d(c) => c.out_channels,
            _ => unreachable!("open_weighted"),
        };
        let [gamma, beta, mean, var] =
            [1, 2, 3, 4].map(|k| self.constant(node, k).map(|c| c.values.clone()));
        let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
        if [&gamma, &beta, &mean, &var].iter().any(|v| v.len() != out) {
            return Err(unsupported(
                node,
                format!("parameters must have {out} values"),
            ));
        }
        let epsilon = node.float("epsilon", 1e-5);
        let t = &mut self.tensors.tensors;
        let mut weights = t
            .remove(&format!("layers.{i}.weight"))
            .expect("stored with the layer");
        let mut scales = t
            .remove(&format!("layers.{i}.weight_scale"))
            .expect("stored with the layer");
        let bias = t.remove(&format!("layers.{i}.bias"));
        let (crate::tensors::Values::Int(w), crate::tensors::Values::Float(s)) =
            (&mut weights.values, &mut scales.values)
        else {
            unreachable!("stored as integers and floats")
        };
        let mut bias = match bias.map(|t| t.values) {
            Some(crate::tensors::Values::Float(b)) => b,
            _ => vec![0.0; out],
        };
        let (a, b) = crate::model::fold::affine_of_batch_norm(&gamma, &beta, &mean, &var, epsilon);
        if let Some((c, a)) = a
            .iter()
            .enumerate()
            .find(|(_, a)| !a.is_finite() || **a == 0.0)
        {
            return Err(OnnxError::BadTensor {
                name: node.inputs[1].clone(),
                why: format!("channel {c} scales by {a}"),
            });
        }
        crate::model::fold::fold_affine(w, s, &mut bias, &a, &b);
        t.insert(format!("layers.{i}.weight"), weights);
        t.insert(format!("layers.{i}.weight_scale"), scales);
        t.insert(format!("layers.{i}.bias"), Tensor::float(vec![out], bias));
        match &mut layer {
            Layer::QuantLinear { options, .. } => options.bias = true,
            Layer::QuantConv2d(c) => c.options.bias = true,
            _ => {}
        }
        self.layers[i] = layer;
        self.open_weighted = false;
        self.set(node, Value::Data)?;
        self.current = node.outputs[0].clone();
        Ok(())
    }
}

/// How many consecutive values share one scale: 1 value per output channel (axis 0) when
/// there is one scale per channel, all of them for a single scale. Scales must be positive.
fn per_channel(node: &Node, scale: &[f64], dims: &[usize]) -> Result<usize, OnnxError> {
    if scale.is_empty() || scale.iter().any(|s| !(*s > 0.0 && s.is_finite())) {
        return Err(unsupported(node, "scales must be positive"));
    }
    let total: usize = dims.iter().product();
    match (scale.len(), dims.first()) {
        (1, _) => Ok(total.max(1)),
        (n, Some(&out)) if n == out && node.int("axis", 1) == 0 => Ok(total / out.max(1)),
        _ => Err(unsupported(
            node,
            "scales must be per tensor or per output channel (axis 0)",
        )),
    }
}

/// `Clip`'s bounds `(min, max)` narrowed to `bounds` (the quantizer's range): refused where
/// they leave no value (a bound beyond the range, or not a number).
fn clip_within(
    node: &Node,
    (min, max): (f64, f64),
    bounds: (f64, f64),
) -> Result<(f64, f64), OnnxError> {
    let (lo, hi) = (min.max(bounds.0), max.min(bounds.1));
    if !min.is_nan() && !max.is_nan() && lo <= hi {
        Ok((lo, hi))
    } else {
        Err(OnnxError::UnsupportedNode {
            name: node.name.clone(),
            op: node.op.clone(),
            why: format!(
                "its bounds [{min}, {max}] leave no value of the range [{}, {}] it clips",
                bounds.0, bounds.1
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_widths_come_from_clip_bounds_and_odd_bounds_are_refused() {
        let node = Node::default();
        assert_eq!(weight_bits(&node, (-3.0, 3.0)).unwrap(), 3);
        assert_eq!(weight_bits(&node, (-127.0, 127.0)).unwrap(), 8);
        assert_eq!(quantizer_bits(&node, (-4.0, 3.0)).unwrap(), (3, true));
        assert_eq!(quantizer_bits(&node, (0.0, 7.0)).unwrap(), (3, false));
        for bounds in [
            (-4.0, 4.0),
            (-1.0, -1.0),
            (0.0, 0.0),
            (f64::NEG_INFINITY, f64::INFINITY),
            (f64::NAN, 3.0),
            (-1e300, 1e300),
            (-2.5, 2.5),
        ] {
            assert!(weight_bits(&node, bounds).is_err(), "{bounds:?}");
            assert!(quantizer_bits(&node, bounds).is_err(), "{bounds:?}");
        }
    }

    #[test]
    fn clip_bounds_beyond_the_clipped_range_are_refused_not_panicking() {
        let node = Node::default();
        assert_eq!(
            clip_within(&node, (-2.0, 9.0), (-4.0, 3.0)).unwrap(),
            (-2.0, 3.0)
        );
        // Bounds that leave nothing of the range (the clamp would have panicked), or NaN.
        for bounds in [
            (5.0, 9.0),
            (-9.0, -5.0),
            (2.0, 1.0),
            (f64::NAN, 1.0),
            (0.0, f64::NAN),
        ] {
            match clip_within(&node, bounds, (-4.0, 3.0)) {
                Err(OnnxError::UnsupportedNode { why, .. }) => {
                    assert!(why.contains("leave no value"), "{why}")
                }
                other => panic!("{bounds:?}: {other:?}"),
            }
        }
    }
}
