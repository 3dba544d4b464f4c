//! The library's modules import one way: architecture → model → parameters → compile →
//! runtime → typed API. A module may name a module of its own layer or of a layer below,
//! never one above; inside the library, items are named by their module's path, not by the
//! crate root's re-exports (which would hide the layer they come from).
//!
//! Run alone: `cargo test --release --workspace --test layers`.

use std::path::{Path, PathBuf};

/// The layers, lowest first, each with the crate's top-level modules it holds.
const LAYERS: [(&str, &[&str]); 6] = [
    (
        "architecture",
        &[
            "arch", "fhe_net", "ndarray", "error", "rng", "npz", "tensors", "format",
        ],
    ),
    (
        "model",
        &[
            "architecture",
            "model",
            "clear",
            "train",
            "onnx",
            "datasets",
        ],
    ),
    ("parameters", &["params"]),
    ("compile", &["compile", "simulate"]),
    ("runtime", &["fhe"]),
    ("typed API", &["typed", "lib"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// The top-level module a source file belongs to (`lib` for the crate root).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_string()
}

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// Every `crate::name` in the code of `text` (comments skipped), with its line number.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut paths = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().last();
            rest = &rest[at + "crate::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `fhe_nn_crate::`, not this crate
            }
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a, b::c}`: each first segment.
                let inner = group.split('}').next().unwrap_or("");
                for part in inner.split(',') {
                    let name = part.trim().split("::").next().unwrap_or("").trim();
                    if !name.is_empty() {
                        paths.push((number + 1, name.to_string()));
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                paths.push((number + 1, name));
            }
        }
    }
    paths
}

#[test]
fn the_library_imports_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fhe-nn/src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let Some(own) = layer_of(&module) else {
            violations.push(format!(
                "{}: module `{module}` has no layer",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, name) in crate_paths(&text) {
            let at = format!("{}:{line}", file.strip_prefix(&src).unwrap().display());
            match layer_of(&name) {
                Some(other) if other > own => violations.push(format!(
                    "{at}: `{module}` ({}) imports `{name}` ({}), a layer above",
                    LAYERS[own].0, LAYERS[other].0
                )),
                Some(_) => {}
                None if own < layer_of("lib").unwrap() => violations.push(format!(
                    "{at}: `crate::{name}` is a crate-root re-export: name its module"
                )),
                None => {}
            }
        }
    }
    assert!(
        files.len() > 30,
        "read only {} files of {}",
        files.len(),
        src.display()
    );
    assert!(
        violations.is_empty(),
        "{} imports against the layering:\n{}",
        violations.len(),
        violations.join("\n")
    );
}

#[test]
fn the_check_sees_imports() {
    let found = crate_paths(
        "use crate::{model::QuantModel, CompiledModel};\n// crate::fhe in a comment\nlet x = crate::params::vetted(2); // crate::typed",
    );
    let names: Vec<&str> = found.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["model", "CompiledModel", "params"]);
    assert_eq!(found[2].0, 3);
}
