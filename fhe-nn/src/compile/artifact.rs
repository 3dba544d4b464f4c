//! The canonical encoding of what defines a compiled model: the architecture (its name and
//! layers), the tensors it was built from, the quantized input range and the parameter set's
//! shape. Compiling the same definition gives the same tables, so a compiled model's file
//! holds its definition and a server rebuilds the tables from it; the fingerprint that binds
//! keys to a compiled model hashes the definition and the encodings a client relies on.
//!
//! Every field is written in a fixed order as little-endian integers, IEEE-754 bits, length-
//! prefixed UTF-8 and tagged variants: renaming a Rust field or type changes nothing. The
//! reader checks every length against the bytes left before it allocates, and a set is
//! rebuilt by fhe-nn's own rule from its shape ([`security::check_set`]).

use crate::arch::activation::Activation;
use crate::arch::analysis::IntRange;
use crate::arch::layer::{Conv2d, JoinOp, Layer, WeightOptions};
use crate::architecture::Architecture;
use crate::model::QuantModel;
use crate::params::{security, vetted, InputKey, ParameterSet, Shape};
use crate::tensors::{Tensor, TensorFile, Values};

/// Version of the definition encoding (inside the compiled-model envelope).
const DEFINITION_VERSION: u64 = 1;

/// Why a definition could not be read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("compiled model definition: {0}")]
pub struct DefinitionError(String);

impl DefinitionError {
    pub(crate) fn new(what: impl Into<String>) -> DefinitionError {
        DefinitionError(what.into())
    }
}

fn bad(what: impl Into<String>) -> DefinitionError {
    DefinitionError::new(what)
}

/// The canonical definition of `model` (as loaded: its architecture, source tensors and
/// input range) compiled under `set`.
pub(crate) fn definition(model: &QuantModel, set: &ParameterSet) -> Vec<u8> {
    let mut w = Writer::default();
    w.u64(DEFINITION_VERSION);
    let arch = model.architecture();
    w.str(arch.name());
    w.u64(arch.layers().len() as u64);
    for layer in arch.layers() {
        w.layer(layer);
    }
    let file = &model.source;
    w.u64(file.tensors.len() as u64);
    for (name, tensor) in &file.tensors {
        w.str(name);
        w.u64(tensor.shape.len() as u64);
        for &d in &tensor.shape {
            w.u64(d as u64);
        }
        match &tensor.values {
            Values::Int(v) => {
                w.u8(0);
                w.u64(v.len() as u64);
                v.iter().for_each(|&x| w.i64(x));
            }
            Values::Float(v) => {
                w.u8(1);
                w.u64(v.len() as u64);
                v.iter().for_each(|&x| w.f64(x));
            }
        }
    }
    w.u64(file.metadata.len() as u64);
    for (key, value) in &file.metadata {
        w.str(key);
        w.str(value);
    }
    let range = model.input_stage().range;
    w.i64(range.min);
    w.i64(range.max);
    w.set(set);
    w.0
}

/// The canonical encodings a client relies on (input quantizer and range, the inputs' and
/// outputs' scaling factors, the output de-quantization): what the fingerprint adds to the
/// definition, so that a build that compiled the same definition into other encodings
/// refuses keys and ciphertexts made for this one.
pub(crate) fn client_view(tables: &QuantModel) -> Vec<u8> {
    let mut w = Writer::default();
    let input = tables.input_stage();
    w.f64(input.quantizer.scale);
    w.u64(input.quantizer.bits as u64);
    w.bool(input.quantizer.signed);
    w.i64(input.range.min);
    w.i64(input.range.max);
    w.u64(input.features as u64);
    w.activations(&input.activations);
    w.u64(tables.input_delta(0));
    w.u64(tables.output_delta_log2() as u64);
    if let Some(last) = tables.layers().last() {
        w.u64(last.out_features as u64);
        for j in 0..last.out_features {
            w.f64(last.unit[last.group(j)]);
            w.f64(last.bias[last.group(j)]);
        }
    }
    w.activations(tables.output_activations());
    w.0
}

/// A definition read back.
pub(crate) struct Definition {
    pub architecture: Architecture,
    pub tensors: TensorFile,
    pub input_range: IntRange,
    pub set: ParameterSet,
}

/// Reads a definition written by [`definition`]: every length checked against the bytes
/// left, the architecture analysed as `fhe_net!` analyses it, the set rebuilt and checked.
pub(crate) fn read_definition(bytes: &[u8]) -> Result<Definition, DefinitionError> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.u64()?;
    if version != DEFINITION_VERSION {
        return Err(bad(format!(
            "encoding version {version}; this build reads version {DEFINITION_VERSION}"
        )));
    }
    let name = r.str()?;
    let count = r.count(1)?;
    let layers = (0..count)
        .map(|_| r.layer())
        .collect::<Result<Vec<_>, _>>()?;
    let architecture = Architecture::new(name, layers).map_err(|e| bad(e.to_string()))?;
    let mut tensors = TensorFile::default();
    for _ in 0..r.count(1)? {
        let name = r.str()?;
        let rank = r.count(8)?;
        let shape = (0..rank)
            .map(|_| r.usize())
            .collect::<Result<Vec<_>, _>>()?;
        let values = match r.u8()? {
            0 => {
                let n = r.count(8)?;
                Values::Int((0..n).map(|_| r.i64()).collect::<Result<_, _>>()?)
            }
            1 => {
                let n = r.count(8)?;
                Values::Float((0..n).map(|_| r.f64()).collect::<Result<_, _>>()?)
            }
            tag => return Err(bad(format!("tensor `{name}`: unknown value type {tag}"))),
        };
        let elements = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let length = match &values {
            Values::Int(v) => v.len(),
            Values::Float(v) => v.len(),
        };
        if elements != Some(length) {
            return Err(bad(format!(
                "tensor `{name}`: shape {shape:?} and {length} values"
            )));
        }
        if tensors
            .tensors
            .insert(name.clone(), Tensor { shape, values })
            .is_some()
        {
            return Err(bad(format!("tensor `{name}` twice")));
        }
    }
    for _ in 0..r.count(2)? {
        let key = r.str()?;
        let value = r.str()?;
        tensors.metadata.insert(key, value);
    }
    let (min, max) = (r.i64()?, r.i64()?);
    if min > max {
        return Err(bad(format!("input range [{min}, {max}]")));
    }
    let set = r.set()?;
    if r.at != bytes.len() {
        return Err(bad(format!("{} bytes after the end", bytes.len() - r.at)));
    }
    Ok(Definition {
        architecture,
        tensors,
        input_range: IntRange::new(min, max),
        set,
    })
}

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn bool(&mut self, v: bool) {
        self.u8(v as u8);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }
    fn str(&mut self, v: &str) {
        self.u64(v.len() as u64);
        self.0.extend_from_slice(v.as_bytes());
    }
    fn option(&mut self, v: Option<u64>) {
        match v {
            Some(v) => {
                self.bool(true);
                self.u64(v);
            }
            None => self.bool(false),
        }
    }
    fn activations(&mut self, list: &[Activation]) {
        self.u64(list.len() as u64);
        for a in list {
            self.activation(a);
        }
    }
    fn activation(&mut self, a: &Activation) {
        self.str(a.name());
        let params = a.params();
        self.u64(params.len() as u64);
        params.iter().for_each(|&p| self.f64(p));
    }
    fn options(&mut self, o: &WeightOptions) {
        self.u64(o.weight_bits as u64);
        self.bool(o.bias);
        self.option(o.active.map(|a| a as u64));
        self.option(o.round.map(u64::from));
        self.bool(o.exact);
        self.option(o.acc.map(u64::from));
    }
    fn layer(&mut self, layer: &Layer) {
        match layer {
            Layer::QuantIdentity { bits, signed } => {
                self.u8(0);
                self.u64(*bits as u64);
                self.bool(*signed);
            }
            Layer::QuantLinear {
                in_features,
                out_features,
                options,
            } => {
                self.u8(1);
                self.u64(*in_features as u64);
                self.u64(*out_features as u64);
                self.options(options);
            }
            Layer::QuantConv2d(c) => {
                self.u8(2);
                for v in [c.in_channels, c.out_channels, c.kernel, c.stride, c.padding] {
                    self.u64(v as u64);
                }
                self.bool(c.input.is_some());
                if let Some((h, w)) = c.input {
                    self.u64(h as u64);
                    self.u64(w as u64);
                }
                self.options(&c.options);
            }
            Layer::AvgPool2d { kernel } => {
                self.u8(3);
                self.u64(*kernel as u64);
            }
            Layer::Flatten => self.u8(4),
            Layer::Activation(a) => {
                self.u8(5);
                self.activation(a);
            }
            Layer::Fork => self.u8(6),
            Layer::Join { op, bits, signed } => {
                self.u8(7);
                self.u8(match op {
                    JoinOp::Add => 0,
                    JoinOp::Sub => 1,
                    JoinOp::Mul => 2,
                    JoinOp::Concat => 3,
                });
                self.u64(*bits as u64);
                self.bool(*signed);
            }
            Layer::MaxPool2d { kernel } => {
                self.u8(8);
                self.u64(*kernel as u64);
            }
        }
    }
    /// A set by what fhe-nn rebuilds it from: vetted or custom, precision, shape, input
    /// key, last-lookup-layer decomposition.
    fn set(&mut self, set: &ParameterSet) {
        self.bool(set.is_vetted());
        self.u64(set.precision as u64);
        let s = set.shape();
        for v in [
            s.lwe_dimension,
            s.glwe_dimension,
            s.polynomial_size,
            s.pbs.0,
            s.pbs.1,
            s.ks.0,
            s.ks.1,
        ] {
            self.u64(v as u64);
        }
        self.bool(set.inputs == InputKey::Small);
        match set.last_layer_pbs {
            Some((base, levels)) => {
                self.bool(true);
                self.u64(base as u64);
                self.u64(levels as u64);
            }
            None => self.bool(false),
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DefinitionError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| bad("truncated"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, DefinitionError> {
        Ok(self.take(1)?[0])
    }
    fn bool(&mut self) -> Result<bool, DefinitionError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(bad(format!("{b} is not a boolean"))),
        }
    }
    fn u64(&mut self) -> Result<u64, DefinitionError> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    fn i64(&mut self) -> Result<i64, DefinitionError> {
        Ok(self.u64()? as i64)
    }
    fn f64(&mut self) -> Result<f64, DefinitionError> {
        Ok(f64::from_bits(self.u64()?))
    }
    fn usize(&mut self) -> Result<usize, DefinitionError> {
        let v = self.u64()?;
        usize::try_from(v).map_err(|_| bad(format!("{v} does not fit in memory")))
    }
    fn u32(&mut self) -> Result<u32, DefinitionError> {
        let v = self.u64()?;
        u32::try_from(v).map_err(|_| bad(format!("{v} is out of range")))
    }
    /// A count of items of at least `item_bytes` bytes each, no more than the bytes left
    /// hold: nothing is allocated for a forged count.
    fn count(&mut self, item_bytes: usize) -> Result<usize, DefinitionError> {
        let n = self.usize()?;
        let left = self.bytes.len() - self.at;
        if n > left / item_bytes.max(1) {
            return Err(bad(format!("a count of {n} with {left} bytes left")));
        }
        Ok(n)
    }
    fn str(&mut self) -> Result<String, DefinitionError> {
        let n = self.count(1)?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| bad("a name is not UTF-8"))
    }
    fn option(&mut self) -> Result<Option<u64>, DefinitionError> {
        Ok(match self.bool()? {
            true => Some(self.u64()?),
            false => None,
        })
    }
    fn activation(&mut self) -> Result<Activation, DefinitionError> {
        let name = self.str()?;
        let n = self.count(8)?;
        let params = (0..n).map(|_| self.f64()).collect::<Result<Vec<_>, _>>()?;
        Activation::from_name(&name, &params).map_err(bad)
    }
    fn options(&mut self) -> Result<WeightOptions, DefinitionError> {
        Ok(WeightOptions {
            weight_bits: self.u32()?,
            bias: self.bool()?,
            active: match self.option()? {
                Some(a) => Some(usize::try_from(a).map_err(|_| bad("active out of range"))?),
                None => None,
            },
            round: match self.option()? {
                Some(r) => Some(u32::try_from(r).map_err(|_| bad("round out of range"))?),
                None => None,
            },
            exact: self.bool()?,
            acc: match self.option()? {
                Some(a) => Some(u32::try_from(a).map_err(|_| bad("acc out of range"))?),
                None => None,
            },
        })
    }
    fn layer(&mut self) -> Result<Layer, DefinitionError> {
        Ok(match self.u8()? {
            0 => Layer::QuantIdentity {
                bits: self.u32()?,
                signed: self.bool()?,
            },
            1 => Layer::QuantLinear {
                in_features: self.usize()?,
                out_features: self.usize()?,
                options: self.options()?,
            },
            2 => {
                let [in_channels, out_channels, kernel, stride, padding] = [
                    self.usize()?,
                    self.usize()?,
                    self.usize()?,
                    self.usize()?,
                    self.usize()?,
                ];
                let input = match self.bool()? {
                    true => Some((self.usize()?, self.usize()?)),
                    false => None,
                };
                Layer::QuantConv2d(Conv2d {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    input,
                    options: self.options()?,
                })
            }
            3 => Layer::AvgPool2d {
                kernel: self.usize()?,
            },
            4 => Layer::Flatten,
            5 => Layer::Activation(self.activation()?),
            6 => Layer::Fork,
            7 => Layer::Join {
                op: match self.u8()? {
                    0 => JoinOp::Add,
                    1 => JoinOp::Sub,
                    2 => JoinOp::Mul,
                    3 => JoinOp::Concat,
                    op => return Err(bad(format!("unknown join {op}"))),
                },
                bits: self.u32()?,
                signed: self.bool()?,
            },
            8 => Layer::MaxPool2d {
                kernel: self.usize()?,
            },
            tag => return Err(bad(format!("unknown layer tag {tag}"))),
        })
    }
    fn set(&mut self) -> Result<ParameterSet, DefinitionError> {
        let is_vetted = self.bool()?;
        let precision = self.u32()?;
        let mut v = [0usize; 7];
        for x in &mut v {
            *x = self.usize()?;
        }
        let shape = Shape {
            lwe_dimension: v[0],
            glwe_dimension: v[1],
            polynomial_size: v[2],
            pbs: (v[3], v[4]),
            ks: (v[5], v[6]),
        };
        let inputs = match self.bool()? {
            true => InputKey::Small,
            false => InputKey::Big,
        };
        let last = match self.bool()? {
            true => Some((self.usize()?, self.usize()?)),
            false => None,
        };
        let base = if is_vetted {
            vetted(precision)
                .filter(|v| v.shape() == shape)
                .ok_or_else(|| bad(format!("no vetted {precision}-bit set of shape {shape:?}")))?
        } else {
            ParameterSet::custom_checked(shape, precision)
                .ok_or_else(|| bad(format!("precision {precision}")))?
        };
        let set = base.with_inputs(inputs).with_last_layer_pbs(last);
        if set.last_layer_pbs != last {
            return Err(bad(
                "a last lookup layer decomposition equal to the set's own",
            ));
        }
        security::check_set(&set).map_err(|e| bad(e.to_string()))?;
        Ok(set)
    }
}
