//! The cost model the optimizer minimizes: seconds of one core per keyswitch, per blind
//! rotation and per leveled multiply-add, as functions of a set's shape, with coefficients
//! fitted to timings of TFHE-rs on the project's 2-core machine
//! (`cargo run --release -p fhe-nn --example cost_model` re-measures them and prints a new fit; the
//! committed fit is not re-measured at run time, so compilation is deterministic).

use super::sets::{InputKey, ParameterSet, Shape};

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

/// The committed fit (see the module documentation), measured 2026-11-26 on 13 sets (5
/// vetted, 8 custom; N from 512 to 8192; the timings are in
/// `fhe-nn/examples/cost_model_fit.json`), keyswitch and bootstrap timed apart: every
/// keyswitch within 17% and every bootstrap within 9% of its measured time, e.g. the vetted
/// 4-bit set's 4.33 + 12.76 ms measured, 3.79 + 12.16 ms fitted.
pub const FITTED: CostModel = CostModel {
    keyswitch: 3.412e-10,
    rotation: 6.468e-11,
    transform: 1.692e-10,
    multiply_add: 3.004e-10,
};

/// The features of one keyswitch + bootstrap of `shape`: `[keyswitch, rotation, transform]`.
pub(crate) fn lookup_features(shape: &Shape) -> [f64; 3] {
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
    pub(crate) fn lookup_seconds(&self, shape: &Shape) -> f64 {
        self.keyswitch_seconds(shape) + self.bootstrap_seconds(shape)
    }

    /// Seconds of one core for one keyswitch.
    pub fn keyswitch_seconds(&self, shape: &Shape) -> f64 {
        self.keyswitch * lookup_features(shape)[0]
    }

    /// Seconds of one core for one programmable bootstrap without a keyswitch (a lookup
    /// reading fresh inputs, which the client encrypts under the small key).
    pub fn bootstrap_seconds(&self, shape: &Shape) -> f64 {
        let [_, rot, fft] = lookup_features(shape);
        self.rotation * rot + self.transform * fft
    }

    /// Seconds of one core for one leveled multiply-add (one non-zero weight) on a ciphertext
    /// under the big key (`k·N + 1` words) or the small key (`n + 1`).
    pub(crate) fn multiply_add_seconds(&self, shape: &Shape, small_key: bool) -> f64 {
        let words = if small_key {
            shape.lwe_dimension + 1
        } else {
            shape.glwe_dimension * shape.polynomial_size + 1
        };
        self.multiply_add * words as f64
    }

    /// Seconds of one core for one inference of `work` under `set` (its inputs' key, and its
    /// last lookup layer's decomposition).
    pub(crate) fn inference_seconds(&self, set: &ParameterSet, work: &Work) -> f64 {
        let shape = &set.shape();
        let last = Shape {
            pbs: set.last_layer_decomposition(),
            ..*shape
        };
        let last_layer_extra = self.bootstrap_seconds(&last) - self.bootstrap_seconds(shape);
        let small = set.inputs == InputKey::Small;
        let fresh_lookup = if small {
            self.bootstrap_seconds(shape)
        } else {
            self.lookup_seconds(shape)
        };
        work.lookups as f64 * self.lookup_seconds(shape)
            + work.fresh_lookups as f64 * fresh_lookup
            + work.multiply_adds as f64 * self.multiply_add_seconds(shape, false)
            + work.fresh_multiply_adds as f64 * self.multiply_add_seconds(shape, small)
            + work.last_layer_lookups as f64 * last_layer_extra
    }
}

/// The homomorphic work of one inference, split by what it reads: fresh inputs (whose cost
/// depends on the key they are under) or bootstrap outputs (under the big key).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Work {
    /// Lookups on bootstrap outputs (keyswitch + bootstrap).
    pub lookups: usize,
    /// Lookups on fresh inputs (the first layer's; bootstrap only under the small key).
    pub fresh_lookups: usize,
    /// Non-zero weights applied to bootstrap outputs.
    pub multiply_adds: usize,
    /// Non-zero weights applied to fresh inputs.
    pub fresh_multiply_adds: usize,
    /// The last lookup layer's lookups (counted in `lookups` or `fresh_lookups` too), which
    /// bootstrap at that layer's own decomposition.
    pub last_layer_lookups: usize,
}

/// One timed set: its shape, the seconds of one keyswitch and of one bootstrap (modulus
/// switch, blind rotation, sample extraction), each on one core.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    pub shape: Shape,
    pub keyswitch: f64,
    pub bootstrap: f64,
}

/// Least-squares fit of the coefficients to timings: the keyswitch's on the keyswitch times,
/// the bootstrap's two on the bootstrap times, all non-negative (a feature whose coefficient
/// would be negative is dropped).
pub fn fit(timings: &[Timing], multiply_add: f64) -> CostModel {
    let keyswitch = nonnegative_least_squares(
        &timings
            .iter()
            .map(|t| (vec![lookup_features(&t.shape)[0]], t.keyswitch))
            .collect::<Vec<_>>(),
    );
    let bootstrap = nonnegative_least_squares(
        &timings
            .iter()
            .map(|t| {
                let [_, rot, fft] = lookup_features(&t.shape);
                (vec![rot, fft], t.bootstrap)
            })
            .collect::<Vec<_>>(),
    );
    CostModel {
        keyswitch: keyswitch[0],
        rotation: bootstrap[0],
        transform: bootstrap[1],
        multiply_add,
    }
}

/// Least squares `features · x ≈ seconds` with `x ≥ 0`: solves the normal equations (features
/// scaled to similar magnitudes), drops a feature whose coefficient comes out negative, and
/// solves again.
fn nonnegative_least_squares(rows: &[(Vec<f64>, f64)]) -> Vec<f64> {
    let width = rows.first().map_or(0, |r| r.0.len());
    let mut active = vec![true; width];
    loop {
        let idx: Vec<usize> = (0..width).filter(|&i| active[i]).collect();
        let m = idx.len();
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
        for (f, t) in rows {
            for r in 0..m {
                let xr = f[idx[r]] / scale[r];
                for c in 0..m {
                    a[r][c] += xr * f[idx[c]] / scale[c];
                }
                a[r][m] += xr * t;
            }
        }
        let solution = solve(a);
        let mut coefficients = vec![0.0; width];
        for (r, &i) in idx.iter().enumerate() {
            coefficients[i] = solution[r] / scale[r];
        }
        match (0..width).find(|&i| active[i] && coefficients[i] < 0.0) {
            Some(i) if m > 1 => active[i] = false,
            _ => return coefficients.into_iter().map(|c| c.max(0.0)).collect(),
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
        let timings: Vec<Timing> = [
            shape(700, 1, 2048, 1, 4),
            shape(800, 1, 2048, 1, 6),
            shape(900, 1, 4096, 2, 6),
            shape(1000, 1, 8192, 2, 7),
            shape(850, 2, 1024, 1, 5),
        ]
        .into_iter()
        .map(|s| Timing {
            shape: s,
            keyswitch: truth.keyswitch_seconds(&s),
            bootstrap: truth.bootstrap_seconds(&s),
        })
        .collect();
        let fitted = fit(&timings, 0.0);
        for t in &timings {
            let s = &t.shape;
            for (got, want) in [
                (fitted.keyswitch_seconds(s), truth.keyswitch_seconds(s)),
                (fitted.bootstrap_seconds(s), truth.bootstrap_seconds(s)),
            ] {
                let rel = (got - want).abs() / want;
                assert!(rel < 1e-6, "{s:?}: {rel}");
            }
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
