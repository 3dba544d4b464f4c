//! The `fhe_net!` macro of `fhe-nn`: declares a quantized network, computes every tensor's
//! integer range and every accumulator's bit-width at compile time, and rejects networks
//! that FHE cannot run with compile errors pointing at the offending layer.
//!
//! Use it through `fhe_nn::fhe_net`; the generated code refers to the `fhe_nn` crate.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;

/// The architecture types and the bit-width analysis, shared with the runtime crate.
use fhe_nn_arch as arch;
mod expand;
mod interpret;
mod syntax;

/// Declares a quantized network checked at compile time.
///
/// See the `fhe_nn` crate documentation for the grammar.
#[proc_macro]
pub fn fhe_net(input: TokenStream) -> TokenStream {
    let invocation = match syn::parse::<syntax::Invocation>(input) {
        Ok(inv) => inv,
        Err(err) => return err.to_compile_error().into(),
    };
    expand_invocation(invocation).into()
}

fn expand_invocation(inv: syntax::Invocation) -> proc_macro2::TokenStream {
    let name = inv
        .item
        .as_ref()
        .map(|i| i.ident.to_string())
        .unwrap_or_else(|| "network".to_string());
    let checked = interpret::interpret(&inv.layers).and_then(|spanned| {
        let layers: Vec<_> = spanned.iter().map(|s| s.layer).collect();
        arch::analysis::analyze(&layers)
            .map(|analysis| (layers, analysis))
            .map_err(|errors| {
                errors
                    .iter()
                    .map(|e| {
                        let span = match e.layer {
                            Some(i) => spanned[i].span_of(e.option),
                            None => inv.span,
                        };
                        syn::Error::new(span, e)
                    })
                    .collect()
            })
    });
    match (checked, &inv.item) {
        (Ok((layers, analysis)), None) => expand::architecture(&name, &layers, &analysis),
        (Ok((layers, analysis)), Some(item)) => {
            let arch = expand::architecture(&name, &layers, &analysis);
            expand::named(item, arch, Some(&layers), Some(&analysis))
        }
        (Err(errors), item) => {
            let errors = combine(errors);
            // A placeholder of the right type so that one error does not cascade.
            let fallback = quote!(::fhe_nn::__private::Architecture::__invalid(#name));
            match item {
                None => quote!({ #errors #fallback }),
                Some(item) => {
                    let named = expand::named(item, fallback, None, None);
                    quote!(#errors #named)
                }
            }
        }
    }
}

fn combine(errors: Vec<syn::Error>) -> proc_macro2::TokenStream {
    let mut iter = errors.into_iter();
    let mut first = iter
        .next()
        .unwrap_or_else(|| syn::Error::new(Span::call_site(), "invalid network"));
    for e in iter {
        first.combine(e);
    }
    first.to_compile_error()
}
