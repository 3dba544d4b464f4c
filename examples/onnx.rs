//! Imports a quantization-aware network exported to ONNX (`tools/onnx_export.py`), prints it
//! in the DSL's spelling (to paste into `fhe_net!`) with its bit-width report, and, when it
//! takes the 64 features of the 8×8 digits, its Clear accuracy on their test split.
//!
//!     cargo run --release --example onnx -- models/cnn_brevitas.onnx

use fhe_nn::datasets::digits;
use fhe_nn::onnx::OnnxModel;
use fhe_nn::QuantModel;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: onnx FILE.onnx");
        std::process::exit(2);
    };
    if let Err(e) = run(&path) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let imported = OnnxModel::open(path)?;
    println!("fhe_net!(<{}>)\n", imported.spelling());
    println!("{}", imported.architecture.report());
    let model = QuantModel::from_tensors(&imported.architecture, &imported.weights)?;
    if model.input_features() == 64 {
        let test = digits()?.test;
        let outputs = model.predict_clear(test.images.view())?;
        let predicted = fhe_nn::argmax_rows(outputs.view());
        let right = predicted
            .iter()
            .zip(&test.labels)
            .filter(|(p, l)| p == l)
            .count();
        println!(
            "clear: accuracy {:.4} on {} test digits",
            right as f64 / test.labels.len() as f64,
            test.labels.len()
        );
    }
    Ok(())
}
