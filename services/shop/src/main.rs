//! The shop launcher.

fn main() {}
