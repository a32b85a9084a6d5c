//! Matching a request path against the compiled route templates without allocating: the match
//! is a template index and the byte ranges of its parameters in the path.
//!
//! matchit validates the templates (syntax, conflicts) when [`Routes`](super::Routes) is built;
//! the request path is matched here, because matchit's lookup allocates when it has to
//! backtrack (a static sibling of a parameter, `/users/me` beside `/users/{id}`) or when a
//! route has more than three parameters, and its result borrows the path, which a match
//! carried in the request's extensions cannot.
//!
//! A template is a list of segments (split on `/`). Among the templates that match a path, the
//! winner is the first in the order of segment kinds, compared segment by segment: a static
//! segment before a parameter with a fixed prefix or suffix (`x-{name}.json`), before a plain
//! parameter, before a catch-all with a prefix, before a plain catch-all. That is the order in
//! which matchit's tree search tries a node's children (static first, backtracking to the
//! wildcard), so both agree; the tests check it against matchit.

use std::mem::MaybeUninit;
use std::ops::Range;

/// The most parameters a template may have (matchit's own limit is 25 per route, past which it
/// panics).
pub(crate) const MAX_PARAMS: usize = 16;

/// Where a match's parameters are in the path, in template order.
///
/// The room is left uninitialised: zeroing its 256 bytes was a `memset` call on every request,
/// most of whose paths have one parameter or none.
pub(crate) struct Spans {
    /// `ranges[..len]` are initialised.
    ranges: [MaybeUninit<Range<usize>>; MAX_PARAMS],
    len: usize,
}

impl Spans {
    /// Room for a match; filled by [`Matcher::find`], which the caller lends it to so that it
    /// is not moved around with the result.
    pub(crate) fn new() -> Spans {
        Spans {
            ranges: [const { MaybeUninit::uninit() }; MAX_PARAMS],
            len: 0,
        }
    }

    fn push(&mut self, range: Range<usize>) {
        // A template has at most MAX_PARAMS parameters (checked when compiled): past that,
        // this indexing panics rather than writing out of bounds.
        self.ranges[self.len].write(range);
        self.len += 1;
    }

    pub(crate) fn as_slice(&self) -> &[Range<usize>] {
        let initialised = &self.ranges[..self.len];
        // SAFETY: `push` initialised `ranges[..len]` (`len` only grows by `push` and is reset to
        // 0), and `MaybeUninit<T>` has the layout of `T`.
        unsafe { std::slice::from_raw_parts(initialised.as_ptr().cast::<Range<usize>>(), initialised.len()) }
    }
}

/// One `/`-separated piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Literal text (the `{{`/`}}` escapes resolved), matched byte for byte.
    Static(Box<str>),
    /// `prefix{name}suffix`: a non-empty value within one path segment.
    Param { prefix: Box<str>, suffix: Box<str> },
    /// `prefix{*name}`: the non-empty rest of the path, `/` included; always last.
    CatchAll { prefix: Box<str> },
}

impl Segment {
    /// Position in the matching order (lower wins).
    fn rank(&self) -> u8 {
        match self {
            Segment::Static(_) => 0,
            Segment::Param { prefix, suffix } if !prefix.is_empty() || !suffix.is_empty() => 1,
            Segment::Param { .. } => 2,
            Segment::CatchAll { prefix } if !prefix.is_empty() => 3,
            Segment::CatchAll { .. } => 4,
        }
    }
}

/// A template split into segments.
#[derive(Debug, Clone)]
struct Compiled {
    segments: Box<[Segment]>,
    /// The literal text of the leading static segments, from the first `/` through the `/`
    /// before the first parameter; the whole (unescaped) template when it has no parameter.
    /// One comparison settles those segments, or the whole path of a static template.
    literal: Box<str>,
    /// The index of the first segment with a parameter, `None` for a static template.
    first_dynamic: Option<usize>,
}

impl Compiled {
    /// Splits a template that matchit accepted (so it starts with `/`, its braces balance, a
    /// segment has at most one parameter and a catch-all is last).
    fn parse(template: &str) -> Compiled {
        let body = template.strip_prefix('/').unwrap_or(template);
        let mut segments = Vec::new();
        let mut rest = body;
        loop {
            let end = rest.find('/').unwrap_or(rest.len());
            let piece = &rest[..end];
            match find_param(piece) {
                None => segments.push(Segment::Static(unescape(piece).into())),
                Some((open, close)) => {
                    let prefix: Box<str> = unescape(&piece[..open]).into();
                    if piece[open + 1..].starts_with('*') {
                        // matchit accepts a catch-all only at the end of the template.
                        segments.push(Segment::CatchAll { prefix });
                        break;
                    }
                    let suffix = unescape(&piece[close + 1..]).into();
                    segments.push(Segment::Param { prefix, suffix });
                }
            }
            if end == rest.len() {
                break;
            }
            rest = &rest[end + 1..];
        }
        let first_dynamic = segments.iter().position(|s| !matches!(s, Segment::Static(_)));
        let statics = first_dynamic.unwrap_or(segments.len());
        let mut literal = String::from("/");
        for (i, segment) in segments[..statics].iter().enumerate() {
            if let Segment::Static(text) = segment {
                literal.push_str(text);
            }
            if first_dynamic.is_some() || i + 1 < statics {
                literal.push('/');
            }
        }
        Compiled {
            segments: segments.into_boxed_slice(),
            literal: literal.into(),
            first_dynamic,
        }
    }

    /// Whether `path` matches; the parameters' ranges go into `spans`.
    fn matches(&self, path: &str, spans: &mut Spans) -> bool {
        spans.len = 0;
        let Some(first) = self.first_dynamic else {
            return same(path.as_bytes(), self.literal.as_bytes());
        };
        if !starts_with(path, &self.literal) {
            return false;
        }
        let bytes = path.as_bytes();
        let mut pos = self.literal.len();
        let last = self.segments.len() - 1;
        for (i, segment) in self.segments.iter().enumerate().skip(first) {
            if let Segment::CatchAll { prefix } = segment {
                let rest = &path[pos..];
                if rest.len() <= prefix.len() || !starts_with(rest, prefix) {
                    return false;
                }
                spans.push(pos + prefix.len()..path.len());
                return true;
            }
            let end = bytes[pos..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(bytes.len(), |e| pos + e);
            let piece = &path[pos..end];
            match segment {
                Segment::Static(text) => {
                    if !same(piece.as_bytes(), text.as_bytes()) {
                        return false;
                    }
                }
                Segment::Param { prefix, suffix } => {
                    if piece.len() <= prefix.len() + suffix.len()
                        || !starts_with(piece, prefix)
                        || !ends_with(piece, suffix)
                    {
                        return false;
                    }
                    spans.push(pos + prefix.len()..end - suffix.len());
                }
                Segment::CatchAll { .. } => unreachable!("handled above"),
            }
            if i == last {
                return end == bytes.len();
            }
            if end == bytes.len() {
                return false;
            }
            pos = end + 1;
        }
        false
    }
}

/// Whether `a` and `b` hold the same bytes, compared here rather than by the C library's
/// `memcmp`, which `==` and `starts_with` on slices call. The texts are short (a template's
/// literal part, a path segment), and glibc's AVX-512 `memcmp` compares them with a masked load
/// that stalled on an Intel Xeon VM: perf put 17.7 % of `http_request/with_red_layer` in
/// `memcmp`, 95 % of it on the instruction after that load, and the request took 726 ns with
/// it, 579 ns with this loop (criterion, the same machine, bare service 408 and 396 ns).
///
/// Eight bytes at a time: a text of 8 bytes or more is compared in words, the last word read
/// where it ends (overlapping the one before), so no byte is left over. `/api/products/`
/// (14 bytes) is two word comparisons instead of fourteen byte ones.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0;
    }
    let mut diff = word(a, n - 8) ^ word(b, n - 8);
    let mut at = 0;
    while at + 8 < n {
        diff |= word(a, at) ^ word(b, at);
        at += 8;
    }
    diff == 0
}

/// The eight bytes of `bytes` from `at` (`at + 8 <= bytes.len()`), as one word.
#[inline]
fn word(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_ne_bytes(word)
}

fn starts_with(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len() && same(&text.as_bytes()[..prefix.len()], prefix.as_bytes())
}

fn ends_with(text: &str, suffix: &str) -> bool {
    text.len() >= suffix.len() && same(&text.as_bytes()[text.len() - suffix.len()..], suffix.as_bytes())
}

/// The byte positions of the `{` and `}` of the parameter in `piece`, skipping `{{`/`}}`.
fn find_param(piece: &str) -> Option<(usize, usize)> {
    let bytes = piece.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => i += 2,
            b'}' if bytes.get(i + 1) == Some(&b'}') => i += 2,
            b'{' => {
                let close = piece[i..].find('}').map_or(piece.len(), |e| i + e);
                return Some((i, close));
            }
            _ => i += 1,
        }
    }
    None
}

/// Literal text of a template piece: `{{` is `{`, `}}` is `}`.
fn unescape(text: &str) -> String {
    text.replace("{{", "{").replace("}}", "}")
}

/// All templates, compiled, and the order in which they are tried.
#[derive(Debug, Default)]
pub(crate) struct Matcher {
    templates: Box<[Compiled]>,
    /// Template indices sorted by their segments' ranks: the first that matches wins.
    order: Box<[usize]>,
}

impl Matcher {
    /// Compiles templates matchit has accepted, in order.
    pub(crate) fn new<'a>(templates: impl IntoIterator<Item = &'a str>) -> Matcher {
        let templates: Box<[Compiled]> = templates.into_iter().map(Compiled::parse).collect();
        let mut order: Vec<usize> = (0..templates.len()).collect();
        // Stable: equal ranks keep the given order.
        order.sort_by(|&a, &b| {
            let ranks = |i: usize| templates[i].segments.iter().map(Segment::rank);
            ranks(a).cmp(ranks(b))
        });
        Matcher {
            templates,
            order: order.into_boxed_slice(),
        }
    }

    /// The index of the template `path` matches; its parameters' ranges in `path` are left in
    /// `spans`. Does not allocate.
    pub(crate) fn find(&self, path: &str, spans: &mut Spans) -> Option<usize> {
        self.order
            .iter()
            .copied()
            .find(|&i| self.templates[i].matches(path, spans))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_split_into_segments() {
        let c = Compiled::parse("/a/{{x}}/{id}/x-{name}.json/src{*rest}");
        assert_eq!(
            &*c.segments,
            [
                Segment::Static("a".into()),
                Segment::Static("{x}".into()),
                Segment::Param {
                    prefix: "".into(),
                    suffix: "".into()
                },
                Segment::Param {
                    prefix: "x-".into(),
                    suffix: ".json".into()
                },
                Segment::CatchAll { prefix: "src".into() },
            ]
        );
        assert_eq!(&*Compiled::parse("/").segments, [Segment::Static("".into())]);
        assert_eq!(
            &*Compiled::parse("/a/").segments,
            [Segment::Static("a".into()), Segment::Static("".into())]
        );
    }

    #[test]
    fn byte_comparisons_agree_with_the_standard_ones() {
        let texts = [
            "",
            "/",
            "/a",
            "/api/products/",
            "/api/products/42",
            "/api/productz/",
            "x-1.json",
            "x-1.jsoN",
            "12345678",
            "123456789",
            "023456789",
            "123456780",
            "/api/products/{id}/reviews",
            "/api/products/{id}/reviewz",
            "/api/producTs/{id}/reviews",
        ];
        for a in texts {
            for b in texts {
                assert_eq!(same(a.as_bytes(), b.as_bytes()), a == b, "{a:?} {b:?}");
                assert_eq!(starts_with(a, b), a.starts_with(b), "{a:?} {b:?}");
                assert_eq!(ends_with(a, b), a.ends_with(b), "{a:?} {b:?}");
            }
        }
    }
}
