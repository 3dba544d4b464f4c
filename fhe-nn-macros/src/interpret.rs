//! Gives meaning to the raw layer calls: layer names, positional and named arguments, types.
//! Every mistake of every layer is collected, so one compile shows them all.

use proc_macro2::Span;
use syn::Ident;

use crate::arch::activation::{Activation, ACTIVATIONS};
use crate::arch::layer::{Conv2d, JoinOp, Layer, WeightOptions};
use crate::syntax::{Arg, LayerCall, Value};

/// A layer with the spans its errors point at.
pub struct SpannedLayer {
    pub layer: Layer,
    pub span: Span,
    /// Span of each option given explicitly, by option name.
    pub option_spans: Vec<(&'static str, Span)>,
}

impl SpannedLayer {
    /// Span of `option` if the user wrote it, else of the whole layer.
    pub fn span_of(&self, option: Option<&str>) -> Span {
        option
            .and_then(|o| self.option_spans.iter().find(|(n, _)| *n == o))
            .map(|(_, s)| *s)
            .unwrap_or(self.span)
    }
}

const STRUCTURAL_LAYERS: &[&str] = &[
    "QuantIdentity",
    "QuantLinear",
    "QuantConv2d",
    "AvgPool2d",
    "MaxPool2d",
    "Flatten",
    "Fork",
    "Add",
    "Sub",
    "Mul",
    "Concat",
];

/// Names users reach for that are spelled differently here.
const ALIASES: &[(&str, &str)] = &[
    ("Linear", "QuantLinear"),
    ("Conv2d", "QuantConv2d"),
    ("Identity", "QuantIdentity"),
    ("QuantReLU", "ReLU"),
    ("Relu", "ReLU"),
    ("Hardswish", "HardSwish"),
    ("Hardtanh", "HardTanh"),
    ("Hardsigmoid", "HardSigmoid"),
    ("AvgPool", "AvgPool2d"),
    ("MaxPool", "MaxPool2d"),
    ("Residual", "Fork"),
];

/// Interprets every call; on any error returns all of them.
pub fn interpret(calls: &[LayerCall]) -> Result<Vec<SpannedLayer>, Vec<syn::Error>> {
    let mut errors = Vec::new();
    let mut layers = Vec::new();
    for call in calls {
        let mut args = Args::collect(call);
        let layer = match call.name.to_string().as_str() {
            "QuantIdentity" => quant_identity(&mut args),
            "QuantLinear" => quant_linear(&mut args),
            "QuantConv2d" => quant_conv2d(&mut args),
            "AvgPool2d" => {
                args.accept(&["kernel_size"], &[]);
                args.usize("kernel_size", true)
                    .map(|kernel| Layer::AvgPool2d { kernel })
            }
            "MaxPool2d" => {
                args.accept(&["kernel_size"], &[]);
                args.usize("kernel_size", true)
                    .map(|kernel| Layer::MaxPool2d { kernel })
            }
            "Flatten" => {
                args.accept(&[], &[]);
                Some(Layer::Flatten)
            }
            "Fork" => {
                args.accept(&[], &[]);
                Some(Layer::Fork)
            }
            name @ ("Add" | "Sub" | "Mul" | "Concat") => {
                let op = JoinOp::ALL
                    .into_iter()
                    .find(|op| op.name() == name)
                    .expect("a join's name");
                quant_identity(&mut args).map(|q| match q {
                    Layer::QuantIdentity { bits, signed } => Layer::Join { op, bits, signed },
                    other => other,
                })
            }
            name if ACTIVATIONS.iter().any(|(n, _)| *n == name) => activation(&mut args, name),
            name => {
                errors.push(syn::Error::new(
                    call.name.span(),
                    unknown_layer_message(name),
                ));
                None
            }
        };
        let option_spans = args.option_spans();
        errors.append(&mut args.errors);
        if let Some(layer) = layer {
            layers.push(SpannedLayer {
                layer,
                span: call.span,
                option_spans,
            });
        }
    }
    if errors.is_empty() {
        Ok(layers)
    } else {
        Err(errors)
    }
}

fn unknown_layer_message(name: &str) -> String {
    let known: Vec<&str> = STRUCTURAL_LAYERS
        .iter()
        .copied()
        .chain(ACTIVATIONS.iter().map(|(n, _)| *n))
        .collect();
    let suggestion = ALIASES
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(name))
        .map(|(_, real)| *real)
        .or_else(|| {
            known
                .iter()
                .map(|k| (edit_distance(&name.to_lowercase(), &k.to_lowercase()), *k))
                .filter(|(d, k)| *d <= k.len() / 3 + 1)
                .min()
                .map(|(_, k)| k)
        });
    let mut msg = format!("unknown layer `{name}`");
    if let Some(s) = suggestion {
        msg.push_str(&format!("\n= help: did you mean `{s}`?"));
    }
    msg.push_str(&format!("\n= note: the layers are {}", known.join(", ")));
    msg
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn quant_identity(args: &mut Args) -> Option<Layer> {
    args.accept(&["bit_width"], &["signed", "unsigned"]);
    let bits = args.u32("bit_width", true);
    let unsigned = args.flag("unsigned");
    let signed = args.flag("signed");
    if let (Some(true), Some(true)) = (unsigned, signed) {
        let span = args.span_of("unsigned");
        args.errors.push(syn::Error::new(
            span,
            "a quantizer is either `signed` or `unsigned`, not both",
        ));
    }
    let signed = match (signed, unsigned) {
        (Some(s), _) => s,
        (None, Some(u)) => !u,
        (None, None) => true,
    };
    Some(Layer::QuantIdentity {
        bits: bits?,
        signed,
    })
}

const WEIGHT_OPTIONS: &[&str] = &["w", "bias", "active", "round", "exact", "acc"];

fn weight_options(args: &mut Args) -> Option<WeightOptions> {
    let weight_bits = args.u32("w", true);
    let bias = args.flag("bias").unwrap_or(true);
    let active = args.usize("active", false);
    let round = args.u32("round", false);
    let exact = args.flag("exact").unwrap_or(false);
    let acc = args.u32("acc", false);
    if exact && round.is_some() {
        let span = args.span_of("exact");
        args.errors.push(syn::Error::new(
            span,
            "`exact` and `round` contradict each other: `round` asks for approximate rounding",
        ));
    }
    Some(WeightOptions {
        weight_bits: weight_bits?,
        bias,
        active,
        round,
        exact,
        acc,
    })
}

fn quant_linear(args: &mut Args) -> Option<Layer> {
    args.accept(&["in_features", "out_features"], WEIGHT_OPTIONS);
    let in_features = args.usize("in_features", true);
    let out_features = args.usize("out_features", true);
    let options = weight_options(args);
    Some(Layer::QuantLinear {
        in_features: in_features?,
        out_features: out_features?,
        options: options?,
    })
}

fn quant_conv2d(args: &mut Args) -> Option<Layer> {
    let mut options: Vec<&str> = WEIGHT_OPTIONS.to_vec();
    options.extend(["stride", "padding", "input"]);
    args.accept(&["in_channels", "out_channels", "kernel_size"], &options);
    let in_channels = args.usize("in_channels", true);
    let out_channels = args.usize("out_channels", true);
    let kernel = args.usize("kernel_size", true);
    let stride = args.usize("stride", false).unwrap_or(1);
    let padding = args.usize("padding", false).unwrap_or(0);
    let input = args.pair("input");
    let options = weight_options(args);
    Some(Layer::QuantConv2d(Conv2d {
        in_channels: in_channels?,
        out_channels: out_channels?,
        kernel: kernel?,
        stride,
        padding,
        input,
        options: options?,
    }))
}

fn activation(args: &mut Args, name: &str) -> Option<Layer> {
    let params = ACTIVATIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| *p)
        .unwrap_or(&[]);
    let names: Vec<&'static str> = params.iter().map(|(n, _)| *n).collect();
    args.accept(&names, &[]);
    let mut values = Vec::new();
    for (pname, default) in params {
        match (args.f64(pname), default) {
            (Some(v), _) => values.push(v),
            (None, Some(d)) => values.push(*d),
            (None, None) => {
                let span = args.call_span;
                args.errors.push(syn::Error::new(
                    span,
                    format!("`{name}` needs its `{pname}` argument"),
                ));
                return None;
            }
        }
    }
    match Activation::from_name(name, &values) {
        Ok(act) => Some(Layer::Activation(act)),
        Err(msg) => {
            args.errors.push(syn::Error::new(args.call_span, msg));
            None
        }
    }
}

/// The arguments of one call, normalized to `name = value` pairs.
struct Args {
    layer: String,
    call_span: Span,
    positional: Vec<Value>,
    named: Vec<(Ident, Value)>,
    /// Accepted `(name, value)` pairs once `accept` has run.
    values: Vec<(&'static str, Span, Value)>,
    errors: Vec<syn::Error>,
}

impl Args {
    fn collect(call: &LayerCall) -> Args {
        let mut positional = Vec::new();
        let mut named = Vec::new();
        for arg in &call.args {
            match arg {
                Arg::Positional(v) => positional.push(v.clone()),
                Arg::Named(n, v) => named.push((n.clone(), v.clone())),
            }
        }
        Args {
            layer: call.name.to_string(),
            call_span: call.span,
            positional,
            named,
            values: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Matches the arguments against the layer's positional parameters and options. A
    /// positional bare identifier is a flag (`unsigned`, `bias`, `exact`).
    fn accept(&mut self, params: &[&'static str], options: &[&'static str]) {
        let all: Vec<&'static str> = params.iter().chain(options).copied().collect();
        let mut next_param = 0;
        for value in std::mem::take(&mut self.positional) {
            if let Value::Ident(flag) = &value {
                let name = flag.to_string();
                match all.iter().find(|n| **n == name) {
                    Some(n) => self.insert(n, flag.span(), Value::Bool(true, flag.span())),
                    None => self.unknown(flag.span(), &name, &all),
                }
                continue;
            }
            match params.get(next_param) {
                Some(name) => {
                    let span = value.span();
                    self.insert(name, span, value);
                    next_param += 1;
                }
                None => {
                    let msg = if params.is_empty() {
                        format!("`{}` takes no positional arguments", self.layer)
                    } else {
                        format!("`{}` takes {} positional argument(s) ({}); name the others, e.g. `{} = ...`", self.layer, params.len(), params.join(", "), options.first().unwrap_or(&"w"))
                    };
                    self.errors.push(syn::Error::new(value.span(), msg));
                }
            }
        }
        for (ident, value) in std::mem::take(&mut self.named) {
            let name = ident.to_string();
            match all.iter().find(|n| **n == name) {
                Some(n) => self.insert(
                    n,
                    ident.span().join(value.span()).unwrap_or(ident.span()),
                    value,
                ),
                None => self.unknown(ident.span(), &name, &all),
            }
        }
    }

    fn insert(&mut self, name: &'static str, span: Span, value: Value) {
        if self.values.iter().any(|(n, _, _)| *n == name) {
            self.errors.push(syn::Error::new(
                span,
                format!("duplicate argument `{name}` for `{}`", self.layer),
            ));
        } else {
            self.values.push((name, span, value));
        }
    }

    fn unknown(&mut self, span: Span, name: &str, all: &[&str]) {
        let expected = if all.is_empty() {
            "it takes no arguments".to_string()
        } else {
            format!("expected one of: {}", all.join(", "))
        };
        self.errors.push(syn::Error::new(
            span,
            format!("unknown argument `{name}` for `{}`; {expected}", self.layer),
        ));
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        self.values
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, _, v)| v.clone())
    }

    fn span_of(&self, name: &str) -> Span {
        self.values
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, s, _)| *s)
            .unwrap_or(self.call_span)
    }

    fn option_spans(&self) -> Vec<(&'static str, Span)> {
        self.values.iter().map(|(n, s, _)| (*n, *s)).collect()
    }

    fn type_error(&mut self, value: &Value, name: &str, expected: &str) {
        self.errors.push(syn::Error::new(
            value.span(),
            format!(
                "`{name}` of `{}` expects {expected}, found {}",
                self.layer,
                value.describe()
            ),
        ));
    }

    fn missing(&mut self, name: &str) {
        let example = match name {
            "w" => " (the weight bit-width), e.g. `w = 3`",
            "bit_width" => ", e.g. `QuantIdentity(3)`",
            _ => "",
        };
        self.errors.push(syn::Error::new(
            self.call_span,
            format!("`{}` needs `{name}`{example}", self.layer),
        ));
    }

    fn int(&mut self, name: &str, required: bool, max: i128) -> Option<i128> {
        match self.take(name) {
            Some(Value::Int(v, _)) if (0..=max).contains(&v) => Some(v),
            Some(Value::Int(v, span)) if v > max => {
                let msg = format!(
                    "`{name}` of `{}` must be at most {max}, found {v}",
                    self.layer
                );
                self.errors.push(syn::Error::new(span, msg));
                None
            }
            Some(v) => {
                self.type_error(&v, name, "a non-negative integer");
                None
            }
            None => {
                if required {
                    self.missing(name);
                }
                None
            }
        }
    }

    fn usize(&mut self, name: &str, required: bool) -> Option<usize> {
        self.int(name, required, u32::MAX as i128)
            .map(|v| v as usize)
    }

    fn u32(&mut self, name: &str, required: bool) -> Option<u32> {
        self.int(name, required, 1024).map(|v| v as u32)
    }

    fn f64(&mut self, name: &str) -> Option<f64> {
        match self.take(name) {
            Some(Value::Int(v, _)) => Some(v as f64),
            Some(Value::Float(v, _)) => Some(v),
            Some(v) => {
                self.type_error(&v, name, "a number");
                None
            }
            None => None,
        }
    }

    fn flag(&mut self, name: &str) -> Option<bool> {
        match self.take(name) {
            Some(Value::Bool(b, _)) => Some(b),
            Some(v) => {
                self.type_error(&v, name, "`true` or `false` (or the bare flag)");
                None
            }
            None => None,
        }
    }

    fn pair(&mut self, name: &str) -> Option<(usize, usize)> {
        match self.take(name) {
            Some(Value::Int(v, _)) if (0..=u32::MAX as i128).contains(&v) => {
                Some((v as usize, v as usize))
            }
            Some(Value::Tuple(items, span)) => match items.as_slice() {
                [Value::Int(h, _), Value::Int(w, _)]
                    if *h >= 0 && *w >= 0 && *h <= u32::MAX as i128 && *w <= u32::MAX as i128 =>
                {
                    Some((*h as usize, *w as usize))
                }
                _ => {
                    self.type_error(&Value::Tuple(items, span), name, "`(height, width)`");
                    None
                }
            },
            Some(v) => {
                self.type_error(&v, name, "`(height, width)`");
                None
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_for_unknown_layers() {
        assert!(unknown_layer_message("Linear").contains("did you mean `QuantLinear`"));
        assert!(unknown_layer_message("Sigmiod").contains("did you mean `Sigmoid`"));
        assert!(unknown_layer_message("QuantLiner").contains("did you mean `QuantLinear`"));
        assert!(!unknown_layer_message("Transformer").contains("did you mean"));
    }
}
