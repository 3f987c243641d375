//! The role graph's conformance suite: every case runs against both implementations, the
//! embedded SQLite graph and Neo4j, and they must behave the same (quickwit's
//! `metastore_test_suite!` pattern). A last case writes the same outputs to both and compares
//! their snapshots.
//!
//! Neo4j is the real server `scripts/services up neo4j` starts; without `ETTER_GRAPH__URI` the
//! Neo4j cases fail (they never skip). Community edition has one database, so every key a test
//! writes carries the test's own prefix, and a test removes only that prefix afterwards. The
//! embedded cases each use their own temporary file.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use etter_core::ids::{CompanyId, DraupRoleId, RoleId, RoleName};
use etter_core::outputs::{
    Assessment, CatalogEntry, ContentHash, Feasibility, Key, MinedSkills, Reskilling, ReskillingPath, Skill,
    SkillCluster, SkillsArchitecture, SkillsCatalog, SourceSpan, Standardization, StandardizedTask, Task,
    TaskFeasibility, TopTasks,
};
use etter_graph::{
    EmbeddedGraph, GraphError, Label, LinkedDocument, Neo4jGraph, RoleGraph, RoleOutputs, RoleSetup, RoleSummary,
    Snapshot, SnapshotScope, StepOutput,
};

// ---------------------------------------------------------------------------------------------
// Harness

/// Which implementation a case runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Embedded,
    Neo4j,
}

/// What a case gets: a fresh, schema-ready graph and the prefix its keys must carry.
#[derive(Clone)]
struct Ctx {
    graph: Arc<dyn RoleGraph>,
    prefix: String,
}

/// A prefix no other test (in this run or an earlier one) uses: lowercase, a valid company id.
fn unique_prefix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("gt{:x}{:x}{}", std::process::id(), nanos & 0xffff_ffff_ffff, COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn neo4j_settings() -> Result<(String, String, String)> {
    let Ok(uri) = std::env::var("ETTER_GRAPH__URI") else {
        bail!(
            "ETTER_GRAPH__URI is not set: run `scripts/services up neo4j` and source .etter/services.env \
             (set -a; . .etter/services.env; set +a)"
        );
    };
    ensure!(
        !uri.is_empty(),
        "ETTER_GRAPH__URI is empty: run `scripts/services up neo4j` and source .etter/services.env"
    );
    let user = std::env::var("ETTER_GRAPH__USER").unwrap_or_else(|_| "neo4j".to_owned());
    let password = std::env::var("ETTER_GRAPH__PASSWORD").unwrap_or_default();
    Ok((uri, user, password))
}

fn temp_dir(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("etter-graph-{prefix}"))
}

async fn open(kind: Kind, prefix: &str) -> Result<Arc<dyn RoleGraph>> {
    let graph: Arc<dyn RoleGraph> = match kind {
        Kind::Embedded => Arc::new(EmbeddedGraph::open(&temp_dir(prefix).join("graph.db")).await?),
        Kind::Neo4j => {
            let (uri, user, password) = neo4j_settings()?;
            let settings = etter_graph::GraphConfig {
                uri: uri.clone(),
                user,
                password: password.as_str().into(),
                ..etter_graph::GraphConfig::default()
            };
            Arc::new(Neo4jGraph::connect(&settings).await.with_context(|| format!("neo4j at {uri}"))?)
        }
    };
    graph.ensure_schema().await?;
    Ok(graph)
}

/// Removes everything this test wrote: its temporary file, or every Neo4j node whose key
/// starts with the prefix (companies, prefixed vocabulary: skills, documents, Draup roles,
/// standard tasks) or whose `role_id` is one of the prefix's roles (`cr-{prefix}…`).
async fn clean_up(kind: Kind, prefix: &str) -> Result<()> {
    match kind {
        Kind::Embedded => {
            let dir = temp_dir(prefix);
            if dir.exists() {
                tokio::fs::remove_dir_all(&dir).await.with_context(|| format!("removing {}", dir.display()))?;
            }
        }
        Kind::Neo4j => {
            let (uri, user, password) = neo4j_settings()?;
            let graph = neo4rs::Graph::new(uri, user, password).await?;
            // Label by label on the first key property, so the constraint indexes serve the
            // `STARTS WITH` instead of a scan of everything every other test left.
            for label in Label::ALL {
                let (property, start) = match label.key_props().first() {
                    Some(&"role_id") => ("role_id", format!("cr-{prefix}")),
                    Some(property) => (*property, prefix.to_owned()),
                    None => continue,
                };
                let query = format!("MATCH (n:{label}) WHERE n.{property} STARTS WITH $start DETACH DELETE n");
                graph.run(neo4rs::query(&query).param("start", start)).await?;
            }
        }
    }
    Ok(())
}

/// Runs one case against one implementation, cleaning up whether it passed or not.
async fn run<F, Fut>(kind: Kind, case: F) -> Result<()>
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let prefix = unique_prefix();
    let outcome = match open(kind, &prefix).await {
        Ok(graph) => case(Ctx { graph, prefix: prefix.clone() }).await,
        Err(e) => Err(e),
    };
    let cleaned = clean_up(kind, &prefix).await;
    outcome?;
    cleaned
}

/// One `#[tokio::test]` per case and backend: `graph_conformance::embedded::<case>` and
/// `graph_conformance::neo4j::<case>`.
macro_rules! conformance_suite {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    super::run(super::Kind::Embedded, super::$case).await
                }
            )*
        }
        mod neo4j {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    super::run(super::Kind::Neo4j, super::$case).await
                }
            )*
        }
    };
}

conformance_suite!(
    ensure_schema_twice_is_harmless,
    each_step_output_is_stored,
    writing_the_same_outputs_twice_changes_nothing,
    rerun_with_fewer_tasks_removes_them_for_that_role_only,
    annotating_steps_replace_only_their_own_properties,
    two_roles_share_a_skill,
    summary_counts,
    reads_abandoned_midway_leave_later_answers_exact,
    concurrent_writes_of_two_roles_do_not_interfere,
    bad_references_and_outputs_are_rejected_atomically,
    deleting_a_role_leaves_the_others,
);

// ---------------------------------------------------------------------------------------------
// Test values: a claims adjuster and an underwriter of one insurance company.

const ADJUSTER_JD: &str = "Claims Adjuster. Investigate property damage claims by inspecting damaged property and \
interviewing claimants. Review insurance policies to determine coverage for reported losses. Negotiate settlements \
with claimants and attorneys. Document claim findings in the claims management system. Detect potential fraud \
indicators and refer suspicious claims to the special investigations unit. Requires insurance policy analysis, \
negotiation, Guidewire ClaimCenter and strong customer communication.";

const ADJUSTER_SOP: &str = "Claims handling SOP. Record every first notice of loss in Guidewire ClaimCenter within 24 \
hours. Estimate repair costs using Xactimate and attach photos of the damage.";

const UNDERWRITER_JD: &str = "Underwriter. Evaluate insurance applications against underwriting guidelines. Review \
insurance policies to determine coverage before renewal. Requires insurance policy analysis, risk assessment and \
customer communication with brokers.";

/// Every output of one role, as the steps would produce them.
#[derive(Debug, Clone)]
struct Fixture {
    role: RoleId,
    setup: RoleSetup,
    docs: Vec<LinkedDocument>,
    assessment: Assessment,
    top: TopTasks,
    standardization: Standardization,
    skills: MinedSkills,
    architecture: SkillsArchitecture,
    catalog: SkillsCatalog,
    reskilling: Reskilling,
    feasibility: TaskFeasibility,
}

/// Builds keys and spans for one test: vocabulary keys (skills, standard tasks, documents,
/// Draup roles) are shared across roles, so they carry the test's prefix.
struct Values<'a> {
    prefix: &'a str,
}

impl Values<'_> {
    fn company(&self) -> Result<CompanyId> {
        Ok(CompanyId::parse(&format!("{}-liberty", self.prefix))?)
    }

    fn skill_key(&self, name: &str) -> Key {
        Key(format!("{}-{}", self.prefix, Key::of(name).0))
    }

    fn standard_name(&self, name: &str) -> String {
        format!("{} {name}", self.prefix)
    }

    fn doc(&self, name: &str) -> ContentHash {
        ContentHash(format!("{}-{name}", self.prefix))
    }

    fn span(&self, doc: &str, text: &str, cited: &str) -> Result<SourceSpan> {
        let start = text.find(cited).with_context(|| format!("{cited:?} is not in the document"))?;
        Ok(SourceSpan {
            document: self.doc(doc),
            start: u32::try_from(start)?,
            end: u32::try_from(start + cited.len())?,
            text: cited.to_owned(),
        })
    }

    fn task(
        &self,
        doc: &str,
        text: &str,
        cited: &str,
        automation: f64,
        augmentation: f64,
        confidence: f64,
    ) -> Result<Task> {
        Ok(Task {
            key: Key::of(cited),
            name: cited.to_owned(),
            automation,
            augmentation,
            confidence,
            source: self.span(doc, text, cited)?,
        })
    }

    fn skill(&self, doc: &str, text: &str, cited: &str, name: &str, confidence: f64) -> Result<Skill> {
        Ok(Skill { key: self.skill_key(name), name: name.to_owned(), confidence, source: self.span(doc, text, cited)? })
    }

    fn adjuster(&self) -> Result<Fixture> {
        let company = self.company()?;
        let role_name = RoleName::parse("Claims Adjuster")?;
        let (jd, sop) = (ADJUSTER_JD, ADJUSTER_SOP);
        let tasks = vec![
            self.task("adjuster-jd", jd, "Investigate property damage claims", 0.25, 0.7, 0.92)?,
            self.task("adjuster-jd", jd, "Review insurance policies to determine coverage", 0.55, 0.8, 0.88)?,
            self.task("adjuster-jd", jd, "Negotiate settlements with claimants and attorneys", 0.1, 0.5, 0.81)?,
            self.task("adjuster-jd", jd, "Document claim findings in the claims management system", 0.8, 0.9, 0.95)?,
            self.task("adjuster-jd", jd, "Detect potential fraud indicators", 0.6, 0.85, 0.7)?,
            self.task("adjuster-sop", sop, "Estimate repair costs using Xactimate", 0.65, 0.85, 0.84)?,
        ];
        let key = |i: usize| tasks.get(i).map(|t| t.key.clone()).context("no such task");
        let skills = vec![
            self.skill("adjuster-jd", jd, "insurance policy analysis", "Insurance policy analysis", 0.9)?,
            self.skill("adjuster-jd", jd, "negotiation", "Negotiation", 0.86)?,
            self.skill("adjuster-sop", sop, "Guidewire ClaimCenter", "Guidewire ClaimCenter", 0.97)?,
            self.skill("adjuster-jd", jd, "customer communication", "Customer communication", 0.8)?,
            self.skill("adjuster-sop", sop, "Xactimate", "Xactimate", 0.93)?,
        ];
        let sk = |name: &str| self.skill_key(name);
        Ok(Fixture {
            role: RoleId::new(&company, &role_name),
            setup: RoleSetup {
                company,
                role_name,
                draup_role: DraupRoleId::parse(&format!("{}-draup-4711", self.prefix))?,
            },
            docs: vec![
                LinkedDocument {
                    content_hash: self.doc("adjuster-jd"),
                    doc_type: "job_description".into(),
                    uri: "file:///docs/claims-adjuster.md".into(),
                },
                LinkedDocument {
                    content_hash: self.doc("adjuster-sop"),
                    doc_type: "sop".into(),
                    uri: "s3://liberty-docs/claims-sop.txt".into(),
                },
            ],
            top: TopTasks { ranked: vec![key(3)?, key(1)?, key(0)?] },
            standardization: Standardization {
                tasks: vec![
                    StandardizedTask { task: key(3)?, standard_name: self.standard_name("Claims documentation") },
                    StandardizedTask { task: key(1)?, standard_name: self.standard_name("Coverage analysis") },
                    StandardizedTask { task: key(0)?, standard_name: self.standard_name("Loss investigation") },
                ],
            },
            architecture: SkillsArchitecture {
                clusters: vec![
                    SkillCluster {
                        key: Key::of("Claims expertise"),
                        name: "Claims expertise".into(),
                        skills: vec![sk("Insurance policy analysis"), sk("Guidewire ClaimCenter"), sk("Xactimate")],
                    },
                    SkillCluster {
                        key: Key::of("Interpersonal"),
                        name: "Interpersonal".into(),
                        skills: vec![sk("Negotiation"), sk("Customer communication")],
                    },
                ],
            },
            catalog: SkillsCatalog {
                entries: vec![
                    CatalogEntry {
                        skill: sk("Insurance policy analysis"),
                        proficiency: 4,
                        description: "Reads policy wording to decide coverage.".into(),
                    },
                    CatalogEntry {
                        skill: sk("Negotiation"),
                        proficiency: 3,
                        description: "Settles claims within authority.".into(),
                    },
                    CatalogEntry {
                        skill: sk("Guidewire ClaimCenter"),
                        proficiency: 3,
                        description: "Records and updates claims.".into(),
                    },
                    CatalogEntry {
                        skill: sk("Customer communication"),
                        proficiency: 4,
                        description: "Explains decisions to claimants.".into(),
                    },
                    CatalogEntry {
                        skill: sk("Xactimate"),
                        proficiency: 2,
                        description: "Prices repairs from site photos.".into(),
                    },
                ],
            },
            reskilling: Reskilling {
                paths: vec![
                    ReskillingPath {
                        from_skill: sk("Guidewire ClaimCenter"),
                        to_skill: sk("Claims data analysis"),
                        rationale: "Claims systems knowledge grounds analysis of claims data.".into(),
                    },
                    ReskillingPath {
                        from_skill: sk("Customer communication"),
                        to_skill: sk("AI-assisted claims triage"),
                        rationale: "Triage assistants need people who can explain their outcomes.".into(),
                    },
                ],
            },
            feasibility: TaskFeasibility {
                tasks: tasks
                    .iter()
                    .map(|t| Feasibility {
                        task: t.key.clone(),
                        feasibility: (t.automation * 0.9 * 1000.0).round() / 1000.0,
                        rationale: format!(
                            "{} is {} structured.",
                            t.name,
                            if t.automation > 0.5 { "mostly" } else { "rarely" }
                        ),
                    })
                    .collect(),
            },
            assessment: Assessment { tasks },
            skills: MinedSkills { skills },
        })
    }

    fn underwriter(&self) -> Result<Fixture> {
        let company = self.company()?;
        let role_name = RoleName::parse("Underwriter")?;
        let jd = UNDERWRITER_JD;
        let tasks = vec![
            self.task("underwriter-jd", jd, "Evaluate insurance applications", 0.5, 0.8, 0.9)?,
            // The same task text as the adjuster's: a different task (role-scoped), same key.
            self.task("underwriter-jd", jd, "Review insurance policies to determine coverage", 0.6, 0.75, 0.86)?,
        ];
        let key = |i: usize| tasks.get(i).map(|t| t.key.clone()).context("no such task");
        let sk = |name: &str| self.skill_key(name);
        Ok(Fixture {
            role: RoleId::new(&company, &role_name),
            setup: RoleSetup {
                company,
                role_name,
                draup_role: DraupRoleId::parse(&format!("{}-draup-815", self.prefix))?,
            },
            docs: vec![LinkedDocument {
                content_hash: self.doc("underwriter-jd"),
                doc_type: "job_description".into(),
                uri: "file:///docs/underwriter.md".into(),
            }],
            top: TopTasks { ranked: vec![key(0)?] },
            standardization: Standardization {
                // The same standard task as the adjuster's second top task: shared vocabulary.
                tasks: vec![StandardizedTask { task: key(1)?, standard_name: self.standard_name("Coverage analysis") }],
            },
            skills: MinedSkills {
                skills: vec![
                    // Shared with the adjuster, spelled differently and with its own confidence.
                    self.skill("underwriter-jd", jd, "insurance policy analysis", "Insurance Policy Analysis", 0.83)?,
                    self.skill("underwriter-jd", jd, "risk assessment", "Risk assessment", 0.91)?,
                    self.skill("underwriter-jd", jd, "customer communication", "Customer communication", 0.66)?,
                ],
            },
            architecture: SkillsArchitecture {
                clusters: vec![SkillCluster {
                    key: Key::of("Claims expertise"),
                    name: "Underwriting expertise".into(),
                    skills: vec![sk("Insurance Policy Analysis"), sk("Risk assessment"), sk("Customer communication")],
                }],
            },
            catalog: SkillsCatalog {
                entries: vec![CatalogEntry {
                    skill: sk("Risk assessment"),
                    proficiency: 5,
                    description: "Prices risk from application data.".into(),
                }],
            },
            reskilling: Reskilling {
                paths: vec![ReskillingPath {
                    from_skill: sk("Customer communication"),
                    to_skill: sk("AI-assisted claims triage"),
                    rationale: "Broker conversations transfer to explaining automated decisions.".into(),
                }],
            },
            feasibility: TaskFeasibility {
                tasks: vec![Feasibility {
                    task: key(0)?,
                    feasibility: 0.45,
                    rationale: "Guidelines are explicit.".into(),
                }],
            },
            assessment: Assessment { tasks },
        })
    }
}

/// Writes every step output of a role, in the step graph's order, then finalizes it.
async fn write_all(graph: &dyn RoleGraph, f: &Fixture) -> Result<()> {
    let role = &f.role;
    graph.write(role, StepOutput::RoleSetup(&f.setup)).await?;
    graph.write(role, StepOutput::DocumentLinking(&f.docs)).await?;
    graph.write(role, StepOutput::Assessment(&f.assessment)).await?;
    graph.write(role, StepOutput::TopTasks(&f.top)).await?;
    graph.write(role, StepOutput::Standardization(&f.standardization)).await?;
    graph.write(role, StepOutput::MinedSkills(&f.skills)).await?;
    graph.write(role, StepOutput::SkillsArchitecture(&f.architecture)).await?;
    graph.write(role, StepOutput::SkillsCatalog(&f.catalog)).await?;
    graph.write(role, StepOutput::Reskilling(&f.reskilling)).await?;
    graph.write(role, StepOutput::TaskFeasibility(&f.feasibility)).await?;
    graph.set_visible(role, true).await?;
    Ok(())
}

/// What `role_outputs` must return for a fixture: its values in the canonical order.
fn expected(f: &Fixture, visible: bool) -> RoleOutputs {
    let mut o = RoleOutputs {
        role_id: f.role.clone(),
        company_id: f.setup.company.clone(),
        role_name: f.setup.role_name.clone(),
        visible,
        draup_role: Some(f.setup.draup_role.clone()),
        documents: f.docs.clone(),
        assessment: f.assessment.clone(),
        top_tasks: f.top.clone(),
        standardization: f.standardization.clone(),
        skills: f.skills.clone(),
        architecture: f.architecture.clone(),
        catalog: f.catalog.clone(),
        reskilling: f.reskilling.clone(),
        feasibility: f.feasibility.clone(),
    };
    o.documents.sort();
    o.assessment.tasks.sort_by(|a, b| a.key.cmp(&b.key));
    o.standardization.tasks.sort_by(|a, b| a.task.cmp(&b.task));
    o.skills.skills.sort_by(|a, b| a.key.cmp(&b.key));
    o.architecture.clusters.sort_by(|a, b| a.key.cmp(&b.key));
    for c in &mut o.architecture.clusters {
        c.skills.sort();
    }
    o.catalog.entries.sort_by(|a, b| a.skill.cmp(&b.skill));
    o.reskilling.paths.sort_by(|a, b| (&a.from_skill, &a.to_skill).cmp(&(&b.from_skill, &b.to_skill)));
    o.feasibility.tasks.sort_by(|a, b| a.task.cmp(&b.task));
    o
}

async fn outputs(graph: &dyn RoleGraph, role: &RoleId) -> Result<RoleOutputs> {
    graph.role_outputs(role).await?.with_context(|| format!("role {role} is not in the graph"))
}

async fn snapshot(graph: &dyn RoleGraph, scope: SnapshotScope) -> Result<Snapshot> {
    Ok(graph.snapshot(&scope).await?)
}

fn ensure_same(before: &Snapshot, after: &Snapshot, what: &str) -> Result<()> {
    ensure!(before == after, "{what}: the graph changed.\n--- before\n{before}--- after\n{after}");
    Ok(())
}

fn count_nodes(s: &Snapshot, label: Label) -> usize {
    s.nodes.iter().filter(|n| n.node.label == label).count()
}

// ---------------------------------------------------------------------------------------------
// Cases

async fn ensure_schema_twice_is_harmless(ctx: Ctx) -> Result<()> {
    let g = ctx.graph.as_ref();
    g.ensure_schema().await?;
    g.ensure_schema().await?;
    g.ping().await?;
    let f = Values { prefix: &ctx.prefix }.adjuster()?;
    write_all(g, &f).await?;
    g.ensure_schema().await?;
    ensure!(outputs(g, &f.role).await? == expected(&f, true), "the schema call must not touch data");
    Ok(())
}

async fn each_step_output_is_stored(ctx: Ctx) -> Result<()> {
    let g = ctx.graph.as_ref();
    let f = Values { prefix: &ctx.prefix }.adjuster()?;
    let role = &f.role;
    ensure!(g.role_outputs(role).await?.is_none(), "an unknown role has no outputs");

    g.write(role, StepOutput::RoleSetup(&f.setup)).await?;
    let o = outputs(g, role).await?;
    ensure!(o.company_id == f.setup.company && o.role_name == f.setup.role_name);
    ensure!(o.draup_role.as_ref() == Some(&f.setup.draup_role));
    ensure!(!o.visible, "a role is hidden until finalize");
    ensure!(o.assessment.tasks.is_empty() && o.documents.is_empty());

    g.write(role, StepOutput::DocumentLinking(&f.docs)).await?;
    ensure!(outputs(g, role).await?.documents == expected(&f, false).documents);

    g.write(role, StepOutput::Assessment(&f.assessment)).await?;
    let o = outputs(g, role).await?;
    ensure!(o.assessment == expected(&f, false).assessment, "tasks with scores and spans: {:#?}", o.assessment);

    g.write(role, StepOutput::TopTasks(&f.top)).await?;
    ensure!(outputs(g, role).await?.top_tasks == f.top, "top tasks keep their rank order");

    g.write(role, StepOutput::Standardization(&f.standardization)).await?;
    ensure!(outputs(g, role).await?.standardization == expected(&f, false).standardization);

    g.write(role, StepOutput::MinedSkills(&f.skills)).await?;
    ensure!(outputs(g, role).await?.skills == expected(&f, false).skills);

    g.write(role, StepOutput::SkillsArchitecture(&f.architecture)).await?;
    ensure!(outputs(g, role).await?.architecture == expected(&f, false).architecture);

    g.write(role, StepOutput::SkillsCatalog(&f.catalog)).await?;
    ensure!(outputs(g, role).await?.catalog == expected(&f, false).catalog);

    g.write(role, StepOutput::Reskilling(&f.reskilling)).await?;
    ensure!(outputs(g, role).await?.reskilling == expected(&f, false).reskilling);

    g.write(role, StepOutput::TaskFeasibility(&f.feasibility)).await?;
    ensure!(outputs(g, role).await?.feasibility == expected(&f, false).feasibility);

    g.set_visible(role, true).await?;
    let o = outputs(g, role).await?;
    ensure!(o == expected(&f, true), "all outputs round-trip: {o:#?}");

    // The graph's shape, as the dashboard and docs/graph.md describe it.
    let s = snapshot(g, SnapshotScope::Role(role.clone())).await?;
    ensure!(count_nodes(&s, Label::Company) == 1 && count_nodes(&s, Label::CompanyRole) == 1);
    ensure!(count_nodes(&s, Label::DraupRole) == 1 && count_nodes(&s, Label::Document) == 2);
    ensure!(count_nodes(&s, Label::Task) == 6 && count_nodes(&s, Label::StandardTask) == 3);
    ensure!(count_nodes(&s, Label::SkillCluster) == 2);
    // Five mined skills plus the two that reskilling paths lead to.
    ensure!(count_nodes(&s, Label::Skill) == 7, "skills:\n{s}");
    let entries = g.company_roles(&f.setup.company).await?;
    ensure!(entries.len() == 1 && entries.iter().all(|e| e.visible && e.role_id == *role), "{entries:?}");
    Ok(())
}

async fn writing_the_same_outputs_twice_changes_nothing(ctx: Ctx) -> Result<()> {
    let g = ctx.graph.as_ref();
    let v = Values { prefix: &ctx.prefix };
    let (a, b) = (v.adjuster()?, v.underwriter()?);
    write_all(g, &a).await?;
    write_all(g, &b).await?;
    let scope = SnapshotScope::Company(a.setup.company.clone());
    let first = snapshot(g, scope.clone()).await?;
    ensure!(!first.nodes.is_empty() && !first.edges.is_empty());

    write_all(g, &a).await?;
    write_all(g, &b).await?;
    ensure_same(&first, &snapshot(g, scope.clone()).await?, "writing every output again")?;

    // A retried single step (a worker crash after commit) and a re-run of role_setup after
    // finalize: neither changes anything, and setup does not hide the finalized role.
    g.write(&a.role, StepOutput::Assessment(&a.assessment)).await?;
    g.write(&a.role, StepOutput::RoleSetup(&a.setup)).await?;
    g.set_visible(&a.role, true).await?;
    ensure_same(&first, &snapshot(g, scope).await?, "retrying steps")?;
    ensure!(outputs(g, &a.role).await?.visible);
    Ok(())
}

async fn rerun_with_fewer_tasks_removes_them_for_that_role_only(ctx: Ctx) -> Result<()> {
    let g = ctx.graph.as_ref();
    let v = Values { prefix: &ctx.prefix };
    let (a, b) = (v.adjuster()?, v.underwriter()?);
    write_all(g, &a).await?;
    write_all(g, &b).await?;
    let b_before = snapshot(g, SnapshotScope::Role(b.role.clone())).await?;

    // The re-run keeps four of six tasks; the dependents are re-run on the kept ones.
    let mut rerun = a.clone();
    let dropped: Vec<Key> =
        vec![Key::of("Investigate property damage claims"), Key::of("Estimate repair costs using Xactimate")];
    rerun.assessment.tasks.retain(|t| !dropped.contains(&t.key));
    rerun.top.ranked.retain(|k| !dropped.contains(k));
    rerun.standardization.tasks.retain(|t| !dropped.contains(&t.task));
    rerun.feasibility.tasks.retain(|t| !dropped.contains(&t.task));
    // The SOP is no longer linked: no kept task cites it, and the skills citing it are re-mined
    // from the JD.
    rerun.docs.retain(|d| d.doc_type != "sop");
    rerun.skills.skills.retain(|s| s.source.document != v.doc("adjuster-sop"));
    let kept: Vec<Key> = rerun.skills.skills.iter().map(|s| s.key.clone()).collect();
    for c in &mut rerun.architecture.clusters {
        c.skills.retain(|k| kept.contains(k));
    }
    rerun.catalog.entries.retain(|e| kept.contains(&e.skill));
    rerun.reskilling.paths.retain(|p| kept.contains(&p.from_skill));

    g.write(&a.role, StepOutput::Assessment(&rerun.assessment)).await?;
    // Right after the assessment, the dropped tasks are gone with everything derived from them.
    let o = outputs(g, &a.role).await?;
    ensure!(o.assessment.tasks.len() == 4);
    ensure!(o.top_tasks.ranked.iter().all(|k| !dropped.contains(k)), "{:?}", o.top_tasks);
    ensure!(o.standardization.tasks.iter().all(|t| !dropped.contains(&t.task)));
    ensure!(o.feasibility.tasks.iter().all(|t| !dropped.contains(&t.task)));

    write_all(g, &rerun).await?;
    let o = outputs(g, &a.role).await?;
    ensure!(o == expected(&rerun, true), "after the re-run: {o:#?}");
    let s = snapshot(g, SnapshotScope::Role(a.role.clone())).await?;
    ensure!(count_nodes(&s, Label::Task) == 4, "stale Task nodes linger:\n{s}");
    ensure!(
        !s.nodes.iter().any(|n| n.node.label == Label::Task && dropped.iter().any(|d| n.node.key.last() == Some(&d.0))),
        "a dropped task is still in the graph:\n{s}"
    );
    ensure!(count_nodes(&s, Label::Document) == 1, "the unlinked SOP is no longer part of the role:\n{s}");

    // The underwriter's "review insurance policies" task has the same key as a kept adjuster
    // task, and shares skills and a standard task: all of it untouched.
    ensure_same(&b_before, &snapshot(g, SnapshotScope::Role(b.role.clone())).await?, "the other role")?;
    ensure!(outputs(g, &b.role).await? == expected(&b, true));
    Ok(())
}

async fn annotating_steps_replace_only_their_own_properties(ctx: Ctx) -> Result<()> {
    let g = ctx.graph.as_ref();
    let f = Values { prefix: &ctx.prefix }.adjuster()?;
    write_all(g, &f).await?;

    // The catalog re-runs with one entry fewer: that skill loses its proficiency, keeps what
    // the miner said about it.
    let mut catalog = f.catalog.clone();
    let gone = catalog.entries.remove(0).skill;
    g.write(&f.role, StepOutput::SkillsCatalog(&catalog)).await?;
    let o = outputs(g, &f.role).await?;
    ensure!(o.catalog.entries.len() == 4 && o.catalog.entries.iter().all(|e| e.skill != gone));
    ensure!(o.skills == expected(&f, true).skills, "mined skills are not the catalog's to change");

    // Feasibility with one task: the others lose their feasibility, keep their scores.
    let feasibility = TaskFeasibility { tasks: f.feasibility.tasks[..1].to_vec() };
    g.write(&f.role, StepOutput::TaskFeasibility(&feasibility)).await?;
    let o = outputs(g, &f.role).await?;
    ensure!(o.feasibility == feasibility);
    ensure!(o.assessment == expected(&f, true).assessment, "scores are not feasibility's to change");

    // The miner re-runs unchanged: the catalog's annotations on kept skills survive it.
    g.write(&f.role, StepOutput::MinedSkills(&f.skills)).await?;
    ensure!(outputs(g, &f.role).await?.catalog.entries.len() == 4);

    // Reskilling re-runs with another path: the old paths of this role go.
    let path = ReskillingPath {
        from_skill: f.skills.skills[1].key.clone(),
        to_skill: Values { prefix: &ctx.prefix }.skill_key("Mediation"),
        rationale: "Negotiation is most of mediation.".into(),
    };
    let reskilling = Reskilling { paths: vec![path] };
    g.write(&f.role, StepOutput::Reskilling(&reskilling)).await?;
    ensure!(outputs(g, &f.role).await?.reskilling == reskilling);

    // Re-linking documents to a different URI of the same content updates the link in place.
    let mut docs = f.docs.clone();
    docs[0].uri = "s3://liberty-docs/moved/claims-adjuster.md".into();
    g.write(&f.role, StepOutput::DocumentLinking(&docs)).await?;
    let mut expected_docs = docs.clone();
    expected_docs.sort();
    ensure!(outputs(g, &f.role).await?.documents == expected_docs);
    Ok(())
}

async fn two_roles_share_a_skill(ctx: Ctx) -> Result<()> {
    let g = ctx.graph.as_ref();
    let v = Values { prefix: &ctx.prefix };
    let (a, b) = (v.adjuster()?, v.underwriter()?);
    write_all(g, &a).await?;
    write_all(g, &b).await?;
    let shared = v.skill_key("Insurance policy analysis");

    let s = snapshot(g, SnapshotScope::Company(a.setup.company.clone())).await?;
    let skill_nodes: Vec<_> =
        s.nodes.iter().filter(|n| n.node.label == Label::Skill && n.node.key == [shared.0.clone()]).collect();
    ensure!(skill_nodes.len() == 1, "one node for a shared skill:\n{s}");
    let requires: Vec<_> = s
        .edges
        .iter()
        .filter(|e| e.to.label == Label::Skill && e.to.key == [shared.0.clone()] && e.from.label == Label::CompanyRole)
        .collect();
    ensure!(requires.len() == 2, "each role requires it:\n{s}");
    // 5 adjuster skills + 2 reskilling targets + risk assessment (the others are shared).
    ensure!(count_nodes(&s, Label::Skill) == 8, "{s}");
    // The shared standard task "coverage analysis".
    ensure!(count_nodes(&s, Label::StandardTask) == 3, "{s}");
    // Both roles have a task with the key "review-insurance-policies-…", as two nodes.
    ensure!(count_nodes(&s, Label::Task) == 8, "{s}");

    // What each role says about the skill stays its own.
    let skill_of = |o: &RoleOutputs| o.skills.skills.iter().find(|s| s.key == shared).cloned();
    let (sa, sb) = (skill_of(&outputs(g, &a.role).await?), skill_of(&outputs(g, &b.role).await?));
    let (sa, sb) = (sa.context("adjuster lost the skill")?, sb.context("underwriter lost the skill")?);
    ensure!(sa.name == "Insurance policy analysis" && sa.confidence == 0.9, "{sa:?}");
    ensure!(sb.name == "Insurance Policy Analysis" && sb.confidence == 0.83, "{sb:?}");

    // The adjuster's skills are re-mined without it: the underwriter still has it, and the
    // adjuster's cluster no longer contains it.
    let mut skills = a.skills.clone();
    skills.skills.retain(|s| s.key != shared);
    g.write(&a.role, StepOutput::MinedSkills(&skills)).await?;
    let oa = outputs(g, &a.role).await?;
    ensure!(skill_of(&oa).is_none());
    ensure!(oa.architecture.clusters.iter().all(|c| !c.skills.contains(&shared)), "{:?}", oa.architecture);
    ensure!(outputs(g, &b.role).await? == expected(&b, true));
    Ok(())
}

async fn summary_counts(ctx: Ctx) -> Result<()> {
    let g = ctx.graph.as_ref();
    let v = Values { prefix: &ctx.prefix };
    let f = v.adjuster()?;
    ensure!(g.role_summary(&f.role).await?.is_none());
    g.write(&f.role, StepOutput::RoleSetup(&f.setup)).await?;
    ensure!(g.role_summary(&f.role).await? == Some(RoleSummary::default()), "a new role counts nothing");
    write_all(g, &f).await?;
    let summary = g.role_summary(&f.role).await?.context("no summary")?;
    let mut by_key = f.assessment.tasks.clone();
    by_key.sort_by(|a, b| a.key.cmp(&b.key));
    let mean = by_key.iter().map(|t| t.confidence).sum::<f64>() / 6.0;
    let want = RoleSummary {
        tasks: 6,
        top_tasks: 3,
        skills: 5,
        skill_clusters: 2,
        catalog_entries: 5,
        reskilling_paths: 2,
        mean_confidence: mean,
    };
    ensure!(summary == want, "{summary:?} != {want:?}");
    ensure!((summary.mean_confidence - 0.85).abs() < 1e-9);
    let b = v.underwriter()?;
    write_all(g, &b).await?;
    let sb = g.role_summary(&b.role).await?.context("no summary")?;
    ensure!(
        (sb.tasks, sb.top_tasks, sb.skills, sb.skill_clusters, sb.catalog_entries, sb.reskilling_paths)
            == (2, 1, 3, 1, 1, 1)
    );
    Ok(())
}

/// A caller that gives up on a read (an activity cancelled, a client gone, a ping past its
/// deadline) leaves the connection it used in a state where the next reader gets its own answer,
/// not the abandoned one's.
async fn reads_abandoned_midway_leave_later_answers_exact(ctx: Ctx) -> Result<()> {
    let g = ctx.graph.as_ref();
    let v = Values { prefix: &ctx.prefix };
    let (a, b) = (v.adjuster()?, v.underwriter()?);
    write_all(g, &a).await?;
    write_all(g, &b).await?;
    let (want_a, want_b) = (expected(&a, true), expected(&b, true));
    for round in 0..60_u64 {
        // Cut off after 0 to 5 ms: some reads before they begin, some while rows stream.
        let cut = std::time::Duration::from_micros((round * 97) % 5000);
        let _ = tokio::time::timeout(cut, g.role_outputs(&a.role)).await;
        let _ = tokio::time::timeout(cut, g.snapshot(&SnapshotScope::Role(b.role.clone()))).await;
        let _ = tokio::time::timeout(cut, g.ping()).await;
        ensure!(outputs(g, &b.role).await? == want_b, "round {round}: another role's answer for b");
        ensure!(outputs(g, &a.role).await? == want_a, "round {round}: another role's answer for a");
    }
    Ok(())
}

async fn concurrent_writes_of_two_roles_do_not_interfere(ctx: Ctx) -> Result<()> {
    let v = Values { prefix: &ctx.prefix };
    let (a, b) = (Arc::new(v.adjuster()?), Arc::new(v.underwriter()?));
    // Several rounds, so the shared skill and standard-task nodes are merged concurrently
    // both on creation and on update.
    for _ in 0..3 {
        let mut tasks = Vec::new();
        for f in [a.clone(), b.clone(), a.clone(), b.clone()] {
            let graph = ctx.graph.clone();
            tasks.push(tokio::spawn(async move { write_all(graph.as_ref(), &f).await }));
        }
        for t in tasks {
            t.await??;
        }
    }
    let g = ctx.graph.as_ref();
    ensure!(outputs(g, &a.role).await? == expected(&a, true));
    ensure!(outputs(g, &b.role).await? == expected(&b, true));
    let s = snapshot(g, SnapshotScope::Company(a.setup.company.clone())).await?;
    ensure!(count_nodes(&s, Label::Skill) == 8 && count_nodes(&s, Label::Task) == 8, "{s}");
    ensure!(g.company_roles(&a.setup.company).await?.len() == 2);
    Ok(())
}

async fn bad_references_and_outputs_are_rejected_atomically(ctx: Ctx) -> Result<()> {
    let g = ctx.graph.as_ref();
    let v = Values { prefix: &ctx.prefix };
    let f = v.adjuster()?;

    // Nothing before role_setup.
    let err = g.write(&f.role, StepOutput::Assessment(&f.assessment)).await.err().context("wrote before setup")?;
    ensure!(matches!(err, GraphError::MissingReference { step: "ai_assessment", .. }) && !err.is_retryable(), "{err}");
    ensure!(g.set_visible(&f.role, true).await.is_err(), "finalize of an unknown role");

    write_all(g, &f).await?;
    let scope = SnapshotScope::Role(f.role.clone());
    let before = snapshot(g, scope.clone()).await?;

    // A top task that is not a task of the role: the whole write is rolled back, including
    // the delete of the existing top tasks that came first in the transaction.
    let top = TopTasks { ranked: vec![f.assessment.tasks[1].key.clone(), Key::of("Pay claims")] };
    let err = g.write(&f.role, StepOutput::TopTasks(&top)).await.err().context("accepted an unknown task")?;
    ensure!(matches!(err, GraphError::MissingReference { step: "step_executor", .. }), "{err}");
    ensure!(err.to_string().contains("pay-claims"), "the error names what is missing: {err}");
    ensure_same(&before, &snapshot(g, scope.clone()).await?, "a rejected write")?;

    // A span citing a document the role does not link.
    let mut assessment = f.assessment.clone();
    assessment.tasks[0].source.document = v.doc("someone-elses-document");
    let err = g.write(&f.role, StepOutput::Assessment(&assessment)).await.err().context("accepted an unlinked span")?;
    ensure!(matches!(err, GraphError::MissingReference { .. }), "{err}");

    // A catalog entry for a skill the role does not require.
    let catalog = SkillsCatalog {
        entries: vec![CatalogEntry { skill: v.skill_key("Welding"), proficiency: 2, description: "No.".into() }],
    };
    ensure!(matches!(
        g.write(&f.role, StepOutput::SkillsCatalog(&catalog)).await,
        Err(GraphError::MissingReference { .. })
    ));

    // Malformed outputs never reach the store.
    let mut assessment = f.assessment.clone();
    assessment.tasks[0].automation = 1.5;
    let err = g.write(&f.role, StepOutput::Assessment(&assessment)).await.err().context("accepted a score of 1.5")?;
    ensure!(matches!(err, GraphError::InvalidOutput(_)) && !err.is_retryable(), "{err}");
    let mut assessment = f.assessment.clone();
    assessment.tasks[1].key = assessment.tasks[0].key.clone();
    ensure!(matches!(g.write(&f.role, StepOutput::Assessment(&assessment)).await, Err(GraphError::InvalidOutput(_))));
    let other = v.underwriter()?;
    ensure!(matches!(g.write(&f.role, StepOutput::RoleSetup(&other.setup)).await, Err(GraphError::InvalidOutput(_))));

    ensure_same(&before, &snapshot(g, scope).await?, "rejected writes")?;
    Ok(())
}

async fn deleting_a_role_leaves_the_others(ctx: Ctx) -> Result<()> {
    let g = ctx.graph.as_ref();
    let v = Values { prefix: &ctx.prefix };
    let (a, b) = (v.adjuster()?, v.underwriter()?);
    write_all(g, &a).await?;
    write_all(g, &b).await?;
    let b_before = snapshot(g, SnapshotScope::Role(b.role.clone())).await?;

    g.delete_role(&a.role).await?;
    g.delete_role(&a.role).await?;
    ensure!(g.role_outputs(&a.role).await?.is_none());
    ensure!(snapshot(g, SnapshotScope::Role(a.role.clone())).await? == Snapshot::default());
    ensure_same(&b_before, &snapshot(g, SnapshotScope::Role(b.role.clone())).await?, "the other role")?;
    let roles = g.company_roles(&a.setup.company).await?;
    ensure!(roles.len() == 1 && roles.iter().all(|r| r.role_id == b.role), "{roles:?}");

    g.delete_company(&a.setup.company).await?;
    ensure!(g.role_outputs(&b.role).await?.is_none());
    ensure!(g.company_roles(&a.setup.company).await?.is_empty());
    ensure!(snapshot(g, SnapshotScope::Company(a.setup.company.clone())).await? == Snapshot::default());
    Ok(())
}

/// The same writes give the same graph in both implementations.
#[tokio::test]
async fn backends_agree() -> Result<()> {
    let prefix = unique_prefix();
    let result = async {
        let v = Values { prefix: &prefix };
        let (a, b) = (v.adjuster()?, v.underwriter()?);
        let mut snapshots = Vec::new();
        for kind in [Kind::Embedded, Kind::Neo4j] {
            let g = open(kind, &prefix).await?;
            write_all(g.as_ref(), &a).await?;
            write_all(g.as_ref(), &b).await?;
            snapshots.push(snapshot(g.as_ref(), SnapshotScope::Company(a.setup.company.clone())).await?);
        }
        match snapshots.as_slice() {
            [embedded, neo4j] => ensure_same(embedded, neo4j, "embedded (before) vs neo4j (after)"),
            _ => bail!("expected two snapshots"),
        }
    }
    .await;
    let cleaned = (clean_up(Kind::Embedded, &prefix).await, clean_up(Kind::Neo4j, &prefix).await);
    result?;
    cleaned.0?;
    cleaned.1
}
