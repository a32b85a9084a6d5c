//! `/debug/config`: the environment and the effective configuration, secrets masked.

use std::ffi::OsString;

use serde_json::{json, Map, Value};

use crate::secrets::masked_value;

/// The report for `/debug/config`:
/// `{"environment": {VAR: value, ...}, "config": {key: value, ...}}`, both sorted by key.
///
/// `effective` is the configuration the service actually runs with (after defaults and
/// overrides); a key given twice shows its last value. The environment is read now; variables
/// whose name or value is not UTF-8 are left out.
///
/// Every value goes through [`masked_value`], by name and then by value:
///
/// - a secret-looking key (`*PASSWORD*`, `*SECRET*`, `*TOKEN`, `*_KEY`, `*_PASS`, `*_PWD`,
///   `*AUTH*`, `*_DSN`, `JWT_*`, `*_CERT`, ... see [`crate::secrets::is_secret_key`]) shows
///   `***`;
/// - a header list (`OTEL_EXPORTER_OTLP_HEADERS` and other `*_HEADERS`) shows its header
///   names with every value masked (`authorization=***,x-api-key=***`);
/// - any other value has the secrets [`crate::secrets::mask_secrets`] recognises by their
///   shape masked: URL userinfo whatever the password holds, secret-named query parameters
///   (`?token=***&sig=***`), `Key=Value` pairs and connection strings (`Password=***`,
///   `AccountKey=***`, libpq `password=***`), `Bearer ***`/`Basic ***`, JSON Web Tokens,
///   Telegram bot tokens in URLs, well-known token prefixes (`ghp_`, `xoxb-`, `sk_live_`,
///   `AKIA`, ...).
///
/// What none of these rules recognises is shown as it is: a bare password or an opaque token
/// with no recognisable prefix in a variable with an innocent name (`EXTRA_ARGS=hunter2`).
/// Keep secrets under secret-looking names.
///
/// ```
/// use obskit::debug::config_report;
///
/// let report = config_report(&[
///     ("port", "8000".to_string()),
///     ("api_key", "sk-live-1234".to_string()),
///     ("cassandra.url", "cassandra://store:s3cr3t@cassandra:9042".to_string()),
/// ]);
/// assert_eq!(report["config"]["port"], "8000");
/// assert_eq!(report["config"]["api_key"], "***");
/// assert_eq!(report["config"]["cassandra.url"], "cassandra://store:***@cassandra:9042");
/// assert!(report["environment"].is_object());
/// ```
pub fn config_report(effective: &[(&str, String)]) -> Value {
    let environment = utf8_sorted(std::env::vars_os());

    let mut config: Vec<&(&str, String)> = effective.iter().collect();
    // Stable, so that of a duplicated key the last entry is inserted last and wins.
    config.sort_by_key(|(key, _)| *key);

    json!({
        "environment": masked(environment.iter().map(|(key, value)| (key.as_str(), value.as_str()))),
        "config": masked(config.into_iter().map(|(key, value)| (*key, value.as_str()))),
    })
}

/// The UTF-8 entries of `vars`, sorted by key here rather than left to the JSON map, whose
/// order depends on serde_json's features.
fn utf8_sorted(vars: impl Iterator<Item = (OsString, OsString)>) -> Vec<(String, String)> {
    let mut entries: Vec<(String, String)> = vars
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
        .collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    entries
}

fn masked<'a>(entries: impl Iterator<Item = (&'a str, &'a str)>) -> Map<String, Value> {
    let mut map = Map::new();
    for (key, value) in entries {
        map.insert(key.to_string(), Value::String(masked_value(key, value)));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_sorted_masked_and_last_wins() {
        let report = config_report(&[
            ("z.port", "1".to_string()),
            ("database.password", "hunter2".to_string()),
            ("a.url", "redis://:pw@cache:6379/0".to_string()),
            ("z.port", "2".to_string()),
        ]);
        let config = report["config"].as_object().unwrap();
        assert_eq!(
            config.keys().collect::<Vec<_>>(),
            ["a.url", "database.password", "z.port"]
        );
        assert_eq!(config["a.url"], "redis://:***@cache:6379/0");
        assert_eq!(config["database.password"], "***");
        assert_eq!(config["z.port"], "2");
    }

    #[test]
    fn the_issue_examples_are_masked() {
        let config: Vec<(&str, String)> = [
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln,x-api-key=k",
            ),
            ("DB_PASS", "hunter2"),
            ("MYSQL_PWD", "hunter2"),
            ("SQLSERVER", "Server=db;User Id=u;Password=hunter2"),
            (
                "WEBHOOK_URL",
                "https://hooks.example/x?token=abc&sig=def&channel=ops",
            ),
            ("CACHE", "redis://u:pa/ss@h"),
            ("PG_CONNINFO", "host=db password=x"),
            ("EXTRA_HEADER_LINE", "Authorization: Bearer abc"),
            ("UPSTREAM_CREDENTIAL_VALUE", "Bearer eyJabc"),
            ("PROXY", "Basic dXNlcjpwYXNz"),
            (
                "EXTRA_ARGS",
                "--jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln --verbose",
            ),
            ("AWS_PROFILE_NOTE", "id AKIAIOSFODNN7EXAMPLE"),
            (
                "STORAGE",
                "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k;EndpointSuffix=core.windows.net",
            ),
            ("JDBC", "jdbc:postgresql://h/db?user=u&password=p"),
            ("BOT_URL", "https://api.telegram.org/bot123:abc/sendMessage"),
            ("PORT", "8000"),
            ("RUST_LOG", "info,hyper=warn"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("DOCS", "http://host:8080/path@x"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
        let report = config_report(&config);
        let shown = |key: &str| report["config"][key].as_str().unwrap().to_string();
        assert_eq!(
            shown("OTEL_EXPORTER_OTLP_HEADERS"),
            "authorization=***,x-api-key=***"
        );
        assert_eq!(shown("DB_PASS"), "***");
        assert_eq!(shown("MYSQL_PWD"), "***");
        assert_eq!(shown("SQLSERVER"), "Server=db;User Id=u;Password=***");
        assert_eq!(
            shown("WEBHOOK_URL"),
            "https://hooks.example/x?token=***&sig=***&channel=ops"
        );
        assert_eq!(shown("CACHE"), "redis://u:***@h");
        assert_eq!(shown("PG_CONNINFO"), "host=db password=***");
        assert_eq!(shown("EXTRA_HEADER_LINE"), "Authorization: Bearer ***");
        assert_eq!(
            shown("UPSTREAM_CREDENTIAL_VALUE"),
            "***",
            "a credential-named key"
        );
        assert_eq!(shown("PROXY"), "Basic ***");
        assert_eq!(shown("EXTRA_ARGS"), "--jwt *** --verbose");
        assert_eq!(shown("AWS_PROFILE_NOTE"), "id ***");
        assert_eq!(
            shown("STORAGE"),
            "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=***;EndpointSuffix=core.windows.net"
        );
        assert_eq!(shown("JDBC"), "jdbc:postgresql://h/db?user=u&password=***");
        assert_eq!(shown("BOT_URL"), "https://api.telegram.org/bot***/sendMessage");
        assert_eq!(shown("PORT"), "8000");
        assert_eq!(shown("RUST_LOG"), "info,hyper=warn");
        assert_eq!(shown("OTEL_EXPORTER_OTLP_ENDPOINT"), "http://collector:4318");
        assert_eq!(shown("DOCS"), "http://host:8080/path@x");
        let text = report["config"].to_string();
        for secret in ["hunter2", "abc", "def", "pa/ss", "eyJ", "dXNlcjpwYXNz", "AKIA"] {
            assert!(!text.contains(secret), "{secret} leaked");
        }
    }

    #[test]
    fn a_bare_bearer_value_is_masked() {
        let report = config_report(&[("UPSTREAM", "Bearer eyJabc".to_string())]);
        assert_eq!(report["config"]["UPSTREAM"], "Bearer ***");
    }

    #[test]
    fn environment_is_sorted() {
        let report = config_report(&[]);
        let keys: Vec<&String> = report["environment"].as_object().unwrap().keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(report["config"], json!({}));
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_variables_are_left_out() {
        use std::os::unix::ffi::OsStringExt;

        // A synthetic environment: setting a non-UTF-8 variable for real would make
        // `std::env::vars()` panic in any test running meanwhile.
        let vars = [
            ("B", b"2".to_vec()),
            ("BAD_VALUE", b"\xff\xfe".to_vec()),
            ("A", b"1".to_vec()),
        ]
        .into_iter()
        .map(|(k, v)| (OsString::from(k), OsString::from_vec(v)))
        .chain([(OsString::from_vec(b"BAD\xffKEY".to_vec()), OsString::from("x"))]);
        assert_eq!(
            utf8_sorted(vars),
            [
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "2".to_string())
            ]
        );
    }
}
