//! The 128-bit-secure parameter sets the runtime uses: TFHE-rs's vetted classic KS-PBS sets
//! with one message bit and `precision - 1` carry bits (so `2^precision` boxes), copied from
//! `tfhe::shortint::parameters::v1_4` (`V1_4_PARAM_MESSAGE_1_CARRY_k_KS_PBS_GAUSSIAN_2M128`)
//! because upstream prunes rarely used sets, and custom sets of the same shape built by the
//! optimizer with the minimal secure noise of TFHE-rs's security curve.

use tfhe::core_crypto::commons::parameters::{
    DecompositionBaseLog, DecompositionLevelCount, DynamicDistribution, GlweDimension,
    LweDimension, PolynomialSize, StandardDev,
};
use tfhe::shortint::parameters::{
    CarryModulus, CiphertextModulus, ClassicPBSParameters, EncryptionKeyChoice, MaxNoiseLevel,
    MessageModulus, ModulusSwitchType,
};

/// A parameter set and the lookup precision it gives.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, tfhe::Versionize)]
#[versionize(ParameterSetVersions)]
pub struct ParameterSet {
    /// TFHE-rs's name of a vetted set, or a description of a custom one.
    pub(crate) name: String,
    /// Bits a lookup is indexed by (`2^precision` boxes, plus the padding bit).
    pub(crate) precision: u32,
    pub(crate) params: ClassicPBSParameters,
    /// The key the client encrypts its inputs under.
    pub(crate) inputs: InputKey,
    /// The bootstrap decomposition `(base_log, levels)` of the last lookup layer, whose
    /// outputs the client decrypts (through the output layer's weights), where it differs
    /// from `params`'s: the lookups feeding further lookups tolerate a coarser, cheaper
    /// decomposition than exact decryption of the outputs does. Same secret keys; the
    /// evaluation key then holds a second bootstrapping key.
    pub(crate) last_layer_pbs: Option<(usize, usize)>,
}

/// Which secret key of a set the client encrypts a sample's inputs under; the optimizer
/// chooses per network.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, tfhe::Versionize,
)]
#[versionize(InputKeyVersions)]
pub enum InputKey {
    /// The big key (`k·N`), as TFHE-rs's KS-PBS sets encrypt: every lookup keyswitches
    /// first; the inputs carry the big key's tiny noise.
    Big,
    /// The small key (`n`) the bootstraps read: the first layer's sums are `n + 1` words and
    /// its lookups skip the keyswitch and its noise, but the inputs carry the small key's
    /// larger noise, which the first layer's weights amplify.
    Small,
}

crate::format::versions::versioned!(pub InputKey, InputKeyVersions, "fhe_nn::InputKey");

/// The shape of a classic KS-PBS set: what the optimizer searches over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    /// LWE dimension `n` (the keyswitch's output, the blind rotation's length).
    pub lwe_dimension: usize,
    /// GLWE dimension `k`.
    pub glwe_dimension: usize,
    /// Polynomial size `N`.
    pub polynomial_size: usize,
    /// Bootstrap decomposition: `(base_log, levels)`.
    pub pbs: (usize, usize),
    /// Keyswitch decomposition: `(base_log, levels)`.
    pub ks: (usize, usize),
}

impl ParameterSet {
    /// A custom set of `shape` whose secret keys carry the minimal Gaussian noise that
    /// TFHE-rs's security curve allows for their dimensions (see [`super::security`]), with
    /// `2^precision` boxes.
    pub fn custom(shape: Shape, precision: u32) -> ParameterSet {
        ParameterSet {
            name: ParameterSet::custom_name(&shape),
            precision,
            params: classic_custom(&shape, precision),
            inputs: InputKey::Big,
            last_layer_pbs: None,
        }
    }

    /// [`custom`](Self::custom) where `precision` is one a set may have (2 to 16 bits);
    /// `None` otherwise.
    pub(crate) fn custom_checked(shape: Shape, precision: u32) -> Option<ParameterSet> {
        SET_PRECISIONS
            .contains(&precision)
            .then(|| ParameterSet::custom(shape, precision))
    }

    /// The name of the custom set of `shape`.
    fn custom_name(shape: &Shape) -> String {
        let Shape {
            lwe_dimension: n,
            glwe_dimension: k,
            polynomial_size: big_n,
            pbs,
            ks,
        } = *shape;
        format!(
            "fhe-nn n={n} k={k} N={big_n} pbs 2^{}x{} ks 2^{}x{}",
            pbs.0, pbs.1, ks.0, ks.1
        )
    }

    /// TFHE-rs's name of a vetted set, or a description of a custom one.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bits a lookup is indexed by (`2^precision` boxes, plus the padding bit).
    pub fn precision(&self) -> u32 {
        self.precision
    }

    /// TFHE-rs's parameters of every lookup but the last layer's.
    pub fn params(&self) -> &ClassicPBSParameters {
        &self.params
    }

    /// The key the client encrypts its inputs under.
    pub fn inputs(&self) -> InputKey {
        self.inputs
    }

    /// The last lookup layer's own bootstrap decomposition `(base_log, levels)`, where it
    /// differs from [`params`](Self::params)'s.
    pub fn last_layer_pbs(&self) -> Option<(usize, usize)> {
        self.last_layer_pbs
    }

    /// The set's name, its lookup precision and, when the inputs are under the small key,
    /// that: what tells two sets apart.
    pub fn label(&self) -> String {
        let inputs = match self.inputs {
            InputKey::Big => "",
            InputKey::Small => ", inputs under the small key",
        };
        let last = match self.last_layer_pbs {
            Some((base, levels)) => format!(", last lookups pbs 2^{base}x{levels}"),
            None => String::new(),
        };
        format!("{} ({}-bit boxes{inputs}{last})", self.name, self.precision)
    }

    /// The same set with the inputs encrypted under `inputs`.
    pub fn with_inputs(self, inputs: InputKey) -> ParameterSet {
        ParameterSet { inputs, ..self }
    }

    /// The same set with the last lookup layer bootstrapping at decomposition `pbs` (`None`,
    /// or `params`'s own: the same key as the other lookups).
    pub fn with_last_layer_pbs(self, pbs: Option<(usize, usize)>) -> ParameterSet {
        let own = pbs_of(&self.params);
        ParameterSet {
            last_layer_pbs: pbs.filter(|&p| p != own),
            ..self
        }
    }

    /// The bootstrap decomposition `(base_log, levels)` of the last lookup layer.
    pub fn last_layer_decomposition(&self) -> (usize, usize) {
        self.last_layer_pbs.unwrap_or(pbs_of(&self.params))
    }

    /// The TFHE-rs parameters of the last lookup layer's bootstraps: `params` with
    /// [`last_layer_pbs`](Self::last_layer_pbs)'s decomposition, if set.
    pub fn last_layer_params(&self) -> ClassicPBSParameters {
        with_pbs(&self.params, self.last_layer_decomposition())
    }

    /// The set's shape.
    pub fn shape(&self) -> Shape {
        let p = &self.params;
        Shape {
            lwe_dimension: p.lwe_dimension.0,
            glwe_dimension: p.glwe_dimension.0,
            polynomial_size: p.polynomial_size.0,
            pbs: pbs_of(p),
            ks: (p.ks_base_log.0, p.ks_level.0),
        }
    }

    /// log2 of the table resolution (`N` positions on the half torus the padding bit leaves).
    pub fn resolution(&self) -> u32 {
        self.params.polynomial_size.0.trailing_zeros()
    }

    /// Whether this is one of TFHE-rs's vetted sets, unchanged.
    pub fn is_vetted(&self) -> bool {
        vetted(self.precision).is_some_and(|v| v.params == self.params)
    }
}

/// Lookup precisions any set may declare (`2^precision` boxes).
pub(crate) const SET_PRECISIONS: std::ops::RangeInclusive<u32> = 2..=16;

/// Lookup precisions with a vetted set.
pub const PRECISIONS: std::ops::RangeInclusive<u32> = 2..=8;

/// The vetted set for a lookup precision, if there is one.
pub fn vetted(precision: u32) -> Option<ParameterSet> {
    let set = match precision {
        2 => ParameterSet {
            name: "V1_4_PARAM_MESSAGE_1_CARRY_1_KS_PBS_GAUSSIAN_2M128".into(),
            precision: 2,
            params: classic(
                837,
                4,
                512,
                3.3747142481837397e-06,
                2.845267479601915e-15,
                (23, 1),
                (5, 3),
                2,
                3,
                -128.186,
            ),
            inputs: InputKey::Big,
            last_layer_pbs: None,
        },
        3 => ParameterSet {
            name: "V1_4_PARAM_MESSAGE_1_CARRY_2_KS_PBS_GAUSSIAN_2M128".into(),
            precision: 3,
            params: classic(
                885,
                2,
                1024,
                1.4742441118914234e-06,
                2.845267479601915e-15,
                (23, 1),
                (5, 3),
                3,
                7,
                -128.536,
            ),
            inputs: InputKey::Big,
            last_layer_pbs: None,
        },
        4 => ParameterSet {
            name: "V1_4_PARAM_MESSAGE_1_CARRY_3_KS_PBS_GAUSSIAN_2M128".into(),
            precision: 4,
            params: classic(
                904,
                1,
                2048,
                1.0621869847945622e-06,
                2.845267479601915e-15,
                (23, 1),
                (3, 6),
                4,
                15,
                -128.103,
            ),
            inputs: InputKey::Big,
            last_layer_pbs: None,
        },
        5 => ParameterSet {
            name: "V1_4_PARAM_MESSAGE_1_CARRY_4_KS_PBS_GAUSSIAN_2M128".into(),
            precision: 5,
            params: classic(
                930,
                1,
                4096,
                6.782362904013915e-07,
                2.168404344971009e-19,
                (15, 2),
                (3, 6),
                5,
                31,
                -128.607,
            ),
            inputs: InputKey::Big,
            last_layer_pbs: None,
        },
        6 => ParameterSet {
            name: "V1_4_PARAM_MESSAGE_1_CARRY_5_KS_PBS_GAUSSIAN_2M128".into(),
            precision: 6,
            params: classic(
                1011,
                1,
                8192,
                1.6766481861068427e-07,
                2.168404344971009e-19,
                (15, 2),
                (3, 7),
                6,
                63,
                -128.068,
            ),
            inputs: InputKey::Big,
            last_layer_pbs: None,
        },
        7 => ParameterSet {
            name: "V1_4_PARAM_MESSAGE_1_CARRY_6_KS_PBS_GAUSSIAN_2M128".into(),
            precision: 7,
            params: classic(
                1060,
                1,
                16384,
                7.199150706330062e-08,
                2.168404344971009e-19,
                (11, 3),
                (2, 11),
                7,
                127,
                -128.147,
            ),
            inputs: InputKey::Big,
            last_layer_pbs: None,
        },
        8 => ParameterSet {
            name: "V1_4_PARAM_MESSAGE_1_CARRY_7_KS_PBS_GAUSSIAN_2M128".into(),
            precision: 8,
            params: classic(
                1104,
                1,
                65536,
                3.369659065698222e-08,
                2.168404344971009e-19,
                (9, 4),
                (3, 7),
                8,
                255,
                -128.787,
            ),
            inputs: InputKey::Big,
            last_layer_pbs: None,
        },
        _ => return None,
    };
    Some(set)
}

/// The bootstrap decomposition `(base_log, levels)` of `params`.
pub(crate) fn pbs_of(params: &ClassicPBSParameters) -> (usize, usize) {
    (params.pbs_base_log.0, params.pbs_level.0)
}

/// `params` with the bootstrap decomposition `(base_log, levels)`.
pub(crate) fn with_pbs(params: &ClassicPBSParameters, pbs: (usize, usize)) -> ClassicPBSParameters {
    ClassicPBSParameters {
        pbs_base_log: DecompositionBaseLog(pbs.0),
        pbs_level: DecompositionLevelCount(pbs.1),
        ..*params
    }
}

/// The TFHE-rs parameters of a custom set: minimal secure noise for both keys.
pub(crate) fn classic_custom(shape: &Shape, precision: u32) -> ClassicPBSParameters {
    use super::security::minimal_secure_std;
    let (n, k, big_n) = (
        shape.lwe_dimension,
        shape.glwe_dimension,
        shape.polynomial_size,
    );
    classic(
        n,
        k,
        big_n,
        minimal_secure_std(n),
        // Saturating: a forged shape is refused by the bounds check, after this.
        minimal_secure_std(k.saturating_mul(big_n)),
        shape.pbs,
        shape.ks,
        precision,
        (1u64 << precision) - 1,
        // TFHE-rs's own failure estimate; fhe-nn's error figures come from the plan.
        -40.0,
    )
}

#[allow(clippy::too_many_arguments)]
fn classic(
    lwe_dimension: usize,
    glwe_dimension: usize,
    polynomial_size: usize,
    lwe_std: f64,
    glwe_std: f64,
    pbs: (usize, usize),
    ks: (usize, usize),
    precision: u32,
    max_noise_level: u64,
    log2_p_fail: f64,
) -> ClassicPBSParameters {
    ClassicPBSParameters {
        lwe_dimension: LweDimension(lwe_dimension),
        glwe_dimension: GlweDimension(glwe_dimension),
        polynomial_size: PolynomialSize(polynomial_size),
        lwe_noise_distribution: DynamicDistribution::new_gaussian_from_std_dev(StandardDev(
            lwe_std,
        )),
        glwe_noise_distribution: DynamicDistribution::new_gaussian_from_std_dev(StandardDev(
            glwe_std,
        )),
        pbs_base_log: DecompositionBaseLog(pbs.0),
        pbs_level: DecompositionLevelCount(pbs.1),
        ks_base_log: DecompositionBaseLog(ks.0),
        ks_level: DecompositionLevelCount(ks.1),
        message_modulus: MessageModulus(2),
        carry_modulus: CarryModulus(1 << (precision - 1)),
        max_noise_level: MaxNoiseLevel::new(max_noise_level),
        log2_p_fail,
        ciphertext_modulus: CiphertextModulus::new_native(),
        encryption_key_choice: EncryptionKeyChoice::Big,
        modulus_switch_noise_reduction_params: ModulusSwitchType::CenteredMeanNoiseReduction,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copied_sets_equal_upstream() {
        use tfhe::shortint::parameters::v1_4::*;
        let upstream = [
            V1_4_PARAM_MESSAGE_1_CARRY_1_KS_PBS_GAUSSIAN_2M128,
            V1_4_PARAM_MESSAGE_1_CARRY_2_KS_PBS_GAUSSIAN_2M128,
            V1_4_PARAM_MESSAGE_1_CARRY_3_KS_PBS_GAUSSIAN_2M128,
            V1_4_PARAM_MESSAGE_1_CARRY_4_KS_PBS_GAUSSIAN_2M128,
            V1_4_PARAM_MESSAGE_1_CARRY_5_KS_PBS_GAUSSIAN_2M128,
            V1_4_PARAM_MESSAGE_1_CARRY_6_KS_PBS_GAUSSIAN_2M128,
            V1_4_PARAM_MESSAGE_1_CARRY_7_KS_PBS_GAUSSIAN_2M128,
        ];
        for (p, up) in PRECISIONS.zip(upstream) {
            assert_eq!(vetted(p).unwrap().params, up, "precision {p}");
        }
        assert!(PRECISIONS.clone().all(|p| vetted(p).unwrap().is_vetted()));
        assert!(vetted(1).is_none() && vetted(9).is_none());
    }
}

#[cfg(test)]
mod security_tests {
    use super::*;
    use crate::params::security::{check, minimal_secure_std, SecurityError};

    #[test]
    fn the_formula_finds_every_vetted_set_secure() {
        for p in PRECISIONS {
            let set = vetted(p).unwrap();
            check(&set.params).unwrap_or_else(|e| panic!("{}: {e}", set.name));
            // TFHE-rs's vetted noise is the formula's minimum, to the digits it prints.
            let lwe = minimal_secure_std(set.params.lwe_dimension.0);
            let DynamicDistribution::Gaussian(g) = set.params.lwe_noise_distribution else {
                panic!("Gaussian")
            };
            assert!((g.std / lwe - 1.0).abs() < 1e-6, "{}", set.name);
        }
    }

    #[test]
    fn less_noise_than_the_curve_allows_is_refused() {
        let mut params = vetted(4).unwrap().params;
        params.lwe_noise_distribution = DynamicDistribution::new_gaussian_from_std_dev(
            StandardDev(0.9 * 1.0621869847945622e-06),
        );
        assert!(matches!(
            check(&params),
            Err(SecurityError::TooLittleNoise {
                key: "LWE key",
                dimension: 904,
                ..
            })
        ));
        let mut params = vetted(4).unwrap().params;
        params.lwe_dimension = LweDimension(700);
        assert!(check(&params).is_err(), "a smaller key needs more noise");
    }
}

crate::format::versions::versioned!(pub ParameterSet, ParameterSetVersions, "fhe_nn::ParameterSet");
