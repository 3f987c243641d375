//! End-to-end suites across processes and real services.

mod batch;
mod onboarding;
mod replicas;
mod rerun;
mod services;
