//! Convolution, average pooling and flatten in the runtime: Clear equals an independent
//! direct implementation on real digits, and Fhe equals Clear.

use fhe_nn::datasets::digits;
use fhe_nn::rng::SplitMix64;
use fhe_nn::tensors::{Tensor, TensorFile};
use fhe_nn::FheOptions;
use fhe_nn::{fhe_net, LoadError, QuantModel};
use ndarray::{Array2, Axis};

fhe_net! {
    /// 6×6 crops (2-bit) → 2 channels of 3×3 convolution → 2×2 average pooling → 10 classes.
    struct SmallConv<QuantIdentity(2, unsigned),
                     QuantConv2d(1, 2, 3, w = 2, input = (6, 6)), ReLU, QuantIdentity(2, unsigned),
                     AvgPool2d(2), QuantIdentity(2, unsigned),
                     Flatten, QuantLinear(8, 10, w = 2)>
}

const CONV_SCALE: [f64; 2] = [0.3, 0.5];
const CONV_BIAS: [f64; 2] = [0.1, -0.2];
const INPUT_SCALE: f64 = 16.0 / 3.0;
const RELU_SCALE: f64 = 2.0;
const POOL_SCALE: f64 = 2.0;
const LINEAR_SCALE: f64 = 0.3;

struct Weights {
    conv: Vec<i64>,
    linear: Vec<i64>,
    linear_bias: Vec<f64>,
}

fn weights() -> Weights {
    let mut rng = SplitMix64::new(77);
    let ternary = |n: usize, rng: &mut SplitMix64| {
        (0..n).map(|_| rng.below(3) as i64 - 1).collect::<Vec<_>>()
    };
    // Vertical and horizontal edge detectors.
    let conv = vec![1, 0, -1, 1, 0, -1, 1, 0, -1, 1, 1, 1, 0, 0, 0, -1, -1, -1];
    let linear = ternary(80, &mut rng);
    let linear_bias = (0..10).map(|j| 0.05 * j as f64 - 0.2).collect();
    Weights {
        conv,
        linear,
        linear_bias,
    }
}

fn tensor_file(w: &Weights, conv_shape: Vec<usize>) -> TensorFile {
    let mut f = TensorFile::default();
    let scalar = |v: f64| Tensor::float(vec![], vec![v]);
    f.tensors
        .insert("layers.0.scale".into(), scalar(INPUT_SCALE));
    f.tensors.insert(
        "layers.1.weight".into(),
        Tensor::int(conv_shape, w.conv.clone()),
    );
    f.tensors.insert(
        "layers.1.weight_scale".into(),
        Tensor::float(vec![2], CONV_SCALE.to_vec()),
    );
    f.tensors.insert(
        "layers.1.bias".into(),
        Tensor::float(vec![2], CONV_BIAS.to_vec()),
    );
    f.tensors
        .insert("layers.3.scale".into(), scalar(RELU_SCALE));
    f.tensors
        .insert("layers.5.scale".into(), scalar(POOL_SCALE));
    f.tensors.insert(
        "layers.7.weight".into(),
        Tensor::int(vec![10, 8], w.linear.clone()),
    );
    f.tensors
        .insert("layers.7.weight_scale".into(), scalar(LINEAR_SCALE));
    f.tensors.insert(
        "layers.7.bias".into(),
        Tensor::float(vec![10], w.linear_bias.clone()),
    );
    f
}

/// The central 6×6 crop of each 8×8 digit.
fn crops() -> Array2<f64> {
    let images = digits().unwrap().test.images;
    Array2::from_shape_fn((images.nrows(), 36), |(i, f)| {
        images[(i, 8 * (1 + f / 6) + 1 + f % 6)]
    })
}

/// The network computed directly from its definition, in floating point.
fn reference(w: &Weights, x: &[f64]) -> Vec<f64> {
    let q = |v: f64, scale: f64, max: f64| (v / scale).round_ties_even().clamp(0.0, max);
    let input: Vec<f64> = x.iter().map(|&v| q(v, INPUT_SCALE, 3.0)).collect();
    let mut relu = vec![0.0; 2 * 16];
    for oc in 0..2 {
        for oy in 0..4 {
            for ox in 0..4 {
                let mut acc = 0.0;
                for ky in 0..3 {
                    for kx in 0..3 {
                        acc += w.conv[oc * 9 + ky * 3 + kx] as f64 * input[(oy + ky) * 6 + ox + kx];
                    }
                }
                let y = (acc * INPUT_SCALE * CONV_SCALE[oc] + CONV_BIAS[oc]).max(0.0);
                relu[oc * 16 + oy * 4 + ox] = q(y, RELU_SCALE, 3.0);
            }
        }
    }
    let mut pooled = [0.0; 8];
    for c in 0..2 {
        for py in 0..2 {
            for px in 0..2 {
                let sum: f64 = (0..4)
                    .map(|t| relu[c * 16 + (2 * py + t / 2) * 4 + 2 * px + t % 2])
                    .sum();
                pooled[c * 4 + py * 2 + px] = q(sum * RELU_SCALE / 4.0, POOL_SCALE, 3.0);
            }
        }
    }
    (0..10)
        .map(|j| {
            (0..8)
                .map(|i| w.linear[j * 8 + i] as f64 * pooled[i])
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
    // Both layouts of convolution weights load: PyTorch's [out, in, k, k] and flattened.
    for shape in [vec![2, 1, 3, 3], vec![2, 9]] {
        let model =
            QuantModel::from_tensors(SmallConv::architecture(), &tensor_file(&w, shape)).unwrap();
        let out = model.predict_clear(x.view()).unwrap();
        // The test means something only if the outputs vary with the image.
        let distinct: std::collections::BTreeSet<String> =
            out.axis_iter(Axis(0)).map(|r| format!("{r:.6}")).collect();
        assert!(distinct.len() > 20, "{} distinct outputs", distinct.len());
        for (i, row) in out.axis_iter(Axis(0)).enumerate() {
            let want = reference(&w, x.row(i).as_slice().unwrap());
            for (got, want) in row.iter().zip(&want) {
                assert!((got - want).abs() < 1e-9, "sample {i}: {got} vs {want}");
            }
        }
    }
    let err = QuantModel::from_tensors(SmallConv::architecture(), &tensor_file(&w, vec![2, 3, 3]))
        .unwrap_err();
    assert!(
        matches!(err, LoadError::ShapeMismatch { ref tensor, .. } if tensor == "layers.1.weight"),
        "{err}"
    );
}

#[test]
fn fhe_equals_clear_on_a_convolutional_network() {
    let w = weights();
    let x = crops();
    let model =
        QuantModel::from_tensors(SmallConv::architecture(), &tensor_file(&w, vec![2, 9])).unwrap();
    let compiled = model.compile(x.view(), &FheOptions::default()).unwrap();
    // Every lookup is exact: whole boxes, or positions of its own per value (a wrong
    // reading is then a failure that p_error bounds).
    assert!(compiled.plan().lookups.iter().all(|l| l.exact));
    let (client, eval) = compiled.keygen().unwrap();
    let server = compiled.server(eval).unwrap();
    assert_eq!(server.lookups(), 2 * 16 + 8);
    for row in x.axis_iter(Axis(0)).take(3) {
        let q = client.quantize(row).unwrap();
        let out = server.run(&client.encrypt(row).unwrap()).unwrap();
        assert_eq!(
            client.decrypt_int(&out).unwrap(),
            model.clear_int(&q).unwrap()
        );
    }
}
