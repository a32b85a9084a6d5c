//! Recognising and masking secrets: one set of rules shared by `/debug/config`, span attributes,
//! `/debug/traces` and exported spans, so that a value hidden in one place is hidden in every
//! other.
//!
//! Two entry points:
//!
//! - [`masked_value`] (or [`mask_keyed`], its non-allocating form) for a value that comes with
//!   a name: an environment variable, a configuration key, a span attribute. A secret-looking
//!   name ([`is_secret_key`]) hides the whole value; a header-list name
//!   (`OTEL_EXPORTER_OTLP_HEADERS`, `*_HEADERS`) hides every header value but keeps the header
//!   names; any other value goes through [`mask_secrets`].
//! - [`mask_secrets`] for a value without a name (span names, status messages, log messages):
//!   secrets are recognised by their shape alone.
//!
//! What [`mask_secrets`] recognises, in this order:
//!
//! 1. URL userinfo: `scheme://user:***@host`, `scheme://***@host` (a token used as user name,
//!    as in Sentry DSNs), whatever the password holds (`redis://u:pa/ss@h`, `amqp://u:p@ss@h`).
//! 2. Secrets in URL paths: Telegram bot tokens (`/bot***/sendMessage`), Slack and Discord
//!    webhook paths.
//! 3. JSON Web Tokens (`eyJ….….…`) anywhere.
//! 4. Tokens with a well-known prefix: GitHub (`ghp_`, `github_pat_`, ...), GitLab (`glpat-`),
//!    Slack (`xoxb-`, ...), Stripe (`sk_live_`, `whsec_`, ...), Google API keys (`AIza`), npm
//!    (`npm_`), AWS access key ids (`AKIA`/`ASIA` and 16 characters).
//! 5. Values of secret-looking names: `name=value` (query parameters, `Key=Value;` connection
//!    strings, libpq `password=x`, `authorization=Bearer x`), `"name": "value"` (JSON), and
//!    `Name: value` at the start of a line (HTTP headers, YAML). The value may be quoted
//!    (`'…'`, `"…"`) or braced (`{…}`, ODBC). In a URL query `code` is a secret name too.
//! 6. `Bearer …` and `Basic …` credentials: after `:`, `=` or a quote always; a `Bearer` at the
//!    start of the value or a line always; elsewhere when they look like credentials (a Bearer
//!    token that is not a plain lowercase word, a Basic credential that is base64 of
//!    `user:password`).
//!
//! Masking never panics, runs in time linear in the input, allocates nothing when nothing is
//! masked, and is idempotent: masking a masked value changes nothing.

use std::borrow::Cow;

/// What a masked value is replaced with.
pub const MASK: &str = "***";

/// Fragments that make a key secret wherever they appear, once the key is lowercased and
/// stripped of everything but letters and digits (`DB_PASSWORD`, `PGPASSWORD`, `x-api-key`,
/// `AccessKeyId`). Only fragments long or rare enough not to turn up inside innocent words.
const SECRET_FRAGMENTS: &[&[u8]] = &[
    b"password",
    b"passwd",
    b"passphrase",
    b"secret",
    b"credential",
    b"apikey",
    b"accesskey",
    b"privatekey",
    b"signingkey",
    b"encryptionkey",
    b"masterkey",
    b"authorization",
    b"cookie",
    b"bearer",
    b"signature",
    b"sessionid",
];

/// Endings that make a key secret (`DBPASS`, `MYSQLPWD`, `ACCOUNTKEY`, `GITHUBTOKEN`,
/// `BASICAUTH`), matched on the same normalised form.
const SECRET_SUFFIXES: &[&[u8]] = &[b"pass", b"pwd", b"key", b"token", b"auth"];

/// Words that make a key secret only as a whole word, where words are separated by anything
/// but letters and digits and by camelCase humps: `DB_PASS`, `apiKey`, `JWT_ISSUER`,
/// `SENTRY_DSN`, `TLS_CERT`, but not `KEYBOARD_LAYOUT`, `PASSENGER`, `AUTHOR`, `TOKENIZERS`.
const SECRET_WORDS: &[&str] = &[
    "key", "keys", "pass", "pwd", "pw", "token", "tokens", "auth", "jwt", "dsn", "private", "cert", "certs",
    "pem", "session", "sig", "otp", "totp", "hmac", "salt", "pat", "sas",
];

/// Well-known names that a word rule would catch but that hold no secret: the shell's working
/// directories, the SSH agent socket and password-prompt programs.
const NOT_SECRET_KEYS: &[&str] = &[
    "PWD",
    "OLDPWD",
    "SSH_AUTH_SOCK",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
    "SUDO_ASKPASS",
];

/// Whether a configuration key, environment variable, attribute or parameter name looks like it
/// holds a secret.
///
/// The rules, case-insensitive: the name contains (ignoring `_`, `-`, `.` and other separators)
/// `password`, `passwd`, `passphrase`, `secret`, `credential`, `apikey`, `accesskey`,
/// `privatekey`, `signingkey`, `encryptionkey`, `masterkey`, `authorization`, `cookie`,
/// `bearer`, `signature` or `sessionid`; or it ends in `pass`, `pwd`, `key`, `token` or `auth`;
/// or one of its words is `key(s)`, `pass`, `pwd`, `pw`, `token(s)`, `auth`, `jwt`, `dsn`,
/// `private`, `cert(s)`, `pem`, `session`, `sig`, `otp`, `totp`, `hmac`, `salt`, `pat` or
/// `sas`; or it names a header list (last word `headers` or `header`), since those carry
/// credentials. `PWD`, `OLDPWD`, `SSH_AUTH_SOCK` and the `*_ASKPASS` programs, spelt exactly so,
/// are exceptions.
///
/// Words rather than substrings for the short fragments keep `KEYBOARD_LAYOUT`, `PASSENGERS`,
/// `AUTHOR` and `TOKENIZERS_PARALLELISM` visible; the price is that a secret under a name
/// such as `APIKEYFILE` or `KEYRING` that none of the rules above covers is shown.
///
/// ```
/// use obskit::secrets::is_secret_key;
/// assert!(is_secret_key("AWS_SECRET_ACCESS_KEY"));
/// assert!(is_secret_key("api_key"));
/// assert!(is_secret_key("apiKey"));
/// assert!(is_secret_key("Authorization"));
/// assert!(is_secret_key("PGPASSWORD"));
/// assert!(is_secret_key("DB_PASS"));
/// assert!(is_secret_key("MYSQL_PWD"));
/// assert!(is_secret_key("SENTRY_DSN"));
/// assert!(!is_secret_key("RUST_LOG"));
/// assert!(!is_secret_key("KEYBOARD_LAYOUT"));
/// assert!(!is_secret_key("DATABASE_URL"));
/// ```
pub fn is_secret_key(key: &str) -> bool {
    // Exact: environment variable names are case-sensitive, and `Pwd=` in an ODBC string is
    // a password.
    if NOT_SECRET_KEYS.contains(&key) {
        return false;
    }
    let mut stack = [0u8; 128];
    let heap: Vec<u8>;
    let normalised: &[u8] = if key.len() <= stack.len() {
        let mut n = 0;
        for c in key.bytes().filter(u8::is_ascii_alphanumeric) {
            stack[n] = c.to_ascii_lowercase();
            n += 1;
        }
        &stack[..n]
    } else {
        heap = key
            .bytes()
            .filter(u8::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        &heap
    };
    SECRET_FRAGMENTS
        .iter()
        .any(|f| normalised.windows(f.len()).any(|w| w == *f))
        || SECRET_SUFFIXES.iter().any(|s| normalised.ends_with(s))
        || any_word(key, |word| {
            SECRET_WORDS.iter().any(|w| w.eq_ignore_ascii_case(word))
        })
        || is_header_list_key(key)
}

/// Whether `key` names a list of HTTP headers (`OTEL_EXPORTER_OTLP_HEADERS`,
/// `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, `otlp.headers`, `EXTRA_HEADER`): its last word is
/// `headers` or `header`. [`masked_value`] masks every header value of such a key and keeps
/// the header names.
///
/// ```
/// use obskit::secrets::is_header_list_key;
/// assert!(is_header_list_key("OTEL_EXPORTER_OTLP_HEADERS"));
/// assert!(!is_header_list_key("http.request.header.content-type"));
/// ```
pub fn is_header_list_key(key: &str) -> bool {
    let mut last = "";
    any_word(key, |word| {
        last = word;
        false
    });
    last.eq_ignore_ascii_case("headers") || last.eq_ignore_ascii_case("header")
}

/// Calls `f` on each word of `key` until it returns true: words are runs of ASCII letters and
/// digits, split at camelCase humps (`apiKey` → `api`, `Key`; `APIKey` → `API`, `Key`).
fn any_word<'k>(key: &'k str, mut f: impl FnMut(&'k str) -> bool) -> bool {
    let b = key.as_bytes();
    let mut start = None;
    for i in 0..=b.len() {
        let c = b.get(i).copied().unwrap_or(b' ');
        if !c.is_ascii_alphanumeric() {
            if let Some(s) = start.take() {
                if f(&key[s..i]) {
                    return true;
                }
            }
            continue;
        }
        match start {
            None => start = Some(i),
            Some(s) => {
                let prev = b[i - 1];
                let next_lower = b.get(i + 1).is_some_and(u8::is_ascii_lowercase);
                let hump = c.is_ascii_uppercase()
                    && (prev.is_ascii_lowercase()
                        || prev.is_ascii_digit()
                        || (prev.is_ascii_uppercase() && next_lower));
                if hump {
                    if f(&key[s..i]) {
                        return true;
                    }
                    start = Some(i);
                }
            }
        }
    }
    false
}

/// The value to show for `key`: [`MASK`] when the key looks secret ([`is_secret_key`]), every
/// header value masked when the key names a header list ([`is_header_list_key`]), otherwise
/// the value with the secrets [`mask_secrets`] recognises masked.
///
/// ```
/// use obskit::secrets::masked_value;
/// assert_eq!(masked_value("JWT_SIGNING_KEY", "abc"), "***");
/// assert_eq!(masked_value("DATABASE_URL", "postgres://u:pw@h/db"), "postgres://u:***@h/db");
/// assert_eq!(
///     masked_value("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer abc,x-tenant=acme"),
///     "authorization=***,x-tenant=***"
/// );
/// assert_eq!(masked_value("CONN", "Server=db;User Id=u;Password=pw"), "Server=db;User Id=u;Password=***");
/// assert_eq!(masked_value("PORT", "8000"), "8000");
/// ```
pub fn masked_value(key: &str, value: &str) -> String {
    mask_keyed(key, value).into_owned()
}

/// [`masked_value`] without the allocation when nothing is masked, for hot paths such as span
/// attributes.
///
/// ```
/// use std::borrow::Cow;
/// use obskit::secrets::mask_keyed;
/// assert!(matches!(mask_keyed("http.route", "/users/{id}"), Cow::Borrowed("/users/{id}")));
/// assert_eq!(mask_keyed("db.password", "hunter2"), "***");
/// ```
pub fn mask_keyed<'a>(key: &str, value: &'a str) -> Cow<'a, str> {
    KeyClass::of(key).mask(value)
}

/// What a key says about its values: the decision [`mask_keyed`] takes from the key alone, so
/// that a caller seeing the same key many times can take it once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyClass {
    /// A list of headers: every value in it is masked, the names kept.
    HeaderList,
    /// A secret: the whole value is masked.
    Secret,
    /// Anything else: values are masked by their shape only.
    Plain,
}

impl KeyClass {
    pub(crate) fn of(key: &str) -> KeyClass {
        if is_header_list_key(key) {
            KeyClass::HeaderList
        } else if is_secret_key(key) {
            KeyClass::Secret
        } else {
            KeyClass::Plain
        }
    }

    /// A string value under a key of this class, masked.
    pub(crate) fn mask(self, value: &str) -> Cow<'_, str> {
        match self {
            KeyClass::HeaderList => mask_header_list(value),
            KeyClass::Secret => Cow::Borrowed(MASK),
            KeyClass::Plain => mask_secrets(value),
        }
    }
}

/// Masks every value of a header list (`name=value,name=value` as in
/// `OTEL_EXPORTER_OTLP_HEADERS`, or `Name: value` items), keeping the names; an item with
/// neither `=` nor `:` is masked whole.
fn mask_header_list(value: &str) -> Cow<'_, str> {
    let b = value.as_bytes();
    let mut edits = Edits::new(value);
    let mut item_start = 0;
    for i in 0..=b.len() {
        if i < b.len() && b[i] != b',' {
            continue;
        }
        let item = &b[item_start..i];
        match item.iter().position(|&c| c == b'=' || c == b':') {
            Some(sep) => {
                let mut v = item_start + sep + 1;
                while v < i && matches!(b[v], b' ' | b'\t') {
                    v += 1;
                }
                if v < i {
                    edits.replace(v, i, MASK);
                }
            }
            None => {
                if item.iter().any(|c| !c.is_ascii_whitespace()) {
                    edits.replace(item_start, i, MASK);
                }
            }
        }
        item_start = i + 1;
    }
    edits.finish_cow()
}

/// Masks the secrets recognised by their shape in a value that comes without a name (see the
/// [module documentation](self) for the rules). Returns the value borrowed, without allocating,
/// when there is nothing to mask.
///
/// ```
/// use std::borrow::Cow;
/// use obskit::secrets::mask_secrets;
/// assert_eq!(mask_secrets("redis://u:pa/ss@h:6379"), "redis://u:***@h:6379");
/// assert_eq!(mask_secrets("https://hooks.example/x?token=abc&sig=def&id=7"), "https://hooks.example/x?token=***&sig=***&id=7");
/// assert_eq!(mask_secrets("host=db password=x user=u"), "host=db password=*** user=u");
/// assert_eq!(mask_secrets("Authorization: Bearer abc"), "Authorization: Bearer ***");
/// assert_eq!(mask_secrets("sent Basic dXNlcjpwYXNz upstream"), "sent Basic *** upstream");
/// assert!(matches!(mask_secrets("GET /users/42"), Cow::Borrowed(_)));
/// assert!(matches!(mask_secrets("http://host:8080/path@x"), Cow::Borrowed(_)));
/// ```
pub fn mask_secrets(value: &str) -> Cow<'_, str> {
    const PASSES: &[fn(&str) -> Option<String>] = &[
        mask_url_credentials,
        mask_telegram_bot_tokens,
        |s| mask_after_marker(s, "hooks.slack.com/services/"),
        |s| mask_after_marker(s, "discord.com/api/webhooks/"),
        |s| mask_after_marker(s, "discordapp.com/api/webhooks/"),
        mask_jwts,
        mask_prefixed_tokens,
        mask_named_values,
        mask_auth_schemes,
    ];
    // Masking can remove a delimiter an earlier rule stopped at (a braced password holding a
    // space, say), so the rules run again until nothing changes: that makes masking
    // idempotent. A value with nothing to mask is scanned once; a masked one usually twice.
    const MAX_ROUNDS: usize = 8;
    let mut out = Cow::Borrowed(value);
    for _ in 0..MAX_ROUNDS {
        let mut changed = false;
        for pass in PASSES {
            if let Some(masked) = pass(&out) {
                out = Cow::Owned(masked);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    out
}

/// Replacements applied left to right to `src`, copying it only once something changes.
struct Edits<'a> {
    src: &'a str,
    out: Option<String>,
    /// End of the part of `src` already handled.
    done: usize,
}

impl<'a> Edits<'a> {
    fn new(src: &'a str) -> Edits<'a> {
        Edits {
            src,
            out: None,
            done: 0,
        }
    }

    /// Replaces `src[start..end]` with `with`. Ranges come in increasing order, at ASCII
    /// positions (so on character boundaries); replacing a text with itself (an already masked
    /// value) copies nothing.
    fn replace(&mut self, start: usize, end: usize, with: &str) {
        if start < self.done || self.src.get(start..end) == Some(with) {
            return;
        }
        let (Some(before), Some(_)) = (self.src.get(self.done..start), self.src.get(start..end)) else {
            return;
        };
        let out = self
            .out
            .get_or_insert_with(|| String::with_capacity(self.src.len()));
        out.push_str(before);
        out.push_str(with);
        self.done = end;
    }

    fn finish(self) -> Option<String> {
        let mut out = self.out?;
        out.push_str(&self.src[self.done..]);
        Some(out)
    }

    fn finish_cow(self) -> Cow<'a, str> {
        let src = self.src;
        match self.finish() {
            Some(out) => Cow::Owned(out),
            None => Cow::Borrowed(src),
        }
    }
}

fn is_space(c: u8) -> bool {
    c.is_ascii_whitespace()
}

/// Characters of a token or key in text: letters, digits, `_` and `-`.
fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// Position of the first `needle` in `b` at or after `from`.
fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= b.len() {
        let p = i + b[i..].iter().position(|&c| c == first)?;
        if b.get(p..p + needle.len()) == Some(needle) {
            return Some(p);
        }
        i = p + 1;
    }
    None
}

/// Rule 1: the userinfo of every `scheme://userinfo@host`.
///
/// The authority normally ends at the first `/`, `?`, `#`, quote or whitespace. When it has no
/// `@` but a `:` followed by something that is not a port (`redis://u:pa/ss@h`), the password
/// may hold one of those characters: the userinfo then runs to the last `@` before the next
/// whitespace or `://`. `http://host:8080/path@x` keeps its path, as `8080` is a port.
fn mask_url_credentials(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut edits = Edits::new(s);
    let mut from = 0;
    while let Some(p) = find(b, from, b"://") {
        let start = p + 3;
        let mut end = start;
        while end < b.len() && !matches!(b[end], b'/' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'`') {
            if is_space(b[end]) {
                break;
            }
            end += 1;
        }
        let authority = &b[start..end];
        // The last '@' of this URL before whitespace or the next URL: where a password that
        // holds a delimiter ends.
        let last_at_of_url = || {
            let mut last_at = None;
            let mut i = end;
            while i < b.len() && !is_space(b[i]) && b.get(i..i + 3) != Some(b"://") {
                if b[i] == b'@' {
                    last_at = Some(i);
                }
                i += 1;
            }
            last_at
        };
        let stopped_at_quote = end < b.len() && matches!(b[end], b'"' | b'\'' | b'<' | b'>' | b'`');
        let in_authority = authority.iter().rposition(|&c| c == b'@').map(|at| start + at);
        let at = match in_authority {
            // A quote or bracket inside a password (found by the `masking` fuzz target:
            // `svc:@Secr3t>pw@db`, `svc:tok[ss'nter2@db`): the userinfo runs on to the URL's
            // last '@'.
            _ if stopped_at_quote && last_at_of_url().is_some() => last_at_of_url(),
            Some(at) => Some(at),
            None => {
                let port_like = match authority.iter().position(|&c| c == b':') {
                    None => true,
                    Some(colon) => {
                        let port = &authority[colon + 1..];
                        authority.contains(&b'[') || (!port.is_empty() && port.iter().all(u8::is_ascii_digit))
                    }
                };
                if port_like {
                    None
                } else {
                    // The password runs on: look for the last '@' of this URL.
                    last_at_of_url()
                }
            }
        };
        match at {
            Some(at) => {
                let userinfo = &b[start..at];
                match userinfo.iter().position(|&c| c == b':') {
                    Some(colon) if start + colon + 1 < at => edits.replace(start + colon + 1, at, MASK),
                    Some(_) => {}
                    None if start < at => edits.replace(start, at, MASK),
                    None => {}
                }
                from = at + 1;
            }
            None => from = end.max(start),
        }
    }
    edits.finish()
}

/// Rule 2: Telegram bot tokens in URL paths, `/bot<digits>:<token>`.
fn mask_telegram_bot_tokens(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut edits = Edits::new(s);
    let mut from = 0;
    while let Some(p) = find(b, from, b"/bot") {
        let id_start = p + 4;
        let mut i = id_start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        from = id_start;
        if i > id_start && b.get(i) == Some(&b':') {
            let mut end = i + 1;
            while end < b.len() && is_token_char(b[end]) {
                end += 1;
            }
            if end > i + 1 {
                edits.replace(id_start, end, MASK);
                from = end;
            }
        }
    }
    edits.finish()
}

/// Rule 2: webhook URLs whose path is the secret (`hooks.slack.com/services/…`): the path after
/// `marker` is masked, up to a query, fragment, quote or whitespace.
fn mask_after_marker(s: &str, marker: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut edits = Edits::new(s);
    let mut from = 0;
    while let Some(p) = find(b, from, marker.as_bytes()) {
        let start = p + marker.len();
        let mut end = start;
        while end < b.len()
            && !is_space(b[end])
            && !matches!(b[end], b'?' | b'#' | b'"' | b'\'' | b'<' | b'>')
        {
            end += 1;
        }
        if end > start {
            edits.replace(start, end, MASK);
        }
        from = end.max(start);
    }
    edits.finish()
}

/// Characters of base64url (JWT segments).
fn is_base64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// Rule 3: JSON Web Tokens, three base64url segments of which the first, a JSON object, starts
/// with `eyJ` (`{"`).
fn mask_jwts(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut edits = Edits::new(s);
    let mut from = 0;
    while let Some(p) = find(b, from, b"eyJ") {
        let run = |mut i: usize| {
            while i < b.len() && is_base64url(b[i]) {
                i += 1;
            }
            i
        };
        let seg1_end = run(p);
        from = seg1_end;
        if p > 0 && (is_base64url(b[p - 1]) || b[p - 1] == b'.') {
            continue;
        }
        if seg1_end - p < 8 || b.get(seg1_end) != Some(&b'.') {
            continue;
        }
        let seg2_end = run(seg1_end + 1);
        if seg2_end - (seg1_end + 1) < 2 || b.get(seg2_end) != Some(&b'.') {
            continue;
        }
        let end = run(seg2_end + 1);
        edits.replace(p, end, MASK);
        from = end;
    }
    edits.finish()
}

/// Rule 4: prefixes of well-known secret tokens and how many token characters must follow.
const TOKEN_PREFIXES: &[(&str, usize)] = &[
    ("ghp_", 30),
    ("gho_", 30),
    ("ghu_", 30),
    ("ghs_", 30),
    ("ghr_", 30),
    ("github_pat_", 20),
    ("glpat-", 20),
    ("xoxb-", 10),
    ("xoxp-", 10),
    ("xoxa-", 10),
    ("xoxr-", 10),
    ("xoxs-", 10),
    ("xapp-", 10),
    ("sk_live_", 10),
    ("sk_test_", 10),
    ("rk_live_", 10),
    ("rk_test_", 10),
    ("whsec_", 10),
    ("AIza", 30),
    ("npm_", 30),
];

/// Rule 4: tokens with a well-known prefix, and AWS access key ids (`AKIA`/`ASIA` followed by
/// exactly 16 uppercase letters or digits).
fn mask_prefixed_tokens(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut edits = Edits::new(s);
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_alphanumeric() || (i > 0 && is_token_char(b[i - 1])) {
            i += 1;
            continue;
        }
        let mut end = i;
        while end < b.len() && is_token_char(b[end]) {
            end += 1;
        }
        let word = &b[i..end];
        let aws = (word.starts_with(b"AKIA") || word.starts_with(b"ASIA"))
            && word.len() == 20
            && word[4..]
                .iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        let known = TOKEN_PREFIXES
            .iter()
            .any(|(prefix, min)| word.starts_with(prefix.as_bytes()) && word.len() >= prefix.len() + min);
        if aws || known {
            edits.replace(i, end, MASK);
        }
        i = end;
    }
    edits.finish()
}

/// Characters of a parameter name before `=` or `:`.
fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')
}

/// Authorization schemes whose credentials follow after a space: kept visible, the credentials
/// masked (`authorization=Bearer ***`).
const AUTH_SCHEMES: &[&str] = &[
    "bearer",
    "basic",
    "token",
    "negotiate",
    "ntlm",
    "apikey",
    "sharedkey",
];

/// The longest name looked at before `=` or `:`; a longer run of name characters is not a name.
const MAX_NAME: usize = 128;

/// Rule 5: values of secret-looking names, `name=value`, `"name": value` and `Name: value` at
/// the start of a line.
fn mask_named_values(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut edits = Edits::new(s);
    // Lookbacks stop here, so that every character is looked back at a bounded number of times.
    let mut floor = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' || b[i] == b':' {
            if let Some(end) = mask_named_value(b, i, floor, &mut edits) {
                floor = end;
                i = end.max(i + 1);
                continue;
            }
        }
        i += 1;
    }
    edits.finish()
}

/// Masks the value after the separator at `sep` if the name before it is secret; returns where
/// scanning goes on.
fn mask_named_value(b: &[u8], sep: usize, floor: usize, edits: &mut Edits<'_>) -> Option<usize> {
    let mut k = sep;
    while k > floor && sep - k < 8 && matches!(b[k - 1], b' ' | b'\t') {
        k -= 1;
    }
    let quoted = k > floor && b[k - 1] == b'"';
    if quoted {
        k -= 1;
    }
    let name_end = k;
    while k > floor && is_name_char(b[k - 1]) {
        k -= 1;
        if name_end - k > MAX_NAME {
            return None;
        }
    }
    let name_start = k;
    if name_start == name_end || (quoted && (k == floor || b[k - 1] != b'"')) {
        return None;
    }
    // The name is ASCII and between ASCII positions.
    let name = std::str::from_utf8(&b[name_start..name_end]).ok()?;
    let before = name_start.checked_sub(if quoted { 2 } else { 1 }).map(|p| b[p]);
    let line_start = {
        let mut p = name_start - usize::from(quoted);
        while p > 0 && matches!(b[p - 1], b' ' | b'\t') {
            p -= 1;
        }
        p == 0 || matches!(b[p - 1], b'\n' | b'\r')
    };
    let header_line = b[sep] == b':' && !quoted;
    if header_line && (!line_start || b.get(sep + 1..sep + 3) == Some(b"//")) {
        return None;
    }
    let in_query = matches!(before, Some(b'?' | b'&'));
    if !(is_secret_key(name) || (in_query && name.eq_ignore_ascii_case("code"))) {
        return None;
    }
    let mut v = sep + 1;
    while v < b.len() && matches!(b[v], b' ' | b'\t') {
        v += 1;
    }
    let close = match b.get(v) {
        Some(b'"') => Some(b'"'),
        Some(b'\'') => Some(b'\''),
        Some(b'{') => Some(b'}'),
        _ => None,
    };
    if let Some(close) = close {
        let mut e = v + 1;
        while e < b.len() && b[e] != close {
            // JSON and shell-style escapes: `\"` does not end the value.
            e += if b[e] == b'\\' && close == b'"' { 2 } else { 1 };
        }
        let e = e.min(b.len());
        if e > v + 1 {
            edits.replace(v + 1, e, MASK);
        }
        return Some((e + 1).min(b.len()));
    }
    let ends_value = |c: u8| -> bool {
        if header_line {
            matches!(c, b'\n' | b'\r')
        } else {
            is_space(c)
                || matches!(c, b'&' | b';' | b',' | b'"' | b'\'')
                || (quoted && matches!(c, b'}' | b']'))
        }
    };
    let mut end = v;
    while end < b.len() && !ends_value(b[end]) {
        end += 1;
    }
    // `Bearer abc`: keep the scheme, mask what follows it.
    let mut scheme_end = v;
    while scheme_end < b.len() && b[scheme_end].is_ascii_alphabetic() {
        scheme_end += 1;
    }
    let is_scheme = scheme_end > v
        && b.get(scheme_end).is_some_and(|&c| c == b' ' || c == b'\t')
        && AUTH_SCHEMES
            .iter()
            .any(|s| s.as_bytes().eq_ignore_ascii_case(&b[v..scheme_end]));
    let mut masked_from = v;
    if is_scheme {
        let mut c = scheme_end;
        while c < b.len() && matches!(b[c], b' ' | b'\t') {
            c += 1;
        }
        if !header_line {
            end = c;
            while end < b.len() && !ends_value(b[end]) && !is_space(b[end]) {
                end += 1;
            }
        }
        masked_from = c;
    }
    if end > masked_from {
        edits.replace(masked_from, end, MASK);
    }
    Some(end)
}

/// Characters of an RFC 7235 `token68` credential, without its trailing `=` padding.
fn is_token68(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
}

/// Whether `text` is base64 whose decoded bytes contain a `:` (a Basic `user:password`).
fn base64_has_colon(text: &[u8]) -> bool {
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in text {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return false,
        };
        acc = (acc << 6 | u32::from(v)) & 0xffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            if (acc >> bits) as u8 == b':' {
                return true;
            }
        }
    }
    false
}

/// Rule 6: `Bearer <token>` and `Basic <credentials>`.
fn mask_auth_schemes(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut edits = Edits::new(s);
    let mut i = 0;
    while i < b.len() {
        let scheme_len = if b[i..].len() >= 7 && b[i..i + 6].eq_ignore_ascii_case(b"bearer") {
            6
        } else if b[i..].len() >= 6 && b[i..i + 5].eq_ignore_ascii_case(b"basic") {
            5
        } else {
            i += 1;
            continue;
        };
        if i > 0 && b[i - 1].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let mut c = i + scheme_len;
        if !matches!(b[c], b' ' | b'\t') {
            i = c;
            continue;
        }
        while c < b.len() && matches!(b[c], b' ' | b'\t') {
            c += 1;
        }
        let mut end = c;
        while end < b.len() && is_token68(b[end]) {
            end += 1;
        }
        while end < b.len() && b[end] == b'=' {
            end += 1;
        }
        if end == c {
            i = c;
            continue;
        }
        let credential = &b[c..end];
        let mut p = i;
        while p > 0 && matches!(b[p - 1], b' ' | b'\t') {
            p -= 1;
        }
        // After `Authorization:` or `=`, or in quotes, the scheme is surely a header value.
        let header_value = p > 0 && matches!(b[p - 1], b':' | b'=' | b'"' | b'\'');
        let at_start = p == 0 || matches!(b[p - 1], b'\n' | b'\r');
        let masked = if scheme_len == 6 {
            // `Bearer` opens few sentences; in text, a plain lowercase word after it is prose.
            header_value || at_start || !credential.iter().all(u8::is_ascii_lowercase)
        } else {
            // `Basic` opens many: its credentials must decode to `user:password`.
            header_value || base64_has_colon(credential)
        };
        if masked {
            edits.replace(c, end, MASK);
        }
        i = end;
    }
    edits.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys() {
        for key in [
            // The usual shapes.
            "PASSWORD",
            "db_passwd",
            "client_secret",
            "GITHUB_TOKEN",
            "api_key",
            "apiKey",
            "x-api-key",
            "JWT_SIGNING_KEY",
            "credentials_file",
            "Authorization",
            "proxy-authorization",
            "http.request.header.authorization",
            "COOKIE_NAME",
            "set-cookie",
            "session_id",
            "sessionId",
            "PRIVATE_PEM",
            // Passwords under short names.
            "DB_PASS",
            "SMTP_PASS",
            "DBPASS",
            "MYSQL_PWD",
            "DB_PW",
            "PGPASSWORD",
            "MYSQL_ROOT_PASSWORD",
            "GPG_PASSPHRASE",
            // Cloud providers.
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ACCESS_KEY_ID",
            "AWS_SESSION_TOKEN",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "GOOGLE_API_KEY",
            "AZURE_CLIENT_SECRET",
            "AZURE_STORAGE_KEY",
            "AZURE_STORAGE_SAS_TOKEN",
            "AccountKey",
            "ACCOUNTKEY",
            "SharedAccessKey",
            "ARM_CLIENT_SECRET",
            // Services.
            "STRIPE_SECRET_KEY",
            "STRIPE_WEBHOOK_SECRET",
            "SLACK_BOT_TOKEN",
            "SLACK_SIGNING_SECRET",
            "TELEGRAM_BOT_TOKEN",
            "GITHUB_PAT",
            "GH_TOKEN",
            "NPM_TOKEN",
            "NODE_AUTH_TOKEN",
            "TWILIO_AUTH_TOKEN",
            "SENDGRID_API_KEY",
            "OPENAI_API_KEY",
            "HF_TOKEN",
            "VAULT_TOKEN",
            "CONSUL_HTTP_TOKEN",
            "DOCKER_PASSWORD",
            "SENTRY_DSN",
            "DSN",
            "SECRET_KEY_BASE",
            "DJANGO_SECRET_KEY",
            // Keys, certificates, signatures, tokens.
            "JWT",
            "JWT_ISSUER",
            "jwtSecret",
            "BEARER_TOKEN",
            "TLS_CERT",
            "SSL_CERT_FILE",
            "TLS_PRIVATE_KEY",
            "PRIVATE_KEY",
            "privateKey",
            "WEBHOOK_SIGNATURE",
            "HMAC_SALT",
            "OTP_SEED",
            "accessToken",
            "refresh_token",
            "GITHUBTOKEN",
            "BASICAUTH",
            "basic_auth",
            "MASTERKEYFILE",
            // Header lists carry credentials.
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            assert!(is_secret_key(key), "{key} should be secret");
        }
        for key in [
            "PATH",
            "HOME",
            "USER",
            "SHELL",
            "LANG",
            "TERM",
            "HOSTNAME",
            "RUST_LOG",
            "RUST_BACKTRACE",
            "PORT",
            "OTEL_SERVICE_NAME",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_RESOURCE_ATTRIBUTES",
            "DATABASE_URL",
            "REDIS_URL",
            "KEYBOARD_LAYOUT",
            "CARGO_PKG_NAME",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "GOOGLE_CLOUD_PROJECT",
            "AZURE_TENANT_ID",
            "PGHOST",
            "PGUSER",
            "PGDATABASE",
            "MYSQL_HOST",
            "AUTHOR",
            // A parameter holding a credentials struct shows its Debug form (the struct's own
            // secret fields are its business).
            "creds",
            "PASSENGER_COUNT",
            "TOKENIZERS_PARALLELISM",
            "COMPASS_URL",
            "PWD",
            "OLDPWD",
            "SSH_AUTH_SOCK",
            "GIT_ASKPASS",
            "XAUTHORITY",
            "http.route",
            "http.request.header.content-type",
            "url.full",
            "db.statement",
            "",
        ] {
            assert!(!is_secret_key(key), "{key} should not be secret");
        }
    }

    #[test]
    fn words_split_at_separators_and_humps() {
        let mut words = Vec::new();
        any_word("apiKey APIKey x_y.z-w HTTPServer2Port", |w| {
            words.push(w.to_string());
            false
        });
        assert_eq!(
            words,
            ["api", "Key", "API", "Key", "x", "y", "z", "w", "HTTP", "Server2", "Port"]
        );
        assert!(is_header_list_key("otlp.headers"));
        assert!(is_header_list_key("EXTRA_HEADER"));
        assert!(!is_header_list_key("HEADERS_TIMEOUT"));
    }

    /// (value, what it shows): every rule on real-world shapes.
    const MASKED: &[(&str, &str)] = &[
        // URL userinfo, whatever the password holds.
        ("postgres://u:pw@h/db", "postgres://u:***@h/db"),
        ("redis://u:pa/ss@h", "redis://u:***@h"),
        ("redis://u:pa?ss@h:6379/0", "redis://u:***@h:6379/0"),
        ("redis://u:pa#ss@h", "redis://u:***@h"),
        ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
        ("amqp://u:p@ss@host", "amqp://u:***@host"),
        ("mongodb+srv://u:p@cluster/db", "mongodb+srv://u:***@cluster/db"),
        (
            "mongodb://u:p@h1,h2,h3/db?replicaSet=rs0",
            "mongodb://u:***@h1,h2,h3/db?replicaSet=rs0",
        ),
        (
            "https://key@o1.ingest.sentry.io/1",
            "https://***@o1.ingest.sentry.io/1",
        ),
        (
            "https://ghp_x@github.com/o/r.git",
            "https://***@github.com/o/r.git",
        ),
        (
            "a=postgres://u:p@h/db,b=http://x:y@z:1?q",
            "a=postgres://u:***@h/db,b=http://x:***@z:1?q",
        ),
        (
            "connecting to mysql://root:hunter2@db:3306 failed",
            "connecting to mysql://root:***@db:3306 failed",
        ),
        (r#"{"url":"redis://u:pw@h"}"#, r#"{"url":"redis://u:***@h"}"#),
        // Query parameters with secret names; the others are kept.
        (
            "https://hooks.example/x?token=abc&sig=def",
            "https://hooks.example/x?token=***&sig=***",
        ),
        (
            "https://h/x?id=7&token=abc&page=2",
            "https://h/x?id=7&token=***&page=2",
        ),
        (
            "https://h/cb?code=4/0Ab&state=xyz",
            "https://h/cb?code=***&state=xyz",
        ),
        (
            "jdbc:postgresql://h/db?user=u&password=p",
            "jdbc:postgresql://h/db?user=u&password=***",
        ),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=AK%2F&X-Amz-Signature=ab12&X-Amz-Expires=60",
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60",
        ),
        (
            "https://a.blob.core.windows.net/c/b?sv=2022-11-02&se=2024&sig=AbC%3D",
            "https://a.blob.core.windows.net/c/b?sv=2022-11-02&se=2024&sig=***",
        ),
        (
            "https://h/x?api_key=k1&apikey=k2&access_token=t",
            "https://h/x?api_key=***&apikey=***&access_token=***",
        ),
        // Connection strings.
        (
            "Server=db;User Id=u;Password=pw;",
            "Server=db;User Id=u;Password=***;",
        ),
        (
            "Driver={ODBC};Server=db;Uid=u;Pwd={p;w}",
            "Driver={ODBC};Server=db;Uid=u;Pwd={***}",
        ),
        (
            "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k==;EndpointSuffix=core.windows.net",
            "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=***;EndpointSuffix=core.windows.net",
        ),
        (
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey=abc=",
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=***;SharedAccessKey=***",
        ),
        ("host=db password=x dbname=app", "host=db password=*** dbname=app"),
        (
            "host=db password='a b' dbname=app",
            "host=db password='***' dbname=app",
        ),
        (
            "jdbc:sqlserver://h;user=u;password=p",
            "jdbc:sqlserver://h;user=u;password=***",
        ),
        ("password = hunter2", "password = ***"),
        // JSON and header lines.
        (
            r#"{"user":"u","password":"p\"w","n":1}"#,
            r#"{"user":"u","password":"***","n":1}"#,
        ),
        (r#"{"api_key": 12345, "n": 1}"#, r#"{"api_key": ***, "n": 1}"#),
        ("Authorization: Bearer abc", "Authorization: Bearer ***"),
        ("X-Api-Key: abc def\nAccept: */*", "X-Api-Key: ***\nAccept: */*"),
        ("password: hunter2", "password: ***"),
        (
            "authorization=Bearer abc,x-api-key=k",
            "authorization=Bearer ***,x-api-key=***",
        ),
        // Bearer and Basic anywhere.
        ("Bearer eyJabc", "Bearer ***"),
        ("bearer abc", "bearer ***"),
        ("sent Bearer Zm9v-bar_1 upstream", "sent Bearer *** upstream"),
        ("Basic dXNlcjpwYXNz", "Basic ***"),
        ("auth header Basic dXNlcjpwYXNz=", "auth header Basic ***"),
        // JWTs anywhere.
        (
            "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-_nat in log",
            "token *** in log",
        ),
        ("x=eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.", "x=***"),
        // Tokens in paths and with known prefixes.
        (
            "https://api.telegram.org/bot123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11/sendMessage",
            "https://api.telegram.org/bot***/sendMessage",
        ),
        (
            "https://api.telegram.org/bot123:abc/sendMessage",
            "https://api.telegram.org/bot***/sendMessage",
        ),
        (
            "https://hooks.slack.com/services/T000/B000/XXXXXXXX",
            "https://hooks.slack.com/services/***",
        ),
        (
            "https://discord.com/api/webhooks/123/abc?wait=true",
            "https://discord.com/api/webhooks/***?wait=true",
        ),
        ("key id AKIAIOSFODNN7EXAMPLE used", "key id *** used"),
        ("ghp_0123456789abcdefghijklmnopqrstuvwxyz", "***"),
        (
            "push with github_pat_11ABCDEFG0123456789_abcdefghij",
            "push with ***",
        ),
        ("xoxb-1234567890-0987654321-AbCdEfGh", "***"),
        (
            "charge failed for sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "charge failed for ***",
        ),
        ("AIzaSyA-1234567890abcdefghijklmnopqrstu", "***"),
        ("glpat-abcdefghij0123456789", "***"),
    ];

    /// Values that must stay as they are.
    const VISIBLE: &[&str] = &[
        "8000",
        "info,hyper=warn",
        "http://host:8080/path@x",
        "http://collector:4318",
        "http://[::1]:8080/a@b",
        "https://example.com/search?q=rust&page=2",
        "postgres://h/db",
        "https://@h/x",
        "redis://u:@h",
        "://",
        "a://",
        "GET /users/{id}",
        "The quick brown fox jumps over the lazy dog.",
        "basic usage: see the docs",
        "missing bearer token",
        "the bearer of bad news",
        "invalid token: expired",
        "failed to parse key: unexpected end of input",
        "user=alice role=admin",
        "status code=500",
        "eyJ is not a token",
        "AKIA is short",
        "x=1,y=2;z=3&w=4",
        "mailto:someone@example.com",
        "alice@example.com wrote: hi",
        "",
    ];

    #[test]
    fn values_are_masked_by_shape() {
        for (value, shown) in MASKED {
            assert_eq!(mask_secrets(value), *shown, "masking {value:?}");
        }
    }

    #[test]
    fn ordinary_values_stay_visible_without_allocating() {
        for value in VISIBLE {
            let shown = mask_secrets(value);
            assert!(matches!(shown, Cow::Borrowed(_)), "{value:?} became {shown:?}");
        }
    }

    #[test]
    fn masking_is_idempotent() {
        for (_, shown) in MASKED {
            let again = mask_secrets(shown);
            assert!(matches!(again, Cow::Borrowed(_)), "{shown:?} became {again:?}");
        }
        for (key, value) in [
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer a,x-api-key=b"),
            ("DB_PASS", "x"),
            ("CONN", "Password=x"),
        ] {
            let once = masked_value(key, value);
            assert_eq!(masked_value(key, &once), once);
        }
    }

    #[test]
    fn header_lists_mask_every_value() {
        assert_eq!(
            masked_value(
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer eyJhbGciOi.eyJzdWIi.x,x-api-key=k"
            ),
            "authorization=***,x-api-key=***"
        );
        assert_eq!(
            masked_value(
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "x-honeycomb-team=abc, dataset = d"
            ),
            "x-honeycomb-team=***, dataset = ***"
        );
        assert_eq!(masked_value("EXTRA_HEADER", "X-Token: abc"), "X-Token: ***");
        assert_eq!(masked_value("OTEL_EXPORTER_OTLP_HEADERS", "junk,,a="), "***,,a=");
        assert_eq!(masked_value("OTEL_EXPORTER_OTLP_HEADERS", ""), "");
    }

    #[test]
    fn keyed_values() {
        assert_eq!(masked_value("DB_PASS", "hunter2"), "***");
        assert_eq!(masked_value("MYSQL_PWD", "hunter2"), "***");
        assert_eq!(masked_value("DSN", "host=db password=x"), "***");
        assert_eq!(
            masked_value("EXTRA_ARGS", "--db host=db password=x"),
            "--db host=db password=***"
        );
        assert_eq!(masked_value("REDIS_URL", "redis://u:pa/ss@h"), "redis://u:***@h");
        assert_eq!(masked_value("PORT", "8000"), "8000");
        assert_eq!(masked_value("RUST_LOG", "info,hyper=warn"), "info,hyper=warn");
        assert_eq!(
            masked_value("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            "http://collector:4318"
        );
        assert!(matches!(mask_keyed("PORT", "8000"), Cow::Borrowed("8000")));
        assert!(matches!(mask_keyed("DB_PASS", "x"), Cow::Borrowed(MASK)));
    }

    /// A small deterministic generator (xorshift), so that the test needs no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn arbitrary_input_neither_panics_nor_changes_on_a_second_pass() {
        const PIECES: &[&str] = &[
            "://",
            "@",
            ":",
            "=",
            "&",
            "?",
            ";",
            ",",
            " ",
            "\t",
            "\n",
            "/",
            "#",
            "\"",
            "'",
            "{",
            "}",
            "\\",
            "password",
            "token",
            "key",
            "code",
            "Bearer ",
            "basic ",
            "dXNlcjpwYXNz",
            "eyJhbGciOi",
            ".",
            "/bot12",
            "AKIA",
            "IOSFODNN7EXAMPLE",
            "ghp_",
            "u",
            "h",
            "8080",
            "é",
            "日本",
            "\u{0}",
            "***",
            "headers",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let len = (rng.next() % 24) as usize;
            let value: String = (0..len)
                .map(|_| PIECES[(rng.next() % PIECES.len() as u64) as usize])
                .collect();
            let once = mask_secrets(&value).into_owned();
            let twice = mask_secrets(&once);
            assert_eq!(twice, once, "not idempotent on {value:?}");
            let keyed = masked_value("OTEL_EXPORTER_OTLP_HEADERS", &value);
            assert_eq!(masked_value("OTEL_EXPORTER_OTLP_HEADERS", &keyed), keyed);
        }
    }

    #[test]
    fn long_inputs_take_linear_time() {
        // Quadratic scanning would take minutes on these; linear takes milliseconds. The bound
        // is a generous safety net, not a measurement.
        let started = std::time::Instant::now();
        for piece in [
            "a://",
            "@",
            "a=",
            "=",
            ":",
            "password=",
            "eyJhbGciOi",
            "Bearer ",
            "u:p/",
            "/bot1",
            "x",
            "\"password\":",
            "a://u:x/",
        ] {
            let value = piece.repeat(256 * 1024 / piece.len());
            let once = mask_secrets(&value).into_owned();
            assert_eq!(mask_secrets(&once), once);
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }

    #[test]
    fn passwords_holding_quotes_or_brackets_are_masked_whole() {
        // Found by the `masking` fuzz target.
        assert_eq!(
            mask_secrets("x postgres://svc:@Secr3t>pw@db:5432/app x"),
            "x postgres://svc:***@db:5432/app x"
        );
        assert_eq!(
            mask_secrets("postgres://svc:p@ss>word@db/x"),
            "postgres://svc:***@db/x"
        );
        assert_eq!(
            mask_secrets("see <http://u:pw@h/x> here"),
            "see <http://u:***@h/x> here"
        );
        assert_eq!(
            mask_secrets("x postgres://svc:tok4n[ss'nter2@db:5432/app x"),
            "x postgres://svc:***@db:5432/app x"
        );
    }

    #[test]
    fn userinfo_ends_at_the_last_at_sign() {
        assert_eq!(mask_secrets("amqp://u:p@ss@host"), "amqp://u:***@host");
        assert_eq!(mask_secrets("x?token=abc"), "x?token=***");
        assert_eq!(mask_secrets("://@"), "://@");
    }
}
