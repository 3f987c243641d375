//! The offline provider: the AI steps' outputs derived from the documents' text by deterministic
//! rules, with no network. It is the embedded default and the tests' provider, so its outputs are
//! meant to be *plausible and traceable*, not clever:
//!
//! - **tasks** are the items (bullets, numbered lines, list paragraphs) of task-like sections
//!   (Responsibilities, Duties, What you will do, process-map steps), or — when a document has
//!   none — its sentences that start with a task verb; each cites its exact bytes;
//! - **scores** come from [`lexicon::TASK_SIGNALS`]: the mean of the signals a task contains, its
//!   leading verb counting double; **confidence** drops for short, vague or unrecognised tasks;
//! - **skills** are the items of skill sections, the skills named in requirements (after "experience
//!   with", "knowledge of", …), and known skill terms in task statements; each cites its bytes;
//! - **clusters** are the categories of [`lexicon::SKILL_TERMS`]; **proficiency** comes from the
//!   wording of the skill's line ("expert", "strong", "familiarity", years of experience);
//! - **top tasks**, **standard names**, **reskilling paths** and **feasibility** are computed from
//!   those, as each function below says.
//!
//! Two rule sets stand in for two models, so that re-running a step with another model can be
//! seen and compared offline: `offline` (the rules above) and `offline-cautious` (the same
//! extraction, with every task's automation and augmentation drawn a quarter of the way toward 0.5
//! and every task's and skill's confidence 0.1 lower; what follows from those — top tasks,
//! feasibility, review flags — follows).
//!
//! Token usage is estimated (4 characters a token) from the prompt the OpenAI-compatible provider
//! would send and from the output, so metering and budgets work offline too.

mod lexicon;
mod text;

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;

use lexicon::{
    CLAUSE_BREAKS, Category, DETERMINERS, LEAD_INS, LEVELS, NUMBERS, PROFICIENCY, SKILL_TERMS, STANDARD_VERBS,
    TASK_SIGNALS, VAGUE, find_term,
};
use text::{Item, SectionKind};

use super::{
    Completion, DocumentTexts, LlmError, LlmProvider, TokenUsage,
    calls::{self, StepCall, collapse, push_cluster},
    estimate_tokens,
};
use etter_core::ids::RoleName;
use etter_core::outputs::{
    Assessment, CatalogEntry, ContentHash, Feasibility, Key, MinedSkills, Reskilling, ReskillingPath, Score, Skill,
    SkillsArchitecture, SkillsCatalog, SourceSpan, Standardization, StandardizedTask, Task, TaskFeasibility, TopTasks,
};

/// The rule-based provider. Stateless: the same inputs always give the same outputs.
#[derive(Debug, Clone, Copy, Default)]
pub struct OfflineProvider {
    model: OfflineModel,
}

/// The offline provider's rule sets, each named as a model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum OfflineModel {
    /// `offline`: the rules as the module describes them.
    #[default]
    Rules,
    /// `offline-cautious`: the same rules, with scores drawn toward the middle and less confidence.
    Cautious,
}

impl OfflineModel {
    const ALL: [OfflineModel; 2] = [OfflineModel::Rules, OfflineModel::Cautious];

    fn name(self) -> &'static str {
        match self {
            OfflineModel::Rules => "offline",
            OfflineModel::Cautious => "offline-cautious",
        }
    }

    fn temper_tasks(self, assessment: &mut Assessment) {
        if self == OfflineModel::Cautious {
            for task in &mut assessment.tasks {
                task.automation = round2(0.5 + (task.automation - 0.5) * 0.75);
                task.augmentation = round2(0.5 + (task.augmentation - 0.5) * 0.75);
                task.confidence = round2((task.confidence - 0.1).max(0.1));
            }
        }
    }

    fn temper_skills(self, skills: &mut MinedSkills) {
        if self == OfflineModel::Cautious {
            for skill in &mut skills.skills {
                skill.confidence = round2((skill.confidence - 0.1).max(0.1));
            }
        }
    }
}

impl OfflineProvider {
    /// The provider with its default rules (model `offline`).
    pub fn new() -> Self {
        Self::default()
    }

    /// The names of the offline provider's models.
    pub fn models() -> Vec<&'static str> {
        OfflineModel::ALL.iter().map(|m| m.name()).collect()
    }
}

/// Wraps an output with the usage the same call would have cost a model.
fn completion<C: StepCall>(call: &C, output: C::Output) -> Result<Completion<C::Output>, LlmError> {
    let prompt = call.prompt();
    let usage = TokenUsage {
        input_tokens: estimate_tokens(&prompt.system) + estimate_tokens(&prompt.user),
        output_tokens: estimate_tokens(&serde_json::to_string(&output).unwrap_or_default()),
    };
    Ok(Completion { output, usage, discarded: Vec::new() })
}

#[async_trait]
impl LlmProvider for OfflineProvider {
    fn name(&self) -> &'static str {
        "offline"
    }

    fn model(&self) -> &str {
        self.model.name()
    }

    fn with_model(&self, model: &str) -> Result<std::sync::Arc<dyn LlmProvider>, LlmError> {
        let model =
            OfflineModel::ALL.into_iter().find(|m| m.name() == model).ok_or_else(|| LlmError::UnknownModel {
                model: model.to_owned(),
                available: OfflineProvider::models().into_iter().map(str::to_owned).collect(),
            })?;
        Ok(std::sync::Arc::new(OfflineProvider { model }))
    }

    async fn assess(&self, role: &RoleName, documents: &DocumentTexts) -> Result<Completion<Assessment>, LlmError> {
        let mut output = assess(documents);
        self.model.temper_tasks(&mut output);
        completion(&calls::Assess { role, documents }, output)
    }

    async fn top_tasks(&self, role: &RoleName, assessment: &Assessment) -> Result<Completion<TopTasks>, LlmError> {
        completion(&calls::RankTasks { role, assessment }, top_tasks(assessment))
    }

    async fn standardize(
        &self,
        role: &RoleName,
        assessment: &Assessment,
        top_tasks: &TopTasks,
    ) -> Result<Completion<Standardization>, LlmError> {
        completion(&calls::Standardize { role, assessment, top_tasks }, standardize(assessment, top_tasks))
    }

    async fn mine_skills(
        &self,
        role: &RoleName,
        documents: &DocumentTexts,
        assessment: &Assessment,
    ) -> Result<Completion<MinedSkills>, LlmError> {
        let mut output = mine_skills(documents);
        self.model.temper_skills(&mut output);
        completion(&calls::MineSkills { role, documents, assessment }, output)
    }

    async fn architect_skills(
        &self,
        role: &RoleName,
        skills: &MinedSkills,
    ) -> Result<Completion<SkillsArchitecture>, LlmError> {
        completion(&calls::ArchitectSkills { role, skills }, architect(skills))
    }

    async fn catalog(
        &self,
        role: &RoleName,
        documents: &DocumentTexts,
        skills: &MinedSkills,
        architecture: &SkillsArchitecture,
    ) -> Result<Completion<SkillsCatalog>, LlmError> {
        let output = catalog(role, documents, skills, architecture);
        completion(&calls::Catalog { role, documents, skills, architecture }, output)
    }

    async fn reskilling(
        &self,
        role: &RoleName,
        assessment: &Assessment,
        skills: &MinedSkills,
        catalog: &SkillsCatalog,
    ) -> Result<Completion<Reskilling>, LlmError> {
        completion(&calls::Reskill { role, assessment, skills, catalog }, reskilling(assessment, skills, catalog))
    }

    async fn feasibility(
        &self,
        role: &RoleName,
        assessment: &Assessment,
    ) -> Result<Completion<TaskFeasibility>, LlmError> {
        completion(&calls::AssessFeasibility { role, assessment }, feasibility(assessment))
    }
}

// ---- shared helpers -----------------------------------------------------------------------------

/// Two decimals: scores stay readable and comparisons exact across runs.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A cited text as a name: Markdown emphasis and code marks dropped, whitespace collapsed.
fn clean_name(text: &str) -> String {
    collapse(&text.replace("**", "").replace("__", "").replace('`', ""))
}

/// The byte offset of `part` (a subslice of `whole`) in `whole`.
fn offset_in(whole: &str, part: &str) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

/// Every document's items of one section kind, in hash order then text order.
fn section_items<'d>(documents: &'d DocumentTexts, kinds: &[SectionKind]) -> Vec<(&'d ContentHash, &'d str, Item)> {
    documents
        .iter()
        .flat_map(|(hash, text)| text::items(text).into_iter().map(move |item| (hash, text, item)))
        .filter(|(_, _, item)| kinds.contains(&item.section))
        .collect()
}

// ---- ai_assessment ------------------------------------------------------------------------------

/// What the lexicon says about a task statement.
struct TaskScore {
    automation: Score,
    augmentation: Score,
    confidence: Score,
    /// The signal words found, in text order.
    signals: Vec<String>,
}

/// Scores a task statement by its signals (see the module docs).
fn score_task(name: &str) -> TaskScore {
    let lower = name.to_ascii_lowercase();
    let first_word_end = lower.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).unwrap_or(lower.len());
    let mut hits: Vec<(usize, usize, f64, f64)> = Vec::new();
    for &(term, automation, augmentation) in TASK_SIGNALS {
        if let Some(&(start, end)) = find_term(name, term).first() {
            hits.push((start, end, automation, augmentation));
        }
    }
    hits.sort_by_key(|&(start, end, ..)| (start, end));
    let leads = hits.first().is_some_and(|&(start, ..)| start < first_word_end.max(1));
    let (mut weight, mut automation, mut augmentation) = (0.0, 0.0, 0.0);
    for (i, &(_, _, a, g)) in hits.iter().enumerate() {
        let w = if i == 0 && leads { 2.0 } else { 1.0 };
        weight += w;
        automation += w * a;
        augmentation += w * g;
    }
    let words = name.split_whitespace().count();
    let mut confidence: f64 = 0.9;
    if hits.is_empty() {
        confidence -= 0.3;
    } else if !leads {
        confidence -= 0.1;
    }
    if words < 3 {
        confidence -= 0.35;
    } else if !(5..=30).contains(&words) {
        // Short statements say little; very long ones bundle several tasks.
        confidence -= 0.1;
    }
    if VAGUE.iter().any(|v| !find_term(name, v).is_empty()) {
        confidence -= 0.3;
    }
    let (automation, augmentation) =
        if weight > 0.0 { (automation / weight, augmentation / weight) } else { (0.4, 0.6) };
    TaskScore {
        automation: round2(automation),
        augmentation: round2(augmentation),
        confidence: round2(confidence.clamp(0.1, 0.95)),
        signals: hits.iter().filter_map(|&(start, end, ..)| lower.get(start..end)).map(str::to_owned).collect(),
    }
}

/// The tasks of the documents' task sections (or, lacking any, their imperative sentences).
fn assess(documents: &DocumentTexts) -> Assessment {
    let mut found = section_items(documents, &[SectionKind::Tasks]);
    if found.is_empty() {
        let verbs: Vec<&str> = STANDARD_VERBS.iter().map(|(verb, _)| *verb).collect();
        found = documents
            .iter()
            .flat_map(|(hash, text)| {
                text::imperative_sentences(text, &verbs).into_iter().map(move |item| (hash, text, item))
            })
            .collect();
    }
    let mut seen = BTreeSet::new();
    let mut tasks = Vec::new();
    for (hash, _, item) in found {
        let Some(source) = documents.span(hash, item.start, item.end) else { continue };
        let name = clean_name(&source.text);
        let key = Key::of(&name);
        if key.0.is_empty() || !seen.insert(key.clone()) {
            continue;
        }
        let score = score_task(&name);
        tasks.push(Task {
            key,
            name,
            automation: score.automation,
            augmentation: score.augmentation,
            confidence: score.confidence,
            source,
        });
    }
    Assessment { tasks }
}

// ---- step_executor (top tasks) ------------------------------------------------------------------

/// The tasks most changed by AI, weighted by how sure the assessment is: score = confidence ×
/// max(automation, augmentation); the best half, at least three and at most ten, ties in document
/// order.
fn top_tasks(assessment: &Assessment) -> TopTasks {
    let mut scored: Vec<(f64, usize, &Key)> = assessment
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.confidence * t.automation.max(t.augmentation), i, &t.key))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let n = scored.len();
    let keep = n.div_ceil(2).max(n.min(3)).min(10);
    TopTasks { ranked: scored.into_iter().take(keep).map(|(_, _, key)| key.clone()).collect() }
}

// ---- standardization ----------------------------------------------------------------------------

/// A task's standard name: its leading verb mapped through [`STANDARD_VERBS`], and its object up
/// to the first clause break, without determiners, singular.
fn standard_name(name: &str) -> String {
    let words: Vec<&str> = name.split_whitespace().collect();
    let bare = |w: &str| w.trim_matches(|c: char| !c.is_alphanumeric() && c != '-').to_ascii_lowercase();
    let verb_of = |w: &str| STANDARD_VERBS.iter().find(|(v, _)| *v == bare(w)).map(|(_, s)| *s);
    let Some(verb) = words.first().and_then(|w| verb_of(w)) else {
        return collapse(name);
    };
    // Skip coordinated verbs: "Design, build and maintain backend services".
    let mut next = 1;
    let mut joined = words[0].ends_with(',');
    while let Some(w) = words.get(next) {
        if matches!(bare(w).as_str(), "and" | "or") {
            joined = true;
        } else if joined && verb_of(w).is_some() {
            joined = w.ends_with(',');
        } else {
            break;
        }
        next += 1;
    }
    let mut object: Vec<String> = Vec::new();
    let mut previous_was_and = false;
    for w in words.iter().skip(next) {
        let b = bare(w);
        if CLAUSE_BREAKS.contains(&b.as_str()) || object.len() >= 6 {
            break;
        }
        // "… reports and contact claimants": a second verb starts a second task.
        if previous_was_and && verb_of(w).is_some() {
            object.pop();
            break;
        }
        previous_was_and = b == "and" || b == "or";
        if !DETERMINERS.contains(&b.as_str()) {
            let word = w.trim_end_matches([',', ';', ':', '.']);
            object.push(singular(word));
        }
        // "Verify policy coverage, limits, …" ends at the comma; "Write unit, integration and
        // property-based tests" does not (one word is not yet an object).
        if w.ends_with([',', ';', ':']) && !previous_was_and && object.len() >= 2 {
            break;
        }
    }
    while object.last().is_some_and(|w| matches!(w.to_ascii_lowercase().as_str(), "and" | "or")) {
        object.pop();
    }
    if object.is_empty() { verb.to_owned() } else { format!("{verb} {}", object.join(" ")) }
}

/// A plural noun's singular, by the common English rules; other words unchanged.
fn singular(word: &str) -> String {
    let lower = word.to_ascii_lowercase();
    if lower.len() <= 3 || !lower.ends_with('s') || ["ss", "us", "is", "ics", "'s"].iter().any(|e| lower.ends_with(e)) {
        word.to_owned()
    } else if lower.ends_with("ies") {
        format!("{}y", &word[..word.len() - 3])
    } else if lower.ends_with("ches") || lower.ends_with("shes") || lower.ends_with("xes") {
        word[..word.len() - 2].to_owned()
    } else {
        word[..word.len() - 1].to_owned()
    }
}

/// Standard names of the top tasks.
fn standardize(assessment: &Assessment, top_tasks: &TopTasks) -> Standardization {
    let by_key: BTreeMap<&Key, &Task> = assessment.tasks.iter().map(|t| (&t.key, t)).collect();
    let tasks = top_tasks
        .ranked
        .iter()
        .filter_map(|key| by_key.get(key))
        .map(|t| StandardizedTask { task: t.key.clone(), standard_name: standard_name(&t.name) })
        .collect();
    Standardization { tasks }
}

// ---- skills_miner -------------------------------------------------------------------------------

/// Collects skills, first occurrence of a key wins.
struct SkillSet<'d> {
    documents: &'d DocumentTexts,
    seen: BTreeSet<Key>,
    skills: Vec<Skill>,
}

impl SkillSet<'_> {
    fn add(&mut self, hash: &ContentHash, start: usize, end: usize, confidence: Score) {
        let Some(source) = self.documents.span(hash, start, end) else { return };
        let name = clean_name(&source.text);
        let key = Key::of(&name);
        if !key.0.is_empty() && self.seen.insert(key.clone()) {
            self.skills.push(Skill { key, name, confidence: round2(confidence), source });
        }
    }

    /// Whether a known skill already names this term ("negotiation" within "Negotiation and
    /// conflict resolution"): a second, narrower skill would only repeat it.
    fn covers(&self, term: &str) -> bool {
        let term = term.to_ascii_lowercase();
        self.skills.iter().any(|s| s.name.to_ascii_lowercase().contains(&term))
    }

    /// Known skill terms in `[start, end)` of a document.
    fn add_terms(&mut self, hash: &ContentHash, text: &str, start: usize, end: usize, confidence: Score) {
        let Some(body) = text.get(start..end) else { return };
        let mut hits: Vec<(usize, usize)> = SKILL_TERMS.iter().flat_map(|(term, _)| find_term(body, term)).collect();
        // Longest first at each position, so "written communication" beats "communication".
        hits.sort_by_key(|&(s, e)| (s, std::cmp::Reverse(e)));
        let mut covered_to = 0;
        for (s, e) in hits {
            if s < covered_to || self.covers(&body[s..e]) {
                continue;
            }
            covered_to = e;
            self.add(hash, start + s, start + e, confidence);
        }
    }
}

/// The skill a requirement names after its lead-in ("Experience with *a CRM*"), as sub-slices of
/// the requirement: one, several for a list ("customer success, account management or
/// consulting"), or none when the requirement names no short skill.
fn requirement_skills(requirement: &str) -> Vec<&str> {
    let mut rest = requirement.trim();
    loop {
        let lower = rest.to_ascii_lowercase();
        let lead = LEAD_INS.iter().find(|l| lower.starts_with(*l) && lower[l.len()..].starts_with(' '));
        if let Some(lead) = lead {
            rest = rest[lead.len()..].trim_start();
            continue;
        }
        match years_lead_in(rest) {
            Some(after) => rest = after,
            None => break,
        }
    }
    if rest.len() == requirement.trim().len() {
        return Vec::new();
    }
    let lower = rest.to_ascii_lowercase();
    let cut = [" such as ", " including ", " e.g", " (", " within ", " at least ", " for "]
        .iter()
        .filter_map(|m| lower.find(m))
        .min()
        .unwrap_or(rest.len());
    let mut phrase = rest[..cut].trim_end_matches([' ', ',', '.', ';']);
    for suffix in [" skills", " skill"] {
        if phrase.to_ascii_lowercase().ends_with(suffix) {
            phrase = &phrase[..phrase.len() - suffix.len()];
        }
    }
    let phrase = phrase.strip_prefix("a ").or_else(|| phrase.strip_prefix("an ")).unwrap_or(phrase);
    if phrase.is_empty() || phrase.split_whitespace().count() > 6 {
        return Vec::new();
    }
    if !phrase.contains(',') {
        return vec![phrase];
    }
    let parts: Vec<&str> = phrase
        .split(',')
        .flat_map(|p| p.split(" or "))
        .flat_map(|p| p.split(" and "))
        .map(|p| p.trim().trim_start_matches("or ").trim_start_matches("and ").trim())
        .filter(|p| !p.is_empty())
        .collect();
    if parts.iter().all(|p| p.split_whitespace().count() <= 4) { parts } else { vec![phrase] }
}

/// The text after a years-of-experience lead-in ("Three or more years in", "5+ years of
/// experience with"), when the requirement starts with one.
fn years_lead_in(text: &str) -> Option<&str> {
    let lower = text.to_ascii_lowercase();
    let first = lower.split_whitespace().next()?;
    let is_number = first.trim_end_matches('+').bytes().all(|b| b.is_ascii_digit())
        || NUMBERS.iter().any(|(word, _)| *word == first);
    if !is_number {
        return None;
    }
    let years = lower.find(" years ")?;
    let mut after = years + " years ".len();
    for filler in ["of experience ", "experience ", "of "] {
        if lower[after..].starts_with(filler) {
            after += filler.len();
        }
    }
    ["in ", "with "].iter().find(|p| lower[after..].starts_with(*p)).map(|p| text[after + p.len()..].trim_start())
}

/// The skills of skill sections (whole items), requirements (the skills they name) and task
/// statements (known skill terms), in that order of trust.
fn mine_skills(documents: &DocumentTexts) -> MinedSkills {
    let mut set = SkillSet { documents, seen: BTreeSet::new(), skills: Vec::new() };
    for (hash, text, item) in section_items(documents, &[SectionKind::Skills]) {
        let words = text[item.start..item.end].split_whitespace().count();
        let confidence = if words > 12 { 0.6 } else { 0.85 };
        set.add(hash, item.start, item.end, confidence);
    }
    for (hash, text, item) in section_items(documents, &[SectionKind::Requirements]) {
        let confidence = if item.optional { 0.55 } else { 0.7 };
        let requirement = &text[item.start..item.end];
        let named = requirement_skills(requirement);
        if named.is_empty() {
            set.add_terms(hash, text, item.start, item.end, confidence - 0.05);
        }
        for skill in named {
            let start = item.start + offset_in(requirement, skill);
            if !set.covers(skill) {
                set.add(hash, start, start + skill.len(), confidence);
            }
        }
    }
    for (hash, text, item) in section_items(documents, &[SectionKind::Tasks]) {
        set.add_terms(hash, text, item.start, item.end, 0.6);
    }
    MinedSkills { skills: set.skills }
}

// ---- skills_architecture ------------------------------------------------------------------------

/// A skill's category: that of the first known term in its name (the longest at a tie), else
/// domain knowledge.
fn category_of(name: &str) -> Category {
    SKILL_TERMS
        .iter()
        .filter_map(|(term, category)| {
            find_term(name, term).first().map(|&(s, e)| (s, std::cmp::Reverse(e), *category))
        })
        .min()
        .map_or(Category::Domain, |(_, _, category)| category)
}

/// One cluster per category that has skills, in category order.
fn architect(skills: &MinedSkills) -> SkillsArchitecture {
    let mut clusters = Vec::new();
    for category in Category::ALL {
        let members =
            skills.skills.iter().filter(|s| category_of(&s.name) == category).map(|s| s.key.clone()).collect();
        push_cluster(&mut clusters, Key::of(category.name()), category.name().to_owned(), members);
    }
    SkillsArchitecture { clusters }
}

// ---- skills_catalog -----------------------------------------------------------------------------

/// How much of a skill a line asks for: the strongest [`PROFICIENCY`] wording, or years of
/// experience, else `default`; optional skills ask for at most working knowledge.
fn proficiency(line: &str, optional: bool, default: u8) -> u8 {
    let worded = PROFICIENCY.iter().filter(|(term, _)| !find_term(line, term).is_empty()).map(|(_, p)| *p).max();
    let years = years_of(line).map(|y| match y {
        0..=2 => 2,
        3..=4 => 3,
        5..=6 => 4,
        _ => 5,
    });
    let level = worded.max(years).unwrap_or(default).clamp(1, 5);
    if optional { level.min(2) } else { level }
}

/// "5+ years", "three or more years": the number of years a line asks for.
fn years_of(line: &str) -> Option<u32> {
    let lower = line.to_ascii_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    let at = words.iter().position(|w| w.trim_end_matches([',', '.']) == "years")?;
    words[..at].iter().rev().find_map(|w| {
        let w = w.trim_end_matches('+');
        w.parse().ok().or_else(|| NUMBERS.iter().find(|(word, _)| *word == w).map(|(_, n)| *n))
    })
}

/// The line of a document a span starts on, and the item (with its section) it belongs to.
fn context<'d>(documents: &'d DocumentTexts, span: &SourceSpan) -> Option<(&'d str, Option<Item>)> {
    let text = documents.get(&span.document)?;
    let at = span.start as usize;
    let line_start = text.get(..at)?.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text.get(at..)?.find('\n').map_or(text.len(), |i| at + i);
    let item = text::items(text).into_iter().find(|i| i.start <= at && at < i.end.max(i.start + 1));
    Some((text.get(line_start..line_end)?.trim(), item))
}

/// `SQL (Technology and tools), at advanced level for the Data Analyst: "5+ years of SQL"` —
/// the line is quoted only when it says more than the skill's name.
fn describe(name: &str, cluster: &str, level: &str, role: &RoleName, line: &str) -> String {
    let line = clean_name(line.trim_start_matches(['-', '*', '•', '#', ' ']));
    let mut description = format!("{name} ({cluster}), at {level} level for the {role}");
    if line != name {
        description.push_str(&format!(": \"{line}\""));
    }
    description
}

/// Proficiency from the wording of each skill's line; the description says where it comes from.
fn catalog(
    role: &RoleName,
    documents: &DocumentTexts,
    skills: &MinedSkills,
    architecture: &SkillsArchitecture,
) -> SkillsCatalog {
    let cluster_of: BTreeMap<&Key, &str> =
        architecture.clusters.iter().flat_map(|c| c.skills.iter().map(move |k| (k, c.name.as_str()))).collect();
    let entries = skills
        .skills
        .iter()
        .map(|skill| {
            let (line, item) = context(documents, &skill.source).unwrap_or((skill.source.text.as_str(), None));
            let optional = item.as_ref().is_some_and(|i| i.optional);
            // A skill inferred from a task statement is asked for less explicitly than a listed one.
            let default = if item.as_ref().is_some_and(|i| i.section == SectionKind::Tasks) { 2 } else { 3 };
            let level = proficiency(line, optional, default);
            let level_name = LEVELS.get(usize::from(level) - 1).copied().unwrap_or("proficient");
            let cluster = cluster_of.get(&skill.key).copied().unwrap_or("unclustered");
            CatalogEntry {
                skill: skill.key.clone(),
                proficiency: level,
                description: describe(&skill.name, cluster, level_name, role, line),
            }
        })
        .collect();
    SkillsCatalog { entries }
}

// ---- reskilling ---------------------------------------------------------------------------------

/// Word stems that tie a skill to a task ("Negotiation…" ↔ "Negotiate settlements…"): the first
/// five letters of each longer, meaningful word.
fn stems(text: &str) -> BTreeSet<String> {
    const GENERIC: &[&str] = &[
        "knowledge",
        "experience",
        "skills",
        "ability",
        "strong",
        "clear",
        "across",
        "after",
        "under",
        "pressure",
        "their",
        "other",
        "which",
        "about",
        "senior",
        "within",
        "every",
        "management",
    ];
    text.split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|w| w.chars().count() >= 5 && !GENERIC.contains(&w.as_str()))
        .map(|w| w.chars().take(5).collect())
        .collect()
}

/// Paths from the skills whose tasks are most automatable to skills that grow where AI augments
/// the work: a skill's exposure is the mean automation of the tasks sharing a word stem with it
/// (else its category's default); the most exposed third of the skills (at most five, exposure at
/// least 0.4) start paths, each ending at a skill of a growth category (communication, analysis,
/// management) at least 0.1 less exposed — preferring the start's growth categories, then the
/// higher proficiency; each end is used at most twice.
fn reskilling(assessment: &Assessment, skills: &MinedSkills, catalog: &SkillsCatalog) -> Reskilling {
    let proficiency: BTreeMap<&Key, u8> = catalog.entries.iter().map(|e| (&e.skill, e.proficiency)).collect();
    let task_stems: Vec<(BTreeSet<String>, &Task)> = assessment.tasks.iter().map(|t| (stems(&t.name), t)).collect();
    struct Exposure<'a> {
        skill: &'a Skill,
        category: Category,
        exposure: f64,
        via: Option<&'a Task>,
    }
    let exposures: Vec<Exposure<'_>> = skills
        .skills
        .iter()
        .map(|skill| {
            let own = stems(&skill.name);
            let related: Vec<&Task> =
                task_stems.iter().filter(|(s, _)| !s.is_disjoint(&own)).map(|(_, t)| *t).collect();
            let category = category_of(&skill.name);
            let exposure = if related.is_empty() {
                category.exposure()
            } else {
                round2(related.iter().map(|t| t.automation).sum::<f64>() / related.len() as f64)
            };
            let via = related.into_iter().max_by(|a, b| a.automation.total_cmp(&b.automation));
            Exposure { skill, category, exposure, via }
        })
        .collect();
    // Exposure is relative: what matters is which of *this role's* skills AI presses hardest.
    let mut starts: Vec<&Exposure<'_>> = exposures.iter().filter(|e| e.exposure >= 0.4).collect();
    starts.sort_by(|a, b| b.exposure.total_cmp(&a.exposure).then(a.skill.key.cmp(&b.skill.key)));
    starts.truncate(exposures.len().div_ceil(3).min(5));
    let growing =
        |e: &&Exposure<'_>| matches!(e.category, Category::Communication | Category::Analysis | Category::Management);
    let ends: Vec<&Exposure<'_>> = exposures.iter().filter(growing).collect();
    let mut used: BTreeMap<&Key, usize> = BTreeMap::new();
    let mut paths = Vec::new();
    for start in starts {
        let growth = start.category.growth();
        let rank = |e: &Exposure<'_>| {
            let preference = growth.iter().position(|c| *c == e.category).unwrap_or(growth.len());
            let level = proficiency.get(&e.skill.key).copied().unwrap_or(0);
            (preference, std::cmp::Reverse(level), e.skill.key.clone())
        };
        let end = ends
            .iter()
            .filter(|e| {
                e.skill.key != start.skill.key
                    && e.exposure + 0.1 <= start.exposure
                    && used.get(&e.skill.key).copied().unwrap_or(0) < 2
            })
            .min_by_key(|e| rank(e));
        let Some(end) = end else { continue };
        *used.entry(&end.skill.key).or_default() += 1;
        let why = match start.via {
            Some(task) => format!("tasks such as \"{}\" are {:.0}% automatable", task.name, task.automation * 100.0),
            None => format!("{} work is among the most automatable", start.category.name().to_lowercase()),
        };
        paths.push(ReskillingPath {
            from_skill: start.skill.key.clone(),
            to_skill: end.skill.key.clone(),
            rationale: format!(
                "{}: {why}, while {} grows in value where AI augments the role.",
                start.skill.name, end.skill.name
            ),
        });
    }
    Reskilling { paths }
}

// ---- task_feasibility ---------------------------------------------------------------------------

/// Feasibility now = automation × (0.6 + 0.4 × confidence): automatable work is feasible to the
/// degree the assessment is sure of it; the rationale names the signals behind the score.
fn feasibility(assessment: &Assessment) -> TaskFeasibility {
    let tasks = assessment
        .tasks
        .iter()
        .map(|task| {
            let feasibility = round2((task.automation * (0.6 + 0.4 * task.confidence)).clamp(0.0, 1.0));
            let kind = if feasibility >= 0.6 {
                "routine information work that current AI tools can largely do"
            } else if feasibility >= 0.35 {
                "a mix of routine steps and judgement: AI can take parts of it"
            } else {
                "work that rests on judgement, presence or trust: AI assists more than it replaces"
            };
            let signals = score_task(&task.name).signals;
            let because = if signals.is_empty() {
                "no known signal words, so the estimate is uncertain".to_owned()
            } else {
                format!("signals: {}", signals.iter().take(3).map(String::as_str).collect::<Vec<_>>().join(", "))
            };
            Feasibility { task: task.key.clone(), feasibility, rationale: format!("{kind} ({because}).") }
        })
        .collect();
    TaskFeasibility { tasks }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_names_use_the_verb_table_and_drop_clauses() {
        assert_eq!(
            standard_name("Review first notice of loss reports and contact claimants within one business day"),
            "Review first notice of loss report"
        );
        assert_eq!(
            standard_name("Design, build and maintain backend services in Rust and Go"),
            "Design backend service"
        );
        assert_eq!(
            standard_name("Set and adjust claim reserves as new information becomes available"),
            "Set claim reserve"
        );
        assert_eq!(
            standard_name("Run quarterly business reviews with customer executives"),
            "Conduct quarterly business review"
        );
        assert_eq!(standard_name("Verify policy coverage, limits, deductibles"), "Verify policy coverage");
        assert_eq!(standard_name("Synergy"), "Synergy");
    }

    #[test]
    fn requirements_name_their_skills() {
        assert_eq!(
            requirement_skills("Three or more years in customer success, account management or consulting"),
            ["customer success", "account management", "consulting"]
        );
        assert_eq!(requirement_skills("Experience with payment schemes such as Visa"), ["payment schemes"]);
        assert_eq!(requirement_skills("Knowledge of double-entry bookkeeping"), ["double-entry bookkeeping"]);
        assert_eq!(requirement_skills("Strong communication skills"), ["communication"]);
        assert!(requirement_skills("A valid driver's license and a clean driving record").is_empty());
    }

    #[test]
    fn scores_follow_the_lexicon() {
        let routine = score_task("Record the loss report from the phone line");
        let human = score_task("Negotiate settlements with claimants, attorneys and repair shops");
        assert!(routine.automation > 0.7 && human.automation < 0.3, "{} {}", routine.automation, human.automation);
        assert!(score_task("Other duties as assigned").confidence < crate::REVIEW_BELOW);
        assert_eq!(proficiency("Expert knowledge of SQL", false, 3), 5);
        assert_eq!(proficiency("5+ years with Python", false, 3), 4);
        assert_eq!(proficiency("Familiarity with Go", false, 3), 1);
        assert_eq!(proficiency("Strong SQL", true, 3), 2);
    }
}
