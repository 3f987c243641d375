//! End-to-end suites across processes and real services.

mod onboarding;
mod rerun;
mod services;
