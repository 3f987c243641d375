//! Deadlines (`RunOptions.deadline`): a push is admitted only if its run is estimated to end by
//! its deadline, and a run still queued when its deadline passes is cancelled.
//!
//! **At admission** the new run's end is estimated as a real push would answer: its place behind
//! the company's queued runs, the wait that means, and its plan's measured duration. A run that
//! nothing can start (no worker polls, Temporal is unreachable) has no end to promise and is
//! refused too. The refusal says when the run would end and what it would wait for.
//!
//! **While queued** the dispatcher looks, every round, for queued runs whose deadline passed
//! ([`RunStore::queued_past_deadline`], an indexed read of the few runs that have one) and
//! cancels them: CANCELLED with error `DEADLINE_EXCEEDED`, which releases their token
//! reservation. A run about to be started is checked again first. A run that started is not
//! stopped by its deadline: its work is under way and its outputs are kept.

use etter_core::error::chain;
use etter_core::ids::CompanyId;
use etter_core::lifecycle::RunState;
use etter_core::steps::Plan;
use etter_proto::v1 as pb;
use etter_store::{PipelineError, RunStore, StoreError, Timestamp, Transition};

use crate::error::ApiError;
use crate::estimate::Estimator;

/// The reason of a push refused for its deadline.
pub use crate::error::DEADLINE_UNREACHABLE as UNREACHABLE;

/// The error code of a run cancelled because its deadline passed while it was queued.
pub const EXCEEDED: &str = "DEADLINE_EXCEEDED";

/// Queued runs cancelled per look.
const PER_LOOK: u32 = 500;

/// A deadline as the contract gives it, checked to be a valid time in the future.
pub fn parse(deadline: Option<&prost_types::Timestamp>, now: Timestamp) -> Result<Option<Timestamp>, String> {
    let Some(given) = deadline else { return Ok(None) };
    let nanos = u32::try_from(given.nanos).map_err(|_| "nanos must not be negative".to_owned())?;
    let at = chrono::DateTime::from_timestamp(given.seconds, nanos)
        .map(etter_store::truncate)
        .ok_or_else(|| format!("{}s since the epoch is not a time", given.seconds))?;
    if at <= now {
        return Err(format!("must be in the future; it is {} and now is {}", rfc3339(at), rfc3339(now)));
    }
    Ok(Some(at))
}

fn rfc3339(time: Timestamp) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// What a run pushed now would wait for and when it would end, if it were queued `ahead` runs
/// behind the company's queued runs.
pub struct Outlook {
    /// What it would wait for.
    pub wait_reason: pb::WaitReason,
    /// Its place in the company's dispatch order.
    pub position: u32,
    /// Estimated seconds until it ends.
    pub seconds: i64,
}

impl Outlook {
    /// The outlook of a run of `plan` for `company` queued at `position` in its dispatch order.
    pub fn at(estimator: &Estimator, company: &CompanyId, plan: &Plan, position: u32) -> Self {
        Self {
            wait_reason: estimator.conditions().queued(company, position),
            position,
            seconds: estimator.remaining_seconds(plan, Some(position), 0),
        }
    }

    /// Refuses a run whose deadline this outlook cannot meet.
    pub fn admit(&self, deadline: Timestamp, now: Timestamp) -> Result<(), ApiError> {
        let end = now + chrono::TimeDelta::seconds(self.seconds);
        let blocked = matches!(self.wait_reason, pb::WaitReason::NoWorker | pb::WaitReason::TemporalUnavailable);
        if !blocked && end <= deadline {
            return Ok(());
        }
        let description = if blocked {
            let why = match self.wait_reason {
                pb::WaitReason::NoWorker => "no worker of the pipeline is running",
                _ => "the workflow engine (Temporal) is unreachable",
            };
            format!(
                "the run cannot be promised to end by its deadline {}: {why}, so nothing would start it; \
                 push it without a deadline to have it wait, or again once the pipeline runs",
                rfc3339(deadline)
            )
        } else {
            format!(
                "the run is estimated to end at {} (in {} s, position {} in the queue), after its deadline {}; \
                 push it with a later deadline or none",
                rfc3339(end),
                self.seconds,
                self.position,
                rfc3339(deadline)
            )
        };
        Err(ApiError::DeadlineUnreachable {
            description,
            metadata: vec![
                ("estimated_duration_seconds".to_owned(), self.seconds.to_string()),
                ("estimated_end".to_owned(), rfc3339(end)),
                ("deadline".to_owned(), rfc3339(deadline)),
                ("wait_reason".to_owned(), self.wait_reason.as_str_name().to_owned()),
                ("position_in_queue".to_owned(), self.position.to_string()),
            ],
        })
    }
}

/// The error of a run cancelled because it was still queued at its deadline.
pub fn exceeded(deadline: Timestamp) -> PipelineError {
    PipelineError {
        code: EXCEEDED.to_owned(),
        message: format!("the run had not started by its deadline {}, so it was cancelled", rfc3339(deadline)),
        recoverable: true,
        step: None,
        action: Some("Push the role again with a later deadline, or without one".to_owned()),
    }
}

/// Cancels the runs not started yet (VALIDATING or QUEUED) whose deadline passed by `now`;
/// answers how many it cancelled.
pub async fn expire(store: &dyn RunStore, now: Timestamp) -> Result<usize, StoreError> {
    let overdue = store.waiting_past_deadline(now, PER_LOOK).await?;
    let mut cancelled = 0;
    for workflow_id in overdue {
        let run = store.get_run(&workflow_id).await?;
        let Some(deadline) = run.deadline else { continue };
        match store.transition(&workflow_id, cancel(deadline)).await {
            Ok(_) => cancelled += 1,
            // Started or cancelled meanwhile: its deadline no longer concerns the queue.
            Err(StoreError::IllegalTransition(_)) => {}
            Err(e) => tracing::warn!(%workflow_id, error = %chain(&e), "cannot cancel a run past its deadline"),
        }
    }
    Ok(cancelled)
}

/// The transition of a run cancelled at its deadline.
pub fn cancel(deadline: Timestamp) -> Transition {
    Transition::failing(RunState::Cancelled, "its deadline passed before it started", exceeded(deadline))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_must_be_a_time_in_the_future() {
        let now = etter_store::now();
        assert_eq!(parse(None, now), Ok(None));
        let later = prost_types::Timestamp { seconds: now.timestamp() + 60, nanos: 0 };
        assert!(matches!(parse(Some(&later), now), Ok(Some(t)) if t.timestamp() == later.seconds));
        let past = prost_types::Timestamp { seconds: now.timestamp() - 1, nanos: 0 };
        assert!(parse(Some(&past), now).is_err_and(|e| e.contains("must be in the future")));
        let negative = prost_types::Timestamp { seconds: now.timestamp() + 60, nanos: -1 };
        assert!(parse(Some(&negative), now).is_err());
    }

    #[test]
    fn a_run_that_cannot_end_in_time_or_cannot_start_is_refused_with_its_outlook() {
        let now = etter_store::now();
        let outlook = Outlook { wait_reason: pb::WaitReason::CompanyCap, position: 3, seconds: 90 };
        assert!(outlook.admit(now + chrono::TimeDelta::seconds(91), now).is_ok());
        let refused = outlook.admit(now + chrono::TimeDelta::seconds(60), now);
        let Err(ApiError::DeadlineUnreachable { description, metadata }) = refused else { panic!("{refused:?}") };
        assert!(description.contains("in 90 s, position 3"), "{description}");
        assert!(metadata.contains(&("wait_reason".to_owned(), "WAIT_REASON_COMPANY_CAP".to_owned())));
        let blocked = Outlook { wait_reason: pb::WaitReason::NoWorker, position: 1, seconds: 5 };
        let refused = blocked.admit(now + chrono::TimeDelta::hours(1), now);
        assert!(
            matches!(&refused, Err(ApiError::DeadlineUnreachable { description, .. }) if description.contains("no worker")),
            "{refused:?}"
        );
    }
}
