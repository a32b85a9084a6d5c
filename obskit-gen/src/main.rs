//! Writes the monitoring of the shop's objectives from where they are declared
//! (`shop_common::objectives::ALL` on functions, `ROUTES` on routes): multi-window, multi-burn-rate recording and alerting rules
//! (the SRE workbook's four window pairs), the promtool tests that fire each alert at its burn
//! rate and keep it quiet just below, and one Grafana dashboard per objective; and the metric
//! catalogue from obskit's names and the services' declared metrics.
//!
//! ```text
//! cargo run -p obskit-gen            # writes the files
//! cargo run -p obskit-gen -- --check # exits 1 when the checked-in files differ (CI's drift test)
//! ```

use std::path::Path;
use std::process::ExitCode;

use obskit::objectives::{Objective, ObjectivePercentile};

mod catalogue;
mod dashboards;
mod rules;

/// The files written, relative to the repository root.
const RULES_FILE: &str = "monitoring/prometheus/slo.rules.yml";
const TESTS_FILE: &str = "monitoring/prometheus/tests/slo_test.yml";
const DASHBOARDS_DIR: &str = "monitoring/grafana/dashboards";
const CATALOGUE_FILE: &str = "monitoring/metrics/catalogue.yml";

/// Every file the generator owns, with its content.
fn outputs(root: &Path, objectives: &[Declared]) -> Result<Vec<(String, String)>, String> {
    let external = std::fs::read_to_string(root.join(catalogue::EXTERNAL_FILE))
        .map_err(|e| format!("cannot read {}: {e}", catalogue::EXTERNAL_FILE))?;
    let mut files = vec![
        (RULES_FILE.to_string(), rules::rules(objectives)),
        (TESTS_FILE.to_string(), rules::tests(objectives)),
        (CATALOGUE_FILE.to_string(), catalogue::catalogue(&external)?),
    ];
    for Declared { objective, .. } in objectives {
        files.push((
            format!("{DASHBOARDS_DIR}/{}.json", dashboards::file_stem(objective)),
            dashboards::dashboard(objective),
        ));
    }
    Ok(files)
}

/// Generated dashboards of objectives that are no longer declared: a stale board would keep
/// showing an objective the code dropped.
fn stale_dashboards(root: &Path, files: &[(String, String)]) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root.join(DASHBOARDS_DIR)) else {
        return Vec::new();
    };
    let mut stale: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .map(|entry| format!("{DASHBOARDS_DIR}/{}", entry.file_name().to_string_lossy()))
        .filter(|path| path.starts_with(&format!("{DASHBOARDS_DIR}/objective-")))
        .filter(|path| !files.iter().any(|(written, _)| written == path))
        .collect();
    stale.sort();
    stale
}

fn main() -> ExitCode {
    let check = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--check") => true,
        Some(other) => {
            eprintln!("obskit-gen: unknown argument {other:?}; say nothing to write the files, or --check");
            return ExitCode::from(2);
        }
    };
    // The repository root: this crate's parent directory.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let objectives = declared();
    let mut names: Vec<&str> = objectives.iter().map(|d| d.objective.name()).collect();
    names.sort_unstable();
    if let Some(twice) = names.windows(2).find(|pair| pair[0] == pair[1]) {
        // Their series and rules would be one indicator's.
        eprintln!("obskit-gen: two objectives are named {:?}", twice[0]);
        return ExitCode::FAILURE;
    }
    let files = match outputs(&root, &objectives) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("obskit-gen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut drift = false;
    for (path, content) in &files {
        let full = root.join(path);
        if check {
            let current = std::fs::read_to_string(&full).unwrap_or_default();
            if current != *content {
                eprintln!(
                    "obskit-gen: {path} differs from what the code generates; run `cargo run -p obskit-gen`"
                );
                drift = true;
            }
        } else if let Err(e) = std::fs::write(&full, content) {
            eprintln!("obskit-gen: cannot write {path}: {e}");
            return ExitCode::FAILURE;
        } else {
            println!("obskit-gen: wrote {path}");
        }
    }
    for path in stale_dashboards(&root, &files) {
        if check {
            eprintln!("obskit-gen: {path} is the board of an objective no longer declared; run `cargo run -p obskit-gen`");
            drift = true;
        } else if let Err(e) = std::fs::remove_file(root.join(&path)) {
            eprintln!("obskit-gen: cannot remove {path}: {e}");
            return ExitCode::FAILURE;
        } else {
            println!("obskit-gen: removed {path} (its objective is no longer declared)");
        }
    }
    if drift {
        ExitCode::FAILURE
    } else {
        if check {
            println!(
                "obskit-gen: the {} generated files are what the code generates",
                files.len()
            );
        }
        ExitCode::SUCCESS
    }
}

/// The error budget of a percentile, as it is written in an expression (`0.001` for 99.9 %).
fn budget(percentile: ObjectivePercentile) -> &'static str {
    match percentile {
        ObjectivePercentile::P90 => "0.1",
        ObjectivePercentile::P95 => "0.05",
        ObjectivePercentile::P99 => "0.01",
        ObjectivePercentile::P99_9 => "0.001",
    }
}

/// Where an objective is measured: on a function (`#[instrumented(objective = ...)]`, the
/// function metrics) or on a route of the RED layer (the HTTP metrics).
#[derive(Clone, Copy)]
enum Scope {
    Function,
    Route { client_errors_fail: bool },
}

impl Scope {
    /// The counter whose series carry the success-rate labels.
    fn counter(self) -> &'static str {
        match self {
            Scope::Function => obskit::names::FUNCTION_CALLS_TOTAL.name,
            Scope::Route { .. } => obskit::names::HTTP_REQUESTS_TOTAL.name,
        }
    }

    /// The histogram whose series carry the latency labels.
    fn histogram(self) -> &'static str {
        match self {
            Scope::Function => obskit::names::FUNCTION_CALLS_DURATION_SECONDS.name,
            Scope::Route { .. } => obskit::names::HTTP_REQUEST_DURATION_SECONDS.name,
        }
    }

    /// The matcher of the counter's failed calls.
    fn failed(self) -> &'static str {
        match self {
            Scope::Function => "result=\"error\"",
            Scope::Route {
                client_errors_fail: false,
            } => "status=~\"5..\"",
            Scope::Route {
                client_errors_fail: true,
            } => "status=~\"[45]..\"",
        }
    }
}

/// An objective and where it is measured.
#[derive(Clone, Copy)]
struct Declared {
    objective: Objective,
    scope: Scope,
}

/// The shop's objectives: its handlers', then its routes'.
fn declared() -> Vec<Declared> {
    let functions = shop_common::objectives::ALL
        .into_iter()
        .map(|objective| Declared {
            objective,
            scope: Scope::Function,
        });
    let routes = shop_common::objectives::ROUTES.into_iter().map(|route| Declared {
        objective: route.objective(),
        scope: Scope::Route {
            client_errors_fail: route.objective().client_errors_fail_route(),
        },
    });
    functions.chain(routes).collect()
}

/// One service-level indicator of an objective: its success rate or its latency.
#[derive(Clone, Copy)]
enum Sli {
    SuccessRate(ObjectivePercentile),
    Latency(obskit::objectives::ObjectiveLatency, ObjectivePercentile),
}

impl Sli {
    /// The indicators an objective declares.
    fn of(objective: &Objective) -> Vec<Sli> {
        let mut slis = Vec::new();
        if let Some(percentile) = objective.success_rate_target() {
            slis.push(Sli::SuccessRate(percentile));
        }
        if let Some((threshold, percentile)) = objective.latency_target() {
            slis.push(Sli::Latency(threshold, percentile));
        }
        slis
    }

    /// The `objective_kind` label of its recorded series.
    fn kind(self) -> &'static str {
        match self {
            Sli::SuccessRate(_) => "success_rate",
            Sli::Latency(..) => "latency",
        }
    }

    fn percentile(self) -> ObjectivePercentile {
        match self {
            Sli::SuccessRate(p) | Sli::Latency(_, p) => p,
        }
    }
}
