//! Fault hooks for the fault suite, compiled only with the `fault-injection` feature (which
//! only test builds turn on). Each reads its rate from the environment once.

use std::sync::OnceLock;

/// `VITTE_FAULT_SESSION_PANIC_RATE` (0.0..=1.0): the share of replies whose work panics
/// just before the LLM is asked (the placeholder is up, the message stored as pending).
pub fn maybe_panic_in_reply() {
    static RATE: OnceLock<f64> = OnceLock::new();
    let rate = *RATE.get_or_init(|| {
        std::env::var("VITTE_FAULT_SESSION_PANIC_RATE")
            .ok()
            .and_then(|rate| rate.parse().ok())
            .unwrap_or(0.0)
    });
    if rate > 0.0 && fastrand::f64() < rate {
        panic!("fault injected: a session handler panics");
    }
}
