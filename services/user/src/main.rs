//! The user service binary.

fn main() {
    eprintln!("user: listening port would be {} (from {})", user::DEFAULT_PORT, user::PORT_ENV);
}
