use obskit::instrumented;

#[instrumented(name = "a", name = "b")]
fn twice() {}

#[instrumented(err, err(Debug))]
fn err_twice() -> Result<(), String> {
    Ok(())
}

#[instrumented(skip(a), skip_all)]
fn skip_and_skip_all(a: u8) {
    let _ = a;
}

#[instrumented(fields(k = 1, k = 2))]
fn duplicate_field() {}

fn main() {}
