//! Folding a per-channel affine map (a batch normalization) into a weighted layer's scales,
//! signs and bias: shared by the trainer, which trains with batch normalization, and the ONNX
//! importer, which reads it, without either depending on the other.

/// The per-channel affine map `z ↦ a z + b` of a batch normalization
/// `γ (z - μ) / √(σ² + ε) + β`.
pub(crate) fn affine_of_batch_norm(
    gamma: &[f64],
    beta: &[f64],
    mean: &[f64],
    var: &[f64],
    epsilon: f64,
) -> (Vec<f64>, Vec<f64>) {
    let a: Vec<f64> = gamma
        .iter()
        .zip(var)
        .map(|(g, v)| g / (v + epsilon).sqrt())
        .collect();
    let b = (0..a.len()).map(|c| beta[c] - a[c] * mean[c]).collect();
    (a, b)
}

/// Folds a per-channel affine map `z ↦ a z + b` after a weighted layer (`z = scale · Σ w x +
/// bias`, `ints` row-major, one row per channel) into the layer: `|a|` joins the scale (which
/// stays positive), its sign the integer weights, and the bias becomes `a · bias + b`.
pub(crate) fn fold_affine(
    ints: &mut [i64],
    scales: &mut [f64],
    bias: &mut [f64],
    a: &[f64],
    b: &[f64],
) {
    let fan_in = ints.len() / a.len().max(1);
    for (c, (&a, &b)) in a.iter().zip(b).enumerate() {
        if a < 0.0 {
            ints[c * fan_in..(c + 1) * fan_in]
                .iter_mut()
                .for_each(|w| *w = -*w);
        }
        scales[c] *= a.abs();
        bias[c] = a * bias[c] + b;
    }
}
