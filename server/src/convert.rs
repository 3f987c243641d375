//! The one conversion layer between the run store's types and the contract's messages.

use etter_core::digest::{OutputItem, OutputKind};
use etter_core::lifecycle::RunState;
use etter_core::steps::DocumentKind;
use etter_proto::v1 as pb;
use etter_store::{self, Change, DocumentRef, Priority, StepStatus, Timestamp, TokenCount};
use serde::{Deserialize, Serialize};

/// The contract's state of a run.
pub fn role_status(state: RunState) -> pb::RoleStatus {
    match state {
        RunState::Validating => pb::RoleStatus::Validating,
        RunState::Queued => pb::RoleStatus::Queued,
        RunState::Processing => pb::RoleStatus::Processing,
        RunState::Ready => pb::RoleStatus::Ready,
        RunState::Degraded => pb::RoleStatus::Degraded,
        RunState::Failed => pb::RoleStatus::Failed,
        RunState::Stale => pb::RoleStatus::Stale,
        RunState::Cancelled => pb::RoleStatus::Cancelled,
        RunState::ValidationError => pb::RoleStatus::ValidationError,
    }
}

/// The run state of a contract state; `None` for UNSPECIFIED, DRAFT (never produced here) or a
/// value this version does not know.
pub fn run_state(value: i32) -> Option<RunState> {
    RunState::ALL.into_iter().find(|s| role_status(*s) as i32 == value)
}

/// The contract's state of a step.
pub fn step_state(status: StepStatus) -> pb::StepState {
    match status {
        StepStatus::Pending => pb::StepState::Pending,
        StepStatus::Running => pb::StepState::Running,
        StepStatus::Retrying => pb::StepState::Retrying,
        StepStatus::Completed => pb::StepState::Completed,
        StepStatus::Failed => pb::StepState::Failed,
        StepStatus::Skipped => pb::StepState::Skipped,
        StepStatus::Reused => pb::StepState::Reused,
        StepStatus::Cancelled => pb::StepState::Cancelled,
    }
}

/// The stored name of a document type (`job_description`, …); `None` for UNSPECIFIED or a value
/// this version does not know.
pub fn document_kind(value: i32) -> Option<DocumentKind> {
    match pb::DocumentType::try_from(value).ok()? {
        pb::DocumentType::JobDescription => Some(DocumentKind::JobDescription),
        pb::DocumentType::ProcessMap => Some(DocumentKind::ProcessMap),
        pb::DocumentType::Supporting => Some(DocumentKind::Supporting),
        pb::DocumentType::Unspecified => None,
    }
}

/// The stable stored string of a document kind.
pub fn document_kind_str(kind: DocumentKind) -> &'static str {
    match kind {
        DocumentKind::JobDescription => "job_description",
        DocumentKind::ProcessMap => "process_map",
        DocumentKind::Supporting => "supporting",
    }
}

fn document_type(kind: &str) -> pb::DocumentType {
    match kind {
        "job_description" => pb::DocumentType::JobDescription,
        "process_map" => pb::DocumentType::ProcessMap,
        "supporting" => pb::DocumentType::Supporting,
        _ => pb::DocumentType::Unspecified,
    }
}

/// A stored document as the contract shows it, with the content hash the run read (once known).
pub fn document(doc: &DocumentRef, content_hash: Option<&str>) -> pb::Document {
    pb::Document {
        r#type: document_type(&doc.kind) as i32,
        uri: doc.uri.clone(),
        content_hash: content_hash.unwrap_or_default().to_owned(),
    }
}

/// One output of a step as the contract shows it.
pub fn output_item(item: &OutputItem) -> pb::OutputItem {
    let kind = match item.kind {
        OutputKind::Document => pb::OutputKind::Document,
        OutputKind::Task => pb::OutputKind::Task,
        OutputKind::TopTask => pb::OutputKind::TopTask,
        OutputKind::StandardName => pb::OutputKind::StandardName,
        OutputKind::Skill => pb::OutputKind::Skill,
        OutputKind::SkillCluster => pb::OutputKind::SkillCluster,
        OutputKind::CatalogEntry => pb::OutputKind::CatalogEntry,
        OutputKind::ReskillingPath => pb::OutputKind::ReskillingPath,
        OutputKind::Feasibility => pb::OutputKind::Feasibility,
    };
    pb::OutputItem {
        kind: kind as i32,
        key: item.key.clone(),
        name: item.name.clone(),
        scores: item.scores.iter().map(|(name, value)| (name.clone(), *value)).collect(),
        content_hash: item.content_hash.clone().unwrap_or_default(),
    }
}

/// The dispatch priority of a push; `None` for a value this version does not know.
pub fn priority(value: i32) -> Option<Priority> {
    match pb::Priority::try_from(value).ok()? {
        pb::Priority::Unspecified | pb::Priority::Normal => Some(Priority::Normal),
        pb::Priority::Low => Some(Priority::Low),
        pb::Priority::High => Some(Priority::High),
    }
}

fn priority_pb(priority: Priority) -> pb::Priority {
    match priority {
        Priority::Low => pb::Priority::Low,
        Priority::Normal => pb::Priority::Normal,
        Priority::High => pb::Priority::High,
    }
}

/// A run's options as the server stores them (`Run::options`) and shows them back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoredOptions {
    /// Only the critical path runs.
    pub skip_enhancement_workflows: bool,
    /// Send the company's webhook a signed event at the end.
    pub notify_on_complete: bool,
    /// Pushed with `force_rerun`.
    pub force_rerun: bool,
    /// Dispatch priority.
    pub priority: Priority,
}

impl StoredOptions {
    /// The options of a stored run (defaults for anything missing or unreadable).
    pub fn of(value: &serde_json::Value) -> Self {
        serde_json::from_value(value.clone()).unwrap_or_default()
    }

    /// As stored.
    pub fn to_json(self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// As the contract shows them, with the run's `deadline` (kept beside the options).
    pub fn to_pb(self, deadline: Option<Timestamp>) -> pb::RunOptions {
        pb::RunOptions {
            skip_enhancement_workflows: self.skip_enhancement_workflows,
            notify_on_complete: self.notify_on_complete,
            force_rerun: self.force_rerun,
            priority: priority_pb(self.priority) as i32,
            deadline: deadline.map(timestamp),
        }
    }
}

/// A store timestamp as a protobuf one.
pub fn timestamp(time: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// Token counts as the contract shows them.
pub fn tokens(count: TokenCount) -> pb::TokenUsage {
    pb::TokenUsage { input_tokens: count.input, output_tokens: count.output, total_tokens: count.total() }
}

/// A pipeline error as the contract shows it.
pub fn error(err: &etter_store::PipelineError) -> pb::PipelineError {
    pb::PipelineError {
        code: err.code.clone(),
        message: err.message.clone(),
        recoverable: err.recoverable,
        step: err.step.clone().unwrap_or_default(),
        action: err.action.clone().unwrap_or_default(),
    }
}

/// A stored event as the contract shows it, with the run's status to go with it.
pub fn event(event: &etter_store::RunEvent, run: Option<pb::RunStatus>) -> pb::RunEvent {
    let change = match &event.change {
        Change::Status { previous, status, reason } => pb::run_event::Change::StatusChange(pb::StatusChange {
            previous_status: previous.map_or(pb::RoleStatus::Unspecified, role_status) as i32,
            status: role_status(*status) as i32,
            reason: reason.clone(),
        }),
        Change::Step { step, status, attempt, error: err } => pb::run_event::Change::StepChange(pb::StepChange {
            step: step.clone(),
            status: step_state(*status) as i32,
            attempt: i32::try_from(*attempt).unwrap_or(i32::MAX),
            error: err.as_ref().map(error),
        }),
    };
    pb::RunEvent {
        workflow_id: event.workflow_id.to_string(),
        sequence: event.sequence,
        event_time: Some(timestamp(event.time)),
        change: Some(change),
        run,
    }
}

/// A rejected item's stored field violation as the contract shows it.
pub fn field_violation(v: &etter_store::FieldViolation) -> tonic_types::pb::bad_request::FieldViolation {
    tonic_types::pb::bad_request::FieldViolation {
        field: v.field.clone(),
        description: v.description.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each state maps to the contract value of the same name, and back: a swapped pair of
    /// arms (READY sent as DEGRADED) fails here, not in a client.
    #[test]
    fn every_state_maps_to_the_contract_value_of_its_name_and_back() {
        for state in RunState::ALL {
            let status = role_status(state);
            assert_eq!(status.as_str_name(), format!("ROLE_STATUS_{}", state.as_str()), "{state}");
            assert_eq!(run_state(status as i32), Some(state), "{state} does not come back");
        }
        for unknown in [pb::RoleStatus::Unspecified as i32, pb::RoleStatus::Draft as i32, 99] {
            assert_eq!(run_state(unknown), None, "{unknown}");
        }
        for status in StepStatus::ALL {
            let state = step_state(status);
            assert_eq!(state.as_str_name(), format!("STEP_STATE_{}", status.as_str().to_uppercase()), "{status}");
        }
    }

    #[test]
    fn document_types_and_options_round_trip() {
        for ty in [pb::DocumentType::JobDescription, pb::DocumentType::ProcessMap, pb::DocumentType::Supporting] {
            let kind = document_kind(ty as i32);
            let stored = DocumentRef {
                kind: kind.map(document_kind_str).unwrap_or_default().to_owned(),
                uri: "s3://b/k".into(),
            };
            assert_eq!(document(&stored, None).r#type, ty as i32);
        }
        assert_eq!(document_kind(0), None);
        assert_eq!(document_kind(99), None);
        let options =
            StoredOptions { skip_enhancement_workflows: true, priority: Priority::High, ..Default::default() };
        assert_eq!(StoredOptions::of(&options.to_json()), options);
        assert_eq!(priority(99), None);
    }
}
