//! Recognising and masking secrets, shared by `/debug/config` and span attributes so that a
//! value hidden in one place is hidden in every other.

/// What a masked value is replaced with.
pub const MASK: &str = "***";

/// Fragments that mark a key as secret, matched case-insensitively anywhere in the key.
const SECRET_KEY_FRAGMENTS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "key",
    "credential",
    "auth",
    "cookie",
    "session",
    "private",
];

/// Whether a configuration key, environment variable or attribute name looks like it holds a
/// secret (`DATABASE_PASSWORD`, `api_key`, `JWT_SIGNING_KEY`, `Authorization`, ...).
///
/// ```
/// use obskit::secrets::is_secret_key;
/// assert!(is_secret_key("AWS_SECRET_ACCESS_KEY"));
/// assert!(is_secret_key("api_key"));
/// assert!(is_secret_key("Authorization"));
/// assert!(!is_secret_key("RUST_LOG"));
/// ```
pub fn is_secret_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    SECRET_KEY_FRAGMENTS
        .iter()
        .any(|fragment| lower.contains(fragment))
}

/// Masks the password (or the whole userinfo) of every URL with userinfo in `value`
/// (`postgres://user:pw@host/db` becomes `postgres://user:***@host/db`). Values without such a
/// URL come back unchanged.
///
/// ```
/// use obskit::secrets::mask_url_userinfo;
/// assert_eq!(mask_url_userinfo("postgres://u:pw@h/db"), "postgres://u:***@h/db");
/// assert_eq!(mask_url_userinfo("redis://:pw@h:6379"), "redis://:***@h:6379");
/// assert_eq!(mask_url_userinfo("https://token@h/x"), "https://***@h/x");
/// assert_eq!(mask_url_userinfo("no url here"), "no url here");
/// ```
pub fn mask_url_userinfo(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(scheme_end) = rest.find("://") {
        let authority_start = scheme_end + 3;
        out.push_str(&rest[..authority_start]);
        let after = &rest[authority_start..];
        // The authority ends at the first '/', '?', '#' or whitespace; userinfo ends at its last '@'.
        let authority_len = after
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..authority_len];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push(':');
                        out.push_str(MASK);
                    }
                    None => out.push_str(MASK),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[authority_len..];
    }
    out.push_str(rest);
    out
}

/// The value to show for `key`: [`MASK`] when the key looks secret, otherwise the value with
/// URL credentials masked.
///
/// ```
/// use obskit::secrets::masked_value;
/// assert_eq!(masked_value("JWT_SIGNING_KEY", "abc"), "***");
/// assert_eq!(masked_value("DATABASE_URL", "postgres://u:pw@h/db"), "postgres://u:***@h/db");
/// assert_eq!(masked_value("PORT", "8000"), "8000");
/// ```
pub fn masked_value(key: &str, value: &str) -> String {
    if is_secret_key(key) {
        MASK.to_string()
    } else {
        mask_url_userinfo(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys() {
        for key in [
            "PASSWORD",
            "db_passwd",
            "client_secret",
            "GITHUB_TOKEN",
            "api_key",
            "JWT_SIGNING_KEY",
            "AWS_SECRET_ACCESS_KEY",
            "credentials_file",
            "Authorization",
            "COOKIE_NAME",
            "session_id",
            "PRIVATE_PEM",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "PATH",
            "HOME",
            "RUST_LOG",
            "PORT",
            "OTEL_SERVICE_NAME",
            "DATABASE_URL",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn urls_with_userinfo_are_masked_everywhere_in_a_value() {
        assert_eq!(
            mask_url_userinfo("a=postgres://u:p@h/db,b=http://x:y@z:1?q"),
            "a=postgres://u:***@h/db,b=http://x:***@z:1?q"
        );
        assert_eq!(
            mask_url_userinfo("http://host:8080/path@x"),
            "http://host:8080/path@x"
        );
        assert_eq!(mask_url_userinfo("amqp://u:p@ss@host"), "amqp://u:***@host");
        assert_eq!(mask_url_userinfo("://@"), "://***@");
    }
}
