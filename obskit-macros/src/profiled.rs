//! Parsing, checks and code generation for `#[profiled]`. The expansion wraps the body in a
//! call on a `static ::obskit::__private::ProfileSite`; the policy and the marker live there.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{AttrStyle, Ident, Item, ItemFn, Lit, LitStr, Token};

use crate::args::Errors;
use crate::expand::{nameable_return_type, returns_unit};

const VALID_OPTIONS: &str =
    "`name = \"...\"`, `every = \"60s\"`, `duration = \"5s\"`, `calls = N` and `frequency = HZ`";

/// The longest capture, as for `/debug/pprof/profile`.
const MAX_DURATION_MS: u64 = 60_000;
/// The highest sampling rate (the kernel tick).
const MAX_FREQUENCY: u64 = 250;

struct Args {
    name: Option<LitStr>,
    every_ms: u64,
    duration_ms: u64,
    calls: u64,
    frequency: u64,
}

/// The whole macro. On any error, the errors are emitted followed by the item unchanged.
pub(crate) fn profiled(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = parse_args(attr, &mut errors);
    let func = match parse_item(item.clone()) {
        Ok(func) => {
            check(&func, &mut errors);
            Some(func)
        }
        Err(error) => {
            errors.push(error);
            None
        }
    };
    match (errors.finish(), func) {
        (Ok(()), Some(func)) => generate(func, &args),
        (Err(error), _) => {
            let error = error.to_compile_error();
            quote!(#error #item)
        }
        (Ok(()), None) => item,
    }
}

fn parse_args(tokens: TokenStream, errors: &mut Errors) -> Args {
    let mut args = Args {
        name: None,
        every_ms: 60_000,
        duration_ms: 5_000,
        calls: 0,
        frequency: 99,
    };
    let pairs = (|input: ParseStream| {
        let mut pairs = Vec::new();
        while !input.is_empty() {
            let key = input.call(Ident::parse_any).map_err(|e| {
                syn::Error::new(
                    e.span(),
                    format!("expected an option; the options are {VALID_OPTIONS}"),
                )
            })?;
            if !input.peek(Token![=]) {
                return Err(syn::Error::new(
                    key.span(),
                    format!("`{key}` needs a value (`{key} = ...`); the options are {VALID_OPTIONS}"),
                ));
            }
            input.parse::<Token![=]>()?;
            let value: Lit = input.parse()?;
            pairs.push((key, value));
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(pairs)
    })
    .parse2(tokens);
    let pairs = match pairs {
        Ok(pairs) => pairs,
        Err(error) => {
            errors.push(error);
            return args;
        }
    };
    let mut seen: Vec<String> = Vec::new();
    let mut duration_span = None;
    for (key, value) in pairs {
        let k = key.to_string();
        if seen.contains(&k) {
            errors.push(syn::Error::new(
                key.span(),
                format!("duplicate option `{k}`: each option may be given once"),
            ));
            continue;
        }
        seen.push(k.clone());
        let result = match k.as_str() {
            "name" => match value {
                Lit::Str(lit) if !lit.value().is_empty() => {
                    args.name = Some(lit);
                    Ok(())
                }
                other => Err(syn::Error::new(
                    other.span(),
                    "`name` expects a non-empty string, e.g. `name = \"checkout\"`",
                )),
            },
            "every" => duration_value(&value, "every", "60s").map(|ms| args.every_ms = ms),
            "duration" => duration_value(&value, "duration", "5s").and_then(|ms| {
                if ms > MAX_DURATION_MS {
                    Err(syn::Error::new(
                        value.span(),
                        "`duration` is at most \"60s\": a longer capture would hold the process's only profiler",
                    ))
                } else {
                    duration_span = Some(value.span());
                    args.duration_ms = ms;
                    Ok(())
                }
            }),
            "calls" => int_value(&value, "calls", "calls = 100").and_then(|n| {
                if n == 0 {
                    Err(syn::Error::new(value.span(), "`calls` must be at least 1"))
                } else {
                    args.calls = n;
                    Ok(())
                }
            }),
            "frequency" => int_value(&value, "frequency", "frequency = 99").and_then(|hz| {
                if hz == 0 || hz > MAX_FREQUENCY {
                    Err(syn::Error::new(
                        value.span(),
                        "`frequency` is in Hz, from 1 to 250: the kernel tick is 250 Hz, and faster sampling loses samples",
                    ))
                } else {
                    args.frequency = hz;
                    Ok(())
                }
            }),
            _ => Err(syn::Error::new(
                key.span(),
                format!("unknown option `{k}`; the options are {VALID_OPTIONS}"),
            )),
        };
        if let Err(error) = result {
            errors.push(error);
        }
    }
    if args.duration_ms > args.every_ms {
        errors.push(syn::Error::new(
            duration_span.unwrap_or_else(Span::call_site),
            "`duration` must not be longer than `every`: at most one capture runs per interval",
        ));
    }
    args
}

/// `"500ms"`, `"5s"`, `"2m"`, `"1h"` in milliseconds.
fn duration_value(value: &Lit, key: &str, example: &str) -> syn::Result<u64> {
    let bad = || {
        syn::Error::new(
            value.span(),
            format!("`{key}` expects a duration string such as \"{example}\", \"500ms\", \"2m\" or \"1h\""),
        )
    };
    let Lit::Str(lit) = value else {
        return Err(bad());
    };
    let text = lit.value();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    match number.checked_mul(factor) {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(syn::Error::new(
            value.span(),
            format!("`{key}` must be longer than zero"),
        )),
    }
}

fn int_value(value: &Lit, key: &str, example: &str) -> syn::Result<u64> {
    match value {
        Lit::Int(int) => int.base10_parse(),
        other => Err(syn::Error::new(
            other.span(),
            format!("`{key}` expects an integer, e.g. `{example}`"),
        )),
    }
}

fn parse_item(item: TokenStream) -> syn::Result<ItemFn> {
    match syn::parse2::<Item>(item) {
        Ok(Item::Fn(func)) => Ok(func),
        Ok(other) => Err(syn::Error::new(
            other.span(),
            "`#[profiled]` can only be used on functions and methods that have a body",
        )),
        Err(error) => Err(syn::Error::new(
            Span::call_site(),
            format!("`#[profiled]` can only be used on functions and methods; this item does not parse as one: {error}"),
        )),
    }
}

fn check(func: &ItemFn, errors: &mut Errors) {
    if let Some(constness) = &func.sig.constness {
        errors.push(syn::Error::new_spanned(
            constness,
            "`#[profiled]` cannot be used on a `const fn`: profiling happens at run time",
        ));
    }
    if let Some(variadic) = &func.sig.variadic {
        errors.push(syn::Error::new_spanned(
            variadic.dots,
            "`#[profiled]` cannot be used on a C-variadic function",
        ));
    }
}

fn generate(func: ItemFn, args: &Args) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
        ..
    } = func;
    let outer_attrs = attrs.iter().filter(|a| matches!(a.style, AttrStyle::Outer));
    let inner_attrs = attrs.iter().filter(|a| matches!(a.style, AttrStyle::Inner(_)));
    let mut user_block = TokenStream::new();
    block.brace_token.surround(&mut user_block, |tokens| {
        for stmt in &block.stmts {
            stmt.to_tokens(tokens);
        }
    });
    let name = match &args.name {
        Some(lit) => lit.clone(),
        None => LitStr::new(&sig.ident.unraw().to_string(), sig.ident.span()),
    };
    let (every, duration, calls, frequency) =
        (args.every_ms, args.duration_ms, args.calls, args.frequency as u32);
    let site = quote! {
        static __OBSKIT_PROFILE: ::obskit::__private::ProfileSite = ::obskit::__private::ProfileSite::new(
            #name, ::core::module_path!(), #every, #duration, #calls, #frequency,
        );
    };
    let body = if sig.asyncness.is_some() {
        // Pins the inner block's output type, as `#[instrumented]` does. Never runs.
        let fake_return = nameable_return_type(&sig.output)
            .filter(|_| !returns_unit(&sig.output))
            .map(|ty| {
                quote_spanned! {ty.span()=>
                    #[allow(
                        unreachable_code,
                        clippy::diverging_sub_expression,
                        clippy::empty_loop,
                        clippy::needless_return
                    )]
                    if false {
                        let __obskit_fake_ret: #ty = loop {};
                        return __obskit_fake_ret;
                    }
                }
            });
        quote! {
            #site
            __OBSKIT_PROFILE.future(async move { #fake_return #user_block }).await
        }
    } else {
        // The body runs in a `move` closure called once (`return` and `?` keep their meaning,
        // typed by the declared return type), inside the marker frame when a capture is on.
        let call = match nameable_return_type(&sig.output) {
            Some(ty) => quote!(__OBSKIT_PROFILE.call::<#ty, _>),
            None => quote!(__OBSKIT_PROFILE.call),
        };
        quote! {
            #site
            #call(move || #user_block)
        }
    };
    let mut out = TokenStream::new();
    for attr in outer_attrs {
        attr.to_tokens(&mut out);
    }
    vis.to_tokens(&mut out);
    sig.to_tokens(&mut out);
    block.brace_token.surround(&mut out, |tokens| {
        for attr in inner_attrs {
            attr.to_tokens(tokens);
        }
        body.to_tokens(tokens);
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(tokens: &str) -> Result<Args, String> {
        let mut errors = Errors::default();
        let args = parse_args(tokens.parse().unwrap(), &mut errors);
        errors.finish().map(|()| args).map_err(|e| e.to_string())
    }

    #[test]
    fn options() {
        let a = args(r#"name = "checkout", every = "2m", duration = "500ms", calls = 10, frequency = 250"#)
            .unwrap();
        assert_eq!(a.name.unwrap().value(), "checkout");
        assert_eq!(
            (a.every_ms, a.duration_ms, a.calls, a.frequency),
            (120_000, 500, 10, 250)
        );
        let d = args("").unwrap();
        assert_eq!(
            (d.every_ms, d.duration_ms, d.calls, d.frequency),
            (60_000, 5_000, 0, 99)
        );
        assert!(args(r#"every = "1h""#).is_ok());
        for bad in [
            r#"every = "5 parsecs""#,
            r#"every = "0s""#,
            r#"every = 60"#,
            r#"duration = "61s", every = "1h""#,
            r#"duration = "10s", every = "5s""#,
            "calls = 0",
            "frequency = 1000",
            "bogus = 1",
            "name",
            r#"name = """#,
            r#"name = "a", name = "b""#,
        ] {
            assert!(args(bad).is_err(), "{bad}");
        }
    }
}
