//! Code generation: the checked architecture as `const` data of the runtime's types.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::arch::activation::Activation;
use crate::arch::analysis::{
    Analysis, IntRange, LayerAnalysis, Lookup, Rounding, Shape, TensorKind,
};
use crate::arch::layer::{Conv2d, Layer, WeightOptions};
use crate::syntax::NamedItem;

/// The `Architecture` expression for a checked network.
pub fn architecture(name: &str, layers: &[Layer], analysis: &Analysis) -> TokenStream {
    let layers = layers.iter().map(layer);
    let analyses = analysis.layers.iter().map(layer_analysis);
    let s = &analysis.summary;
    let (lookups, max_lookup_bits, max_integer_bits, rounded, outputs) = (
        s.lookups,
        s.max_lookup_bits,
        s.max_integer_bits,
        s.rounded_lookups,
        s.outputs,
    );
    quote! {
        ::fhe_nn::__private::Architecture::__from_checked(
            #name,
            &[#(#layers),*],
            &[#(#analyses),*],
            ::fhe_nn::__private::arch::analysis::Summary {
                lookups: #lookups,
                max_lookup_bits: #max_lookup_bits,
                max_integer_bits: #max_integer_bits,
                rounded_lookups: #rounded,
                outputs: #outputs,
            },
        )
    }
}

/// The named form: a unit struct with the analysis as associated constants.
pub fn named(
    item: &NamedItem,
    arch: TokenStream,
    layers: Option<&[Layer]>,
    analysis: Option<&Analysis>,
) -> TokenStream {
    let NamedItem { attrs, vis, ident } = item;
    let (lookups, max_lookup_bits, max_integer_bits, outputs) = analysis
        .map(|a| {
            (
                a.summary.lookups,
                a.summary.max_lookup_bits,
                a.summary.max_integer_bits,
                a.summary.outputs,
            )
        })
        .unwrap_or_default();
    let accumulator_bits = analysis
        .map(|a| {
            a.layers
                .iter()
                .map(|l| option(l.accumulator_bits))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let ranges = analysis
        .map(|a| {
            a.layers
                .iter()
                .map(|l| {
                    option(
                        l.range
                            .map(|r| (r.min, r.max))
                            .map(|(a, b)| quote!((#a, #b))),
                    )
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let sample = |n: Option<usize>| match n {
        Some(n) => quote!([f64; #n]),
        None => quote!(::std::vec::Vec<f64>),
    };
    let input = sample(layers.and_then(input_features));
    let output = sample(analysis.map(|a| a.summary.outputs));
    quote! {
        #(#attrs)*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        #vis struct #ident;

        impl #ident {
            /// Table lookups (programmable bootstraps) per inference.
            pub const LOOKUPS: usize = #lookups;
            /// Widest lookup precision in bits, after rounding.
            pub const MAX_LOOKUP_BITS: u32 = #max_lookup_bits;
            /// Widest encrypted integer in bits (Concrete ML's `maximum_integer_bit_width`).
            pub const MAX_INTEGER_BITS: u32 = #max_integer_bits;
            /// Values the client decrypts per inference.
            pub const OUTPUTS: usize = #outputs;
            /// Accumulator width produced by each layer (weighted and pooling layers).
            pub const ACCUMULATOR_BITS: &'static [::core::option::Option<u32>] = &[#(#accumulator_bits),*];
            /// Integer range `(min, max)` of each layer's output, where it is an integer.
            pub const RANGES: &'static [::core::option::Option<(i64, i64)>] = &[#(#ranges),*];

            /// The checked architecture.
            pub fn architecture() -> &'static ::fhe_nn::__private::Architecture {
                static ARCHITECTURE: ::fhe_nn::__private::Architecture = #arch;
                &ARCHITECTURE
            }

            /// The bit-width and range report (printable).
            pub fn report() -> ::fhe_nn::__private::Report<'static> {
                Self::architecture().report()
            }
        }

        impl #ident {
            /// Loads integer (QAT) weights for this network from a `.safetensors` or `.npz` file.
            pub fn load(
                path: impl ::core::convert::AsRef<::std::path::Path>,
            ) -> ::core::result::Result<::fhe_nn::__private::Model<#ident>, ::fhe_nn::__private::LoadError> {
                ::fhe_nn::__private::Model::load(path)
            }

            /// Builds this network's model from named tensors.
            pub fn from_tensors(
                tensors: &::fhe_nn::__private::TensorFile,
            ) -> ::core::result::Result<::fhe_nn::__private::Model<#ident>, ::fhe_nn::__private::LoadError> {
                ::fhe_nn::__private::Model::from_tensors(tensors)
            }
        }

        impl ::fhe_nn::__private::Network for #ident {
            type Input = #input;
            type Output = #output;
            fn architecture() -> &'static ::fhe_nn::__private::Architecture {
                #ident::architecture()
            }
        }
    }
}

/// Real inputs per sample, where the first weighted layer fixes them.
fn input_features(layers: &[Layer]) -> Option<usize> {
    layers.iter().find_map(|l| match *l {
        Layer::QuantLinear { in_features, .. } => Some(Some(in_features)),
        Layer::QuantConv2d(Conv2d {
            in_channels, input, ..
        }) => Some(input.map(|(h, w)| in_channels * h * w)),
        Layer::AvgPool2d { .. } | Layer::MaxPool2d { .. } | Layer::Flatten => Some(None),
        _ => None,
    })?
}

fn option<T: quote::ToTokens>(v: Option<T>) -> TokenStream {
    match v {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    }
}

fn layer(l: &Layer) -> TokenStream {
    let path = quote!(::fhe_nn::__private::arch::layer::Layer);
    match *l {
        Layer::QuantIdentity { bits, signed } => {
            quote!(#path::QuantIdentity { bits: #bits, signed: #signed })
        }
        Layer::QuantLinear {
            in_features,
            out_features,
            ref options,
        } => {
            let options = weight_options(options);
            quote!(#path::QuantLinear { in_features: #in_features, out_features: #out_features, options: #options })
        }
        Layer::QuantConv2d(Conv2d {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            input,
            ref options,
        }) => {
            let options = weight_options(options);
            let input = option(input.map(|(h, w)| quote!((#h, #w))));
            quote!(#path::QuantConv2d(::fhe_nn::__private::arch::layer::Conv2d {
                in_channels: #in_channels, out_channels: #out_channels, kernel: #kernel,
                stride: #stride, padding: #padding, input: #input, options: #options
            }))
        }
        Layer::AvgPool2d { kernel } => quote!(#path::AvgPool2d { kernel: #kernel }),
        Layer::Flatten => quote!(#path::Flatten),
        Layer::MaxPool2d { kernel } => quote!(#path::MaxPool2d { kernel: #kernel }),
        Layer::Fork => quote!(#path::Fork),
        Layer::Join { op, bits, signed } => {
            let op = format_ident!("{}", op.name());
            quote!(#path::Join { op: ::fhe_nn::__private::arch::layer::JoinOp::#op, bits: #bits, signed: #signed })
        }
        Layer::Activation(ref a) => {
            let a = activation(a);
            quote!(#path::Activation(#a))
        }
    }
}

fn weight_options(o: &WeightOptions) -> TokenStream {
    let WeightOptions {
        weight_bits,
        bias,
        active,
        round,
        exact,
        acc,
    } = *o;
    let active = option(active);
    let round = option(round);
    let acc = option(acc);
    quote!(::fhe_nn::__private::arch::layer::WeightOptions {
        weight_bits: #weight_bits, bias: #bias, active: #active, round: #round, exact: #exact,
        acc: #acc
    })
}

fn activation(a: &Activation) -> TokenStream {
    let path = quote!(::fhe_nn::__private::arch::activation::Activation);
    let variant = format_ident!("{}", a.name());
    match *a {
        Activation::HardTanh { min, max } => quote!(#path::HardTanh { min: #min, max: #max }),
        Activation::LeakyReLU { slope } => quote!(#path::LeakyReLU { slope: #slope }),
        Activation::Threshold { threshold, value } => {
            quote!(#path::Threshold { threshold: #threshold, value: #value })
        }
        Activation::ELU { alpha } => quote!(#path::ELU { alpha: #alpha }),
        Activation::CELU { alpha } => quote!(#path::CELU { alpha: #alpha }),
        Activation::Softplus { beta, threshold } => {
            quote!(#path::Softplus { beta: #beta, threshold: #threshold })
        }
        Activation::Hardshrink { lambda } => quote!(#path::Hardshrink { lambda: #lambda }),
        Activation::Softshrink { lambda } => quote!(#path::Softshrink { lambda: #lambda }),
        _ => quote!(#path::#variant),
    }
}

fn range(r: &IntRange) -> TokenStream {
    let (min, max) = (r.min, r.max);
    quote!(::fhe_nn::__private::arch::analysis::IntRange { min: #min, max: #max })
}

fn layer_analysis(l: &LayerAnalysis) -> TokenStream {
    let p = quote!(::fhe_nn::__private::arch::analysis);
    let shape = match l.shape {
        Shape::Unknown => quote!(#p::Shape::Unknown),
        Shape::Features(n) => quote!(#p::Shape::Features(#n)),
        Shape::Image {
            channels,
            height,
            width,
        } => quote!(#p::Shape::Image { channels: #channels, height: #height, width: #width }),
    };
    let kind = format_ident!(
        "{}",
        match l.kind {
            TensorKind::Real => "Real",
            TensorKind::Quantized => "Quantized",
            TensorKind::Accumulator => "Accumulator",
            TensorKind::Unknown => "Unknown",
        }
    );
    let range = option(l.range.as_ref().map(range));
    let accumulator_bits = option(l.accumulator_bits);
    let lookup = option(l.lookup.as_ref().map(lookup_tokens));
    let fork_lookup = option(l.fork_lookup.as_ref().map(lookup_tokens));
    let product_lookup = option(l.product_lookup.as_ref().map(lookup_tokens));
    quote!(#p::LayerAnalysis { shape: #shape, kind: #p::TensorKind::#kind, range: #range, accumulator_bits: #accumulator_bits, lookup: #lookup, fork_lookup: #fork_lookup, product_lookup: #product_lookup })
}

/// A lookup of the analysis as tokens.
fn lookup_tokens(l: &Lookup) -> TokenStream {
    let p = quote!(::fhe_nn::__private::arch::analysis);
    let Lookup {
        count,
        input_bits,
        precision,
        rounding,
        source,
        unbounded_bits,
    } = l;
    {
        let rounding = format_ident!(
            "{}",
            match rounding {
                Rounding::Exact => "Exact",
                Rounding::Declared => "Declared",
                Rounding::Runtime => "Runtime",
            }
        );
        let unbounded_bits = option(*unbounded_bits);
        quote!(#p::Lookup { count: #count, input_bits: #input_bits, precision: #precision, rounding: #p::Rounding::#rounding, source: #source, unbounded_bits: #unbounded_bits })
    }
}
