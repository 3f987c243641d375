//! End-to-end suites across processes and real services.

mod batch;
mod deadlines;
mod fanout;
mod metrics;
mod onboarding;
mod quotes;
mod reconcile;
mod replicas;
mod rerun;
mod runbook;
mod services;
mod temporal_outage;
mod tls;
mod traces;
mod validating;
mod waits;
mod webhooks;
