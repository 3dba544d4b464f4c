//! Named tensors read from the files the Python world writes: safetensors and `.npz`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::LoadError;

/// Metadata key holding the architecture a weight file was exported for (see
/// [`Architecture::signature`](crate::Architecture::signature)).
pub const ARCHITECTURE_KEY: &str = "fhe_nn.architecture";

/// Values of a tensor, integer or floating point as stored.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    Int(Vec<i64>),
    Float(Vec<f64>),
}

/// One named tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub values: Values,
}

impl Tensor {
    /// An integer tensor.
    pub fn int(shape: Vec<usize>, values: Vec<i64>) -> Tensor {
        Tensor {
            shape,
            values: Values::Int(values),
        }
    }

    /// A floating-point tensor.
    pub fn float(shape: Vec<usize>, values: Vec<f64>) -> Tensor {
        Tensor {
            shape,
            values: Values::Float(values),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.values {
            Values::Int(v) => v.len(),
            Values::Float(v) => v.len(),
        }
    }

    /// Whether the tensor holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A set of named tensors with optional string metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorFile {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

impl TensorFile {
    /// Reads a `.safetensors` or `.npz` file, by extension.
    pub fn read(path: &Path) -> Result<TensorFile, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
            path: path.display().to_string(),
            source,
        })?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("npz") => Self::from_npz(&bytes),
            _ => Self::from_safetensors(&bytes),
        }
    }

    /// Parses safetensors bytes, checking every tensor's dtype, shape and size.
    pub fn from_safetensors(bytes: &[u8]) -> Result<TensorFile, LoadError> {
        use safetensors::{Dtype, SafeTensors};
        let corrupt = |e: safetensors::SafeTensorError| LoadError::Corrupt {
            format: "safetensors",
            message: e.to_string(),
        };
        let st = SafeTensors::deserialize(bytes).map_err(corrupt)?;
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(corrupt)?;
        let metadata = meta
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let shape = view.shape().to_vec();
            macro_rules! decode {
                ($t:ty, $variant:ident, $conv:expr) => {{
                    let size = std::mem::size_of::<$t>();
                    let values = data
                        .chunks_exact(size)
                        .map(|c| {
                            let raw = <$t>::from_le_bytes(
                                c.try_into().expect("chunk of the type's size"),
                            );
                            ($conv)(raw)
                        })
                        .collect();
                    Values::$variant(values)
                }};
            }
            let values = match view.dtype() {
                Dtype::I8 => decode!(i8, Int, i64::from),
                Dtype::I16 => decode!(i16, Int, i64::from),
                Dtype::I32 => decode!(i32, Int, i64::from),
                Dtype::I64 => decode!(i64, Int, |v| v),
                Dtype::U8 => decode!(u8, Int, i64::from),
                Dtype::F32 => decode!(f32, Float, f64::from),
                Dtype::F64 => decode!(f64, Float, |v| v),
                other => {
                    return Err(LoadError::UnsupportedDtype {
                        tensor: name,
                        dtype: format!("{other:?}"),
                    })
                }
            };
            tensors.insert(name, Tensor { shape, values });
        }
        Ok(TensorFile { tensors, metadata })
    }

    /// Parses `.npz` bytes (compressed or not). An npz file has no metadata, so the
    /// architecture check of [`ARCHITECTURE_KEY`] applies to
    /// safetensors files only.
    pub fn from_npz(bytes: &[u8]) -> Result<TensorFile, LoadError> {
        use ndarray::{ArrayBase, ArrayD, IxDyn, OwnedRepr};
        use ndarray_npy::ReadNpyExt;
        let mut tensors = BTreeMap::new();
        // Sizes are checked (and entries decompressed under a cap) before any array is built.
        for (raw_name, data) in crate::npz::entries(bytes)? {
            let name = raw_name
                .strip_suffix(".npy")
                .unwrap_or(&raw_name)
                .to_string();
            macro_rules! attempt {
                ($t:ty, $variant:ident, $conv:expr) => {
                    if let Ok(a) = ArrayBase::<OwnedRepr<$t>, IxDyn>::read_npy(&data[..]) {
                        let a: ArrayD<$t> = a;
                        let shape = a.shape().to_vec();
                        let values = a.iter().map(|&v| ($conv)(v)).collect();
                        tensors.insert(
                            name,
                            Tensor {
                                shape,
                                values: Values::$variant(values),
                            },
                        );
                        continue;
                    }
                };
            }
            attempt!(f64, Float, |v| v);
            attempt!(f32, Float, f64::from);
            attempt!(i64, Int, |v| v);
            attempt!(i32, Int, i64::from);
            attempt!(i16, Int, i64::from);
            attempt!(i8, Int, i64::from);
            attempt!(u8, Int, i64::from);
            return Err(LoadError::UnsupportedDtype {
                tensor: name,
                dtype: "not a numeric npy array".into(),
            });
        }
        Ok(TensorFile {
            tensors,
            metadata: BTreeMap::new(),
        })
    }

    /// Serializes to safetensors bytes, integers as i32 when they fit (i64 otherwise),
    /// floats as f64.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, LoadError> {
        use safetensors::{tensor::TensorView, Dtype};
        let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, t) in &self.tensors {
            let (dtype, bytes) = match &t.values {
                Values::Int(v) if v.iter().all(|&x| i32::try_from(x).is_ok()) => (
                    Dtype::I32,
                    v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
                ),
                Values::Int(v) => (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                Values::Float(v) => (Dtype::F64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            };
            buffers.push((name.clone(), dtype, t.shape.clone(), bytes));
        }
        let views = buffers
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                TensorView::new(*dtype, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| LoadError::Corrupt {
                        format: "safetensors",
                        message: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let metadata: std::collections::HashMap<String, String> =
            self.metadata.clone().into_iter().collect();
        safetensors::serialize(views, Some(metadata)).map_err(|e| LoadError::Corrupt {
            format: "safetensors",
            message: e.to_string(),
        })
    }
}
