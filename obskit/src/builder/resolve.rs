//! The builder's choices and the environment, resolved into [`Settings`] once: a choice made in
//! code wins over a variable, a variable over obskit's default.

use super::{AdminListener, BuildError, ObskitBuilder, ADMIN_ADDR_ENV};
use crate::admin::{AdminAccess, AllowedHosts};
use crate::settings::{random_instance_id, resource_attributes, EnvSource, ServiceIdentity, Settings};
use crate::trace::{OtlpConfig, Sampler, SpanLimits};

/// The variable naming the service when the code does not.
const SERVICE_NAME_ENV: &str = crate::names::env::OTEL_SERVICE_NAME;
/// The variable naming the commit when the code does not.
const COMMIT_ENV: &str = crate::names::env::OBSKIT_COMMIT;

pub(super) fn settings(builder: &ObskitBuilder, env: &impl EnvSource) -> Result<Settings, BuildError> {
    let service = identity(builder, env);
    let admin_listener = match builder.admin_listener {
        Some(listener) => listener,
        None => match env.parse(ADMIN_ADDR_ENV)? {
            Some(addr) => AdminListener::Separate(addr),
            None => AdminListener::SamePort,
        },
    };
    let instrumentation = match builder.instrumentation {
        Some(enabled) => enabled,
        None => env
            .switch(crate::instrumentation::INSTRUMENTATION_ENV)?
            .unwrap_or(true),
    };
    Ok(Settings {
        service,
        admin_access: match &builder.access {
            Some(access) => access.clone(),
            None => AdminAccess::from_env_source(env),
        },
        admin_allowed_hosts: match &builder.allowed_hosts {
            Some(hosts) => hosts.clone(),
            None => AllowedHosts::from_env_source(env),
        },
        admin_listener,
        measure_admin_requests: builder.measure_admin,
        routes: builder.routes.clone(),
        response_traceparent: builder.response_traceparent,
        recent_spans: builder.recent_spans,
        recent_spans_bytes: builder.recent_spans_bytes,
        span_limits: match builder.span_limits {
            Some(limits) => limits,
            None => SpanLimits::from_env_source(env)?,
        },
        otlp: match &builder.otlp {
            Some(config) => config.clone(),
            None => OtlpConfig::from_env_source(env)?,
        },
        sampler: match builder.sampler {
            Some(sampler) => sampler,
            None => Sampler::from_env_source(env)?,
        },
        server: builder.server_settings.clone(),
        shutdown_timeout: builder.shutdown_timeout,
        memory_check: builder.memory_check,
        health_interval: builder.health_interval,
        process_stats_interval: builder.stats_interval,
        instrumentation,
        #[cfg(feature = "tracing-bridge")]
        logs: if builder.logs {
            Some(crate::log::LogSettings::from_env_source(env)?)
        } else {
            None
        },
        heap_profile_interval_bytes: env.parse(crate::names::env::OBSKIT_HEAP_PROFILE_INTERVAL_BYTES)?,
        extra: builder.config.clone(),
    })
}

/// The service's identity and resource: the code's choices, then `OTEL_SERVICE_NAME`, then
/// `OTEL_RESOURCE_ATTRIBUTES`, then defaults (the executable's name, `unknown`,
/// `development`, a random instance id).
fn identity(builder: &ObskitBuilder, env: &impl EnvSource) -> ServiceIdentity {
    let attributes = resource_attributes(env);
    let attribute = |key: &str| attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let name = builder
        .service
        .clone()
        .or_else(|| env.get(SERVICE_NAME_ENV))
        .or_else(|| attribute("service.name"))
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        })
        .unwrap_or_else(|| "unknown_service".to_string());
    let version = builder
        .version
        .clone()
        .or_else(|| attribute("service.version"))
        .unwrap_or_else(|| "unknown".to_string());
    let environment = builder
        .environment
        .clone()
        .or_else(|| attribute("deployment.environment.name"))
        .or_else(|| attribute("deployment.environment"))
        .unwrap_or_else(|| "development".to_string());
    let commit = builder
        .commit
        .clone()
        .or_else(|| env.get(COMMIT_ENV))
        .unwrap_or_default();
    let instance_id = attribute("service.instance.id").unwrap_or_else(random_instance_id);
    // The standard attributes as resolved above, then the others given, as they were given
    // (the deprecated `deployment.environment` is replaced by its successor).
    let mut resource = vec![
        ("service.name".to_string(), name.clone()),
        ("service.version".to_string(), version.clone()),
        ("deployment.environment.name".to_string(), environment.clone()),
        ("service.instance.id".to_string(), instance_id.clone()),
    ];
    for (key, value) in attributes {
        if !resource.iter().any(|(k, _)| *k == key) && key != "deployment.environment" {
            resource.push((key, value));
        }
    }
    ServiceIdentity {
        name,
        version,
        environment,
        commit,
        instance_id,
        resource,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Obskit;

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn code_wins_over_the_environment_which_wins_over_defaults() {
        let env = vars(&[
            ("OTEL_SERVICE_NAME", "from-env"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.version=9.9,deployment.environment=staging,team=payments,service.instance.id=i-1",
            ),
            ("OBSKIT_ADMIN_ADDR", "127.0.0.1:9100"),
            ("OBSKIT_INSTRUMENTATION", "off"),
        ]);
        let settings = Obskit::builder()
            .service("from-code")
            .settings_from(&env)
            .unwrap();
        assert_eq!(settings.service.name, "from-code");
        assert_eq!(settings.service.version, "9.9");
        assert_eq!(settings.service.environment, "staging");
        assert_eq!(settings.service.instance_id, "i-1");
        assert_eq!(
            settings.service.resource.last(),
            Some(&("team".to_string(), "payments".to_string()))
        );
        assert!(!settings
            .service
            .resource
            .iter()
            .any(|(k, _)| k == "deployment.environment"));
        assert_eq!(
            settings.admin_listener,
            AdminListener::Separate("127.0.0.1:9100".parse().unwrap())
        );
        assert!(!settings.instrumentation);
        let defaults = Obskit::builder().settings_from(&vars(&[])).unwrap();
        assert_eq!(defaults.service.version, "unknown");
        assert_eq!(defaults.service.environment, "development");
        assert_eq!(defaults.admin_listener, AdminListener::SamePort);
        assert!(defaults.instrumentation);
        assert_eq!(defaults.otlp, None);
    }

    #[test]
    fn every_bad_variable_is_named() {
        for (name, value) in [
            ("OBSKIT_ADMIN_ADDR", "nine thousand"),
            ("OBSKIT_INSTRUMENTATION", "maybe"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "-5"),
        ] {
            let env = move |n: &str| (n == name).then(|| value.to_string());
            match Obskit::builder().settings_from(&env) {
                Err(BuildError::Environment { name: named, problem }) => {
                    assert_eq!(named, name);
                    assert!(problem.contains(value), "{problem}");
                }
                other => panic!("{name}={value}: {other:?}"),
            }
        }
    }

    #[test]
    fn entries_list_every_setting_once() {
        let settings = Obskit::builder()
            .config_entry("shop.store", "sqlite")
            .settings_from(&vars(&[]))
            .unwrap();
        let entries = settings.entries();
        let mut keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        let count = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), count, "a key listed twice: {entries:?}");
        for key in [
            "service.name",
            "trace.span_limits",
            "server.head_timeout",
            "shop.store",
        ] {
            assert!(keys.contains(&key), "{key} missing: {entries:?}");
        }
    }
}
