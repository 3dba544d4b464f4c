//! The parts of an ONNX `ModelProto` the importer reads: the main graph's nodes in order,
//! its constants (initializers), its data input with its shape, and its output.

use std::collections::HashMap;

use super::proto::{for_each, push_doubles, push_floats, push_ints, string, Field};
use super::OnnxError;

/// Largest number of elements of one tensor.
const MAX_ELEMENTS: usize = 1 << 28;
/// Most nodes a graph may have (the shipped exports have fewer than 100).
pub(super) const MAX_NODES: usize = 1 << 14;

/// A constant tensor, its values widened to `f64` (exact for the integer types read).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Constant {
    pub dims: Vec<usize>,
    pub values: Vec<f64>,
    /// Whether the element type is an integer type.
    pub integer: bool,
    /// ONNX's element type.
    pub data_type: i64,
}

impl Constant {
    /// The range of the element type (the bounds of a quantization into it).
    pub fn type_range(&self) -> (f64, f64) {
        match self.data_type {
            2 => (0.0, 255.0),
            3 => (-128.0, 127.0),
            4 => (0.0, 65535.0),
            5 => (-32768.0, 32767.0),
            6 => (i32::MIN as f64, i32::MAX as f64),
            _ => (f64::NEG_INFINITY, f64::INFINITY),
        }
    }
}

/// A node attribute the importer reads.
#[derive(Clone, Debug)]
pub(super) enum Attribute {
    Int(i64),
    Float(f64),
    Ints(Vec<i64>),
    Tensor(Constant),
    Other,
}

#[derive(Clone, Debug, Default)]
pub(super) struct Node {
    pub name: String,
    pub op: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attributes: HashMap<String, Attribute>,
}

impl Node {
    pub fn int(&self, name: &str, default: i64) -> i64 {
        match self.attributes.get(name) {
            Some(Attribute::Int(v)) => *v,
            _ => default,
        }
    }

    pub fn float(&self, name: &str, default: f64) -> f64 {
        match self.attributes.get(name) {
            Some(Attribute::Float(v)) => *v,
            _ => default,
        }
    }

    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        match self.attributes.get(name) {
            Some(Attribute::Ints(v)) => Some(v.clone()),
            _ => None,
        }
    }
}

/// The main graph.
#[derive(Debug)]
pub(super) struct Graph {
    pub nodes: Vec<Node>,
    pub constants: HashMap<String, Constant>,
    /// The one input that is not a constant.
    pub input: String,
    /// Its shape (`-1` where symbolic).
    pub input_shape: Vec<i64>,
    pub output: String,
}

fn malformed(what: impl Into<String>) -> OnnxError {
    OnnxError::Malformed(what.into())
}

fn bytes(field: Field<'_>) -> Result<&[u8], OnnxError> {
    match field {
        Field::Bytes(b) => Ok(b),
        _ => Err(malformed("a message field has another wire type")),
    }
}

fn varint(field: Field<'_>) -> Result<i64, OnnxError> {
    match field {
        Field::Varint(v) => Ok(v as i64),
        _ => Err(malformed("an integer field has another wire type")),
    }
}

impl Graph {
    /// The main graph of a serialized `ModelProto`.
    pub fn parse(model: &[u8]) -> Result<Graph, OnnxError> {
        let (mut graph, mut opsets) = (None, 0);
        for_each(model, |number, field| {
            match number {
                7 => graph = Some(bytes(field)?),
                // `opset_import`, which a model must have (the ONNX spec): without it the
                // operators' versions are unknown.
                8 => {
                    bytes(field)?;
                    opsets += 1;
                }
                _ => {}
            }
            Ok(())
        })?;
        let graph = graph.ok_or_else(|| malformed("no graph (is this an ONNX model?)"))?;
        if opsets == 0 {
            return Err(malformed(
                "no opset_import: the operators' versions are unknown",
            ));
        }
        let mut nodes = Vec::new();
        let mut constants = HashMap::new();
        let mut inputs: Vec<(String, Vec<i64>)> = Vec::new();
        let mut outputs = Vec::new();
        for_each(graph, |number, field| {
            match number {
                1 if nodes.len() >= MAX_NODES => {
                    return Err(malformed(format!("more than {MAX_NODES} nodes")))
                }
                1 => nodes.push(node(bytes(field)?)?),
                5 => {
                    let (name, t) = tensor(bytes(field)?)?;
                    constants.insert(name, t);
                }
                11 => inputs.push(value_info(bytes(field)?)?),
                12 => outputs.push(value_info(bytes(field)?)?.0),
                _ => {}
            }
            Ok(())
        })?;
        let data: Vec<_> = inputs
            .into_iter()
            .filter(|(name, _)| !constants.contains_key(name))
            .collect();
        let [(input, input_shape)] = <[_; 1]>::try_from(data).map_err(|d: Vec<_>| {
            malformed(format!(
                "the graph has {} inputs besides its constants; fhe-nn takes one",
                d.len()
            ))
        })?;
        let [output] = <[String; 1]>::try_from(outputs).map_err(|o| {
            malformed(format!(
                "the graph has {} outputs; fhe-nn takes one",
                o.len()
            ))
        })?;
        Ok(Graph {
            nodes,
            constants,
            input,
            input_shape,
            output,
        })
    }
}

fn node(b: &[u8]) -> Result<Node, OnnxError> {
    let mut n = Node::default();
    for_each(b, |number, field| {
        match number {
            1 => n.inputs.push(string(field)?),
            2 => n.outputs.push(string(field)?),
            3 => n.name = string(field)?,
            4 => n.op = string(field)?,
            5 => {
                let (name, a) = attribute(bytes(field)?)?;
                n.attributes.insert(name, a);
            }
            7 => {
                let domain = string(field)?;
                if !domain.is_empty() && domain != "ai.onnx" {
                    return Err(malformed(format!(
                        "operator domain `{domain}` is not ONNX's"
                    )));
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    if n.name.is_empty() {
        n.name = n.outputs.first().cloned().unwrap_or_default();
    }
    Ok(n)
}

fn attribute(b: &[u8]) -> Result<(String, Attribute), OnnxError> {
    let (mut name, mut value) = (String::new(), Attribute::Other);
    let mut ints = Vec::new();
    for_each(b, |number, field| {
        match number {
            1 => name = string(field)?,
            2 => {
                if let Field::Fixed32(v) = field {
                    value = Attribute::Float(f64::from(f32::from_bits(v)));
                }
            }
            3 => value = Attribute::Int(varint(field)?),
            5 => value = Attribute::Tensor(tensor(bytes(field)?)?.1),
            8 => push_ints(field, &mut ints)?,
            _ => {}
        }
        Ok(())
    })?;
    if !ints.is_empty() {
        value = Attribute::Ints(ints);
    }
    Ok((name, value))
}

/// A `ValueInfoProto`: its name and, for a tensor, its shape.
fn value_info(b: &[u8]) -> Result<(String, Vec<i64>), OnnxError> {
    let (mut name, mut shape) = (String::new(), Vec::new());
    for_each(b, |number, field| {
        match number {
            1 => name = string(field)?,
            // TypeProto → tensor_type (1) → shape (2) → dim (1) → dim_value (1).
            2 => for_each(bytes(field)?, |n, f| {
                if n == 1 {
                    for_each(bytes(f)?, |n, f| {
                        if n == 2 {
                            for_each(bytes(f)?, |n, f| {
                                if n == 1 {
                                    let mut d = -1;
                                    for_each(bytes(f)?, |n, f| {
                                        if n == 1 {
                                            d = varint(f)?;
                                        }
                                        Ok(())
                                    })?;
                                    shape.push(d);
                                }
                                Ok(())
                            })?;
                        }
                        Ok(())
                    })?;
                }
                Ok(())
            })?,
            _ => {}
        }
        Ok(())
    })?;
    Ok((name, shape))
}

/// A `TensorProto`: its name and values. External data and unknown types are refused.
fn tensor(b: &[u8]) -> Result<(String, Constant), OnnxError> {
    let (mut name, mut dims, mut data_type) = (String::new(), Vec::new(), 0i64);
    let (mut floats, mut ints, mut raw, mut external) = (Vec::new(), Vec::new(), None, false);
    for_each(b, |number, field| {
        match number {
            1 => push_ints(field, &mut dims)?,
            2 => data_type = varint(field)?,
            4 => push_floats(field, &mut floats)?,
            5 | 7 | 11 => push_ints(field, &mut ints)?,
            8 => name = string(field)?,
            9 => raw = Some(bytes(field)?),
            10 => push_doubles(field, &mut floats)?,
            13 => external = true,
            14 => external |= varint(field)? == 1,
            _ => {}
        }
        Ok(())
    })?;
    let bad = |why: String| OnnxError::BadTensor {
        name: name.clone(),
        why,
    };
    if external {
        return Err(bad("its data is stored outside the file".into()));
    }
    let dims: Vec<usize> = dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("dimension {d}"))))
        .collect::<Result<_, _>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&c| c <= MAX_ELEMENTS)
        .ok_or_else(|| bad(format!("shape {dims:?} is too large")))?;
    // Element size and decoder of raw little-endian data, per ONNX data type.
    let (size, integer): (usize, bool) = match data_type {
        1 => (4, false),
        2 | 3 => (1, true),
        4 | 5 => (2, true),
        6 => (4, true),
        7 => (8, true),
        11 => (8, false),
        other => return Err(bad(format!("element type {other} is not read"))),
    };
    let values: Vec<f64> = match raw {
        Some(r) => {
            if r.len() != count * size {
                return Err(bad(format!(
                    "{} bytes of data for {count} elements of {size} bytes",
                    r.len()
                )));
            }
            r.chunks_exact(size)
                .map(|c| match data_type {
                    1 => f64::from(f32::from_le_bytes(c.try_into().expect("4 bytes"))),
                    2 => f64::from(c[0]),
                    3 => f64::from(c[0] as i8),
                    4 => f64::from(u16::from_le_bytes(c.try_into().expect("2 bytes"))),
                    5 => f64::from(i16::from_le_bytes(c.try_into().expect("2 bytes"))),
                    6 => f64::from(i32::from_le_bytes(c.try_into().expect("4 bytes"))),
                    7 => i64::from_le_bytes(c.try_into().expect("8 bytes")) as f64,
                    _ => f64::from_le_bytes(c.try_into().expect("8 bytes")),
                })
                .collect()
        }
        None if integer => ints.iter().map(|&v| v as f64).collect(),
        None => floats,
    };
    if values.len() != count {
        return Err(bad(format!(
            "{} values for shape {dims:?} ({count} elements)",
            values.len()
        )));
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(bad("holds a value that is not finite".into()));
    }
    Ok((
        name,
        Constant {
            dims,
            values,
            integer,
            data_type,
        },
    ))
}
