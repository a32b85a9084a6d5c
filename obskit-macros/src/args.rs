//! Parsing of the options of `#[instrumented(...)]`.

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, LitBool, LitStr, Token};

/// Every option, as listed in error messages.
const VALID_OPTIONS: &str = "`name = \"...\"`, `skip(param, ...)`, `skip_all`, \
     `fields(key = value, ...)`, `err`, `err(Debug)`, `error_if = fn`, `ok_if = fn`, \
     `objective = OBJECTIVE` and `metrics = false`";

/// How `err` records the error.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ErrMode {
    Display,
    Debug,
}

/// How a field's value becomes an attribute value.
pub(crate) enum FieldValue {
    /// `key = expr`: `AttrValue::from(expr)`.
    Plain(Expr),
    /// `key = ?expr`: the `Debug` form, masked if the key looks secret.
    Debug(Expr),
    /// `key = %expr`: the `Display` form, masked if the key looks secret.
    Display(Expr),
}

/// One `key = value` of `fields(...)`.
pub(crate) struct Field {
    /// The attribute name, segments joined with `.`.
    pub key: String,
    /// The key as written, to point errors at it.
    pub key_tokens: TokenStream,
    pub value: FieldValue,
}

/// The parsed options.
pub(crate) struct Args {
    pub name: Option<LitStr>,
    pub skips: Vec<Ident>,
    pub skip_all: bool,
    pub fields: Vec<Field>,
    /// The `err` keyword (for error messages) and the mode.
    pub err: Option<(Ident, ErrMode)>,
    /// `error_if = f` or `ok_if = f`: what decides a call's `result` label instead of the
    /// default (an `Err`, a 5xx response).
    pub outcome: Option<Outcome>,
    /// `objective = CHECKOUT`: an `obskit::objectives::Objective` the function serves.
    pub objective: Option<Expr>,
    pub metrics: bool,
}

/// A caller-given rule for a call's outcome: `f(&returned)` says whether it failed, or succeeded.
pub(crate) enum Outcome {
    ErrorIf(Expr),
    OkIf(Expr),
}

enum Opt {
    Name(LitStr),
    Skip(Vec<Ident>),
    SkipAll,
    Fields(Vec<Field>),
    Err(ErrMode),
    Outcome(Outcome),
    Objective(Expr),
    Metrics(LitBool),
}

/// Accumulates errors so that one expansion reports all of them.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub fn finish(self) -> syn::Result<()> {
        match self.0 {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Parses the attribute's arguments. Options are split on top-level commas first so that every
/// malformed option is reported, not only the first.
pub(crate) fn parse(tokens: TokenStream, errors: &mut Errors) -> Args {
    let mut args = Args {
        name: None,
        skips: Vec::new(),
        skip_all: false,
        fields: Vec::new(),
        err: None,
        outcome: None,
        objective: None,
        metrics: true,
    };
    // The options given so far, to report duplicates and conflicts.
    let mut seen: Vec<&'static str> = Vec::new();

    for chunk in split_on_commas(tokens) {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(error) => {
                errors.push(error);
                continue;
            }
        };
        let (key, opt) = match parse_option.parse2(chunk) {
            Ok(parsed) => parsed,
            Err(error) => {
                errors.push(error);
                continue;
            }
        };
        let canonical = match &opt {
            Opt::Name(_) => "name",
            Opt::Skip(_) => "skip",
            Opt::SkipAll => "skip_all",
            Opt::Fields(_) => "fields",
            Opt::Err(_) => "err",
            Opt::Outcome(Outcome::ErrorIf(_)) => "error_if",
            Opt::Outcome(Outcome::OkIf(_)) => "ok_if",
            Opt::Objective(_) => "objective",
            Opt::Metrics(_) => "metrics",
        };
        if seen.contains(&canonical) {
            errors.push(syn::Error::new(
                key.span(),
                format!("duplicate option `{canonical}`: each option may be given once"),
            ));
            continue;
        }
        seen.push(canonical);
        match opt {
            Opt::Name(lit) => args.name = Some(lit),
            Opt::Skip(names) => {
                if seen.contains(&"skip_all") {
                    errors.push(syn::Error::new(
                        key.span(),
                        "`skip(...)` cannot be combined with `skip_all`, which already skips every parameter",
                    ));
                }
                args.skips = names;
            }
            Opt::SkipAll => {
                if seen.contains(&"skip") {
                    errors.push(syn::Error::new(
                        key.span(),
                        "`skip_all` cannot be combined with `skip(...)`: use one or the other",
                    ));
                }
                args.skip_all = true;
            }
            Opt::Fields(fields) => {
                for (i, field) in fields.iter().enumerate() {
                    if fields[..i].iter().any(|f| f.key == field.key) {
                        errors.push(syn::Error::new_spanned(
                            &field.key_tokens,
                            format!("duplicate field `{}`", field.key),
                        ));
                    }
                }
                args.fields = fields;
            }
            Opt::Err(mode) => args.err = Some((key, mode)),
            Opt::Outcome(outcome) => {
                let other = match outcome {
                    Outcome::ErrorIf(_) => "ok_if",
                    Outcome::OkIf(_) => "error_if",
                };
                if seen.contains(&other) {
                    errors.push(syn::Error::new(
                        key.span(),
                        "`error_if` and `ok_if` say the same thing two ways: give one of them",
                    ));
                }
                args.outcome = Some(outcome);
            }
            Opt::Objective(objective) => args.objective = Some(objective),
            Opt::Metrics(lit) => args.metrics = lit.value,
        }
    }
    args
}

/// Splits at top-level commas (commas inside `(...)` belong to the option). An empty chunk
/// (`a,,b`) is an error; a trailing comma is fine.
fn split_on_commas(tokens: TokenStream) -> Vec<syn::Result<TokenStream>> {
    let mut chunks = Vec::new();
    let mut current: Vec<TokenTree> = Vec::new();
    for tree in tokens {
        match &tree {
            TokenTree::Punct(p) if p.as_char() == ',' => {
                if current.is_empty() {
                    chunks.push(Err(syn::Error::new(
                        p.span(),
                        format!("expected an option before this comma; the options are {VALID_OPTIONS}"),
                    )));
                } else {
                    chunks.push(Ok(current.drain(..).collect()));
                }
            }
            _ => current.push(tree),
        }
    }
    if !current.is_empty() {
        chunks.push(Ok(current.into_iter().collect()));
    }
    chunks
}

fn parse_option(input: ParseStream) -> syn::Result<(Ident, Opt)> {
    let key = match input.call(Ident::parse_any) {
        Ok(key) => key,
        Err(_) => {
            let rest: TokenStream = input.parse()?;
            return Err(syn::Error::new_spanned(
                rest,
                format!("expected an option; the options are {VALID_OPTIONS}"),
            ));
        }
    };
    let opt = match key.to_string().as_str() {
        "name" => {
            expect_eq(input, &key, "name = \"load_user\"")?;
            if input.peek(LitStr) {
                let lit: LitStr = input.parse()?;
                if lit.value().is_empty() {
                    return Err(syn::Error::new(lit.span(), "`name` must not be empty"));
                }
                Opt::Name(lit)
            } else {
                let value: TokenStream = input.parse()?;
                return Err(syn::Error::new_spanned(
                    value,
                    "`name` expects a string literal, e.g. `name = \"load_user\"`",
                ));
            }
        }
        "metrics" => {
            expect_eq(input, &key, "metrics = false")?;
            if input.peek(LitBool) {
                Opt::Metrics(input.parse()?)
            } else {
                let value: TokenStream = input.parse()?;
                return Err(syn::Error::new_spanned(
                    value,
                    "`metrics` expects `true` or `false`, e.g. `metrics = false`",
                ));
            }
        }
        "skip" => {
            let content = parenthesized(input, &key, "skip(param, ...)")?;
            let names: Punctuated<Ident, Token![,]> =
                Punctuated::parse_terminated_with(&content, Ident::parse_any)?;
            if names.is_empty() {
                return Err(syn::Error::new(
                    key.span(),
                    "`skip()` names no parameter: write `skip(param, ...)`, or remove it",
                ));
            }
            Opt::Skip(names.into_iter().collect())
        }
        "skip_all" => Opt::SkipAll,
        "err" => {
            if input.peek(syn::token::Paren) {
                let content = parenthesized(input, &key, "err(Debug)")?;
                let inner: TokenStream = content.parse()?;
                let mode = syn::parse2::<Ident>(inner.clone()).ok().map(|m| m.to_string());
                match mode.as_deref() {
                    Some("Debug") => Opt::Err(ErrMode::Debug),
                    Some("Display") => Opt::Err(ErrMode::Display),
                    _ => {
                        let message = "expected `err`, `err(Display)` or `err(Debug)`";
                        return Err(if inner.is_empty() {
                            syn::Error::new(key.span(), message)
                        } else {
                            syn::Error::new_spanned(inner, message)
                        });
                    }
                }
            } else {
                Opt::Err(ErrMode::Display)
            }
        }
        "error_if" | "ok_if" => {
            let rule_name = if key == "error_if" {
                "is_failure"
            } else {
                "is_success"
            };
            let example = format!("{key} = {rule_name}");
            expect_eq(input, &key, &example)?;
            let rule: Expr = input.parse().map_err(|_| {
                syn::Error::new(
                    key.span(),
                    format!(
                        "`{key}` expects a function of a reference to the returned value, e.g. \
                         `{example}` with `fn {rule_name}(r: &Response) -> bool`"
                    ),
                )
            })?;
            if key == "error_if" {
                Opt::Outcome(Outcome::ErrorIf(rule))
            } else {
                Opt::Outcome(Outcome::OkIf(rule))
            }
        }
        "objective" => {
            expect_eq(input, &key, "objective = CHECKOUT")?;
            Opt::Objective(input.parse().map_err(|_| {
                syn::Error::new(
                    key.span(),
                    "`objective` expects a constant `obskit::objectives::Objective`, e.g. `objective = CHECKOUT`",
                )
            })?)
        }
        "fields" => {
            let content = parenthesized(input, &key, "fields(key = value, ...)")?;
            let fields: Punctuated<Field, Token![,]> =
                Punctuated::parse_terminated_with(&content, parse_field)?;
            Opt::Fields(fields.into_iter().collect())
        }
        other => {
            let mut message = format!("unknown option `{other}`; the options are {VALID_OPTIONS}");
            if matches!(other, "level" | "target" | "ret" | "parent" | "follows_from") {
                message.push_str(&format!(
                    " (`{other}` is a `tracing::instrument` option that obskit does not have)"
                ));
            }
            return Err(syn::Error::new(key.span(), message));
        }
    };
    if !input.is_empty() {
        let rest: TokenStream = input.parse()?;
        return Err(syn::Error::new_spanned(
            rest,
            format!("unexpected tokens after `{key}`; separate options with commas"),
        ));
    }
    Ok((key, opt))
}

fn expect_eq(input: ParseStream, key: &Ident, example: &str) -> syn::Result<()> {
    if input.peek(Token![=]) {
        input.parse::<Token![=]>()?;
        if input.is_empty() {
            return Err(syn::Error::new(
                key.span(),
                format!("`{key}` needs a value, e.g. `{example}`"),
            ));
        }
        Ok(())
    } else {
        Err(syn::Error::new(
            key.span(),
            format!("expected `{key} = ...`, e.g. `{example}`"),
        ))
    }
}

fn parenthesized<'a>(
    input: ParseStream<'a>,
    key: &Ident,
    example: &str,
) -> syn::Result<syn::parse::ParseBuffer<'a>> {
    if !input.peek(syn::token::Paren) {
        return Err(syn::Error::new(
            key.span(),
            format!("expected `{key}(...)`, e.g. `{example}`"),
        ));
    }
    let content;
    syn::parenthesized!(content in input);
    Ok(content)
}

/// `key = value`, `key = ?value` or `key = %value`; the key is `ident(.ident)*` or a string.
fn parse_field(input: ParseStream) -> syn::Result<Field> {
    let (key, key_tokens) = if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        if lit.value().is_empty() {
            return Err(syn::Error::new(lit.span(), "a field name must not be empty"));
        }
        (lit.value(), lit.to_token_stream())
    } else {
        let first = input.call(Ident::parse_any).map_err(|error| {
            syn::Error::new(
                error.span(),
                "expected a field name: `key = value`, where `key` is `name`, `dotted.name` or \"a string\"",
            )
        })?;
        let mut key = first.unraw().to_string();
        let mut key_tokens = first.to_token_stream();
        while input.peek(Token![.]) {
            let dot: Token![.] = input.parse()?;
            let segment = input.call(Ident::parse_any)?;
            key.push('.');
            key.push_str(&segment.unraw().to_string());
            dot.to_tokens(&mut key_tokens);
            segment.to_tokens(&mut key_tokens);
        }
        (key, key_tokens)
    };
    if !input.peek(Token![=]) {
        return Err(syn::Error::new_spanned(
            key_tokens,
            format!(
                "field `{key}` needs a value: `{key} = value` (or `?value` for Debug, `%value` for Display)"
            ),
        ));
    }
    input.parse::<Token![=]>()?;
    let value = if input.peek(Token![?]) {
        input.parse::<Token![?]>()?;
        FieldValue::Debug(input.parse()?)
    } else if input.peek(Token![%]) {
        input.parse::<Token![%]>()?;
        FieldValue::Display(input.parse()?)
    } else {
        FieldValue::Plain(input.parse()?)
    };
    Ok(Field {
        key,
        key_tokens,
        value,
    })
}
