//! HTTP RED metrics: a `tower::Layer` and a plain hyper service wrapper.
