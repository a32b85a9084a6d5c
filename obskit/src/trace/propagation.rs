//! W3C Trace Context (`traceparent`, `tracestate`) and `baggage` propagation over HTTP headers.
//!
//! Parsing is strict, as the [W3C Trace Context] recommendation asks of a receiver: lowercase
//! hex only, exact field lengths, all-zero ids and version `ff` refused, and a `traceparent`
//! that fails to parse makes the whole incoming context (its `tracestate` included) be ignored,
//! so the server starts a new trace instead of joining a corrupt one. `baggage` is carried
//! through unparsed (bounded in size) for the services downstream.
//!
//! [W3C Trace Context]: https://www.w3.org/TR/trace-context/
//!
//! ```
//! use obskit::trace::propagation::{format_traceparent, parse_traceparent};
//!
//! let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
//! let context = parse_traceparent(header).unwrap();
//! assert_eq!(context.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
//! assert_eq!(context.span_id, 0x00f067aa0ba902b7);
//! assert!(context.sampled);
//! assert_eq!(format_traceparent(&context), header);
//!
//! // Uppercase hex, zero ids and wrong lengths are refused.
//! assert!(parse_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_err());
//! assert!(parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_err());
//! assert!(parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x").is_err());
//! ```

use std::fmt;

use http::{HeaderMap, HeaderValue};

use super::SpanContext;

/// The `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header name.
pub const TRACESTATE: &str = "tracestate";
/// The `baggage` header name.
pub const BAGGAGE: &str = "baggage";

/// Length of a version-00 `traceparent` value.
const TRACEPARENT_LEN: usize = 55;
/// The W3C limit on `tracestate` list members.
const MAX_TRACESTATE_MEMBERS: usize = 32;
/// The W3C Baggage limit on the total size of the `baggage` value: larger values are dropped
/// rather than truncated, since a truncated list member would change its meaning.
pub const MAX_BAGGAGE_BYTES: usize = 8192;

/// Why a header value was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseError(&'static str);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ParseError {}

/// Parses a `traceparent` value into the remote span's context (`span_id` is the caller's span,
/// the parent of the span the receiver opens).
///
/// Version `00` must be exactly `00-{32 hex}-{16 hex}-{2 hex}`. A higher version (not `ff`) is
/// read the same way and anything after a further `-` is ignored, as the recommendation asks
/// for forward compatibility. Surrounding spaces and tabs (HTTP optional whitespace) are
/// trimmed; nothing else is forgiven.
///
/// ```
/// use obskit::trace::propagation::parse_traceparent;
/// let unsampled = parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00").unwrap();
/// assert!(!unsampled.sampled);
/// assert!(parse_traceparent("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00").is_err());
/// assert!(parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-later").unwrap().sampled);
/// ```
pub fn parse_traceparent(value: &str) -> Result<SpanContext, ParseError> {
    let b = value.trim_matches([' ', '\t']).as_bytes();
    if b.len() < TRACEPARENT_LEN {
        return Err(ParseError("traceparent is too short"));
    }
    let version =
        lower_hex(&b[0..2]).ok_or(ParseError("traceparent version is not 2 lowercase hex digits"))?;
    if version == 0xff {
        return Err(ParseError("traceparent version ff is invalid"));
    }
    if version == 0 && b.len() != TRACEPARENT_LEN {
        return Err(ParseError("a version 00 traceparent has exactly 55 characters"));
    }
    if b.len() > TRACEPARENT_LEN && b[TRACEPARENT_LEN] != b'-' {
        return Err(ParseError("traceparent has trailing characters"));
    }
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return Err(ParseError("traceparent fields are not separated by '-'"));
    }
    let trace_id = lower_hex(&b[3..35]).ok_or(ParseError("trace-id is not 32 lowercase hex digits"))?;
    let span_id = lower_hex(&b[36..52]).ok_or(ParseError("parent-id is not 16 lowercase hex digits"))?;
    let flags = lower_hex(&b[53..55]).ok_or(ParseError("trace-flags is not 2 lowercase hex digits"))?;
    if trace_id == 0 {
        return Err(ParseError("trace-id is all zeros"));
    }
    if span_id == 0 {
        return Err(ParseError("parent-id is all zeros"));
    }
    Ok(SpanContext {
        trace_id,
        span_id: span_id as u64,
        sampled: flags & 1 == 1,
    })
}

/// The value of up to 32 lowercase hex digits, `None` on any other character.
fn lower_hex(digits: &[u8]) -> Option<u128> {
    debug_assert!(digits.len() <= 32);
    digits.iter().try_fold(0u128, |acc, &c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u128::from(d))
    })
}

/// The version-00 `traceparent` of `context`, as bytes (no allocation).
pub(crate) fn encode_traceparent(context: &SpanContext) -> [u8; TRACEPARENT_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    for i in 0..32 {
        out[3 + i] = HEX[(context.trace_id >> (124 - 4 * i) & 0xf) as usize];
    }
    for i in 0..16 {
        out[36 + i] = HEX[(context.span_id >> (60 - 4 * i) & 0xf) as usize];
    }
    if context.sampled {
        out[54] = b'1';
    }
    out
}

/// The version-00 `traceparent` value for `context` (only the `sampled` flag is set, if at all).
///
/// ```
/// use obskit::trace::{propagation::format_traceparent, SpanContext};
/// let context = SpanContext { trace_id: 1, span_id: 2, sampled: false };
/// assert_eq!(format_traceparent(&context), "00-00000000000000000000000000000001-0000000000000002-00");
/// ```
pub fn format_traceparent(context: &SpanContext) -> String {
    let bytes = encode_traceparent(context);
    // Only ASCII hex digits and '-' were written.
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The `traceparent` header value for `context`.
pub(crate) fn traceparent_header(context: &SpanContext) -> HeaderValue {
    HeaderValue::from_bytes(&encode_traceparent(context)).expect("traceparent is visible ASCII")
}

/// A validated W3C `tracestate`: vendor key/value pairs, most recently updated first.
///
/// ```
/// use obskit::trace::propagation::TraceState;
/// let mut state = TraceState::parse("congo=t61rcWkgMzE, rojo=00f067aa0ba902b7").unwrap();
/// assert_eq!(state.get("rojo"), Some("00f067aa0ba902b7"));
/// state.insert("obskit", "1").unwrap();
/// assert_eq!(state.to_string(), "obskit=1,congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
/// assert!(TraceState::parse("Upper=1").is_err());
/// assert!(TraceState::parse("a=1,a=2").is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceState {
    members: Vec<(String, String)>,
}

impl TraceState {
    /// Parses a `tracestate` value (several header lines joined with `,`). Empty list members
    /// and optional whitespace around members are allowed; an invalid key or value, a duplicate
    /// key or more than 32 members makes the whole value invalid.
    pub fn parse(value: &str) -> Result<TraceState, ParseError> {
        let mut members: Vec<(String, String)> = Vec::new();
        for member in value.split(',') {
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            let (key, value) = member
                .split_once('=')
                .ok_or(ParseError("tracestate member has no '='"))?;
            validate_key(key)?;
            validate_value(value)?;
            if members.iter().any(|(k, _)| k == key) {
                return Err(ParseError("tracestate has a duplicate key"));
            }
            if members.len() == MAX_TRACESTATE_MEMBERS {
                return Err(ParseError("tracestate has more than 32 members"));
            }
            members.push((key.to_string(), value.to_string()));
        }
        Ok(TraceState { members })
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key` and moves it to the front (the most recent vendor goes first), dropping the
    /// oldest member when the list is full.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), ParseError> {
        validate_key(key)?;
        validate_value(value)?;
        self.members.retain(|(k, _)| k != key);
        self.members.insert(0, (key.to_string(), value.to_string()));
        self.members.truncate(MAX_TRACESTATE_MEMBERS);
        Ok(())
    }

    /// Whether there are no members (then no `tracestate` header is sent).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

impl fmt::Display for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (key, value)) in self.members.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{key}={value}")?;
        }
        Ok(())
    }
}

fn key_char(c: u8) -> bool {
    matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/')
}

/// `simple-key` (`lcalpha 0*255(keychar)`) or `tenant-id@system-id`
/// (`(lcalpha / DIGIT) 0*240(keychar) "@" lcalpha 0*13(keychar)`).
fn validate_key(key: &str) -> Result<(), ParseError> {
    const BAD: ParseError = ParseError("invalid tracestate key");
    let b = key.as_bytes();
    match key.split_once('@') {
        None => {
            if b.is_empty() || b.len() > 256 || !b[0].is_ascii_lowercase() || !b.iter().all(|&c| key_char(c))
            {
                return Err(BAD);
            }
        }
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            let tenant_ok = !t.is_empty()
                && t.len() <= 241
                && (t[0].is_ascii_lowercase() || t[0].is_ascii_digit())
                && t.iter().all(|&c| key_char(c));
            let system_ok =
                !s.is_empty() && s.len() <= 14 && s[0].is_ascii_lowercase() && s.iter().all(|&c| key_char(c));
            if !tenant_ok || !system_ok {
                return Err(BAD);
            }
        }
    }
    Ok(())
}

/// `0*255(chr) nblk-chr`: printable ASCII without `,` and `=`, not ending in a space.
fn validate_value(value: &str) -> Result<(), ParseError> {
    let b = value.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 256
        && b.iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
        && b[b.len() - 1] != b' ';
    if ok {
        Ok(())
    } else {
        Err(ParseError("invalid tracestate value"))
    }
}

/// The trace context a request came with: the caller's span (the parent of the server span),
/// its `tracestate`, and its `baggage`, passed through for outgoing calls. The HTTP layer puts
/// it into the request's extensions when spans are recorded.
///
/// ```
/// use obskit::trace::propagation::RemoteContext;
/// let mut headers = http::HeaderMap::new();
/// headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
/// headers.insert("tracestate", "congo=t61rcWkgMzE".parse().unwrap());
/// headers.insert("baggage", "userId=alice".parse().unwrap());
/// let remote = RemoteContext::extract(&headers);
/// assert_eq!(remote.parent.unwrap().span_id, 0x00f067aa0ba902b7);
/// assert_eq!(remote.trace_state.get("congo"), Some("t61rcWkgMzE"));
/// assert_eq!(remote.baggage.as_deref(), Some("userId=alice"));
///
/// let mut outgoing = http::HeaderMap::new();
/// remote.inject(remote.parent.as_ref(), &mut outgoing);
/// assert_eq!(outgoing["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// assert_eq!(outgoing["tracestate"], "congo=t61rcWkgMzE");
/// assert_eq!(outgoing["baggage"], "userId=alice");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteContext {
    /// The caller's span, when a valid `traceparent` came (exactly one header line).
    pub parent: Option<SpanContext>,
    /// The caller's `tracestate`: empty without a valid `traceparent`, or when it was invalid.
    pub trace_state: TraceState,
    /// The raw `baggage` value (header lines joined with `,`), dropped beyond
    /// [`MAX_BAGGAGE_BYTES`].
    pub baggage: Option<String>,
}

impl RemoteContext {
    /// Reads the propagation headers of a request.
    pub fn extract(headers: &HeaderMap) -> RemoteContext {
        let mut lines = headers.get_all(TRACEPARENT).iter();
        // Two `traceparent` lines cannot both be right: trust neither.
        let parent = match (lines.next(), lines.next()) {
            (Some(value), None) => value.to_str().ok().and_then(|v| parse_traceparent(v).ok()),
            _ => None,
        };
        // A `tracestate` without a valid `traceparent` must not be used.
        let trace_state = match parent {
            Some(_) => joined(headers, TRACESTATE, usize::MAX)
                .and_then(|v| TraceState::parse(&v).ok())
                .unwrap_or_default(),
            None => TraceState::default(),
        };
        let baggage = joined(headers, BAGGAGE, MAX_BAGGAGE_BYTES);
        RemoteContext {
            parent,
            trace_state,
            baggage,
        }
    }

    /// Writes `traceparent` for `span` (the span making the outgoing call; nothing when
    /// `None`), and this context's `tracestate` and `baggage`, into `headers`, replacing any
    /// already there.
    pub fn inject(&self, span: Option<&SpanContext>, headers: &mut HeaderMap) {
        if let Some(span) = span {
            headers.insert(TRACEPARENT, traceparent_header(span));
            // A `tracestate` left from another trace would be attributed to this one.
            headers.remove(TRACESTATE);
            if !self.trace_state.is_empty() {
                if let Ok(value) = HeaderValue::from_str(&self.trace_state.to_string()) {
                    headers.insert(TRACESTATE, value);
                }
            }
        }
        if let Some(baggage) = &self.baggage {
            if let Ok(value) = HeaderValue::from_str(baggage) {
                headers.insert(BAGGAGE, value);
            }
        }
    }
}

/// All lines of header `name` joined with `,`, if any and if all are visible ASCII and the
/// result is at most `limit` bytes.
fn joined(headers: &HeaderMap, name: &str, limit: usize) -> Option<String> {
    let mut out = String::new();
    for value in headers.get_all(name) {
        let value = value.to_str().ok()?;
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(value);
        if out.len() > limit {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_round_trips() {
        let context = parse_traceparent(VALID).unwrap();
        assert_eq!(format_traceparent(&context), VALID);
        let context = SpanContext {
            trace_id: u128::MAX,
            span_id: u64::MAX,
            sampled: false,
        };
        let text = format_traceparent(&context);
        assert_eq!(text, "00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-00");
        assert_eq!(parse_traceparent(&text).unwrap(), context);
    }

    #[test]
    fn traceparent_is_parsed_strictly() {
        let refused = [
            "",
            "00",
            // Wrong lengths.
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-010",
            // Uppercase, non-hex, wrong separators.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // All-zero ids, the forbidden version, a future version with junk appended.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ];
        for value in refused {
            assert!(parse_traceparent(value).is_err(), "accepted {value:?}");
        }
        assert!(parse_traceparent(&format!(" {VALID}\t")).is_ok());
        let future =
            parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-ever").unwrap();
        assert!(future.sampled);
        // Only bit 0 means sampled; other flags are ignored.
        assert!(
            !parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02")
                .unwrap()
                .sampled
        );
        assert!(
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03")
                .unwrap()
                .sampled
        );
    }

    #[test]
    fn tracestate_rules() {
        let state = TraceState::parse(" ,a=1 ,\tb@c=x y, d*_-/9=~!  ,").unwrap();
        assert_eq!(state.to_string(), "a=1,b@c=x y,d*_-/9=~!");
        for bad in [
            "A=1",
            "1a=1",
            "a=",
            "=1",
            "a",
            "a=1,a=2",
            "a=x=y",
            "a b=1",
            "@c=1",
            "b@=1",
            "b@1c=1",
            "b@abcdefghijklmno=1",
            "a=\u{e9}",
        ] {
            assert!(TraceState::parse(bad).is_err(), "accepted {bad:?}");
        }
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert!(TraceState::parse(&many[..32].join(",")).is_ok());
        assert!(TraceState::parse(&many.join(",")).is_err());
        let mut full = TraceState::parse(&many[..32].join(",")).unwrap();
        full.insert("new", "1").unwrap();
        assert_eq!(full.members.len(), 32);
        assert_eq!(full.get("new"), Some("1"));
        assert_eq!(full.get("k31"), None, "the oldest member is dropped");
        assert!(full.insert("Bad", "1").is_err());
        assert!(full.insert("a", "x ").is_err(), "a value cannot end in a space");
        assert!(full.insert("a", "x,y").is_err());
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn extraction() {
        let remote = RemoteContext::extract(&headers(&[
            ("traceparent", VALID),
            ("tracestate", "a=1"),
            ("tracestate", "b=2"),
            ("baggage", "k=v"),
            ("baggage", "k2=v2"),
        ]));
        assert_eq!(remote.parent, parse_traceparent(VALID).ok());
        assert_eq!(remote.trace_state.to_string(), "a=1,b=2");
        assert_eq!(remote.baggage.as_deref(), Some("k=v,k2=v2"));

        // Two traceparent lines: neither is trusted, nor is tracestate; baggage still passes.
        let remote = RemoteContext::extract(&headers(&[
            ("traceparent", VALID),
            ("traceparent", VALID),
            ("tracestate", "a=1"),
            ("baggage", "k=v"),
        ]));
        assert_eq!(remote.parent, None);
        assert!(remote.trace_state.is_empty());
        assert_eq!(remote.baggage.as_deref(), Some("k=v"));

        // An invalid tracestate is dropped, the traceparent kept.
        let remote = RemoteContext::extract(&headers(&[("traceparent", VALID), ("tracestate", "A=1")]));
        assert!(remote.parent.is_some());
        assert!(remote.trace_state.is_empty());

        // Oversized baggage is dropped whole.
        let big = "k=".to_string() + &"v".repeat(MAX_BAGGAGE_BYTES);
        let remote = RemoteContext::extract(&headers(&[("baggage", &big)]));
        assert_eq!(remote.baggage, None);
        assert_eq!(
            RemoteContext::extract(&HeaderMap::new()),
            RemoteContext::default()
        );
    }

    #[test]
    fn injection_replaces_stale_headers() {
        let mut out = headers(&[("traceparent", "stale"), ("tracestate", "stale=1")]);
        let span = SpanContext {
            trace_id: 7,
            span_id: 9,
            sampled: true,
        };
        RemoteContext::default().inject(Some(&span), &mut out);
        assert_eq!(
            out["traceparent"],
            "00-00000000000000000000000000000007-0000000000000009-01"
        );
        assert!(!out.contains_key("tracestate"), "a stale tracestate is removed");
        assert!(!out.contains_key("baggage"));
    }
}
