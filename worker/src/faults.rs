//! Fault injection for the end-to-end tests: pause a step after its work is written
//! but before it is recorded (the worst moment for a worker to die), fail a step with a
//! transient error on every attempt or on its first only, stall a step's first attempt right
//! after it recorded itself completed (its report to Temporal never leaves), or make a step take [`SLOW_STEP`] longer (so that a run lasts
//! as long as a real one does, and timings are not lost in the noise of a loaded machine).
//!
//! Only the test binary `etter-worker-faults` (in the `etter-tests` crate, never shipped) reads
//! `ETTER_TEST_FAULTS`. `etter-worker` refuses to start when it is set: the binary people run
//! never injects faults, and never ignores a request for them silently.

use etter_core::steps::StepName;

use crate::failure::StepFailure;

/// The environment variable that asks for faults: `;`-separated `pause_after:<step>`,
/// `fail:<step>`, `fail_once:<step>`, `stall_after_record:<step>` and `slow:<step>` entries.
pub const FAULTS_VAR: &str = "ETTER_TEST_FAULTS";

/// How much longer a `slow:<step>` step takes.
pub const SLOW_STEP: std::time::Duration = std::time::Duration::from_secs(2);

/// The faults this process injects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Steps whose first attempt stops after writing its output and never finishes.
    pause_after: Vec<StepName>,
    /// Steps that fail with a transient error on every attempt.
    fail: Vec<StepName>,
    /// Steps whose first attempt fails with a transient error.
    fail_once: Vec<StepName>,
    /// Steps whose first attempt stops once it recorded itself completed, and never reports.
    stall_after_record: Vec<StepName>,
    /// Steps that wait [`SLOW_STEP`] before their work, on every attempt.
    slow: Vec<StepName>,
}

/// Faults asked for but not available, or asked for in words this build does not know.
#[derive(Debug, thiserror::Error)]
pub enum FaultsError {
    /// `ETTER_TEST_FAULTS` is set for `etter-worker`, which never injects faults.
    #[error(
        "{FAULTS_VAR} is set, but etter-worker never injects faults (the tests' etter-worker-faults does); unset it"
    )]
    NotInThisBinary,
    /// An entry is malformed.
    #[error("{FAULTS_VAR}: {0}")]
    Invalid(String),
}

impl Faults {
    /// The faults `ETTER_TEST_FAULTS` asks for (none when unset): for `etter-worker-faults` only.
    pub fn from_env() -> Result<Self, FaultsError> {
        match std::env::var(FAULTS_VAR) {
            Ok(spec) if !spec.trim().is_empty() => Self::parse(&spec),
            _ => Ok(Self::default()),
        }
    }

    /// For `etter-worker`: an error when `ETTER_TEST_FAULTS` asks for faults.
    pub fn refuse_env() -> Result<(), FaultsError> {
        match std::env::var(FAULTS_VAR) {
            Ok(spec) if !spec.trim().is_empty() => Err(FaultsError::NotInThisBinary),
            _ => Ok(()),
        }
    }

    /// Parses a fault list.
    pub fn parse(spec: &str) -> Result<Self, FaultsError> {
        let mut faults = Self::default();
        for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (kind, step) =
                entry.split_once(':').ok_or_else(|| FaultsError::Invalid(format!("`{entry}` is not `kind:step`")))?;
            let step = StepName::parse(step.trim())
                .ok_or_else(|| FaultsError::Invalid(format!("`{step}` is not a step name")))?;
            match kind.trim() {
                "pause_after" => faults.pause_after.push(step),
                "fail" => faults.fail.push(step),
                "fail_once" => faults.fail_once.push(step),
                "stall_after_record" => faults.stall_after_record.push(step),
                "slow" => faults.slow.push(step),
                other => return Err(FaultsError::Invalid(format!("unknown fault `{other}`"))),
            }
        }
        Ok(faults)
    }

    /// Whether any fault is active.
    pub fn is_empty(&self) -> bool {
        self.pause_after.is_empty()
            && self.fail.is_empty()
            && self.fail_once.is_empty()
            && self.stall_after_record.is_empty()
            && self.slow.is_empty()
    }

    /// Before an attempt's work: slows it down, then fails it, when asked to.
    pub async fn before_work(&self, step: StepName, attempt: u32) -> Result<(), StepFailure> {
        if self.slow.contains(&step) {
            tokio::time::sleep(SLOW_STEP).await;
        }
        if self.fail.contains(&step) || (attempt == 1 && self.fail_once.contains(&step)) {
            return Err(StepFailure::transient("INJECTED_FAULT", format!("{step} failed by {FAULTS_VAR}")));
        }
        Ok(())
    }

    /// After a step recorded itself completed, before it reports to Temporal: on the first attempt
    /// of a stalled step, never returns (and no longer heartbeats), as a worker that died or froze
    /// right then.
    pub async fn after_record(&self, step: StepName, attempt: u32) {
        if attempt == 1 && self.stall_after_record.contains(&step) {
            std::future::pending::<()>().await;
        }
    }

    /// After a step's work, before it is recorded: on the first attempt of a paused step, says so
    /// on stdout (the test waits for that line) and never returns — the activity keeps
    /// heartbeating until the process is killed or the activity cancelled.
    pub async fn after_work(&self, step: StepName, attempt: u32) {
        if attempt == 1 && self.pause_after.contains(&step) {
            println!("{}", serde_json::json!({ "fault": "paused", "step": step.as_str() }));
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fault_lists_parse_and_reject_unknown_words() -> anyhow::Result<()> {
        let faults =
            Faults::parse("pause_after:ai_assessment; fail:task_feasibility; slow:role_setup; fail_once:finalize")?;
        assert_eq!(faults.pause_after, vec![StepName::AiAssessment]);
        assert!(faults.before_work(StepName::TaskFeasibility, 2).await.is_err());
        assert!(faults.before_work(StepName::AiAssessment, 1).await.is_ok());
        assert!(faults.before_work(StepName::Finalize, 1).await.is_err());
        assert!(faults.before_work(StepName::Finalize, 2).await.is_ok());
        let started = tokio::time::Instant::now();
        assert!(faults.before_work(StepName::RoleSetup, 1).await.is_ok());
        assert!(started.elapsed() >= SLOW_STEP, "a slow step waits before its work");
        assert!(Faults::parse("explode:ai_assessment").is_err());
        assert!(Faults::parse("fail:nonsense").is_err());
        assert!(Faults::parse("fail").is_err());
        Ok(())
    }
}
