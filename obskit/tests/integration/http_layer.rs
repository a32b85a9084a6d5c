//! Integration tests: http_layer.
