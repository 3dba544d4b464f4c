//! What a compiled model does with keys: the three modes side by side (Fhe with fresh keys
//! in this process), the client's spec, key generation, reading an uploaded key, the server.

use ndarray::{Array2, ArrayView2, Axis};

use serde::{Deserialize, Serialize};

use super::{ClientKey, ClientSpec, EncryptedSample, EvaluationKey, FheError, FheServer};
use crate::clear::rows_to_array;
use crate::compile::{CompiledModel, FhePlan, Mode};
use crate::format::envelope::{self, DecodeError, Kind, Opened};
use crate::format::EncodeError;

/// Largest serialized compiled model accepted (bytes).
pub const COMPILED_MODEL_LIMIT: u64 = 256 << 20;

/// What a compiled model's file holds: its canonical definition (architecture, weights, input
/// range, parameter set), from which the tables are built again, its plan (the error
/// figures of its compilation) as JSON, and whether the fingerprint covers the plan.
#[derive(Serialize, Deserialize, tfhe::Versionize)]
#[versionize(CompiledModelFileVersions)]
struct CompiledModelFile {
    definition: Vec<u8>,
    plan: String,
    plan_in_fingerprint: bool,
}

crate::format::versions::named!(CompiledModelFile, "fhe_nn::CompiledModel");

/// The layouts of earlier formats and their upgrades.
mod backward_compat {
    use std::convert::Infallible;

    use tfhe_versionable::{Upgrade, Version, VersionsDispatch};

    use super::CompiledModelFile;

    /// Format 6: the fingerprint did not cover the plan.
    #[derive(Version)]
    pub(super) struct CompiledModelFileV0 {
        definition: Vec<u8>,
        plan: String,
    }

    impl Upgrade<CompiledModelFile> for CompiledModelFileV0 {
        type Error = Infallible;

        fn upgrade(self) -> Result<CompiledModelFile, Infallible> {
            Ok(CompiledModelFile {
                definition: self.definition,
                plan: self.plan,
                plan_in_fingerprint: false,
            })
        }
    }

    #[derive(VersionsDispatch)]
    // Constructed by the derives' generated code only.
    #[allow(dead_code)]
    pub(super) enum CompiledModelFileVersions {
        V0(CompiledModelFileV0),
        V1(CompiledModelFile),
    }
}

use backward_compat::CompiledModelFileVersions;

impl CompiledModel {
    /// Serializes the compiled model: a server that reads it back
    /// ([`from_bytes`](Self::from_bytes)), here or on another machine, has the same tables and
    /// the same fingerprint, so it accepts the keys made for this one. Holds the weights:
    /// keep it on the server side.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FheError> {
        let plan = serde_json::to_string(self.plan()).map_err(|e| EncodeError {
            what: "the plan",
            reason: e.to_string(),
        })?;
        let file = CompiledModelFile {
            definition: self.definition(),
            plan,
            plan_in_fingerprint: self.plan_in_fingerprint(),
        };
        Ok(envelope::seal(
            Kind::CompiledModel,
            0,
            self.fingerprint(),
            &file,
        )?)
    }

    /// Reads a compiled model written by [`to_bytes`](Self::to_bytes) of this release or an
    /// earlier one ([`format`](mod@crate::format)): the envelope, then the definition (the architecture
    /// analysed as `fhe_net!` does, the weights checked as
    /// [`QuantModel::from_tensors`](crate::model::QuantModel::from_tensors) does, the
    /// parameter set rebuilt by fhe-nn's rule), the tables built again, and the fingerprint
    /// of all it holds compared with the envelope's: an altered file is refused as such.
    pub fn from_bytes(bytes: &[u8]) -> Result<CompiledModel, FheError> {
        let opened: Opened<CompiledModelFile> =
            envelope::open(bytes, Kind::CompiledModel, COMPILED_MODEL_LIMIT)?;
        let file = opened.value;
        let plan: FhePlan = serde_json::from_str(&file.plan).map_err(|e| DecodeError::Payload {
            kind: Kind::CompiledModel.name(),
            reason: format!("the plan: {e}"),
        })?;
        let compiled =
            CompiledModel::from_definition(&file.definition, plan, file.plan_in_fingerprint)?;
        if compiled.fingerprint() != opened.fingerprint {
            return Err(DecodeError::Altered {
                kind: Kind::CompiledModel.name(),
            }
            .into());
        }
        Ok(compiled)
    }

    /// Runs a batch of real inputs (one sample per row): de-quantized outputs.
    pub fn predict(&self, inputs: ArrayView2<f64>, mode: Mode) -> Result<Array2<f64>, FheError> {
        let q = self.quantize(inputs)?;
        let out = self.predict_int(q.view(), mode)?;
        Ok(self.tables().dequantize_batch(out.view())?)
    }

    /// Runs a batch of quantized inputs: the output layer's integer accumulators.
    pub fn predict_int(
        &self,
        inputs: ArrayView2<i64>,
        mode: Mode,
    ) -> Result<Array2<i64>, FheError> {
        if let Some(out) = self.predict_int_without_keys(inputs, mode)? {
            return Ok(out);
        }
        self.tables().check_quantized_inputs(inputs)?;
        let (client, key) = self.keygen()?;
        let server = self.server(key)?;
        let rows = inputs
            .axis_iter(Axis(0))
            .map(|row| {
                let sample = client.encrypt_quantized(&row.to_vec())?;
                client.decrypt_int(&server.run(&sample)?)
            })
            .collect::<Result<Vec<_>, FheError>>()?;
        Ok(rows_to_array(rows, self.output_features()))
    }

    /// Predicted class (argmax of the outputs) of each sample.
    pub fn classify(&self, inputs: ArrayView2<f64>, mode: Mode) -> Result<Vec<usize>, FheError> {
        Ok(crate::clear::argmax_rows(
            self.predict(inputs, mode)?.view(),
        ))
    }

    /// What a client needs to generate keys, encrypt and decrypt: no weights.
    pub fn client_spec(&self) -> ClientSpec {
        ClientSpec::new(self)
    }

    /// Generates a fresh key pair (client side; the evaluation key goes to the server).
    pub fn keygen(&self) -> Result<(ClientKey, EvaluationKey), FheError> {
        self.client_spec().keygen()
    }

    /// Largest serialized (compressed) evaluation key this model's parameters can need
    /// (bytes): the bootstrapping keys' bodies (`n · (k+1) · levels · N` words each) and the
    /// keyswitching key's (`k·N · levels` words), with framing.
    pub fn max_evaluation_key_bytes(&self) -> u64 {
        let p = &self.parameters().params;
        let (n, k, big_n) = (
            p.lwe_dimension.0 as u64,
            p.glwe_dimension.0 as u64,
            p.polynomial_size.0 as u64,
        );
        let last_levels = match self.parameters().last_layer_pbs {
            Some((_, levels)) => levels as u64,
            None => 0,
        };
        let bootstrap = n * (k + 1) * (p.pbs_level.0 as u64 + last_levels) * big_n * 8;
        let keyswitch = k * big_n * p.ks_level.0 as u64 * 8;
        (bootstrap + keyswitch) * 11 / 10 + (1 << 20)
    }

    /// Reads an uploaded evaluation key for this model: its length is checked against what
    /// these parameters can need before anything is decoded, then its conformance and its
    /// fingerprint.
    pub fn read_evaluation_key(&self, bytes: &[u8]) -> Result<EvaluationKey, FheError> {
        super::check_upload_size(bytes, self.max_evaluation_key_bytes())?;
        let key = EvaluationKey::from_bytes(bytes)?;
        super::check_model(self.fingerprint(), key.fingerprint())?;
        Ok(key)
    }

    /// Decrypts a traced encrypted inference ([`FheServer::run_traced`]) with `client`: each
    /// lookup layer's outputs (at [`output_delta`](CompiledModel::output_delta)), then the
    /// outputs. For tests and debugging: it needs the compiled model (the weights), which a
    /// client never holds, and the client key, which a server never holds.
    pub fn decrypt_trace(
        &self,
        client: &ClientKey,
        trace: &[EncryptedSample],
    ) -> Result<Vec<Vec<i64>>, FheError> {
        let Some((outputs, layers)) = trace.split_last() else {
            return Ok(Vec::new());
        };
        let mut decrypted = Vec::with_capacity(trace.len());
        for (k, layer) in layers.iter().enumerate() {
            let delta = self.output_delta(k);
            let values = layer
                .ciphertexts()
                .iter()
                .map(|c| client.decrypt_value(c, delta))
                .collect::<Result<Vec<i64>, _>>()?;
            decrypted.push(values);
        }
        decrypted.push(client.decrypt_int(outputs)?);
        Ok(decrypted)
    }

    /// Per lookup layer of one traced encrypted inference ([`FheServer::run_traced`] of the
    /// quantized `input`): how many lookups gave another output than Clear's table on the
    /// accumulator of the inputs Fhe actually had, and how many there were. What
    /// [`simulate_disagreement`](Self::simulate_disagreement) predicts, measured.
    pub fn lookup_differences(
        &self,
        client: &ClientKey,
        input: &[i64],
        trace: &[EncryptedSample],
    ) -> Result<Vec<(usize, usize)>, FheError> {
        // The decrypted lookups so far, laid out as Clear's trace (accumulators left empty).
        let mut decrypted: Vec<Vec<i64>> = Vec::new();
        let mut found = Vec::new();
        for (k, stage) in self.layers().iter().enumerate() {
            let Some(lookup) = stage.lookup() else {
                continue;
            };
            let inputs = crate::clear::gather(stage, input, &decrypted).into_owned();
            let layer = trace.get(k).ok_or_else(|| {
                FheError::Shape(format!(
                    "a trace of {} layers, the model has more",
                    trace.len()
                ))
            })?;
            let delta = self.output_delta(k);
            let outputs: Vec<i64> = layer
                .ciphertexts()
                .iter()
                .map(|c| client.decrypt_value(c, delta))
                .collect::<Result<Vec<i64>, _>>()?;
            // Fixed outputs (no bootstrap) are exact; only bootstraps are counted.
            let differ = outputs
                .iter()
                .enumerate()
                .filter(|&(j, &got)| {
                    got != lookup.read(stage.group(j), stage.accumulate_one(j, &inputs))
                })
                .count();
            found.push((differ, stage.bootstraps()));
            decrypted.push(Vec::new());
            decrypted.push(outputs);
        }
        Ok(found)
    }

    /// Largest serialized compressed encrypted sample this model accepts (bytes), as
    /// [`FheServer::max_compressed_bytes`] checks it: a bound for upload limits set before
    /// any key is at hand.
    pub fn max_compressed_sample_bytes(&self) -> u64 {
        super::max_compressed_sample_bytes(self.input_features())
    }

    /// The server for this compiled model and an evaluation key made for it.
    pub fn server(&self, key: EvaluationKey) -> Result<FheServer, FheError> {
        FheServer::new(self, key)
    }
}
