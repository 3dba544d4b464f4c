//! The cost model the optimizer minimizes: seconds of one core per keyswitch, per blind
//! rotation and per leveled multiply-add, as functions of a set's shape, with coefficients
//! fitted to timings of TFHE-rs on the project's 2-core machine
//! (`cargo run --release --example cost_model` re-measures them and prints a new fit; the
//! committed fit is not re-measured at run time, so compilation is deterministic).

use super::params::Shape;

/// Fitted coefficients (seconds per unit of each feature).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CostModel {
    /// Per word of keyswitch work: `k·N · ks_levels · (n + 1)`.
    pub keyswitch: f64,
    /// Per unit of blind-rotation work: `n · pbs_levels · (k + 1)^2 · N · log2 N`.
    pub rotation: f64,
    /// Per unit of FFT work outside the decomposition: `n · (k + 1) · N · log2 N`.
    pub transform: f64,
    /// Per word of a leveled multiply-add on a ciphertext of `k·N + 1` words.
    pub multiply_add: f64,
}

/// The committed fit (see the module documentation), measured 2026-11-26 on 11 sets (5
/// vetted, 6 custom; N from 512 to 8192; the timings are in
/// `fhe-nn/examples/cost_model_fit.json`): every set within 10% of its measured time, e.g.
/// the vetted 4-bit set 14.1 ms measured, 13.7 ms fitted.
pub const FITTED: CostModel = CostModel {
    keyswitch: 4.135e-10,
    rotation: 5.672e-11,
    transform: 1.108e-10,
    multiply_add: 3.061e-10,
};

/// The features of one keyswitch + bootstrap of `shape`: `[keyswitch, rotation, transform]`.
pub fn lookup_features(shape: &Shape) -> [f64; 3] {
    let n = shape.lwe_dimension as f64;
    let k = shape.glwe_dimension as f64;
    let big_n = shape.polynomial_size as f64;
    let fft = big_n * big_n.log2();
    [
        k * big_n * shape.ks.1 as f64 * (n + 1.0),
        n * shape.pbs.1 as f64 * (k + 1.0) * (k + 1.0) * fft,
        n * (k + 1.0) * fft,
    ]
}

impl CostModel {
    /// Seconds of one core for one keyswitch + programmable bootstrap.
    pub fn lookup_seconds(&self, shape: &Shape) -> f64 {
        let [ks, rot, fft] = lookup_features(shape);
        self.keyswitch * ks + self.rotation * rot + self.transform * fft
    }

    /// Seconds of one core for one leveled multiply-add (one non-zero weight).
    pub fn multiply_add_seconds(&self, shape: &Shape) -> f64 {
        self.multiply_add * (shape.glwe_dimension * shape.polynomial_size + 1) as f64
    }

    /// Seconds of one core for one inference of `lookups` lookups and `multiply_adds`
    /// non-zero weights.
    pub fn inference_seconds(&self, shape: &Shape, lookups: usize, multiply_adds: usize) -> f64 {
        lookups as f64 * self.lookup_seconds(shape)
            + multiply_adds as f64 * self.multiply_add_seconds(shape)
    }
}

/// Least-squares fit of the lookup coefficients to `(shape, seconds)` timings, with
/// non-negative coefficients (a feature whose coefficient would be negative is dropped).
pub fn fit_lookups(samples: &[(Shape, f64)], multiply_add: f64) -> CostModel {
    let rows: Vec<([f64; 3], f64)> = samples
        .iter()
        .map(|(s, t)| (lookup_features(s), *t))
        .collect();
    let mut active = [true; 3];
    loop {
        let idx: Vec<usize> = (0..3).filter(|&i| active[i]).collect();
        let m = idx.len();
        // Normal equations (features scaled to similar magnitudes first).
        let scale: Vec<f64> = idx
            .iter()
            .map(|&i| {
                rows.iter()
                    .map(|r| r.0[i].abs())
                    .fold(0.0, f64::max)
                    .max(1.0)
            })
            .collect();
        let mut a = vec![vec![0.0; m + 1]; m];
        for (f, t) in &rows {
            for r in 0..m {
                let xr = f[idx[r]] / scale[r];
                for c in 0..m {
                    a[r][c] += xr * f[idx[c]] / scale[c];
                }
                a[r][m] += xr * t;
            }
        }
        let solution = solve(a);
        let mut coefficients = [0.0; 3];
        for (r, &i) in idx.iter().enumerate() {
            coefficients[i] = solution[r] / scale[r];
        }
        match (0..3).find(|&i| active[i] && coefficients[i] < 0.0) {
            Some(i) if idx.len() > 1 => active[i] = false,
            _ => {
                return CostModel {
                    keyswitch: coefficients[0].max(0.0),
                    rotation: coefficients[1].max(0.0),
                    transform: coefficients[2].max(0.0),
                    multiply_add,
                }
            }
        }
    }
}

/// Gaussian elimination with partial pivoting on an augmented matrix.
fn solve(mut a: Vec<Vec<f64>>) -> Vec<f64> {
    let m = a.len();
    for col in 0..m {
        let pivot = (col..m)
            .max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        let p = a[col][col];
        if p.abs() < 1e-300 {
            continue;
        }
        for row in 0..m {
            if row != col {
                let factor = a[row][col] / p;
                let pivot_row = a[col].clone();
                for (x, y) in a[row].iter_mut().zip(pivot_row).skip(col) {
                    *x -= factor * y;
                }
            }
        }
    }
    (0..m)
        .map(|i| {
            if a[i][i].abs() < 1e-300 {
                0.0
            } else {
                a[i][m] / a[i][i]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(n: usize, k: usize, big_n: usize, pbs: usize, ks: usize) -> Shape {
        Shape {
            lwe_dimension: n,
            glwe_dimension: k,
            polynomial_size: big_n,
            pbs: (23, pbs),
            ks: (3, ks),
        }
    }

    #[test]
    fn the_fit_recovers_known_coefficients() {
        let truth = CostModel {
            keyswitch: 3e-10,
            rotation: 2e-10,
            transform: 5e-11,
            multiply_add: 0.0,
        };
        let samples: Vec<(Shape, f64)> = [
            shape(700, 1, 2048, 1, 4),
            shape(800, 1, 2048, 1, 6),
            shape(900, 1, 4096, 2, 6),
            shape(1000, 1, 8192, 2, 7),
            shape(850, 2, 1024, 1, 5),
        ]
        .into_iter()
        .map(|s| (s, truth.lookup_seconds(&s)))
        .collect();
        let fit = fit_lookups(&samples, 0.0);
        for (s, t) in &samples {
            let rel = (fit.lookup_seconds(s) - t).abs() / t;
            assert!(rel < 1e-6, "{s:?}: {rel}");
        }
    }

    #[test]
    fn committed_fit_orders_sets_by_size() {
        let small = shape(720, 1, 2048, 1, 4);
        let vetted4 = shape(904, 1, 2048, 1, 6);
        let vetted6 = shape(1011, 1, 8192, 2, 7);
        assert!(FITTED.lookup_seconds(&small) < FITTED.lookup_seconds(&vetted4));
        assert!(FITTED.lookup_seconds(&vetted4) * 3.0 < FITTED.lookup_seconds(&vetted6));
    }
}
