//! The environment parsers (`OTEL_*`, `OBSKIT_*`) on any values, through the same
//! `EnvSource` the process environment goes through (values trimmed, empty is unset):
//! the sampler, the OTLP exporter's configuration, the span limits, `OTEL_RESOURCE_ATTRIBUTES`,
//! and the duration and switch syntaxes. Never a panic; what is accepted is within bounds; an error names a variable
//! that was set.
//!
//! Input: lines `NAME=value`; the last line for a name wins, a name without a line is unset.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use obskit::settings::{parse_duration, parse_resource_attributes, parse_switch, EnvSource};
use obskit::trace::{OtlpConfig, OtlpProtocol, Sampler, SpanLimits};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vars: Vec<(&str, &str)> = text.split('\n').filter_map(|line| line.split_once('=')).collect();
    let env = |name: &str| {
        vars.iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    };
    let set = |name: &str| env.get(name).is_some();

    match Sampler::from_env_source(&env) {
        Ok(Sampler::TraceIdRatio(ratio) | Sampler::ParentBasedTraceIdRatio(ratio)) => {
            assert!((0.0..=1.0).contains(&ratio), "ratio {ratio}");
        }
        Ok(_) => {}
        Err(error) => assert!(set(error.name), "{error}: not set"),
    }

    match OtlpConfig::from_env_source(&env) {
        Ok(None) => assert!(
            !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_ENDPOINT"),
            "an endpoint was ignored"
        ),
        Ok(Some(config)) => {
            assert!(!config.endpoint.is_empty());
            match env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
                Some(traces) => assert_eq!(config.endpoint, traces, "the traces endpoint is used as it is"),
                None if config.protocol == OtlpProtocol::HttpProtobuf => {
                    assert!(config.endpoint.ends_with("/v1/traces"), "{}", config.endpoint)
                }
                None => {}
            }
            assert!(config.queue_size >= 1 && config.max_batch >= 1);
            assert!(
                config.max_batch <= config.queue_size,
                "a batch larger than the queue"
            );
            assert!(config.interval >= Duration::from_millis(1));
            assert!(config.export_timeout >= Duration::from_millis(1));
        }
        Err(error) => assert!(set(error.name), "{error}: not set"),
    }

    match SpanLimits::from_env_source(&env) {
        Ok(limits) => assert!(limits.request_value_length <= limits.attribute_value_length),
        Err(error) => assert!(set(error.name), "{error}: not set"),
    }

    if let Some(raw) = env.get("OTEL_RESOURCE_ATTRIBUTES") {
        let attributes = parse_resource_attributes(&raw);
        for (key, _) in &attributes {
            assert!(
                !key.is_empty() && key.trim() == key && !key.contains([',', '=']),
                "{key:?}"
            );
        }
        // Percent-encoding every byte of every value, then parsing again, gives them back.
        let encoded: Vec<String> = attributes
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.bytes().map(|b| format!("%{b:02X}")).collect::<String>()
                )
            })
            .collect();
        assert_eq!(
            parse_resource_attributes(&encoded.join(",")),
            attributes,
            "{raw:?}"
        );
    }

    for (_, value) in &vars {
        if let Some(duration) = parse_duration(value) {
            assert!(
                value.trim().starts_with(|c: char| c.is_ascii_digit()),
                "{value:?}"
            );
            let millis = u64::try_from(duration.as_millis()).expect("parsed from a u64 of ms");
            assert_eq!(parse_duration(&format!("{millis}ms")), Some(duration));
        }
        let switch = parse_switch(value);
        assert_eq!(parse_switch(&value.to_ascii_uppercase()), switch, "{value:?}");
    }
});
