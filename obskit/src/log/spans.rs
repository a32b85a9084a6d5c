//! `tracing` spans as obskit spans: a span from `#[tracing::instrument]` in the service's code
//! or from a library becomes an obskit child span of whatever obskit span was current when it
//! was created, exported and shown in `/debug/traces` like obskit's own.
//!
//! Off unless a span filter enables targets (`OBSKIT_TRACING_SPANS=cart=debug,scylla=info`,
//! `tracing_subscriber`'s `Targets` syntax): libraries open many spans, and a service should pay
//! for the ones it wants to see only. While a bridged span is entered (each poll of an
//! instrumented future, so across `.await`s and worker threads), its obskit span is the current
//! one: obskit spans and log records inside it are its children.

use std::cell::RefCell;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::trace::{self, AttrValue, CurrentSpan, Span};

/// The variable naming the `tracing` span targets that become obskit spans (default none).
pub const TRACING_SPANS_ENV: &str = crate::names::env::OBSKIT_TRACING_SPANS;

/// The obskit span of a bridged `tracing` span, in its extensions.
struct Bridged(Box<Span>);

thread_local! {
    /// What was current before each bridged span entered on this thread, innermost last.
    static ENTERED: RefCell<Vec<(Id, CurrentSpan)>> = const { RefCell::new(Vec::new()) };
}

/// The layer (see the [module](self) documentation); filtered per layer by the span targets.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpanBridge;

/// Sets a `tracing` span's fields as attributes of its obskit span.
struct Fields<'a>(&'a mut Span);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .set_attr(field.name(), AttrValue::Str(value.to_string().into()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .set_attr(field.name(), AttrValue::Str(format!("{value:?}").into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.set_attr(field.name(), AttrValue::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(value) => self.0.set_attr(field.name(), AttrValue::I64(value)),
            Err(_) => self
                .0
                .set_attr(field.name(), AttrValue::Str(value.to_string().into())),
        }
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.set_attr(field.name(), AttrValue::F64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.set_attr(field.name(), AttrValue::Bool(value));
    }
}

impl<S> Layer<S> for SpanBridge
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !trace::is_enabled() {
            return;
        }
        let metadata = attrs.metadata();
        // An explicit parent that is bridged is the parent; otherwise the obskit span current
        // now (a bridged span entered on this thread, or obskit's own).
        let explicit_parent = attrs
            .parent()
            .and_then(|parent| ctx.span(parent))
            .and_then(|parent| parent.extensions().get::<Bridged>().and_then(|b| b.0.context()));
        // Built where it stays (a span is a large value: moving it costs a copy), a child of
        // the current span unless the `tracing` span names a bridged parent.
        let mut span = Box::new(Span::disabled());
        match explicit_parent {
            Some(parent) => *span = trace::span(metadata.name()).parent(parent).start(),
            None => trace::start_span_in(&mut span, metadata.name(), None),
        }
        if span.is_recording() {
            // The callsite's module as OpenTelemetry's `code.namespace` (static: nothing
            // formatted); with a few fields, the span's attributes stay inline.
            span.set_attr("code.namespace", metadata.target());
            attrs.record(&mut Fields(&mut span));
        }
        if let Some(registered) = ctx.span(id) {
            registered.extensions_mut().insert(Bridged(span));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(registered) = ctx.span(id) {
            if let Some(bridged) = registered.extensions_mut().get_mut::<Bridged>() {
                if bridged.0.is_recording() {
                    values.record(&mut Fields(&mut bridged.0));
                }
            }
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(registered) = ctx.span(id) else {
            return;
        };
        let Some(context) = registered
            .extensions()
            .get::<Bridged>()
            .and_then(|b| b.0.context())
        else {
            return;
        };
        let previous = trace::set_current(&context);
        ENTERED.with(|entered| entered.borrow_mut().push((id.clone(), previous)));
    }

    fn on_exit(&self, id: &Id, _ctx: Context<'_, S>) {
        ENTERED.with(|entered| {
            let mut entered = entered.borrow_mut();
            // Spans exit in the order they entered on a thread; one that did not enter here
            // (disabled, or entered before the bridge) has no entry.
            if let Some(at) = entered.iter().rposition(|(entered_id, _)| entered_id == id) {
                let (_, previous) = entered.remove(at);
                trace::restore_current(previous);
            }
        });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(registered) = ctx.span(&id) {
            // Dropping the obskit span ends it and hands it to the sink.
            drop(registered.extensions_mut().remove::<Bridged>());
        }
    }
}
