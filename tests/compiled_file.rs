//! A compiled model is a file: written, read back (as a server on another machine would),
//! it has the same tables and the same fingerprint, so keys made for one work with the
//! other; a damaged or altered file is refused.

mod common;

use common::{shipped_seed, tiny_model};
use fhe_nn::datasets::digits;
use fhe_nn::fhe::FheError;
use fhe_nn::{CompiledModel, FheOptions, Mode, ParameterChoice};

#[test]
fn a_compiled_file_round_trips_and_keys_cross_over() {
    let (model, test) = tiny_model();
    let compiled = model.compile(test.view(), &FheOptions::default()).unwrap();
    let bytes = compiled.to_bytes().unwrap();
    let read = CompiledModel::from_bytes(&bytes).unwrap();
    assert_eq!(read.fingerprint(), compiled.fingerprint());
    assert_eq!(read.parameters(), compiled.parameters());
    assert_eq!(read.plan().lookups.len(), compiled.plan().lookups.len());
    assert_eq!(read.range_report(), compiled.range_report());
    assert_eq!(
        read.to_bytes().unwrap(),
        bytes,
        "a re-written file is identical"
    );
    assert_eq!(
        read.predict(test.view(), Mode::Clear).unwrap(),
        compiled.predict(test.view(), Mode::Clear).unwrap()
    );
    // A key pair made for the original runs on a server of the file read back.
    let (client, eval) = compiled.client_spec().keygen().unwrap();
    let server = read.server(eval).unwrap();
    for i in 0..3 {
        let q = client.quantize(test.row(i)).unwrap();
        let out = server.run(&client.encrypt(test.row(i)).unwrap()).unwrap();
        assert_eq!(
            client.decrypt_int(&out).unwrap(),
            read.clear_int(&q).unwrap()
        );
    }
}

#[test]
fn the_input_range_and_the_set_are_part_of_the_definition() {
    let test = digits().unwrap().test.images;
    let options = FheOptions {
        parameters: ParameterChoice::Vetted(4),
        ..FheOptions::default()
    };
    let wide = shipped_seed().compile(test.view(), &options).unwrap();
    let narrow = shipped_seed()
        .restrict_inputs(0, 3)
        .unwrap()
        .compile(test.view(), &options)
        .unwrap();
    assert_ne!(wide.fingerprint(), narrow.fingerprint());
    for compiled in [&wide, &narrow] {
        let read = CompiledModel::from_bytes(&compiled.to_bytes().unwrap()).unwrap();
        assert_eq!(read.fingerprint(), compiled.fingerprint());
        assert_eq!(read.range_report(), compiled.range_report());
    }
    // Compiling the same definition twice gives the same fingerprint.
    let again = shipped_seed().compile(test.view(), &options).unwrap();
    assert_eq!(again.fingerprint(), wide.fingerprint());
}

#[test]
fn a_damaged_or_altered_file_is_refused() {
    let (model, test) = tiny_model();
    let compiled = model.compile(test.view(), &FheOptions::default()).unwrap();
    let bytes = compiled.to_bytes().unwrap();
    assert!(matches!(
        CompiledModel::from_bytes(&bytes[..bytes.len() - 1]),
        Err(FheError::Truncated { .. })
    ));
    let mut flipped = bytes.clone();
    let at = bytes.len() / 2;
    flipped[at] ^= 1;
    assert!(matches!(
        CompiledModel::from_bytes(&flipped),
        Err(FheError::Checksum)
    ));
    // Another kind of blob.
    let spec = compiled.client_spec().to_bytes().unwrap();
    assert!(matches!(
        CompiledModel::from_bytes(&spec),
        Err(FheError::WrongKind { .. })
    ));
    // A file whose envelope names another model: the definition does not hash to it.
    let mut other = bytes.clone();
    other[16] ^= 0xff; // first byte of the envelope's fingerprint
    match CompiledModel::from_bytes(&other) {
        Err(FheError::WrongModel { .. }) => {}
        other => panic!("{:?}", other.map(|c| c.fingerprint())),
    }
}
