use obskit::instrumented;
use obskit::objectives::{Objective, ObjectivePercentile};

const NO_TARGET: Objective = Objective::new("nothing");
const CHECKOUT: Objective = Objective::new("checkout").success_rate(ObjectivePercentile::P99);

#[instrumented(objective = NO_TARGET)]
fn without_a_target() {}

#[instrumented(objective = CHECKOUT, metrics = false)]
fn without_metrics() {}

#[instrumented(objective = "checkout")]
fn not_an_objective() {}

fn main() {}
