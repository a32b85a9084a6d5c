//! Debug figures: `/debug/metrics` and `/debug/config`.
