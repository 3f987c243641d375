//! What the pipeline's AI steps produce: the values the LLM providers return and the graph stores.
//!
//! Every output that comes from a document cites where: a [`SourceSpan`] into the document's
//! extracted text. Keys are stable (derived from normalised names), so writing the same output
//! twice merges into the same graph nodes.

use serde::{Deserialize, Serialize};

/// Hex SHA-256 of a document's raw bytes: its identity in the stores and the graph.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContentHash(pub String);

/// Where in a document's extracted text an output came from: byte offsets `[start, end)` of the
/// UTF-8 text, and the text itself (so a reader needs no second fetch).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceSpan {
    /// The document, by content hash.
    pub document: ContentHash,
    /// First byte of the span.
    pub start: u32,
    /// One past the last byte of the span.
    pub end: u32,
    /// The cited text.
    pub text: String,
}

/// A stable key of a named thing (task, skill, cluster): lowercase ASCII words joined by hyphens,
/// derived from its normalised name with [`crate::ids::slug`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Key(pub String);

impl Key {
    /// The key of a name.
    pub fn of(name: &str) -> Self {
        Self(crate::ids::slug(name))
    }
}

/// A score in `[0, 1]`.
pub type Score = f64;

/// A task of the role, found by the AI assessment (`ai_assessment`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Stable key of the task.
    pub key: Key,
    /// The task as the document states it.
    pub name: String,
    /// How much of the task AI could do alone.
    pub automation: Score,
    /// How much AI could help a person doing the task.
    pub augmentation: Score,
    /// How sure the assessment is of this task and its scores; low values set `needs_review`.
    pub confidence: Score,
    /// Where the task was found.
    pub source: SourceSpan,
}

/// The output of `ai_assessment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// The role's tasks.
    pub tasks: Vec<Task>,
}

/// The output of `step_executor`: the tasks that matter most, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopTasks {
    /// Keys of tasks of the [`Assessment`], ranked.
    pub ranked: Vec<Key>,
}

/// One task's standard name (`standardization`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StandardizedTask {
    /// The task.
    pub task: Key,
    /// Its name in the standard taxonomy.
    pub standard_name: String,
}

/// The output of `standardization`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardization {
    /// One entry per top task.
    pub tasks: Vec<StandardizedTask>,
}

/// A skill the role needs (`skills_miner`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skill {
    /// Stable key of the skill.
    pub key: Key,
    /// The skill's name.
    pub name: String,
    /// How sure the miner is.
    pub confidence: Score,
    /// Where the skill was found.
    pub source: SourceSpan,
}

/// The output of `skills_miner`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinedSkills {
    /// The skills.
    pub skills: Vec<Skill>,
}

/// A group of related skills (`skills_architecture`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkillCluster {
    /// Stable key of the cluster.
    pub key: Key,
    /// The cluster's name.
    pub name: String,
    /// Keys of its skills.
    pub skills: Vec<Key>,
}

/// The output of `skills_architecture`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkillsArchitecture {
    /// The clusters; every mined skill is in exactly one.
    pub clusters: Vec<SkillCluster>,
}

/// A skills-catalog entry (`skills_catalog`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// The skill.
    pub skill: Key,
    /// Proficiency the role needs, 1 (basic) – 5 (expert).
    pub proficiency: u8,
    /// What the skill means in this role.
    pub description: String,
}

/// The output of `skills_catalog`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkillsCatalog {
    /// One entry per mined skill.
    pub entries: Vec<CatalogEntry>,
}

/// A way for people in the role to move toward a skill that matters as work changes
/// (`reskilling`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReskillingPath {
    /// The skill the path builds on.
    pub from_skill: Key,
    /// The skill the path leads to.
    pub to_skill: Key,
    /// Why, in one sentence.
    pub rationale: String,
}

/// The output of `reskilling`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reskilling {
    /// The paths.
    pub paths: Vec<ReskillingPath>,
}

/// How feasible automating one task is now (`task_feasibility`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feasibility {
    /// The task.
    pub task: Key,
    /// Feasibility now.
    pub feasibility: Score,
    /// Why, in one sentence.
    pub rationale: String,
}

/// The output of `task_feasibility`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFeasibility {
    /// One entry per task.
    pub tasks: Vec<Feasibility>,
}
