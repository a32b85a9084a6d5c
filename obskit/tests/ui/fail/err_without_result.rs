use obskit::instrumented;

#[instrumented(err)]
fn returns_u32() -> u32 {
    1
}

#[instrumented(err(Debug))]
async fn returns_option() -> Option<u32> {
    None
}

#[instrumented(err)]
fn returns_nothing() {}

fn main() {}
