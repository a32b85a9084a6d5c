//! The masking of secrets in `/debug/config` and span attributes (`masked_value`,
//! `mask_keyed`, `mask_secrets`): never a panic; a secret-looking key hides its value whole;
//! masking is idempotent; and a password put into a URL, or a header value put into a header
//! list, among arbitrary text never comes out.
//!
//! Input: a key, a newline, a value; optionally a second newline and a password that is then
//! embedded (`<value> postgres://svc:<password>@db:5432/app <value>`, and
//! `<value>,authorization=Bearer <password>`) and must be masked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use obskit::secrets::{is_header_list_key, is_secret_key, mask_keyed, mask_secrets, masked_value, MASK};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\n');
    let key = parts.next().unwrap_or("");
    let value = parts.next().unwrap_or("");
    let password = parts.next();

    let masked = masked_value(key, value);
    assert_eq!(mask_keyed(key, value), masked);
    if is_header_list_key(key) {
        assert_eq!(
            masked_value(key, &masked),
            masked,
            "header masking is not idempotent: {value:?}"
        );
    } else if is_secret_key(key) {
        assert_eq!(masked, MASK);
    } else {
        assert_eq!(masked, mask_secrets(value));
    }
    let once = mask_secrets(value);
    assert_eq!(mask_secrets(&once), once, "masking is not idempotent: {value:?}");

    // A password with none of the characters that end a URL's authority or a header list's
    // item, no '*' (so that an occurrence in the output cannot be made of the mask), not
    // already in the surrounding text: if it shows in the output, masking leaked it.
    let Some(password) = password else {
        return;
    };
    let (url_start, url_end) = (" postgres://svc:", "@db:5432/app ");
    let header = ",authorization=Bearer ";
    if password.is_empty()
        || password.contains(|c: char| matches!(c, '/' | '?' | '#' | '*' | ',') || c.is_whitespace())
        || value.contains(password)
        || url_start.contains(password)
        || url_end.contains(password)
        || header.contains(password)
    {
        return;
    }
    let embedded = format!("{value}{url_start}{password}{url_end}{value}");
    let masked = mask_secrets(&embedded);
    assert!(!masked.contains(password), "leaked {password:?}: {masked:?}");
    assert_eq!(
        mask_secrets(&masked),
        masked,
        "masking is not idempotent: {embedded:?}"
    );

    let headers = format!("{value}{header}{password}");
    let masked = masked_value("OTEL_EXPORTER_OTLP_HEADERS", &headers);
    assert!(!masked.contains(password), "leaked {password:?}: {masked:?}");
});
