use obskit::instrumented;

#[instrumented(name = 5)]
fn name_not_a_string() {}

#[instrumented(metrics = "no")]
fn metrics_not_a_bool() {}

#[instrumented(name)]
fn name_without_value() {}

#[instrumented(skip)]
fn skip_without_list(a: u8) {
    let _ = a;
}

#[instrumented(err(Verbose))]
fn err_unknown_mode() -> Result<(), String> {
    Ok(())
}

#[instrumented(fields(user.id))]
fn field_without_value() {}

#[instrumented(name = "a" "b")]
fn trailing_tokens() {}

#[instrumented(, name = "x")]
fn leading_comma() {}

fn main() {}
