//! Attribute macros for [obskit](https://docs.rs/obskit): `#[instrumented]` and `#[profiled]`.
//!
//! Use them through the `obskit` crate (`obskit::instrumented`), which re-exports them: the
//! expansion refers to `::obskit::__private`, where everything it does at run time lives. This
//! crate only parses and generates code.

extern crate proc_macro;

mod args;
mod expand;
mod profiled;

/// Records every call of a function as autometrics 1.0 metrics and a span.
///
/// Works on sync and `async` functions, free functions and methods (any receiver, generics,
/// `impl Trait` arguments, where clauses, lifetimes, `unsafe fn`, trait impls, default trait
/// methods). The signature is emitted unchanged, with its attributes and doc comments.
///
/// # Metrics
///
/// Each call counts in the series of the autometrics 1.0 specification, with the labels
/// `function` (the function's name, or `name = "..."`) and `module` (`module_path!()`):
///
/// - `function_calls_total{function, module, result}`: `result="ok"` or `result="error"`. A call
///   is an error when it panics, when `error_if` / `ok_if` (below) say so, and otherwise by the
///   returned value: an HTTP response (`http::Response`, hyper's), a `StatusCode`, or a `Result`
///   of a response is an error with a 5xx status or an `Err` (what users feel as the server
///   failing: a 404 is not); any other `Result` is an error when it is `Err`. An `async fn`'s
///   value is always looked at; a sync function's only when its return type is written as a
///   `Result`, `Response` or `StatusCode` path (`io::Result<T>`, `http::Response<B>`, ...): behind
///   another alias, say how with `error_if`.
/// - `function_calls_duration_seconds{function, module}`: a histogram of call durations.
/// - `function_calls_concurrent{function, module}`: calls in flight. A future dropped before it
///   completes leaves it and records no call.
///
/// For an `async fn`, the call starts when the future is first polled, not when it is created,
/// and lasts until it completes. A sync function that returns a future (`fn f() -> impl
/// Future`) is timed while it creates the future only.
///
/// # Span
///
/// Each call opens a span named like the function (or `name = "..."`), current for the duration
/// of a sync call or during each poll of an async one, so that spans nest like calls. When a
/// span sink is installed (`obskit::trace::set_sink`), it carries:
///
/// - `code.function.name`: `module::path::function`;
/// - every parameter bound to a plain identifier, by its name, with its `Debug` form, masked as
///   `***` when the name looks like a secret (`password`, `token`, `api_key`, ...). `self` and
///   destructuring patterns are never recorded. A parameter whose type is not `Debug` must be
///   skipped;
/// - the `fields(...)`.
///
/// With no sink installed, the span costs one atomic load: nothing is formatted, allocated or
/// evaluated (field expressions included).
///
/// # Options
///
/// Comma-separated, in any order, each at most once:
///
/// - `name = "load_user"`: the span name and the `function` label.
/// - `skip(a, b)`: parameters not to record (`skip(self)` is accepted and does nothing).
/// - `skip_all`: record no parameter.
/// - `fields(key = value, user.id = id, "http.method" = "GET")`: extra span attributes; keys are
///   identifiers, dotted identifiers or strings. The value is evaluated before the body runs,
///   only when the span records, and may use the parameters (borrow them: `v.len()`, not `v`):
///   - `key = expr` converts with `obskit::trace::AttrValue::from`, which takes `&'static str`,
///     `String`, `Cow<'static, str>`, `bool`, integers and floats, by value (not `&String`,
///     `&str` borrowed from a parameter, or `&u64`: use `%` or `?`, or `.to_string()`, `*x`);
///   - `key = %expr` records the `Display` form of `expr` (any `Display` type or reference);
///   - `key = ?expr` records its `Debug` form.
///
///   `%` and `?` values are masked when the key looks like a secret. A field named like a
///   parameter replaces it.
/// - `err`: on `Err`, mark the span failed (status `Error`, and an `exception` event) with the
///   error's `Display` form; `err(Debug)` uses its `Debug` form. The return type must be written
///   as a `Result`.
/// - `error_if = is_failure` / `ok_if = is_success`: a function (or a closure, whose types have
///   no top-level comma) of a reference to the returned value, deciding whether the call is an
///   error (`error_if`) or a success (`ok_if`), in place of the default rules; one of the two,
///   as in autometrics. A panic is an error whatever they say.
/// - `metrics = false`: a span only, no metrics.
///
/// # Expansion
///
/// `return` and `?` keep their meaning. A sync function whose value is not looked at runs its
/// body in place, with a guard that records the call when it drops. One whose value is (see
/// Metrics, and `err`, `error_if`, `ok_if`) runs its body in a `move` closure called once;
/// inside that closure `#[track_caller]` does not reach `Location::caller()`. An `async fn` runs
/// its body as an inner `async move` block polled inside the span.
///
/// Not accepted (compile errors): a `const fn`, a C-variadic function, an item that is not a
/// function with a body, `err` without a `Result` return type, `skip` of a parameter that does
/// not exist, `error_if` with `ok_if`, either with `metrics = false`, unknown or repeated options.
///
/// # Example
///
/// See the runnable example on `obskit::instrumented`.
///
/// ```ignore
/// #[obskit::instrumented(skip(db), fields(user.id = id), err)]
/// async fn load_user(db: &Db, id: u64) -> Result<User, DbError> {
///     db.get(id).await
/// }
/// ```
#[proc_macro_attribute]
pub fn instrumented(attr: proc_macro::TokenStream, item: proc_macro::TokenStream) -> proc_macro::TokenStream {
    expand::instrumented(attr.into(), item.into()).into()
}

/// Captures CPU profiles of a function by policy. See `obskit::profiled` for the reference.
///
/// ```ignore
/// #[obskit::profiled(name = "checkout", every = "60s", duration = "5s")]
/// async fn checkout(cart: Cart) -> Result<Order, Error> { /* ... */ }
/// ```
#[proc_macro_attribute]
pub fn profiled(attr: proc_macro::TokenStream, item: proc_macro::TokenStream) -> proc_macro::TokenStream {
    profiled::profiled(attr.into(), item.into()).into()
}
