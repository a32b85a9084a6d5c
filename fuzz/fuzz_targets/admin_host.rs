//! The admin surface's `Host` check (loopback mode refuses a request addressed to another
//! name, against DNS rebinding): `is_loopback_authority` and `AllowedHosts`, on any `Host`
//! value and any `OBSKIT_ADMIN_ALLOWED_HOSTS` list. Never a panic; an accepted authority has no
//! userinfo, path or whitespace; case does not matter; listing an authority allows it.
//!
//! Input: the `Host` value, a newline, the comma-separated allowed hosts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use obskit::admin::{is_loopback_authority, AllowedHosts};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (authority, list) = text.split_once('\n').unwrap_or((text, ""));
    let allowed = AllowedHosts::new(list.split(','));
    let loopback = is_loopback_authority(authority);
    let listed = allowed.allows(authority);
    if loopback || listed {
        assert!(
            !authority.contains(|c: char| matches!(c, '@' | '/' | '?' | '#') || c.is_whitespace()),
            "accepted {authority:?}"
        );
    }
    assert_eq!(
        is_loopback_authority(&authority.to_ascii_uppercase()),
        loopback,
        "{authority:?}"
    );
    assert_eq!(
        allowed.allows(&authority.to_ascii_lowercase()),
        listed,
        "{authority:?}"
    );
    // Another entry never withdraws a host.
    if listed {
        assert!(AllowedHosts::new(list.split(',').chain(["other.example"])).allows(authority));
    }
    // A loopback authority is a well-formed one: listed, it is allowed.
    if loopback && !authority.is_empty() {
        assert!(AllowedHosts::new([authority]).allows(authority), "{authority:?}");
    }
});
