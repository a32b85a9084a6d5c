//! W3C Trace Context (`traceparent`, `tracestate`) and `baggage` propagation over HTTP headers.
//!
//! The processing model of [W3C Trace Context] Level 1, for a receiver:
//!
//! - `traceparent` is parsed strictly: lowercase hex only, exact field lengths, all-zero ids
//!   and version `ff` refused. A higher version is read as version `00` when it is at least 55
//!   characters long and the 55 are followed by nothing or by `-` (its further fields are
//!   ignored). Of `trace-flags` only the sampled bit is kept, so unknown flags go out as 0.
//!   A `traceparent` that fails to parse, or two of them, make the whole incoming context
//!   (its `tracestate` included) be ignored: the server starts a new trace instead of joining
//!   a corrupt one.
//! - `tracestate` is read only with a valid `traceparent`. Its header lines are combined with
//!   `,`; an invalid list member is dropped, not the whole header (the processing model allows
//!   either); of duplicate keys the first, leftmost, is kept, being the most recently updated;
//!   beyond 32 members, members longer than 128 characters are dropped first, then members from
//!   the end, as the recommendation's truncation rules ask. At most
//!   [`MAX_TRACESTATE_BYTES`] of it are read.
//! - `baggage` is carried through unparsed (bounded in size) for the services downstream.
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

use http::{HeaderMap, HeaderName, HeaderValue};

use super::SpanContext;

/// The `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header name.
pub const TRACESTATE: &str = "tracestate";
/// The `baggage` header name.
pub const BAGGAGE: &str = "baggage";

// The same names as `HeaderName`s, for looking headers up and setting them: a `&str` name is
// validated and lowercased again at every lookup, and every traced request looks up two of
// them (`tracestate` too when its `traceparent` is valid).
const TRACEPARENT_NAME: HeaderName = HeaderName::from_static(TRACEPARENT);
const TRACESTATE_NAME: HeaderName = HeaderName::from_static(TRACESTATE);
const BAGGAGE_NAME: HeaderName = HeaderName::from_static(BAGGAGE);

/// Length of a version-00 `traceparent` value.
const TRACEPARENT_LEN: usize = 55;
/// The W3C limit on `tracestate` list members.
const MAX_TRACESTATE_MEMBERS: usize = 32;
/// Members longer than this (`key=value`) are the first dropped when there are too many.
const LONG_TRACESTATE_MEMBER: usize = 128;
/// How much of an incoming `tracestate` (all header lines joined) is read: twice the longest
/// valid list (32 members of a 256-character key and a 256-character value), leaving room for
/// optional whitespace and empty members. Members past this limit are dropped, as the
/// recommendation's truncation rules allow; the recommendation asks that at least 512
/// characters be propagated.
pub const MAX_TRACESTATE_BYTES: usize = 32 * 1024;
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
/// let mut state = TraceState::parse("congo=t61rcWkgMzE, rojo=00f067aa0ba902b7");
/// assert_eq!(state.get("rojo"), Some("00f067aa0ba902b7"));
/// state.insert("obskit", "1").unwrap();
/// assert_eq!(state.to_string(), "obskit=1,congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
/// // An invalid member is dropped, the others kept; of duplicate keys the first is kept.
/// assert_eq!(TraceState::parse("Upper=1,rojo=1").to_string(), "rojo=1");
/// assert_eq!(TraceState::parse("a=1,a=2").to_string(), "a=1");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceState {
    members: Vec<(String, String)>,
}

impl TraceState {
    /// Parses a `tracestate` value (several header lines joined with `,`), keeping what is
    /// valid:
    ///
    /// - empty list members and optional whitespace (spaces, tabs) around members are allowed;
    /// - a member with an invalid key or value is dropped (the others are kept);
    /// - of members with the same key the first (leftmost, the most recently updated) is kept;
    /// - beyond 32 members, members longer than 128 characters are dropped first, starting
    ///   from the right, then members from the end of the list;
    /// - only the first [`MAX_TRACESTATE_BYTES`] are read; a member cut by that limit is
    ///   dropped.
    ///
    /// ```
    /// use obskit::trace::propagation::TraceState;
    /// let state = TraceState::parse("fw529a3039@dt=FW4;0;1, ,rojo=00f067aa0ba902b7,bad key=1");
    /// assert_eq!(state.get("fw529a3039@dt"), Some("FW4;0;1"));
    /// assert_eq!(state.to_string(), "fw529a3039@dt=FW4;0;1,rojo=00f067aa0ba902b7");
    /// ```
    pub fn parse(value: &str) -> TraceState {
        TraceState::parse_bytes(value.as_bytes())
    }

    /// [`parse`](TraceState::parse) on raw header bytes: a line with non-ASCII bytes loses only
    /// the members that hold them.
    fn parse_bytes(value: &[u8]) -> TraceState {
        let value = if value.len() > MAX_TRACESTATE_BYTES {
            // Keep whole members only: cut at the last ',' within the limit.
            match value[..=MAX_TRACESTATE_BYTES].iter().rposition(|&c| c == b',') {
                Some(comma) => &value[..comma],
                None => &[],
            }
        } else {
            value
        };
        let mut members: Vec<(String, String)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for member in value.split(|&c| c == b',') {
            let member = trim_ows(member);
            if member.is_empty() {
                continue;
            }
            let Some(eq) = member.iter().position(|&c| c == b'=') else {
                continue;
            };
            let (key, value) = (&member[..eq], &member[eq + 1..]);
            if validate_key(key).is_err() || validate_value(value).is_err() || !seen.insert(key) {
                continue;
            }
            // Both were checked to be printable ASCII.
            members.push((
                String::from_utf8_lossy(key).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            ));
        }
        truncate_members(&mut members);
        TraceState { members }
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
        validate_key(key.as_bytes())?;
        validate_value(value.as_bytes())?;
        self.members.retain(|(k, _)| k != key);
        self.members.insert(0, (key.to_string(), value.to_string()));
        self.members.truncate(MAX_TRACESTATE_MEMBERS);
        Ok(())
    }

    /// Whether there are no members (then no `tracestate` header is sent).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// How many members there are (at most 32).
    pub fn len(&self) -> usize {
        self.members.len()
    }
}

/// `s` without the optional whitespace (spaces and tabs) around it.
fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&c| c != b' ' && c != b'\t').unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&c| c != b' ' && c != b'\t')
        .map_or(start, |p| p + 1);
    &s[start..end]
}

/// Brings `members` down to 32 as the recommendation's truncation rules ask: members longer
/// than 128 characters go first, rightmost first, then members from the end.
fn truncate_members(members: &mut Vec<(String, String)>) {
    let Some(mut excess) = members.len().checked_sub(MAX_TRACESTATE_MEMBERS) else {
        return;
    };
    let mut drop = vec![false; members.len()];
    for (i, (key, value)) in members.iter().enumerate().rev() {
        if excess == 0 {
            break;
        }
        if key.len() + 1 + value.len() > LONG_TRACESTATE_MEMBER {
            drop[i] = true;
            excess -= 1;
        }
    }
    for flag in drop.iter_mut().rev() {
        if excess == 0 {
            break;
        }
        if !*flag {
            *flag = true;
            excess -= 1;
        }
    }
    let mut flags = drop.into_iter();
    members.retain(|_| !flags.next().unwrap_or(true));
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

/// `simple-key` (`lcalpha 0*255(keychar)`) or `multi-tenant-key`, `tenant-id@system-id`
/// (`(lcalpha / DIGIT) 0*240(keychar) "@" lcalpha 0*13(keychar)`), so that a multi-tenant key
/// too has up to 256 characters.
fn validate_key(b: &[u8]) -> Result<(), ParseError> {
    const BAD: ParseError = ParseError("invalid tracestate key");
    let at = b.iter().position(|&c| c == b'@');
    match at.map(|at| (&b[..at], &b[at + 1..])) {
        None => {
            if b.is_empty() || b.len() > 256 || !b[0].is_ascii_lowercase() || !b.iter().all(|&c| key_char(c))
            {
                return Err(BAD);
            }
        }
        Some((t, s)) => {
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
fn validate_value(b: &[u8]) -> Result<(), ParseError> {
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
        let mut lines = headers.get_all(TRACEPARENT_NAME).iter();
        // Two `traceparent` lines cannot both be right: trust neither.
        let parent = match (lines.next(), lines.next()) {
            (Some(value), None) => value.to_str().ok().and_then(|v| parse_traceparent(v).ok()),
            _ => None,
        };
        // A `tracestate` without a valid `traceparent` must not be used.
        let trace_state = match parent {
            Some(_) => TraceState::parse_bytes(&joined_bytes(headers, TRACESTATE_NAME, MAX_TRACESTATE_BYTES)),
            None => TraceState::default(),
        };
        let baggage = joined(headers, BAGGAGE_NAME, MAX_BAGGAGE_BYTES);
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
            headers.insert(TRACEPARENT_NAME, traceparent_header(span));
            // A `tracestate` left from another trace would be attributed to this one.
            headers.remove(TRACESTATE_NAME);
            if !self.trace_state.is_empty() {
                if let Ok(value) = HeaderValue::from_str(&self.trace_state.to_string()) {
                    headers.insert(TRACESTATE_NAME, value);
                }
            }
        }
        if let Some(baggage) = &self.baggage {
            if let Ok(value) = HeaderValue::from_str(baggage) {
                headers.insert(BAGGAGE_NAME, value);
            }
        }
    }
}

/// The raw bytes of all lines of header `name` joined with `,`, stopping once more than
/// `limit` bytes are gathered (the caller drops what the limit cut).
fn joined_bytes(headers: &HeaderMap, name: HeaderName, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, value) in headers.get_all(name).iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let room = (limit + 1).saturating_sub(out.len());
        let bytes = value.as_bytes();
        out.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if out.len() > limit {
            break;
        }
    }
    out
}

/// All lines of header `name` joined with `,`, if any and if all are visible ASCII and the
/// result is at most `limit` bytes.
fn joined(headers: &HeaderMap, name: HeaderName, limit: usize) -> Option<String> {
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
        let state = TraceState::parse(" ,a=1 ,\tb@c=x y, d*_-/9=~!  ,");
        assert_eq!(state.to_string(), "a=1,b@c=x y,d*_-/9=~!");
        // Each invalid member is dropped on its own; the valid one after it stays.
        for bad in [
            "A=1",
            "1a=1",
            "a=",
            "=1",
            "a",
            "a=x=y",
            "a b=1",
            "foo =1",
            "foo.bar=1",
            "@c=1",
            "b@=1",
            "b@1c=1",
            "b@abcdefghijklmno=1",
            "foo@@bar=1",
            "foo@bar@baz=1",
            "a=\u{e9}",
            "a=x\ty",
        ] {
            let state = TraceState::parse(&format!("{bad},ok=1"));
            assert_eq!(state.to_string(), "ok=1", "kept {bad:?}");
        }
        // Duplicate keys: the first, most recently updated, is kept.
        assert_eq!(TraceState::parse("foo=1,foo=1").to_string(), "foo=1");
        assert_eq!(TraceState::parse("foo=2,bar=3,foo=1").to_string(), "foo=2,bar=3");
        // A value keeps its leading spaces; trailing ones are optional whitespace.
        assert_eq!(TraceState::parse("a=  x  ").get("a"), Some("  x"));
        assert!(TraceState::parse("").is_empty());
        assert!(TraceState::parse(" \t , ,").is_empty());

        let mut full = TraceState::parse(&(0..32).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(","));
        assert_eq!(full.len(), 32);
        full.insert("new", "1").unwrap();
        assert_eq!(full.len(), 32);
        assert_eq!(full.get("new"), Some("1"));
        assert_eq!(full.get("k31"), None, "the oldest member is dropped");
        full.insert("k5", "2").unwrap();
        assert!(
            full.to_string().starts_with("k5=2,new=1,k0=v"),
            "an update moves to the front"
        );
        assert!(full.insert("Bad", "1").is_err());
        assert!(full.insert("a", "x ").is_err(), "a value cannot end in a space");
        assert!(full.insert("a", "x,y").is_err());
        assert!(full.insert("a", "").is_err());
    }

    #[test]
    fn tracestate_key_and_value_lengths() {
        // The test suite's limits: a simple key of 256 characters, a tenant of 241, a system
        // of 14, so that a multi-tenant key has the full 256 too; values up to 256.
        let cases = [
            ("z".repeat(256), true),
            ("z".repeat(257), false),
            (format!("{}@{}", "t".repeat(241), "s".repeat(14)), true),
            (format!("{}@{}", "t".repeat(242), "s".repeat(14)), false),
            (format!("{}@{}", "t".repeat(241), "s".repeat(15)), false),
            (format!("0{}@dt", "1".repeat(10)), true),
        ];
        for (key, valid) in cases {
            let state = TraceState::parse(&format!("foo=1,{key}=1"));
            assert_eq!(state.get(&key).is_some(), valid, "{} characters", key.len());
            assert_eq!(state.get("foo"), Some("1"), "the valid member stays");
        }
        let value = "v".repeat(256);
        assert_eq!(
            TraceState::parse(&format!("a={value}")).get("a"),
            Some(value.as_str())
        );
        assert!(TraceState::parse(&format!("a={value}v")).is_empty());
    }

    #[test]
    fn tracestate_all_allowed_characters() {
        // From the test suite: every key character, with and without a tenant, and every value
        // character.
        let key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/";
        let tenant_key = format!("{key}@a-z0-9_-*/");
        let value: String = (0x20u8..=0x7e)
            .filter(|&c| c != b',' && c != b'=')
            .map(char::from)
            .collect();
        for key in [key.to_string(), tenant_key] {
            let state = TraceState::parse(&format!("{key}={value}"));
            assert_eq!(state.get(&key), Some(value.as_str()));
        }
    }

    #[test]
    fn tracestate_truncation_follows_the_recommendation() {
        // 32 members are kept; a 33rd makes one go, from the end.
        let members: Vec<String> = (1..=33).map(|i| format!("bar{i:02}={i:02}")).collect();
        let state = TraceState::parse(&members[..32].join(","));
        assert_eq!(state.len(), 32);
        let state = TraceState::parse(&members.join(","));
        assert_eq!(state.len(), 32);
        assert_eq!(state.get("bar01"), Some("01"));
        assert_eq!(state.get("bar33"), None);

        // Members longer than 128 characters go first, the rightmost first.
        let long = |k: &str| format!("{k}={}", "x".repeat(128));
        let mut list = vec![long("long1")];
        list.extend((1..=31).map(|i| format!("k{i}=v")));
        list.push(long("long2"));
        list.push("last=v".to_string());
        assert_eq!(list.len(), 34);
        let state = TraceState::parse(&list.join(","));
        assert_eq!(state.len(), 32);
        assert_eq!(state.get("long1"), None);
        assert_eq!(state.get("long2"), None);
        assert_eq!(state.get("last"), Some("v"));

        let mut list = vec![long("long1")];
        list.extend((1..=32).map(|i| format!("k{i}=v")));
        let state = TraceState::parse(&list.join(","));
        assert_eq!(
            (state.len(), state.get("long1"), state.get("k32")),
            (32, None, Some("v"))
        );

        // Invalid members do not count towards the 32.
        let mut list: Vec<String> = (1..=32).map(|i| format!("k{i}=v")).collect();
        list.insert(3, "BAD=1".to_string());
        assert_eq!(TraceState::parse(&list.join(",")).len(), 32);
    }

    #[test]
    fn tracestate_input_is_bounded() {
        // Only whole members within the limit are read.
        let member = "k=v,";
        let big = member.repeat(MAX_TRACESTATE_BYTES / member.len() + 10);
        let state = TraceState::parse(&big);
        assert_eq!(state.to_string(), "k=v");
        let mut padded = " ".repeat(MAX_TRACESTATE_BYTES - 4);
        padded.push_str("a=1,b=2");
        let state = TraceState::parse(&padded);
        assert_eq!(state.to_string(), "a=1", "the member cut by the limit is dropped");
        assert!(TraceState::parse(&"x".repeat(MAX_TRACESTATE_BYTES * 2)).is_empty());
    }

    #[test]
    fn recommendation_examples() {
        // The traceparent examples.
        let sampled = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            (sampled.trace_id, sampled.span_id, sampled.sampled),
            (0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, true)
        );
        let unsampled = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.sampled);
        let congo = parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        assert_eq!(congo.span_id, 0xb7ad6b7169203331);

        // The tracestate examples, as the request goes Congo → Rojo → Congo.
        let mut state = TraceState::parse("congo=t61rcWkgMzE");
        state.insert("rojo", "00f067aa0ba902b7").unwrap();
        assert_eq!(state.to_string(), "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
        assert_eq!(
            TraceState::parse("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
            state
        );
        state.insert("congo", "ucfJifl5GOE").unwrap();
        assert_eq!(state.to_string(), "congo=ucfJifl5GOE,rojo=00f067aa0ba902b7");
        assert_eq!(
            TraceState::parse("vendorname1=opaqueValue1,vendorname2=opaqueValue2").get("vendorname2"),
            Some("opaqueValue2")
        );
        // A multi-tenant key, as a multi-tenant vendor writes them.
        let state = TraceState::parse("fw529a3039@dt=FW4;0;1;3,rojo=00f067aa0ba902b7");
        assert_eq!(state.get("fw529a3039@dt"), Some("FW4;0;1;3"));
        // The recommendation's "would not be" example: a key given twice.
        let state =
            TraceState::parse("congo=congosFirstPosition,rojo=rojosFirstPosition,congo=congosSecondPosition");
        assert_eq!(
            state.to_string(),
            "congo=congosFirstPosition,rojo=rojosFirstPosition"
        );
    }

    #[test]
    fn traceparent_test_suite_cases() {
        // From the recommendation's test suite (test/test.py).
        let accepted = [
            "00-12345678901234567890123456789012-1234567890123456-01",
            "cc-12345678901234567890123456789012-1234567890123456-01",
            "cc-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like",
            " 00-12345678901234567890123456789012-1234567890123456-01",
            "\t00-12345678901234567890123456789012-1234567890123456-01",
            "00-12345678901234567890123456789012-1234567890123456-01 ",
            "\t 00-12345678901234567890123456789012-1234567890123456-01 \t",
        ];
        for value in accepted {
            let context = parse_traceparent(value).unwrap_or_else(|e| panic!("{value:?}: {e}"));
            assert_eq!(context.trace_id, 0x12345678901234567890123456789012);
        }
        let refused = [
            "00-12345678901234567890123456789012-1234567890123456-01.",
            "00-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like",
            "cc-12345678901234567890123456789012-1234567890123456-01.what-the-future-will-be-like",
            "cc-12345678901234567890123456789012-1234567890123456",
            "ff-12345678901234567890123456789012-1234567890123456-01",
            ".0-12345678901234567890123456789012-1234567890123456-01",
            "0.-12345678901234567890123456789012-1234567890123456-01",
            "000-12345678901234567890123456789012-1234567890123456-01",
            "0-12345678901234567890123456789012-1234567890123456-01",
            "00-00000000000000000000000000000000-1234567890123456-01",
            "00-.2345678901234567890123456789012-1234567890123456-01",
            "00-1234567890123456789012345678901.-1234567890123456-01",
            "00-123456789012345678901234567890123-1234567890123456-01",
            "00-1234567890123456789012345678901-1234567890123456-01",
            "00-12345678901234567890123456789012-0000000000000000-01",
            "00-12345678901234567890123456789012-.234567890123456-01",
            "00-12345678901234567890123456789012-123456789012345.-01",
            "00-12345678901234567890123456789012-12345678901234567-01",
            "00-12345678901234567890123456789012-123456789012345-01",
            "00-12345678901234567890123456789012-1234567890123456-.0",
            "00-12345678901234567890123456789012-1234567890123456-0.",
            "00-12345678901234567890123456789012-1234567890123456-001",
            "00-12345678901234567890123456789012-1234567890123456-1",
        ];
        for value in refused {
            assert!(parse_traceparent(value).is_err(), "accepted {value:?}");
        }
        // A future version's unknown flags are not carried: only the sampled bit is.
        let future = parse_traceparent("cc-12345678901234567890123456789012-1234567890123456-ff").unwrap();
        assert_eq!(
            format_traceparent(&future),
            "00-12345678901234567890123456789012-1234567890123456-01"
        );
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

        // Lines are combined in order; an invalid member, an empty line and a duplicate are
        // dropped on their own.
        let remote = RemoteContext::extract(&headers(&[
            ("traceparent", VALID),
            ("tracestate", "foo=1,bar=2"),
            ("tracestate", ""),
            ("tracestate", "rojo=1,BAD=x,congo=2"),
            ("tracestate", "baz=3,foo=9"),
        ]));
        assert_eq!(remote.trace_state.to_string(), "foo=1,bar=2,rojo=1,congo=2,baz=3");

        // A line with bytes that are not ASCII loses only the member holding them.
        let mut map = headers(&[("traceparent", VALID)]);
        map.append("tracestate", HeaderValue::from_bytes(b"a=\xe9t\xe9,b=2").unwrap());
        assert_eq!(RemoteContext::extract(&map).trace_state.to_string(), "b=2");

        // No valid traceparent, no tracestate, even a valid one.
        let remote = RemoteContext::extract(&headers(&[("tracestate", "foo=1")]));
        assert!(remote.trace_state.is_empty());

        // A huge tracestate is read up to the limit, whole members only.
        let huge = "k=v,".repeat(MAX_TRACESTATE_BYTES);
        let remote = RemoteContext::extract(&headers(&[("traceparent", VALID), ("tracestate", &huge)]));
        assert_eq!(remote.trace_state.to_string(), "k=v");

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
