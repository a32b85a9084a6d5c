use obskit::instrumented;

#[instrumented(skip(nope))]
fn missing(id: u64, name: &str) {
    let _ = (id, name);
}

#[instrumented(skip(self))]
fn no_self(id: u64) {
    let _ = id;
}

#[instrumented(skip(a))]
fn destructured((a, b): (u8, u8)) {
    let _ = (a, b);
}

fn main() {}
