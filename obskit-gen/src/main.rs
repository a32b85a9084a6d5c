//! Writes the monitoring of the shop's objectives from where they are declared
//! (`shop_common::objectives::ALL`): multi-window, multi-burn-rate recording and alerting rules
//! (the SRE workbook's four window pairs) and the promtool tests that fire each alert at its burn
//! rate and keep it quiet just below.
//!
//! ```text
//! cargo run -p obskit-gen            # writes the files
//! cargo run -p obskit-gen -- --check # exits 1 when the checked-in files differ (CI's drift test)
//! ```

use std::process::ExitCode;

use obskit::objectives::{Objective, ObjectivePercentile};

mod rules;

/// The files written, relative to the repository root.
const RULES_FILE: &str = "monitoring/prometheus/slo.rules.yml";
const TESTS_FILE: &str = "monitoring/prometheus/tests/slo_test.yml";

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
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let objectives = &shop_common::objectives::ALL;
    let files = [
        (RULES_FILE, rules::rules(objectives)),
        (TESTS_FILE, rules::tests(objectives)),
    ];
    let mut drift = false;
    for (path, content) in files {
        let full = root.join(path);
        if check {
            let current = std::fs::read_to_string(&full).unwrap_or_default();
            if current != content {
                eprintln!("obskit-gen: {path} differs from what the objectives generate; run `cargo run -p obskit-gen`");
                drift = true;
            }
        } else if let Err(e) = std::fs::write(&full, content) {
            eprintln!("obskit-gen: cannot write {path}: {e}");
            return ExitCode::FAILURE;
        } else {
            println!("obskit-gen: wrote {path}");
        }
    }
    if drift {
        ExitCode::FAILURE
    } else {
        if check {
            println!("obskit-gen: {RULES_FILE} and {TESTS_FILE} are what the objectives generate");
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
