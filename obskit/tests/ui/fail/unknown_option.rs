use obskit::instrumented;

#[instrumented(level = "info")]
fn tracing_option() {}

#[instrumented(name = "ok", bogus)]
fn unknown() {}

#[instrumented(async)]
fn keyword() {}

fn main() {}
