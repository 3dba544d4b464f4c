//! Errors of loading a model and of feeding it inputs.

/// Why weights could not become a model. Each variant names the layer or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("corrupt or truncated {format} data: {message}")]
    Corrupt {
        format: &'static str,
        message: String,
    },
    #[error("tensor `{tensor}` has unsupported element type {dtype}")]
    UnsupportedDtype { tensor: String, dtype: String },
    #[error("the weights were exported for `{found}`, but the model declares `{expected}`")]
    ArchitectureMismatch { expected: String, found: String },
    #[error("layer {layer} `{description}`: missing tensor `{tensor}`")]
    MissingTensor {
        layer: usize,
        description: String,
        tensor: String,
    },
    #[error("unexpected tensor `{tensor}`: no declared layer uses it (wrong architecture, or a layer declared without `bias`?)")]
    UnexpectedTensor { tensor: String },
    #[error("tensor `{tensor}` has shape {found:?}, expected {expected}")]
    ShapeMismatch {
        tensor: String,
        expected: String,
        found: Vec<usize>,
    },
    #[error("tensor `{tensor}` holds {value} at index {index}, outside the declared {bits}-bit range [{min}, {max}]")]
    WeightOutOfRange {
        tensor: String,
        bits: u32,
        value: i64,
        index: usize,
        min: i64,
        max: i64,
    },
    #[error("tensor `{tensor}` must hold integers, found {value} at index {index}")]
    NotInteger {
        tensor: String,
        value: f64,
        index: usize,
    },
    #[error("tensor `{tensor}` holds a non-finite value ({value}) at index {index}")]
    NonFinite {
        tensor: String,
        value: f64,
        index: usize,
    },
    #[error("tensor `{tensor}` must be strictly positive, found {value} at index {index}")]
    NonPositiveScale {
        tensor: String,
        value: f64,
        index: usize,
    },
    #[error("tensor `{tensor}`: scale {value} at index {index} is outside 1e-30..=1e30 (products of scales and accumulators would not be finite)")]
    ScaleOutOfRange {
        tensor: String,
        value: f64,
        index: usize,
    },
    #[error("tensor `{tensor}`: zero point {value} is not supported (Brevitas quantizers here use zero point 0)")]
    ZeroPoint { tensor: String, value: f64 },
    #[error("layer {layer} `{description}`: {what} is not supported by the runtime yet")]
    Unsupported {
        layer: usize,
        description: String,
        what: String,
    },
    #[error("layer {layer}: the exact accumulator range {exact} escapes the compile-time bound {bound}; this is a bug")]
    RangeEscapesBound {
        layer: usize,
        exact: String,
        bound: String,
    },
    #[error("layer {layer} declares `acc = {acc}`, but output channel {channel}'s accumulator reaches [{min}, {max}] on the inputs it can get, beyond ±{bound}; train under the bound or declare a wider `acc`")]
    AccumulatorBoundBroken {
        layer: usize,
        channel: usize,
        /// The channel's exact accumulator range.
        min: i64,
        max: i64,
        acc: u32,
        bound: u64,
    },
    #[error("the exact tables of the layers up to layer {layer} would hold {entries} entries, beyond the limit of {limit} ({} GiB): the weights make accumulators this wide; declare narrower weights or an `acc` bound", (.limit * 8) >> 30)]
    TablesTooLarge {
        layer: usize,
        entries: u64,
        limit: u64,
    },
}

/// Why an input batch was refused.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum InputError {
    #[error("input has {found} features per sample, the model takes {expected}")]
    Width { expected: usize, found: usize },
    #[error("input sample {sample}, feature {feature} is not finite ({value})")]
    NonFinite {
        sample: usize,
        feature: usize,
        value: f64,
    },
    #[error(
        "quantized input sample {sample}, feature {feature} = {value} is outside [{min}, {max}]"
    )]
    OutOfRange {
        sample: usize,
        feature: usize,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error("input range [{min}, {max}] is empty or not within the input quantizer's [{declared_min}, {declared_max}]")]
    Range {
        min: i64,
        max: i64,
        declared_min: i64,
        declared_max: i64,
    },
}
