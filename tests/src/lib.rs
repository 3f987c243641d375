//! Shared helpers of the end-to-end suites: where the real services are.
//!
//! The suites never mock a service that runs on this machine. `scripts/services up` starts them and
//! writes their addresses to `.etter/services.env`; `.ci/run` (and the README's test command)
//! sources it before running the suites. A missing setting fails the test with the command that
//! provides it — a suite never passes by skipping.

use anyhow::Context as _;

/// The value of a connection setting written by `scripts/services up <service>`.
pub fn service_setting(key: &str, service: &str) -> anyhow::Result<String> {
    std::env::var(key).with_context(|| {
        format!(
            "{key} is not set: start the service with `scripts/services up {service}` and `source .etter/services.env`"
        )
    })
}

/// A name unique to this test process and call, for databases, queues and graph prefixes.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}_{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

pub mod chaos;
pub mod moto;
pub mod stack;
