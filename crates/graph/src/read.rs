//! Reading the graph back, written once for both backends: a backend returns a role's raw
//! subgraph (nodes and relationships with properties) and this module decodes it into step
//! outputs, summaries and snapshots.

use std::collections::BTreeMap;

use super::model::{Label, NodeRef, PropValue, Props, Rel};
use super::{
    Backend, GraphError, LinkedDocument, RoleEntry, RoleOutputs, RoleSummary, Snapshot, SnapshotEdge, SnapshotNode,
    SnapshotScope,
};
use etter_core::ids::{CompanyId, DraupRoleId, RoleId, RoleName};
use etter_core::outputs::{
    Assessment, CatalogEntry, ContentHash, Feasibility, Key, MinedSkills, Reskilling, ReskillingPath, Skill,
    SkillCluster, SkillsArchitecture, SkillsCatalog, SourceSpan, Standardization, StandardizedTask, Task,
    TaskFeasibility, TopTasks,
};

/// A relationship read from a store.
#[derive(Debug, Clone)]
pub(crate) struct RawEdge {
    pub rel: Rel,
    pub from: NodeRef,
    pub to: NodeRef,
    pub props: Props,
}

/// A role's nodes (its own and every endpoint of what it owns) and owned relationships.
#[derive(Debug, Clone, Default)]
pub(crate) struct Subgraph {
    pub nodes: BTreeMap<NodeRef, Props>,
    pub edges: Vec<RawEdge>,
}

impl Subgraph {
    /// Adds a node read as (label, properties).
    pub fn add_node(&mut self, label: &str, props: Props) -> Result<NodeRef, GraphError> {
        let label = Label::parse(label).ok_or_else(|| GraphError::Corrupt(format!("unknown label {label:?}")))?;
        let node = NodeRef::from_props(label, &props)
            .ok_or_else(|| GraphError::Corrupt(format!("a {label} node lacks its key properties")))?;
        self.nodes.insert(node.clone(), props);
        Ok(node)
    }

    /// Adds a relationship read with both endpoints.
    pub fn add_edge(
        &mut self,
        rel: &str,
        (from_label, from_props): (&str, Props),
        (to_label, to_props): (&str, Props),
        props: Props,
    ) -> Result<(), GraphError> {
        let rel = Rel::parse(rel).ok_or_else(|| GraphError::Corrupt(format!("unknown relationship {rel:?}")))?;
        let from = self.add_node(from_label, from_props)?;
        let to = self.add_node(to_label, to_props)?;
        self.edges.push(RawEdge { rel, from, to, props });
        Ok(())
    }

    fn edges(&self, rel: Rel) -> impl Iterator<Item = &RawEdge> {
        self.edges.iter().filter(move |e| e.rel == rel)
    }
}

/// A company node and its roles' node properties.
#[derive(Debug, Clone, Default)]
pub(crate) struct CompanyData {
    pub props: Props,
    pub roles: Vec<Props>,
}

fn corrupt(what: &NodeRef, prop: &str) -> GraphError {
    GraphError::Corrupt(format!("{what}: property {prop:?} is missing or has the wrong type"))
}

fn get_str(owner: &NodeRef, props: &Props, name: &str) -> Result<String, GraphError> {
    props.get(name).and_then(PropValue::as_str).map(str::to_owned).ok_or_else(|| corrupt(owner, name))
}

fn get_f64(owner: &NodeRef, props: &Props, name: &str) -> Result<f64, GraphError> {
    match props.get(name) {
        Some(PropValue::Float(x)) => Ok(*x),
        // Neo4j returns a float that happens to be integral as a float, but be lenient with
        // data written by hand.
        Some(PropValue::Int(i)) => Ok(*i as f64),
        _ => Err(corrupt(owner, name)),
    }
}

fn get_int<T: TryFrom<i64>>(owner: &NodeRef, props: &Props, name: &str) -> Result<T, GraphError> {
    match props.get(name) {
        Some(PropValue::Int(i)) => T::try_from(*i).map_err(|_| corrupt(owner, name)),
        _ => Err(corrupt(owner, name)),
    }
}

fn get_bool(owner: &NodeRef, props: &Props, name: &str) -> Result<bool, GraphError> {
    match props.get(name) {
        Some(PropValue::Bool(b)) => Ok(*b),
        _ => Err(corrupt(owner, name)),
    }
}

fn span(owner: &NodeRef, props: &Props) -> Result<SourceSpan, GraphError> {
    Ok(SourceSpan {
        document: ContentHash(get_str(owner, props, "source_document")?),
        start: get_int(owner, props, "source_start")?,
        end: get_int(owner, props, "source_end")?,
        text: get_str(owner, props, "source_text")?,
    })
}

/// The last key value of a node (`key` of tasks, skills, clusters; the hash of documents).
fn last_key(node: &NodeRef) -> Result<String, GraphError> {
    node.key.last().cloned().ok_or_else(|| GraphError::Corrupt(format!("{node} has no key")))
}

fn parse_id<T>(
    node: &NodeRef,
    what: &str,
    value: &str,
    parse: impl Fn(&str) -> Result<T, etter_core::ids::InvalidId>,
) -> Result<T, GraphError> {
    parse(value).map_err(|e| GraphError::Corrupt(format!("{node}: {what}: {e}")))
}

/// Decodes a role's subgraph into its outputs.
fn decode(role: &RoleId, g: &Subgraph) -> Result<Option<RoleOutputs>, GraphError> {
    let role_node = NodeRef::new(Label::CompanyRole, [role.as_str()]);
    let Some(role_props) = g.nodes.get(&role_node) else { return Ok(None) };
    let node_props = |n: &NodeRef| g.nodes.get(n).ok_or_else(|| GraphError::Corrupt(format!("{n} is missing")));

    let company_id =
        parse_id(&role_node, "company_id", &get_str(&role_node, role_props, "company_id")?, CompanyId::parse)?;
    let role_name = parse_id(&role_node, "name", &get_str(&role_node, role_props, "name")?, RoleName::parse)?;
    let visible = get_bool(&role_node, role_props, "visible")?;
    let draup_role = match g.edges(Rel::MapsTo).collect::<Vec<_>>().as_slice() {
        [] => None,
        [e] => Some(parse_id(&e.to, "draup_role_id", &last_key(&e.to)?, DraupRoleId::parse)?),
        _ => return Err(GraphError::Corrupt(format!("{role_node} maps to more than one Draup role"))),
    };

    let mut documents = g
        .edges(Rel::HasDocument)
        .map(|e| {
            Ok(LinkedDocument {
                content_hash: ContentHash(last_key(&e.to)?),
                doc_type: get_str(&e.to, &e.props, "doc_type")?,
                uri: get_str(&e.to, &e.props, "uri")?,
            })
        })
        .collect::<Result<Vec<_>, GraphError>>()?;
    documents.sort();

    let mut tasks = Vec::new();
    let mut feasibility = Vec::new();
    for e in g.edges(Rel::Performs) {
        let key = Key(last_key(&e.to)?);
        tasks.push(Task {
            key: key.clone(),
            name: get_str(&e.to, node_props(&e.to)?, "name")?,
            automation: get_f64(&e.to, &e.props, "automation")?,
            augmentation: get_f64(&e.to, &e.props, "augmentation")?,
            confidence: get_f64(&e.to, &e.props, "confidence")?,
            source: span(&e.to, &e.props)?,
        });
        if e.props.contains_key("feasibility") {
            feasibility.push(Feasibility {
                task: key,
                feasibility: get_f64(&e.to, &e.props, "feasibility")?,
                rationale: get_str(&e.to, &e.props, "feasibility_rationale")?,
            });
        }
    }
    tasks.sort_by(|a, b| a.key.cmp(&b.key));
    feasibility.sort_by(|a, b| a.task.cmp(&b.task));

    let mut ranked = g
        .edges(Rel::TopTask)
        .map(|e| Ok((get_int::<i64>(&e.to, &e.props, "rank")?, Key(last_key(&e.to)?))))
        .collect::<Result<Vec<_>, GraphError>>()?;
    ranked.sort();

    let mut standardized = g
        .edges(Rel::StandardizedAs)
        .map(|e| {
            Ok(StandardizedTask {
                task: Key(last_key(&e.from)?),
                standard_name: get_str(&e.to, &e.props, "standard_name")?,
            })
        })
        .collect::<Result<Vec<_>, GraphError>>()?;
    standardized.sort_by(|a, b| a.task.cmp(&b.task));

    let mut skills = Vec::new();
    let mut catalog = Vec::new();
    for e in g.edges(Rel::Requires) {
        let key = Key(last_key(&e.to)?);
        skills.push(Skill {
            key: key.clone(),
            name: get_str(&e.to, &e.props, "name")?,
            confidence: get_f64(&e.to, &e.props, "confidence")?,
            source: span(&e.to, &e.props)?,
        });
        if e.props.contains_key("proficiency") {
            catalog.push(CatalogEntry {
                skill: key,
                proficiency: get_int(&e.to, &e.props, "proficiency")?,
                description: get_str(&e.to, &e.props, "description")?,
            });
        }
    }
    skills.sort_by(|a, b| a.key.cmp(&b.key));
    catalog.sort_by(|a, b| a.skill.cmp(&b.skill));

    let mut clusters: BTreeMap<Key, SkillCluster> = BTreeMap::new();
    for e in g.edges(Rel::HasCluster) {
        let key = Key(last_key(&e.to)?);
        let name = get_str(&e.to, node_props(&e.to)?, "name")?;
        clusters.insert(key.clone(), SkillCluster { key, name, skills: Vec::new() });
    }
    for e in g.edges(Rel::Contains) {
        let cluster = Key(last_key(&e.from)?);
        let entry = clusters.get_mut(&cluster).ok_or_else(|| {
            GraphError::Corrupt(format!("{} contains skills but the role has no HAS_CLUSTER to it", e.from))
        })?;
        entry.skills.push(Key(last_key(&e.to)?));
    }
    for c in clusters.values_mut() {
        c.skills.sort();
    }

    let mut paths = g
        .edges(Rel::ReskillsTo)
        .map(|e| {
            Ok(ReskillingPath {
                from_skill: Key(last_key(&e.from)?),
                to_skill: Key(last_key(&e.to)?),
                rationale: get_str(&e.to, &e.props, "rationale")?,
            })
        })
        .collect::<Result<Vec<_>, GraphError>>()?;
    paths.sort_by(|a, b| (&a.from_skill, &a.to_skill).cmp(&(&b.from_skill, &b.to_skill)));

    Ok(Some(RoleOutputs {
        role_id: role.clone(),
        company_id,
        role_name,
        visible,
        draup_role,
        documents,
        assessment: Assessment { tasks },
        top_tasks: TopTasks { ranked: ranked.into_iter().map(|(_, k)| k).collect() },
        standardization: Standardization { tasks: standardized },
        skills: MinedSkills { skills },
        architecture: SkillsArchitecture { clusters: clusters.into_values().collect() },
        catalog: SkillsCatalog { entries: catalog },
        reskilling: Reskilling { paths },
        feasibility: TaskFeasibility { tasks: feasibility },
    }))
}

/// [`super::RoleGraph::role_outputs`].
pub(crate) async fn role_outputs<B: Backend + ?Sized>(
    backend: &B,
    role: &RoleId,
) -> Result<Option<RoleOutputs>, GraphError> {
    let g = backend.role_subgraph(role.as_str()).await?;
    decode(role, &g)
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The counts of a role's outputs.
pub(crate) fn summary(o: &RoleOutputs) -> RoleSummary {
    let tasks = &o.assessment.tasks;
    // Summed in key order (the canonical order), so the mean is the same on every backend.
    let mean_confidence =
        if tasks.is_empty() { 0.0 } else { tasks.iter().map(|t| t.confidence).sum::<f64>() / tasks.len() as f64 };
    RoleSummary {
        tasks: count(tasks.len()),
        top_tasks: count(o.top_tasks.ranked.len()),
        skills: count(o.skills.skills.len()),
        skill_clusters: count(o.architecture.clusters.len()),
        catalog_entries: count(o.catalog.entries.len()),
        reskilling_paths: count(o.reskilling.paths.len()),
        mean_confidence,
    }
}

fn role_entries(company: &CompanyId, data: &CompanyData) -> Result<Vec<RoleEntry>, GraphError> {
    let company_node = NodeRef::new(Label::Company, [company.as_str()]);
    let mut roles = data
        .roles
        .iter()
        .map(|props| {
            let id = get_str(&company_node, props, "role_id")?;
            let node = NodeRef::new(Label::CompanyRole, [id.as_str()]);
            Ok(RoleEntry {
                role_id: parse_id(&node, "role_id", &id, RoleId::parse)?,
                role_name: parse_id(&node, "name", &get_str(&node, props, "name")?, RoleName::parse)?,
                visible: get_bool(&node, props, "visible")?,
            })
        })
        .collect::<Result<Vec<_>, GraphError>>()?;
    roles.sort_by(|a, b| a.role_id.cmp(&b.role_id));
    Ok(roles)
}

/// [`super::RoleGraph::company_roles`].
pub(crate) async fn company_roles<B: Backend + ?Sized>(
    backend: &B,
    company: &CompanyId,
) -> Result<Vec<RoleEntry>, GraphError> {
    match backend.company(company.as_str()).await? {
        Some(data) => role_entries(company, &data),
        None => Ok(Vec::new()),
    }
}

/// The ids of a company's roles.
pub(crate) async fn company_role_ids<B: Backend + ?Sized>(
    backend: &B,
    company: &CompanyId,
) -> Result<Vec<RoleId>, GraphError> {
    Ok(company_roles(backend, company).await?.into_iter().map(|r| r.role_id).collect())
}

/// [`super::RoleGraph::snapshot`].
pub(crate) async fn snapshot<B: Backend + ?Sized>(backend: &B, scope: &SnapshotScope) -> Result<Snapshot, GraphError> {
    let mut all = Subgraph::default();
    let roles = match scope {
        SnapshotScope::Role(role) => vec![role.clone()],
        SnapshotScope::Company(company) => {
            let Some(data) = backend.company(company.as_str()).await? else { return Ok(Snapshot::default()) };
            all.add_node(Label::Company.as_str(), data.props.clone())?;
            role_entries(company, &data)?.into_iter().map(|r| r.role_id).collect()
        }
    };
    for role in &roles {
        let g = backend.role_subgraph(role.as_str()).await?;
        all.nodes.extend(g.nodes);
        all.edges.extend(g.edges);
    }
    let ident =
        |e: &RawEdge| e.rel.ident_props().iter().map(|p| e.props.get(*p).map(ToString::to_string)).collect::<Vec<_>>();
    all.edges.sort_by(|a, b| (a.rel, &a.from, &a.to, ident(a)).cmp(&(b.rel, &b.from, &b.to, ident(b))));
    Ok(Snapshot {
        nodes: all.nodes.into_iter().map(|(node, props)| SnapshotNode { node, props }).collect(),
        edges: all
            .edges
            .into_iter()
            .map(|e| SnapshotEdge { rel: e.rel, from: e.from, to: e.to, props: e.props })
            .collect(),
    })
}
