use obskit::instrumented;

#[instrumented]
unsafe extern "C" fn sum(count: usize, _args: ...) -> usize {
    count
}

fn main() {}
