//! `Accept` negotiation for `/metrics` (`accepts_openmetrics`): never a panic; only a range
//! naming `application/openmetrics-text` selects it; one more range never withdraws it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use obskit::metrics::accepts_openmetrics;

fuzz_target!(|data: &[u8]| {
    let Ok(accept) = std::str::from_utf8(data) else {
        return;
    };
    let openmetrics = accepts_openmetrics(accept);
    if !accept
        .to_ascii_lowercase()
        .contains("application/openmetrics-text")
    {
        assert!(!openmetrics, "OpenMetrics chosen without being named: {accept:?}");
    }
    if openmetrics {
        assert!(accepts_openmetrics(&format!(
            "{accept},text/plain;version=0.0.4;q=0.5"
        )));
        assert!(accepts_openmetrics(&format!("text/plain;q=0.5,{accept}")));
    }
});
