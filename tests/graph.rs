//! Networks that are not a chain: a residual block (`Fork` … `Add`), a subtraction, a
//! product and a concatenation of two encrypted tensors, and max pooling. Clear equals a direct floating-point implementation of the declared network on
//! real digits; Fhe equals Clear; the analysis counts every lookup the runtime makes.

mod common;

use fhe_nn::arch::layer::JoinOp;
use fhe_nn::datasets::digits;
use fhe_nn::params::vetted;
use fhe_nn::rng::SplitMix64;
use fhe_nn::tensors::{Tensor, TensorFile};
use fhe_nn::{fhe_net, CompileError, FheOptions, ParameterChoice, QuantModel};
use ndarray::{Array2, Axis};

fhe_net! {
    /// 6×6 crops (2-bit) → 2 channels of 3×3 convolution → a residual block (one 3×3
    /// convolution, both sides through a shared signed 3-bit quantizer) → ReLU → 2×2 max pooling →
    /// 10 classes.
    struct SmallResidual<QuantIdentity(2, unsigned),
                         QuantConv2d(1, 2, 3, w = 2, input = (6, 6)), ReLU,
                         QuantIdentity(2, unsigned), Fork,
                         QuantConv2d(2, 2, 3, padding = 1, w = 2), Add(3),
                         ReLU, QuantIdentity(2, unsigned), MaxPool2d(2),
                         QuantIdentity(2, unsigned), Flatten, QuantLinear(8, 10, w = 2)>
}

fhe_net! {
    /// The same with the branch subtracted, and the max pool's output fed to the linear
    /// layer through its own quantizer of another scale.
    struct SmallDifference<QuantIdentity(2, unsigned),
                           QuantConv2d(1, 2, 3, w = 2, input = (6, 6)), ReLU,
                           QuantIdentity(2, unsigned), Fork,
                           QuantConv2d(2, 2, 3, padding = 1, w = 2), Sub(3),
                           ReLU, QuantIdentity(2, unsigned), MaxPool2d(2),
                           QuantIdentity(2, unsigned), Flatten, QuantLinear(8, 10, w = 2)>
}

fhe_net! {
    /// The residual block with an activation that is not monotone (`Threshold(2, 5)`: 5 up
    /// to 2, then the identity) before the max pool.
    struct ThresholdResidual<QuantIdentity(2, unsigned),
                             QuantConv2d(1, 2, 3, w = 2, input = (6, 6)), ReLU,
                             QuantIdentity(2, unsigned), Fork,
                             QuantConv2d(2, 2, 3, padding = 1, w = 2), Add(3),
                             Threshold(2.0, 5.0), QuantIdentity(2, unsigned), MaxPool2d(2),
                             QuantIdentity(2, unsigned), Flatten, QuantLinear(8, 10, w = 2)>
}

fhe_net! {
    /// The branch multiplied with its input (a gate).
    struct SmallProduct<QuantIdentity(2, unsigned),
                        QuantConv2d(1, 2, 3, w = 2, input = (6, 6)), ReLU,
                        QuantIdentity(2, unsigned), Fork,
                        QuantConv2d(2, 2, 3, padding = 1, w = 2), Mul(3),
                        ReLU, QuantIdentity(2, unsigned), MaxPool2d(2),
                        QuantIdentity(2, unsigned), Flatten, QuantLinear(8, 10, w = 2)>
}

fhe_net! {
    /// The branch's channels concatenated after its input's (4 channels), then an
    /// activation on the concatenated tensor.
    struct SmallConcat<QuantIdentity(2, unsigned),
                       QuantConv2d(1, 2, 3, w = 2, input = (6, 6)), ReLU,
                       QuantIdentity(2, unsigned), Fork,
                       QuantConv2d(2, 2, 3, padding = 1, w = 2), Concat(3),
                       ReLU, QuantIdentity(2, unsigned), MaxPool2d(2),
                       QuantIdentity(2, unsigned), Flatten, QuantLinear(16, 10, w = 2)>
}

fhe_net! {
    /// A concatenation read by the output layer: the outputs sum terms of two lookup layers
    /// (the stem's, which the fork saved, and the join's).
    struct ConcatOutput<QuantIdentity(2, unsigned),
                        QuantConv2d(1, 2, 3, w = 2, input = (6, 6)), ReLU,
                        QuantIdentity(2, unsigned), Fork,
                        QuantConv2d(2, 2, 3, padding = 1, w = 2), Concat(3),
                        Flatten, QuantLinear(64, 10, w = 2)>
}

fhe_net! {
    /// The residual block on a 2-value forked tensor: 2 × 8 values pack in 4 bits, as wide
    /// as the sum, so the join reads the forked value and the branch's in one lookup.
    struct BinaryResidual<QuantIdentity(2, unsigned),
                        QuantConv2d(1, 2, 3, w = 2, input = (6, 6)), ReLU,
                        QuantIdentity(1, unsigned), Fork,
                        QuantConv2d(2, 2, 3, padding = 1, w = 2), Add(3),
                        ReLU, QuantIdentity(2, unsigned), MaxPool2d(2),
                        QuantIdentity(2, unsigned), Flatten, QuantLinear(8, 10, w = 2)>
}

fhe_net! {
    /// The product on a 16-value forked tensor: two squares per value.
    struct WideProduct<QuantIdentity(2, unsigned),
                       QuantConv2d(1, 2, 3, w = 2, input = (6, 6)), ReLU,
                       QuantIdentity(4, unsigned), Fork,
                       QuantConv2d(2, 2, 3, padding = 1, w = 2), Mul(3),
                       ReLU, QuantIdentity(2, unsigned), MaxPool2d(2),
                       QuantIdentity(2, unsigned), Flatten, QuantLinear(8, 10, w = 2)>
}

const INPUT_SCALE: f64 = 16.0 / 3.0;
const STEM_SCALE: [f64; 2] = [0.3, 0.5];
const STEM_BIAS: [f64; 2] = [0.1, -0.2];
const X_SCALE: f64 = 2.0;
const BRANCH_SCALE: [f64; 2] = [0.2, 0.15];
const BRANCH_BIAS: [f64; 2] = [-0.3, 0.2];
const JOIN_SCALE: f64 = 3.0;
const Z_SCALE: f64 = 2.5;
const POOL_SCALE: f64 = 2.0;
const LINEAR_SCALE: f64 = 0.3;

struct Weights {
    stem: Vec<i64>,
    branch: Vec<i64>,
    linear: Vec<i64>,
    linear_bias: Vec<f64>,
}

fn weights() -> Weights {
    let mut rng = SplitMix64::new(91);
    let mut ternary = |n: usize| (0..n).map(|_| rng.below(3) as i64 - 1).collect::<Vec<_>>();
    Weights {
        // Vertical and horizontal edge detectors.
        stem: vec![1, 0, -1, 1, 0, -1, 1, 0, -1, 1, 1, 1, 0, 0, 0, -1, -1, -1],
        branch: ternary(2 * 18),
        linear: ternary(160),
        linear_bias: (0..10).map(|j| 0.05 * j as f64 - 0.2).collect(),
    }
}

/// The tensors of the networks above; `features`: the linear layer's inputs.
fn tensor_file(w: &Weights, features: usize) -> TensorFile {
    let mut f = TensorFile::default();
    let mut put = |name: &str, t: Tensor| {
        f.tensors.insert(name.to_string(), t);
    };
    let scalar = |v: f64| Tensor::float(vec![], vec![v]);
    put("layers.0.scale", scalar(INPUT_SCALE));
    put("layers.1.weight", Tensor::int(vec![2, 9], w.stem.clone()));
    put(
        "layers.1.weight_scale",
        Tensor::float(vec![2], STEM_SCALE.to_vec()),
    );
    put("layers.1.bias", Tensor::float(vec![2], STEM_BIAS.to_vec()));
    put("layers.3.scale", scalar(X_SCALE));
    put(
        "layers.5.weight",
        Tensor::int(vec![2, 18], w.branch.clone()),
    );
    put(
        "layers.5.weight_scale",
        Tensor::float(vec![2], BRANCH_SCALE.to_vec()),
    );
    put(
        "layers.5.bias",
        Tensor::float(vec![2], BRANCH_BIAS.to_vec()),
    );
    put("layers.6.scale", scalar(JOIN_SCALE));
    put("layers.8.scale", scalar(Z_SCALE));
    put("layers.10.scale", scalar(POOL_SCALE));
    put(
        "layers.12.weight",
        Tensor::int(vec![10, features], w.linear[..10 * features].to_vec()),
    );
    put("layers.12.weight_scale", scalar(LINEAR_SCALE));
    put(
        "layers.12.bias",
        Tensor::float(vec![10], w.linear_bias.clone()),
    );
    f
}

/// The central 6×6 crop of each 8×8 digit.
/// `file` with the join's shared quantizer at `scale`.
fn with_join_scale(mut file: TensorFile, scale: f64) -> TensorFile {
    file.tensors
        .insert("layers.6.scale".into(), Tensor::float(vec![], vec![scale]));
    file
}

fn crops() -> Array2<f64> {
    let images = digits().unwrap().test.images;
    Array2::from_shape_fn((images.nrows(), 36), |(i, f)| {
        images[(i, 8 * (1 + f / 6) + 1 + f % 6)]
    })
}

/// A 3×3 convolution of a `channels × 4 × 4` (or 6×6 unpadded) image, direct.
fn conv3(
    input: &[f64],
    channels: usize,
    side: usize,
    padding: usize,
    w: &[i64],
    oc: usize,
) -> Vec<f64> {
    let out_side = side + 2 * padding - 2;
    let mut out = vec![0.0; out_side * out_side];
    for oy in 0..out_side {
        for ox in 0..out_side {
            let mut acc = 0.0;
            for ic in 0..channels {
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (y, x) = (
                            (oy + ky) as isize - padding as isize,
                            (ox + kx) as isize - padding as isize,
                        );
                        if y >= 0 && x >= 0 && (y as usize) < side && (x as usize) < side {
                            acc += w[oc * channels * 9 + ic * 9 + ky * 3 + kx] as f64
                                * input[ic * side * side + y as usize * side + x as usize];
                        }
                    }
                }
            }
            out[oy * out_side + ox] = acc;
        }
    }
    out
}

/// The network computed directly from its definition, in floating point: Brevitas's
/// integer semantics (round half to even, clamp to the quantizer's range).
fn reference(w: &Weights, x: &[f64], op: JoinOp, fork_max: f64, join_scale: f64) -> Vec<f64> {
    reference_with(w, x, op, fork_max, join_scale, |v| v.max(0.0))
}

/// [`reference`] with `activation` after the join instead of ReLU.
fn reference_with(
    w: &Weights,
    x: &[f64],
    op: JoinOp,
    fork_max: f64,
    join_scale: f64,
    activation: fn(f64) -> f64,
) -> Vec<f64> {
    let q = |v: f64, scale: f64| (v / scale).round_ties_even().clamp(0.0, 3.0);
    let input: Vec<f64> = x.iter().map(|&v| q(v, INPUT_SCALE)).collect();
    // Stem: 2 × 4 × 4, ReLU, quantized: the forked tensor.
    let mut fork = Vec::new();
    for oc in 0..2 {
        for acc in conv3(&input, 1, 6, 0, &w.stem, oc) {
            let y = (acc * INPUT_SCALE * STEM_SCALE[oc] + STEM_BIAS[oc]).max(0.0);
            fork.push((y / X_SCALE).round_ties_even().clamp(0.0, fork_max));
        }
    }
    // Branch: a padded convolution; both sides through the shared quantizer, joined.
    let signed = |v: f64| (v / join_scale).round_ties_even().clamp(-4.0, 3.0);
    let mut branch = Vec::new();
    for oc in 0..2 {
        for acc in conv3(&fork, 2, 4, 1, &w.branch, oc) {
            branch.push(signed(acc * X_SCALE * BRANCH_SCALE[oc] + BRANCH_BIAS[oc]));
        }
    }
    let left: Vec<f64> = fork.iter().map(|&v| signed(v * X_SCALE)).collect();
    // The joined tensor's real values, then ReLU and the next quantizer.
    let joined: Vec<f64> = match op {
        JoinOp::Add | JoinOp::Sub => {
            let sign = op.sign() as f64;
            left.iter()
                .zip(&branch)
                .map(|(l, r)| (l + sign * r) * join_scale)
                .collect()
        }
        JoinOp::Mul => left
            .iter()
            .zip(&branch)
            .map(|(l, r)| l * r * join_scale * join_scale)
            .collect(),
        JoinOp::Concat => left.iter().chain(&branch).map(|v| v * join_scale).collect(),
    };
    let z: Vec<f64> = joined.iter().map(|&v| q(activation(v), Z_SCALE)).collect();
    // 2×2 max pooling, re-quantized.
    let channels = z.len() / 16;
    let mut pooled = vec![0.0; channels * 4];
    for c in 0..channels {
        for py in 0..2 {
            for px in 0..2 {
                let m = (0..4)
                    .map(|t| z[c * 16 + (2 * py + t / 2) * 4 + 2 * px + t % 2])
                    .fold(f64::MIN, f64::max);
                pooled[c * 4 + py * 2 + px] = q(m * Z_SCALE, POOL_SCALE);
            }
        }
    }
    let n = pooled.len();
    (0..10)
        .map(|j| {
            (0..n)
                .map(|i| w.linear[j * n + i] as f64 * pooled[i])
                .sum::<f64>()
                * POOL_SCALE
                * LINEAR_SCALE
                + w.linear_bias[j]
        })
        .collect()
}

#[test]
fn clear_equals_a_direct_implementation() {
    let w = weights();
    let x = crops();
    // Unpacked joins, packed ones (a product of 4 × 8 values, a sum of 2 × 8), an unpacked
    // product (16 forked values), and a concatenation.
    // At the fork's scale, the shared quantizer re-quantizes the forked values to themselves:
    // the add, the difference and the concatenation read them with no lookup.
    for (arch, op, features, fork_max, join_scale) in [
        (
            SmallResidual::architecture(),
            JoinOp::Add,
            8,
            3.0,
            JOIN_SCALE,
        ),
        (SmallResidual::architecture(), JoinOp::Add, 8, 3.0, X_SCALE),
        (
            SmallDifference::architecture(),
            JoinOp::Sub,
            8,
            3.0,
            JOIN_SCALE,
        ),
        (
            SmallDifference::architecture(),
            JoinOp::Sub,
            8,
            3.0,
            X_SCALE,
        ),
        (
            SmallProduct::architecture(),
            JoinOp::Mul,
            8,
            3.0,
            JOIN_SCALE,
        ),
        (
            BinaryResidual::architecture(),
            JoinOp::Add,
            8,
            1.0,
            JOIN_SCALE,
        ),
        (
            WideProduct::architecture(),
            JoinOp::Mul,
            8,
            15.0,
            JOIN_SCALE,
        ),
        (
            SmallConcat::architecture(),
            JoinOp::Concat,
            16,
            3.0,
            JOIN_SCALE,
        ),
        (
            SmallConcat::architecture(),
            JoinOp::Concat,
            16,
            3.0,
            X_SCALE,
        ),
    ] {
        let file = with_join_scale(tensor_file(&w, features), join_scale);
        let model = QuantModel::from_tensors(arch, &file).unwrap();
        let out = model.predict_clear(x.view()).unwrap();
        // The test means something only if the outputs vary with the image.
        let distinct: std::collections::BTreeSet<String> =
            out.axis_iter(Axis(0)).map(|r| format!("{r:.6}")).collect();
        assert!(distinct.len() > 20, "{} distinct outputs", distinct.len());
        for (i, row) in out.axis_iter(Axis(0)).enumerate() {
            let want = reference(&w, x.row(i).as_slice().unwrap(), op, fork_max, join_scale);
            for (got, want) in row.iter().zip(&want) {
                assert!(
                    (got - want).abs() < 1e-9,
                    "{} sample {i}: {got} vs {want}",
                    arch.name()
                );
            }
        }
    }
}

#[test]
fn the_analysis_counts_the_lookups_the_runtime_makes() {
    // Stem 32, branch 32, the fork's side 32, the join 32, the max pool's two levels
    // 16 + 8; a product's squares 64 more; packed joins read the forked value and the
    // branch's in one lookup: no fork's side, no squares.
    // The analysis's count is a bound. Where the join is a weighted sum of lookups (not
    // packed), the max pool compares its accumulators before the join's ReLU and quantizer,
    // which then run once per window (8 lookups instead of 32).
    for (arch, bound, runtime) in [
        (
            SmallResidual::architecture(),
            32 * 4 + 16 + 8,
            32 * 3 + 16 + 8 + 8,
        ),
        (
            SmallProduct::architecture(),
            32 * 3 + 16 + 8,
            32 * 3 + 16 + 8,
        ),
        (
            BinaryResidual::architecture(),
            32 * 3 + 16 + 8,
            32 * 3 + 16 + 8,
        ),
        (
            WideProduct::architecture(),
            32 * 6 + 16 + 8,
            32 * 5 + 16 + 8 + 8,
        ),
    ] {
        assert_eq!(arch.lookups(), bound, "{}", arch.name());
        let model = QuantModel::from_tensors(arch, &tensor_file(&weights(), 8)).unwrap();
        assert_eq!(model.lookups(), runtime, "{}", arch.name());
    }
    // A fork's side that re-quantizes to itself costs none.
    let file = with_join_scale(tensor_file(&weights(), 8), X_SCALE);
    let model = QuantModel::from_tensors(SmallResidual::architecture(), &file).unwrap();
    assert_eq!(model.lookups(), 32 * 2 + 16 + 8 + 8);
    // The packed product reads 4 × 8 values: 5 bits, exact, as wide as the product.
    let join = SmallProduct::architecture().analysis()[8].lookup.unwrap();
    assert_eq!((join.count, join.precision), (32, 5));
    // The max pool's lookups read two 2-bit values packed in one: 4 bits, exact.
    let pool = SmallResidual::architecture().analysis()[9].lookup.unwrap();
    assert_eq!((pool.count, pool.precision), (16, 4));
}

#[test]
fn a_max_pool_moves_before_a_lookup_only_where_the_max_commutes_with_it() {
    // `Threshold(2, 5)` then the quantizer is not monotone (5 → 2 for a join below 2, 3 → 1):
    // the max must be taken after it, on every value.
    let w = weights();
    let x = crops();
    let file = tensor_file(&w, 8);
    let model = QuantModel::from_tensors(ThresholdResidual::architecture(), &file).unwrap();
    assert_eq!(model.lookups(), ThresholdResidual::architecture().lookups());
    let threshold = |v: f64| if v > 2.0 { v } else { 5.0 };
    // On the join's values (multiples of its scale), the lookup decreases from 0 to 1.
    let lookup = |k: f64| {
        (threshold(k * JOIN_SCALE) / Z_SCALE)
            .round_ties_even()
            .clamp(0.0, 3.0)
    };
    assert!(lookup(0.0) > lookup(1.0));
    let out = model.predict_clear(x.view()).unwrap();
    for (i, row) in out.axis_iter(Axis(0)).enumerate() {
        let sample = x.row(i).to_vec();
        let want = reference_with(&w, &sample, JoinOp::Add, 3.0, JOIN_SCALE, threshold);
        for (got, want) in row.iter().zip(&want) {
            assert!((got - want).abs() < 1e-9, "sample {i}: {got} vs {want}");
        }
    }
}

#[test]
fn fhe_equals_clear_on_residual_product_and_concatenated_networks() {
    let w = weights();
    let x = crops();
    let mut compared = 0;
    // Stem 32; residual: branch, fork side 32 each; packed product and residual: no fork
    // side, the join 32; unpacked product: squares 64 more; concatenation: both sides 32
    // each; max pools 16 + 8 per 2 channels, and after an unpacked join or a concatenation
    // the join's (or the concatenation's) lookup once per window: 8 per 2 channels.
    // The residual and the concatenation at the fork's scale: the fork's side reads the
    // forked values as they are.
    for (arch, features, lookups, join_scale) in [
        (SmallResidual::architecture(), 8, 128, JOIN_SCALE),
        (SmallResidual::architecture(), 8, 96, X_SCALE),
        (SmallProduct::architecture(), 8, 120, JOIN_SCALE),
        (BinaryResidual::architecture(), 8, 120, JOIN_SCALE),
        (WideProduct::architecture(), 8, 192, JOIN_SCALE),
        (SmallConcat::architecture(), 16, 160, JOIN_SCALE),
        (SmallConcat::architecture(), 16, 128, X_SCALE),
    ] {
        let file = with_join_scale(tensor_file(&w, features), join_scale);
        let model = QuantModel::from_tensors(arch, &file).unwrap();
        let compiled = model.compile(x.view(), &FheOptions::default()).unwrap();
        let (client, eval) = compiled.keygen().unwrap();
        let server = compiled.server(eval).unwrap();
        assert_eq!(server.lookups(), lookups, "{}", arch.name());
        for row in x.axis_iter(Axis(0)).take(2) {
            let q = client.quantize(row).unwrap();
            let input = client.encrypt(row).unwrap();
            let trace = server.run_traced(&input).unwrap();
            // Every exact lookup decrypts to Clear's table value on the inputs FHE had (a
            // wrong one is a failure that p_error bounds). An approximate one (a wide
            // accumulator spread over the table) may read a neighbouring value at the rate
            // Simulate predicts (tests/simulate.rs); where none did, the outputs are Clear's.
            let differences = compiled.lookup_differences(&client, &q, &trace).unwrap();
            let exact = compiled.plan().lookups.iter().map(|l| l.exact);
            assert_eq!(differences.len(), compiled.plan().lookups.len());
            for (k, (&(d, _), exact)) in differences.iter().zip(exact).enumerate() {
                assert!(
                    !exact || d == 0,
                    "{} lookup layer {k}: {differences:?}",
                    arch.name()
                );
            }
            if differences.iter().all(|&(d, _)| d == 0) {
                compared += 1;
                assert_eq!(
                    client.decrypt_int(trace.last().unwrap()).unwrap(),
                    model.clear_int(&q).unwrap(),
                    "{}",
                    arch.name()
                );
            }
        }
    }
    // Approximate lookups rarely read a neighbour at 2^-40: most samples end as Clear.
    assert!(
        compared >= 11,
        "{compared} of 14 samples without a differing lookup"
    );
}

#[test]
fn a_compiled_graph_network_is_a_file_with_the_same_tables() {
    let w = weights();
    let x = crops();
    let model =
        QuantModel::from_tensors(SmallDifference::architecture(), &tensor_file(&w, 8)).unwrap();
    let compiled = model.compile(x.view(), &FheOptions::default()).unwrap();
    let read = fhe_nn::CompiledModel::from_bytes(&compiled.to_bytes().unwrap()).unwrap();
    assert_eq!(read.fingerprint(), compiled.fingerprint());
    assert_eq!(
        read.architecture().layers(),
        SmallDifference::architecture().layers()
    );
    let q = compiled.quantize(x.view()).unwrap();
    for row in q.rows().into_iter().take(50) {
        let row = row.to_vec();
        assert_eq!(
            read.clear_trace(&row).unwrap(),
            compiled.clear_trace(&row).unwrap()
        );
    }
}

#[test]
fn simulate_predicts_fhe_error_rates_through_joins_and_max_pools() {
    // A deliberately coarse set (2-bit boxes, a lookup may fail with probability 0.4):
    // lookups often read a neighbouring value, and the errors travel through the fork, the
    // join and the pool.
    let model =
        QuantModel::from_tensors(SmallResidual::architecture(), &tensor_file(&weights(), 8))
            .unwrap();
    let x = crops();
    let options = FheOptions {
        parameters: fhe_nn::ParameterChoice::Vetted(2),
        p_error: 0.4,
        max_disagreement: 1.0,
        ..FheOptions::default()
    };
    let compiled = model.compile(x.view(), &options).unwrap();
    common::simulate_predicts_fhe(&compiled, x.view());
}

/// Only the last lookup layer may bootstrap with a key of its own, and the noise of the
/// outputs is charged at that key's variance: where the output layer also reads another
/// lookup layer's outputs (here through a concatenation), a set with a second key is refused
/// (the optimizer's side is `params::optimizer`'s test), and the default compile decrypts.
#[test]
fn outputs_read_from_two_lookup_layers_refuse_a_second_key() {
    let w = weights();
    let mut file = with_join_scale(tensor_file(&w, 16), JOIN_SCALE);
    // The layers of `ConcatOutput`: the linear layer is the ninth.
    for stale in [
        "layers.8.scale",
        "layers.10.scale",
        "layers.12.weight",
        "layers.12.weight_scale",
        "layers.12.bias",
    ] {
        file.tensors.remove(stale);
    }
    let mut rng = SplitMix64::new(5);
    let linear: Vec<i64> = (0..640).map(|_| rng.below(3) as i64 - 1).collect();
    file.tensors
        .insert("layers.8.weight".into(), Tensor::int(vec![10, 64], linear));
    file.tensors.insert(
        "layers.8.weight_scale".into(),
        Tensor::float(vec![], vec![LINEAR_SCALE]),
    );
    file.tensors.insert(
        "layers.8.bias".into(),
        Tensor::float(vec![10], w.linear_bias.clone()),
    );
    let model = QuantModel::from_tensors(ConcatOutput::architecture(), &file).unwrap();
    let x = crops();
    let set = vetted(4).unwrap().with_last_layer_pbs(Some((15, 2)));
    assert!(set.last_layer_pbs().is_some());
    let options = FheOptions {
        parameters: ParameterChoice::Fixed(Box::new(set)),
        ..FheOptions::default()
    };
    match model.compile(x.view(), &options) {
        Err(CompileError::SecondKeyNotApplicable { .. }) => {}
        other => panic!(
            "a second key was accepted: {:?}",
            other.map(|c| c.parameters().label())
        ),
    }
    let compiled = model.compile(x.view(), &FheOptions::default()).unwrap();
    assert_eq!(compiled.parameters().last_layer_pbs(), None);
    let (client, eval) = compiled.keygen().unwrap();
    let server = compiled.server(eval).unwrap();
    // Where no lookup read a neighbouring value (approximate lookups may, rarely, at
    // 2^-40), the decrypted outputs are Clear's: the outputs decrypt with the set's own key.
    let mut compared = 0;
    for row in x.axis_iter(Axis(0)).take(3) {
        let q = client.quantize(row).unwrap();
        let trace = server.run_traced(&client.encrypt(row).unwrap()).unwrap();
        let differences = compiled.lookup_differences(&client, &q, &trace).unwrap();
        if differences.iter().all(|&(d, _)| d == 0) {
            compared += 1;
            assert_eq!(
                client.decrypt_int(trace.last().unwrap()).unwrap(),
                compiled.clear_int(&q).unwrap()
            );
        }
    }
    assert!(
        compared >= 2,
        "{compared} of 3 samples without a differing lookup"
    );
}
