//! Every kind of bad weights is refused with a named error, never a panic.

mod common;

use common::Seed;
use fhe_nn::tensors::ARCHITECTURE_KEY;
use fhe_nn::tensors::{Tensor, TensorFile, Values};
use fhe_nn::{LoadError, QuantModel};

fn seed_file() -> TensorFile {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/seed_brevitas.safetensors");
    TensorFile::read(&path).unwrap()
}

fn load(file: &TensorFile) -> Result<QuantModel, LoadError> {
    QuantModel::from_tensors(Seed::architecture(), file)
}

fn edit(name: &str, f: impl FnOnce(&mut Tensor)) -> TensorFile {
    let mut file = seed_file();
    f(file.tensors.get_mut(name).unwrap());
    file
}

#[test]
fn the_shipped_file_loads() {
    let model = load(&seed_file()).unwrap();
    assert_eq!(model.output_features(), 10);
    assert_eq!(model.input_features(), 64);
}

#[test]
fn missing_tensor() {
    let mut file = seed_file();
    file.tensors.remove("layers.4.bias");
    let err = load(&file).unwrap_err();
    assert!(
        matches!(&err, LoadError::MissingTensor { layer: 5, tensor, .. } if tensor == "layers.4.bias"),
        "{err}"
    );
    assert!(
        err.to_string().contains("QuantLinear(30, 30, w = 3)"),
        "{err}"
    );
}

#[test]
fn extra_tensor() {
    let mut file = seed_file();
    file.tensors
        .insert("layers.2.weight".into(), Tensor::int(vec![1], vec![1]));
    assert!(
        matches!(load(&file).unwrap_err(), LoadError::UnexpectedTensor { tensor } if tensor == "layers.2.weight")
    );
}

#[test]
fn wrong_shape() {
    let file = edit("layers.1.weight", |t| t.shape = vec![64, 30]);
    assert!(
        matches!(load(&file).unwrap_err(), LoadError::ShapeMismatch { tensor, .. } if tensor == "layers.1.weight")
    );
    let file = edit("layers.7.bias", |t| {
        t.shape = vec![9];
        t.values = Values::Float(vec![0.0; 9]);
    });
    assert!(
        matches!(load(&file).unwrap_err(), LoadError::ShapeMismatch { tensor, .. } if tensor == "layers.7.bias")
    );
}

#[test]
fn weight_wider_than_declared() {
    let file = edit("layers.4.weight", |t| {
        if let Values::Int(v) = &mut t.values {
            v[17] = 4;
        }
    });
    let err = load(&file).unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::WeightOutOfRange {
                bits: 3,
                value: 4,
                index: 17,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn non_finite_and_non_integer_values() {
    let file = edit("layers.1.bias", |t| {
        if let Values::Float(v) = &mut t.values {
            v[3] = f64::NAN;
        }
    });
    assert!(matches!(
        load(&file).unwrap_err(),
        LoadError::NonFinite { index: 3, .. }
    ));
    let file = edit("layers.1.weight", |t| {
        let Values::Int(v) = &t.values else {
            unreachable!()
        };
        let mut f: Vec<f64> = v.iter().map(|&x| x as f64).collect();
        f[5] = 0.5;
        t.values = Values::Float(f);
    });
    assert!(matches!(
        load(&file).unwrap_err(),
        LoadError::NotInteger { index: 5, .. }
    ));
    let file = edit("layers.1.weight", |t| {
        let Values::Int(v) = &t.values else {
            unreachable!()
        };
        let mut f: Vec<f64> = v.iter().map(|&x| x as f64).collect();
        f[0] = f64::INFINITY;
        t.values = Values::Float(f);
    });
    assert!(matches!(
        load(&file).unwrap_err(),
        LoadError::NonFinite { index: 0, .. }
    ));
}

#[test]
fn bad_scales_and_zero_points() {
    let file = edit("layers.3.scale", |t| t.values = Values::Float(vec![-1.0]));
    assert!(matches!(
        load(&file).unwrap_err(),
        LoadError::NonPositiveScale { .. }
    ));
    // A scale that would make Clear's outputs infinite, or one that vanishes.
    for (tensor, value) in [("layers.1.weight_scale", 1e308), ("layers.3.scale", 1e-300)] {
        let file = edit(tensor, |t| {
            let n = t.shape.iter().product::<usize>();
            t.values = Values::Float(vec![value; n]);
        });
        match load(&file).unwrap_err() {
            LoadError::ScaleOutOfRange { tensor: name, .. } => assert_eq!(name, tensor),
            e => panic!("{tensor} = {value}: {e}"),
        }
    }
    let file = edit("layers.0.zero_point", |t| {
        t.values = Values::Float(vec![2.0])
    });
    assert!(matches!(
        load(&file).unwrap_err(),
        LoadError::ZeroPoint { .. }
    ));
}

#[test]
fn architecture_mismatch() {
    let mut file = seed_file();
    file.metadata.insert(
        ARCHITECTURE_KEY.into(),
        "QuantIdentity(3), QuantLinear(64, 10, w = 3)".into(),
    );
    let err = load(&file).unwrap_err();
    assert!(
        matches!(err, LoadError::ArchitectureMismatch { .. }),
        "{err}"
    );
}

#[test]
fn truncated_and_corrupt_files() {
    let bytes = seed_file().to_safetensors().unwrap();
    for cut in [0, 7, 100, bytes.len() / 2, bytes.len() - 1] {
        let err = TensorFile::from_safetensors(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(err, LoadError::Corrupt { .. }),
            "cut at {cut}: {err}"
        );
    }
    let mut garbage = bytes.clone();
    garbage[9] ^= 0xff;
    assert!(TensorFile::from_safetensors(&garbage).is_err());
    assert!(matches!(
        TensorFile::from_npz(b"PK\x03\x04 not a zip").unwrap_err(),
        LoadError::Corrupt { .. }
    ));
    let err = QuantModel::load(Seed::architecture(), "/nonexistent/model.safetensors").unwrap_err();
    assert!(matches!(err, LoadError::Io { .. }));
}

#[test]
fn safetensors_round_trip_and_npz() {
    let file = seed_file();
    let again = TensorFile::from_safetensors(&file.to_safetensors().unwrap()).unwrap();
    assert_eq!(load(&again).unwrap(), load(&file).unwrap());

    // The same tensors in an .npz, as numpy.savez writes them.
    let dir = std::env::temp_dir().join(format!("fhe-nn-npz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("seed.npz");
    std::fs::write(&path, common::npz_bytes(&file)).unwrap();
    let from_npz = QuantModel::load(Seed::architecture(), &path).unwrap();
    assert_eq!(from_npz, load(&file).unwrap());
}

/// An `.npz` whose one entry's header claims `shape`, followed by `data` bytes.
fn forged_npz(shape: &str, data: usize) -> Vec<u8> {
    use std::io::Write;
    let mut header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}");
    // As numpy writes it: padded with spaces so the data starts 64-byte aligned, then '\n'.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    npy.extend_from_slice(&(header.len() as u16).to_le_bytes());
    npy.extend_from_slice(header.as_bytes());
    npy.extend(std::iter::repeat_n(0u8, data));
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("layers.1.weight.npy", options).unwrap();
    zip.write_all(&npy).unwrap();
    zip.finish().unwrap().into_inner()
}

#[test]
fn a_forged_npy_shape_is_refused_before_allocating() {
    // Reproducer of the 800 GB allocation: a valid zip (checksums resealed) whose npy header
    // claims 99,999,999,999 elements over 48 bytes of data.
    let bytes = forged_npz("(99999999999,)", 48);
    let err = TensorFile::from_npz(&bytes).unwrap_err();
    assert!(
        matches!(err, LoadError::Corrupt { format: "npz", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("799999999992 bytes"), "{err}");
    // Also through loading a model from a file.
    let dir = std::env::temp_dir().join(format!("fhe-nn-forged-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("forged.npz");
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        QuantModel::load(Seed::architecture(), &path),
        Err(LoadError::Corrupt { .. })
    ));
    // A consistent entry still reads.
    let fine = TensorFile::from_npz(&forged_npz("(6,)", 48)).unwrap();
    assert_eq!(fine.tensors["layers.1.weight"].len(), 6);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn weights_whose_exact_tables_would_not_fit_are_refused_before_they_are_built() {
    use fhe_nn::arch::activation::Activation;
    use fhe_nn::arch::layer::{Layer, WeightOptions};
    use fhe_nn::Architecture;
    // 16-bit weights on 64 inputs of 8 bits, read rounded to 8 bits under FHE: Clear's exact
    // table of each hidden neuron would span about 2^28 accumulator values (2 GiB of table
    // for one neuron).
    let output_layer = WeightOptions {
        weight_bits: 16,
        bias: false,
        active: None,
        round: None,
        exact: false,
        acc: None,
    };
    let options = WeightOptions {
        round: Some(8),
        ..output_layer
    };
    let layers = vec![
        Layer::QuantIdentity {
            bits: 8,
            signed: true,
        },
        Layer::QuantLinear {
            in_features: 64,
            out_features: 32,
            options,
        },
        Layer::Activation(Activation::ReLU),
        Layer::QuantIdentity {
            bits: 8,
            signed: true,
        },
        Layer::QuantLinear {
            in_features: 32,
            out_features: 10,
            options: output_layer,
        },
    ];
    let arch = match Architecture::new("wide", layers) {
        Ok(arch) => arch,
        Err(e) => panic!("{e}"),
    };
    let mut file = TensorFile::default();
    let scalar = |v: f64| Tensor::float(vec![], vec![v]);
    file.tensors.insert("layers.0.scale".into(), scalar(1.0));
    file.tensors.insert(
        "layers.1.weight".into(),
        Tensor::int(vec![32, 64], vec![32767; 32 * 64]),
    );
    file.tensors
        .insert("layers.1.weight_scale".into(), scalar(1.0));
    file.tensors.insert("layers.3.scale".into(), scalar(1.0));
    file.tensors.insert(
        "layers.4.weight".into(),
        Tensor::int(vec![10, 32], vec![1; 320]),
    );
    file.tensors
        .insert("layers.4.weight_scale".into(), scalar(1.0));
    let err = QuantModel::from_tensors(&arch, &file).unwrap_err();
    assert!(
        matches!(err, LoadError::TablesTooLarge { layer: 2, .. }),
        "{err}"
    );
}
