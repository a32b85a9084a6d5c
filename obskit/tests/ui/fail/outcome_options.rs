use obskit::instrumented;

fn failed(r: &u32) -> bool {
    *r > 9
}

#[instrumented(error_if = failed, ok_if = failed)]
fn both(x: u32) -> u32 {
    x
}

#[instrumented(error_if = failed, metrics = false)]
fn without_metrics(x: u32) -> u32 {
    x
}

#[instrumented(ok_if)]
fn no_rule(x: u32) -> u32 {
    x
}

#[instrumented(error_if = failed)]
fn wrong_type(x: u64) -> u64 {
    x
}

fn main() {}
