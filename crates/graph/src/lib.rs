//! The role graph: where the pipeline's step outputs live, and what the dashboard reads.
//!
//! [`RoleGraph`] has two implementations with the same semantics, checked by one conformance
//! suite (`crates/graph/tests/conformance.rs`):
//!
//! - [`Neo4jGraph`]: production, Neo4j over Bolt (neo4rs);
//! - [`EmbeddedGraph`]: the one-machine default, a SQLite file `{data_dir}/graph.db`.
//!
//! Every write is one transaction per step output, made of upserts on stable keys and
//! replace-deletes scoped to the role, so writing the same output twice leaves the graph
//! unchanged and a re-run that produces less removes what it no longer produces. Both backends
//! execute the same write plan (`plan.rs`), built once from the step output; the schema itself is
//! data ([`model`]). `docs/graph.md` describes labels, keys, relationships and replace rules.

mod config;
mod embedded;
pub mod model;
mod neo4j;
mod plan;
mod read;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use config::GraphConfig;
pub use embedded::EmbeddedGraph;
pub use model::{Label, NodeRef, PropValue, Props, Rel};
pub use neo4j::Neo4jGraph;

use etter_core::ids::{CompanyId, DraupRoleId, RoleId, RoleName};
use etter_core::outputs::{
    Assessment, ContentHash, MinedSkills, Reskilling, SkillsArchitecture, SkillsCatalog, Standardization,
    TaskFeasibility, TopTasks,
};

/// Why a graph operation failed, and whether trying again can help ([`GraphError::is_retryable`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// The store cannot be reached or is not serving. Retrying later can help.
    #[error("graph store unavailable: {0}")]
    Unavailable(String),
    /// The transaction lost a race (deadlock, busy database) after the backend's own retries.
    /// Retrying can help.
    #[error("graph write conflicted with a concurrent write: {0}")]
    Conflict(String),
    /// The store refused the statement (constraint, syntax, permissions). The same call will
    /// fail the same way.
    #[error("graph query failed: {0}")]
    Query(String),
    /// The graph configuration is unusable (bad URI, unreadable file, wrong credentials).
    #[error("graph configuration: {0}")]
    Config(String),
    /// A step output refers to something its upstream step has not written (a top task that is
    /// not a task of the role, a span citing a document the role does not link). Retrying the
    /// same write cannot help; re-running the upstream step can.
    #[error("{step}: {missing} is not in the graph")]
    MissingReference {
        /// The step whose output was being written.
        step: &'static str,
        /// What is missing, as a node or relationship pattern.
        missing: String,
    },
    /// A step output is malformed (duplicate keys, a score outside `[0, 1]`). Not retryable.
    #[error("invalid step output: {0}")]
    InvalidOutput(String),
    /// Data read back does not have the shape this code writes.
    #[error("graph data is malformed: {0}")]
    Corrupt(String),
}

impl GraphError {
    /// Whether the same call may succeed later: the store was unavailable or lost a race.
    pub fn is_retryable(&self) -> bool {
        matches!(self, GraphError::Unavailable(_) | GraphError::Conflict(_))
    }
}

/// What `role_setup` establishes: the role, its company and its Draup mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleSetup {
    /// The company.
    pub company: CompanyId,
    /// The role's name (its id is derived from company and name).
    pub role_name: RoleName,
    /// The Draup role it maps to.
    pub draup_role: DraupRoleId,
}

/// One document linked to a role (`document_linking`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LinkedDocument {
    /// The document's identity.
    pub content_hash: ContentHash,
    /// Its type as pushed (`job_description`, `sop`, …).
    pub doc_type: String,
    /// Where it was fetched from.
    pub uri: String,
}

/// One step's output, borrowed, as [`RoleGraph::write`] takes it.
#[derive(Debug, Clone, Copy)]
pub enum StepOutput<'a> {
    /// `role_setup`.
    RoleSetup(&'a RoleSetup),
    /// `document_linking`: every document of the role (a replace, not an append).
    DocumentLinking(&'a [LinkedDocument]),
    /// `ai_assessment`.
    Assessment(&'a Assessment),
    /// `step_executor`.
    TopTasks(&'a TopTasks),
    /// `standardization`.
    Standardization(&'a Standardization),
    /// `skills_miner`.
    MinedSkills(&'a MinedSkills),
    /// `skills_architecture`.
    SkillsArchitecture(&'a SkillsArchitecture),
    /// `skills_catalog`.
    SkillsCatalog(&'a SkillsCatalog),
    /// `reskilling`.
    Reskilling(&'a Reskilling),
    /// `task_feasibility`.
    TaskFeasibility(&'a TaskFeasibility),
}

impl StepOutput<'_> {
    /// The stable name of the step that produces this output.
    pub fn step_name(&self) -> &'static str {
        match self {
            StepOutput::RoleSetup(_) => "role_setup",
            StepOutput::DocumentLinking(_) => "document_linking",
            StepOutput::Assessment(_) => "ai_assessment",
            StepOutput::TopTasks(_) => "step_executor",
            StepOutput::Standardization(_) => "standardization",
            StepOutput::MinedSkills(_) => "skills_miner",
            StepOutput::SkillsArchitecture(_) => "skills_architecture",
            StepOutput::SkillsCatalog(_) => "skills_catalog",
            StepOutput::Reskilling(_) => "reskilling",
            StepOutput::TaskFeasibility(_) => "task_feasibility",
        }
    }
}

/// Everything the graph holds about one role, as step outputs. Lists are in a canonical order
/// (by key; top tasks by rank; cluster skills by key), so equal graphs give equal values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleOutputs {
    /// The role.
    pub role_id: RoleId,
    /// Its company.
    pub company_id: CompanyId,
    /// Its name.
    pub role_name: RoleName,
    /// Whether the dashboard shows it (set by finalize).
    pub visible: bool,
    /// The Draup role it maps to.
    pub draup_role: Option<DraupRoleId>,
    /// Its documents, by content hash.
    pub documents: Vec<LinkedDocument>,
    /// `ai_assessment`.
    pub assessment: Assessment,
    /// `step_executor`.
    pub top_tasks: TopTasks,
    /// `standardization`.
    pub standardization: Standardization,
    /// `skills_miner`.
    pub skills: MinedSkills,
    /// `skills_architecture`.
    pub architecture: SkillsArchitecture,
    /// `skills_catalog`.
    pub catalog: SkillsCatalog,
    /// `reskilling`.
    pub reskilling: Reskilling,
    /// `task_feasibility`.
    pub feasibility: TaskFeasibility,
}

/// Counts of a role's outputs: the proto's `OutputsSummary`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct RoleSummary {
    /// Tasks of the AI assessment.
    pub tasks: u32,
    /// Top tasks.
    pub top_tasks: u32,
    /// Mined skills.
    pub skills: u32,
    /// Skill clusters.
    pub skill_clusters: u32,
    /// Catalog entries.
    pub catalog_entries: u32,
    /// Reskilling paths.
    pub reskilling_paths: u32,
    /// Mean confidence of the assessment's tasks, 0 when there are none.
    pub mean_confidence: f64,
}

/// A role as a company's listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleEntry {
    /// The role.
    pub role_id: RoleId,
    /// Its name.
    pub role_name: RoleName,
    /// Whether the dashboard shows it.
    pub visible: bool,
}

/// What [`RoleGraph::snapshot`] covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotScope {
    /// One role: its node, its company node, everything it owns and the nodes that touches.
    Role(RoleId),
    /// A company: its node and the union of its roles' snapshots.
    Company(CompanyId),
}

/// A node of a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotNode {
    /// Its identity.
    pub node: NodeRef,
    /// All its properties, key properties included.
    pub props: Props,
}

/// A relationship of a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotEdge {
    /// Its type.
    pub rel: Rel,
    /// Start node.
    pub from: NodeRef,
    /// End node.
    pub to: NodeRef,
    /// All its properties.
    pub props: Props,
}

/// A canonical, backend-independent dump of part of the graph: nodes and relationships sorted,
/// with every property. Two graphs hold the same data exactly when their snapshots are equal.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// Nodes, sorted by identity.
    pub nodes: Vec<SnapshotNode>,
    /// Relationships, sorted by (type, start, end, identifying properties).
    pub edges: Vec<SnapshotEdge>,
}

impl fmt::Display for Snapshot {
    /// One line per node and relationship, so a failing comparison shows a readable diff.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let props = |p: &Props| p.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ");
        for n in &self.nodes {
            writeln!(f, "{} {{{}}}", n.node, props(&n.props))?;
        }
        for e in &self.edges {
            writeln!(f, "{}-[:{} {{{}}}]->{}", e.from, e.rel, props(&e.props), e.to)?;
        }
        Ok(())
    }
}

/// The role graph. Implementations: [`Neo4jGraph`], [`EmbeddedGraph`].
///
/// Object-safe (`Arc<dyn RoleGraph>`), hence `async_trait`, as the run store: every method
/// returns a boxed `Send` future.
///
/// Writes are idempotent: the same call twice leaves the graph as the first left it. Every
/// write of a step output *replaces* that step's previous output for the role.
#[async_trait]
pub trait RoleGraph: Send + Sync {
    /// Creates constraints, indexes or tables. Harmless to call again.
    async fn ensure_schema(&self) -> Result<(), GraphError>;

    /// Checks that the store answers (the worker's health entry).
    async fn ping(&self) -> Result<(), GraphError>;

    /// Writes one step's output for `role` in one transaction, replacing that step's previous
    /// output. Every step but `role_setup` needs the role to exist.
    async fn write(&self, role: &RoleId, output: StepOutput<'_>) -> Result<(), GraphError>;

    /// Shows (finalize) or hides the role on the dashboard.
    async fn set_visible(&self, role: &RoleId, visible: bool) -> Result<(), GraphError>;

    /// Everything stored for a role, or `None` if the role is not in the graph.
    async fn role_outputs(&self, role: &RoleId) -> Result<Option<RoleOutputs>, GraphError>;

    /// Counts of a role's outputs, or `None` if the role is not in the graph.
    async fn role_summary(&self, role: &RoleId) -> Result<Option<RoleSummary>, GraphError>;

    /// A company's roles, by role id.
    async fn company_roles(&self, company: &CompanyId) -> Result<Vec<RoleEntry>, GraphError>;

    /// A canonical dump of a role or a company (tests compare these).
    async fn snapshot(&self, scope: &SnapshotScope) -> Result<Snapshot, GraphError>;

    /// Deletes a role and everything it owns; shared nodes (skills, documents, Draup roles,
    /// standard tasks) stay. Deleting a missing role is not an error.
    async fn delete_role(&self, role: &RoleId) -> Result<(), GraphError>;

    /// Deletes a company, its roles and everything they own.
    async fn delete_company(&self, company: &CompanyId) -> Result<(), GraphError>;
}

/// Opens the graph the configuration names: Neo4j when `graph.uri` is set, otherwise the
/// embedded graph at `{data_dir}/graph.db`. The schema is ensured before it is returned.
pub async fn open(config: &GraphConfig, data_dir: &Path) -> Result<Arc<dyn RoleGraph>, GraphError> {
    let graph: Arc<dyn RoleGraph> = if config.uri.is_empty() {
        Arc::new(EmbeddedGraph::open(&data_dir.join("graph.db")).await?)
    } else {
        Arc::new(Neo4jGraph::connect(config).await?)
    };
    graph.ensure_schema().await?;
    Ok(graph)
}

/// What a backend provides; [`RoleGraph`] is built on it once (see `impl_role_graph!`), so
/// both backends share planning, decoding and snapshots.
#[async_trait]
pub(crate) trait Backend: Send + Sync {
    /// Creates the schema.
    async fn create_schema(&self) -> Result<(), GraphError>;
    /// Checks connectivity.
    async fn check(&self) -> Result<(), GraphError>;
    /// Executes a plan in one transaction.
    async fn apply(&self, plan: &plan::Plan) -> Result<(), GraphError>;
    /// The role's own nodes and owned relationships with their endpoints.
    async fn role_subgraph(&self, role: &str) -> Result<read::Subgraph, GraphError>;
    /// The company node's properties and its roles' node properties, or `None`.
    async fn company(&self, company: &str) -> Result<Option<read::CompanyData>, GraphError>;
}

/// Implements [`RoleGraph`] for a [`Backend`] by delegating to the shared functions in
/// `read.rs` and `plan.rs`. (A blanket impl would put a crate-private trait in a public bound.)
macro_rules! impl_role_graph {
    ($ty:ty) => {
        #[::async_trait::async_trait]
        impl $crate::RoleGraph for $ty {
            async fn ensure_schema(&self) -> Result<(), $crate::GraphError> {
                $crate::Backend::create_schema(self).await
            }

            async fn ping(&self) -> Result<(), $crate::GraphError> {
                $crate::Backend::check(self).await
            }

            #[::tracing::instrument(name = "graph.write", skip_all, fields(role = %role, step = output.step_name()))]
            async fn write(
                &self,
                role: &::etter_core::ids::RoleId,
                output: $crate::StepOutput<'_>,
            ) -> Result<(), $crate::GraphError> {
                let plan = $crate::plan::for_output(role, &output)?;
                $crate::Backend::apply(self, &plan).await
            }

            #[::tracing::instrument(name = "graph.set_visible", skip_all, fields(role = %role, visible))]
            async fn set_visible(
                &self,
                role: &::etter_core::ids::RoleId,
                visible: bool,
            ) -> Result<(), $crate::GraphError> {
                let plan = $crate::plan::set_visible(role, visible);
                $crate::Backend::apply(self, &plan).await
            }

            async fn role_outputs(
                &self,
                role: &::etter_core::ids::RoleId,
            ) -> Result<Option<$crate::RoleOutputs>, $crate::GraphError> {
                $crate::read::role_outputs(self, role).await
            }

            async fn role_summary(
                &self,
                role: &::etter_core::ids::RoleId,
            ) -> Result<Option<$crate::RoleSummary>, $crate::GraphError> {
                Ok($crate::read::role_outputs(self, role).await?.as_ref().map($crate::read::summary))
            }

            async fn company_roles(
                &self,
                company: &::etter_core::ids::CompanyId,
            ) -> Result<Vec<$crate::RoleEntry>, $crate::GraphError> {
                $crate::read::company_roles(self, company).await
            }

            async fn snapshot(&self, scope: &$crate::SnapshotScope) -> Result<$crate::Snapshot, $crate::GraphError> {
                $crate::read::snapshot(self, scope).await
            }

            async fn delete_role(&self, role: &::etter_core::ids::RoleId) -> Result<(), $crate::GraphError> {
                let plan = $crate::plan::delete_role(role);
                $crate::Backend::apply(self, &plan).await
            }

            async fn delete_company(&self, company: &::etter_core::ids::CompanyId) -> Result<(), $crate::GraphError> {
                let roles = $crate::read::company_role_ids(self, company).await?;
                let plan = $crate::plan::delete_company(company, &roles);
                $crate::Backend::apply(self, &plan).await
            }
        }
    };
}
pub(crate) use impl_role_graph;
