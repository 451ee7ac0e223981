//! Test-only crash injection: `BERTH_TEST_FAILPOINT=<step>` makes the
//! process abort (as `kill -9` would stop it: no destructor, no flush) when
//! it reaches `<step>`.
//!
//! Only the crash-safety tests set it; it is read once, and a process
//! without it pays one relaxed load per step. The steps are named
//! `<operation>:<point>`, e.g. `install:compiled`, `switch:persisted`,
//! `apply:stored` (the list is in RELIABILITY.md). Never set it in
//! production: a base that reaches the step dies on purpose.

use std::sync::OnceLock;

/// The environment variable naming the step to crash at.
pub const ENV: &str = "BERTH_TEST_FAILPOINT";

/// Aborts the process if `BERTH_TEST_FAILPOINT` names `step`.
pub fn hit(step: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var(ENV).ok().filter(|s| !s.is_empty()));
    if armed.as_deref() == Some(step) {
        eprintln!("berth: failpoint {step} reached; aborting ({ENV} is set, tests only)");
        std::process::abort();
    }
}
