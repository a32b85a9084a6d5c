//! Checks and code generation for `#[instrumented]`. Everything the expansion does at run time
//! is a call into `::obskit::__private`; this module only decides which calls, in which order.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    AttrStyle, FnArg, GenericArgument, Ident, Item, ItemFn, LitStr, Pat, PathArguments, ReturnType,
    Signature, TraitItemFn, Type,
};

use crate::args::{self, Args, ErrMode, Errors, FieldValue, Outcome};

/// The whole macro: parse, check, generate. On any error, the errors are emitted followed by the
/// item unchanged, so that the rest of the crate still sees the function.
pub(crate) fn instrumented(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = args::parse(attr, &mut errors);
    let func = match parse_item(item.clone()) {
        Ok(func) => {
            check(&func, &args, &mut errors);
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

/// The annotated item, which must be a function with a body.
fn parse_item(item: TokenStream) -> syn::Result<ItemFn> {
    const ONLY_FNS: &str = "`#[instrumented]` can only be used on functions and methods";
    let parsed: Item = syn::parse2(item).map_err(|error| {
        syn::Error::new(
            Span::call_site(),
            format!("{ONLY_FNS}; this item does not parse as one: {error}"),
        )
    })?;
    let (what, tokens) = match parsed {
        Item::Fn(func) => return Ok(func),
        Item::Verbatim(tokens) => {
            if let Ok(decl) = syn::parse2::<TraitItemFn>(tokens) {
                if decl.default.is_none() {
                    let sig = &decl.sig;
                    let (fn_token, ident) = (&sig.fn_token, &sig.ident);
                    return Err(syn::Error::new_spanned(
                        quote!(#fn_token #ident),
                        format!(
                            "{ONLY_FNS} that have a body: `{ident}` is only declared here; put \
                             `#[instrumented]` on its implementations (or on a default body)"
                        ),
                    ));
                }
            }
            ("this item", None)
        }
        Item::Struct(s) => ("a struct", Some(pair(&s.struct_token, &s.ident))),
        Item::Enum(e) => ("an enum", Some(pair(&e.enum_token, &e.ident))),
        Item::Union(u) => ("a union", Some(pair(&u.union_token, &u.ident))),
        Item::Trait(t) => (
            "a trait; put it on the methods of its implementations (or on default method bodies)",
            Some(pair(&t.trait_token, &t.ident)),
        ),
        Item::Impl(i) => (
            "an `impl` block; put it on each method to instrument",
            Some(pair(&i.impl_token, &i.self_ty)),
        ),
        Item::Mod(m) => ("a module", Some(pair(&m.mod_token, &m.ident))),
        Item::Const(c) => ("a const", Some(pair(&c.const_token, &c.ident))),
        Item::Static(s) => ("a static", Some(pair(&s.static_token, &s.ident))),
        Item::Type(t) => ("a type alias", Some(pair(&t.type_token, &t.ident))),
        Item::ForeignMod(f) => ("an `extern` block", Some(f.abi.to_token_stream())),
        _ => ("this item", None),
    };
    let message = format!("{ONLY_FNS}, not on {what}");
    Err(match tokens {
        Some(tokens) => syn::Error::new_spanned(tokens, message),
        None => syn::Error::new(Span::call_site(), message),
    })
}

fn pair(a: &impl ToTokens, b: &impl ToTokens) -> TokenStream {
    quote!(#a #b)
}

/// A parameter recorded as a span attribute (a plain identifier pattern).
struct Param {
    ident: Ident,
    /// The attribute name (the identifier without `r#`).
    name: String,
}

/// The parameters bound to plain identifiers; `self` and patterns are never recorded.
fn params(sig: &Signature) -> (Vec<Param>, bool) {
    let mut has_self = false;
    let mut params = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(_) => has_self = true,
            FnArg::Typed(typed) => {
                if let Pat::Ident(pat) = &*typed.pat {
                    params.push(Param {
                        ident: pat.ident.clone(),
                        name: pat.ident.unraw().to_string(),
                    });
                }
            }
        }
    }
    (params, has_self)
}

/// Checks of the options against the function.
fn check(func: &ItemFn, args: &Args, errors: &mut Errors) {
    let sig = &func.sig;
    if let (Some(objective), false) = (&args.objective, args.metrics) {
        errors.push(syn::Error::new_spanned(
            objective,
            "an `objective` labels the function's metrics, which `metrics = false` turns off: \
             remove one of them",
        ));
    }
    if let (Some(outcome), false) = (&args.outcome, args.metrics) {
        let (Outcome::ErrorIf(rule) | Outcome::OkIf(rule)) = outcome;
        errors.push(syn::Error::new_spanned(
            rule,
            "`error_if` and `ok_if` decide the `result` label of the function's metrics, which \
             `metrics = false` turns off: remove one of them",
        ));
    }
    if let Some(constness) = &sig.constness {
        errors.push(syn::Error::new_spanned(
            constness,
            "`#[instrumented]` cannot be used on a `const fn`: it records metrics and a span at \
             run time, which a `const fn` cannot do",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            variadic.dots,
            "`#[instrumented]` cannot be used on a C-variadic function (one with `...` parameters)",
        ));
    }
    if let Some((err, _)) = &args.err {
        if !returns_result(&sig.output) {
            errors.push(syn::Error::new(
                err.span(),
                format!(
                    "`{err}` records the `Err` of a `Result`, but `{}` does not return one: its \
                     return type must be written as a `Result` (`Result<T, E>`, `io::Result<T>`, \
                     `anyhow::Result<T>`, ...)",
                    sig.ident.unraw()
                ),
            ));
        }
    }
    let (params, has_self) = params(sig);
    for skip in &args.skips {
        if skip == "self" {
            if !has_self {
                errors.push(syn::Error::new(
                    skip.span(),
                    "`skip(self)`: this function has no `self` parameter",
                ));
            }
            // Otherwise a no-op: `self` is never recorded.
        } else if params.iter().any(|p| skip.unraw() == p.name) {
            // A parameter that exists: fine.
        } else if bound_by_pattern(sig, skip) {
            errors.push(syn::Error::new(
                skip.span(),
                format!(
                    "`skip({0})`: `{0}` is bound by a destructuring pattern, and such parameters \
                     are never recorded; remove it from `skip`",
                    skip.unraw()
                ),
            ));
        } else {
            let known: Vec<String> = params.iter().map(|p| format!("`{}`", p.name)).collect();
            let hint = if known.is_empty() {
                "it has no parameter that could be recorded".to_string()
            } else {
                format!("its recorded parameters are {}", known.join(", "))
            };
            errors.push(syn::Error::new(
                skip.span(),
                format!(
                    "`skip({0})`: this function has no parameter named `{0}` ({hint})",
                    skip.unraw()
                ),
            ));
        }
    }
}

/// Whether `name` is bound inside a parameter's destructuring pattern.
fn bound_by_pattern(sig: &Signature, name: &Ident) -> bool {
    fn binds(pat: &Pat, name: &Ident) -> bool {
        match pat {
            Pat::Ident(p) => p.ident == *name || p.subpat.as_ref().is_some_and(|(_, sub)| binds(sub, name)),
            Pat::Paren(p) => binds(&p.pat, name),
            Pat::Reference(p) => binds(&p.pat, name),
            Pat::Type(p) => binds(&p.pat, name),
            Pat::Or(p) => p.cases.iter().any(|c| binds(c, name)),
            Pat::Slice(p) => p.elems.iter().any(|e| binds(e, name)),
            Pat::Tuple(p) => p.elems.iter().any(|e| binds(e, name)),
            Pat::TupleStruct(p) => p.elems.iter().any(|e| binds(e, name)),
            Pat::Struct(p) => p.fields.iter().any(|f| binds(&f.pat, name)),
            _ => false,
        }
    }
    sig.inputs.iter().any(|input| match input {
        FnArg::Typed(typed) => !matches!(&*typed.pat, Pat::Ident(_)) && binds(&typed.pat, name),
        FnArg::Receiver(_) => false,
    })
}

/// Whether the return type is syntactically a `Result`: a path whose last segment is `Result`.
fn returns_result(output: &ReturnType) -> bool {
    returns_named(output, &["Result"])
}

/// Whether the return type, as written, is a path whose last segment is one of `names`
/// (`Result` for `io::Result<T>` too; `Response` for `http::Response<B>` and hyper's).
fn returns_named(output: &ReturnType, names: &[&str]) -> bool {
    match output {
        ReturnType::Default => false,
        ReturnType::Type(_, ty) => is_named(ty, names),
    }
}

fn is_named(ty: &Type, names: &[&str]) -> bool {
    match ty {
        Type::Path(path) => {
            path.qself.is_none()
                && path
                    .path
                    .segments
                    .last()
                    .is_some_and(|s| names.iter().any(|name| s.ident == name))
        }
        Type::Paren(paren) => is_named(&paren.elem, names),
        Type::Group(group) => is_named(&group.elem, names),
        _ => false,
    }
}

/// The return type with every `impl Trait` replaced by `_`, so that it can be written in
/// expression position (a turbofish, a `let` type), or `None` if it cannot be written there.
pub(crate) fn nameable_return_type(output: &ReturnType) -> Option<Type> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    let mut ty = (**ty).clone();
    erase_impl_trait(&mut ty);
    if contains_impl(ty.to_token_stream()) || matches!(ty, Type::Infer(_) | Type::Never(_)) {
        return None;
    }
    Some(ty)
}

fn erase_impl_trait(ty: &mut Type) {
    match ty {
        Type::ImplTrait(imp) => {
            let span = imp.impl_token.span;
            *ty = syn::parse_quote_spanned!(span=> _);
        }
        Type::Array(t) => erase_impl_trait(&mut t.elem),
        Type::Group(t) => erase_impl_trait(&mut t.elem),
        Type::Paren(t) => erase_impl_trait(&mut t.elem),
        Type::Ptr(t) => erase_impl_trait(&mut t.elem),
        Type::Reference(t) => erase_impl_trait(&mut t.elem),
        Type::Slice(t) => erase_impl_trait(&mut t.elem),
        Type::Tuple(t) => t.elems.iter_mut().for_each(erase_impl_trait),
        Type::Path(t) => {
            if let Some(qself) = &mut t.qself {
                erase_impl_trait(&mut qself.ty);
            }
            for segment in &mut t.path.segments {
                if let PathArguments::AngleBracketed(generics) = &mut segment.arguments {
                    for arg in &mut generics.args {
                        if let GenericArgument::Type(arg) = arg {
                            erase_impl_trait(arg);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

fn contains_impl(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|tree| match tree {
        TokenTree::Ident(ident) => ident == "impl",
        TokenTree::Group(group) => contains_impl(group.stream()),
        _ => false,
    })
}

/// Whether a return type is `()`, written or not.
pub(crate) fn returns_unit(output: &ReturnType) -> bool {
    match output {
        ReturnType::Default => true,
        ReturnType::Type(_, ty) => matches!(&**ty, Type::Tuple(t) if t.elems.is_empty()),
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

    // The user's statements, in braces that keep the body's own span.
    let mut user_block = TokenStream::new();
    block.brace_token.surround(&mut user_block, |tokens| {
        for stmt in &block.stmts {
            stmt.to_tokens(tokens);
        }
    });

    let fn_name = sig.ident.unraw().to_string();
    let name = match &args.name {
        Some(lit) => lit.clone(),
        None => LitStr::new(&fn_name, sig.ident.span()),
    };
    let fn_name_lit = LitStr::new(&fn_name, sig.ident.span());
    // Whether the returned value decides the `result` label: a `Result` (its `Err`), a response
    // (a 5xx status), or the caller's rule. An `async fn`'s value is always at hand; a plain
    // function's is taken only then (its body otherwise runs in place).
    let value_decides =
        returns_named(&sig.output, &["Result", "Response", "StatusCode"]) || args.outcome.is_some();
    let metrics = args.metrics;
    let err = args.err.as_ref().map(|(_, mode)| *mode);

    let objective = args
        .objective
        .as_ref()
        .map(|objective| quote_spanned!(objective.span()=> .objective(#objective)));
    let site = metrics.then(|| {
        quote! {
            static __OBSKIT_SITE: ::obskit::__private::FunctionSite =
                ::obskit::__private::FunctionSite::new(#name, ::core::module_path!()) #objective;
        }
    });
    let start_span = span_statements(&func_params(&sig, args), args, &name, &fn_name_lit, metrics);
    let ok = match &args.outcome {
        // A closure is called where it is written: that is the point of the option.
        Some(Outcome::ErrorIf(rule)) => quote_spanned! {rule.span()=> {
            #[allow(clippy::redundant_closure_call)]
            let __obskit_failed = (#rule)(&__obskit_ret);
            !__obskit_failed
        }},
        Some(Outcome::OkIf(rule)) => quote_spanned! {rule.span()=> {
            #[allow(clippy::redundant_closure_call)]
            let __obskit_succeeded = (#rule)(&__obskit_ret);
            __obskit_succeeded
        }},
        // The most specific classification the value's type has (see `__private::outcome`).
        None => quote! {{
            #[allow(unused_imports)]
            use ::obskit::__private::outcome::{AnyOutcome as _, ResponseOutcome as _, ResultOutcome as _};
            (&&&::obskit::__private::outcome::Returned(&__obskit_ret)).is_ok_call()
        }},
    };
    let record_err = err.map(|mode| match mode {
        ErrMode::Display => {
            quote!(::obskit::__private::record_err_display(&mut __obskit_span, &__obskit_ret);)
        }
        ErrMode::Debug => {
            quote!(::obskit::__private::record_err_debug(&mut __obskit_span, &__obskit_ret);)
        }
    });

    // The span ends first, and the call timer finishes at the span's end reading (one clock
    // read for both).
    let end_and_finish = quote! {
        let __obskit_ended = ::obskit::__private::end_span(&mut __obskit_span);
        __obskit_timer.finish_at(#ok, __obskit_ended);
    };
    let body = if sig.asyncness.is_some() {
        // The body of an `async fn` runs when its future is first polled: so does all of this.
        // The user's body becomes an inner future, polled with the span current.
        let fake_return = nameable_return_type(&sig.output)
            .filter(|_| !returns_unit(&sig.output))
            .map(|ty| {
                // Pins the inner block's output type before its body is checked, so that `?` and
                // `.into()` infer as they did in the `async fn` (the trick of
                // `tracing-attributes`). Never runs.
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
        let future = quote!(async move { #fake_return #user_block });
        let timer = metrics.then(|| quote!(let __obskit_timer = __OBSKIT_SITE.start();));
        match (record_err, metrics) {
            (None, false) => quote! {
                #start_span
                ::obskit::__private::InstrumentExt::instrument(#future, __obskit_span).await
            },
            (record_err, true) => quote! {
                #site
                #timer
                #start_span
                #[allow(unused_mut)]
                let (__obskit_ret, mut __obskit_span, __obskit_polls) = ::obskit::__private::in_span(
                    #future,
                    __obskit_span,
                    __obskit_timer.started_at().is_some(),
                )
                .await;
                #record_err
                let __obskit_ended = ::obskit::__private::end_span(&mut __obskit_span);
                __obskit_timer.finish_polled(#ok, __obskit_ended, &__obskit_polls);
                __obskit_ret
            },
            (Some(record_err), false) => quote! {
                #start_span
                let (__obskit_ret, mut __obskit_span, _) =
                    ::obskit::__private::in_span(#future, __obskit_span, false).await;
                #record_err
                ::core::mem::drop(__obskit_span);
                __obskit_ret
            },
        }
    } else if (metrics && value_decides) || err.is_some() {
        // The value decides the outcome: run the body in a closure (`return` and `?` then
        // return from it, with the declared type), record, return the value.
        let call = match nameable_return_type(&sig.output) {
            Some(ty) => quote!(::obskit::__private::call_once::<#ty, _>),
            None => quote!(::obskit::__private::call_once),
        };
        let timer = metrics.then(|| quote!(let __obskit_timer = __OBSKIT_SITE.start();));
        let end = if metrics {
            end_and_finish
        } else {
            quote!(::obskit::__private::end_span(&mut __obskit_span);)
        };
        quote! {
            #site
            #timer
            #start_span
            let __obskit_entered = __obskit_span.enter();
            let __obskit_ret = #call(move || #user_block);
            ::core::mem::drop(__obskit_entered);
            #record_err
            #end
            __obskit_ret
        }
    } else {
        // The outcome is `ok` unless the body panics: a guard finishes the call when it drops,
        // and the body runs in place, unchanged.
        if metrics {
            quote! {
                #site
                let mut __obskit_timer = __OBSKIT_SITE.start();
                #start_span
                let __obskit_call =
                    ::obskit::__private::FinishOnDrop::new(&mut __obskit_timer, &mut __obskit_span);
                let __obskit_entered = __obskit_call.span().enter();
                #user_block
            }
        } else {
            quote! {
                #start_span
                let __obskit_entered = __obskit_span.enter();
                #user_block
            }
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

/// The parameters to record: not skipped, and not overridden by a field of the same name.
fn func_params(sig: &Signature, args: &Args) -> Vec<Param> {
    if args.skip_all {
        return Vec::new();
    }
    params(sig)
        .0
        .into_iter()
        .filter(|p| !args.skips.iter().any(|s| s.unraw() == p.name))
        .filter(|p| !args.fields.iter().any(|f| f.key == p.name))
        .collect()
}

/// The statements that bind the started span to `__obskit_span`, its attributes computed only
/// when it records. The `if` that sets them is annotated
/// `#[allow(clippy::used_underscore_binding)]`: parameters named `_like_this` are recorded too,
/// which reads them.
///
/// With metrics, the span starts at the call timer's clock reading (one read for both).
fn span_statements(
    params: &[Param],
    args: &Args,
    name: &LitStr,
    fn_name: &LitStr,
    metrics: bool,
) -> TokenStream {
    let param_attrs = params.iter().map(|Param { ident, name }| {
        quote_spanned! {ident.span()=>
            __obskit_span.set_attr(#name, {
                #[allow(unused_imports)]
                use ::obskit::__private::{DebugAttr as _, TypedAttr as _};
                static __OBSKIT_KEY: ::obskit::__private::AttrKey =
                    ::obskit::__private::AttrKey::new(#name);
                (&::obskit::__private::Param(&#ident)).obskit_kind().attr(&__OBSKIT_KEY, &#ident)
            });
        }
    });
    let field_attrs = args.fields.iter().map(|field| {
        let span = field
            .key_tokens
            .clone()
            .into_iter()
            .next()
            .map_or_else(Span::call_site, |t| t.span());
        let key = LitStr::new(&field.key, span);
        match &field.value {
            FieldValue::Plain(expr) => quote_spanned! {expr.span()=>
                __obskit_span.set_attr(#key, ::obskit::trace::AttrValue::from(#expr));
            },
            FieldValue::Debug(expr) => quote_spanned! {expr.span()=>
                __obskit_span.set_attr(#key, {
                    static __OBSKIT_KEY: ::obskit::__private::AttrKey =
                        ::obskit::__private::AttrKey::new(#key);
                    ::obskit::__private::debug_attr(&__OBSKIT_KEY, &(#expr))
                });
            },
            FieldValue::Display(expr) => quote_spanned! {expr.span()=>
                __obskit_span.set_attr(#key, {
                    static __OBSKIT_KEY: ::obskit::__private::AttrKey =
                        ::obskit::__private::AttrKey::new(#key);
                    ::obskit::__private::display_attr(&__OBSKIT_KEY, &(#expr))
                });
            },
        }
    });
    let started = if metrics {
        quote!(__obskit_timer.started_at())
    } else {
        quote!(::core::option::Option::None)
    };
    // The span is started where it is bound and its attributes are set in place: a builder
    // moved into the span, or a span returned by value, would copy the (large) value on every
    // call, unsampled ones included.
    quote! {
        #[allow(unused_mut)]
        let mut __obskit_span = ::obskit::__private::Span::disabled();
        ::obskit::__private::start_span_in(&mut __obskit_span, #name, #started);
        #[allow(clippy::used_underscore_binding)]
        if __obskit_span.is_recording() {
            __obskit_span.set_attr(
                "code.function.name",
                ::core::concat!(::core::module_path!(), "::", #fn_name),
            );
            #(#param_attrs)*
            #(#field_attrs)*
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(tokens: &str) -> ReturnType {
        syn::parse_str(tokens).unwrap()
    }

    #[test]
    fn result_is_recognised_by_its_last_segment() {
        assert!(returns_result(&output("-> Result<u8, E>")));
        assert!(returns_result(&output("-> std::io::Result<()>")));
        assert!(returns_result(&output("-> anyhow::Result<T>")));
        assert!(returns_result(&output("-> (Result<u8, E>)")));
        assert!(!returns_result(&output("-> Option<Result<u8, E>>")));
        assert!(!returns_result(&output("-> impl Future<Output = Result<u8, E>>")));
        assert!(!returns_result(&output("-> <T as Trait>::Result")));
        assert!(!returns_result(&output("")));
    }

    #[test]
    fn impl_trait_is_erased_from_the_nameable_return_type() {
        let name =
            |tokens: &str| nameable_return_type(&output(tokens)).map(|t| t.to_token_stream().to_string());
        assert_eq!(
            name("-> Result<impl Display, E>").as_deref(),
            Some("Result < _ , E >")
        );
        assert_eq!(
            name("-> Result<(Vec<impl Debug>, &'a str), E>").as_deref(),
            Some("Result < (Vec < _ > , & 'a str) , E >")
        );
        assert_eq!(name("-> impl Iterator<Item = u8>"), None);
        assert_eq!(name("-> Box<dyn Fn() -> impl Sized>"), None);
        assert_eq!(name("-> !"), None);
        assert_eq!(name(""), None);
    }

    #[test]
    fn errors_keep_the_item() {
        let out = instrumented("bogus".parse().unwrap(), "fn f() {}".parse().unwrap()).to_string();
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.ends_with("fn f () { }"), "{out}");
    }
}
