//! The order service binary.

fn main() {
    eprintln!("order: listening port would be {} (from {})", order::DEFAULT_PORT, order::PORT_ENV);
}
