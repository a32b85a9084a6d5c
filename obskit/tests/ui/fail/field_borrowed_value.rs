use obskit::instrumented;

// `key = value` takes owned values (`String`, `&'static str`, numbers, bools): a borrowed
// `&String` needs `%` (Display), `?` (Debug) or an explicit conversion.
#[instrumented(fields(user.name = &name))]
fn greet(name: String) -> usize {
    name.len()
}

fn main() {
    greet("ada".into());
}
