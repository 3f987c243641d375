//! The step graph (docs/ARCHITECTURE.md, "The step graph") as data, and the planning of runs over it.
//!
//! ```text
//! role_setup ─► document_linking ─► ai_assessment ─┬─► step_executor ─► standardization
//!                                                  ├─► skills_miner ─► skills_architecture ─► skills_catalog ─► reskilling
//!                                                  └─► task_feasibility
//!                                     all of the above ─► finalize
//! ```
//!
//! The workflow schedules from [`STEPS`] (parallel where dependencies allow), Retry and STALE
//! re-runs plan from it, and the UI draws progress from it.
//!
//! **Re-running only what is affected.** Every step records the hash of its inputs
//! ([`input_hash`]: the content hashes of the documents it consumes and the output hashes of the
//! steps it needs). When a re-run reaches a step whose input hash equals the one recorded by the
//! earlier run that produced a kept output, the step is reused instead of run
//! ([`decide`]). Because a re-run step that produces the same output hash as before leaves its
//! dependents' input hashes unchanged, the re-run stops early there by construction.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write as _;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::outputs::ContentHash;

/// A step of the pipeline. The order of [`StepName::ALL`] is a topological order of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepName {
    /// Creates the company, role and Draup mapping in the graph.
    RoleSetup,
    /// Fetches the role's documents, extracts their text and links them to the role.
    DocumentLinking,
    /// Finds the role's tasks with automation and augmentation scores (the critical AI step).
    AiAssessment,
    /// Selects the top tasks.
    StepExecutor,
    /// Gives the top tasks their standard names.
    Standardization,
    /// Mines the skills the role needs.
    SkillsMiner,
    /// Groups the skills into clusters.
    SkillsArchitecture,
    /// Writes skills-catalog entries.
    SkillsCatalog,
    /// Proposes reskilling paths.
    Reskilling,
    /// Rates how feasible automating each task is.
    TaskFeasibility,
    /// Makes the role visible on the dashboard and records the outcome.
    Finalize,
}

impl StepName {
    /// Every step, in a topological order.
    pub const ALL: [StepName; 11] = [
        StepName::RoleSetup,
        StepName::DocumentLinking,
        StepName::AiAssessment,
        StepName::StepExecutor,
        StepName::Standardization,
        StepName::SkillsMiner,
        StepName::SkillsArchitecture,
        StepName::SkillsCatalog,
        StepName::Reskilling,
        StepName::TaskFeasibility,
        StepName::Finalize,
    ];

    /// The stable name used in the contract, the stores and the UI (`role_setup`, …).
    pub fn as_str(self) -> &'static str {
        self.spec().name
    }

    /// Parses [`StepName::as_str`].
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// The step's place in the graph.
    pub fn spec(self) -> &'static StepSpec {
        &STEPS[self as usize]
    }

    /// Whether the step's failure fails the run (otherwise the run can end DEGRADED).
    pub fn is_critical(self) -> bool {
        self.spec().critical
    }
}

impl fmt::Display for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of a source document, as far as steps are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    /// A job description.
    JobDescription,
    /// A process map.
    ProcessMap,
    /// Any other supporting document.
    Supporting,
}

/// The branch of the run a step belongs to. The worker runs each as a chain of activities of the
/// run's workflow; runs started before that ran the three AI branches as the child workflows
/// named here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepGroup {
    /// Run by the parent workflow itself.
    Parent,
    /// `AIAssessmentWorkflow`.
    AiAssessment,
    /// `TopTasksWorkflow`.
    TopTasks,
    /// `SkillsAnalysisWorkflow`.
    SkillsAnalysis,
}

/// One node of the step graph.
#[derive(Debug)]
pub struct StepSpec {
    /// The step.
    pub step: StepName,
    /// Its stable name.
    pub name: &'static str,
    /// Steps whose outputs it consumes; it starts only after they completed (or were reused).
    pub needs: &'static [StepName],
    /// Document kinds whose content it consumes.
    pub consumes: &'static [DocumentKind],
    /// Whether it reads the role's identity (company, name, Draup mapping).
    pub consumes_identity: bool,
    /// Whether its failure fails the run.
    pub critical: bool,
    /// Whether it calls the LLM (and so uses tokens).
    pub uses_llm: bool,
    /// The sub-workflow that runs it.
    pub group: StepGroup,
    /// Starts only after every other planned step has ended, whatever their outcome (an ordering,
    /// not a data dependency: its inputs are `needs`). Only `finalize`, which must see whether
    /// enhancements failed to record DEGRADED.
    pub runs_last: bool,
}

const ALL_DOCS: &[DocumentKind] = &[DocumentKind::JobDescription, DocumentKind::ProcessMap, DocumentKind::Supporting];

/// The step graph, indexed by `StepName as usize`.
pub static STEPS: [StepSpec; 11] = {
    use DocumentKind::*;
    use StepGroup::*;
    use StepName::*;
    [
        StepSpec {
            step: RoleSetup,
            name: "role_setup",
            needs: &[],
            consumes: &[],
            consumes_identity: true,
            critical: true,
            uses_llm: false,
            group: Parent,
            runs_last: false,
        },
        StepSpec {
            step: DocumentLinking,
            name: "document_linking",
            needs: &[RoleSetup],
            consumes: ALL_DOCS,
            consumes_identity: false,
            critical: true,
            uses_llm: false,
            group: Parent,
            runs_last: false,
        },
        StepSpec {
            step: StepName::AiAssessment,
            name: "ai_assessment",
            needs: &[DocumentLinking],
            consumes: ALL_DOCS,
            consumes_identity: false,
            critical: true,
            uses_llm: true,
            group: StepGroup::AiAssessment,
            runs_last: false,
        },
        StepSpec {
            step: StepExecutor,
            name: "step_executor",
            needs: &[StepName::AiAssessment],
            consumes: &[],
            consumes_identity: false,
            critical: false,
            uses_llm: true,
            group: TopTasks,
            runs_last: false,
        },
        StepSpec {
            step: Standardization,
            name: "standardization",
            needs: &[StepExecutor],
            consumes: &[],
            consumes_identity: false,
            critical: false,
            uses_llm: true,
            group: TopTasks,
            runs_last: false,
        },
        StepSpec {
            step: SkillsMiner,
            name: "skills_miner",
            needs: &[StepName::AiAssessment],
            consumes: &[JobDescription, Supporting],
            consumes_identity: false,
            critical: false,
            uses_llm: true,
            group: SkillsAnalysis,
            runs_last: false,
        },
        StepSpec {
            step: SkillsArchitecture,
            name: "skills_architecture",
            needs: &[SkillsMiner],
            consumes: &[],
            consumes_identity: false,
            critical: false,
            uses_llm: true,
            group: SkillsAnalysis,
            runs_last: false,
        },
        StepSpec {
            step: SkillsCatalog,
            name: "skills_catalog",
            needs: &[SkillsArchitecture],
            consumes: &[],
            consumes_identity: false,
            critical: false,
            uses_llm: true,
            group: Parent,
            runs_last: false,
        },
        StepSpec {
            step: Reskilling,
            name: "reskilling",
            needs: &[SkillsCatalog, StepName::AiAssessment],
            consumes: &[],
            consumes_identity: false,
            critical: false,
            uses_llm: true,
            group: Parent,
            runs_last: false,
        },
        StepSpec {
            step: TaskFeasibility,
            name: "task_feasibility",
            needs: &[StepName::AiAssessment],
            consumes: &[ProcessMap],
            consumes_identity: false,
            critical: false,
            uses_llm: true,
            group: Parent,
            runs_last: false,
        },
        StepSpec {
            step: Finalize,
            name: "finalize",
            needs: &[StepName::AiAssessment],
            consumes: &[],
            consumes_identity: false,
            critical: true,
            uses_llm: false,
            group: Parent,
            runs_last: true,
        },
    ]
};

/// Every step that (transitively) needs `step`, excluding `step` itself.
pub fn dependents(step: StepName) -> BTreeSet<StepName> {
    let mut out = BTreeSet::new();
    for candidate in StepName::ALL {
        if candidate.spec().needs.iter().any(|n| *n == step || out.contains(n)) {
            out.insert(candidate);
        }
    }
    out
}

/// The steps whose outputs a step's input hash covers: the steps it needs and, for a step that
/// runs last (`finalize`, whose summary covers every output of the role), every other step, so a
/// STALE re-run never reuses a summary of outputs that have since changed. An output that does
/// not exist (failed or skipped step) hashes as empty.
pub fn hashed_upstream(step: StepName) -> Vec<StepName> {
    if step.spec().runs_last {
        StepName::ALL.into_iter().filter(|s| *s != step).collect()
    } else {
        step.spec().needs.to_vec()
    }
}

/// The hash of a step's inputs: the role identity (for steps that read it), the content hashes of
/// the documents of the kinds it consumes (sorted, so document order does not matter), and the
/// output hashes of its [`hashed_upstream`] steps. Hex SHA-256.
pub fn input_hash(
    step: StepName,
    identity: &str,
    documents: &[(DocumentKind, ContentHash)],
    upstream_outputs: &BTreeMap<StepName, String>,
) -> String {
    let spec = step.spec();
    let mut hasher = Sha256::new();
    hasher.update(spec.name.as_bytes());
    hasher.update([0]);
    if spec.consumes_identity {
        hasher.update(identity.as_bytes());
    }
    hasher.update([0]);
    let mut docs: Vec<&(DocumentKind, ContentHash)> =
        documents.iter().filter(|(kind, _)| spec.consumes.contains(kind)).collect();
    docs.sort();
    // Formatted straight into the hasher (no string per part): the same bytes as
    // `format!("{kind:?}:{hash}\n")` and `format!("{need}:{output}\n")`, which stored hashes used.
    for (kind, hash) in docs {
        let _ = writeln!(hasher, "{kind:?}:{}", hash.0);
    }
    hasher.update([0]);
    for need in hashed_upstream(step) {
        let output = upstream_outputs.get(&need).map(String::as_str).unwrap_or("");
        let _ = writeln!(hasher, "{need}:{output}");
    }
    hex::encode(hasher.finalize())
}

/// What an earlier run of the role left for a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorStep {
    /// How the step ended in that run.
    pub outcome: PriorOutcome,
    /// The input hash it ran with (when it ran).
    pub input_hash: Option<String>,
    /// The output hash it produced (when it completed).
    pub output_hash: Option<String>,
}

/// How a step ended in an earlier run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriorOutcome {
    /// Completed, or reused a completed output; the output is kept.
    Completed,
    /// Failed after its retries.
    Failed,
    /// Never ran: not reached, cancelled, or skipped.
    NotRun,
}

impl PriorStep {
    fn kept_output(&self) -> Option<&str> {
        match self.outcome {
            PriorOutcome::Completed => self.output_hash.as_deref(),
            PriorOutcome::Failed | PriorOutcome::NotRun => None,
        }
    }
}

/// What a run does with a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Execute it.
    Run,
    /// Keep the earlier run's output.
    Reuse,
    /// Leave it out of this run.
    Skip,
}

/// The steps of one run and what it does with each, in [`StepName::ALL`] order. Kept with the
/// run (the dispatcher hands it to the workflow), so a Retry or a STALE re-run executes exactly
/// what was planned when it was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// One entry per step.
    pub steps: Vec<(StepName, Action)>,
    /// At run time, reuse a step's earlier output instead of running it when its input hash came
    /// out unchanged ([`decide`]): the early cutoff of STALE re-runs. Off for first runs and for
    /// Retry (an explicitly named step runs even if its inputs did not change).
    #[serde(default)]
    pub early_cutoff: bool,
}

impl Plan {
    /// What the plan does with `step`.
    pub fn action(&self, step: StepName) -> Action {
        self.steps.iter().find(|(s, _)| *s == step).map_or(Action::Skip, |(_, a)| *a)
    }

    /// Steps the plan executes, in order.
    pub fn to_run(&self) -> Vec<StepName> {
        self.steps.iter().filter(|(_, a)| *a == Action::Run).map(|(s, _)| *s).collect()
    }

    /// Steps this run accounts for in its progress (`progress.total`): run or reused.
    pub fn total(&self) -> usize {
        self.steps.iter().filter(|(_, a)| *a != Action::Skip).count()
    }
}

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A requested step is not part of the pipeline.
    #[error("unknown step `{0}`; steps are: {steps}", steps = StepName::ALL.map(StepName::as_str).join(", "))]
    UnknownStep(String),
    /// A requested step is an enhancement while enhancements are switched off for this role.
    #[error(
        "step `{0}` is an enhancement step, which this run skips (options.skip_enhancement_workflows); push the role without that option to run it"
    )]
    SkippedByOptions(StepName),
    /// Nothing would run.
    #[error("nothing to re-run: every step completed and no step was named")]
    NothingToRun,
}

fn base_actions(skip_enhancement: bool) -> Vec<(StepName, Action)> {
    StepName::ALL
        .into_iter()
        .map(|s| (s, if skip_enhancement && !s.is_critical() { Action::Skip } else { Action::Run }))
        .collect()
}

/// The plan of a role's first run (or a forced re-run): every step, enhancements left out when
/// `skip_enhancement`.
pub fn plan_new(skip_enhancement: bool) -> Plan {
    Plan { steps: base_actions(skip_enhancement), early_cutoff: false }
}

/// Parses client-given step names.
pub fn parse_steps(names: &[String]) -> Result<Vec<StepName>, PlanError> {
    names.iter().map(|n| StepName::parse(n).ok_or_else(|| PlanError::UnknownStep(n.clone()))).collect()
}

/// The plan of a Retry. Without `explicit` steps: every step that did not complete in the earlier
/// run (failed, not reached, cancelled) runs again with everything that depends on it; completed
/// steps are reused. With `explicit` steps: those steps and their dependents run; so does any step
/// they need whose output was not kept; steps outside that set keep their output when they have
/// one and are left out otherwise. Either way, a step that runs last (`finalize`, which summarises
/// every output and makes the role visible) runs whenever any other step does.
pub fn plan_retry(
    prior: &BTreeMap<StepName, PriorStep>,
    explicit: &[StepName],
    skip_enhancement: bool,
) -> Result<Plan, PlanError> {
    let mut steps = base_actions(skip_enhancement);
    for step in explicit {
        if skip_enhancement && !step.is_critical() {
            return Err(PlanError::SkippedByOptions(*step));
        }
    }
    let kept = |s: &StepName| prior.get(s).and_then(PriorStep::kept_output).is_some();
    let mut run: BTreeSet<StepName> = if explicit.is_empty() {
        steps.iter().filter(|(s, a)| *a == Action::Run && !kept(s)).map(|(s, _)| *s).collect()
    } else {
        explicit.iter().copied().collect()
    };
    for step in run.clone() {
        run.extend(dependents(step));
    }
    if !run.is_empty() {
        run.extend(steps.iter().filter(|(s, a)| *a == Action::Run && s.spec().runs_last).map(|(s, _)| *s));
    }
    // A step that runs needs its inputs: an upstream step without a kept output runs too.
    for step in StepName::ALL.into_iter().rev() {
        if run.contains(&step) {
            run.extend(step.spec().needs.iter().filter(|n| !kept(n)));
        }
    }
    for (step, action) in &mut steps {
        if *action == Action::Run && !run.contains(step) {
            *action = if kept(step) { Action::Reuse } else { Action::Skip };
        }
    }
    if steps.iter().all(|(_, a)| *a != Action::Run) {
        return Err(PlanError::NothingToRun);
    }
    Ok(Plan { steps, early_cutoff: false })
}

/// The plan of a STALE re-run, made before anything executes: a step runs when its own inputs
/// changed (identity or consumed documents differ from what the earlier run hashed), when it
/// has no kept output, or when a step whose output it hashes runs (which may change its inputs — [`decide`]
/// then reuses it at run time if the upstream output came out unchanged). This is the pessimistic
/// bound shown as `progress.total`; execution only ever runs a subset of it.
pub fn plan_rerun(
    prior: &BTreeMap<StepName, PriorStep>,
    identity: &str,
    documents: &[(DocumentKind, ContentHash)],
    skip_enhancement: bool,
) -> Plan {
    let mut steps = base_actions(skip_enhancement);
    let mut running: BTreeSet<StepName> = BTreeSet::new();
    let mut prior_outputs: BTreeMap<StepName, String> = BTreeMap::new();
    for (step, p) in prior {
        if let Some(out) = p.kept_output() {
            prior_outputs.insert(*step, out.to_owned());
        }
    }
    for (step, action) in &mut steps {
        if *action == Action::Skip {
            continue;
        }
        let Some(p) = prior.get(step).filter(|p| p.kept_output().is_some()) else {
            running.insert(*step);
            continue;
        };
        let upstream_runs = hashed_upstream(*step).iter().any(|n| running.contains(n));
        // With upstream outputs as they were, does this step's own input hash still match?
        let own_inputs_same = p.input_hash.as_deref() == Some(&input_hash(*step, identity, documents, &prior_outputs));
        if upstream_runs || !own_inputs_same {
            running.insert(*step);
        } else {
            *action = Action::Reuse;
        }
    }
    Plan { steps, early_cutoff: true }
}

/// The decision at the moment a step is reached during a re-run: reuse the earlier output when
/// the step's actual input hash (computed from the upstream outputs of *this* run) equals the one
/// the earlier run recorded for a kept output; run otherwise. This is the early cutoff: a re-run
/// step whose output hash did not change leaves its dependents' input hashes unchanged.
pub fn decide(prior: Option<&PriorStep>, current_input_hash: &str) -> Action {
    match prior {
        Some(p) if p.kept_output().is_some() && p.input_hash.as_deref() == Some(current_input_hash) => Action::Reuse,
        _ => Action::Run,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_table_is_indexed_and_topologically_ordered() {
        for (i, step) in StepName::ALL.into_iter().enumerate() {
            assert_eq!(STEPS[i].step, step, "STEPS[{i}]");
            assert_eq!(StepName::parse(step.as_str()), Some(step));
            for need in step.spec().needs {
                assert!((*need as usize) < i, "{step} needs {need}, which comes later");
            }
        }
        let last: Vec<StepName> = StepName::ALL.into_iter().filter(|s| s.spec().runs_last).collect();
        assert_eq!(last, [StepName::Finalize], "finalize runs after every other step");
        let critical: Vec<&str> = StepName::ALL.into_iter().filter(|s| s.is_critical()).map(StepName::as_str).collect();
        assert_eq!(critical, ["role_setup", "document_linking", "ai_assessment", "finalize"]);
    }

    #[test]
    fn dependents_follow_the_design_graph() {
        use StepName::*;
        assert_eq!(dependents(SkillsMiner), BTreeSet::from([SkillsArchitecture, SkillsCatalog, Reskilling]));
        assert_eq!(dependents(StepExecutor), BTreeSet::from([Standardization]));
        assert_eq!(dependents(Finalize), BTreeSet::new());
        assert_eq!(dependents(RoleSetup).len(), 10);
    }

    #[test]
    fn skipping_enhancements_leaves_the_critical_path() {
        let plan = plan_new(true);
        let run: Vec<&str> = plan.to_run().into_iter().map(StepName::as_str).collect();
        assert_eq!(run, ["role_setup", "document_linking", "ai_assessment", "finalize"]);
        assert_eq!(plan.total(), 4);
        assert_eq!(plan_new(false).total(), 11);
    }

    fn completed(out: &str) -> PriorStep {
        PriorStep {
            outcome: PriorOutcome::Completed,
            input_hash: Some(format!("in-{out}")),
            output_hash: Some(out.into()),
        }
    }

    #[test]
    fn retry_reruns_the_failed_branch_only() -> Result<(), PlanError> {
        use StepName::*;
        let mut prior: BTreeMap<StepName, PriorStep> =
            StepName::ALL.into_iter().map(|s| (s, completed(s.as_str()))).collect();
        prior.insert(
            SkillsArchitecture,
            PriorStep { outcome: PriorOutcome::Failed, input_hash: None, output_hash: None },
        );
        prior.insert(SkillsCatalog, PriorStep { outcome: PriorOutcome::NotRun, input_hash: None, output_hash: None });
        prior.insert(Reskilling, PriorStep { outcome: PriorOutcome::NotRun, input_hash: None, output_hash: None });
        let plan = plan_retry(&prior, &[], false)?;
        assert_eq!(plan.to_run(), vec![SkillsArchitecture, SkillsCatalog, Reskilling, Finalize]);
        assert_eq!(plan.action(AiAssessment), Action::Reuse);

        let explicit = plan_retry(&prior, &[StepExecutor], false)?;
        assert_eq!(explicit.to_run(), vec![StepExecutor, Standardization, Finalize]);
        assert_eq!(plan_retry(&prior, &[SkillsMiner], true), Err(PlanError::SkippedByOptions(SkillsMiner)));
        let all_done: BTreeMap<StepName, PriorStep> =
            StepName::ALL.into_iter().map(|s| (s, completed(s.as_str()))).collect();
        assert_eq!(plan_retry(&all_done, &[], false), Err(PlanError::NothingToRun));
        assert!(matches!(parse_steps(&["nope".into()]), Err(PlanError::UnknownStep(_))));
        Ok(())
    }

    /// Input hashes are stored with every step and compared across runs and server versions: a
    /// change to how they are computed would make every earlier output look stale. Pinned.
    #[test]
    fn input_hashes_are_the_ones_earlier_versions_stored() {
        let docs = [
            (DocumentKind::ProcessMap, ContentHash("b".repeat(64))),
            (DocumentKind::JobDescription, ContentHash("a".repeat(64))),
        ];
        let upstream: BTreeMap<StepName, String> = StepName::ALL.into_iter().map(|s| (s, format!("out-{s}"))).collect();
        let hashes: Vec<String> =
            StepName::ALL.into_iter().map(|s| input_hash(s, "acme/Claims Adjuster", &docs, &upstream)).collect();
        assert_eq!(hashes, PINNED.map(str::to_owned).to_vec());
    }

    /// A deterministic stand-in for a step's work: its output hash as a function of its input
    /// hash, where some inputs "don't matter" (the step produces the same output anyway).
    fn simulate_output(step: StepName, input: &str, insensitive: &BTreeSet<StepName>) -> String {
        if insensitive.contains(&step) { format!("stable-{step}") } else { format!("out-{step}-{input}") }
    }

    /// Runs a whole pipeline the way the worker will: in topological order, deciding each step
    /// with `decide` against `prior`. Returns the records and the steps executed.
    fn execute(
        prior: &BTreeMap<StepName, PriorStep>,
        identity: &str,
        docs: &[(DocumentKind, ContentHash)],
        insensitive: &BTreeSet<StepName>,
    ) -> (BTreeMap<StepName, PriorStep>, Vec<StepName>) {
        let mut outputs = BTreeMap::new();
        let mut records = BTreeMap::new();
        let mut executed = Vec::new();
        for step in StepName::ALL {
            let input = input_hash(step, identity, docs, &outputs);
            let output = match decide(prior.get(&step), &input) {
                Action::Reuse => prior.get(&step).and_then(|p| p.output_hash.clone()).unwrap_or_default(),
                _ => {
                    executed.push(step);
                    simulate_output(step, &input, insensitive)
                }
            };
            records.insert(
                step,
                PriorStep {
                    outcome: PriorOutcome::Completed,
                    input_hash: Some(input),
                    output_hash: Some(output.clone()),
                },
            );
            outputs.insert(step, output);
        }
        (records, executed)
    }

    fn doc_strategy() -> impl Strategy<Value = Vec<(DocumentKind, ContentHash)>> {
        let kind = prop_oneof![
            Just(DocumentKind::JobDescription),
            Just(DocumentKind::ProcessMap),
            Just(DocumentKind::Supporting)
        ];
        prop::collection::vec((kind, "[a-c]{1}".prop_map(ContentHash)), 1..4)
    }

    proptest! {
        /// After documents change, a re-run executes exactly the steps whose actual inputs
        /// changed: never one whose inputs and upstream outputs are unchanged, always one whose
        /// input changed. The pre-computed plan bounds what executes.
        #[test]
        fn reruns_execute_exactly_the_affected_steps(
            before in doc_strategy(),
            after in doc_strategy(),
            identity_changed in any::<bool>(),
            insensitive in prop::collection::btree_set(prop::sample::select(StepName::ALL.to_vec()), 0..5),
        ) {
            let (prior, _) = execute(&BTreeMap::new(), "acme/analyst", &before, &insensitive);
            let identity = if identity_changed { "acme/analyst-2" } else { "acme/analyst" };
            let plan = plan_rerun(&prior, identity, &after, false);
            let (records, executed) = execute(&prior, identity, &after, &insensitive);
            for step in StepName::ALL {
                let changed = records[&step].input_hash != prior[&step].input_hash;
                prop_assert_eq!(executed.contains(&step), changed, "step {}", step);
            }
            for step in &executed {
                prop_assert_eq!(plan.action(*step), Action::Run, "executed {} outside the plan", step);
            }
            // The summary is never stale: when any output changed, finalize ran again.
            let outputs_changed = StepName::ALL.into_iter()
                .any(|s| s != StepName::Finalize && records[&s].output_hash != prior[&s].output_hash);
            prop_assert!(!outputs_changed || executed.contains(&StepName::Finalize), "finalize kept a stale summary");
            // Unchanged documents and identity: nothing runs at all.
            if before == after && !identity_changed {
                prop_assert!(executed.is_empty());
            }
        }

        /// Document order never changes a step's input hash.
        #[test]
        fn input_hash_ignores_document_order(docs in doc_strategy()) {
            let mut reversed = docs.clone();
            reversed.reverse();
            for step in StepName::ALL {
                prop_assert_eq!(input_hash(step, "x", &docs, &BTreeMap::new()), input_hash(step, "x", &reversed, &BTreeMap::new()));
            }
        }

        /// A retry never reuses a step that did not complete, and every step it runs has its
        /// needs either kept or run.
        #[test]
        fn retries_are_complete(outcomes in prop::collection::vec(0u8..3, 11), explicit in prop::collection::btree_set(prop::sample::select(StepName::ALL.to_vec()), 0..3)) {
            let prior: BTreeMap<StepName, PriorStep> = StepName::ALL.into_iter().zip(outcomes).map(|(s, o)| {
                let outcome = [PriorOutcome::Completed, PriorOutcome::Failed, PriorOutcome::NotRun][o as usize];
                (s, PriorStep { outcome, input_hash: Some("i".into()), output_hash: (outcome == PriorOutcome::Completed).then(|| "o".into()) })
            }).collect();
            let explicit: Vec<StepName> = explicit.into_iter().collect();
            if let Ok(plan) = plan_retry(&prior, &explicit, false) {
                for (step, action) in &plan.steps {
                    if *action == Action::Reuse {
                        prop_assert_eq!(prior[step].outcome, PriorOutcome::Completed, "reused {} without output", step);
                    }
                    if *action == Action::Run {
                        for need in step.spec().needs {
                            prop_assert_ne!(plan.action(*need), Action::Skip);
                        }
                    }
                }
                for step in &explicit {
                    prop_assert_eq!(plan.action(*step), Action::Run);
                }
            }
        }
    }

    /// [`input_hash`] of every step for the inputs of `input_hashes_are_the_ones_earlier_versions_stored`,
    /// as computed when hashes were first stored.
    const PINNED: [&str; 11] = [
        "fd5f80085e206049b31b23a8063f183bd127d2d48b286ca5181d13f5c3595d3e",
        "ea4876854773bbd6064e181d775b69986d6ac42237c9e81201867ffc801d38d4",
        "1fe9f35b1a3cf0588356856622440f9c726ab577d1a59418c6932b408a322e96",
        "a56c6c6fe81c045c7c170f65d4ffc0383c665400b473985374c2eec928707ca4",
        "93ec3a2c9a9d1ab9b7bf0cd2ddc434be0786bfa511b925789af68bcfbfcb4ed3",
        "8fb1bf11cca019ad4946c40e284290aea4d586a7266f04ecc59c27b0b585bea8",
        "196f4355fda0f448f8b81b3e79009e75901aa698ecfad3ce7aee6dcd0edd8a28",
        "55e76194f45963e08f4c71b0cd08b6c08c40c09edf3aff03a99011a32f7381a5",
        "a02ceca4f8d7b76786198d3487355ddb627a5cc178abbf1d150ccdbeb7a25bf8",
        "9207845477e22d527dde3348c26d25ccb7f6801f884950e22438dbd91a9689be",
        "4c9c6b9e750e3bdcb344e2415de8b078ef3530a531c4492de69b429ae0607167",
    ];
}
