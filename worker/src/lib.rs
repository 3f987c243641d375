//! The Temporal worker of the Etter onboarding pipeline: the onboarding workflows
//! ([`workflows`]), the activities that run each step and record it ([`activities`]), what each
//! step computes ([`steps`]) and how its errors are classified ([`failure`]). [`run`] wires them to
//! the configured stores, model and Temporal namespace.

pub mod activities;
pub mod config;
pub mod failure;
pub mod faults;
pub mod staleness;
pub mod steps;
pub mod workflows;

mod sdk_metrics;

mod worker;

pub use worker::{RunError, init_tracing, run, run_with_faults, scan_now, scan_schedule_id};
