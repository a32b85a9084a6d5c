use obskit::profiled;

#[profiled]
struct NotAFunction;

#[profiled]
const fn constant() -> u8 {
    1
}

trait Shop {
    #[profiled]
    fn declared_only(&self);
}

fn main() {}
