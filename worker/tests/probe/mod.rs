//! A miniature of the pipeline's Temporal shape: a parent workflow that fans out to an activity
//! and a child workflow, a long heartbeating activity that must notice cancellation, and an
//! activity that fails permanently. Names are explicit constants because the server starts
//! workflows by name and never links this crate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use temporalio_common::RetryPolicy;
use temporalio_sdk::activities::{ActivityContext, ActivityError, activities};
use temporalio_sdk::workflows::{join, workflow, workflow_methods};
use temporalio_sdk::{
    ActivityCancellationType, ActivityOptions, ApplicationFailure, ChildWorkflowOptions, WorkflowContext,
    WorkflowResult, WorkflowTermination,
};
use tokio::sync::mpsc;

pub const PARENT_WORKFLOW: &str = "EtterProbeParent";
pub const CHILD_WORKFLOW: &str = "EtterProbeChild";
pub const HEARTBEAT_WORKFLOW: &str = "EtterProbeHeartbeat";
pub const REJECTING_WORKFLOW: &str = "EtterProbeRejecting";
/// The failure type a permanent error carries, so retry policies and callers can match on it.
pub const PERMANENT_FAILURE_TYPE: &str = "EtterProbePermanent";

/// Short enough that a cancelled activity notices within a couple of seconds (the SDK flushes
/// heartbeats at 80 % of this), long enough not to time out on a busy 2-core machine.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);
const HEARTBEAT_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub shouted: String,
    pub child: ChildReport,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildReport {
    pub workflow_id: String,
    pub reversed: String,
}

/// What the activities tell the test, so it can wait on facts instead of sleeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeEvent {
    HeartbeatLoopStarted,
    CancellationObserved,
}

/// Executions per activity, shared with the test: retries and duplicate runs show up here.
#[derive(Debug, Default)]
pub struct ProbeCounters {
    pub shout: AtomicU32,
    pub reverse: AtomicU32,
    pub reject: AtomicU32,
}

impl ProbeCounters {
    pub fn get(counter: &AtomicU32) -> u32 {
        counter.load(Ordering::SeqCst)
    }
}

pub struct ProbeActivities {
    counters: Arc<ProbeCounters>,
    events: mpsc::UnboundedSender<ProbeEvent>,
}

impl ProbeActivities {
    pub fn new() -> (Self, Arc<ProbeCounters>, mpsc::UnboundedReceiver<ProbeEvent>) {
        let counters = Arc::new(ProbeCounters::default());
        let (events, receiver) = mpsc::unbounded_channel();
        let activities = Self { counters: Arc::clone(&counters), events };
        (activities, counters, receiver)
    }

    fn tell(&self, event: ProbeEvent) {
        // A closed receiver means the test already finished; nobody is left to tell.
        let _ = self.events.send(event);
    }
}

#[activities]
impl ProbeActivities {
    #[activity(name = "EtterProbeShout")]
    pub async fn shout(self: Arc<Self>, _ctx: ActivityContext, text: String) -> Result<String, ActivityError> {
        self.counters.shout.fetch_add(1, Ordering::SeqCst);
        Ok(text.to_uppercase())
    }

    #[activity(name = "EtterProbeReverse")]
    pub async fn reverse(self: Arc<Self>, _ctx: ActivityContext, text: String) -> Result<String, ActivityError> {
        self.counters.reverse.fetch_add(1, Ordering::SeqCst);
        Ok(text.chars().rev().collect())
    }

    /// Runs until cancelled. Cancellation reaches an activity only through heartbeat responses,
    /// so it must keep heartbeating while it waits.
    #[activity(name = "EtterProbeHeartbeatUntilCancelled")]
    pub async fn heartbeat_until_cancelled(
        self: Arc<Self>,
        ctx: ActivityContext,
        _input: (),
    ) -> Result<(), ActivityError> {
        let mut beats: u32 = 0;
        ctx.record_heartbeat(beats).await?;
        self.tell(ProbeEvent::HeartbeatLoopStarted);
        loop {
            tokio::select! {
                () = ctx.cancelled() => {
                    self.tell(ProbeEvent::CancellationObserved);
                    return Err(ActivityError::cancelled());
                }
                () = tokio::time::sleep(HEARTBEAT_EVERY) => {
                    beats += 1;
                    ctx.record_heartbeat(beats).await?;
                }
            }
        }
    }

    #[activity(name = "EtterProbeReject")]
    pub async fn reject(self: Arc<Self>, _ctx: ActivityContext, input: String) -> Result<(), ActivityError> {
        self.counters.reject.fetch_add(1, Ordering::SeqCst);
        Err(ActivityError::application(
            ApplicationFailure::builder(format!("probe input {input:?} can never succeed"))
                .type_name(PERMANENT_FAILURE_TYPE.to_owned())
                .non_retryable(true)
                .build(),
        ))
    }
}

fn quick_activity() -> ActivityOptions {
    ActivityOptions::start_to_close_timeout(Duration::from_secs(30))
}

#[workflow]
#[derive(Default)]
pub struct ProbeParent;

#[workflow_methods]
impl ProbeParent {
    #[run(name = PARENT_WORKFLOW)]
    pub async fn run(ctx: &mut WorkflowContext<Self>, text: String) -> WorkflowResult<ProbeReport> {
        let child_id = format!("{}-child", ctx.workflow_id());
        let shout = ctx.execute_activity(ProbeActivities::shout, text.clone(), quick_activity());
        let child = async {
            let started =
                ctx.start_child_workflow(ProbeChild::run, text, ChildWorkflowOptions::workflow_id(child_id)).await?;
            Ok::<_, WorkflowTermination>(started.result().await?)
        };
        // The pipeline's steps fan out the same way; tokio/futures combinators would break replay.
        let (shouted, child) = join!(shout, child);
        Ok(ProbeReport { shouted: shouted?, child: child? })
    }
}

#[workflow]
#[derive(Default)]
pub struct ProbeChild;

#[workflow_methods]
impl ProbeChild {
    #[run(name = CHILD_WORKFLOW)]
    pub async fn run(ctx: &mut WorkflowContext<Self>, text: String) -> WorkflowResult<ChildReport> {
        let reversed = ctx.execute_activity(ProbeActivities::reverse, text, quick_activity()).await?;
        Ok(ChildReport { workflow_id: ctx.workflow_id().to_owned(), reversed })
    }
}

#[workflow]
#[derive(Default)]
pub struct ProbeHeartbeat;

#[workflow_methods]
impl ProbeHeartbeat {
    #[run(name = HEARTBEAT_WORKFLOW)]
    pub async fn run(ctx: &mut WorkflowContext<Self>, _input: ()) -> WorkflowResult<()> {
        let options = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(300))
            .heartbeat_timeout(HEARTBEAT_TIMEOUT)
            // Resolve only once the activity has acknowledged the cancel, so the workflow cannot
            // close as cancelled while its activity still runs.
            .cancellation_type(ActivityCancellationType::WaitCancellationCompleted)
            .retry_policy(RetryPolicy::builder().maximum_attempts(1).build())
            .build();
        // A cancelled activity inside a cancelled workflow turns `?` into a cancelled close.
        ctx.execute_activity(ProbeActivities::heartbeat_until_cancelled, (), options).await?;
        Ok(())
    }
}

#[workflow]
#[derive(Default)]
pub struct ProbeRejecting;

#[workflow_methods]
impl ProbeRejecting {
    #[run(name = REJECTING_WORKFLOW)]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: String) -> WorkflowResult<()> {
        // Generous, fast retries: if the non-retryable flag were ignored, the attempt counter
        // would show it within a second instead of the test passing by luck.
        let retries = RetryPolicy::builder()
            .initial_interval(Duration::from_millis(100))
            .backoff_coefficient(1.0)
            .maximum_attempts(5)
            .build();
        let options =
            ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30)).retry_policy(retries).build();
        ctx.execute_activity(ProbeActivities::reject, input, options).await?;
        Ok(())
    }
}
