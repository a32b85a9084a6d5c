//! Integration tests: health_debug.
