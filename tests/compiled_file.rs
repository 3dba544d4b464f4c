//! A compiled model is a file: written, read back (as a server on another machine would),
//! it has the same tables and the same fingerprint, so keys made for one work with the
//! other; a damaged or altered file is refused.

mod common;

use common::{shipped_seed, tiny_model};
use fhe_nn::datasets::digits;
use fhe_nn::fhe::FheError;
use fhe_nn::format::DecodeError;
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
        Err(FheError::Format(DecodeError::Truncated { .. }))
    ));
    let mut flipped = bytes.clone();
    let at = bytes.len() / 2;
    flipped[at] ^= 1;
    assert!(matches!(
        CompiledModel::from_bytes(&flipped),
        Err(FheError::Format(DecodeError::Checksum))
    ));
    // Another kind of blob.
    let spec = compiled.client_spec().to_bytes().unwrap();
    assert!(matches!(
        CompiledModel::from_bytes(&spec),
        Err(FheError::Format(DecodeError::WrongKind { .. }))
    ));
    // A file whose envelope names another model: the definition does not hash to it.
    let mut other = bytes.clone();
    other[16] ^= 0xff; // first byte of the envelope's fingerprint
    match CompiledModel::from_bytes(&other) {
        Err(FheError::Format(DecodeError::Altered { .. })) => {}
        other => panic!("{:?}", other.map(|c| c.fingerprint())),
    }
}

/// FNV-1a, 64 bits, as the envelope's checksum: what an attacker recomputes after an edit.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `file` with `from` replaced by `to` (of the same length) in its payload and the checksum
/// recomputed, as someone who edits a file on purpose would do.
fn resealed_with(file: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = file
        .windows(from.len())
        .position(|w| w == from)
        .expect("the text to edit");
    let mut edited = file.to_vec();
    edited[at..at + to.len()].copy_from_slice(to);
    const HEADER: usize = 64;
    let sum = fnv1a(&edited[HEADER..]);
    edited[56..64].copy_from_slice(&sum.to_le_bytes());
    edited
}

#[test]
fn an_edited_plan_is_refused_even_with_its_checksum_recomputed() {
    let (model, test) = tiny_model();
    let compiled = model.compile(test.view(), &FheOptions::default()).unwrap();
    let bytes = compiled.to_bytes().unwrap();
    // The plan's figures are JSON inside the payload: make the global error figure look
    // a thousand times smaller than it is.
    let json = serde_json::to_string(compiled.plan()).unwrap();
    let figure = json
        .split("\"global_p_error\":")
        .nth(1)
        .and_then(|rest| rest.split([',', '}']).next())
        .unwrap()
        .to_string();
    let exponent = figure.rsplit_once("e-").expect("a figure in e notation").1;
    let smaller = format!("{}", exponent.parse::<u32>().unwrap() + 3);
    assert_eq!(smaller.len(), exponent.len(), "{figure}");
    let edited_figure = figure.replace(&format!("e-{exponent}"), &format!("e-{smaller}"));
    let edited = resealed_with(&bytes, figure.as_bytes(), edited_figure.as_bytes());
    match CompiledModel::from_bytes(&edited) {
        Err(FheError::Format(DecodeError::Altered { kind })) => assert_eq!(kind, "compiled model"),
        other => panic!(
            "an edited plan: {:?}",
            other.map(|c| c.plan().global_p_error)
        ),
    }
    // The file as written reads back.
    CompiledModel::from_bytes(&bytes).unwrap();
}
