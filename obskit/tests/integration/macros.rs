//! Integration tests: macros.
