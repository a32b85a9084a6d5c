//! The cart service binary.

fn main() {
    eprintln!("cart: listening port would be {} (from {})", cart::DEFAULT_PORT, cart::PORT_ENV);
}
