//! One log record: a `tracing` event's fields, masked, with the time, the service and the
//! current obskit span, written as one JSON object or one readable line.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level};

use crate::secrets::{mask_keyed, mask_secrets, KeyClass, MASK};
use crate::trace::{AttrValue, SpanContext};

/// How records are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object a line, for collectors.
    Json,
    /// One readable line a record, for a person at a terminal.
    Text,
}

/// A field's value as the event recorded it.
#[derive(Debug, PartialEq)]
enum Value {
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

/// The fields of one event, masked as they are recorded: by key name, and string values by
/// their shape as well (what `/debug/config` masks).
#[derive(Default)]
pub(crate) struct Fields {
    message: String,
    fields: Vec<(&'static str, Value)>,
}

impl Fields {
    /// The fields of `event`, masked.
    pub(crate) fn of(event: &Event<'_>) -> Fields {
        let mut fields = Fields::default();
        event.record(&mut fields);
        fields
    }

    /// The event's message, or its callsite's name when it has none: a span event's name, an
    /// exported record's body.
    pub(crate) fn body(&self, metadata: &tracing::Metadata<'_>) -> String {
        if self.message.is_empty() {
            metadata.name().to_string()
        } else {
            self.message.clone()
        }
    }

    /// The fields (already masked) as attributes.
    #[cfg(feature = "otlp")]
    pub(crate) fn attributes(&self) -> Vec<(Cow<'static, str>, AttrValue)> {
        self.attributes_after(Vec::with_capacity(self.fields.len()))
    }

    /// The event as a span event: named by its [`body`](Self::body), with its level, target
    /// and fields as attributes.
    pub(crate) fn span_event(
        &self,
        metadata: &tracing::Metadata<'_>,
    ) -> (String, Vec<(Cow<'static, str>, AttrValue)>) {
        let mut attributes = Vec::with_capacity(self.fields.len() + 2);
        attributes.push((
            Cow::Borrowed("level"),
            AttrValue::from(level_name(metadata.level())),
        ));
        attributes.push((
            Cow::Borrowed("target"),
            AttrValue::Str(Cow::Owned(metadata.target().to_string())),
        ));
        (self.body(metadata), self.attributes_after(attributes))
    }

    fn attributes_after(
        &self,
        mut attributes: Vec<(Cow<'static, str>, AttrValue)>,
    ) -> Vec<(Cow<'static, str>, AttrValue)> {
        for (key, value) in &self.fields {
            let value = match value {
                Value::Str(s) => AttrValue::Str(Cow::Owned(s.clone())),
                Value::I64(v) => AttrValue::I64(*v),
                Value::U64(v) => i64::try_from(*v)
                    .map_or_else(|_| AttrValue::Str(Cow::Owned(v.to_string())), AttrValue::I64),
                Value::F64(v) => AttrValue::F64(*v),
                Value::Bool(v) => AttrValue::Bool(*v),
            };
            attributes.push((Cow::Borrowed(*key), value));
        }
        attributes
    }

    fn push(&mut self, field: &Field, value: Value) {
        let key = field.name();
        let value = match value {
            Value::Str(text) => {
                // Borrowed and the same text: nothing was masked (a secret's key borrows the mask).
                let masked = match mask_keyed(key, &text) {
                    Cow::Borrowed(same) if std::ptr::eq(same, text.as_str()) => None,
                    other => Some(other.into_owned()),
                };
                Value::Str(masked.unwrap_or(text))
            }
            // A number under a secret's name (a PIN, a card number) is masked whole too.
            _ if KeyClass::of(key) == KeyClass::Secret => Value::Str(MASK.to_string()),
            other => other,
        };
        self.fields.push((key, value));
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = mask_secrets(value).into_owned();
        } else {
            self.push(field, Value::Str(value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = mask_secrets(&text).into_owned();
        } else {
            self.push(field, Value::Str(text));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The error's message, not its `Debug` structure: what a reader of the line wants.
        self.push(field, Value::Str(value.to_string()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::I64(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Value::U64(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, Value::F64(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::Bool(value));
    }
}

/// The level's name as records show it.
pub(crate) fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// What a record carries besides the event.
pub(crate) struct Context<'a> {
    pub(crate) time: SystemTime,
    pub(crate) service: &'a str,
    pub(crate) span: Option<SpanContext>,
    /// Records of this callsite suppressed by the rate limit since its last one.
    pub(crate) suppressed_before: u64,
}

/// Writes an event's `fields` as one line (ending in `\n`) into `out`.
pub(crate) fn write_record(
    out: &mut String,
    format: LogFormat,
    metadata: &tracing::Metadata<'_>,
    fields: &Fields,
    context: &Context<'_>,
) {
    let start = out.len();
    let suppressed =
        (context.suppressed_before > 0).then_some(("log.suppressed", Value::U64(context.suppressed_before)));
    let all_fields = || fields.fields.iter().chain(suppressed.iter());
    let timestamp = crate::trace::rfc3339(context.time);
    match format {
        LogFormat::Json => {
            out.push_str("{\"timestamp\":");
            json_str(out, &timestamp);
            out.push_str(",\"level\":");
            json_str(out, level_name(metadata.level()));
            out.push_str(",\"target\":");
            json_str(out, metadata.target());
            out.push_str(",\"service\":");
            json_str(out, context.service);
            out.push_str(",\"message\":");
            json_str(out, &fields.message);
            if let Some(span) = &context.span {
                let _ = write!(
                    out,
                    ",\"trace_id\":\"{:032x}\",\"span_id\":\"{:016x}\"",
                    span.trace_id, span.span_id
                );
            }
            if all_fields().next().is_some() {
                out.push_str(",\"fields\":{");
                for (i, (key, value)) in all_fields().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json_str(out, key);
                    out.push(':');
                    json_value(out, value);
                }
                out.push('}');
            }
            out.push_str("}\n");
        }
        LogFormat::Text => {
            let _ = write!(
                out,
                "{timestamp} {:>5} {}: {}",
                level_name(metadata.level()),
                metadata.target(),
                fields.message
            );
            for (key, value) in all_fields() {
                let _ = write!(out, " {key}=");
                match value {
                    Value::Str(s) if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '"') => {
                        let _ = write!(out, "{s:?}");
                    }
                    Value::Str(s) => out.push_str(s),
                    other => json_value(out, other),
                }
            }
            if let Some(span) = &context.span {
                let _ = write!(out, " trace_id={:032x}", span.trace_id);
            }
            // One record, one line: a multi-line message or field stays on its line.
            if out[start..].contains('\n') {
                let escaped = out[start..].replace('\n', "\\n");
                out.truncate(start);
                out.push_str(&escaped);
            }
            out.push('\n');
        }
    }
}

fn json_str(out: &mut String, text: &str) {
    // serde_json's escaping: control characters, quotes and backslashes; never fails on a String.
    let _ = serde_json::to_string(text).map(|s| out.push_str(&s));
}

fn json_value(out: &mut String, value: &Value) {
    match value {
        Value::Str(s) => json_str(out, s),
        Value::I64(v) => {
            let _ = write!(out, "{v}");
        }
        Value::U64(v) => {
            let _ = write!(out, "{v}");
        }
        // JSON has no NaN or infinity: those are written as strings.
        Value::F64(v) if v.is_finite() => {
            let _ = write!(out, "{v}");
        }
        Value::F64(v) => json_str(out, &v.to_string()),
        Value::Bool(v) => {
            let _ = write!(out, "{v}");
        }
    }
}
