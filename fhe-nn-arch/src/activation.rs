//! Univariate activations (PyTorch semantics). Each costs one table lookup under FHE, folded
//! together with the quantizer that follows it.

/// An element-wise activation function with its parameters. Variant names are the DSL's
/// (PyTorch's) spellings, acronyms included.
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    ReLU,
    ReLU6,
    Sigmoid,
    Tanh,
    HardTanh { min: f64, max: f64 },
    LeakyReLU { slope: f64 },
    GELU,
    SiLU,
    HardSigmoid,
    HardSwish,
    Threshold { threshold: f64, value: f64 },
    ELU { alpha: f64 },
    SELU,
    CELU { alpha: f64 },
    Softplus { beta: f64, threshold: f64 },
    Softsign,
    Mish,
    LogSigmoid,
    Tanhshrink,
    Hardshrink { lambda: f64 },
    Softshrink { lambda: f64 },
}

/// A parameter's name and default (`None`: required).
pub type ParamSpec = (&'static str, Option<f64>);

/// Name and parameters of every activation, in the spelling the DSL accepts.
pub const ACTIVATIONS: &[(&str, &[ParamSpec])] = &[
    ("ReLU", &[]),
    ("ReLU6", &[]),
    ("Sigmoid", &[]),
    ("Tanh", &[]),
    (
        "HardTanh",
        &[("min_val", Some(-1.0)), ("max_val", Some(1.0))],
    ),
    ("LeakyReLU", &[("negative_slope", Some(0.01))]),
    ("GELU", &[]),
    ("SiLU", &[]),
    ("HardSigmoid", &[]),
    ("HardSwish", &[]),
    ("Threshold", &[("threshold", None), ("value", None)]),
    ("ELU", &[("alpha", Some(1.0))]),
    ("SELU", &[]),
    ("CELU", &[("alpha", Some(1.0))]),
    (
        "Softplus",
        &[("beta", Some(1.0)), ("threshold", Some(20.0))],
    ),
    ("Softsign", &[]),
    ("Mish", &[]),
    ("LogSigmoid", &[]),
    ("Tanhshrink", &[]),
    ("Hardshrink", &[("lambda", Some(0.5))]),
    ("Softshrink", &[("lambda", Some(0.5))]),
];

const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;
const SELU_SCALE: f64 = 1.050_700_987_355_480_5;

impl Activation {
    /// Builds an activation from its DSL name and its parameters, in the order of
    /// [`ACTIVATIONS`] (missing trailing parameters take their defaults).
    pub fn from_name(name: &str, params: &[f64]) -> Result<Activation, String> {
        let Some((_, spec)) = ACTIVATIONS.iter().find(|(n, _)| *n == name) else {
            return Err(format!("unknown activation `{name}`"));
        };
        if params.len() > spec.len() {
            return Err(format!(
                "`{name}` takes at most {} argument(s), got {}",
                spec.len(),
                params.len()
            ));
        }
        let mut values = [0.0f64; 2];
        for (i, (pname, default)) in spec.iter().enumerate() {
            values[i] = match (params.get(i), default) {
                (Some(v), _) => *v,
                (None, Some(d)) => *d,
                (None, None) => return Err(format!("`{name}` needs its `{pname}` argument")),
            };
            if !values[i].is_finite() {
                return Err(format!("`{name}`: `{pname}` must be finite"));
            }
        }
        let [a, b] = values;
        let act = match name {
            "ReLU" => Activation::ReLU,
            "ReLU6" => Activation::ReLU6,
            "Sigmoid" => Activation::Sigmoid,
            "Tanh" => Activation::Tanh,
            "HardTanh" => {
                if a >= b {
                    return Err(format!(
                        "`HardTanh`: min_val ({a}) must be below max_val ({b})"
                    ));
                }
                Activation::HardTanh { min: a, max: b }
            }
            "LeakyReLU" => Activation::LeakyReLU { slope: a },
            "GELU" => Activation::GELU,
            "SiLU" => Activation::SiLU,
            "HardSigmoid" => Activation::HardSigmoid,
            "HardSwish" => Activation::HardSwish,
            "Threshold" => Activation::Threshold {
                threshold: a,
                value: b,
            },
            "ELU" => Activation::ELU { alpha: a },
            "SELU" => Activation::SELU,
            "CELU" => {
                if a == 0.0 {
                    return Err("`CELU`: alpha must not be 0".to_string());
                }
                Activation::CELU { alpha: a }
            }
            "Softplus" => {
                if a == 0.0 {
                    return Err("`Softplus`: beta must not be 0".to_string());
                }
                Activation::Softplus {
                    beta: a,
                    threshold: b,
                }
            }
            "Softsign" => Activation::Softsign,
            "Mish" => Activation::Mish,
            "LogSigmoid" => Activation::LogSigmoid,
            "Tanhshrink" => Activation::Tanhshrink,
            "Hardshrink" => Activation::Hardshrink { lambda: a },
            "Softshrink" => {
                if a < 0.0 {
                    return Err("`Softshrink`: lambda must be non-negative".to_string());
                }
                Activation::Softshrink { lambda: a }
            }
            _ => unreachable!("every name of ACTIVATIONS is matched"),
        };
        Ok(act)
    }

    /// The DSL name of this activation.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::ReLU => "ReLU",
            Activation::ReLU6 => "ReLU6",
            Activation::Sigmoid => "Sigmoid",
            Activation::Tanh => "Tanh",
            Activation::HardTanh { .. } => "HardTanh",
            Activation::LeakyReLU { .. } => "LeakyReLU",
            Activation::GELU => "GELU",
            Activation::SiLU => "SiLU",
            Activation::HardSigmoid => "HardSigmoid",
            Activation::HardSwish => "HardSwish",
            Activation::Threshold { .. } => "Threshold",
            Activation::ELU { .. } => "ELU",
            Activation::SELU => "SELU",
            Activation::CELU { .. } => "CELU",
            Activation::Softplus { .. } => "Softplus",
            Activation::Softsign => "Softsign",
            Activation::Mish => "Mish",
            Activation::LogSigmoid => "LogSigmoid",
            Activation::Tanhshrink => "Tanhshrink",
            Activation::Hardshrink { .. } => "Hardshrink",
            Activation::Softshrink { .. } => "Softshrink",
        }
    }

    /// The parameters, in the order of [`ACTIVATIONS`] (inverse of [`from_name`](Self::from_name)).
    pub fn params(&self) -> Vec<f64> {
        match *self {
            Activation::HardTanh { min, max } => vec![min, max],
            Activation::LeakyReLU { slope } => vec![slope],
            Activation::Threshold { threshold, value } => vec![threshold, value],
            Activation::ELU { alpha } | Activation::CELU { alpha } => vec![alpha],
            Activation::Softplus { beta, threshold } => vec![beta, threshold],
            Activation::Hardshrink { lambda } | Activation::Softshrink { lambda } => vec![lambda],
            _ => Vec::new(),
        }
    }

    /// Evaluates the activation on a real number, as PyTorch defines it.
    pub fn apply(&self, x: f64) -> f64 {
        match *self {
            Activation::ReLU => x.max(0.0),
            Activation::ReLU6 => x.clamp(0.0, 6.0),
            Activation::Sigmoid => sigmoid(x),
            Activation::Tanh => x.tanh(),
            Activation::HardTanh { min, max } => x.clamp(min, max),
            Activation::LeakyReLU { slope } => {
                if x >= 0.0 {
                    x
                } else {
                    slope * x
                }
            }
            Activation::GELU => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
            Activation::SiLU => x * sigmoid(x),
            Activation::HardSigmoid => (x + 3.0).clamp(0.0, 6.0) / 6.0,
            Activation::HardSwish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
            Activation::Threshold { threshold, value } => {
                if x > threshold {
                    x
                } else {
                    value
                }
            }
            Activation::ELU { alpha } => {
                if x > 0.0 {
                    x
                } else {
                    alpha * x.exp_m1()
                }
            }
            Activation::SELU => SELU_SCALE * if x > 0.0 { x } else { SELU_ALPHA * x.exp_m1() },
            Activation::CELU { alpha } => x.max(0.0) + (alpha * (x / alpha).exp_m1()).min(0.0),
            Activation::Softplus { beta, threshold } => softplus(x, beta, threshold),
            Activation::Softsign => x / (1.0 + x.abs()),
            Activation::Mish => x * softplus(x, 1.0, 20.0).tanh(),
            Activation::LogSigmoid => -softplus(-x, 1.0, 20.0),
            Activation::Tanhshrink => x - x.tanh(),
            Activation::Hardshrink { lambda } => {
                if x.abs() > lambda {
                    x
                } else {
                    0.0
                }
            }
            Activation::Softshrink { lambda } => {
                if x > lambda {
                    x - lambda
                } else if x < -lambda {
                    x + lambda
                } else {
                    0.0
                }
            }
        }
    }

    /// Whether the output is known to be non-negative, given whether the input is.
    ///
    /// A quantizer with zero point 0 maps a non-negative tensor to non-negative integers, so
    /// this tightens the integer range the next layer sees (a signed 3-bit quantizer after a
    /// ReLU yields `[0, 3]`, not `[-4, 3]`).
    pub fn output_nonnegative(&self, input_nonnegative: bool) -> bool {
        match *self {
            Activation::ReLU
            | Activation::ReLU6
            | Activation::Sigmoid
            | Activation::HardSigmoid => true,
            // log(1 + e^(βx))/β has the sign of β.
            Activation::Softplus { beta, .. } => beta > 0.0,
            // Clamped to [min, max]: non-negative when min >= 0, or when a non-negative
            // input is clamped to a non-negative max.
            Activation::HardTanh { min, max } => min >= 0.0 || (input_nonnegative && max >= 0.0),
            Activation::Threshold { threshold, value } => {
                value >= 0.0 && (threshold >= 0.0 || input_nonnegative)
            }
            Activation::LogSigmoid => false,
            // Every other activation maps [0, inf) into [0, inf).
            _ => input_nonnegative,
        }
    }
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn softplus(x: f64, beta: f64, threshold: f64) -> f64 {
    if beta * x > threshold {
        x
    } else {
        (beta * x).exp().ln_1p() / beta
    }
}

/// The error function, to about 1e-15 relative error.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    let value = if ax < 2.5 {
        erf_series(ax)
    } else {
        1.0 - erfc(ax)
    };
    value.copysign(x)
}

/// The complementary error function `1 - erf(x)`, accurate in relative terms in the far
/// tail (failure probabilities of 2^-128 and below).
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x < 2.5 {
        return 1.0 - erf_series(x.abs()).copysign(x);
    }
    if x > 27.0 {
        return 0.0;
    }
    // Lentz's continued fraction: erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))).
    let tiny = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for k in 1..500 {
        let a = k as f64 / 2.0;
        d = x + a * d;
        d = if d.abs() < tiny { tiny } else { d };
        c = x + a / c;
        c = if c.abs() < tiny { tiny } else { c };
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / (f * std::f64::consts::PI.sqrt())
}

/// Maclaurin series: erf(x) = 2/sqrt(pi) · Σ (-1)^n x^(2n+1) / (n! (2n+1)), for |x| < 2.5.
fn erf_series(ax: f64) -> f64 {
    let mut term = ax;
    let mut sum = ax;
    let x2 = ax * ax;
    let mut n = 0.0;
    while term.abs() > 1e-17 * sum.abs().max(1e-300) {
        n += 1.0;
        term *= -x2 / n;
        sum += term / (2.0 * n + 1.0);
    }
    sum * std::f64::consts::FRAC_2_SQRT_PI
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_reference_values() {
        // Reference values from Abramowitz & Stegun table 7.1 / high-precision software.
        let cases = [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
            (-1.5, -0.966_105_146_475_310_7),
        ];
        for (x, want) in cases {
            assert!((erf(x) - want).abs() < 1e-14, "erf({x}) = {}", erf(x));
        }
        // Tail values: erfc(5) = 1.5374597944280349e-12, erfc(10) = 2.0884875837625446e-45.
        assert!((erfc(5.0) / 1.537_459_794_428_035e-12 - 1.0).abs() < 1e-12);
        assert!((erfc(10.0) / 2.088_487_583_762_544_6e-45 - 1.0).abs() < 1e-12);
        assert!((erfc(1.0) - 0.157_299_207_050_285_1).abs() < 1e-15);
    }

    #[test]
    fn activations_follow_pytorch_definitions() {
        assert_eq!(Activation::ReLU.apply(-2.0), 0.0);
        assert_eq!(Activation::ReLU6.apply(7.5), 6.0);
        assert_eq!(Activation::HardSigmoid.apply(0.0), 0.5);
        assert!((Activation::GELU.apply(1.0) - 0.841_344_746_068_542_9).abs() < 1e-12);
        assert!((Activation::SiLU.apply(1.0) - 0.731_058_578_630_004_9).abs() < 1e-12);
        let t = Activation::from_name("Threshold", &[0.5, -1.0]).unwrap();
        assert_eq!(t.apply(0.4), -1.0);
        assert_eq!(t.apply(0.6), 0.6);
        let leaky = Activation::from_name("LeakyReLU", &[]).unwrap();
        assert_eq!(leaky.apply(-1.0), -0.01);
    }

    #[test]
    fn every_listed_name_builds() {
        for (name, params) in ACTIVATIONS {
            let args: Vec<f64> = params.iter().map(|(_, d)| d.unwrap_or(0.5)).collect();
            let act = Activation::from_name(name, &args).unwrap();
            assert_eq!(act.name(), *name);
            assert_eq!(
                Activation::from_name(act.name(), &act.params()).unwrap(),
                act
            );
        }
        assert!(Activation::from_name("Threshold", &[1.0]).is_err());
        assert!(Activation::from_name("HardTanh", &[1.0, -1.0]).is_err());
        assert!(Activation::from_name("Swish", &[]).is_err());
    }
}
