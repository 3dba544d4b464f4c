//! Files written by earlier releases still load. `tests/fixtures/compat/vN/` holds what the
//! release of format version N wrote for the shipped seed network: its compiled model, its
//! client spec, a client key, a compressed encrypted input and the server's encrypted output
//! for that input, and `expected.json` (the sample's index in the digits test split, its
//! quantized input and the output accumulators that key decrypts).
//!
//! A release that changes a format adds a directory: `FHE_NN_COMPAT_OUT=tests/fixtures/compat/vN
//! cargo test --release --test compat -- --ignored write_fixtures` (N is
//! `fhe_nn::fhe::FORMAT_VERSION`), and every earlier directory must keep passing.

mod common;

use std::path::{Path, PathBuf};

use common::shipped_seed;
use fhe_nn::datasets::digits;
use fhe_nn::fhe::{ClientKey, ClientSpec, CompressedSample, EncryptedSample, FORMAT_VERSION};
use fhe_nn::{CompiledModel, FheOptions};
use serde::{Deserialize, Serialize};

/// The digits test image the fixtures encrypt.
const SAMPLE: usize = 7;

/// The clear facts stored beside the fixtures.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Expected {
    format_version: u16,
    sample: usize,
    quantized_input: Vec<i64>,
    output: Vec<i64>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compat")
}

/// The directories of the releases that wrote fixtures, oldest first.
fn releases() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort_by_key(|d| {
        let name = d.file_name().unwrap().to_string_lossy().to_string();
        name.trim_start_matches('v')
            .parse::<u16>()
            .unwrap_or(u16::MAX)
    });
    dirs
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{}/{name}: {e}", dir.display()))
}

#[test]
fn files_of_every_earlier_release_load_and_agree() {
    let releases = releases();
    assert!(!releases.is_empty(), "no compatibility fixtures");
    let test = digits().unwrap().test.images;
    for dir in releases {
        let expected: Expected = serde_json::from_slice(&read(&dir, "expected.json")).unwrap();
        assert!(expected.format_version <= FORMAT_VERSION);
        let what = format!("{} (format {})", dir.display(), expected.format_version);

        let spec = ClientSpec::from_bytes(&read(&dir, "seed.spec"))
            .unwrap_or_else(|e| panic!("{what}: client spec: {e}"));
        let compiled = CompiledModel::from_bytes(&read(&dir, "seed.fhenn"))
            .unwrap_or_else(|e| panic!("{what}: compiled model: {e}"));
        assert_eq!(
            compiled.fingerprint(),
            spec.fingerprint(),
            "{what}: the compiled model read back is the one the spec was made for"
        );
        assert_eq!(compiled.client_spec(), spec, "{what}: the same client spec");
        let rewritten = CompiledModel::from_bytes(&compiled.to_bytes().unwrap()).unwrap();
        assert_eq!(
            rewritten.fingerprint(),
            spec.fingerprint(),
            "{what}: written again in format {FORMAT_VERSION}, the same model for its keys"
        );
        let key = ClientKey::from_bytes(&read(&dir, "seed.client_key"))
            .unwrap_or_else(|e| panic!("{what}: client key: {e}"));
        assert_eq!(key.spec(), &spec, "{what}: the key's spec");

        // The stored sample quantizes as it did, and Clear on the compiled model read back
        // gives the output accumulators the stored key decrypts from the stored answer.
        let quantized = key.quantize(test.row(expected.sample)).unwrap();
        assert_eq!(quantized, expected.quantized_input, "{what}: quantization");
        assert_eq!(
            compiled.clear_int(&quantized).unwrap(),
            expected.output,
            "{what}: Clear on the compiled model read back"
        );
        let output = EncryptedSample::from_bytes(&read(&dir, "seed.output"))
            .unwrap_or_else(|e| panic!("{what}: encrypted output: {e}"));
        assert_eq!(
            key.decrypt_int(&output).unwrap(),
            expected.output,
            "{what}: the stored key decrypts the stored answer"
        );
        let input = CompressedSample::from_bytes(&read(&dir, "seed.input"))
            .unwrap_or_else(|e| panic!("{what}: compressed input: {e}"));
        assert_eq!(input.len(), compiled.input_features(), "{what}: input size");
    }
}

/// Writes this release's fixtures into `$FHE_NN_COMPAT_OUT` (see the module's doc).
#[test]
#[ignore = "writes fixtures; run by hand when a format changes"]
fn write_fixtures() {
    let out = PathBuf::from(std::env::var("FHE_NN_COMPAT_OUT").expect("FHE_NN_COMPAT_OUT"));
    std::fs::create_dir_all(&out).unwrap();
    let test = digits().unwrap().test.images;
    let compiled = shipped_seed()
        .compile(test.view(), &FheOptions::default())
        .unwrap();
    let spec = compiled.client_spec();
    let (client, evaluation_key) = spec.keygen().unwrap();
    let server = compiled.server(evaluation_key).unwrap();
    let sample = test.row(SAMPLE);
    let quantized_input = client.quantize(sample).unwrap();
    let input = client.encrypt_compressed(sample).unwrap();
    let output = server.run(&server.decompress(&input).unwrap()).unwrap();
    let decrypted = client.decrypt_int(&output).unwrap();
    let clear = compiled.clear_int(&quantized_input).unwrap();
    assert_eq!(decrypted, clear, "a fixture's answer must equal Clear");
    let expected = Expected {
        format_version: FORMAT_VERSION,
        sample: SAMPLE,
        quantized_input,
        output: clear,
    };
    let files: [(&str, Vec<u8>); 6] = [
        ("seed.fhenn", compiled.to_bytes().unwrap()),
        ("seed.spec", spec.to_bytes().unwrap()),
        ("seed.client_key", client.to_bytes().unwrap()),
        ("seed.input", input.to_bytes().unwrap()),
        ("seed.output", output.to_bytes().unwrap()),
        (
            "expected.json",
            serde_json::to_vec_pretty(&expected).unwrap(),
        ),
    ];
    for (name, bytes) in files {
        std::fs::write(out.join(name), bytes).unwrap();
    }
}
