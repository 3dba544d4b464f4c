//! ONNX import: a Brevitas CNN exported both ways (safetensors by `tools/brevitas_export.py`,
//! QCDQ ONNX by `tools/onnx_export.py`) gives identical Clear outputs, and so does a residual
//! network with a max pool (`tools/resnet_fixture.py`); a network written with
//! functional activations and a BatchNorm imports with the BatchNorm folded and predicts as
//! Brevitas does; broken or unsupported files give named errors, never a panic.

mod common;

use common::Seed;
use fhe_nn::datasets::{digits, Cnn};
use fhe_nn::onnx::{OnnxError, OnnxModel};
use fhe_nn::rng::SplitMix64;
use fhe_nn::tensors::{TensorFile, Values};
use fhe_nn::{argmax_rows, QuantModel};

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(root().join(path)).unwrap()
}

#[test]
fn onnx_and_safetensors_exports_give_identical_clear_outputs() {
    let bytes = read("models/cnn_brevitas.onnx");
    let imported = OnnxModel::read(&bytes).unwrap();
    assert_eq!(imported.architecture.layers(), Cnn::architecture().layers());
    let from_onnx = QuantModel::from_onnx(Cnn::architecture(), &bytes).unwrap();
    let from_safetensors = QuantModel::load(
        Cnn::architecture(),
        root().join("models/cnn_brevitas.safetensors"),
    )
    .unwrap();
    let test = digits().unwrap().test.images;
    let a = from_onnx.predict_clear(test.view()).unwrap();
    let b = from_safetensors.predict_clear(test.view()).unwrap();
    assert_eq!(a, b);
    // And so Clear equals Concrete ML's fhe="disable" on this network (tests/concrete_ml.rs).
    let err = QuantModel::from_onnx(Seed::architecture(), &bytes).unwrap_err();
    assert!(matches!(err, OnnxError::Mismatch { .. }), "{err}");
}

#[test]
fn a_residual_network_with_max_pooling_imports_with_its_fork_and_join() {
    use fhe_nn::datasets::Resnet;
    // tools/resnet_fixture.py: cml_resnet.py's network, its skip connection re-quantized
    // by the shared quantizer, as Brevitas exports it (the branch's nodes come between the
    // chain's).
    let bytes = read("models/resnet_brevitas.onnx");
    let imported = OnnxModel::read(&bytes).unwrap();
    assert_eq!(
        imported.architecture.layers(),
        Resnet::architecture().layers()
    );
    let from_onnx = QuantModel::from_onnx(Resnet::architecture(), &bytes).unwrap();
    let from_safetensors = QuantModel::load(
        Resnet::architecture(),
        root().join("models/resnet_brevitas.safetensors"),
    )
    .unwrap();
    let test = digits().unwrap().test.images;
    // The same tensors, moved past the inserted Fork: the same Clear outputs (which equal
    // Concrete ML's, tests/concrete_ml.rs).
    assert_eq!(
        from_onnx.predict_clear(test.view()).unwrap(),
        from_safetensors.predict_clear(test.view()).unwrap()
    );
}

#[test]
fn functional_activations_and_batch_norm_import() {
    let imported = OnnxModel::read(&read("tests/fixtures/onnx_functional_bn.onnx")).unwrap();
    assert_eq!(
        imported.spelling(),
        "QuantIdentity(3), QuantConv2d(1, 8, 3, input = (8, 8), w = 3), ReLU, QuantIdentity(3), \
         QuantConv2d(8, 16, 3, stride = 2, w = 3), ReLU, QuantIdentity(3), Flatten, \
         QuantLinear(64, 10, w = 3)"
    );
    // The BatchNorm folded into per-channel scales of the first convolution.
    assert_eq!(
        imported.weights.tensors["layers.1.weight_scale"].shape,
        vec![8]
    );
    let model = QuantModel::from_tensors(&imported.architecture, &imported.weights).unwrap();
    let fixture =
        TensorFile::read(&root().join("tests/fixtures/onnx_functional_bn.safetensors")).unwrap();
    let floats = |name: &str| match &fixture.tensors[name].values {
        Values::Float(v) => v.clone(),
        Values::Int(v) => v.iter().map(|&x| x as f64).collect(),
    };
    let inputs = ndarray::Array2::from_shape_vec((360, 64), floats("inputs")).unwrap();
    let brevitas = ndarray::Array2::from_shape_vec((360, 10), floats("outputs")).unwrap();
    let ours = argmax_rows(model.predict_clear(inputs.view()).unwrap().view());
    let theirs = argmax_rows(brevitas.view());
    let agree = ours.iter().zip(&theirs).filter(|(a, b)| a == b).count();
    eprintln!("argmax agreement with Brevitas: {agree}/360");
    assert!(agree >= 356, "{agree}/360 predictions agree with Brevitas");
}

#[test]
fn unsupported_nodes_and_broken_files_are_named_errors() {
    match OnnxModel::read(&read("tests/fixtures/onnx_maxpool.onnx")) {
        Err(OnnxError::UnsupportedNode { op, name, .. }) => {
            assert_eq!(op, "MaxPool");
            assert!(name.contains("MaxPool"), "{name}");
        }
        other => panic!("{other:?}"),
    }
    match OnnxModel::read(&read("tests/fixtures/onnx_bad_tensor.onnx")) {
        Err(OnnxError::BadTensor { name, why }) => {
            assert_eq!(name, "w");
            assert!(why.contains("8 bytes"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        OnnxModel::read(b"not an onnx file"),
        Err(OnnxError::Malformed(_))
    ));
    // Every truncation, and random byte changes: an error or a model, never a panic (a
    // chain, and a graph with a branch and a max pool).
    for path in ["models/cnn_brevitas.onnx", "models/resnet_brevitas.onnx"] {
        let bytes = read(path);
        for len in (0..bytes.len()).step_by(7) {
            assert!(
                OnnxModel::read(&bytes[..len]).is_err(),
                "{path} truncated to {len}"
            );
        }
        let mut rng = SplitMix64::new(7);
        let mut refused = 0;
        for _ in 0..2000 {
            let mut mutated = bytes.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(mutated.len() as u64) as usize;
                mutated[at] = rng.next_u64() as u8;
            }
            refused += OnnxModel::read(&mutated).is_err() as usize;
        }
        eprintln!("{path}: {refused} of 2000 mutated files refused");
        assert!(
            refused > 1000,
            "{path}: only {refused} of 2000 mutated files refused"
        );
    }
}

/// Protobuf encoding, enough to write hostile graphs.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn field_bytes(number: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint(number << 3 | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn field_varint(number: u64, v: u64, out: &mut Vec<u8>) {
    varint(number << 3, out);
    varint(v, out);
}

/// A model of `graph` (its nodes and initializers), with a data input `x` and an output `y`.
fn with_input_and_output(mut graph: Vec<u8>) -> Vec<u8> {
    for (number, name) in [(11, "x"), (12, "y")] {
        let mut info = Vec::new();
        field_bytes(1, name.as_bytes(), &mut info);
        field_bytes(number, &info, &mut graph);
    }
    let mut model = Vec::new();
    field_bytes(7, &graph, &mut model);
    field_bytes(8, &[], &mut model);
    model
}

/// A model whose graph has an int8 initializer `w` of `elements` values, `nodes` nodes of
/// type `op` each reading the previous one's output (`w` first), a data input `x` and an
/// output `y`.
fn chained_constants(elements: usize, nodes: usize, op: &str) -> Vec<u8> {
    let mut graph = Vec::new();
    for i in 0..nodes {
        let mut node = Vec::new();
        let input = if i == 0 {
            "w".to_string()
        } else {
            format!("c{}", i - 1)
        };
        field_bytes(1, input.as_bytes(), &mut node);
        field_bytes(2, format!("c{i}").as_bytes(), &mut node);
        field_bytes(4, op.as_bytes(), &mut node);
        field_bytes(1, &node, &mut graph);
    }
    let mut tensor = Vec::new();
    field_varint(1, elements as u64, &mut tensor);
    field_varint(2, 3, &mut tensor); // int8
    field_bytes(8, b"w", &mut tensor);
    field_bytes(9, &vec![1u8; elements], &mut tensor);
    field_bytes(5, &tensor, &mut graph);
    with_input_and_output(graph)
}

#[test]
fn small_files_cannot_make_the_import_hold_much_more_than_they_carry() {
    // 2,000 `Identity` copies of a 100,000-value constant: 200 kB of file, 1.6 GB of f64
    // copies if each were kept. Refused once the copies pass 4x the graph's constants.
    let file = chained_constants(100_000, 2_000, "Identity");
    assert!(file.len() < 250_000, "{}", file.len());
    let start = std::time::Instant::now();
    match OnnxModel::read(&file) {
        Err(OnnxError::Malformed(why)) => assert!(why.contains("derived"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    // A graph of more nodes than any network needs is refused as it is read.
    match OnnxModel::read(&chained_constants(1, 20_000, "Identity")) {
        Err(OnnxError::Malformed(why)) => assert!(why.contains("nodes"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// An ONNX tensor `name` of `dims` with raw little-endian data of type `data_type`.
fn tensor_bytes(name: &str, dims: &[u64], data_type: u64, raw: &[u8]) -> Vec<u8> {
    let mut tensor = Vec::new();
    for &d in dims {
        field_varint(1, d, &mut tensor);
    }
    field_varint(2, data_type, &mut tensor);
    field_bytes(8, name.as_bytes(), &mut tensor);
    field_bytes(9, raw, &mut tensor);
    tensor
}

/// A model of one quantized weight `w` of shape `dims` (int8, no values unless the shape
/// holds some), dequantized and read by `op` (`Gemm`, `MatMul` or `Conv`) on the input `x`.
fn one_weight_model(dims: &[u64], op: &str) -> Vec<u8> {
    let elements: u64 = dims.iter().product();
    let mut graph = Vec::new();
    for (inputs, output, op) in [
        (&["w", "s", "z"][..], "dq", "DequantizeLinear"),
        (&["x", "dq"][..], "y", op),
    ] {
        let mut node = Vec::new();
        for input in inputs {
            field_bytes(1, input.as_bytes(), &mut node);
        }
        field_bytes(2, output.as_bytes(), &mut node);
        field_bytes(4, op.as_bytes(), &mut node);
        field_bytes(1, &node, &mut graph);
    }
    let initializers = [
        tensor_bytes("w", dims, 3, &vec![1u8; elements as usize]),
        tensor_bytes("s", &[], 1, &0.5f32.to_le_bytes()),
        tensor_bytes("z", &[], 3, &[0]),
    ];
    for t in initializers {
        field_bytes(5, &t, &mut graph);
    }
    with_input_and_output(graph)
}

#[test]
fn a_weight_with_a_zero_dimension_is_refused_before_anything_is_sized_by_it() {
    // Each holds no value, but its other dimension once sized the per-output scales:
    // 2^40 aborted on allocation, 2^62 overflowed the capacity.
    for (dims, op) in [
        (&[1u64 << 40, 0][..], "Gemm"),
        (&[1 << 62, 0][..], "Gemm"),
        (&[0, 1 << 40][..], "MatMul"),
        (&[1 << 40, 1, 0, 0][..], "Conv"),
    ] {
        let file = one_weight_model(dims, op);
        assert!(file.len() < 600, "{}", file.len());
        match OnnxModel::read(&file) {
            Err(OnnxError::UnsupportedNode { why, .. }) => {
                assert!(why.contains("empty weight"), "{op} {dims:?}: {why}")
            }
            other => panic!("{op} {dims:?}: {other:?}"),
        }
    }
}

/// A model `x -> op -> y` whose node has the float attribute `alpha`.
fn one_activation_model(op: &str, alpha: f32) -> Vec<u8> {
    let mut graph = Vec::new();
    let mut node = Vec::new();
    field_bytes(1, b"x", &mut node);
    field_bytes(2, b"y", &mut node);
    field_bytes(4, op.as_bytes(), &mut node);
    let mut attribute = Vec::new();
    field_bytes(1, b"alpha", &mut attribute);
    varint(2 << 3 | 5, &mut attribute); // f: a fixed 32-bit float
    attribute.extend_from_slice(&alpha.to_le_bytes());
    field_varint(20, 1, &mut attribute); // type FLOAT
    field_bytes(5, &attribute, &mut node);
    field_bytes(1, &node, &mut graph);
    with_input_and_output(graph)
}

#[test]
fn activations_with_non_finite_parameters_are_refused_at_their_node() {
    // They used to import and compile, and then the compiled file could not be read back.
    for op in ["LeakyRelu", "Elu"] {
        for alpha in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            match OnnxModel::read(&one_activation_model(op, alpha)) {
                Err(OnnxError::UnsupportedNode { op: found, why, .. }) => {
                    assert_eq!(found, op);
                    assert!(why.contains("finite"), "{op} alpha {alpha}: {why}");
                }
                other => panic!("{op} alpha {alpha}: {other:?}"),
            }
        }
        // A finite one passes the node (and the graph fails later: it has no weighted layer).
        let finite = OnnxModel::read(&one_activation_model(op, 0.5));
        assert!(
            !matches!(&finite, Err(OnnxError::UnsupportedNode { op: found, .. }) if found == op),
            "{op} alpha 0.5: {finite:?}"
        );
    }
}
