use obskit::profiled;

#[profiled(every = "5 parsecs")]
fn bad_unit() {}

#[profiled(duration = "10s", every = "5s")]
fn longer_than_interval() {}

#[profiled(duration = "2m", every = "1h")]
fn too_long() {}

#[profiled(frequency = 1000)]
fn too_fast() {}

#[profiled(calls = 0)]
fn no_calls() {}

#[profiled(every = 60)]
fn not_a_string() {}

#[profiled(name = "a", name = "b")]
fn duplicate() {}

#[profiled(interval = "60s")]
fn unknown() {}

#[profiled(name)]
fn no_value() {}

fn main() {}
