//! The run lifecycle (docs/ARCHITECTURE.md, "The lifecycle"), in one place.
//!
//! Every state change of a run goes through [`transition`]; a new run of a role goes through
//! [`may_start_new_run`]. Nothing else decides which edges exist.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The lifecycle state of a run (and of its role: the state of its latest run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunState {
    /// Accepted and stored; its documents are being checked before it is queued (the items of a
    /// large batch whose documents are in a remote store).
    Validating,
    /// Accepted and stored; waiting for the dispatcher.
    Queued,
    /// The workflow is running.
    Processing,
    /// Every planned step succeeded.
    Ready,
    /// Every critical step succeeded; an enhancement step failed after its retries.
    Degraded,
    /// A critical step failed.
    Failed,
    /// Inputs changed since READY or DEGRADED.
    Stale,
    /// Cancelled while queued or running.
    Cancelled,
    /// A batch item that failed validation, kept with its field violations.
    ValidationError,
}

impl RunState {
    /// Every state, in declaration order.
    pub const ALL: [RunState; 9] = [
        RunState::Validating,
        RunState::Queued,
        RunState::Processing,
        RunState::Ready,
        RunState::Degraded,
        RunState::Failed,
        RunState::Stale,
        RunState::Cancelled,
        RunState::ValidationError,
    ];

    /// The stable name stored in databases and logs (`QUEUED`, `PROCESSING`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Validating => "VALIDATING",
            RunState::Queued => "QUEUED",
            RunState::Processing => "PROCESSING",
            RunState::Ready => "READY",
            RunState::Degraded => "DEGRADED",
            RunState::Failed => "FAILED",
            RunState::Stale => "STALE",
            RunState::Cancelled => "CANCELLED",
            RunState::ValidationError => "VALIDATION_ERROR",
        }
    }

    /// Parses [`RunState::as_str`].
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Whether the run is waiting or working (counts against queue and concurrency caps).
    pub fn is_active(self) -> bool {
        matches!(self, RunState::Validating | RunState::Queued | RunState::Processing)
    }

    /// Whether the run waits to start: VALIDATING or QUEUED (no workflow yet, so it is cancelled
    /// or expired in the store alone).
    pub fn is_waiting(self) -> bool {
        matches!(self, RunState::Validating | RunState::Queued)
    }

    /// Whether the run's workflow has ended (or will never start).
    pub fn is_final(self) -> bool {
        !self.is_active()
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state change the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a run cannot go from {from} to {to}")]
pub struct IllegalTransition {
    /// The current state.
    pub from: RunState,
    /// The requested state.
    pub to: RunState,
}

/// Checks one state change of a run. The allowed edges:
/// VALIDATING → QUEUED | VALIDATION_ERROR (its documents checked);
/// QUEUED → PROCESSING (the dispatcher, once Temporal accepted the start);
/// VALIDATING | QUEUED | PROCESSING → CANCELLED; PROCESSING → READY | DEGRADED | FAILED;
/// READY | DEGRADED → STALE (a scan found changed inputs).
pub fn transition(from: RunState, to: RunState) -> Result<(), IllegalTransition> {
    use RunState::*;
    let allowed = matches!(
        (from, to),
        (Validating, Queued | ValidationError)
            | (Queued, Processing)
            | (Validating | Queued | Processing, Cancelled)
            | (Processing, Ready | Degraded | Failed)
            | (Ready | Degraded, Stale)
    );
    if allowed { Ok(()) } else { Err(IllegalTransition { from, to }) }
}

/// Why a role cannot get a new run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the role's latest run is still {latest}, so the role cannot get a new run yet")]
pub struct RunStillActive {
    /// The state of the role's latest run.
    pub latest: RunState,
}

/// Checks that a role whose latest run is in `latest` may get a new run (QUEUED) through Retry,
/// a re-push or `force_rerun`: only once that run has ended (READY, DEGRADED, FAILED, STALE,
/// CANCELLED or VALIDATION_ERROR). A role with no run yet always may.
pub fn may_start_new_run(latest: Option<RunState>) -> Result<(), RunStillActive> {
    match latest {
        Some(latest) if latest.is_active() => Err(RunStillActive { latest }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_design_edges_are_allowed() {
        use RunState::*;
        let allowed: Vec<(RunState, RunState)> = RunState::ALL
            .into_iter()
            .flat_map(|from| RunState::ALL.into_iter().map(move |to| (from, to)))
            .filter(|(from, to)| transition(*from, *to).is_ok())
            .collect();
        assert_eq!(
            allowed,
            vec![
                (Validating, Queued),
                (Validating, Cancelled),
                (Validating, ValidationError),
                (Queued, Processing),
                (Queued, Cancelled),
                (Processing, Ready),
                (Processing, Degraded),
                (Processing, Failed),
                (Processing, Cancelled),
                (Ready, Stale),
                (Degraded, Stale),
            ]
        );
    }

    #[test]
    fn new_runs_only_after_the_latest_ended() {
        assert!(may_start_new_run(None).is_ok());
        for state in RunState::ALL {
            assert_eq!(may_start_new_run(Some(state)).is_ok(), !state.is_active(), "{state}");
        }
        let err = may_start_new_run(Some(RunState::Processing)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("PROCESSING"), "{err}");
    }

    #[test]
    fn names_round_trip() {
        for state in RunState::ALL {
            assert_eq!(RunState::parse(state.as_str()), Some(state));
        }
        assert_eq!(RunState::parse("DRAFT"), None, "DRAFT is never produced here");
    }
}
