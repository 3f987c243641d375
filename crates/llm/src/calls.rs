//! One [`StepCall`] per AI step: the prompt, the JSON Schema of the answer, and the validation
//! that turns a model's answer into the step's output. The OpenAI-compatible provider sends the
//! prompt and validates the answer; the offline provider builds the same prompt to estimate tokens.
//!
//! What a model returns is not what [`etter_core::outputs`] stores: the model names a document and
//! quotes it, and this module finds the quote to compute the span; the model names tasks and
//! skills, and keys are derived here. Schemas are written by hand because OpenAI's strict mode
//! accepts a subset of JSON Schema (every property required, no additional properties).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use super::DocumentTexts;
use etter_core::ids::RoleName;
use etter_core::outputs::{
    Assessment, CatalogEntry, ContentHash, Feasibility, Key, MinedSkills, Reskilling, ReskillingPath, Score, Skill,
    SkillCluster, SkillsArchitecture, SkillsCatalog, Standardization, StandardizedTask, Task, TaskFeasibility,
    TopTasks,
};
use etter_core::steps::StepName;

/// The messages of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prompt {
    pub system: String,
    pub user: String,
}

/// A model's answer that passed validation, and the items dropped on the way.
#[derive(Debug)]
pub(crate) struct Validated<T> {
    pub output: T,
    pub discarded: Vec<String>,
}

/// One AI step as a structured completion.
pub(crate) trait StepCall: Sync {
    /// The answer as the model writes it.
    type Wire: DeserializeOwned;
    /// The step's output.
    type Output: Serialize + Send;
    /// The step the call serves; its name is the schema's name.
    const STEP: StepName;
    /// The JSON Schema of [`Self::Wire`].
    fn schema(&self) -> Value;
    /// The messages.
    fn prompt(&self) -> Prompt;
    /// Checks an answer and builds the output; `Err` says what makes the whole answer unusable.
    fn validate(&self, wire: Self::Wire) -> Result<Validated<Self::Output>, String>;
}

const SYSTEM: &str = "You analyse job roles for workforce planning: what work a role does, how AI changes it, and \
which skills it needs. Answer with JSON that matches the given schema and nothing else. Ground every item in \
the documents: `document` is the hash printed in the document's header, and `quote` is text copied exactly \
from that document (one line or sentence, not paraphrased). Scores are numbers from 0 to 1.";

// ---- schema helpers -------------------------------------------------------------------------

fn object(properties: &[(&str, Value)]) -> Value {
    let required: Vec<&str> = properties.iter().map(|(name, _)| *name).collect();
    let properties: serde_json::Map<String, Value> =
        properties.iter().map(|(name, schema)| ((*name).to_owned(), schema.clone())).collect();
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

fn array(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn score(description: &str) -> Value {
    json!({"type": "number", "minimum": 0, "maximum": 1, "description": description})
}

// ---- prompt helpers -------------------------------------------------------------------------

fn role_line(role: &RoleName) -> String {
    format!("Role: {role}\n\n")
}

fn documents_block(documents: &DocumentTexts) -> String {
    let mut out = String::new();
    for (hash, text) in documents.iter() {
        out.push_str(&format!("=== document {} ===\n{}\n=== end of document {} ===\n\n", hash.0, text, hash.0));
    }
    out
}

#[derive(Serialize)]
struct TaskView<'a> {
    key: &'a str,
    name: &'a str,
    automation: Score,
    augmentation: Score,
}

fn tasks_block(assessment: &Assessment) -> String {
    let view: Vec<TaskView<'_>> = assessment
        .tasks
        .iter()
        .map(|t| TaskView { key: &t.key.0, name: &t.name, automation: t.automation, augmentation: t.augmentation })
        .collect();
    format!("Tasks (JSON):\n{}\n\n", serde_json::to_string(&view).unwrap_or_default())
}

fn skills_block(skills: &MinedSkills) -> String {
    let view: Vec<BTreeMap<&str, &str>> =
        skills.skills.iter().map(|s| BTreeMap::from([("key", s.key.0.as_str()), ("name", s.name.as_str())])).collect();
    format!("Skills (JSON):\n{}\n\n", serde_json::to_string(&view).unwrap_or_default())
}

// ---- validation helpers ---------------------------------------------------------------------

/// `name` with runs of whitespace collapsed to one space.
pub(crate) fn collapse(name: &str) -> String {
    name.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn check_score(path: &str, value: f64) -> Result<Score, String> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{path} = {value} is not in [0, 1]"))
    }
}

/// Keys of a set of things, for checking the keys an answer names.
fn key_set<'a>(keys: impl Iterator<Item = &'a Key>) -> BTreeSet<Key> {
    keys.cloned().collect()
}

/// A key an answer names, if it is one of `known` and not yet used. Models sometimes write a name
/// instead of its key; slugging maps both to the key.
fn known_key(
    what: &str,
    named: &str,
    known: &BTreeSet<Key>,
    used: &mut BTreeSet<Key>,
    discarded: &mut Vec<String>,
) -> Option<Key> {
    let key = Key::of(named);
    if !known.contains(&key) {
        discarded.push(format!("{what} `{named}` names nothing known"));
        None
    } else if !used.insert(key.clone()) {
        discarded.push(format!("{what} `{named}` appears twice"));
        None
    } else {
        Some(key)
    }
}

/// A grounded, named item (task or skill): its key, name and span, or why it was dropped.
fn ground(
    documents: &DocumentTexts,
    what: &str,
    name: &str,
    document: &str,
    quote: &str,
    used: &mut BTreeSet<Key>,
    discarded: &mut Vec<String>,
) -> Option<(Key, String, etter_core::outputs::SourceSpan)> {
    let name = collapse(name);
    let key = Key::of(&name);
    if key.0.is_empty() {
        discarded.push(format!("{what} `{name}` has no name"));
        return None;
    }
    let Some(span) = documents.locate(Some(&ContentHash(document.to_owned())), quote) else {
        discarded.push(format!("{what} `{name}`: its quote `{quote}` is not in the documents"));
        return None;
    };
    if !used.insert(key.clone()) {
        discarded.push(format!("{what} `{name}` appears twice"));
        return None;
    }
    Some((key, name, span))
}

/// Refuses an answer whose every item was dropped: nothing of it is usable, and asking again may
/// give a grounded answer.
fn none_grounded(what: &str, offered: usize, kept: usize, discarded: &[String]) -> Result<(), String> {
    if offered > 0 && kept == 0 {
        let first = discarded.first().map(String::as_str).unwrap_or_default();
        return Err(format!("none of the {offered} {what} is grounded in the documents (first: {first})"));
    }
    Ok(())
}

// ---- ai_assessment ----------------------------------------------------------------------------

/// `ai_assessment`.
pub(crate) struct Assess<'a> {
    pub role: &'a RoleName,
    pub documents: &'a DocumentTexts,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireAssessment {
    tasks: Vec<WireTask>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireTask {
    name: String,
    automation: f64,
    augmentation: f64,
    confidence: f64,
    document: String,
    quote: String,
}

impl StepCall for Assess<'_> {
    type Wire = WireAssessment;
    type Output = Assessment;
    const STEP: StepName = StepName::AiAssessment;

    fn schema(&self) -> Value {
        object(&[(
            "tasks",
            array(object(&[
                ("name", string("the task, as the document states it")),
                ("automation", score("how much of the task AI could do alone")),
                ("augmentation", score("how much AI could help a person doing the task")),
                ("confidence", score("how sure you are of this task and its scores")),
                ("document", string("hash of the document the task is from")),
                ("quote", string("the exact text of the document the task is from")),
            ])),
        )])
    }

    fn prompt(&self) -> Prompt {
        Prompt {
            system: SYSTEM.to_owned(),
            user: format!(
                "{}List the tasks this role performs, from its responsibilities, duties and process steps. \
                 For each, score automation and augmentation and say how confident you are (low for vague \
                 or ambiguous statements).\n\n{}",
                role_line(self.role),
                documents_block(self.documents)
            ),
        }
    }

    fn validate(&self, wire: WireAssessment) -> Result<Validated<Assessment>, String> {
        let (mut used, mut discarded, mut tasks) = (BTreeSet::new(), Vec::new(), Vec::new());
        for (i, t) in wire.tasks.iter().enumerate() {
            let automation = check_score(&format!("tasks[{i}].automation"), t.automation)?;
            let augmentation = check_score(&format!("tasks[{i}].augmentation"), t.augmentation)?;
            let confidence = check_score(&format!("tasks[{i}].confidence"), t.confidence)?;
            if let Some((key, name, source)) =
                ground(self.documents, "task", &t.name, &t.document, &t.quote, &mut used, &mut discarded)
            {
                tasks.push(Task { key, name, automation, augmentation, confidence, source });
            }
        }
        none_grounded("tasks", wire.tasks.len(), tasks.len(), &discarded)?;
        Ok(Validated { output: Assessment { tasks }, discarded })
    }
}

// ---- step_executor (top tasks) ------------------------------------------------------------------

/// `step_executor`.
pub(crate) struct RankTasks<'a> {
    pub role: &'a RoleName,
    pub assessment: &'a Assessment,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireTopTasks {
    ranked: Vec<String>,
}

impl StepCall for RankTasks<'_> {
    type Wire = WireTopTasks;
    type Output = TopTasks;
    const STEP: StepName = StepName::StepExecutor;

    fn schema(&self) -> Value {
        object(&[("ranked", array(string("a task's key")))])
    }

    fn prompt(&self) -> Prompt {
        Prompt {
            system: SYSTEM.to_owned(),
            user: format!(
                "{}Rank the tasks that matter most for this role and for how AI changes it, best first; \
                 at most ten. Answer with the tasks' keys.\n\n{}",
                role_line(self.role),
                tasks_block(self.assessment)
            ),
        }
    }

    fn validate(&self, wire: WireTopTasks) -> Result<Validated<TopTasks>, String> {
        let known = key_set(self.assessment.tasks.iter().map(|t| &t.key));
        let (mut used, mut discarded) = (BTreeSet::new(), Vec::new());
        let ranked =
            wire.ranked.iter().filter_map(|k| known_key("task", k, &known, &mut used, &mut discarded)).collect();
        Ok(Validated { output: TopTasks { ranked }, discarded })
    }
}

// ---- standardization ----------------------------------------------------------------------------

/// `standardization`.
pub(crate) struct Standardize<'a> {
    pub role: &'a RoleName,
    pub assessment: &'a Assessment,
    pub top_tasks: &'a TopTasks,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireStandardization {
    tasks: Vec<WireStandardTask>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireStandardTask {
    task: String,
    standard_name: String,
}

impl StepCall for Standardize<'_> {
    type Wire = WireStandardization;
    type Output = Standardization;
    const STEP: StepName = StepName::Standardization;

    fn schema(&self) -> Value {
        object(&[(
            "tasks",
            array(object(&[
                ("task", string("the task's key")),
                ("standard_name", string("the task's name in a standard occupational task taxonomy")),
            ])),
        )])
    }

    fn prompt(&self) -> Prompt {
        let top: BTreeSet<&Key> = self.top_tasks.ranked.iter().collect();
        let tasks =
            Assessment { tasks: self.assessment.tasks.iter().filter(|t| top.contains(&t.key)).cloned().collect() };
        Prompt {
            system: SYSTEM.to_owned(),
            user: format!(
                "{}Give each of these top tasks its standard name: a short verb phrase (standard verb, \
                 generic object) as an occupational task taxonomy would write it.\n\n{}",
                role_line(self.role),
                tasks_block(&tasks)
            ),
        }
    }

    fn validate(&self, wire: WireStandardization) -> Result<Validated<Standardization>, String> {
        let known = key_set(self.top_tasks.ranked.iter());
        let (mut used, mut discarded, mut tasks) = (BTreeSet::new(), Vec::new(), Vec::new());
        for t in &wire.tasks {
            let standard_name = collapse(&t.standard_name);
            if standard_name.is_empty() {
                discarded.push(format!("task `{}` has an empty standard name", t.task));
                continue;
            }
            if let Some(task) = known_key("task", &t.task, &known, &mut used, &mut discarded) {
                tasks.push(StandardizedTask { task, standard_name });
            }
        }
        Ok(Validated { output: Standardization { tasks }, discarded })
    }
}

// ---- skills_miner -------------------------------------------------------------------------------

/// `skills_miner`.
pub(crate) struct MineSkills<'a> {
    pub role: &'a RoleName,
    pub documents: &'a DocumentTexts,
    pub assessment: &'a Assessment,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireSkills {
    skills: Vec<WireSkill>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSkill {
    name: String,
    confidence: f64,
    document: String,
    quote: String,
}

impl StepCall for MineSkills<'_> {
    type Wire = WireSkills;
    type Output = MinedSkills;
    const STEP: StepName = StepName::SkillsMiner;

    fn schema(&self) -> Value {
        object(&[(
            "skills",
            array(object(&[
                ("name", string("the skill, short (e.g. `Negotiation`, `Microsoft Excel`)")),
                ("confidence", score("how sure you are the role needs this skill")),
                ("document", string("hash of the document the skill is from")),
                ("quote", string("the exact text of the document that names or implies the skill")),
            ])),
        )])
    }

    fn prompt(&self) -> Prompt {
        Prompt {
            system: SYSTEM.to_owned(),
            user: format!(
                "{}List the skills this role needs, from its requirements and qualifications and from what \
                 its tasks demand. Name each skill briefly.\n\n{}{}",
                role_line(self.role),
                tasks_block(self.assessment),
                documents_block(self.documents)
            ),
        }
    }

    fn validate(&self, wire: WireSkills) -> Result<Validated<MinedSkills>, String> {
        let (mut used, mut discarded, mut skills) = (BTreeSet::new(), Vec::new(), Vec::new());
        for (i, s) in wire.skills.iter().enumerate() {
            let confidence = check_score(&format!("skills[{i}].confidence"), s.confidence)?;
            if let Some((key, name, source)) =
                ground(self.documents, "skill", &s.name, &s.document, &s.quote, &mut used, &mut discarded)
            {
                skills.push(Skill { key, name, confidence, source });
            }
        }
        none_grounded("skills", wire.skills.len(), skills.len(), &discarded)?;
        Ok(Validated { output: MinedSkills { skills }, discarded })
    }
}

// ---- skills_architecture ------------------------------------------------------------------------

/// `skills_architecture`.
pub(crate) struct ArchitectSkills<'a> {
    pub role: &'a RoleName,
    pub skills: &'a MinedSkills,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireArchitecture {
    clusters: Vec<WireCluster>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireCluster {
    name: String,
    skills: Vec<String>,
}

/// The cluster that takes the skills an answer left out, so every skill is in exactly one.
pub(crate) const OTHER_CLUSTER: &str = "Other skills";

impl StepCall for ArchitectSkills<'_> {
    type Wire = WireArchitecture;
    type Output = SkillsArchitecture;
    const STEP: StepName = StepName::SkillsArchitecture;

    fn schema(&self) -> Value {
        object(&[(
            "clusters",
            array(object(&[("name", string("the cluster's name")), ("skills", array(string("a skill's key")))])),
        )])
    }

    fn prompt(&self) -> Prompt {
        Prompt {
            system: SYSTEM.to_owned(),
            user: format!(
                "{}Group these skills into a few clusters of related skills. Every skill belongs to \
                 exactly one cluster; answer with the skills' keys.\n\n{}",
                role_line(self.role),
                skills_block(self.skills)
            ),
        }
    }

    fn validate(&self, wire: WireArchitecture) -> Result<Validated<SkillsArchitecture>, String> {
        let known = key_set(self.skills.skills.iter().map(|s| &s.key));
        let (mut used, mut discarded) = (BTreeSet::new(), Vec::new());
        let mut clusters: Vec<SkillCluster> = Vec::new();
        for c in &wire.clusters {
            let name = collapse(&c.name);
            let key = Key::of(&name);
            if key.0.is_empty() {
                discarded.push("a cluster has no name".to_owned());
                continue;
            }
            let members: Vec<Key> =
                c.skills.iter().filter_map(|s| known_key("skill", s, &known, &mut used, &mut discarded)).collect();
            push_cluster(&mut clusters, key, name, members);
        }
        let missing: Vec<Key> =
            self.skills.skills.iter().map(|s| s.key.clone()).filter(|k| !used.contains(k)).collect();
        if !missing.is_empty() {
            discarded.push(format!("{} skills were in no cluster and went to `{OTHER_CLUSTER}`", missing.len()));
            push_cluster(&mut clusters, Key::of(OTHER_CLUSTER), OTHER_CLUSTER.to_owned(), missing);
        }
        Ok(Validated { output: SkillsArchitecture { clusters }, discarded })
    }
}

/// Adds skills to a cluster, merging clusters of the same key; empty clusters are not kept.
pub(crate) fn push_cluster(clusters: &mut Vec<SkillCluster>, key: Key, name: String, skills: Vec<Key>) {
    if skills.is_empty() {
        return;
    }
    match clusters.iter_mut().find(|c| c.key == key) {
        Some(existing) => existing.skills.extend(skills),
        None => clusters.push(SkillCluster { key, name, skills }),
    }
}

// ---- skills_catalog -----------------------------------------------------------------------------

/// `skills_catalog`.
pub(crate) struct Catalog<'a> {
    pub role: &'a RoleName,
    pub documents: &'a DocumentTexts,
    pub skills: &'a MinedSkills,
    pub architecture: &'a SkillsArchitecture,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireCatalog {
    entries: Vec<WireEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEntry {
    skill: String,
    proficiency: i64,
    description: String,
}

impl StepCall for Catalog<'_> {
    type Wire = WireCatalog;
    type Output = SkillsCatalog;
    const STEP: StepName = StepName::SkillsCatalog;

    fn schema(&self) -> Value {
        object(&[(
            "entries",
            array(object(&[
                ("skill", string("the skill's key")),
                (
                    "proficiency",
                    json!({"type": "integer", "minimum": 1, "maximum": 5,
                           "description": "proficiency the role needs: 1 basic … 5 expert"}),
                ),
                ("description", string("what the skill means in this role, one sentence")),
            ])),
        )])
    }

    fn prompt(&self) -> Prompt {
        let clusters = serde_json::to_string(&self.architecture.clusters).unwrap_or_default();
        Prompt {
            system: SYSTEM.to_owned(),
            user: format!(
                "{}For every skill, say which proficiency the role needs (1 basic, 2 working knowledge, 3 \
                 proficient, 4 advanced, 5 expert; read the wording of the requirements) and what the skill \
                 means in this role.\n\n{}Clusters (JSON):\n{clusters}\n\n{}",
                role_line(self.role),
                skills_block(self.skills),
                documents_block(self.documents)
            ),
        }
    }

    fn validate(&self, wire: WireCatalog) -> Result<Validated<SkillsCatalog>, String> {
        let known = key_set(self.skills.skills.iter().map(|s| &s.key));
        let (mut used, mut discarded, mut entries) = (BTreeSet::new(), Vec::new(), Vec::new());
        for (i, e) in wire.entries.iter().enumerate() {
            let proficiency = u8::try_from(e.proficiency)
                .ok()
                .filter(|p| (1..=5).contains(p))
                .ok_or_else(|| format!("entries[{i}].proficiency = {} is not in 1..=5", e.proficiency))?;
            if let Some(skill) = known_key("skill", &e.skill, &known, &mut used, &mut discarded) {
                entries.push(CatalogEntry { skill, proficiency, description: collapse(&e.description) });
            }
        }
        for missing in known.difference(&used) {
            discarded.push(format!("skill `{}` has no catalog entry", missing.0));
        }
        Ok(Validated { output: SkillsCatalog { entries }, discarded })
    }
}

// ---- reskilling ---------------------------------------------------------------------------------

/// `reskilling`.
pub(crate) struct Reskill<'a> {
    pub role: &'a RoleName,
    pub assessment: &'a Assessment,
    pub skills: &'a MinedSkills,
    pub catalog: &'a SkillsCatalog,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireReskilling {
    paths: Vec<WirePath>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePath {
    from_skill: String,
    to_skill: String,
    rationale: String,
}

impl StepCall for Reskill<'_> {
    type Wire = WireReskilling;
    type Output = Reskilling;
    const STEP: StepName = StepName::Reskilling;

    fn schema(&self) -> Value {
        object(&[(
            "paths",
            array(object(&[
                ("from_skill", string("key of a skill whose work AI increasingly does")),
                ("to_skill", string("key of a skill that grows in value as AI augments the role")),
                ("rationale", string("why, in one sentence")),
            ])),
        )])
    }

    fn prompt(&self) -> Prompt {
        let catalog = serde_json::to_string(&self.catalog.entries).unwrap_or_default();
        Prompt {
            system: SYSTEM.to_owned(),
            user: format!(
                "{}Suggest reskilling paths for people in this role: from a skill whose tasks AI will \
                 increasingly automate, toward a skill that grows in value where AI augments the work. Use \
                 the skills' keys.\n\n{}{}Catalog (JSON):\n{catalog}\n\n",
                role_line(self.role),
                tasks_block(self.assessment),
                skills_block(self.skills)
            ),
        }
    }

    fn validate(&self, wire: WireReskilling) -> Result<Validated<Reskilling>, String> {
        let known = key_set(self.skills.skills.iter().map(|s| &s.key));
        let (mut seen, mut discarded, mut paths) = (BTreeSet::new(), Vec::new(), Vec::new());
        for p in &wire.paths {
            let (from_skill, to_skill) = (Key::of(&p.from_skill), Key::of(&p.to_skill));
            if !known.contains(&from_skill) || !known.contains(&to_skill) {
                discarded.push(format!("path `{}` → `{}` names an unknown skill", p.from_skill, p.to_skill));
            } else if from_skill == to_skill || !seen.insert((from_skill.clone(), to_skill.clone())) {
                discarded.push(format!("path `{}` → `{}` is circular or repeated", p.from_skill, p.to_skill));
            } else {
                paths.push(ReskillingPath { from_skill, to_skill, rationale: collapse(&p.rationale) });
            }
        }
        Ok(Validated { output: Reskilling { paths }, discarded })
    }
}

// ---- task_feasibility ---------------------------------------------------------------------------

/// `task_feasibility`.
pub(crate) struct AssessFeasibility<'a> {
    pub role: &'a RoleName,
    pub assessment: &'a Assessment,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireFeasibility {
    tasks: Vec<WireTaskFeasibility>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireTaskFeasibility {
    task: String,
    feasibility: f64,
    rationale: String,
}

impl StepCall for AssessFeasibility<'_> {
    type Wire = WireFeasibility;
    type Output = TaskFeasibility;
    const STEP: StepName = StepName::TaskFeasibility;

    fn schema(&self) -> Value {
        object(&[(
            "tasks",
            array(object(&[
                ("task", string("the task's key")),
                ("feasibility", score("how feasible automating the task is with today's AI")),
                ("rationale", string("why, in one sentence")),
            ])),
        )])
    }

    fn prompt(&self) -> Prompt {
        Prompt {
            system: SYSTEM.to_owned(),
            user: format!(
                "{}For every task, say how feasible automating it is now, with today's AI tools, and \
                 why.\n\n{}",
                role_line(self.role),
                tasks_block(self.assessment)
            ),
        }
    }

    fn validate(&self, wire: WireFeasibility) -> Result<Validated<TaskFeasibility>, String> {
        let known = key_set(self.assessment.tasks.iter().map(|t| &t.key));
        let (mut used, mut discarded, mut tasks) = (BTreeSet::new(), Vec::new(), Vec::new());
        for (i, t) in wire.tasks.iter().enumerate() {
            let feasibility = check_score(&format!("tasks[{i}].feasibility"), t.feasibility)?;
            if let Some(task) = known_key("task", &t.task, &known, &mut used, &mut discarded) {
                tasks.push(Feasibility { task, feasibility, rationale: collapse(&t.rationale) });
            }
        }
        Ok(Validated { output: TaskFeasibility { tasks }, discarded })
    }
}
