//! Keys: the client key (secret; quantize, encrypt, decrypt, de-quantize) and the
//! evaluation key (server; compute only). Neither type gives access to the other.

use ndarray::ArrayView1;
use serde::{Deserialize, Serialize};
use tfhe::conformance::ParameterSetConformant;
use tfhe::core_crypto::fft_impl::fft64::crypto::bootstrap::LweBootstrapKeyConformanceParams;
use tfhe::core_crypto::prelude::*;
use tfhe::shortint;
use tfhe::shortint::ciphertext::MaxDegree;
use tfhe::shortint::client_key::atomic_pattern::AtomicPatternClientKey;
use tfhe::shortint::parameters::AtomicPatternParameters;

use super::keygen;
use super::{CompressedSample, EncryptedSample, FheError};
use crate::arch::activation::Activation;
use crate::arch::analysis::IntRange;
use crate::compile::{CompiledModel, Fingerprint};
use crate::format::envelope::{self, DecodeError, Kind, Opened};
use crate::model::{InputStage, Quantizer};
use crate::params::{security, InputKey, ParameterSet};

/// Largest serialized evaluation key accepted (bytes).
pub const EVALUATION_KEY_LIMIT: u64 = 8 << 30;
/// Largest serialized client key accepted (bytes).
pub const CLIENT_KEY_LIMIT: u64 = 1 << 30;
/// Largest serialized client spec accepted (bytes).
pub const CLIENT_SPEC_LIMIT: u64 = 16 << 20;

/// What the client needs of a compiled model: the parameter set, the fingerprint, the input
/// quantizer, the encodings, and the output de-quantization. No weight is in it: a client
/// generates keys, encrypts and decrypts from this alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, tfhe::Versionize)]
#[versionize(ClientSpecVersions)]
pub struct ClientSpec {
    pub(crate) set: ParameterSet,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) features: usize,
    pub(crate) input_activations: Vec<(String, Vec<f64>)>,
    pub(crate) input_scale: f64,
    pub(crate) input_bits: u32,
    pub(crate) input_signed: bool,
    /// The quantized input values the model's tables were built for.
    pub(crate) input_min: i64,
    pub(crate) input_max: i64,
    /// The scaling factor of encrypted inputs (a power of two times the first layer's
    /// spread).
    pub(crate) input_delta: u64,
    /// log2 of the scaling factor of encrypted outputs.
    pub(crate) output_delta_log2: u32,
    /// Real value of one output unit, and bias, per output.
    pub(crate) output_unit: Vec<f64>,
    pub(crate) output_bias: Vec<f64>,
    pub(crate) output_activations: Vec<(String, Vec<f64>)>,
    /// The secret key the outputs are under: the big key after a lookup, or the inputs' key
    /// in a network without lookups. The client decrypts nothing else.
    pub(crate) output_key: InputKey,
}

impl ClientSpec {
    /// The parameter set the keys are made for.
    pub fn parameters(&self) -> &ParameterSet {
        &self.set
    }

    /// The compiled model the keys are bound to.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Values per input sample.
    pub fn features(&self) -> usize {
        self.features
    }

    /// Values per output sample.
    pub fn outputs(&self) -> usize {
        self.output_unit.len()
    }

    /// The client's view of a compiled model.
    pub fn new(compiled: &CompiledModel) -> ClientSpec {
        let model = compiled.tables();
        let input = model.input_stage();
        let last = model.layers().last().expect("a model has a weighted layer");
        let spell = |acts: &[Activation]| {
            acts.iter()
                .map(|a| (a.name().to_string(), a.params()))
                .collect()
        };
        ClientSpec {
            set: compiled.parameters().clone(),
            fingerprint: compiled.fingerprint(),
            features: input.features,
            input_activations: spell(&input.activations),
            input_scale: input.quantizer.scale,
            input_bits: input.quantizer.bits,
            input_signed: input.quantizer.signed,
            input_min: input.range.min,
            input_max: input.range.max,
            input_delta: model.input_delta(0),
            output_delta_log2: model.output_delta_log2(),
            output_unit: (0..last.out_features)
                .map(|j| last.unit[last.group(j)])
                .collect(),
            output_bias: (0..last.out_features)
                .map(|j| last.bias[last.group(j)])
                .collect(),
            output_activations: spell(model.output_activations()),
            output_key: match model.last_lookup_layer() {
                Some(_) => InputKey::Big,
                None => compiled.parameters().inputs,
            },
        }
    }

    fn activations(list: &[(String, Vec<f64>)]) -> Result<Vec<Activation>, FheError> {
        list.iter()
            .map(|(n, p)| {
                Activation::from_name(n, p).map_err(|why| FheError::Invalid {
                    what: "an activation of the client spec",
                    why,
                })
            })
            .collect()
    }

    fn check(&self) -> Result<(), FheError> {
        security::check_set(&self.set)?;
        let ok = (2..=16).contains(&self.set.precision)
            && (1..=16).contains(&self.input_bits)
            && self.input_scale.is_finite()
            && self.input_scale > 0.0
            && (2..=1u64 << 62).contains(&self.input_delta)
            && (1..=62).contains(&self.output_delta_log2)
            && self.input_min <= self.input_max
            && self.output_unit.len() == self.output_bias.len()
            && self
                .output_unit
                .iter()
                .chain(&self.output_bias)
                .all(|v| v.is_finite());
        if !ok {
            return Err(FheError::Invalid {
                what: "client spec",
                why: "a field out of range (precision, input width, scale, scaling factors, input range or output scales)".into(),
            });
        }
        Self::activations(&self.input_activations)?;
        Self::activations(&self.output_activations)?;
        Ok(())
    }

    /// The model's input stage as the client runs it.
    fn input_stage(&self) -> Result<InputStage, FheError> {
        Ok(InputStage {
            activations: Self::activations(&self.input_activations)?,
            quantizer: Quantizer {
                scale: self.input_scale,
                bits: self.input_bits,
                signed: self.input_signed,
            },
            features: self.features,
            range: IntRange::new(self.input_min, self.input_max),
        })
    }

    /// Generates a fresh key pair for the compiled model this spec describes (client side:
    /// the evaluation key is made compressed, as it is sent).
    pub fn keygen(&self) -> Result<(ClientKey, EvaluationKey), FheError> {
        self.check()?;
        let key = shortint::ClientKey::new(self.set.params);
        let compressed = keygen::compressed_server_key(&key);
        let last_layer_key = self.set.last_layer_pbs.map(|pbs| last_layer_key(&key, pbs));
        let key_id = {
            let mut seeder = new_seeder();
            (seeder.seed().0 as u64) | 1
        };
        let client = ClientKey {
            key_id,
            input: self.input_stage()?,
            output_activations: Self::activations(&self.output_activations)?,
            spec: self.clone(),
            key,
        };
        let eval = EvaluationKey {
            key_id,
            fingerprint: self.fingerprint,
            set: self.set.clone(),
            compressed,
            last_layer_key,
        };
        Ok((client, eval))
    }

    /// Serializes the spec (public: it holds no secret and no weight).
    pub fn to_bytes(&self) -> Result<Vec<u8>, FheError> {
        Ok(envelope::seal(Kind::ClientSpec, 0, self.fingerprint, self)?)
    }

    /// Reads a serialized spec, checking its envelope, its parameters' security and its
    /// consistency.
    pub fn from_bytes(bytes: &[u8]) -> Result<ClientSpec, FheError> {
        let Opened {
            fingerprint,
            value: spec,
            ..
        } = envelope::open::<ClientSpec>(bytes, Kind::ClientSpec, CLIENT_SPEC_LIMIT)?;
        if spec.fingerprint != fingerprint {
            return Err(mismatch(Kind::ClientSpec, "fingerprint"));
        }
        spec.check()?;
        Ok(spec)
    }
}

crate::format::versions::versioned!(pub ClientSpec, ClientSpecVersions, "fhe_nn::ClientSpec");

/// The envelope and the payload disagree on `field`.
pub(crate) fn mismatch(kind: Kind, field: &'static str) -> FheError {
    DecodeError::EnvelopeMismatch {
        kind: kind.name(),
        field,
    }
    .into()
}

/// The secret key and what the client needs to use it.
#[derive(Clone)]
pub struct ClientKey {
    key_id: u64,
    spec: ClientSpec,
    key: shortint::ClientKey,
    /// The spec's input stage (activations parsed once) and output activations.
    input: InputStage,
    output_activations: Vec<Activation>,
}

/// What a serialized client key holds.
#[derive(Serialize, Deserialize, tfhe::Versionize)]
#[versionize(ClientKeyWireVersions)]
struct ClientKeyWire {
    key_id: u64,
    spec: ClientSpec,
    key: shortint::ClientKey,
}

crate::format::versions::versioned!(ClientKeyWire, ClientKeyWireVersions, "fhe_nn::ClientKey");

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("key_id", &self.key_id)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

/// The server's key: keyswitching and bootstrapping keys, no secret, kept compressed (the
/// masks as seeds) until the server decompresses it. Bound to one compiled model.
#[derive(Clone)]
pub struct EvaluationKey {
    pub(crate) key_id: u64,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) set: ParameterSet,
    pub(crate) compressed: shortint::CompressedServerKey,
    /// The last lookup layer's bootstrapping key, where the set gives that layer its own
    /// decomposition ([`ParameterSet::last_layer_pbs`]); compressed too.
    pub(crate) last_layer_key: Option<SeededLweBootstrapKeyOwned<u64>>,
}

impl std::fmt::Debug for EvaluationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvaluationKey")
            .field("key_id", &self.key_id)
            .field("fingerprint", &self.fingerprint)
            .field("set", &self.set.label())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize, tfhe::Versionize)]
#[versionize(EvaluationKeyWireVersions)]
struct EvaluationKeyWire {
    set: ParameterSet,
    compressed: shortint::CompressedServerKey,
    last_layer_key: Option<SeededLweBootstrapKeyOwned<u64>>,
}

/// A bootstrapping key of `key`'s secret keys at decomposition `(base_log, levels)`, with
/// the GLWE noise of `key`'s parameters, compressed (the masks as a seed).
fn last_layer_key(
    key: &shortint::ClientKey,
    pbs: (usize, usize),
) -> SeededLweBootstrapKeyOwned<u64> {
    let AtomicPatternClientKey::Standard(standard) = &key.atomic_pattern else {
        unreachable!("fhe-nn generates standard (KS-PBS) keys only")
    };
    let params = standard.parameters;
    let big = standard.large_lwe_secret_key();
    let glwe = GlweSecretKey::from_container(big.as_ref(), params.polynomial_size());
    keygen::seeded_bootstrap_key(
        &standard.small_lwe_secret_key(),
        &glwe,
        DecompositionBaseLog(pbs.0),
        DecompositionLevelCount(pbs.1),
        params.glwe_noise_distribution(),
        params.ciphertext_modulus(),
    )
}

crate::format::versions::versioned!(
    EvaluationKeyWire,
    EvaluationKeyWireVersions,
    "fhe_nn::EvaluationKey"
);

impl ClientKey {
    /// Identifier shared by this key, its evaluation key and their ciphertexts.
    pub fn key_id(&self) -> u64 {
        self.key_id
    }

    /// What the client knows of the model.
    pub fn spec(&self) -> &ClientSpec {
        &self.spec
    }

    /// Quantizes one real sample (after any declared input activations), as Clear does.
    pub fn quantize(&self, sample: ArrayView1<f64>) -> Result<Vec<i64>, crate::error::InputError> {
        self.input.check_width(sample.len())?;
        sample
            .iter()
            .enumerate()
            .map(|(feature, &x)| self.input.quantize(0, feature, x))
            .collect()
    }

    /// Quantizes and encrypts one real sample.
    pub fn encrypt(
        &self,
        sample: ArrayView1<f64>,
    ) -> Result<EncryptedSample, crate::error::InputError> {
        let q = self.quantize(sample)?;
        self.encrypt_quantized(&q)
    }

    /// Encrypts one quantized sample, each value times Δ under the key the compiled set
    /// names ([`InputKey`](crate::params::InputKey)).
    pub fn encrypt_quantized(
        &self,
        values: &[i64],
    ) -> Result<EncryptedSample, crate::error::InputError> {
        self.check_quantized(values)?;
        let (secret, noise) = self.input_key();
        let mut seeder = new_seeder();
        let mut generator = EncryptionRandomGenerator::<DefaultRandomGenerator>::new(
            seeder.seed(),
            seeder.as_mut(),
        );
        let cts = values
            .iter()
            .map(|&v| {
                let plaintext = Plaintext((v as u64).wrapping_mul(self.spec.input_delta));
                allocate_and_encrypt_new_lwe_ciphertext(
                    &secret,
                    plaintext,
                    noise,
                    CiphertextModulus::new_native(),
                    &mut generator,
                )
            })
            .collect();
        Ok(EncryptedSample {
            key_id: self.key_id,
            fingerprint: self.spec.fingerprint,
            cts,
        })
    }

    /// Checks a quantized sample's width and range.
    fn check_quantized(&self, values: &[i64]) -> Result<(), crate::error::InputError> {
        self.input.check_width(values.len())?;
        values
            .iter()
            .enumerate()
            .try_for_each(|(feature, &v)| self.input.check(0, feature, v))
    }

    /// Quantizes and encrypts one real sample into the compact upload form.
    pub fn encrypt_compressed(
        &self,
        sample: ArrayView1<f64>,
    ) -> Result<CompressedSample, crate::error::InputError> {
        let q = self.quantize(sample)?;
        self.encrypt_quantized_compressed(&q)
    }

    /// Encrypts one quantized sample into the compact upload form: the masks are derived
    /// from one public seed, so only the bodies and the seed travel.
    pub fn encrypt_quantized_compressed(
        &self,
        values: &[i64],
    ) -> Result<CompressedSample, crate::error::InputError> {
        self.check_quantized(values)?;
        let (secret, noise) = self.input_key();
        let mut seeder = new_seeder();
        let plaintexts = PlaintextList::from_container(
            values
                .iter()
                .map(|&v| (v as u64).wrapping_mul(self.spec.input_delta))
                .collect::<Vec<_>>(),
        );
        let mut list = SeededLweCiphertextList::new(
            0u64,
            secret.lwe_dimension().to_lwe_size(),
            LweCiphertextCount(values.len()),
            seeder.seed().into(),
            CiphertextModulus::new_native(),
        );
        encrypt_seeded_lwe_ciphertext_list(&secret, &mut list, &plaintexts, noise, seeder.as_mut());
        Ok(CompressedSample {
            key_id: self.key_id,
            fingerprint: self.spec.fingerprint,
            list,
        })
    }

    /// Decrypts one ciphertext encoding a signed integer times `delta` (intermediate values
    /// of a traced run, [`CompiledModel::decrypt_trace`]; `decrypt_int` reads the outputs).
    /// Crate-private: a public raw decryption is an oracle (docs/threat-model.md).
    pub(crate) fn decrypt_value(
        &self,
        ct: &LweCiphertextOwned<u64>,
        delta: u64,
    ) -> Result<i64, FheError> {
        if !(2..=1u64 << 62).contains(&delta) {
            return Err(FheError::Shape(format!(
                "scaling factor {delta} is not in 2..2^62"
            )));
        }
        let secret = self.secret_for(ct)?;
        Ok(decode(&secret, ct, delta))
    }

    /// The key and noise inputs are encrypted under: the big key (TFHE-rs's choice for a
    /// KS-PBS set) or the small one, as the compiled set says.
    fn input_key(&self) -> (LweSecretKeyView<'_, u64>, DynamicDistribution<u64>) {
        match (&self.key.atomic_pattern, self.spec.set.inputs) {
            (AtomicPatternClientKey::Standard(standard), InputKey::Small) => (
                standard.small_lwe_secret_key(),
                standard.parameters.lwe_noise_distribution(),
            ),
            _ => self.key.encryption_key_and_noise(),
        }
    }

    /// The small key (what the bootstraps read) and the big key (what they output under).
    fn small_and_big_keys(&self) -> [LweSecretKeyView<'_, u64>; 2] {
        let (big, _) = self.key.encryption_key_and_noise();
        let small = match &self.key.atomic_pattern {
            AtomicPatternClientKey::Standard(standard) => standard.small_lwe_secret_key(),
            // fhe-nn only generates standard (KS-PBS) keys.
            AtomicPatternClientKey::KeySwitch32(_) => self.key.encryption_key_and_noise().0,
        };
        [small, big]
    }

    /// The secret key a ciphertext of this size is under: the small key (inputs, or the
    /// outputs of a network without lookups) or the big key (after a bootstrap).
    fn secret_for(
        &self,
        ct: &LweCiphertextOwned<u64>,
    ) -> Result<LweSecretKeyView<'_, u64>, FheError> {
        let keys = self.small_and_big_keys();
        let sizes = [keys[0].lwe_dimension(), keys[1].lwe_dimension()].map(|d| d.to_lwe_size().0);
        keys.into_iter()
            .find(|key| key.lwe_dimension().to_lwe_size() == ct.lwe_size())
            .ok_or_else(|| {
                FheError::Shape(format!(
                    "ciphertext of LWE size {}, expected {} (small key) or {} (big key)",
                    ct.lwe_size().0,
                    sizes[0],
                    sizes[1]
                ))
            })
    }

    fn check_sample(&self, sample: &EncryptedSample) -> Result<(), FheError> {
        super::check_model(self.spec.fingerprint, sample.fingerprint)?;
        if sample.key_id != self.key_id {
            return Err(FheError::WrongKey {
                expected: self.key_id,
                found: sample.key_id,
            });
        }
        if let Some(first) = sample.cts.first() {
            self.secret_for(first)?;
            if let Some(bad) = sample.cts.iter().find(|c| c.lwe_size() != first.lwe_size()) {
                return Err(FheError::Shape(format!(
                    "ciphertexts of LWE sizes {} and {} in one sample",
                    first.lwe_size().0,
                    bad.lwe_size().0
                )));
            }
        }
        Ok(())
    }

    /// Decrypts the server's output: the output layer's integer accumulators. Anything but
    /// the model's output (as many ciphertexts as it has outputs, under the key its outputs
    /// are under) is refused: a server cannot have the client decrypt its own inputs.
    pub fn decrypt_int(&self, output: &EncryptedSample) -> Result<Vec<i64>, FheError> {
        self.check_sample(output)?;
        let [small, big] = self.small_and_big_keys();
        let secret = match self.spec.output_key {
            InputKey::Big => big,
            InputKey::Small => small,
        };
        let expected_size = secret.lwe_dimension().to_lwe_size().0;
        let count = self.spec.output_unit.len();
        let size = output.cts.first().map_or(expected_size, |c| c.lwe_size().0);
        if output.cts.len() != count || size != expected_size {
            return Err(FheError::NotModelOutput {
                count: output.cts.len(),
                lwe_size: size,
                expected_count: count,
                expected_lwe_size: expected_size,
            });
        }
        let delta = 1u64 << self.spec.output_delta_log2;
        Ok(output
            .cts
            .iter()
            .map(|c| decode(&secret, c, delta))
            .collect())
    }

    /// Decrypts and de-quantizes the server's output.
    pub fn decrypt(&self, output: &EncryptedSample) -> Result<Vec<f64>, FheError> {
        let ints = self.decrypt_int(output)?;
        let acts = &self.output_activations;
        Ok(ints
            .iter()
            .enumerate()
            .map(|(j, &a)| {
                acts.iter().fold(
                    self.spec.output_unit[j] * a as f64 + self.spec.output_bias[j],
                    |y, f| f.apply(y),
                )
            })
            .collect())
    }

    /// Serializes the key (keep it secret).
    pub fn to_bytes(&self) -> Result<Vec<u8>, FheError> {
        let wire = ClientKeyWire {
            key_id: self.key_id,
            spec: self.spec.clone(),
            key: self.key.clone(),
        };
        Ok(envelope::seal(
            Kind::ClientKey,
            self.key_id,
            self.spec.fingerprint,
            &wire,
        )?)
    }

    /// Reads a serialized client key, checking its envelope and its parameters.
    pub fn from_bytes(bytes: &[u8]) -> Result<ClientKey, FheError> {
        let Opened {
            key_id,
            fingerprint,
            value: wire,
            ..
        } = envelope::open::<ClientKeyWire>(bytes, Kind::ClientKey, CLIENT_KEY_LIMIT)?;
        if wire.key_id != key_id {
            return Err(mismatch(Kind::ClientKey, "key id"));
        }
        if wire.spec.fingerprint != fingerprint {
            return Err(mismatch(Kind::ClientKey, "fingerprint"));
        }
        wire.spec.check()?;
        if wire.key.parameters() != wire.spec.set.params.into() {
            return Err(FheError::Invalid {
                what: "client key",
                why: "its parameters differ from its spec's".into(),
            });
        }
        super::secrets::check(&wire.key, &wire.spec.set)?;
        let key = ClientKey {
            key_id: wire.key_id,
            input: wire.spec.input_stage()?,
            output_activations: ClientSpec::activations(&wire.spec.output_activations)?,
            spec: wire.spec,
            key: wire.key,
        };
        Ok(key)
    }
}

impl EvaluationKey {
    /// Identifier shared with the client key.
    pub fn key_id(&self) -> u64 {
        self.key_id
    }

    /// The fingerprint of the compiled model the key was made for.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The parameter set.
    pub fn parameters(&self) -> &ParameterSet {
        &self.set
    }

    /// Serializes the compressed evaluation key (what the client sends the server).
    pub fn to_bytes(&self) -> Result<Vec<u8>, FheError> {
        let wire = EvaluationKeyWire {
            set: self.set.clone(),
            compressed: self.compressed.clone(),
            last_layer_key: self.last_layer_key.clone(),
        };
        Ok(envelope::seal(
            Kind::EvaluationKey,
            self.key_id,
            self.fingerprint,
            &wire,
        )?)
    }

    /// Reads a serialized evaluation key and checks that its parameter set is secure and that
    /// the key conforms to it ([`FheServer::new`](super::FheServer::new) decompresses it).
    pub fn from_bytes(bytes: &[u8]) -> Result<EvaluationKey, FheError> {
        let Opened {
            key_id,
            fingerprint,
            value: wire,
            ..
        } = envelope::open::<EvaluationKeyWire>(bytes, Kind::EvaluationKey, EVALUATION_KEY_LIMIT)?;
        let set = wire.set;
        security::check_set(&set)?;
        let p = set.params;
        let max_degree = MaxDegree::new(p.message_modulus.0 * p.carry_modulus.0 - 1);
        if !wire
            .compressed
            .is_conformant(&(AtomicPatternParameters::from(p), max_degree))
        {
            return Err(FheError::Invalid {
                what: "evaluation key",
                why: format!("it does not conform to {}", set.name),
            });
        }
        let last = set.last_layer_params();
        let last_conforms = match (&wire.last_layer_key, set.last_layer_pbs) {
            (None, None) => true,
            (Some(bsk), Some(_)) => bsk.is_conformant(&LweBootstrapKeyConformanceParams {
                decomp_base_log: last.pbs_base_log,
                decomp_level_count: last.pbs_level,
                input_lwe_dimension: last.lwe_dimension,
                output_glwe_size: last.glwe_dimension.to_glwe_size(),
                polynomial_size: last.polynomial_size,
                ciphertext_modulus: last.ciphertext_modulus,
            }),
            _ => false,
        };
        if !last_conforms {
            return Err(FheError::Invalid {
                what: "evaluation key",
                why: format!(
                    "the last lookup layer's bootstrapping key does not conform to {}",
                    set.label()
                ),
            });
        }
        Ok(EvaluationKey {
            key_id,
            fingerprint,
            set,
            compressed: wire.compressed,
            last_layer_key: wire.last_layer_key,
        })
    }

    /// Size of the serialized (compressed) key in bytes.
    pub fn serialized_size(&self) -> Result<u64, FheError> {
        Ok(self.to_bytes()?.len() as u64)
    }
}

/// The signed integer a ciphertext under `secret` encodes times `delta` (at least 2), rounded
/// to the nearest.
fn decode(secret: &LweSecretKeyView<'_, u64>, ct: &LweCiphertextOwned<u64>, delta: u64) -> i64 {
    let plain = decrypt_lwe_ciphertext(secret, ct).0;
    let rounded = plain.wrapping_add(delta / 2);
    (rounded as i64).div_euclid(delta as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::vetted;

    /// An evaluation key of the smallest vetted set: `set`'s keys, with the last-layer key
    /// made at `last` (if any) whatever `set` says.
    fn key_bytes(set: &ParameterSet, last: Option<(usize, usize)>) -> Vec<u8> {
        let client = shortint::ClientKey::new(set.params);
        let eval = EvaluationKey {
            key_id: 7,
            fingerprint: Fingerprint([3; 32]),
            set: set.clone(),
            compressed: shortint::CompressedServerKey::new(&client),
            last_layer_key: last.map(|pbs| last_layer_key(&client, pbs)),
        };
        eval.to_bytes().unwrap()
    }

    #[test]
    fn the_last_layer_key_must_match_the_set() {
        let plain = vetted(2).unwrap();
        let split = plain.clone().with_last_layer_pbs(Some((15, 2)));
        // As made: read back.
        let read = EvaluationKey::from_bytes(&key_bytes(&split, Some((15, 2)))).unwrap();
        assert_eq!(read.set, split);
        assert!(EvaluationKey::from_bytes(&key_bytes(&plain, None)).is_ok());
        // Missing, unexpected, or at another decomposition: refused before any use.
        for (set, last) in [
            (&split, None),
            (&plain, Some((15, 2))),
            (&split, Some((18, 1))),
        ] {
            match EvaluationKey::from_bytes(&key_bytes(set, last)) {
                Err(FheError::Invalid { why, .. }) => {
                    assert!(why.contains("last lookup layer"), "{why}")
                }
                Err(e) => panic!("wrong error: {e}"),
                Ok(_) => panic!("{} with a last-layer key at {last:?} was read", set.label()),
            }
        }
        // A decomposition beyond 64 bits is refused by the security check.
        let mut bad = split.clone();
        bad.last_layer_pbs = Some((40, 2));
        assert!(matches!(
            EvaluationKey::from_bytes(&key_bytes(&bad, Some((15, 2)))),
            Err(FheError::Insecure(
                security::SecurityError::OutOfBounds { .. }
            ))
        ));
    }

    #[test]
    fn keys_whose_set_was_tampered_with_are_refused_by_field() {
        use tfhe::core_crypto::prelude::Gaussian;
        let genuine = vetted(2).unwrap();
        // The secret key of the genuine set; the set on the wire tampered with.
        let key = shortint::ClientKey::new(genuine.params);
        let spec_of = |set: &ParameterSet| ClientSpec {
            set: set.clone(),
            fingerprint: Fingerprint([5; 32]),
            features: 2,
            input_activations: Vec::new(),
            input_scale: 0.5,
            input_bits: 2,
            input_signed: false,
            input_min: 0,
            input_max: 3,
            input_delta: 1 << 60,
            output_delta_log2: 58,
            output_unit: vec![1.0],
            output_bias: vec![0.0],
            output_activations: Vec::new(),
            output_key: InputKey::Big,
        };
        let client_bytes = |set: &ParameterSet| {
            let wire = ClientKeyWire {
                key_id: 9,
                spec: spec_of(set),
                key: key.clone(),
            };
            envelope::seal(Kind::ClientKey, 9, Fingerprint([5; 32]), &wire).unwrap()
        };
        let eval_bytes = |set: &ParameterSet| {
            let wire = EvaluationKeyWire {
                set: set.clone(),
                compressed: shortint::CompressedServerKey::new(&key),
                last_layer_key: None,
            };
            envelope::seal(Kind::EvaluationKey, 9, Fingerprint([5; 32]), &wire).unwrap()
        };
        let field_of = |e: FheError| match e {
            FheError::Insecure(security::SecurityError::Tampered { field, .. }) => field,
            e => panic!("refused otherwise: {e}"),
        };
        ClientKey::from_bytes(&client_bytes(&genuine)).unwrap();
        EvaluationKey::from_bytes(&eval_bytes(&genuine)).unwrap();
        for (std, mean) in [
            (1e20, 0.0),
            (f64::NAN, 0.0),
            (f64::INFINITY, 0.0),
            (1e-5, 1e9),
        ] {
            let noise = DynamicDistribution::Gaussian(Gaussian { std, mean });
            for (field, tampered) in [
                ("lwe_noise_distribution", {
                    let mut set = genuine.clone();
                    set.params.lwe_noise_distribution = noise;
                    set
                }),
                ("glwe_noise_distribution", {
                    let mut set = genuine.clone();
                    set.params.glwe_noise_distribution = noise;
                    set
                }),
            ] {
                let client = ClientKey::from_bytes(&client_bytes(&tampered)).unwrap_err();
                assert_eq!(
                    field_of(client),
                    field,
                    "client key, std {std}, mean {mean}"
                );
                let eval = EvaluationKey::from_bytes(&eval_bytes(&tampered)).unwrap_err();
                assert_eq!(
                    field_of(eval),
                    field,
                    "evaluation key, std {std}, mean {mean}"
                );
            }
        }
        // A vetted set must be TFHE-rs's constant: its name with a custom set's noise is
        // refused.
        let mut renamed = ParameterSet::custom(genuine.shape(), 2);
        renamed.name = genuine.name.clone();
        let field = field_of(EvaluationKey::from_bytes(&eval_bytes(&renamed)).unwrap_err());
        eprintln!("a vetted name on a custom set: refused at {field}");
    }

    #[test]
    fn the_last_lookup_layer_bootstraps_with_the_second_key() {
        use crate::compile::{FheOptions, ParameterChoice};
        use crate::datasets::{digits, digits_seed_weights, Seed};
        use crate::model::QuantModel;
        // The seed network (two lookup layers) on TFHE-rs's 4-bit set, its last lookup layer
        // forced to a second key at 2^15 × 2.
        let model = QuantModel::from_tensors(Seed::architecture(), &digits_seed_weights().unwrap())
            .unwrap();
        let test = digits().unwrap().test.images;
        let set = vetted(4).unwrap().with_last_layer_pbs(Some((15, 2)));
        let options = FheOptions {
            parameters: ParameterChoice::Fixed(Box::new(set)),
            ..FheOptions::default()
        };
        let compiled = model.compile(test.view(), &options).unwrap();
        let q = compiled.quantize(test.view()).unwrap();
        let (client, eval) = compiled.keygen().unwrap();
        // Lookups of each layer whose outputs differ from Clear's table, over 3 samples.
        let differing = |eval: EvaluationKey| -> Vec<usize> {
            let server = compiled.server(eval).unwrap();
            let mut total = vec![0; 2];
            for i in 0..3 {
                let input = q.row(i).to_vec();
                let trace = server
                    .run_traced(&client.encrypt_quantized(&input).unwrap())
                    .unwrap();
                let found = compiled
                    .lookup_differences(&client, &input, &trace)
                    .unwrap();
                for (t, (d, _)) in total.iter_mut().zip(found) {
                    *t += d;
                }
            }
            total
        };
        // The same evaluation key with the second key made from another client's secrets:
        // only the last lookup layer reads garbage, so the server uses that key there and
        // nowhere else.
        let other = shortint::ClientKey::new(compiled.parameters().params);
        let foreign = EvaluationKey {
            last_layer_key: Some(last_layer_key(&other, (15, 2))),
            ..eval.clone()
        };
        let (own, foreign) = (differing(eval), differing(foreign));
        eprintln!("own key: {own:?} of 90 per layer; another client's: {foreign:?}");
        assert!(own.iter().all(|&d| d <= 5), "{own:?}");
        assert!(foreign[0] <= 5 && foreign[1] >= 30, "{foreign:?}");
    }
}
