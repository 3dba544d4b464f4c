//! Quantization-aware training in pure Rust: fake quantization with a straight-through
//! estimator, Brevitas-like scales, Adam, seeded and deterministic; and post-training
//! quantization of float weights with a calibration set ([`Trainer::from_float`]). Both
//! write the tensors [`QuantModel::from_tensors`](crate::QuantModel::from_tensors) loads.
//!
//! Scales follow Brevitas' defaults: weights per tensor, `max|W| / (2^(w-1) - 1)`; the
//! input quantizer from the training data's largest magnitude; every other quantizer from a
//! running average of its input's largest magnitude.

use ndarray::{s, Array1, Array2, ArrayView2, Axis};

use crate::arch::activation::Activation;
use crate::arch::analysis::{quantizer_range, weight_max};
use crate::arch::geometry::Window;
use crate::arch::layer::{JoinOp, Layer, WeightOptions};
use crate::architecture::Architecture;
use crate::model::fold::{affine_of_batch_norm, fold_affine};
use crate::rng::SplitMix64;
use crate::tensors::ARCHITECTURE_KEY;
use crate::tensors::{Tensor, TensorFile};

/// Training settings.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    /// Batch normalization after every weighted layer but the last (train-time statistics,
    /// running averages at evaluation), folded into the exported weight scales, signs and
    /// biases: the runtime's per-channel tables absorb it.
    pub batch_norm: bool,
    /// Holds every `Add`/`Sub` join's shared quantizer at the scale of the tensor its fork
    /// saved (Brevitas's spelling: the block's input quantizer reused at the add), so the
    /// shared quantizer re-quantizes the forked values to themselves and the fork's side
    /// costs no lookup under FHE. Off: the shared quantizer tracks both sides' magnitudes.
    pub joins_at_fork_scale: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 40,
            batch_size: 64,
            learning_rate: 0.003,
            seed: 1,
            batch_norm: false,
            joins_at_fork_scale: false,
        }
    }
}

/// Why training could not start.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum TrainError {
    #[error("the trainer supports networks of QuantIdentity, QuantLinear, QuantConv2d, AvgPool2d (of a quantized image), Flatten and activations; layer {layer} is `{name}`")]
    Unsupported { layer: usize, name: String },
    #[error("{inputs} input rows but {labels} labels")]
    LabelCount { inputs: usize, labels: usize },
    #[error("label {label} of sample {sample} is not below the {classes} outputs")]
    Label {
        sample: usize,
        label: usize,
        classes: usize,
    },
    #[error("input has {found} features, the network takes {expected}")]
    Width { expected: usize, found: usize },
    #[error("no training data")]
    Empty,
    #[error("input sample {sample}, feature {feature} is not finite ({value})")]
    NonFinite {
        sample: usize,
        feature: usize,
        value: f64,
    },
    #[error("tensor `{name}` {problem}")]
    Tensor { name: String, problem: String },
    #[error("batch normalization folds into a bias, but layer {layer} is declared without one (`bias = false`)")]
    BatchNormWithoutBias { layer: usize },
}

/// Per-epoch progress.
#[derive(Clone, Debug)]
pub struct EpochStats {
    pub epoch: usize,
    pub loss: f64,
    pub train_accuracy: f64,
}

/// A fake-quantizer: bits, signedness and the current scale.
#[derive(Clone, Debug)]
struct FakeQuant {
    layer: usize,
    bits: u32,
    signed: bool,
    scale: f64,
    /// Running average of the largest magnitude seen (none for the input quantizer).
    running: Option<f64>,
}

impl FakeQuant {
    fn qmax(&self) -> f64 {
        quantizer_range(self.bits, self.signed, false).max as f64
    }

    /// Quantize-dequantize; the mask is the straight-through gradient (0 where clamped).
    fn apply(&self, x: &Array2<f64>) -> (Array2<f64>, Array2<f64>) {
        let r = quantizer_range(self.bits, self.signed, false);
        let (lo, hi) = (r.min as f64, r.max as f64);
        let q = x.mapv(|v| (v / self.scale).round_ties_even().clamp(lo, hi) * self.scale);
        let mask = x.mapv(|v| {
            let t = v / self.scale;
            if t < lo - 0.5 || t > hi + 0.5 {
                0.0
            } else {
                1.0
            }
        });
        (q, mask)
    }
}

struct Dense {
    layer: usize,
    weight: Array2<f64>,
    bias: Array1<f64>,
    weight_bits: u32,
    has_bias: bool,
    /// Activations after this layer, then the quantizer of the next layer's input.
    activations: Vec<Activation>,
    next_quant: Option<FakeQuant>,
    adam: [Adam; 2],
    /// One weight scale per output neuron instead of one per tensor.
    per_channel: bool,
    /// A convolution's geometry; `None` for a fully connected layer.
    conv: Option<Window>,
    /// An average pooling: fixed weights (`1/k²` on the window of its own channel), nothing
    /// to train or export.
    pool: bool,
    /// Batch normalization of the sums, per output channel.
    norm: Option<BatchNorm>,
    /// The largest `‖w‖₁` of a channel's integer weights that keeps a declared `acc` bound
    /// for this layer's inputs (`⌊(2^(acc−1) − 1) / max|x|⌋`); `None`: no bound.
    l1_budget: Option<i64>,
    /// A node of the graph instead of weighted sums (nothing to train; `pool` is set).
    graph: Option<GraphOp>,
}

/// The options of a layer without trained weights (a pooling, a graph node).
const UNTRAINED: WeightOptions = WeightOptions {
    weight_bits: 2,
    bias: false,
    active: None,
    round: None,
    exact: false,
    acc: None,
};

/// The layers that make a network more than a chain, as the trainer runs them.
#[derive(Clone, Debug)]
enum GraphOp {
    /// Saves the (quantized) tensor for its join; passes it on unchanged.
    Fork,
    /// `q(fork) ∘ q(current)` through the join's shared quantizer (straight-through
    /// gradients to both sides): a sum, difference, product or concatenation.
    Join { op: JoinOp, quant: FakeQuant },
    /// The largest value of each window (the gradient goes to it).
    MaxPool(Window),
}

/// What the backward pass needs of a layer beyond its input, sums and mask.
enum Extra {
    None,
    /// A join's quantized sides and their straight-through masks: the fork's, the current.
    Join {
        left: (Array2<f64>, Array2<f64>),
        right: (Array2<f64>, Array2<f64>),
    },
    /// A max pool's chosen input index per output.
    Max(Array2<usize>),
}

/// One forward step's record for the backward pass.
struct Cached {
    input: Array2<f64>,
    sums: Array2<f64>,
    mask: Array2<f64>,
    weight: Array2<f64>,
    extra: Extra,
}

/// The quantile of magnitudes a quantizer's scale tracks: a high one rather than the
/// maximum, so that a few outliers do not cost every other value its resolution.
fn magnitude_quantile<'a>(values: impl Iterator<Item = &'a f64>) -> f64 {
    let mut mags: Vec<f64> = values.map(|v| v.abs()).collect();
    if mags.is_empty() {
        return 0.0;
    }
    let k = ((mags.len() as f64 * 0.99) as usize).min(mags.len() - 1);
    *mags.select_nth_unstable_by(k, |a, b| a.total_cmp(b)).1
}

impl FakeQuant {
    /// Moves the scale towards what `magnitude` (a quantile of the values) asks for.
    fn track(&mut self, magnitude: f64) {
        let r = self.running.unwrap_or(0.0);
        let r = if r == 0.0 {
            magnitude
        } else {
            0.9 * r + 0.1 * magnitude
        };
        self.running = Some(r);
        self.scale = (r / self.qmax()).max(1e-12);
    }
}

/// The join of two quantized sides of a batch.
fn join(op: JoinOp, left: &Array2<f64>, right: &Array2<f64>) -> Array2<f64> {
    match op {
        JoinOp::Add | JoinOp::Sub => left + &(right * op.sign() as f64),
        JoinOp::Mul => left * right,
        JoinOp::Concat => {
            ndarray::concatenate(Axis(1), &[left.view(), right.view()]).expect("one batch")
        }
    }
}

/// The gradients of a join's two sides from the gradient of its output (before the sides'
/// straight-through masks).
fn join_backward(
    op: JoinOp,
    grad: &Array2<f64>,
    left: &Array2<f64>,
    right: &Array2<f64>,
) -> (Array2<f64>, Array2<f64>) {
    match op {
        JoinOp::Add | JoinOp::Sub => (grad.clone(), grad * op.sign() as f64),
        // d(a·b)/da = b and d(a·b)/db = a.
        JoinOp::Mul => (grad * right, grad * left),
        JoinOp::Concat => {
            let m = left.ncols();
            (
                grad.slice(ndarray::s![.., ..m]).to_owned(),
                grad.slice(ndarray::s![.., m..]).to_owned(),
            )
        }
    }
}

/// Max pooling of a batch over `g`'s windows (stride = kernel, no padding): the maxima, and
/// the input index each came from.
fn max_pool(g: &Window, a: &Array2<f64>) -> (Array2<f64>, Array2<usize>) {
    let p = g.positions();
    let outputs = g.channels * p;
    let mut arg = Array2::zeros((a.nrows(), outputs));
    let out = Array2::from_shape_fn((a.nrows(), outputs), |(b, o)| {
        let (c, pos) = (o / p, o % p);
        let (mut best, mut best_i) = (f64::NEG_INFINITY, 0);
        for i in g.pool_sources(c, pos) {
            if a[(b, i)] > best {
                (best, best_i) = (a[(b, i)], i);
            }
        }
        arg[(b, o)] = best_i;
        best
    });
    (out, arg)
}

/// The gradient of a max pool's input: each output's gradient at the value it chose.
fn max_pool_backward(arg: &Array2<usize>, grad: &Array2<f64>, inputs: usize) -> Array2<f64> {
    let mut grad_in = Array2::zeros((grad.nrows(), inputs));
    for ((b, o), &i) in arg.indexed_iter() {
        grad_in[(b, i)] += grad[(b, o)];
    }
    grad_in
}

/// Batch normalization of a layer's sums, per output channel (a convolution's channel
/// spans all its positions): `γ (z - μ) / σ + β`.
struct BatchNorm {
    gamma: Array1<f64>,
    beta: Array1<f64>,
    running_mean: Array1<f64>,
    running_var: Array1<f64>,
    adam: [Adam; 2],
    /// The last training batch's normalized sums and per-channel `σ`, for backward.
    saved: Option<(Array2<f64>, Array1<f64>)>,
}

const NORM_EPSILON: f64 = 1e-5;
const NORM_MOMENTUM: f64 = 0.1;

impl BatchNorm {
    fn new(channels: usize) -> BatchNorm {
        BatchNorm {
            gamma: Array1::ones(channels),
            beta: Array1::zeros(channels),
            running_mean: Array1::zeros(channels),
            running_var: Array1::ones(channels),
            adam: [Adam::new(channels), Adam::new(channels)],
            saved: None,
        }
    }

    /// Normalizes sums `z` (`[batch, channels × positions]`, channel-major): with the
    /// batch's statistics when training (and updates the running ones), else the running.
    fn forward(&mut self, z: &Array2<f64>, positions: usize, training: bool) -> Array2<f64> {
        let channels = self.gamma.len();
        let channel = |col: usize| col / positions;
        let (mean, var) = if training {
            let count = (z.nrows() * positions) as f64;
            let mut mean: Array1<f64> = Array1::zeros(channels);
            for ((_, col), &v) in z.indexed_iter() {
                mean[channel(col)] += v / count;
            }
            let mut var: Array1<f64> = Array1::zeros(channels);
            for ((_, col), &v) in z.indexed_iter() {
                var[channel(col)] += (v - mean[channel(col)]).powi(2) / count;
            }
            self.running_mean = &self.running_mean * (1.0 - NORM_MOMENTUM) + &mean * NORM_MOMENTUM;
            self.running_var = &self.running_var * (1.0 - NORM_MOMENTUM) + &var * NORM_MOMENTUM;
            (mean, var)
        } else {
            (self.running_mean.clone(), self.running_var.clone())
        };
        let sigma = var.mapv(|v: f64| (v + NORM_EPSILON).sqrt());
        let normalized = Array2::from_shape_fn(z.dim(), |(b, col)| {
            (z[(b, col)] - mean[channel(col)]) / sigma[channel(col)]
        });
        let out = Array2::from_shape_fn(z.dim(), |(b, col)| {
            self.gamma[channel(col)] * normalized[(b, col)] + self.beta[channel(col)]
        });
        if training {
            self.saved = Some((normalized, sigma));
        }
        out
    }

    /// From the gradient of the normalized output: the gradients of `γ`, `β` and the sums
    /// (through the batch statistics of the last training forward pass).
    fn backward(
        &self,
        grad: &Array2<f64>,
        positions: usize,
    ) -> (Array1<f64>, Array1<f64>, Array2<f64>) {
        let (normalized, sigma) = self.saved.as_ref().expect("a training forward pass first");
        let channels = self.gamma.len();
        let channel = |col: usize| col / positions;
        let count = (grad.nrows() * positions) as f64;
        let (mut g_gamma, mut g_beta) = (Array1::zeros(channels), Array1::zeros(channels));
        for ((b, col), &g) in grad.indexed_iter() {
            g_gamma[channel(col)] += g * normalized[(b, col)];
            g_beta[channel(col)] += g;
        }
        // dz = γ/σ · (g - mean(g) - x̂ · mean(g · x̂)), per channel.
        let g_z = Array2::from_shape_fn(grad.dim(), |(b, col)| {
            let c = channel(col);
            self.gamma[c] / sigma[c]
                * (grad[(b, col)] - g_beta[c] / count - normalized[(b, col)] * g_gamma[c] / count)
        });
        (g_gamma, g_beta, g_z)
    }

    /// The affine map the running statistics give: `z ↦ a z + b`, per channel.
    fn folded(&self) -> (Vec<f64>, Vec<f64>) {
        affine_of_batch_norm(
            self.gamma.as_slice().expect("contiguous"),
            self.beta.as_slice().expect("contiguous"),
            self.running_mean.as_slice().expect("contiguous"),
            self.running_var.as_slice().expect("contiguous"),
            NORM_EPSILON,
        )
    }
}

/// The patches of a batch over `g`: one row per (sample, output position), one column per
/// filter weight (zeros in the padding).
fn patches(g: &Window, a: &Array2<f64>) -> Array2<f64> {
    let (p, k2) = (g.positions(), g.channels * g.taps());
    Array2::from_shape_fn((a.nrows() * p, k2), |(row, col)| {
        g.source(row % p, col).map_or(0.0, |i| a[(row / p, i)])
    })
}

impl Dense {
    /// A layer with these weights and biases, nothing after it yet.
    fn with_parts(
        layer: usize,
        weight: Array2<f64>,
        bias: Array1<f64>,
        options: WeightOptions,
        conv: Option<Window>,
    ) -> Dense {
        let (out, fan_in) = weight.dim();
        Dense {
            layer,
            weight,
            bias,
            weight_bits: options.weight_bits,
            has_bias: options.bias,
            activations: Vec::new(),
            next_quant: None,
            adam: [Adam::new(out * fan_in), Adam::new(out)],
            per_channel: false,
            conv,
            pool: false,
            norm: None,
            l1_budget: None,
            graph: None,
        }
    }

    /// A graph node at declared layer `layer`: no weights, nothing trained.
    fn graph_node(layer: usize, op: GraphOp) -> Dense {
        let options = UNTRAINED;
        Dense {
            pool: true,
            graph: Some(op),
            ..Dense::with_parts(
                layer,
                Array2::zeros((0, 0)),
                Array1::zeros(0),
                options,
                None,
            )
        }
    }

    /// A fully connected (`conv: None`) or convolution layer of `(out, fan_in)` weights
    /// drawn uniformly in `±1/√fan_in`, and biases if it has them (PyTorch's default).
    fn initialized(
        rng: &mut SplitMix64,
        layer: usize,
        (out, fan_in): (usize, usize),
        options: WeightOptions,
        conv: Option<Window>,
    ) -> Dense {
        let bound = 1.0 / (fan_in as f64).sqrt();
        let weight = Array2::from_shape_fn((out, fan_in), |_| (2.0 * rng.uniform() - 1.0) * bound);
        let bias = Array1::from_shape_fn(out, |_| {
            if options.bias {
                (2.0 * rng.uniform() - 1.0) * bound
            } else {
                0.0
            }
        });
        Dense::with_parts(layer, weight, bias, options, conv)
    }

    /// An average pooling over `geometry`: `1/k²` on the window of each channel's own input
    /// channel, nothing trained.
    fn pooling(layer: usize, geometry: Window) -> Dense {
        let (channels, window) = (geometry.channels, geometry.kernel * geometry.kernel);
        let weight = Array2::from_shape_fn((channels, channels * window), |(o, c)| {
            if c / window == o {
                1.0 / window as f64
            } else {
                0.0
            }
        });
        let options = UNTRAINED;
        Dense {
            pool: true,
            ..Dense::with_parts(
                layer,
                weight,
                Array1::zeros(channels),
                options,
                Some(geometry),
            )
        }
    }

    /// Whether the layer is a `Fork`.
    fn is_fork(&self) -> bool {
        matches!(self.graph, Some(GraphOp::Fork))
    }

    /// Output positions per channel (1 for a fully connected layer).
    fn positions(&self) -> usize {
        self.conv.map_or(1, |g| g.positions())
    }

    /// Values each sample feeds the layer.
    fn in_features(&self) -> usize {
        match &self.conv {
            Some(g) => g.channels * g.height * g.width,
            None => self.weight.ncols(),
        }
    }

    /// The layer's sums for a batch: `[batch, outputs]`, a convolution's outputs
    /// channel-major (`channel, row, column`), as the runtime flattens them.
    fn sums(&self, a: &Array2<f64>, wq: &Array2<f64>) -> Array2<f64> {
        let Some(g) = &self.conv else {
            return a.dot(&wq.t()) + &self.bias;
        };
        let p = g.positions();
        let cols = patches(g, a).dot(&wq.t());
        Array2::from_shape_fn((a.nrows(), wq.nrows() * p), |(b, o)| {
            cols[(b * p + o % p, o / p)] + self.bias[o / p]
        })
    }

    /// Gradients of the weights, the biases and the input, from the gradient of the sums.
    fn backward(
        &self,
        a: &Array2<f64>,
        grad: &Array2<f64>,
        wq: &Array2<f64>,
    ) -> (Array2<f64>, Array1<f64>, Array2<f64>) {
        let Some(g) = &self.conv else {
            return (grad.t().dot(a), grad.sum_axis(Axis(0)), grad.dot(wq));
        };
        let (p, out) = (g.positions(), wq.nrows());
        let per_position = Array2::from_shape_fn((a.nrows() * p, out), |(row, o)| {
            grad[(row / p, o * p + row % p)]
        });
        let gw = per_position.t().dot(&patches(g, a));
        let gb = per_position.sum_axis(Axis(0));
        let grad_patches = per_position.dot(wq);
        let mut grad_in = Array2::zeros(a.dim());
        for ((row, col), &v) in grad_patches.indexed_iter() {
            if let Some(i) = g.source(row % p, col) {
                grad_in[(row / p, i)] += v;
            }
        }
        (gw, gb, grad_in)
    }

    /// The weight scale of each output neuron: `max|W| / (2^(w-1) - 1)` over the tensor, or
    /// over the neuron's row when per channel.
    fn weight_scales(&self) -> Vec<f64> {
        let wm = weight_max(self.weight_bits) as f64;
        let scale = |m: f64| (m / wm).max(1e-12);
        if self.per_channel {
            self.weight
                .rows()
                .into_iter()
                .map(|r| scale(r.iter().fold(0.0f64, |m, w| m.max(w.abs()))))
                .collect()
        } else {
            vec![scale(self.weight.iter().fold(0.0f64, |m, w| m.max(w.abs()))); self.weight.nrows()]
        }
    }

    /// The integer weights and their scales. Under an ℓ1 budget (a declared `acc`), each
    /// channel's rounded weights are brought within it at the smallest rounding error (see
    /// [`within_l1_budget`]): the bound holds by construction, in training's forward pass
    /// (so training adapts to it) as in the export.
    fn integer_weights(&self) -> (Array2<i64>, Vec<f64>) {
        let scales = self.weight_scales();
        let wm = weight_max(self.weight_bits) as f64;
        let mut ints = Array2::from_shape_fn(self.weight.dim(), |(j, i)| {
            (self.weight[(j, i)] / scales[j])
                .round_ties_even()
                .clamp(-wm, wm) as i64
        });
        if let Some(budget) = self.l1_budget {
            for (j, mut row) in ints.rows_mut().into_iter().enumerate() {
                let exact: Vec<f64> = self.weight.row(j).iter().map(|w| w / scales[j]).collect();
                within_l1_budget(row.as_slice_mut().expect("contiguous"), &exact, budget);
            }
        }
        (ints, scales)
    }

    /// The fake-quantized weights (a pooling's are exact).
    fn quantized_weight(&self) -> Array2<f64> {
        if self.pool {
            return self.weight.clone();
        }
        let (ints, scales) = self.integer_weights();
        Array2::from_shape_fn(ints.dim(), |(j, i)| ints[(j, i)] as f64 * scales[j])
    }
}

struct Adam {
    m: Vec<f64>,
    v: Vec<f64>,
}

impl Adam {
    fn new(n: usize) -> Adam {
        Adam {
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    fn step<'a>(
        &mut self,
        params: impl Iterator<Item = &'a mut f64>,
        grads: impl Iterator<Item = f64>,
        lr: f64,
        t: i32,
    ) {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for (((p, g), m), v) in params
            .zip(grads)
            .zip(self.m.iter_mut())
            .zip(self.v.iter_mut())
        {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
        }
    }
}

/// A network under training.
pub struct Trainer {
    arch: Architecture,
    input_quant: FakeQuant,
    input_activations: Vec<Activation>,
    layers: Vec<Dense>,
    config: TrainConfig,
    rng: SplitMix64,
    step: i32,
}

impl Trainer {
    /// Prepares training of `arch`; the input quantizer's scale comes from `inputs`.
    pub fn new(
        arch: &Architecture,
        inputs: ArrayView2<f64>,
        config: TrainConfig,
    ) -> Result<Trainer, TrainError> {
        let mut rng = SplitMix64::new(config.seed);
        let layers = arch.layers();
        let mut input_quant = None;
        let mut input_activations = Vec::new();
        let mut dense: Vec<Dense> = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            match *layer {
                Layer::QuantIdentity { bits, signed } => {
                    let q = FakeQuant {
                        layer: i,
                        bits,
                        signed,
                        scale: 1.0,
                        running: None,
                    };
                    match dense.last_mut() {
                        None if input_quant.is_none() => input_quant = Some(q),
                        Some(d) if d.next_quant.is_none() && !d.is_fork() => {
                            d.next_quant = Some(FakeQuant {
                                running: Some(0.0),
                                ..q
                            })
                        }
                        _ => {
                            return Err(TrainError::Unsupported {
                                layer: i + 1,
                                name: layer.to_string(),
                            })
                        }
                    }
                }
                Layer::Activation(a) => match dense.last_mut() {
                    None if input_quant.is_none() => input_activations.push(a),
                    Some(d) if d.next_quant.is_none() && !d.is_fork() => d.activations.push(a),
                    _ => {
                        return Err(TrainError::Unsupported {
                            layer: i + 1,
                            name: layer.to_string(),
                        })
                    }
                },
                Layer::QuantLinear {
                    in_features,
                    out_features,
                    options,
                } => dense.push(Dense::initialized(
                    &mut rng,
                    i,
                    (out_features, in_features),
                    options,
                    None,
                )),
                Layer::QuantConv2d(ref conv) => {
                    let geometry = arch.window(i).ok_or_else(|| TrainError::Unsupported {
                        layer: i + 1,
                        name: layer.to_string(),
                    })?;
                    dense.push(Dense::initialized(
                        &mut rng,
                        i,
                        (conv.out_channels, conv.fan_in()),
                        conv.options,
                        Some(geometry),
                    ));
                }
                Layer::AvgPool2d { .. } => {
                    // Pools a quantized image: the layer before must end in a quantizer.
                    let geometry = arch
                        .window(i)
                        .filter(|_| dense.last().is_none_or(|d| d.next_quant.is_some()))
                        .ok_or_else(|| TrainError::Unsupported {
                            layer: i + 1,
                            name: layer.to_string(),
                        })?;
                    dense.push(Dense::pooling(i, geometry));
                }
                Layer::Flatten => {}
                Layer::Fork | Layer::Join { .. } | Layer::MaxPool2d { .. } => {
                    let unsupported = || TrainError::Unsupported {
                        layer: i + 1,
                        name: layer.to_string(),
                    };
                    // A fork and a max pool read a quantized tensor.
                    let quantized = dense.last().is_some_and(|d| d.next_quant.is_some());
                    let op = match *layer {
                        Layer::Fork if quantized => GraphOp::Fork,
                        Layer::Join { op, bits, signed } => GraphOp::Join {
                            op,
                            quant: FakeQuant {
                                layer: i,
                                bits,
                                signed,
                                scale: 1.0,
                                running: Some(0.0),
                            },
                        },
                        Layer::MaxPool2d { .. } if quantized => {
                            GraphOp::MaxPool(arch.window(i).ok_or_else(unsupported)?)
                        }
                        _ => return Err(unsupported()),
                    };
                    dense.push(Dense::graph_node(i, op));
                }
            }
        }
        // Declared accumulator bounds become ℓ1 budgets on each channel's integer weights.
        for d in dense.iter_mut().filter(|d| !d.pool) {
            let acc = layers[d.layer].weight_options().and_then(|o| o.acc);
            let input = d
                .layer
                .checked_sub(1)
                .and_then(|p| arch.analysis()[p].range);
            if let (Some(acc), Some(input)) = (acc, input) {
                let bound = crate::arch::analysis::declared_accumulator(acc).max;
                let max_input = input
                    .min
                    .unsigned_abs()
                    .max(input.max.unsigned_abs())
                    .max(1);
                d.l1_budget = Some(bound / max_input as i64);
            }
        }
        if config.batch_norm {
            let last = dense.len().saturating_sub(1);
            for d in dense.iter_mut().take(last).filter(|d| !d.pool) {
                if !d.has_bias {
                    return Err(TrainError::BatchNormWithoutBias { layer: d.layer + 1 });
                }
                d.norm = Some(BatchNorm::new(d.weight.nrows()));
            }
        }
        let Some(mut input_quant) = input_quant else {
            return Err(TrainError::Unsupported {
                layer: 1,
                name: layers[0].to_string(),
            });
        };
        let Some(first) = dense.first() else {
            return Err(TrainError::Unsupported {
                layer: layers.len(),
                name: "a network without a weighted layer".into(),
            });
        };
        let expected = first.in_features();
        if inputs.ncols() != expected {
            return Err(TrainError::Width {
                expected,
                found: inputs.ncols(),
            });
        }
        if inputs.nrows() == 0 {
            return Err(TrainError::Empty);
        }
        if let Some(((sample, feature), &value)) =
            inputs.indexed_iter().find(|(_, v)| !v.is_finite())
        {
            return Err(TrainError::NonFinite {
                sample,
                feature,
                value,
            });
        }
        let largest = inputs
            .iter()
            .map(|&x| input_activations.iter().fold(x, |y, a| a.apply(y)).abs())
            .fold(0.0f64, f64::max);
        input_quant.scale = (largest / input_quant.qmax()).max(1e-12);
        Ok(Trainer {
            arch: arch.clone(),
            input_quant,
            input_activations,
            layers: dense,
            config,
            rng,
            step: 0,
        })
    }

    /// Forward pass; returns logits and, per layer, what backward needs.
    fn forward(&mut self, x: &Array2<f64>, training: bool) -> (Array2<f64>, Vec<Cached>) {
        let pre = x.mapv(|v| self.input_activations.iter().fold(v, |y, a| a.apply(y)));
        let (mut a, _) = self.input_quant.apply(&pre);
        let mut cache = Vec::new();
        // The saved tensors, each with the scale of the quantizer that made it.
        let mut forks: Vec<(Array2<f64>, Option<f64>)> = Vec::new();
        let mut a_scale = Some(self.input_quant.scale);
        let tie_joins = self.config.joins_at_fork_scale;
        let n_layers = self.layers.len();
        for (li, layer) in self.layers.iter_mut().enumerate() {
            let wq = layer.quantized_weight();
            let (mut z, extra) = match &mut layer.graph {
                None => (layer.sums(&a, &wq), Extra::None),
                Some(GraphOp::Fork) => {
                    forks.push((a.clone(), a_scale));
                    (a.clone(), Extra::None)
                }
                Some(GraphOp::Join { op, quant }) => {
                    let (fork, fork_scale) =
                        forks.pop().expect("the analysis joins only open forks");
                    match fork_scale {
                        Some(scale) if tie_joins && matches!(op, JoinOp::Add | JoinOp::Sub) => {
                            quant.scale = scale;
                            quant.running = Some(scale * quant.qmax());
                        }
                        _ if training => {
                            quant.track(magnitude_quantile(fork.iter().chain(a.iter())))
                        }
                        _ => {}
                    }
                    let (left, right) = (quant.apply(&fork), quant.apply(&a));
                    (join(*op, &left.0, &right.0), Extra::Join { left, right })
                }
                Some(GraphOp::MaxPool(g)) => {
                    let (m, arg) = max_pool(g, &a);
                    (m, Extra::Max(arg))
                }
            };
            let positions = layer.positions();
            if let Some(norm) = layer.norm.as_mut() {
                z = norm.forward(&z, positions, training);
            }
            let mut h = z.clone();
            for act in &layer.activations {
                h.mapv_inplace(|v| act.apply(v));
            }
            a_scale = None;
            let (out, mask) = match layer.next_quant.as_mut() {
                Some(q) if li + 1 < n_layers => {
                    if training {
                        q.track(magnitude_quantile(h.iter()));
                    }
                    a_scale = Some(q.scale);
                    q.apply(&h)
                }
                _ => {
                    let ones = Array2::ones(h.dim());
                    (h, ones)
                }
            };
            cache.push(Cached {
                input: a,
                sums: z,
                mask,
                weight: wq,
                extra,
            });
            a = out;
        }
        (a, cache)
    }

    /// One epoch over the data in a seeded random order.
    pub fn epoch(&mut self, inputs: ArrayView2<f64>, labels: &[usize], epoch: usize) -> EpochStats {
        let n = inputs.nrows();
        let mut order: Vec<usize> = (0..n).collect();
        self.rng.shuffle(&mut order);
        let lr = self.config.learning_rate
            * 0.5
            * (1.0 + (std::f64::consts::PI * epoch as f64 / self.config.epochs as f64).cos());
        let (mut loss_sum, mut correct) = (0.0, 0usize);
        for batch in order.chunks(self.config.batch_size) {
            let x = inputs.select(Axis(0), batch);
            let (logits, cache) = self.forward(&x, true);
            let (loss, mut grad, hits) =
                softmax_cross_entropy(&logits, batch.iter().map(|&i| labels[i]));
            loss_sum += loss * batch.len() as f64;
            correct += hits;
            self.step += 1;
            // The gradients of forked tensors from their joins' side, innermost last.
            let mut fork_grads: Vec<Array2<f64>> = Vec::new();
            for (li, cached) in cache.into_iter().enumerate().rev() {
                let Cached {
                    input: a_in,
                    sums: z,
                    mask,
                    weight: wq,
                    extra,
                } = cached;
                let layer = &mut self.layers[li];
                // Through the quantizer (STE) and the activations (numerical derivative of
                // the composed activation chain, exact for piecewise-linear ones away from kinks).
                grad *= &mask;
                if !layer.activations.is_empty() {
                    let acts = layer.activations.clone();
                    let d = z.mapv(|v| derivative(&acts, v));
                    grad *= &d;
                }
                let positions = layer.positions();
                if let Some(norm) = layer.norm.as_mut() {
                    let (g_gamma, g_beta, g_z) = norm.backward(&grad, positions);
                    let [ag, ab] = &mut norm.adam;
                    ag.step(
                        norm.gamma.iter_mut(),
                        g_gamma.iter().copied(),
                        lr,
                        self.step,
                    );
                    ab.step(norm.beta.iter_mut(), g_beta.iter().copied(), lr, self.step);
                    grad = g_z;
                }
                match (&layer.graph, extra) {
                    (Some(GraphOp::Fork), _) => {
                        grad += &fork_grads.pop().expect("a join for every fork");
                        continue;
                    }
                    (Some(GraphOp::Join { op, .. }), Extra::Join { left, right }) => {
                        let (to_left, to_right) = join_backward(*op, &grad, &left.0, &right.0);
                        fork_grads.push(to_left * &left.1);
                        grad = to_right * &right.1;
                        continue;
                    }
                    (Some(GraphOp::MaxPool(_)), Extra::Max(arg)) => {
                        grad = max_pool_backward(&arg, &grad, a_in.ncols());
                        continue;
                    }
                    _ => {}
                }
                let (gw, gb, grad_in) = layer.backward(&a_in, &grad, &wq);
                grad = grad_in;
                if layer.pool {
                    continue;
                }
                let lr_t = lr;
                let t = self.step;
                let [aw, ab] = &mut layer.adam;
                aw.step(layer.weight.iter_mut(), gw.iter().copied(), lr_t, t);
                if layer.has_bias {
                    ab.step(layer.bias.iter_mut(), gb.iter().copied(), lr_t, t);
                }
            }
        }
        EpochStats {
            epoch,
            loss: loss_sum / n as f64,
            train_accuracy: correct as f64 / n as f64,
        }
    }

    /// Accuracy of the fake-quantized network on labelled data.
    pub fn accuracy(&mut self, inputs: ArrayView2<f64>, labels: &[usize]) -> f64 {
        let (logits, _) = self.forward(&inputs.to_owned(), false);
        let pred = crate::clear::argmax_rows(logits.view());
        pred.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len().max(1) as f64
    }

    /// Post-training quantization (Concrete ML's `compile_torch_model` path): takes float
    /// weights (`layers.i.weight` as `[out, in]`, `layers.i.bias`), quantizes them per output
    /// channel to each layer's declared width, and calibrates every activation quantizer on
    /// `calibration` inputs (one pass over the whole set). Export the result with
    /// [`export`](Self::export).
    pub fn from_float(
        arch: &Architecture,
        weights: &TensorFile,
        calibration: ArrayView2<f64>,
    ) -> Result<Trainer, TrainError> {
        let mut trainer = Trainer::new(arch, calibration, TrainConfig::default())?;
        for layer in trainer.layers.iter_mut().filter(|l| !l.pool) {
            layer.per_channel = true;
            let (out, inp) = layer.weight.dim();
            let name = format!("layers.{}.weight", layer.layer);
            layer.weight =
                Array2::from_shape_vec((out, inp), float_tensor(weights, &name, &[out, inp])?)
                    .expect("checked shape");
            if layer.has_bias {
                let name = format!("layers.{}.bias", layer.layer);
                layer.bias = Array1::from(float_tensor(weights, &name, &[out])?);
            }
        }
        if let Some(extra) = weights.tensors.keys().find(|k| {
            !trainer.layers.iter().filter(|l| !l.pool).any(|l| {
                **k == format!("layers.{}.weight", l.layer)
                    || **k == format!("layers.{}.bias", l.layer)
            })
        }) {
            return Err(TrainError::Tensor {
                name: extra.clone(),
                problem: "is not a weight or bias of a declared layer".into(),
            });
        }
        let all = calibration.to_owned();
        trainer.forward(&all, true);
        Ok(trainer)
    }

    /// The trained integer weights and scales, in the runtime's tensor names.
    pub fn export(&self) -> TensorFile {
        let mut file = TensorFile::default();
        file.metadata
            .insert(ARCHITECTURE_KEY.to_string(), self.arch.signature());
        let scalar = |v: f64| Tensor::float(vec![], vec![v]);
        file.tensors.insert(
            format!("layers.{}.scale", self.input_quant.layer),
            scalar(self.input_quant.scale),
        );
        for layer in &self.layers {
            if let Some(GraphOp::Join { quant, .. }) = &layer.graph {
                file.tensors
                    .insert(format!("layers.{}.scale", quant.layer), scalar(quant.scale));
            }
            if layer.pool {
                if let Some(q) = &layer.next_quant {
                    file.tensors
                        .insert(format!("layers.{}.scale", q.layer), scalar(q.scale));
                }
                continue;
            }
            let (mut ints, mut scales) = layer.integer_weights();
            let mut bias = layer.bias.to_vec();
            let mut per_channel = layer.per_channel;
            if let Some(norm) = &layer.norm {
                // γ(z - μ)/σ + β with z = scale · Σ w x + bias: the factor joins the scale
                // (its sign the integer weights, scales stay positive), the rest the bias.
                let (a, b) = norm.folded();
                // A channel scaled to nothing keeps a tiny positive scale.
                let a: Vec<f64> = a.iter().map(|&a| a.signum() * a.abs().max(1e-12)).collect();
                let ints = ints.as_slice_mut().expect("contiguous");
                fold_affine(ints, &mut scales, &mut bias, &a, &b);
                per_channel = true;
            }
            let i = layer.layer;
            file.tensors.insert(
                format!("layers.{i}.weight"),
                Tensor::int(ints.shape().to_vec(), ints.iter().copied().collect()),
            );
            let scale_tensor = if per_channel {
                Tensor::float(vec![scales.len()], scales)
            } else {
                scalar(scales[0])
            };
            file.tensors
                .insert(format!("layers.{i}.weight_scale"), scale_tensor);
            if layer.has_bias {
                file.tensors.insert(
                    format!("layers.{i}.bias"),
                    Tensor::float(vec![bias.len()], bias),
                );
            }
            if let Some(q) = &layer.next_quant {
                file.tensors
                    .insert(format!("layers.{}.scale", q.layer), scalar(q.scale));
            }
        }
        file
    }
}

/// Lowers the magnitudes of `ints` (rounded from `exact`, same signs) until `Σ|ints| ≤
/// budget`, one unit at a time, each time where the rounding error grows least: first the
/// values rounded up the most (which come closer to `exact`), then the smallest (each unit
/// costs 1 there). The ℓ1 projection of integer weights under a declared accumulator bound.
fn within_l1_budget(ints: &mut [i64], exact: &[f64], budget: i64) {
    let mut excess: i64 = ints.iter().map(|w| w.abs()).sum::<i64>() - budget.max(0);
    if excess <= 0 {
        return;
    }
    // Rounded up: |int| > |exact|, by less than a half.
    let mut up: Vec<usize> = (0..ints.len())
        .filter(|&k| ints[k].abs() as f64 > exact[k].abs())
        .collect();
    up.sort_by(|&a, &b| {
        let over = |k: usize| ints[k].abs() as f64 - exact[k].abs();
        over(b).total_cmp(&over(a))
    });
    for k in up {
        if excess == 0 {
            return;
        }
        ints[k] -= ints[k].signum();
        excess -= 1;
    }
    let mut rest: Vec<usize> = (0..ints.len()).filter(|&k| ints[k] != 0).collect();
    rest.sort_by(|&a, &b| exact[a].abs().total_cmp(&exact[b].abs()));
    for k in rest {
        let cut = ints[k].abs().min(excess);
        ints[k] -= ints[k].signum() * cut;
        excess -= cut;
        if excess == 0 {
            return;
        }
    }
}

/// Trains `arch` on labelled data, reporting each epoch to `progress`.
pub fn train(
    arch: &Architecture,
    inputs: ArrayView2<f64>,
    labels: &[usize],
    config: TrainConfig,
    mut progress: impl FnMut(&EpochStats),
) -> Result<TensorFile, TrainError> {
    if inputs.nrows() != labels.len() {
        return Err(TrainError::LabelCount {
            inputs: inputs.nrows(),
            labels: labels.len(),
        });
    }
    let mut trainer = Trainer::new(arch, inputs, config)?;
    let classes = trainer.layers.last().map(|l| l.weight.nrows()).unwrap_or(0);
    if let Some((sample, &label)) = labels.iter().enumerate().find(|(_, &l)| l >= classes) {
        return Err(TrainError::Label {
            sample,
            label,
            classes,
        });
    }
    for epoch in 0..trainer.config.epochs {
        let stats = trainer.epoch(inputs, labels, epoch);
        progress(&stats);
    }
    Ok(trainer.export())
}

fn derivative(acts: &[Activation], x: f64) -> f64 {
    let f = |v: f64| acts.iter().fold(v, |y, a| a.apply(y));
    let h = 1e-4 * x.abs().max(1.0);
    (f(x + h) - f(x - h)) / (2.0 * h)
}

/// Mean loss, gradient of the mean loss with respect to the logits, and correct count.
fn softmax_cross_entropy(
    logits: &Array2<f64>,
    labels: impl Iterator<Item = usize>,
) -> (f64, Array2<f64>, usize) {
    let n = logits.nrows() as f64;
    let mut grad = Array2::zeros(logits.dim());
    let (mut loss, mut correct) = (0.0, 0);
    for (i, label) in labels.enumerate() {
        let row = logits.slice(s![i, ..]);
        let m = row.iter().fold(f64::MIN, |a, &b| a.max(b));
        let exps: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
        let sum: f64 = exps.iter().sum();
        loss -= ((exps[label] / sum).max(1e-300)).ln();
        let best = crate::clear::argmax(row);
        correct += usize::from(best == label);
        for (j, e) in exps.iter().enumerate() {
            grad[(i, j)] = (e / sum - if j == label { 1.0 } else { 0.0 }) / n;
        }
    }
    (loss / n, grad, correct)
}

/// A finite float tensor of the given shape.
fn float_tensor(file: &TensorFile, name: &str, shape: &[usize]) -> Result<Vec<f64>, TrainError> {
    let t = file.tensors.get(name).ok_or_else(|| TrainError::Tensor {
        name: name.into(),
        problem: "is missing".into(),
    })?;
    if t.shape != shape {
        return Err(TrainError::Tensor {
            name: name.into(),
            problem: format!("has shape {:?}, expected {shape:?}", t.shape),
        });
    }
    let values: Vec<f64> = match &t.values {
        crate::tensors::Values::Float(v) => v.clone(),
        crate::tensors::Values::Int(v) => v.iter().map(|&x| x as f64).collect(),
    };
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(TrainError::Tensor {
            name: name.into(),
            problem: format!("holds a non-finite value at index {i}"),
        }),
        None => Ok(values),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central differences of `loss` at `x` for every entry, against `analytic`.
    fn check_gradient(
        x: &Array2<f64>,
        analytic: &Array2<f64>,
        h: f64,
        tolerance: f64,
        loss: impl Fn(&Array2<f64>) -> f64,
    ) {
        for (idx, &g) in analytic.indexed_iter() {
            let (mut up, mut down) = (x.clone(), x.clone());
            up[idx] += h;
            down[idx] -= h;
            let numeric = (loss(&up) - loss(&down)) / (2.0 * h);
            assert!(
                (numeric - g).abs() < tolerance,
                "entry {idx:?}: {numeric} vs {g}"
            );
        }
    }

    #[test]
    fn max_pool_gradients_match_finite_differences() {
        let mut rng = SplitMix64::new(8);
        // 2 channels of 5×4, 2×2 windows (the last row is left out, as PyTorch floors).
        let g = Window::new((2, 5, 4), 2, 2, 0).unwrap();
        assert_eq!((g.out_height, g.out_width), (2, 2));
        // Distinct values: away from ties the max is locally linear.
        let a = Array2::from_shape_fn((3, 40), |_| rng.uniform());
        let upstream = Array2::from_shape_fn((3, 8), |_| rng.uniform() - 0.5);
        let (out, arg) = max_pool(&g, &a);
        assert_eq!(out[(1, 5)], a[(1, arg[(1, 5)])]);
        let analytic = max_pool_backward(&arg, &upstream, 40);
        check_gradient(&a, &analytic, 1e-7, 1e-6, |x| {
            (max_pool(&g, x).0 * &upstream).sum()
        });
        // Every window's gradient lands on one value of its own channel.
        assert_eq!(analytic.iter().filter(|v| **v != 0.0).count(), 3 * 8);
    }

    #[test]
    fn join_gradients_reach_both_sides_through_the_shared_quantizer() {
        let mut rng = SplitMix64::new(9);
        // A fine quantizer: within its range, fake quantization moves values by at most
        // half a step, far below the differences' step.
        let quant = FakeQuant {
            layer: 0,
            bits: 16,
            signed: true,
            scale: 1e-7,
            running: None,
        };
        let fork = Array2::from_shape_fn((2, 6), |_| (rng.uniform() - 0.5) * 1e-3);
        let current = Array2::from_shape_fn((2, 6), |_| (rng.uniform() - 0.5) * 1e-3);
        for op in JoinOp::ALL {
            let width = if op == JoinOp::Concat { 12 } else { 6 };
            let upstream = Array2::from_shape_fn((2, width), |_| rng.uniform() - 0.5);
            let loss = |f: &Array2<f64>, c: &Array2<f64>| {
                (join(op, &quant.apply(f).0, &quant.apply(c).0) * &upstream).sum()
            };
            // What the backward pass routes to either side, through its mask.
            let (left, right) = (quant.apply(&fork), quant.apply(&current));
            let (to_left, to_right) = join_backward(op, &upstream, &left.0, &right.0);
            // A product's gradient is as small as the values: a tighter tolerance.
            let tolerance = if op == JoinOp::Mul { 1e-6 } else { 1e-3 };
            check_gradient(&fork, &(to_left * &left.1), 1e-5, tolerance, |f| {
                loss(f, &current)
            });
            check_gradient(&current, &(to_right * &right.1), 1e-5, tolerance, |c| {
                loss(&fork, c)
            });
        }
        // Beyond the range the straight-through mask stops the gradient.
        let (_, mask) = quant.apply(&Array2::from_elem((1, 1), 1.0));
        assert_eq!(mask[(0, 0)], 0.0);
    }

    /// A convolution with stride and padding as a `Dense` with random weights.
    fn conv_layer(rng: &mut SplitMix64) -> Dense {
        let geometry = Window::new((2, 5, 4), 3, 2, 1).unwrap();
        assert_eq!((geometry.out_height, geometry.out_width), (3, 2));
        let (out, fan_in) = (3, 2 * 3 * 3);
        let options = WeightOptions {
            weight_bits: 3,
            bias: true,
            active: None,
            round: None,
            exact: false,
            acc: None,
        };
        Dense::with_parts(
            1,
            Array2::from_shape_fn((out, fan_in), |_| rng.uniform() - 0.5),
            Array1::from_shape_fn(out, |_| rng.uniform() - 0.5),
            options,
            Some(geometry),
        )
    }

    #[test]
    fn the_l1_projection_meets_the_budget_with_less_error_than_pruning_the_smallest() {
        let mut rng = SplitMix64::new(7);
        for budget in [0, 1, 5, 20, 60] {
            for _ in 0..50 {
                let exact: Vec<f64> = (0..40).map(|_| 6.0 * rng.uniform() - 3.0).collect();
                let rounded: Vec<i64> = exact.iter().map(|x| x.round_ties_even() as i64).collect();
                let mut ints = rounded.clone();
                within_l1_budget(&mut ints, &exact, budget);
                let l1: i64 = ints.iter().map(|w| w.abs()).sum();
                let before: i64 = rounded.iter().map(|w| w.abs()).sum();
                assert_eq!(l1, before.min(budget), "exactly down to the budget");
                for (a, b) in ints.iter().zip(&rounded) {
                    assert!(a.abs() <= b.abs() && a.signum() * b.signum() >= 0);
                }
                // No other choice of as many unit decrements has a smaller total error.
                let error = |v: &[i64]| -> f64 {
                    v.iter()
                        .zip(&exact)
                        .map(|(&a, x)| (a as f64 - x).abs())
                        .sum()
                };
                let cuts = (before - l1) as usize;
                let mut greedy_by_size = rounded.clone();
                let mut order: Vec<usize> = (0..40).collect();
                order.sort_by(|&a, &b| exact[a].abs().total_cmp(&exact[b].abs()));
                let mut left = cuts as i64;
                for k in order {
                    let cut = greedy_by_size[k].abs().min(left);
                    greedy_by_size[k] -= greedy_by_size[k].signum() * cut;
                    left -= cut;
                }
                assert!(error(&ints) <= error(&greedy_by_size) + 1e-9);
            }
        }
    }

    #[test]
    fn convolution_sums_match_a_direct_loop() {
        let mut rng = SplitMix64::new(3);
        let layer = conv_layer(&mut rng);
        let g = layer.conv.expect("a convolution");
        let a = Array2::from_shape_fn((2, 40), |_| rng.uniform());
        let z = layer.sums(&a, &layer.weight);
        for b in 0..2 {
            for o in 0..3 {
                for oy in 0..3 {
                    for ox in 0..2 {
                        let mut sum = layer.bias[o];
                        for c in 0..2 {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (y, x) = (oy * 2 + ky, ox * 2 + kx);
                                    if y >= 1 && x >= 1 && y - 1 < 5 && x - 1 < 4 {
                                        sum += layer.weight[(o, c * 9 + ky * 3 + kx)]
                                            * a[(b, c * 20 + (y - 1) * 4 + (x - 1))];
                                    }
                                }
                            }
                        }
                        let got = z[(b, o * g.positions() + oy * 2 + ox)];
                        assert!((got - sum).abs() < 1e-12, "{got} vs {sum}");
                    }
                }
            }
        }
    }

    #[test]
    fn convolution_gradients_match_finite_differences() {
        let mut rng = SplitMix64::new(5);
        let layer = conv_layer(&mut rng);
        let a = Array2::from_shape_fn((2, 40), |_| rng.uniform());
        let upstream = Array2::from_shape_fn((2, 18), |_| rng.uniform() - 0.5);
        // The loss sum(upstream ∘ sums) is linear: central differences are exact up to rounding.
        let loss = |a: &Array2<f64>, w: &Array2<f64>, l: &Dense| (l.sums(a, w) * &upstream).sum();
        let (gw, gb, ga) = layer.backward(&a, &upstream, &layer.weight);
        let h = 1e-6;
        for (idx, &g) in gw.indexed_iter() {
            let (mut up, mut down) = (layer.weight.clone(), layer.weight.clone());
            up[idx] += h;
            down[idx] -= h;
            let numeric = (loss(&a, &up, &layer) - loss(&a, &down, &layer)) / (2.0 * h);
            assert!(
                (numeric - g).abs() < 1e-6,
                "weight {idx:?}: {numeric} vs {g}"
            );
        }
        for (idx, &g) in ga.indexed_iter() {
            let (mut up, mut down) = (a.clone(), a.clone());
            up[idx] += h;
            down[idx] -= h;
            let numeric =
                (loss(&up, &layer.weight, &layer) - loss(&down, &layer.weight, &layer)) / (2.0 * h);
            assert!(
                (numeric - g).abs() < 1e-6,
                "input {idx:?}: {numeric} vs {g}"
            );
        }
        // Each bias adds to every position of its channel.
        for (o, &g) in gb.iter().enumerate() {
            let expected: f64 = (0..2)
                .map(|b| (0..6).map(|p| upstream[(b, o * 6 + p)]).sum::<f64>())
                .sum();
            assert!((expected - g).abs() < 1e-12, "bias {o}: {expected} vs {g}");
        }
    }

    #[test]
    fn batch_norm_gradients_match_finite_differences() {
        let mut rng = SplitMix64::new(9);
        // Three channels of four positions, a batch of five.
        let (channels, positions) = (3, 4);
        let z = Array2::from_shape_fn((5, channels * positions), |_| 3.0 * rng.uniform() - 1.0);
        let upstream = Array2::from_shape_fn(z.dim(), |_| rng.uniform() - 0.5);
        let mut norm = BatchNorm::new(channels);
        norm.gamma = Array1::from(vec![0.7, -1.3, 2.0]);
        norm.beta = Array1::from(vec![0.1, 0.0, -0.4]);
        let loss = |z: &Array2<f64>, gamma: &Array1<f64>, beta: &Array1<f64>| {
            let mut n = BatchNorm::new(channels);
            n.gamma = gamma.clone();
            n.beta = beta.clone();
            (n.forward(z, positions, true) * &upstream).sum()
        };
        let out = norm.forward(&z, positions, true);
        // Each channel comes out with mean β and standard deviation |γ| (up to ε).
        for c in 0..channels {
            let values: Vec<f64> = out
                .indexed_iter()
                .filter(|((_, col), _)| col / positions == c)
                .map(|(_, &v)| v)
                .collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64)
                .sqrt();
            assert!((mean - norm.beta[c]).abs() < 1e-9);
            assert!((sd - norm.gamma[c].abs()).abs() < 1e-3);
        }
        let (g_gamma, g_beta, g_z) = norm.backward(&upstream, positions);
        let h = 1e-6;
        for (idx, &g) in g_z.indexed_iter() {
            let (mut up, mut down) = (z.clone(), z.clone());
            up[idx] += h;
            down[idx] -= h;
            let numeric = (loss(&up, &norm.gamma, &norm.beta)
                - loss(&down, &norm.gamma, &norm.beta))
                / (2.0 * h);
            assert!((numeric - g).abs() < 1e-6, "sum {idx:?}: {numeric} vs {g}");
        }
        for c in 0..channels {
            let (mut up, mut down) = (norm.gamma.clone(), norm.gamma.clone());
            up[c] += h;
            down[c] -= h;
            let numeric = (loss(&z, &up, &norm.beta) - loss(&z, &down, &norm.beta)) / (2.0 * h);
            assert!((numeric - g_gamma[c]).abs() < 1e-6, "γ {c}");
            let (mut up, mut down) = (norm.beta.clone(), norm.beta.clone());
            up[c] += h;
            down[c] -= h;
            let numeric = (loss(&z, &norm.gamma, &up) - loss(&z, &norm.gamma, &down)) / (2.0 * h);
            assert!((numeric - g_beta[c]).abs() < 1e-6, "β {c}");
        }
    }
}
