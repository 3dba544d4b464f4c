//! Token-level syntax of `fhe_net!`: the invocation forms and raw layer calls, before any
//! meaning is given to names and arguments.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Attribute, Ident, Token, Visibility};

/// The whole macro input.
pub struct Invocation {
    /// `Some` for the named form `pub struct Name<...>`.
    pub item: Option<NamedItem>,
    pub layers: Vec<LayerCall>,
    /// Span of the whole layer list, for network-wide errors.
    pub span: Span,
}

/// The named form's item header.
pub struct NamedItem {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub ident: Ident,
}

/// `Name` or `Name(args...)`.
pub struct LayerCall {
    pub name: Ident,
    pub args: Vec<Arg>,
    /// Span of the call, name and arguments.
    pub span: Span,
}

/// One argument of a layer call.
pub enum Arg {
    Positional(Value),
    Named(Ident, Value),
}

/// An argument value.
#[derive(Clone)]
pub enum Value {
    Int(i128, Span),
    Float(f64, Span),
    Bool(bool, Span),
    Ident(Ident),
    Tuple(Vec<Value>, Span),
}

impl Value {
    pub fn span(&self) -> Span {
        match self {
            Value::Int(_, s) | Value::Float(_, s) | Value::Bool(_, s) | Value::Tuple(_, s) => *s,
            Value::Ident(i) => i.span(),
        }
    }

    /// A short description for "expected …, found …" errors.
    pub fn describe(&self) -> String {
        match self {
            Value::Int(v, _) => format!("integer `{v}`"),
            Value::Float(v, _) => format!("number `{v}`"),
            Value::Bool(v, _) => format!("`{v}`"),
            Value::Ident(i) => format!("`{i}`"),
            Value::Tuple(..) => "a tuple".to_string(),
        }
    }
}

impl Parse for Invocation {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let span = input.span();
        let item = if input.peek(Token![#]) || input.peek(Token![pub]) || input.peek(Token![struct])
        {
            let attrs = input.call(Attribute::parse_outer)?;
            let vis: Visibility = input.parse()?;
            input.parse::<Token![struct]>()?;
            let ident: Ident = input.parse()?;
            Some(NamedItem { attrs, vis, ident })
        } else {
            None
        };
        let layers = if item.is_some() {
            // The named form requires the angle brackets: `pub struct Name<...>`.
            if !input.peek(Token![<]) {
                return Err(input.error("expected `<` and the layer list, e.g. `pub struct Net<QuantIdentity(3), QuantLinear(64, 10, w = 3)>`"));
            }
            parse_bracketed_layers(input)?
        } else if input.peek(Token![<]) {
            parse_bracketed_layers(input)?
        } else {
            parse_layer_list(input, false)?
        };
        if !input.is_empty() {
            return Err(input.error("unexpected tokens after the layer list"));
        }
        Ok(Invocation { item, layers, span })
    }
}

fn parse_bracketed_layers(input: ParseStream) -> syn::Result<Vec<LayerCall>> {
    input.parse::<Token![<]>()?;
    let layers = parse_layer_list(input, true)?;
    if input.is_empty() {
        return Err(input.error("expected `>` closing the layer list"));
    }
    input.parse::<Token![>]>()?;
    input.parse::<Option<Token![;]>>()?;
    Ok(layers)
}

fn parse_layer_list(input: ParseStream, until_gt: bool) -> syn::Result<Vec<LayerCall>> {
    let mut layers = Vec::new();
    loop {
        if input.is_empty() || (until_gt && input.peek(Token![>])) {
            break;
        }
        layers.push(input.parse()?);
        if input.is_empty() || (until_gt && input.peek(Token![>])) {
            break;
        }
        input
            .parse::<Token![,]>()
            .map_err(|e| syn::Error::new(e.span(), "expected `,` between layers"))?;
    }
    Ok(layers)
}

impl Parse for LayerCall {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let name: Ident = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected a layer name, e.g. `QuantLinear(784, 128, w = 3)` or `ReLU`",
            )
        })?;
        let mut span = name.span();
        let mut args = Vec::new();
        if input.peek(syn::token::Paren) {
            let content;
            let paren = syn::parenthesized!(content in input);
            span = span.join(paren.span.join()).unwrap_or(span);
            while !content.is_empty() {
                args.push(content.parse()?);
                if content.is_empty() {
                    break;
                }
                content.parse::<Token![,]>()?;
            }
        }
        Ok(LayerCall { name, args, span })
    }
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(Ident) && input.peek2(Token![=]) && !input.peek2(Token![==]) {
            let name: Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            Ok(Arg::Named(name, input.parse()?))
        } else {
            Ok(Arg::Positional(input.parse()?))
        }
    }
}

impl Parse for Value {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(syn::token::Paren) {
            let content;
            let paren = syn::parenthesized!(content in input);
            let items = content.parse_terminated(Value::parse, Token![,])?;
            return Ok(Value::Tuple(items.into_iter().collect(), paren.span.join()));
        }
        if input.peek(syn::LitBool) {
            let b: syn::LitBool = input.parse()?;
            return Ok(Value::Bool(b.value, b.span));
        }
        if input.peek(Ident) {
            return Ok(Value::Ident(input.parse()?));
        }
        let neg: Option<Token![-]> = input.parse()?;
        let sign = if neg.is_some() { -1 } else { 1 };
        let lit: syn::Lit = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected a number, a tuple, `true`/`false` or a flag name",
            )
        })?;
        let span = match &neg {
            Some(n) => n.span().join(lit.span()).unwrap_or(lit.span()),
            None => lit.span(),
        };
        match lit {
            syn::Lit::Int(i) => Ok(Value::Int(sign as i128 * i.base10_parse::<i128>()?, span)),
            syn::Lit::Float(f) => Ok(Value::Float(sign as f64 * f.base10_parse::<f64>()?, span)),
            other => Err(syn::Error::new(
                other.span(),
                "expected a number, a tuple, `true`/`false` or a flag name",
            )),
        }
    }
}
