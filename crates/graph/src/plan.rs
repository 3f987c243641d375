//! Step outputs turned into a backend-neutral write plan: a list of MERGE-style upserts on
//! stable keys and replace-deletes scoped to one role. Each backend executes a plan in one
//! transaction; writing the same plan twice is a no-op because every op is an upsert or a
//! delete of what the new output no longer contains.
//!
//! Planning is pure (no I/O), so the replace rules of every step are written once here.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{Label, NodeRef, PropValue, Props, Rel};
use super::{GraphError, LinkedDocument, RoleSetup, StepOutput};
use etter_core::ids::{CompanyId, RoleId};
use etter_core::outputs::{
    Assessment, MinedSkills, Reskilling, SkillsArchitecture, SkillsCatalog, Standardization, TaskFeasibility, TopTasks,
};
use etter_core::outputs::{Key, Score, SourceSpan};

/// One upserted node: MERGE on `key`, then `set` (overwrites) and `init` (only where the
/// property is absent, so shared vocabulary keeps the first spelling it was given).
#[derive(Debug, Clone)]
pub(crate) struct NodeRow {
    pub key: Vec<String>,
    pub set: Props,
    pub init: Props,
}

/// One relationship: MERGE between two existing nodes on (`from`, `to`, `ident`), then `set`.
#[derive(Debug, Clone)]
pub(crate) struct EdgeRow {
    pub from: Vec<String>,
    pub to: Vec<String>,
    /// Identifying properties ([`Rel::ident_props`]); also stored as properties.
    pub ident: Props,
    pub set: Props,
}

/// Which of a role's relationships a replace keeps.
#[derive(Debug, Clone)]
pub(crate) enum Keep {
    /// Those whose (start key, end key) is listed.
    Pairs(Vec<(Vec<String>, Vec<String>)>),
    /// Those whose end node's key is listed.
    Targets(Vec<Vec<String>>),
    /// Those whose start node's key is listed.
    Sources(Vec<Vec<String>>),
}

impl Keep {
    /// Whether a relationship from `from` to `to` is kept.
    pub fn keeps(&self, from: &[String], to: &[String]) -> bool {
        match self {
            Keep::Pairs(pairs) => pairs.iter().any(|(f, t)| f == from && t == to),
            Keep::Targets(keys) => keys.iter().any(|k| k == to),
            Keep::Sources(keys) => keys.iter().any(|k| k == from),
        }
    }
}

/// One operation of a plan.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Fails with [`GraphError::MissingReference`] unless the node exists.
    RequireNode(NodeRef),
    /// Upserts nodes.
    MergeNodes { label: Label, rows: Vec<NodeRow> },
    /// Upserts relationships; both endpoints must exist.
    MergeEdges { rel: Rel, rows: Vec<EdgeRow> },
    /// Fails with [`GraphError::MissingReference`] unless every relationship exists.
    RequireEdges { rel: Rel, rows: Vec<EdgeRow> },
    /// Deletes the role's nodes of a role-scoped label whose key is not in `keep`, with all
    /// their relationships.
    DeleteNodes { label: Label, role: String, keep: Vec<Vec<String>> },
    /// Deletes the role's relationships of `rel` that `keep` does not keep.
    DeleteEdges { rel: Rel, role: String, keep: Keep },
    /// Removes `props` from the role's relationships of `rel` that `keep` does not keep (a
    /// step that annotates another step's relationships replaces only its own properties).
    RemoveEdgeProps { rel: Rel, role: String, props: &'static [&'static str], keep: Keep },
    /// Deletes one node with its relationships.
    DeleteNode(NodeRef),
}

/// What one step output (or one maintenance call) does to the graph, in one transaction.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The step (for errors and traces).
    pub step: &'static str,
    pub ops: Vec<Op>,
}

/// Properties of the catalog step on `REQUIRES`.
pub(crate) const CATALOG_PROPS: &[&str] = &["proficiency", "description"];
/// Properties of the feasibility step on `PERFORMS`.
pub(crate) const FEASIBILITY_PROPS: &[&str] = &["feasibility", "feasibility_rationale"];

fn props<const N: usize>(entries: [(&str, PropValue); N]) -> Props {
    entries.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn invalid(step: &'static str, problem: impl std::fmt::Display) -> GraphError {
    GraphError::InvalidOutput(format!("{step}: {problem}"))
}

fn check_score(step: &'static str, what: &str, value: Score) -> Result<(), GraphError> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(invalid(step, format!("{what} must be a number in [0, 1], got {value}")))
    }
}

fn check_key(step: &'static str, what: &str, key: &Key) -> Result<(), GraphError> {
    if key.0.is_empty() { Err(invalid(step, format!("{what} has an empty key"))) } else { Ok(()) }
}

/// Rejects a second occurrence of the same key: MERGE would silently fold them into one.
fn check_unique<T: Ord + std::fmt::Debug>(
    step: &'static str,
    what: &str,
    items: impl IntoIterator<Item = T>,
) -> Result<(), GraphError> {
    let mut seen = BTreeSet::new();
    for item in items {
        if let Some(dup) = seen.replace(item) {
            return Err(invalid(step, format!("{what} {dup:?} occurs twice")));
        }
    }
    Ok(())
}

fn check_span(step: &'static str, what: &str, span: &SourceSpan) -> Result<(), GraphError> {
    if span.document.0.is_empty() {
        return Err(invalid(step, format!("{what} cites a document without a content hash")));
    }
    if span.start > span.end {
        return Err(invalid(step, format!("{what} has a span that ends before it starts")));
    }
    Ok(())
}

fn span_props(span: &SourceSpan) -> [(&'static str, PropValue); 4] {
    [
        ("source_document", span.document.0.as_str().into()),
        ("source_start", span.start.into()),
        ("source_end", span.end.into()),
        ("source_text", span.text.as_str().into()),
    ]
}

fn role_key(role: &RoleId) -> Vec<String> {
    vec![role.as_str().to_owned()]
}

fn scoped_key(role: &RoleId, key: &Key) -> Vec<String> {
    vec![role.as_str().to_owned(), key.0.clone()]
}

fn edge(from: Vec<String>, to: Vec<String>, set: Props) -> EdgeRow {
    EdgeRow { from, to, ident: Props::new(), set }
}

fn node(key: Vec<String>, set: Props, init: Props) -> NodeRow {
    NodeRow { key, set, init }
}

fn require_role(role: &RoleId) -> Op {
    Op::RequireNode(NodeRef::new(Label::CompanyRole, [role.as_str()]))
}

/// Spans must cite a document linked to the role: a hash the role never saw is a bug upstream.
fn require_linked<'a>(role: &RoleId, spans: impl IntoIterator<Item = &'a SourceSpan>) -> Op {
    let docs: BTreeSet<&str> = spans.into_iter().map(|s| s.document.0.as_str()).collect();
    Op::RequireEdges {
        rel: Rel::HasDocument,
        rows: docs.into_iter().map(|d| edge(role_key(role), vec![d.to_owned()], Props::new())).collect(),
    }
}

/// Rows are sorted by key so that concurrent transactions lock shared nodes in the same order
/// (fewer deadlocks in Neo4j) and so both backends see the same sequence.
fn sorted_nodes(mut rows: Vec<NodeRow>) -> Vec<NodeRow> {
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    rows
}

fn sorted_edges(mut rows: Vec<EdgeRow>) -> Vec<EdgeRow> {
    rows.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
    rows
}

/// The plan of one step output of `role`.
pub(crate) fn for_output(role: &RoleId, output: &StepOutput<'_>) -> Result<Plan, GraphError> {
    let step = output.step_name();
    let ops = match output {
        StepOutput::RoleSetup(setup) => role_setup(role, setup)?,
        StepOutput::DocumentLinking(docs) => document_linking(role, docs)?,
        StepOutput::Assessment(a) => assessment(role, step, a)?,
        StepOutput::TopTasks(top) => top_tasks(role, step, top)?,
        StepOutput::Standardization(s) => standardization(role, step, s)?,
        StepOutput::MinedSkills(m) => mined_skills(role, step, m)?,
        StepOutput::SkillsArchitecture(arch) => skills_architecture(role, step, arch)?,
        StepOutput::SkillsCatalog(cat) => skills_catalog(role, step, cat)?,
        StepOutput::Reskilling(r) => reskilling(role, step, r)?,
        StepOutput::TaskFeasibility(f) => task_feasibility(role, step, f)?,
    };
    Ok(Plan { step, ops })
}

/// The assessment's tasks with their scores, and where each was read.
fn assessment(role: &RoleId, step: &'static str, a: &Assessment) -> Result<Vec<Op>, GraphError> {
    for t in &a.tasks {
        check_key(step, "a task", &t.key)?;
        check_score(step, "automation", t.automation)?;
        check_score(step, "augmentation", t.augmentation)?;
        check_score(step, "confidence", t.confidence)?;
        check_span(step, "a task", &t.source)?;
    }
    check_unique(step, "task", a.tasks.iter().map(|t| &t.key))?;
    let keys: Vec<_> = a.tasks.iter().map(|t| scoped_key(role, &t.key)).collect();
    Ok(vec![
        require_role(role),
        require_linked(role, a.tasks.iter().map(|t| &t.source)),
        // Dropped tasks go with everything hanging off them (scores, rank,
        // standardisation, feasibility): those were derived from the old assessment.
        Op::DeleteNodes { label: Label::Task, role: role.to_string(), keep: keys },
        Op::MergeNodes {
            label: Label::Task,
            rows: sorted_nodes(
                a.tasks
                    .iter()
                    .map(|t| node(scoped_key(role, &t.key), props([("name", t.name.as_str().into())]), Props::new()))
                    .collect(),
            ),
        },
        Op::MergeEdges {
            rel: Rel::Performs,
            rows: sorted_edges(
                a.tasks
                    .iter()
                    .map(|t| {
                        let mut set = props([
                            ("automation", t.automation.into()),
                            ("augmentation", t.augmentation.into()),
                            ("confidence", t.confidence.into()),
                        ]);
                        set.extend(span_props(&t.source).map(|(k, v)| (k.to_owned(), v)));
                        edge(role_key(role), scoped_key(role, &t.key), set)
                    })
                    .collect(),
            ),
        },
        Op::DeleteEdges {
            rel: Rel::FromDocument,
            role: role.to_string(),
            keep: Keep::Pairs(
                a.tasks.iter().map(|t| (scoped_key(role, &t.key), vec![t.source.document.0.clone()])).collect(),
            ),
        },
        Op::MergeEdges {
            rel: Rel::FromDocument,
            rows: sorted_edges(
                a.tasks
                    .iter()
                    .map(|t| edge(scoped_key(role, &t.key), vec![t.source.document.0.clone()], Props::new()))
                    .collect(),
            ),
        },
    ])
}

/// The role's top tasks, each TOP_TASK edge carrying its rank.
fn top_tasks(role: &RoleId, step: &'static str, top: &TopTasks) -> Result<Vec<Op>, GraphError> {
    for k in &top.ranked {
        check_key(step, "a top task", k)?;
    }
    check_unique(step, "top task", top.ranked.iter())?;
    let rows = top
        .ranked
        .iter()
        .zip(1_i64..)
        .map(|(k, rank)| edge(role_key(role), scoped_key(role, k), props([("rank", rank.into())])))
        .collect();
    Ok(vec![
        require_role(role),
        Op::DeleteEdges {
            rel: Rel::TopTask,
            role: role.to_string(),
            keep: Keep::Targets(top.ranked.iter().map(|k| scoped_key(role, k)).collect()),
        },
        Op::MergeEdges { rel: Rel::TopTask, rows: sorted_edges(rows) },
    ])
}

/// Each task's standard name, shared across roles.
fn standardization(role: &RoleId, step: &'static str, s: &Standardization) -> Result<Vec<Op>, GraphError> {
    for t in &s.tasks {
        check_key(step, "a standardized task", &t.task)?;
        if Key::of(&t.standard_name).0.is_empty() {
            return Err(invalid(step, format!("task {:?} has an empty standard name", t.task.0)));
        }
    }
    check_unique(step, "task", s.tasks.iter().map(|t| &t.task))?;
    let standard: BTreeMap<Key, &str> =
        s.tasks.iter().map(|t| (Key::of(&t.standard_name), t.standard_name.as_str())).collect();
    Ok(vec![
        require_role(role),
        Op::MergeNodes {
            label: Label::StandardTask,
            rows: standard
                .into_iter()
                .map(|(k, name)| node(vec![k.0], Props::new(), props([("name", name.into())])))
                .collect(),
        },
        Op::DeleteEdges {
            rel: Rel::StandardizedAs,
            role: role.to_string(),
            keep: Keep::Pairs(
                s.tasks.iter().map(|t| (scoped_key(role, &t.task), vec![Key::of(&t.standard_name).0])).collect(),
            ),
        },
        Op::MergeEdges {
            rel: Rel::StandardizedAs,
            rows: sorted_edges(
                s.tasks
                    .iter()
                    .map(|t| {
                        edge(
                            scoped_key(role, &t.task),
                            vec![Key::of(&t.standard_name).0],
                            props([("standard_name", t.standard_name.as_str().into())]),
                        )
                    })
                    .collect(),
            ),
        },
    ])
}

/// The skills the role requires, and where each was read.
fn mined_skills(role: &RoleId, step: &'static str, m: &MinedSkills) -> Result<Vec<Op>, GraphError> {
    for s in &m.skills {
        check_key(step, "a skill", &s.key)?;
        check_score(step, "confidence", s.confidence)?;
        check_span(step, "a skill", &s.source)?;
    }
    check_unique(step, "skill", m.skills.iter().map(|s| &s.key))?;
    let keys: Vec<Vec<String>> = m.skills.iter().map(|s| vec![s.key.0.clone()]).collect();
    Ok(vec![
        require_role(role),
        require_linked(role, m.skills.iter().map(|s| &s.source)),
        Op::DeleteEdges { rel: Rel::Requires, role: role.to_string(), keep: Keep::Targets(keys.clone()) },
        // A skill the role no longer has cannot stay in its clusters or start its
        // reskilling paths, even if those steps fail to re-run (DEGRADED).
        Op::DeleteEdges { rel: Rel::Contains, role: role.to_string(), keep: Keep::Targets(keys.clone()) },
        Op::DeleteEdges { rel: Rel::ReskillsTo, role: role.to_string(), keep: Keep::Sources(keys) },
        Op::MergeNodes {
            label: Label::Skill,
            rows: sorted_nodes(
                m.skills
                    .iter()
                    .map(|s| node(vec![s.key.0.clone()], Props::new(), props([("name", s.name.as_str().into())])))
                    .collect(),
            ),
        },
        Op::MergeEdges {
            rel: Rel::Requires,
            rows: sorted_edges(
                m.skills
                    .iter()
                    .map(|s| {
                        let mut set = props([("name", s.name.as_str().into()), ("confidence", s.confidence.into())]);
                        set.extend(span_props(&s.source).map(|(k, v)| (k.to_owned(), v)));
                        edge(role_key(role), vec![s.key.0.clone()], set)
                    })
                    .collect(),
            ),
        },
    ])
}

/// The role's skill clusters and the skills each contains.
fn skills_architecture(role: &RoleId, step: &'static str, arch: &SkillsArchitecture) -> Result<Vec<Op>, GraphError> {
    for c in &arch.clusters {
        check_key(step, "a cluster", &c.key)?;
        for s in &c.skills {
            check_key(step, "a clustered skill", s)?;
        }
    }
    check_unique(step, "cluster", arch.clusters.iter().map(|c| &c.key))?;
    check_unique(step, "clustered skill", arch.clusters.iter().flat_map(|c| &c.skills))?;
    let pairs: Vec<(Vec<String>, Vec<String>)> = arch
        .clusters
        .iter()
        .flat_map(|c| c.skills.iter().map(move |s| (scoped_key(role, &c.key), vec![s.0.clone()])))
        .collect();
    Ok(vec![
        require_role(role),
        Op::RequireEdges {
            rel: Rel::Requires,
            rows: sorted_edges(pairs.iter().map(|(_, s)| edge(role_key(role), s.clone(), Props::new())).collect()),
        },
        Op::DeleteNodes {
            label: Label::SkillCluster,
            role: role.to_string(),
            keep: arch.clusters.iter().map(|c| scoped_key(role, &c.key)).collect(),
        },
        Op::MergeNodes {
            label: Label::SkillCluster,
            rows: sorted_nodes(
                arch.clusters
                    .iter()
                    .map(|c| node(scoped_key(role, &c.key), props([("name", c.name.as_str().into())]), Props::new()))
                    .collect(),
            ),
        },
        Op::MergeEdges {
            rel: Rel::HasCluster,
            rows: sorted_edges(
                arch.clusters.iter().map(|c| edge(role_key(role), scoped_key(role, &c.key), Props::new())).collect(),
            ),
        },
        Op::DeleteEdges { rel: Rel::Contains, role: role.to_string(), keep: Keep::Pairs(pairs.clone()) },
        Op::MergeEdges {
            rel: Rel::Contains,
            rows: sorted_edges(pairs.into_iter().map(|(c, s)| edge(c, s, Props::new())).collect()),
        },
    ])
}

/// Proficiency and description of each required skill.
fn skills_catalog(role: &RoleId, step: &'static str, cat: &SkillsCatalog) -> Result<Vec<Op>, GraphError> {
    for e in &cat.entries {
        check_key(step, "a catalog entry", &e.skill)?;
        if !(1..=5).contains(&e.proficiency) {
            return Err(invalid(step, format!("proficiency must be 1–5, got {}", e.proficiency)));
        }
    }
    check_unique(step, "catalog skill", cat.entries.iter().map(|e| &e.skill))?;
    let rows: Vec<EdgeRow> = cat
        .entries
        .iter()
        .map(|e| {
            edge(
                role_key(role),
                vec![e.skill.0.clone()],
                props([("proficiency", e.proficiency.into()), ("description", e.description.as_str().into())]),
            )
        })
        .collect();
    let rows = sorted_edges(rows);
    Ok(vec![
        require_role(role),
        // The catalog annotates the miner's REQUIRES edges; it never creates them.
        Op::RequireEdges { rel: Rel::Requires, rows: rows.clone() },
        Op::RemoveEdgeProps {
            rel: Rel::Requires,
            role: role.to_string(),
            props: CATALOG_PROPS,
            keep: Keep::Targets(rows.iter().map(|r| r.to.clone()).collect()),
        },
        Op::MergeEdges { rel: Rel::Requires, rows },
    ])
}

/// Reskilling paths from a skill the role has to another.
fn reskilling(role: &RoleId, step: &'static str, r: &Reskilling) -> Result<Vec<Op>, GraphError> {
    for p in &r.paths {
        check_key(step, "a path's from_skill", &p.from_skill)?;
        check_key(step, "a path's to_skill", &p.to_skill)?;
        if p.from_skill == p.to_skill {
            return Err(invalid(step, format!("path from {:?} leads to itself", p.from_skill.0)));
        }
    }
    check_unique(step, "path", r.paths.iter().map(|p| (&p.from_skill, &p.to_skill)))?;
    let ident = props([("role_id", role.as_str().into())]);
    let from: BTreeSet<&Key> = r.paths.iter().map(|p| &p.from_skill).collect();
    let to: BTreeSet<&Key> = r.paths.iter().map(|p| &p.to_skill).collect();
    Ok(vec![
        require_role(role),
        // A path builds on a skill the role has; it may lead to one no role has yet.
        Op::RequireEdges {
            rel: Rel::Requires,
            rows: from.into_iter().map(|k| edge(role_key(role), vec![k.0.clone()], Props::new())).collect(),
        },
        Op::MergeNodes {
            label: Label::Skill,
            rows: to.into_iter().map(|k| node(vec![k.0.clone()], Props::new(), Props::new())).collect(),
        },
        Op::DeleteEdges {
            rel: Rel::ReskillsTo,
            role: role.to_string(),
            keep: Keep::Pairs(
                r.paths.iter().map(|p| (vec![p.from_skill.0.clone()], vec![p.to_skill.0.clone()])).collect(),
            ),
        },
        Op::MergeEdges {
            rel: Rel::ReskillsTo,
            rows: sorted_edges(
                r.paths
                    .iter()
                    .map(|p| EdgeRow {
                        from: vec![p.from_skill.0.clone()],
                        to: vec![p.to_skill.0.clone()],
                        ident: ident.clone(),
                        set: props([("rationale", p.rationale.as_str().into())]),
                    })
                    .collect(),
            ),
        },
    ])
}

/// Feasibility of each assessed task.
fn task_feasibility(role: &RoleId, step: &'static str, f: &TaskFeasibility) -> Result<Vec<Op>, GraphError> {
    for t in &f.tasks {
        check_key(step, "a feasibility entry", &t.task)?;
        check_score(step, "feasibility", t.feasibility)?;
    }
    check_unique(step, "feasibility task", f.tasks.iter().map(|t| &t.task))?;
    let rows = sorted_edges(
        f.tasks
            .iter()
            .map(|t| {
                edge(
                    role_key(role),
                    scoped_key(role, &t.task),
                    props([
                        ("feasibility", t.feasibility.into()),
                        ("feasibility_rationale", t.rationale.as_str().into()),
                    ]),
                )
            })
            .collect(),
    );
    Ok(vec![
        require_role(role),
        // Feasibility annotates the assessment's PERFORMS edges; it never creates them.
        Op::RequireEdges { rel: Rel::Performs, rows: rows.clone() },
        Op::RemoveEdgeProps {
            rel: Rel::Performs,
            role: role.to_string(),
            props: FEASIBILITY_PROPS,
            keep: Keep::Targets(rows.iter().map(|r| r.to.clone()).collect()),
        },
        Op::MergeEdges { rel: Rel::Performs, rows },
    ])
}

fn role_setup(role: &RoleId, setup: &RoleSetup) -> Result<Vec<Op>, GraphError> {
    if !role.is_of(&setup.company, &setup.role_name) {
        let expected = RoleId::new(&setup.company, &setup.role_name);
        return Err(invalid("role_setup", format!("role {role} is not the role of the setup ({expected})")));
    }
    let company = vec![setup.company.as_str().to_owned()];
    let draup = vec![setup.draup_role.as_str().to_owned()];
    Ok(vec![
        Op::MergeNodes { label: Label::Company, rows: vec![node(company.clone(), Props::new(), Props::new())] },
        Op::MergeNodes {
            label: Label::CompanyRole,
            rows: vec![node(
                role_key(role),
                props([("company_id", setup.company.as_str().into()), ("name", setup.role_name.as_str().into())]),
                // A re-run of setup must not hide a role the dashboard shows: only finalize
                // (and an explicit hide) changes visibility.
                props([("visible", false.into())]),
            )],
        },
        Op::MergeEdges { rel: Rel::HasRole, rows: vec![edge(company, role_key(role), Props::new())] },
        Op::MergeNodes { label: Label::DraupRole, rows: vec![node(draup.clone(), Props::new(), Props::new())] },
        Op::DeleteEdges { rel: Rel::MapsTo, role: role.to_string(), keep: Keep::Targets(vec![draup.clone()]) },
        Op::MergeEdges { rel: Rel::MapsTo, rows: vec![edge(role_key(role), draup, Props::new())] },
    ])
}

fn document_linking(role: &RoleId, docs: &[LinkedDocument]) -> Result<Vec<Op>, GraphError> {
    // One link per document: the same bytes linked twice (two URIs) is one document; the
    // smallest (type, uri) wins so the result does not depend on input order.
    let mut by_hash: BTreeMap<&str, &LinkedDocument> = BTreeMap::new();
    for d in docs {
        if d.content_hash.0.is_empty() {
            return Err(invalid("document_linking", format!("document {} has no content hash", d.uri)));
        }
        by_hash
            .entry(d.content_hash.0.as_str())
            .and_modify(|kept| {
                if (&d.doc_type, &d.uri) < (&kept.doc_type, &kept.uri) {
                    *kept = d;
                }
            })
            .or_insert(d);
    }
    let keys: Vec<Vec<String>> = by_hash.keys().map(|h| vec![(*h).to_owned()]).collect();
    Ok(vec![
        require_role(role),
        Op::MergeNodes {
            label: Label::Document,
            rows: keys.iter().map(|k| node(k.clone(), Props::new(), Props::new())).collect(),
        },
        Op::DeleteEdges { rel: Rel::HasDocument, role: role.to_string(), keep: Keep::Targets(keys) },
        Op::MergeEdges {
            rel: Rel::HasDocument,
            rows: by_hash
                .values()
                .map(|d| {
                    edge(
                        role_key(role),
                        vec![d.content_hash.0.clone()],
                        props([("doc_type", d.doc_type.as_str().into()), ("uri", d.uri.as_str().into())]),
                    )
                })
                .collect(),
        },
    ])
}

/// Marks a role visible on the dashboard (finalize) or hides it.
pub(crate) fn set_visible(role: &RoleId, visible: bool) -> Plan {
    Plan {
        step: "finalize",
        ops: vec![
            require_role(role),
            Op::MergeNodes {
                label: Label::CompanyRole,
                rows: vec![node(role_key(role), props([("visible", visible.into())]), Props::new())],
            },
        ],
    }
}

/// Deletes a role and everything it owns. Shared vocabulary (skills, documents, Draup roles,
/// standard tasks) stays: other roles may use it.
fn delete_role_ops(role: &RoleId) -> Vec<Op> {
    let role = role.to_string();
    vec![
        Op::DeleteEdges { rel: Rel::ReskillsTo, role: role.clone(), keep: Keep::Pairs(Vec::new()) },
        Op::DeleteNodes { label: Label::Task, role: role.clone(), keep: Vec::new() },
        Op::DeleteNodes { label: Label::SkillCluster, role: role.clone(), keep: Vec::new() },
        Op::DeleteNodes { label: Label::CompanyRole, role, keep: Vec::new() },
    ]
}

/// The plan of [`super::RoleGraph::delete_role`].
pub(crate) fn delete_role(role: &RoleId) -> Plan {
    Plan { step: "delete_role", ops: delete_role_ops(role) }
}

/// The plan of [`super::RoleGraph::delete_company`], given the company's roles.
pub(crate) fn delete_company(company: &CompanyId, roles: &[RoleId]) -> Plan {
    let mut ops: Vec<Op> = roles.iter().flat_map(delete_role_ops).collect();
    ops.push(Op::DeleteNode(NodeRef::new(Label::Company, [company.as_str()])));
    Plan { step: "delete_company", ops }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etter_core::outputs::{ContentHash, SkillCluster, SkillsArchitecture, TopTasks};

    fn role() -> Result<RoleId, etter_core::ids::InvalidId> {
        RoleId::parse("cr-acme-claims-adjuster")
    }

    #[test]
    fn duplicate_keys_are_rejected_not_merged() -> Result<(), Box<dyn std::error::Error>> {
        let top = TopTasks { ranked: vec![Key::of("a"), Key::of("b"), Key::of("a")] };
        let err = for_output(&role()?, &StepOutput::TopTasks(&top)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("occurs twice"), "{err}");
        let arch = SkillsArchitecture {
            clusters: vec![
                SkillCluster { key: Key::of("x"), name: "X".into(), skills: vec![Key::of("s")] },
                SkillCluster { key: Key::of("y"), name: "Y".into(), skills: vec![Key::of("s")] },
            ],
        };
        assert!(for_output(&role()?, &StepOutput::SkillsArchitecture(&arch)).is_err(), "a skill in two clusters");
        Ok(())
    }

    #[test]
    fn document_links_do_not_depend_on_input_order() -> Result<(), Box<dyn std::error::Error>> {
        let doc = |t: &str, u: &str| LinkedDocument {
            content_hash: ContentHash("h1".into()),
            doc_type: t.into(),
            uri: u.into(),
        };
        let a = [doc("job_description", "file:///b"), doc("job_description", "file:///a")];
        let b = [a[1].clone(), a[0].clone()];
        let pa = for_output(&role()?, &StepOutput::DocumentLinking(&a))?;
        let pb = for_output(&role()?, &StepOutput::DocumentLinking(&b))?;
        assert_eq!(format!("{:?}", pa.ops), format!("{:?}", pb.ops));
        Ok(())
    }

    #[test]
    fn keep_rules() {
        let k = |s: &str| vec![s.to_owned()];
        assert!(Keep::Targets(vec![k("b")]).keeps(&k("a"), &k("b")));
        assert!(!Keep::Targets(vec![k("b")]).keeps(&k("b"), &k("a")));
        assert!(Keep::Sources(vec![k("a")]).keeps(&k("a"), &k("z")));
        assert!(Keep::Pairs(vec![(k("a"), k("b"))]).keeps(&k("a"), &k("b")));
        assert!(!Keep::Pairs(vec![(k("a"), k("b"))]).keeps(&k("a"), &k("c")));
        assert!(!Keep::Pairs(Vec::new()).keeps(&k("a"), &k("b")));
    }
}
