//! What a step produced, as a person compares it: one [`OutputItem`] per thing (a task with its
//! scores, a skill, a document with its content hash), kept with the step's record in the run
//! store so two runs of a role can be compared after the role graph moved on, and the reasons the
//! step's output deserves a review.
//!
//! The role graph holds a role's current outputs only (each run replaces what the run before
//! wrote); a [`StepDigest`] is the per-run memory of them, small (names and scores, no cited text)
//! and enough for [`diff`]: what was added, removed, or changed its name or scores.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::outputs::{
    Assessment, MinedSkills, Reskilling, Score, SkillsArchitecture, SkillsCatalog, Standardization, TaskFeasibility,
    TopTasks,
};

/// What kind of thing an [`OutputItem`] is (one per step that produces things).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// A document of the role (`document_linking`), with its content hash.
    Document,
    /// A task (`ai_assessment`): scores `automation`, `augmentation`, `confidence`.
    Task,
    /// A top task (`step_executor`): score `rank`, 1 first.
    TopTask,
    /// A task's standard name (`standardization`).
    StandardName,
    /// A skill (`skills_miner`): score `confidence`.
    Skill,
    /// A skill cluster (`skills_architecture`): score `skills`, how many it groups.
    SkillCluster,
    /// A skills catalog entry (`skills_catalog`): score `proficiency`, 1–5.
    CatalogEntry,
    /// A reskilling path (`reskilling`), keyed `from->to`.
    ReskillingPath,
    /// A task's feasibility (`task_feasibility`): score `feasibility`.
    Feasibility,
}

/// One thing a step produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputItem {
    /// What it is.
    pub kind: OutputKind,
    /// Its stable key within the role: the same thing in two runs has the same key.
    pub key: String,
    /// Its name as the step wrote it.
    pub name: String,
    /// Its scores by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scores: BTreeMap<String, f64>,
    /// A document's content hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
}

impl OutputItem {
    fn new(kind: OutputKind, key: &str, name: &str) -> Self {
        Self { kind, key: key.to_owned(), name: name.to_owned(), scores: BTreeMap::new(), content_hash: None }
    }

    fn score(mut self, name: &str, value: f64) -> Self {
        self.scores.insert(name.to_owned(), value);
        self
    }

    /// Whether `other` (the same thing in another run) differs in name, scores or content.
    /// Scores within a millionth are equal: they went through floating point and JSON.
    pub fn differs_from(&self, other: &OutputItem) -> bool {
        self.name != other.name
            || self.content_hash != other.content_hash
            || self.scores.len() != other.scores.len()
            || self.scores.iter().any(|(name, value)| other.scores.get(name).is_none_or(|o| (o - value).abs() > 1e-6))
    }
}

/// What one step produced, and why it deserves a review: kept with the step's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepDigest {
    /// Everything the step produced, in the step's order.
    pub items: Vec<OutputItem>,
    /// Why the output deserves a person's look (empty: it does not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub review: Vec<String>,
}

impl StepDigest {
    /// The digest of an output; `names` name what it refers to by key (tasks, skills).
    pub fn of(output: &impl Digestible, names: &Names) -> Self {
        Self { items: output.items(names), review: Vec::new() }
    }

    /// The documents a role links: `(uri, type, content hash)`.
    pub fn documents<'a>(documents: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) -> Self {
        let items = documents
            .into_iter()
            .map(|(uri, doc_type, hash)| OutputItem {
                content_hash: Some(hash.to_owned()),
                ..OutputItem::new(OutputKind::Document, uri, doc_type)
            })
            .collect();
        Self { items, review: Vec::new() }
    }

    /// Adds the reasons for review: the items scored `confidence` below `below`, then `more`.
    pub fn with_review(mut self, below: Score, more: impl IntoIterator<Item = String>) -> Self {
        for item in &self.items {
            if let Some(confidence) = item.scores.get("confidence")
                && *confidence < below
            {
                let what = match item.kind {
                    OutputKind::Skill => "skill",
                    _ => "task",
                };
                self.review.push(format!("{what} \"{}\" has confidence {confidence:.2}, below {below:.2}", item.name));
            }
        }
        self.review.extend(more);
        self
    }

    /// Whether the output deserves a person's look.
    pub fn needs_review(&self) -> bool {
        !self.review.is_empty()
    }
}

/// The names of a role's tasks and skills by key, for the outputs that refer to them by key only
/// (top tasks, standard names, catalog entries, reskilling paths, feasibility): a person reads
/// "Review claims", not `review-claims`. A key without a name is shown as itself.
#[derive(Debug, Clone, Default)]
pub struct Names {
    tasks: BTreeMap<String, String>,
    skills: BTreeMap<String, String>,
}

impl Names {
    /// The names of the tasks of `assessment` and the skills of `skills`.
    pub fn new(assessment: Option<&Assessment>, skills: Option<&MinedSkills>) -> Self {
        Self {
            tasks: assessment.iter().flat_map(|a| &a.tasks).map(|t| (t.key.0.clone(), t.name.clone())).collect(),
            skills: skills.iter().flat_map(|s| &s.skills).map(|s| (s.key.0.clone(), s.name.clone())).collect(),
        }
    }

    fn task<'a>(&'a self, key: &'a str) -> &'a str {
        self.tasks.get(key).map_or(key, String::as_str)
    }

    fn skill<'a>(&'a self, key: &'a str) -> &'a str {
        self.skills.get(key).map_or(key, String::as_str)
    }
}

/// A step output that can be told as [`OutputItem`]s.
pub trait Digestible {
    /// The output's items, in its order, named with `names` where the output has keys only.
    fn items(&self, names: &Names) -> Vec<OutputItem>;
}

impl Digestible for Assessment {
    fn items(&self, _: &Names) -> Vec<OutputItem> {
        self.tasks
            .iter()
            .map(|t| {
                OutputItem::new(OutputKind::Task, &t.key.0, &t.name)
                    .score("automation", t.automation)
                    .score("augmentation", t.augmentation)
                    .score("confidence", t.confidence)
            })
            .collect()
    }
}

impl Digestible for TopTasks {
    fn items(&self, names: &Names) -> Vec<OutputItem> {
        (1..)
            .zip(&self.ranked)
            .map(|(rank, key)| {
                OutputItem::new(OutputKind::TopTask, &key.0, names.task(&key.0)).score("rank", f64::from(rank))
            })
            .collect()
    }
}

impl Digestible for Standardization {
    fn items(&self, _: &Names) -> Vec<OutputItem> {
        self.tasks.iter().map(|t| OutputItem::new(OutputKind::StandardName, &t.task.0, &t.standard_name)).collect()
    }
}

impl Digestible for MinedSkills {
    fn items(&self, _: &Names) -> Vec<OutputItem> {
        self.skills
            .iter()
            .map(|s| OutputItem::new(OutputKind::Skill, &s.key.0, &s.name).score("confidence", s.confidence))
            .collect()
    }
}

impl Digestible for SkillsArchitecture {
    fn items(&self, _: &Names) -> Vec<OutputItem> {
        self.clusters
            .iter()
            .map(|c| {
                OutputItem::new(OutputKind::SkillCluster, &c.key.0, &c.name).score("skills", c.skills.len() as f64)
            })
            .collect()
    }
}

impl Digestible for SkillsCatalog {
    fn items(&self, names: &Names) -> Vec<OutputItem> {
        self.entries
            .iter()
            .map(|e| {
                OutputItem::new(OutputKind::CatalogEntry, &e.skill.0, names.skill(&e.skill.0))
                    .score("proficiency", f64::from(e.proficiency))
            })
            .collect()
    }
}

impl Digestible for Reskilling {
    fn items(&self, names: &Names) -> Vec<OutputItem> {
        self.paths
            .iter()
            .map(|p| {
                let key = format!("{}->{}", p.from_skill.0, p.to_skill.0);
                let name = format!("{} → {}", names.skill(&p.from_skill.0), names.skill(&p.to_skill.0));
                OutputItem::new(OutputKind::ReskillingPath, &key, &name)
            })
            .collect()
    }
}

impl Digestible for TaskFeasibility {
    fn items(&self, names: &Names) -> Vec<OutputItem> {
        self.tasks
            .iter()
            .map(|f| {
                OutputItem::new(OutputKind::Feasibility, &f.task.0, names.task(&f.task.0))
                    .score("feasibility", f.feasibility)
            })
            .collect()
    }
}

/// How the items of one step differ between a base run and another run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemDiff {
    /// In the other run only.
    pub added: Vec<OutputItem>,
    /// In the base run only.
    pub removed: Vec<OutputItem>,
    /// In both, differing: (base, other).
    pub changed: Vec<(OutputItem, OutputItem)>,
}

impl ItemDiff {
    /// Nothing differs.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The difference between two runs' items of a step, matched by kind and key. `added` and
/// `changed` follow `other`'s order, `removed` the base's.
pub fn diff(base: &[OutputItem], other: &[OutputItem]) -> ItemDiff {
    let by_key = |items: &[OutputItem]| -> BTreeMap<(OutputKind, String), usize> {
        items.iter().enumerate().map(|(i, item)| ((item.kind, item.key.clone()), i)).collect()
    };
    let (base_keys, other_keys) = (by_key(base), by_key(other));
    let mut out = ItemDiff::default();
    for item in other {
        match base_keys.get(&(item.kind, item.key.clone())) {
            None => out.added.push(item.clone()),
            Some(&i) if base[i].differs_from(item) => out.changed.push((base[i].clone(), item.clone())),
            Some(_) => {}
        }
    }
    out.removed =
        base.iter().filter(|item| !other_keys.contains_key(&(item.kind, item.key.clone()))).cloned().collect();
    out
}

/// The leading tasks of a run: its top tasks in rank order with the assessment's names and scores
/// (and `rank`), or, without a ranking, the assessed tasks by automation score; at most `limit`.
pub fn leading_tasks(assessment: &[OutputItem], top_tasks: Option<&[OutputItem]>, limit: usize) -> Vec<OutputItem> {
    let tasks: BTreeMap<&str, &OutputItem> =
        assessment.iter().filter(|i| i.kind == OutputKind::Task).map(|i| (i.key.as_str(), i)).collect();
    match top_tasks {
        Some(ranked) if !ranked.is_empty() => ranked
            .iter()
            .filter_map(|top| {
                let task = tasks.get(top.key.as_str())?;
                let mut item = (*task).clone();
                item.scores.extend(top.scores.iter().map(|(k, v)| (k.clone(), *v)));
                Some(item)
            })
            .take(limit)
            .collect(),
        _ => {
            let mut all: Vec<&OutputItem> = tasks.into_values().collect();
            let automation = |i: &OutputItem| i.scores.get("automation").copied().unwrap_or(0.0);
            all.sort_by(|a, b| automation(b).total_cmp(&automation(a)).then_with(|| a.key.cmp(&b.key)));
            all.into_iter().take(limit).cloned().collect()
        }
    }
}

/// The leading skills of a run by confidence, at most `limit`.
pub fn leading_skills(skills: &[OutputItem], limit: usize) -> Vec<OutputItem> {
    let mut all: Vec<&OutputItem> = skills.iter().filter(|i| i.kind == OutputKind::Skill).collect();
    let confidence = |i: &OutputItem| i.scores.get("confidence").copied().unwrap_or(0.0);
    all.sort_by(|a, b| confidence(b).total_cmp(&confidence(a)).then_with(|| a.key.cmp(&b.key)));
    all.into_iter().take(limit).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::{ContentHash, Key, Skill, SourceSpan, Task};

    fn span() -> SourceSpan {
        SourceSpan { document: ContentHash("h".into()), start: 0, end: 1, text: "x".into() }
    }

    fn task(name: &str, automation: f64, confidence: f64) -> Task {
        Task { key: Key::of(name), name: name.into(), automation, augmentation: 0.5, confidence, source: span() }
    }

    #[test]
    fn a_diff_names_what_was_added_removed_and_rescored() {
        let before = Assessment { tasks: vec![task("Review claims", 0.4, 0.9), task("File reports", 0.7, 0.8)] };
        let after = Assessment { tasks: vec![task("Review claims", 0.6, 0.9), task("Call customers", 0.2, 0.7)] };
        let none = Names::default();
        let d = diff(&before.items(&none), &after.items(&none));
        assert_eq!(d.added.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["Call customers"]);
        assert_eq!(d.removed.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["File reports"]);
        assert_eq!(d.changed.len(), 1);
        let (was, now) = &d.changed[0];
        assert_eq!((was.scores["automation"], now.scores["automation"]), (0.4, 0.6));
        assert!(diff(&before.items(&none), &before.items(&none)).is_empty());
    }

    #[test]
    fn a_digest_survives_json_and_small_float_noise_is_no_change() -> Result<(), serde_json::Error> {
        let digest =
            StepDigest::of(&Assessment { tasks: vec![task("Review claims", 0.1 + 0.2, 0.3)] }, &Names::default())
                .with_review(0.5, ["an item was dropped".to_owned()]);
        let back: StepDigest = serde_json::from_str(&serde_json::to_string(&digest)?)?;
        assert_eq!(back, digest);
        let mut nudged = back.items[0].clone();
        *nudged.scores.entry("automation".into()).or_default() += 1e-9;
        assert!(!nudged.differs_from(&digest.items[0]));
        Ok(())
    }

    #[test]
    fn review_reasons_name_low_confidence_items_first() {
        let skills = MinedSkills {
            skills: vec![
                Skill { key: Key::of("SQL"), name: "SQL".into(), confidence: 0.3, source: span() },
                Skill { key: Key::of("Excel"), name: "Excel".into(), confidence: 0.8, source: span() },
            ],
        };
        let none = Names::default();
        let digest = StepDigest::of(&skills, &none).with_review(0.5, ["the answer had 1 item dropped".to_owned()]);
        assert_eq!(digest.review, ["skill \"SQL\" has confidence 0.30, below 0.50", "the answer had 1 item dropped"]);
        assert!(digest.needs_review());
        assert!(!StepDigest::of(&skills, &none).needs_review());
    }

    #[test]
    fn leading_tasks_follow_the_ranking_and_else_automation() {
        let tasks = Assessment { tasks: vec![task("Review claims", 0.4, 0.9), task("File reports", 0.7, 0.8)] };
        let names = Names::new(Some(&tasks), None);
        let assessment = tasks.items(&names);
        let top = TopTasks { ranked: vec![Key::of("Review claims")] }.items(&names);
        assert_eq!(top[0].name, "Review claims", "a top task is named as its task");
        let ranked = leading_tasks(&assessment, Some(&top), 10);
        assert_eq!(ranked.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["Review claims"]);
        assert_eq!(ranked[0].scores["rank"], 1.0);
        let unranked = leading_tasks(&assessment, None, 1);
        assert_eq!(unranked.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["File reports"]);
    }
}
