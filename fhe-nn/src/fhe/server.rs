//! Encrypted inference on the server: leveled weighted sums on LWE ciphertexts, then one
//! programmable bootstrap per neuron with its own table (per channel for convolutions).
//!
//! A bootstrap's output is under the big key (`k·N + 1` words), so lookups on it keyswitch
//! first. Inputs are under the key the compiled set names: under the small one, the first
//! layer's sums are short (`n + 1` words) and its lookups bootstrap directly.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tfhe::core_crypto::algorithms::slice_algorithms::slice_wrapping_add_scalar_mul_assign;
use tfhe::core_crypto::prelude::*;
use tfhe::shortint::ciphertext::{Degree, NoiseLevel};
use tfhe::shortint::server_key::LookupTableOwned;
use tfhe::shortint::{AtomicPatternKind, Ciphertext, PBSOrder};

use super::bootstrap;
use super::keys::EvaluationKey;
use super::{check_model, check_upload_size, FheError};
use crate::compile::{CompiledModel, Fingerprint};
use crate::format::envelope::{self, Kind, Opened};
use crate::model::{QuantModel, Source, WeightedStage};
use crate::params::InputKey;

/// Largest serialized ciphertext batch accepted (bytes).
pub const CIPHERTEXT_LIMIT: u64 = 1 << 30;

/// The encrypted values of one sample (inputs, or outputs), tied to a key pair.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EncryptedSample {
    pub(crate) key_id: u64,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) cts: Vec<LweCiphertextOwned<u64>>,
}

impl EncryptedSample {
    /// Number of encrypted values.
    pub fn len(&self) -> usize {
        self.cts.len()
    }

    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.cts.is_empty()
    }

    /// The ciphertexts.
    pub fn ciphertexts(&self) -> &[LweCiphertextOwned<u64>] {
        &self.cts
    }

    /// Serializes the ciphertexts.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FheError> {
        let wire = CiphertextsWire {
            cts: self.cts.clone(),
        };
        Ok(envelope::seal(
            Kind::Ciphertexts,
            self.key_id,
            self.fingerprint,
            &wire,
        )?)
    }

    /// Reads serialized ciphertexts, checking the envelope and that all have one LWE size.
    pub fn from_bytes(bytes: &[u8]) -> Result<EncryptedSample, FheError> {
        let Opened {
            key_id,
            fingerprint,
            value: CiphertextsWire { cts },
            ..
        } = envelope::open(bytes, Kind::Ciphertexts, CIPHERTEXT_LIMIT)?;
        if let Some(first) = cts.first() {
            if cts.iter().any(|c| {
                c.lwe_size() != first.lwe_size()
                    || c.ciphertext_modulus() != CiphertextModulus::new_native()
            }) {
                return Err(FheError::Shape(
                    "ciphertexts of different sizes or moduli".into(),
                ));
            }
        }
        Ok(EncryptedSample {
            key_id,
            fingerprint,
            cts,
        })
    }
}

/// What serialized ciphertexts hold.
#[derive(Serialize, Deserialize, tfhe::Versionize)]
#[versionize(CiphertextsWireVersions)]
struct CiphertextsWire {
    cts: Vec<LweCiphertextOwned<u64>>,
}

crate::format::versions::versioned!(
    CiphertextsWire,
    CiphertextsWireVersions,
    "fhe_nn::Ciphertexts"
);

/// What serialized compressed ciphertexts hold.
#[derive(Serialize, Deserialize, tfhe::Versionize)]
#[versionize(CompressedWireVersions)]
struct CompressedWire {
    list: SeededLweCiphertextListOwned<u64>,
}

crate::format::versions::versioned!(
    CompressedWire,
    CompressedWireVersions,
    "fhe_nn::CompressedCiphertexts"
);

/// The encrypted inputs of one sample, compressed for the upload: one body per value and a
/// single seed from which the server regenerates every mask (about `n + 1` times smaller).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompressedSample {
    pub(crate) key_id: u64,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) list: SeededLweCiphertextListOwned<u64>,
}

impl CompressedSample {
    /// Number of encrypted values.
    pub fn len(&self) -> usize {
        self.list.lwe_ciphertext_count().0
    }

    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Serializes the compressed ciphertexts.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FheError> {
        let wire = CompressedWire {
            list: self.list.clone(),
        };
        Ok(envelope::seal(
            Kind::CompressedCiphertexts,
            self.key_id,
            self.fingerprint,
            &wire,
        )?)
    }

    /// Reads serialized compressed ciphertexts, checking the envelope.
    pub fn from_bytes(bytes: &[u8]) -> Result<CompressedSample, FheError> {
        let Opened {
            key_id,
            fingerprint,
            value: CompressedWire { list },
            ..
        } = envelope::open(bytes, Kind::CompressedCiphertexts, CIPHERTEXT_LIMIT)?;
        if list.ciphertext_modulus() != CiphertextModulus::new_native() {
            return Err(FheError::Shape(
                "compressed ciphertexts with a foreign modulus".into(),
            ));
        }
        Ok(CompressedSample {
            key_id,
            fingerprint,
            list,
        })
    }
}

/// One weighted layer as the server runs it.
struct ServerLayer {
    /// Where the inputs come from, read one after another.
    sources: Vec<Source>,
    out_features: usize,
    in_features: usize,
    /// The table (group) of each neuron.
    groups: Vec<usize>,
    /// Non-zero weights of each neuron: `(input index, weight as two's complement)`.
    sparse: Vec<Vec<(usize, u64)>>,
    /// Plaintext added before the lookup, per group, so accumulators land within the
    /// table's margins.
    offsets: Vec<u64>,
    /// One table per group, and per group the plaintext added after its bootstrap (twice
    /// the centre of a wrapping group's tables, scaled); none on the output layer.
    tables: Option<(Vec<LookupTableOwned>, Vec<u64>)>,
    /// Per neuron, its lookup's output where it is known without a bootstrap (no non-zero
    /// weight: `WeightedStage::fixed_output`), already scaled: a trivial ciphertext's body.
    fixed: Vec<Option<u64>>,
}

/// Largest serialized compressed sample of `inputs` values (bytes): one body word per value,
/// with the envelope and framing.
pub(crate) fn max_compressed_sample_bytes(inputs: usize) -> u64 {
    inputs as u64 * 8 + 4096
}

/// The server: a compiled model and an evaluation key made for it. It holds no secret.
pub struct FheServer {
    key_id: u64,
    fingerprint: Fingerprint,
    /// The decompressed evaluation key.
    server_key: tfhe::shortint::ServerKey,
    layers: Vec<ServerLayer>,
    /// Size of the inputs' ciphertexts (`n + 1` under the small key).
    input_lwe_size: LweSize,
    /// Size of a bootstrap's output (big key, `k·N + 1`).
    big_lwe_size: LweSize,
    params: tfhe::shortint::parameters::ClassicPBSParameters,
    /// Where the last lookup layer bootstraps with its own key: that layer's index and the
    /// key (Fourier domain).
    last_layer: Option<(usize, FourierLweBootstrapKeyOwned)>,
}

impl FheServer {
    /// Prepares encrypted inference of a compiled model with `key`, which must have been
    /// generated for it: decompresses the key and builds every table, once.
    pub fn new(compiled: &CompiledModel, key: EvaluationKey) -> Result<FheServer, FheError> {
        check_model(compiled.fingerprint(), key.fingerprint)?;
        if key.set != *compiled.parameters() {
            return Err(FheError::ParameterMismatch {
                key: key.set.label(),
                model: compiled.parameters().label(),
            });
        }
        let params = key.set.params;
        let model = compiled.tables();
        let big_lwe_size =
            LweDimension(params.glwe_dimension.0 * params.polynomial_size.0).to_lwe_size();
        let layers = model
            .layers()
            .iter()
            .enumerate()
            .map(|(k, stage)| server_layer(model, k, stage, &params))
            .collect();
        let server_key = key.compressed.decompress();
        if !bootstrap::fits(&server_key, &params) {
            return Err(FheError::Shape(format!(
                "the evaluation key has no classic bootstrapping key of {}'s dimensions",
                key.set.name
            )));
        }
        let last_layer = match (key.last_layer_key, model.last_lookup_layer()) {
            (Some(seeded), Some(index)) => Some((index, to_fourier(seeded))),
            _ => None,
        };
        if let Some((_, bsk)) = &last_layer {
            if !bootstrap::fits_other(&server_key, bsk) {
                return Err(FheError::Shape(format!(
                    "the evaluation key's last-layer bootstrapping key is not of {}'s dimensions",
                    key.set.name
                )));
            }
        }
        Ok(FheServer {
            key_id: key.key_id,
            fingerprint: key.fingerprint,
            server_key,
            layers,
            input_lwe_size: match key.set.inputs {
                InputKey::Small => params.lwe_dimension.to_lwe_size(),
                InputKey::Big => big_lwe_size,
            },
            big_lwe_size,
            params,
            last_layer,
        })
    }

    /// Checks that ciphertexts were made for this server's model and key.
    fn check_origin(&self, key_id: u64, fingerprint: Fingerprint) -> Result<(), FheError> {
        check_model(self.fingerprint, fingerprint)?;
        if key_id != self.key_id {
            return Err(FheError::WrongKey {
                expected: self.key_id,
                found: key_id,
            });
        }
        Ok(())
    }

    /// Number of encrypted values a sample must hold.
    fn input_count(&self) -> usize {
        self.layers.first().map(|l| l.in_features).unwrap_or(0)
    }

    /// Lookups (bootstraps) per inference.
    pub fn lookups(&self) -> usize {
        self.layers
            .iter()
            .filter(|l| l.tables.is_some())
            .map(|l| l.fixed.iter().filter(|f| f.is_none()).count())
            .sum()
    }

    /// Memory held by the decompressed evaluation key (bytes, from the parameters): the
    /// Fourier bootstrapping keys, `n · (k+1)² · levels · N` words each (the last lookup
    /// layer's own, if any, at its levels), and the keyswitching key, `k·N · levels · (n+1)`
    /// words.
    pub fn key_bytes(&self) -> u64 {
        let p = &self.params;
        let (n, k, big_n) = (
            p.lwe_dimension.0 as u64,
            p.glwe_dimension.0 as u64,
            p.polynomial_size.0 as u64,
        );
        let bootstrap = |levels: usize| n * (k + 1) * (k + 1) * levels as u64 * big_n * 8;
        let keyswitch = k * big_n * p.ks_level.0 as u64 * (n + 1) * 8;
        let last = self
            .last_layer
            .as_ref()
            .map_or(0, |(_, bsk)| bootstrap(bsk.decomposition_level_count().0));
        bootstrap(p.pbs_level.0) + keyswitch + last
    }

    /// Largest serialized full sample this server can need (bytes): its inputs' ciphertexts
    /// (`n + 1` words each) or its outputs' (`k·N + 1` after a lookup), with the envelope and
    /// framing.
    pub fn max_sample_bytes(&self) -> u64 {
        let bytes = |count: usize, size: LweSize| count as u64 * (8 * size.0 as u64 + 64);
        bytes(self.input_count(), self.input_lwe_size)
            .max(bytes(self.output_count(), self.output_lwe_size()))
            + 4096
    }

    /// Size of the outputs' ciphertexts: under the big key once any lookup ran, else the
    /// inputs'.
    fn output_lwe_size(&self) -> LweSize {
        if self.lookups() > 0 {
            self.big_lwe_size
        } else {
            self.input_lwe_size
        }
    }

    /// Largest serialized compressed sample this server can need (bytes): one body per input.
    pub fn max_compressed_bytes(&self) -> u64 {
        max_compressed_sample_bytes(self.input_count())
    }

    fn output_count(&self) -> usize {
        self.layers.last().map(|l| l.out_features).unwrap_or(0)
    }

    /// Reads an uploaded full sample: its length is checked against what this model can need
    /// before anything is decoded, then its origin (model, key) and shape.
    pub fn read_sample(&self, bytes: &[u8]) -> Result<EncryptedSample, FheError> {
        check_upload_size(bytes, self.max_sample_bytes())?;
        let sample = EncryptedSample::from_bytes(bytes)?;
        self.check_origin(sample.key_id, sample.fingerprint)?;
        Ok(sample)
    }

    /// Reads and decompresses an uploaded compressed sample: its length is checked against
    /// what this model can need before anything is decoded, its value count before the masks
    /// are expanded.
    pub fn read_compressed(&self, bytes: &[u8]) -> Result<EncryptedSample, FheError> {
        check_upload_size(bytes, self.max_compressed_bytes())?;
        self.decompress(&CompressedSample::from_bytes(bytes)?)
    }

    /// Decompresses uploaded inputs after checking they fit this server's key.
    pub fn decompress(&self, input: &CompressedSample) -> Result<EncryptedSample, FheError> {
        self.check_origin(input.key_id, input.fingerprint)?;
        // Checked before the masks are expanded: each value becomes `n + 1` words.
        if input.len() != self.input_count() {
            return Err(FheError::Shape(format!(
                "{} compressed input values, the model takes {}",
                input.len(),
                self.input_count()
            )));
        }
        if input.list.lwe_size() != self.input_lwe_size {
            return Err(FheError::Shape(format!(
                "compressed ciphertexts of LWE size {}, the key expects {}",
                input.list.lwe_size().0,
                self.input_lwe_size.0
            )));
        }
        let list = input.list.clone().decompress_into_lwe_ciphertext_list();
        let cts = list
            .iter()
            .map(|ct| {
                LweCiphertext::from_container(ct.as_ref().to_vec(), CiphertextModulus::new_native())
            })
            .collect();
        Ok(EncryptedSample {
            key_id: input.key_id,
            fingerprint: input.fingerprint,
            cts,
        })
    }

    /// Runs the network on one encrypted sample.
    pub fn run(&self, input: &EncryptedSample) -> Result<EncryptedSample, FheError> {
        let cts = self.evaluate(input, |_| {})?;
        Ok(EncryptedSample {
            key_id: input.key_id,
            fingerprint: input.fingerprint,
            cts,
        })
    }

    /// Runs the network and returns the ciphertexts after every weighted layer's lookup
    /// (and the output layer's accumulators last), for tests and debugging.
    pub fn run_traced(&self, input: &EncryptedSample) -> Result<Vec<EncryptedSample>, FheError> {
        let mut trace = Vec::with_capacity(self.layers.len());
        let last = self.evaluate(input, |cts| {
            trace.push(EncryptedSample {
                key_id: input.key_id,
                fingerprint: input.fingerprint,
                cts: cts.to_vec(),
            })
        })?;
        trace.push(EncryptedSample {
            key_id: input.key_id,
            fingerprint: input.fingerprint,
            cts: last,
        });
        Ok(trace)
    }

    /// Checks the input, runs every layer, shows each hidden layer's outputs to `visit`, and
    /// returns the output layer's.
    fn evaluate(
        &self,
        input: &EncryptedSample,
        mut visit: impl FnMut(&[LweCiphertextOwned<u64>]),
    ) -> Result<Vec<LweCiphertextOwned<u64>>, FheError> {
        self.check_origin(input.key_id, input.fingerprint)?;
        let expected = self.input_count();
        if input.cts.len() != expected {
            return Err(FheError::Shape(format!(
                "{} input ciphertexts, the model takes {expected}",
                input.cts.len()
            )));
        }
        if let Some(bad) = input
            .cts
            .iter()
            .find(|c| c.lwe_size() != self.input_lwe_size)
        {
            return Err(FheError::Shape(format!(
                "ciphertext of LWE size {}, the key expects {}",
                bad.lwe_size().0,
                self.input_lwe_size.0
            )));
        }
        // Every stage's outputs, kept while a later stage reads them.
        let mut outputs: Vec<Vec<LweCiphertextOwned<u64>>> = Vec::with_capacity(self.layers.len());
        for (k, layer) in self.layers.iter().enumerate() {
            let fresh = k == 0;
            let inputs: Vec<&LweCiphertextOwned<u64>> = layer
                .sources
                .iter()
                .flat_map(|s| match *s {
                    Source::Input => input.cts.iter(),
                    Source::Stage(p) => outputs[p].iter(),
                })
                .collect();
            let own_key = self
                .last_layer
                .as_ref()
                .filter(|(index, _)| *index == k)
                .map(|(_, bsk)| bsk);
            let out: Vec<_> = (0..layer.out_features)
                .into_par_iter()
                .map(|j| self.neuron(layer, j, &inputs, fresh, own_key))
                .collect();
            if k + 1 < self.layers.len() {
                visit(&out);
            }
            outputs.push(out);
        }
        Ok(outputs.pop().unwrap_or_default())
    }

    /// One neuron: its weighted sum of `x` (the inputs if `fresh`, else a bootstrap's
    /// outputs), then its lookup if the layer has one: keyswitch + bootstrap on a sum under
    /// the big key, the bootstrap alone on one under the small key; with `own_key` where the
    /// layer bootstraps with a key of its own.
    fn neuron(
        &self,
        layer: &ServerLayer,
        j: usize,
        x: &[&LweCiphertextOwned<u64>],
        fresh: bool,
        own_key: Option<&FourierLweBootstrapKeyOwned>,
    ) -> LweCiphertextOwned<u64> {
        if let Some(body) = layer.fixed[j] {
            // A trivial ciphertext under the big key, where a bootstrap would have put it.
            let mut out =
                LweCiphertext::new(0u64, self.big_lwe_size, CiphertextModulus::new_native());
            *out.get_mut_body().data = body;
            return out;
        }
        let size = if fresh {
            self.input_lwe_size
        } else {
            self.big_lwe_size
        };
        let mut acc = LweCiphertext::new(0u64, size, CiphertextModulus::new_native());
        for &(i, w) in &layer.sparse[j] {
            slice_wrapping_add_scalar_mul_assign(acc.as_mut(), x[i].as_ref(), w);
        }
        let Some((tables, centers)) = &layer.tables else {
            return acc;
        };
        lwe_ciphertext_plaintext_add_assign(&mut acc, Plaintext(layer.offsets[layer.groups[j]]));
        let group = layer.groups[j];
        let mut out = if let Some(bsk) = own_key {
            let small = if size == self.big_lwe_size {
                bootstrap::keyswitch(&self.server_key, &acc)
                    .expect("checked when the server was built")
            } else {
                acc
            };
            bootstrap::bootstrap_other(&self.server_key, bsk, &small, &tables[group])
                .expect("checked when the server was built")
        } else if size != self.big_lwe_size {
            bootstrap::bootstrap(&self.server_key, &acc, &tables[group])
                .expect("checked when the server was built")
        } else {
            let p = &self.params;
            let ct = Ciphertext::new(
                acc,
                Degree::new(0),
                NoiseLevel::NOMINAL,
                p.message_modulus,
                p.carry_modulus,
                AtomicPatternKind::Standard(PBSOrder::KeyswitchBootstrap),
            );
            self.server_key.apply_lookup_table(&ct, &tables[group]).ct
        };
        if centers[group] != 0 {
            lwe_ciphertext_plaintext_add_assign(&mut out, Plaintext(centers[group]));
        }
        out
    }
}

/// A compressed bootstrapping key, decompressed into the Fourier domain.
fn to_fourier(seeded: SeededLweBootstrapKeyOwned<u64>) -> FourierLweBootstrapKeyOwned {
    let standard = seeded.par_decompress_into_lwe_bootstrap_key();
    let mut fourier = FourierLweBootstrapKey::new(
        standard.input_lwe_dimension(),
        standard.glwe_size(),
        standard.polynomial_size(),
        standard.decomposition_base_log(),
        standard.decomposition_level_count(),
    );
    par_convert_standard_lwe_bootstrap_key_to_fourier(&standard, &mut fourier);
    fourier
}

fn server_layer(
    model: &QuantModel,
    k: usize,
    stage: &WeightedStage,
    params: &tfhe::shortint::parameters::ClassicPBSParameters,
) -> ServerLayer {
    let groups: Vec<usize> = (0..stage.out_features).map(|j| stage.group(j)).collect();
    // Each output's weights times its group's weight multiplier and its source's factor.
    let widths = stage.source_widths();
    let sparse = stage
        .links
        .iter()
        .enumerate()
        .map(|(j, row)| {
            let m = stage.multiplier(j);
            row.iter()
                .map(|&(i, w)| (i, (w * m * stage.input_factor(i, &widths)) as u64))
                .collect()
        })
        .collect();
    let delta_in = model.input_delta_log2(k);
    let fixed = (0..stage.out_features)
        .map(|j| {
            stage
                .fixed_output(j)
                .map(|v| (v as u64).wrapping_mul(model.output_delta(k)))
        })
        .collect();
    let (offsets, tables) = match &stage.lookup {
        None => (Vec::new(), None),
        Some(lookup) => {
            // The tables hold twice their values (a wrapping group's are centred on a
            // half-integer), so they are scaled by half the next layer's Δ (even: a power of
            // two of at least 2 times the next layer's spread).
            let half_delta_out = model.output_delta(k) / 2;
            let precision = lookup.encoding.precision();
            let tables = (0..lookup.tables.len())
                .map(|g| {
                    build_table(params, precision, half_delta_out, |x| {
                        lookup.physical_doubled(g, x)
                    })
                })
                .collect();
            let offsets = lookup
                .groups
                .iter()
                .map(|g| ((g.offset * g.multiplier) as u64).wrapping_shl(delta_in))
                .collect();
            let centers = (0..lookup.tables.len())
                .map(|g| (lookup.center_doubled(g) as u64).wrapping_mul(half_delta_out))
                .collect();
            (offsets, Some((tables, centers)))
        }
    };
    ServerLayer {
        sources: stage.sources().to_vec(),
        out_features: stage.out_features,
        in_features: stage.in_features,
        sparse,
        groups,
        offsets,
        tables,
        fixed,
    }
}

/// A bootstrap accumulator for `2^precision` boxes (plus the padding bit) whose box `k`
/// holds `f(k) · delta_out` (signed, wrapping), rotated by half a box so that a value
/// anywhere within half a box of `k` reads `f(k)`.
fn build_table(
    params: &tfhe::shortint::parameters::ClassicPBSParameters,
    precision: u32,
    delta_out: u64,
    f: impl Fn(i64) -> i64,
) -> LookupTableOwned {
    let n = params.polynomial_size.0;
    let mut acc = GlweCiphertext::new(
        0u64,
        params.glwe_dimension.to_glwe_size(),
        params.polynomial_size,
        CiphertextModulus::new_native(),
    );
    let boxes = 1usize << precision;
    let box_size = n / boxes;
    let mut body = acc.get_mut_body();
    let coefficients = body.as_mut();
    for k in 0..boxes {
        let value = (f(k as i64) as u64).wrapping_mul(delta_out);
        coefficients[k * box_size..(k + 1) * box_size].fill(value);
    }
    let half = box_size / 2;
    for c in coefficients[..half].iter_mut() {
        *c = c.wrapping_neg();
    }
    coefficients.rotate_left(half);
    LookupTableOwned {
        acc,
        degree: Degree::new(0),
    }
}
