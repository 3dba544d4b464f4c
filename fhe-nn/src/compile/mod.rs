//! The compile step (Concrete ML's `compile`): a loaded [`QuantModel`] and options become an
//! immutable [`CompiledModel`] that owns its tables at the chosen resolution, its parameter
//! set, its error figures and its fingerprint. Compiling never changes the model it starts
//! from, and a failed compile leaves nothing behind.

mod artifact;
mod figures;
mod fingerprint;
mod predict;
mod search;

pub use figures::{CheaperSet, Estimate, FhePlan, LookupFigures};
pub use fingerprint::Fingerprint;
pub use predict::{Mode, SampleDisagreement};

use ndarray::ArrayView2;

use crate::arch::analysis::Rounding;
use crate::model::{QuantModel, Reading, WeightedStage};
use crate::params::cost::Work;
use crate::params::noise::NoiseModel;
use crate::params::optimizer::{Demand, LayerDemand, OutputDemand};
use crate::params::{security, ParameterSet};
use crate::simulate::SimulationNoise;

/// Default failure probability of one lookup, as Concrete ML.
pub const DEFAULT_P_ERROR: f64 = 9.094_947_017_729_282e-13; // 2^-40

/// The strict profile's failure probability of one lookup, for deployments where decrypted
/// results are observable by whoever computes on the ciphertexts: decryption failures are
/// information about the secret key (see the threat model in `docs/threat-model.md`).
pub const STRICT_P_ERROR: f64 = 5.421_010_862_427_522e-20; // 2^-64

/// Default largest fraction of calibration predictions that Simulate may see differ from
/// exact Clear.
pub const DEFAULT_MAX_DISAGREEMENT: f64 = 0.01;

/// Where the parameter set comes from.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ParameterChoice {
    /// The cheapest set by the optimizer: custom sets of TFHE-rs's shape and the vetted sets.
    #[default]
    Optimized,
    /// The cheapest of TFHE-rs's vetted sets only.
    VettedOnly,
    /// TFHE-rs's vetted set of this lookup precision (bits), whatever it costs.
    Vetted(u32),
    /// Exactly this set (checked for security).
    Fixed(Box<ParameterSet>),
}

/// What the user may ask of compilation.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FheOptions {
    /// Largest failure probability of any single lookup (its noisy input leaves its table's
    /// margins, see [`FhePlan`]) and of any decrypted output.
    pub p_error: f64,
    /// Largest probability that anything fails in one inference (union bound), if set.
    pub global_p_error: Option<f64>,
    /// Largest fraction of the calibration inputs whose simulated prediction (argmax) may
    /// differ from exact Clear's.
    pub max_disagreement: f64,
    /// Where the parameters come from.
    pub parameters: ParameterChoice,
}

impl Default for FheOptions {
    fn default() -> Self {
        FheOptions {
            p_error: DEFAULT_P_ERROR,
            global_p_error: None,
            max_disagreement: DEFAULT_MAX_DISAGREEMENT,
            parameters: ParameterChoice::Optimized,
        }
    }
}

impl FheOptions {
    /// The strict profile: every lookup and every decrypted output fails with probability
    /// at most [`STRICT_P_ERROR`] (2^-64) instead of 2^-40; the rest as the default.
    pub fn strict() -> FheOptions {
        FheOptions {
            p_error: STRICT_P_ERROR,
            ..FheOptions::default()
        }
    }
}

/// Why a model could not be compiled.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum CompileError {
    #[error("{name} must be in (0, 1), got {value}")]
    BadProbability { name: &'static str, value: f64 },
    #[error("max_disagreement must be in [0, 1], got {0}")]
    BadDisagreement(f64),
    #[error("precision {0} has no vetted 128-bit parameter set (2 to 8 bits)")]
    NoVettedSet(u32),
    #[error("a {precision}-bit lookup needs 2 to log2(N) - 1 bits: N = {polynomial_size} allows at most {}", .polynomial_size.trailing_zeros().saturating_sub(1))]
    BadPrecision {
        precision: u32,
        polynomial_size: usize,
    },
    #[error("the lookups after layer {layer} must be read exactly on {needed} bits, but the {set} set reads {precision}")]
    PrecisionTooLow {
        layer: usize,
        needed: u32,
        set: String,
        precision: u32,
    },
    #[error("no parameter set keeps simulated predictions within {:.2}% of exact Clear's on the calibration data: the closest, {set}, differs on {:.2}%; raise max_disagreement, or use fewer lookups or a wider rounding", 100.0 * .max, 100.0 * .best)]
    Inaccurate { max: f64, best: f64, set: String },
    #[error("the parameter set is not 128-bit secure: {0}")]
    Insecure(#[from] security::SecurityError),
    #[error("the {set} set gives the last lookup layer a bootstrapping key of its own, but the output layer also reads earlier lookups' outputs, which that key does not bootstrap")]
    SecondKeyNotApplicable { set: String },
    #[error("calibration data: {0}")]
    Calibration(#[from] crate::error::InputError),
    #[error(transparent)]
    Definition(#[from] artifact::DefinitionError),
    #[error("no parameter set meets p_error = {p_error:e}{}: the best, {best_set}, fails with probability {best:e} {}; lower the weights' 2-norm or raise p_error", match .global { Some(g) => format!(" and global_p_error = {g:e}"), None => String::new() }, match .layer { Some(l) => format!("at the lookups after layer {l}"), None => "when decrypting the outputs".to_string() })]
    TooNoisy {
        p_error: f64,
        global: Option<f64>,
        best_set: String,
        best: f64,
        /// The declared layer (1-based) whose lookups fail; `None`: the outputs.
        layer: Option<usize>,
    },
}

/// A model compiled for FHE: tables at the chosen resolution, parameters, error figures and a
/// fingerprint that binds keys and ciphertexts to it. Immutable.
#[derive(Clone, Debug)]
pub struct CompiledModel {
    model: QuantModel,
    plan: FhePlan,
    noise: SimulationNoise,
    fingerprint: Fingerprint,
    /// Whether the fingerprint covers the plan: true but for models read from files of
    /// format 6, which keep the fingerprint their keys were made for.
    plan_in_fingerprint: bool,
}

impl QuantModel {
    /// Compiles the model: chooses the cheapest parameters meeting `options` (failure
    /// probabilities from TFHE-rs's noise formulas; accuracy from Simulate on the
    /// `calibration` inputs, one real sample per row, which should look like the data the
    /// model will see), builds the tables they read, and computes the error figures.
    pub fn compile(
        &self,
        calibration: ArrayView2<f64>,
        options: &FheOptions,
    ) -> Result<CompiledModel, CompileError> {
        for (name, value) in [
            ("p_error", Some(options.p_error)),
            ("global_p_error", options.global_p_error),
        ] {
            if let Some(value) = value {
                if !(value > 0.0 && value < 1.0) {
                    return Err(CompileError::BadProbability { name, value });
                }
            }
        }
        if !(0.0..=1.0).contains(&options.max_disagreement) {
            return Err(CompileError::BadDisagreement(options.max_disagreement));
        }
        let calibration = self.quantize_inputs(calibration)?;
        let chosen = search::choose(self, calibration.view(), options)?;
        Ok(CompiledModel::build(
            self,
            chosen,
            calibration.view(),
            options,
        ))
    }

    /// What this model asks of a parameter set.
    ///
    /// For a model read exactly (the search's starting point) the norms before lookups are
    /// bounded with the largest multiplier compilation may give them; a compiled model's are
    /// its own.
    pub(crate) fn demand(&self) -> Demand {
        let exact = self.reading == Reading::Exact;
        let lookups = self
            .layers
            .iter()
            .enumerate()
            .filter_map(|(k, s)| s.lookup.as_ref().map(|l| (k, s, l)))
            .map(|(k, s, l)| LayerDemand {
                layer: s.layer,
                count: s.bootstraps(),
                norm2_squared: worst_norm(s),
                // Only the first layer (fresh inputs) gets multipliers (`model::build_lookup`).
                multiplier_bound: if exact && k == 0 {
                    group_bounds(s)
                } else {
                    Vec::new()
                },
                fresh: k == 0,
                exact_bits: s.exact_bits(),
                must_be_exact: l.declared == Rounding::Exact,
                spans: (
                    s.exact_ranges
                        .iter()
                        .map(|r| r.max - r.min + 1)
                        .max()
                        .unwrap_or(1),
                    {
                        let r = s.exact_range();
                        r.max - r.min + 1
                    },
                ),
                reaches: s
                    .exact_ranges
                    .iter()
                    .enumerate()
                    .map(|(g, &r)| {
                        let t = crate::model::tails(r, |a| l.read(g, a));
                        (r.max - r.min + 1, t.high_start - r.min, r.max - t.low_end)
                    })
                    .collect(),
            })
            .collect();
        let last = self.layers.last().expect("a model has a weighted layer");
        let reads_last_lookups_only = match self.last_lookup_layer() {
            Some(k) => last.sources == [crate::model::Source::Stage(k)],
            None => true,
        };
        Demand {
            lookups,
            outputs: OutputDemand {
                count: last.out_features,
                norm2_squared: worst_norm(last),
                fresh: self.layers.len() == 1,
                bits: self.output_encoding_bits(),
                reads_last_lookups_only,
            },
            work: self.work(),
        }
    }

    /// The homomorphic work of one inference: the first layer reads fresh inputs (under the
    /// small key), every later one bootstrap outputs.
    fn work(&self) -> Work {
        let mut work = Work::default();
        for (k, s) in self.layers.iter().enumerate() {
            let weights: usize = s.links.iter().map(Vec::len).sum();
            let lookups = s.bootstraps();
            if k == 0 {
                work.fresh_multiply_adds += weights;
                work.fresh_lookups += lookups;
            } else {
                work.multiply_adds += weights;
                work.lookups += lookups;
            }
        }
        work.last_layer_lookups = self
            .last_lookup_layer()
            .map_or(0, |k| self.layers[k].bootstraps());
        work
    }
}

/// The largest squared weight 2-norm of a layer's neurons, with their multipliers.
fn worst_norm(stage: &WeightedStage) -> f64 {
    (0..stage.out_features)
        .map(|j| stage.effective_norm2_squared(j))
        .fold(0.0, f64::max)
}

/// Per group: its largest squared weight 2-norm and the span of its exact range.
fn group_bounds(stage: &WeightedStage) -> Vec<(f64, i64)> {
    let mut norms = vec![0.0f64; stage.groups];
    for j in 0..stage.out_features {
        let g = stage.group(j);
        norms[g] = norms[g].max(stage.norm2_squared(j));
    }
    norms
        .into_iter()
        .zip(&stage.exact_ranges)
        .map(|(n, r)| (n, r.max - r.min + 1))
        .collect()
}

impl CompiledModel {
    /// The compiled model of `model` under the chosen set, with its error figures on
    /// `calibration` (quantized inputs).
    fn build(
        model: &QuantModel,
        chosen: search::Chosen,
        calibration: ArrayView2<i64>,
        options: &FheOptions,
    ) -> CompiledModel {
        let search::Chosen {
            set,
            tables,
            cheaper,
        } = chosen;
        let tables = tables.unwrap_or_else(|| {
            model.with_reading(Reading::Table {
                precision: set.precision,
                resolution: set.resolution(),
            })
        });
        let noise_model = NoiseModel::of(&set);
        let noise = tables.simulation_noise(&noise_model);
        let plan = figures::evaluate(model, &tables, &noise, set, cheaper, calibration, options);
        let definition = artifact::definition(&tables, &plan.set);
        let fingerprint = fingerprint::of(&definition, &tables, Some(&plan));
        CompiledModel {
            model: tables,
            plan,
            noise,
            fingerprint,
            plan_in_fingerprint: true,
        }
    }

    /// The canonical definition of this compiled model (architecture, source tensors, input
    /// range, parameter set): what its file holds besides the plan.
    pub(crate) fn definition(&self) -> Vec<u8> {
        artifact::definition(&self.model, &self.plan.set)
    }

    /// Rebuilds a compiled model from its [`definition`](Self::definition) and its plan (the
    /// error figures, computed when it was compiled): the tables are built again, the same
    /// as at compilation. `plan_in_fingerprint`: whether its fingerprint covers the plan
    /// (false for files of format 6).
    pub(crate) fn from_definition(
        definition: &[u8],
        plan: FhePlan,
        plan_in_fingerprint: bool,
    ) -> Result<CompiledModel, CompileError> {
        let read = artifact::read_definition(definition)?;
        // The definition's set is the one used; the plan (written as text) must hold it.
        if plan.set != read.set {
            return Err(artifact::DefinitionError::new(format!(
                "the plan's parameters `{}` are not the definition's `{}`",
                plan.set.label(),
                read.set.label()
            ))
            .into());
        }
        let loaded = QuantModel::from_tensors(&read.architecture, &read.tensors)
            .map_err(|e| artifact::DefinitionError::new(format!("its weights: {e}")))?;
        let range = read.input_range;
        let model = if loaded.input_stage().range == range {
            loaded
        } else {
            loaded
                .restrict_inputs(range.min, range.max)
                .map_err(|e| artifact::DefinitionError::new(e.to_string()))?
        };
        let tables = model.with_reading(Reading::Table {
            precision: read.set.precision,
            resolution: read.set.resolution(),
        });
        let canonical = artifact::definition(&tables, &read.set);
        if canonical != definition {
            return Err(artifact::DefinitionError::new("not in canonical form").into());
        }
        let noise = tables.simulation_noise(&NoiseModel::of(&read.set));
        let fingerprint =
            fingerprint::of(&canonical, &tables, plan_in_fingerprint.then_some(&plan));
        Ok(CompiledModel {
            model: tables,
            plan,
            noise,
            fingerprint,
            plan_in_fingerprint,
        })
    }

    /// Whether the fingerprint covers the plan (the error figures): true but for a model
    /// read from a file of format 6, which keeps the fingerprint its keys were made for.
    pub(crate) fn plan_in_fingerprint(&self) -> bool {
        self.plan_in_fingerprint
    }

    /// The parameters and error figures.
    pub fn plan(&self) -> &FhePlan {
        &self.plan
    }

    /// The parameter set.
    pub fn parameters(&self) -> &ParameterSet {
        &self.plan.set
    }

    /// What binds keys and ciphertexts to this compiled model.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The architecture.
    pub fn architecture(&self) -> &crate::architecture::Architecture {
        self.model.architecture()
    }

    /// The weighted layers with their compiled tables.
    pub(crate) fn layers(&self) -> &[WeightedStage] {
        self.model.layers()
    }

    /// Lookups (programmable bootstraps) per inference.
    pub fn lookups(&self) -> usize {
        self.plan.lookups_per_inference()
    }

    /// Number of input features per sample.
    pub fn input_features(&self) -> usize {
        self.model.input_features()
    }

    /// Number of outputs per sample.
    pub fn output_features(&self) -> usize {
        self.model.output_features()
    }

    /// The scaling factor Δ of the ciphertexts entering weighted layer `k` (for decrypting
    /// traced intermediate values with [`CompiledModel::decrypt_trace`]):
    /// a power of two times the spread of the lookup after the layer.
    pub fn input_delta(&self, k: usize) -> u64 {
        self.model.input_delta(k)
    }

    /// The scaling factor Δ of weighted layer `k`'s lookup outputs, as its run trace holds
    /// them: in a chain the next layer's [`input_delta`](Self::input_delta); where several
    /// stages read them, the smallest of theirs.
    pub fn output_delta(&self, k: usize) -> u64 {
        self.model.output_delta(k)
    }

    /// Per-layer exact ranges next to the compile-time bounds, and the lookup encodings.
    pub fn range_report(&self) -> String {
        self.model.range_report()
    }

    /// The noise Simulate injects, for [`simulate_trace`](Self::simulate_trace).
    pub fn simulation_noise(&self) -> &SimulationNoise {
        &self.noise
    }

    pub(crate) fn tables(&self) -> &QuantModel {
        &self.model
    }
}
