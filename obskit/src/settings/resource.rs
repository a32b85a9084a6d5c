//! The resource: what identifies this service in every exported span
//! (`OTEL_RESOURCE_ATTRIBUTES`, the instance id).

use super::EnvSource;

/// The variable holding extra resource attributes.
pub const RESOURCE_ATTRIBUTES_ENV: &str = crate::names::env::OTEL_RESOURCE_ATTRIBUTES;

/// Reads `OTEL_RESOURCE_ATTRIBUTES` through `env`: see [`parse_resource_attributes`].
pub fn resource_attributes(env: &impl EnvSource) -> Vec<(String, String)> {
    env.get(RESOURCE_ATTRIBUTES_ENV)
        .map(|raw| parse_resource_attributes(&raw))
        .unwrap_or_default()
}

/// Parses an `OTEL_RESOURCE_ATTRIBUTES` value (`k=v,k2=v2`, values percent-decoded) into
/// pairs; members without `=` or with an empty key are left out, as the specification allows.
///
/// ```
/// use obskit::settings::parse_resource_attributes;
/// assert_eq!(
///     parse_resource_attributes("service.name=shop, team=a%20b,broken,=x"),
///     [("service.name".to_string(), "shop".to_string()), ("team".to_string(), "a b".to_string())]
/// );
/// ```
pub fn parse_resource_attributes(raw: &str) -> Vec<(String, String)> {
    raw.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_string(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A random UUID (version 4) for `service.instance.id`: unique per process start, as the
/// semantic conventions recommend when nothing better identifies the instance.
pub fn random_instance_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    // RandomState is seeded from the OS; two differently seeded hashes give 128 random bits.
    let a = RandomState::new().hash_one(std::process::id());
    let b = RandomState::new().hash_one(std::time::SystemTime::now());
    let bits = (u128::from(a) << 64 | u128::from(b)) & !(0xf000 << 64) & !(0xc000 << 48);
    let bits = bits | 0x4000 << 64 | 0x8000 << 48;
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_uuid_v4() {
        let id = random_instance_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4", "{id}");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(id, random_instance_id());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%é1"), "%é1");
        assert_eq!(percent_decode("x%4"), "x%4");
    }
}
