use obskit::instrumented;

#[instrumented]
struct Config {
    port: u16,
}

struct Service;

#[instrumented]
impl Service {
    fn call(&self) {}
}

trait Store {
    #[instrumented]
    fn get(&self, id: u64) -> Option<String>;
}

#[instrumented]
mod handlers {}

fn main() {
    let _ = Config { port: 1 }.port;
    Service.call();
}
