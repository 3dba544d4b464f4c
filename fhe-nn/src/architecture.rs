//! A checked network architecture: layers plus their bit-width analysis.

use std::borrow::Cow;
use std::fmt;

use crate::arch::analysis::{analyze, ArchError, LayerAnalysis, Rounding, Summary, TensorKind};
use crate::arch::geometry::Window;
use crate::arch::layer::Layer;
use crate::arch::limits::{MAX_EXACT_LOOKUP_BITS, MAX_LOOKUP_BITS};

/// A network whose every lookup fits what FHE can run. Built by `fhe_net!` at compile
/// time, or by [`Architecture::new`] at run time with the same checks.
#[derive(Clone, Debug, PartialEq)]
pub struct Architecture {
    name: Cow<'static, str>,
    layers: Cow<'static, [Layer]>,
    analysis: Cow<'static, [LayerAnalysis]>,
    summary: Summary,
    valid: bool,
}

/// Every reason a network was rejected.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("network `{name}` is rejected:{}", .errors.iter().map(|e| format!("\n- {}", describe(e, .layers))).collect::<String>())]
pub struct ArchErrors {
    pub name: String,
    pub layers: Vec<Layer>,
    pub errors: Vec<ArchError>,
}

fn describe(e: &ArchError, layers: &[Layer]) -> String {
    match e.layer.and_then(|i| layers.get(i).map(|l| (i, l))) {
        Some((i, l)) => format!("layer {} `{l}`: {e}", i + 1),
        None => e.to_string(),
    }
}

impl Architecture {
    /// Checks `layers` exactly as `fhe_net!` does, at run time.
    pub fn new(name: impl Into<String>, layers: Vec<Layer>) -> Result<Architecture, ArchErrors> {
        let name = name.into();
        match analyze(&layers) {
            Ok(a) => Ok(Architecture {
                name: Cow::Owned(name),
                layers: Cow::Owned(layers),
                analysis: Cow::Owned(a.layers),
                summary: a.summary,
                valid: true,
            }),
            Err(errors) => Err(ArchErrors {
                name,
                layers,
                errors,
            }),
        }
    }

    #[doc(hidden)]
    /// Used by `fhe_net!` for a network it has checked.
    pub const fn __from_checked(
        name: &'static str,
        layers: &'static [Layer],
        analysis: &'static [LayerAnalysis],
        summary: Summary,
    ) -> Architecture {
        Architecture {
            name: Cow::Borrowed(name),
            layers: Cow::Borrowed(layers),
            analysis: Cow::Borrowed(analysis),
            summary,
            valid: true,
        }
    }

    #[doc(hidden)]
    /// Placeholder emitted next to `fhe_net!`'s compile errors so they do not cascade.
    pub const fn __invalid(name: &'static str) -> Architecture {
        Architecture {
            name: Cow::Borrowed(name),
            layers: Cow::Borrowed(&[]),
            analysis: Cow::Borrowed(&[]),
            summary: Summary {
                lookups: 0,
                max_lookup_bits: 0,
                max_integer_bits: 0,
                rounded_lookups: 0,
                outputs: 0,
            },
            valid: false,
        }
    }

    /// The network's name (the struct name of the named form).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The declared layers.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The analysis of each layer's output, index for index with [`layers`](Self::layers).
    pub fn analysis(&self) -> &[LayerAnalysis] {
        &self.analysis
    }

    /// Where sliding-window layer `i` (convolution or pooling) reads its input image.
    pub fn window(&self, i: usize) -> Option<Window> {
        Window::of_layer(&self.layers, &self.analysis, i)
    }

    /// The architecture as recorded in weight files (metadata key
    /// [`ARCHITECTURE_KEY`](crate::tensors::ARCHITECTURE_KEY)): its layers in DSL spelling,
    /// without declared `acc` bounds (a promise about the weights, checked when they load).
    pub fn signature(&self) -> String {
        self.layers
            .iter()
            .map(|l| l.without_declared_bound().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Network-wide figures.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Table lookups per inference.
    pub fn lookups(&self) -> usize {
        self.summary.lookups
    }

    /// Widest lookup precision in bits.
    pub fn max_lookup_bits(&self) -> u32 {
        self.summary.max_lookup_bits
    }

    /// False only for the placeholder that accompanies compile errors.
    pub fn is_valid(&self) -> bool {
        self.valid
    }

    /// The bit-width and range report, in the spirit of Concrete ML's
    /// `bitwidth_and_range_report`.
    pub fn report(&self) -> Report<'_> {
        Report { arch: self }
    }
}

/// Printable per-layer ranges, widths and lookups of an [`Architecture`].
pub struct Report<'a> {
    arch: &'a Architecture,
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.arch;
        let s = &a.summary;
        writeln!(
            f,
            "network `{}`: {} layers, {} lookups per inference ({} rounded), widest lookup {} bits, widest integer {} bits, {} outputs",
            a.name,
            a.layers.len(),
            s.lookups,
            s.rounded_lookups,
            s.max_lookup_bits,
            s.max_integer_bits,
            s.outputs
        )?;
        writeln!(
            f,
            "limits: {MAX_LOOKUP_BITS} bits per lookup without rounding, {MAX_EXACT_LOOKUP_BITS} bits per exact lookup"
        )?;
        writeln!(
            f,
            "{:>3}  {:<44} {:>10}  {:<13} {:<24} {:>4}  lookups",
            "#", "layer", "shape", "holds", "range", "bits"
        )?;
        for (i, (layer, an)) in a.layers.iter().zip(a.analysis.iter()).enumerate() {
            let holds = match an.kind {
                TensorKind::Real => "real",
                TensorKind::Quantized => "quantized",
                TensorKind::Accumulator => "accumulator",
                TensorKind::Unknown => "?",
            };
            let range = an
                .range
                .map(|r| r.to_string())
                .unwrap_or_else(|| "-".into());
            let bits = an
                .range
                .map(|r| r.bits().to_string())
                .unwrap_or_else(|| "-".into());
            let lookup = match an.lookup {
                None => String::new(),
                Some(l) => {
                    let how = match l.rounding {
                        Rounding::Exact => "exact".to_string(),
                        Rounding::Declared => format!("rounded to {} bits (declared)", l.precision),
                        Rounding::Runtime => format!("rounded to {} bits (runtime)", l.precision),
                    };
                    let bound = match l.unbounded_bits {
                        Some(worst) => {
                            format!(", fits by the declared acc bound ({worst} bits unbounded)")
                        }
                        None => String::new(),
                    };
                    format!("{} × {}-bit, {how}{bound}", l.count, l.input_bits)
                }
            };
            writeln!(
                f,
                "{:>3}  {:<44} {:>10}  {:<13} {:<24} {:>4}  {lookup}",
                i + 1,
                layer.to_string(),
                an.shape.to_string(),
                holds,
                range,
                bits
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::activation::Activation;
    use crate::arch::layer::WeightOptions;

    #[test]
    fn runtime_construction_applies_the_same_checks() {
        let opts = WeightOptions {
            weight_bits: 3,
            bias: true,
            active: None,
            round: None,
            exact: false,
            acc: None,
        };
        let ok = Architecture::new(
            "seed",
            vec![
                Layer::QuantIdentity {
                    bits: 3,
                    signed: true,
                },
                Layer::QuantLinear {
                    in_features: 64,
                    out_features: 10,
                    options: opts,
                },
            ],
        )
        .unwrap();
        assert_eq!(ok.summary().outputs, 10);
        assert_eq!(ok.lookups(), 0);
        let err = Architecture::new(
            "bad",
            vec![
                Layer::QuantLinear {
                    in_features: 64,
                    out_features: 10,
                    options: opts,
                },
                Layer::Activation(Activation::ReLU),
            ],
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("layer 1 `QuantLinear(64, 10, w = 3)`"),
            "{msg}"
        );
        assert!(msg.contains("unquantized"), "{msg}");
    }
}
