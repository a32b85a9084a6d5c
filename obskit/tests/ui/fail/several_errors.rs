use obskit::instrumented;

// Every problem is reported at once.
#[instrumented(bogus, name = 5, skip(missing), err)]
const fn everything_wrong(present: u8) -> u8 {
    present
}

fn main() {}
