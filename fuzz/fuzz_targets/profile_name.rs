//! The `/profiles/{name}` name check (`ProfileStore::get`): never a panic, and a name that gets
//! past the check (so that the store would look it up, and in a directory store join it to the
//! directory) is one the store could have made: 1 to 128 of `[A-Za-z0-9_.-]`, not starting with
//! a dot, without `..`, so never a path out of the store's directory.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use obskit::profile::{ProfileStore, StoreError};

fuzz_target!(|data: &[u8]| {
    static STORE: OnceLock<ProfileStore> = OnceLock::new();
    let store = STORE.get_or_init(|| ProfileStore::in_memory(4, 1 << 20));
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    match store.get(name) {
        Err(StoreError::InvalidName) => {}
        Err(StoreError::NotFound) => {
            assert!((1..=128).contains(&name.len()), "{} bytes", name.len());
            assert!(!name.starts_with('.') && !name.contains(".."), "{name:?}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')),
                "{name:?}"
            );
        }
        Err(error) => panic!("an empty store answered {error} for {name:?}"),
        Ok(_) => panic!("an empty store returned a profile for {name:?}"),
    }
});
