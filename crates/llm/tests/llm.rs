//! The LLM layer: the OpenAI-compatible provider against a local server speaking that API, the
//! offline provider against the document fixtures (expected tasks and skills, exact spans), and
//! the shared limiter under tokio's paused clock.

use std::{
    collections::{BTreeSet, VecDeque},
    num::NonZeroU32,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::post,
};
use etter_core::ids::RoleName;
use etter_core::outputs::{Assessment, ContentHash, Key, MinedSkills, SourceSpan};
use etter_llm::{
    DocumentTexts, Limiter, LimiterSettings, LlmError, LlmProvider, OfflineProvider, OpenAiProvider, OpenAiSettings,
    REVIEW_BELOW,
};
use serde_json::{Value, json};

// ---- fixtures -----------------------------------------------------------------------------------

/// The repository's testdata/documents, named without `..` (document URIs refuse it).
fn fixtures_dir() -> std::path::PathBuf {
    let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(std::path::Path::new("/"));
    crates.parent().unwrap_or(crates).join("testdata/documents")
}

/// A fixture job description with the tasks and skills its README lists verbatim: the offline
/// provider must find every one of them.
struct Fixture {
    file: &'static str,
    role: &'static str,
    tasks: &'static [&'static str],
    skills: &'static [&'static str],
}

const CUSTOMER_SUCCESS_MANAGER: Fixture = Fixture {
    file: "customer_success_manager_jd.md",
    role: "Customer Success Manager",
    tasks: &[
        "Onboard new customers and run kickoff meetings with their project teams",
        "Build success plans with measurable goals for each account",
        "Monitor product usage and account health scores in Gainsight",
        "Run quarterly business reviews with customer executives",
        "Identify expansion opportunities and hand qualified leads to account executives",
        "Manage renewals and forecast renewal risk for your portfolio",
        "Escalate product issues to support and engineering and follow them to resolution",
        "Gather customer feedback and share it with the product team",
        "Create training materials and run webinars for customer administrators",
    ],
    skills: &[
        "Relationship management with senior stakeholders",
        "Data analysis with spreadsheets and BI dashboards",
        "Presentation skills",
        "Project management",
        "Knowledge of SaaS subscription metrics such as churn, net revenue retention and ARR",
        "Experience with a CRM such as Salesforce or HubSpot",
        "Problem solving",
        "Written and verbal communication",
        // From the Requirements section, named after its lead-in.
        "account management",
        "customer success",
    ],
};

const SOFTWARE_ENGINEER: Fixture = Fixture {
    file: "software_engineer_jd.txt",
    role: "Software Engineer, Payments Platform",
    tasks: &[
        "Design, build and maintain backend services in Rust and Go",
        "Write unit, integration and property-based tests for new code",
        "Review pull requests from other engineers",
        "Design REST and gRPC APIs for internal and partner teams",
        "Operate services in production and take part in the on-call rotation",
        "Investigate incidents and write blameless postmortems",
        "Improve the performance and reliability of the ledger service",
        "Automate deployments with CI/CD pipelines",
        "Mentor junior engineers",
    ],
    skills: &[
        "Rust or Go programming",
        "Distributed systems design",
        "SQL and PostgreSQL",
        "Kubernetes and Docker",
        "Observability with Prometheus and OpenTelemetry",
        "Automated testing",
        "Git and code review",
        "Clear technical writing",
        // From "Nice to have".
        "double-entry bookkeeping",
    ],
};

/// Section headings (normalised) whose content tasks may cite, and skills may cite.
const TASK_SECTIONS: &[&str] = &["what you will do", "responsibilities"];
const SKILL_SECTIONS: &[&str] =
    &["what you will do", "responsibilities", "what you bring", "skills", "requirements", "nice to have"];

fn read_fixture(file: &str) -> Result<String> {
    std::fs::read_to_string(fixtures_dir().join(file)).with_context(|| format!("reading fixture {file}"))
}

fn hash(name: &str) -> ContentHash {
    ContentHash(format!("sha256-of-{name}"))
}

fn documents_of(fixture: &Fixture) -> Result<DocumentTexts> {
    let mut documents = DocumentTexts::new();
    documents.insert(hash(fixture.file), read_fixture(fixture.file)?);
    Ok(documents)
}

/// The heading of the section an offset is in, lowercase without Markdown marks: the last line
/// before it that is a Markdown heading or upper case (the fixtures' two heading styles).
fn section_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    before
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| {
            line.starts_with('#')
                || (line.chars().filter(|c| c.is_alphabetic()).count() > 3 && !line.chars().any(char::is_lowercase))
        })
        .map(|line| line.trim_start_matches('#').trim().to_lowercase())
}

/// A span is exact (`text[start..end] == span.text`) and lies in one of `sections`.
fn check_span(documents: &DocumentTexts, span: &SourceSpan, sections: &[&str]) -> Result<()> {
    let text = documents.get(&span.document).context("span cites an unknown document")?;
    let cited = text.get(span.start as usize..span.end as usize).context("span out of range")?;
    ensure!(cited == span.text, "span text {:?} is not the document's {:?}", span.text, cited);
    ensure!(documents.verify(span));
    let section = section_at(text, span.start as usize).unwrap_or_default();
    ensure!(sections.contains(&section.as_str()), "{:?} is in section {section:?}", span.text);
    Ok(())
}

fn keys_of<'a>(names: impl Iterator<Item = &'a str>) -> BTreeSet<Key> {
    names.map(Key::of).collect()
}

fn missing<'a>(expected: &[&'a str], found: &BTreeSet<Key>) -> Vec<&'a str> {
    expected.iter().copied().filter(|name| !found.contains(&Key::of(name))).collect()
}

// ---- offline provider ---------------------------------------------------------------------------

/// Every step of the offline provider over one role, checking the invariants each output promises.
async fn run_all_steps(role: &RoleName, documents: &DocumentTexts) -> Result<Outputs> {
    let llm: Arc<dyn LlmProvider> = Arc::new(OfflineProvider::new());
    let assessment = llm.assess(role, documents).await?;
    let top = llm.top_tasks(role, &assessment.output).await?;
    let standard = llm.standardize(role, &assessment.output, &top.output).await?;
    let skills = llm.mine_skills(role, documents, &assessment.output).await?;
    let architecture = llm.architect_skills(role, &skills.output).await?;
    let catalog = llm.catalog(role, documents, &skills.output, &architecture.output).await?;
    let reskilling = llm.reskilling(role, &assessment.output, &skills.output, &catalog.output).await?;
    let feasibility = llm.feasibility(role, &assessment.output).await?;

    let tasks = keys_of(assessment.output.tasks.iter().map(|t| t.key.0.as_str()));
    let skill_keys: BTreeSet<Key> = skills.output.skills.iter().map(|s| s.key.clone()).collect();
    for task in &assessment.output.tasks {
        for score in [task.automation, task.augmentation, task.confidence] {
            ensure!((0.0..=1.0).contains(&score), "{} has score {score}", task.name);
        }
    }
    ensure!(!top.output.ranked.is_empty() && top.output.ranked.len() <= 10);
    ensure!(top.output.ranked.iter().all(|k| tasks.contains(&Key(k.0.clone()))));
    ensure!(standard.output.tasks.len() == top.output.ranked.len());
    ensure!(standard.output.tasks.iter().all(|t| !t.standard_name.is_empty()));
    let mut clustered: Vec<&Key> = architecture.output.clusters.iter().flat_map(|c| &c.skills).collect();
    clustered.sort();
    ensure!(clustered.len() == skill_keys.len(), "every skill is in exactly one cluster");
    ensure!(clustered.into_iter().cloned().collect::<BTreeSet<_>>() == skill_keys);
    ensure!(catalog.output.entries.len() == skill_keys.len());
    ensure!(catalog.output.entries.iter().all(|e| (1..=5).contains(&e.proficiency) && !e.description.is_empty()));
    for path in &reskilling.output.paths {
        ensure!(skill_keys.contains(&path.from_skill) && skill_keys.contains(&path.to_skill));
        ensure!(path.from_skill != path.to_skill);
    }
    ensure!(feasibility.output.tasks.len() == assessment.output.tasks.len());
    ensure!(feasibility.output.tasks.iter().all(|f| (0.0..=1.0).contains(&f.feasibility) && !f.rationale.is_empty()));
    for usage in [assessment.usage, top.usage, standard.usage, skills.usage, architecture.usage, catalog.usage] {
        ensure!(usage.input_tokens > 0 && usage.output_tokens > 0, "offline usage is estimated: {usage:?}");
    }
    ensure!(reskilling.usage.total() > 0 && feasibility.usage.total() > 0);
    // Everything at once, to compare runs.
    let everything = format!(
        "{:?}{:?}{:?}{:?}{:?}{:?}{:?}{:?}",
        assessment, top, standard, skills, architecture, catalog, reskilling, feasibility
    );
    Ok(Outputs {
        assessment: assessment.output,
        skills: skills.output,
        paths: reskilling.output.paths.len(),
        everything,
    })
}

/// What the tests look at after [`run_all_steps`].
struct Outputs {
    assessment: Assessment,
    skills: MinedSkills,
    /// How many reskilling paths.
    paths: usize,
    /// Every output and usage, printed: equal strings mean equal runs.
    everything: String,
}

async fn offline_finds_the_fixture(fixture: &Fixture) -> Result<()> {
    let documents = documents_of(fixture)?;
    let role = RoleName::parse(fixture.role)?;
    let Outputs { assessment, skills, paths, .. } = run_all_steps(&role, &documents).await?;
    ensure!(paths > 0, "a job description gives reskilling paths");

    let task_keys = keys_of(assessment.tasks.iter().map(|t| t.name.as_str()));
    let skill_keys = keys_of(skills.skills.iter().map(|s| s.name.as_str()));
    ensure!(missing(fixture.tasks, &task_keys).is_empty(), "tasks not found: {:?}", missing(fixture.tasks, &task_keys));
    ensure!(
        missing(fixture.skills, &skill_keys).is_empty(),
        "skills not found: {:?} (found {:?})",
        missing(fixture.skills, &skill_keys),
        skill_keys
    );
    // Nothing from prose, benefits or the summary: every task is one of the listed ones.
    ensure!(assessment.tasks.len() == fixture.tasks.len(), "{} tasks", assessment.tasks.len());
    for task in &assessment.tasks {
        check_span(&documents, &task.source, TASK_SECTIONS)?;
        ensure!(task.confidence >= REVIEW_BELOW, "a clear task statement is confident: {task:?}");
    }
    for skill in &skills.skills {
        check_span(&documents, &skill.source, SKILL_SECTIONS)?;
    }
    Ok(())
}

#[tokio::test]
async fn offline_finds_the_markdown_fixture_tasks_and_skills() -> Result<()> {
    offline_finds_the_fixture(&CUSTOMER_SUCCESS_MANAGER).await
}

#[tokio::test]
async fn offline_finds_the_text_fixture_tasks_and_skills() -> Result<()> {
    offline_finds_the_fixture(&SOFTWARE_ENGINEER).await
}

#[tokio::test]
async fn offline_is_deterministic_and_depends_on_the_documents() -> Result<()> {
    let role = RoleName::parse("Customer Success Manager")?;
    let csm = documents_of(&CUSTOMER_SUCCESS_MANAGER)?;
    let first = run_all_steps(&role, &csm).await?.everything;
    let second = run_all_steps(&role, &csm).await?.everything;
    ensure!(first == second, "same input, same output");

    let engineer = documents_of(&SOFTWARE_ENGINEER)?;
    let Outputs { assessment: csm_tasks, skills: csm_skills, .. } = run_all_steps(&role, &csm).await?;
    let Outputs { assessment: se_tasks, skills: se_skills, .. } = run_all_steps(&role, &engineer).await?;
    let keys = |a: &Assessment| a.tasks.iter().map(|t| t.key.clone()).collect::<BTreeSet<_>>();
    ensure!(keys(&csm_tasks).is_disjoint(&keys(&se_tasks)), "different documents, different tasks");
    ensure!(csm_skills != se_skills);
    let (a, b) = (&csm_tasks.tasks, &se_tasks.tasks);
    let mean =
        |tasks: &[etter_core::outputs::Task]| tasks.iter().map(|t| t.automation).sum::<f64>() / tasks.len() as f64;
    ensure!((mean(a) - mean(b)).abs() > f64::EPSILON, "scores follow the text");

    // Editing one document changes what is derived from it, and both documents together give both.
    let text = read_fixture(CUSTOMER_SUCCESS_MANAGER.file)?;
    let mut edited = DocumentTexts::new();
    edited.insert(hash("edited"), text.replace("- Project management\n", "- Contract negotiation\n"));
    let edited_skills = run_all_steps(&role, &edited).await?.skills;
    let names = keys_of(edited_skills.skills.iter().map(|s| s.name.as_str()));
    ensure!(names.contains(&Key::of("Contract negotiation")) && !names.contains(&Key::of("Project management")));
    let mut both = csm.clone();
    both.insert(hash(SOFTWARE_ENGINEER.file), read_fixture(SOFTWARE_ENGINEER.file)?);
    let both_tasks = run_all_steps(&role, &both).await?.assessment;
    ensure!(both_tasks.tasks.len() == csm_tasks.tasks.len() + se_tasks.tasks.len());
    Ok(())
}

#[tokio::test]
async fn offline_models_are_chosen_by_name_and_the_cautious_one_scores_toward_the_middle() -> Result<()> {
    let role = RoleName::parse("Customer Success Manager")?;
    let documents = documents_of(&CUSTOMER_SUCCESS_MANAGER)?;
    let rules = OfflineProvider::new();
    ensure!(rules.model() == "offline");
    let cautious = rules.with_model("offline-cautious")?;
    ensure!(cautious.model() == "offline-cautious");
    let plain = rules.assess(&role, &documents).await?.output;
    let tempered = cautious.assess(&role, &documents).await?.output;
    ensure!(plain.tasks.len() == tempered.tasks.len(), "the same tasks are found");
    for (p, t) in plain.tasks.iter().zip(&tempered.tasks) {
        ensure!(p.key == t.key);
        ensure!((t.automation - 0.5).abs() <= (p.automation - 0.5).abs(), "{p:?} / {t:?}");
        ensure!(t.confidence < p.confidence || t.confidence == 0.1, "{p:?} / {t:?}");
    }
    ensure!(plain != tempered, "another model, other scores");
    let a = rules.mine_skills(&role, &documents, &plain).await?.output;
    let b = cautious.mine_skills(&role, &documents, &plain).await?.output;
    ensure!(a.skills.iter().zip(&b.skills).all(|(a, b)| a.key == b.key && b.confidence <= a.confidence));
    ensure!(cautious.with_model("offline")?.assess(&role, &documents).await?.output == plain, "and back");

    match rules.with_model("gpt-4o") {
        Err(LlmError::UnknownModel { model, available }) => {
            ensure!(model == "gpt-4o" && available == ["offline", "offline-cautious"], "{available:?}");
        }
        other => bail!("an unknown offline model must be refused: {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn offline_scores_vague_tasks_low_and_reads_proficiency_wording() -> Result<()> {
    let text = "# Operations Coordinator\n\n## Responsibilities\n\n\
        - Enter purchase orders and invoices into the ERP system\n\
        - Negotiate delivery terms with suppliers on site\n\
        - Other duties as assigned\n\
        - Support\n\n\
        ## Requirements\n\n\
        - Expert knowledge of SQL\n\
        - Familiarity with Python\n\
        - 5+ years of experience with Excel\n";
    let mut documents = DocumentTexts::new();
    documents.insert(hash("ops"), text);
    let role = RoleName::parse("Operations Coordinator")?;
    let llm = OfflineProvider::new();
    let assessment = llm.assess(&role, &documents).await?.output;
    let task = |name: &str| assessment.tasks.iter().find(|t| t.name == name).context(name.to_owned());
    let (entry, negotiate) = (
        task("Enter purchase orders and invoices into the ERP system")?,
        task("Negotiate delivery terms with suppliers on site")?,
    );
    ensure!(entry.automation > 0.7 && negotiate.automation < 0.3, "{entry:?} {negotiate:?}");
    ensure!(entry.confidence >= REVIEW_BELOW && negotiate.confidence >= REVIEW_BELOW);
    ensure!(task("Other duties as assigned")?.confidence < REVIEW_BELOW, "vague: needs review");
    ensure!(task("Support")?.confidence < REVIEW_BELOW, "too short: needs review");

    let skills = llm.mine_skills(&role, &documents, &assessment).await?.output;
    let architecture = llm.architect_skills(&role, &skills).await?.output;
    let catalog = llm.catalog(&role, &documents, &skills, &architecture).await?.output;
    let level = |name: &str| {
        catalog.entries.iter().find(|e| e.skill == Key::of(name)).map(|e| e.proficiency).context(name.to_owned())
    };
    ensure!(level("SQL")? == 5 && level("Python")? == 1 && level("Excel")? == 4, "{catalog:?}");
    Ok(())
}

#[tokio::test]
async fn offline_reads_process_steps_and_documents_without_sections() -> Result<()> {
    let role = RoleName::parse("Claims Assistant")?;
    let llm = OfflineProvider::new();
    let map = "Claims Handling Process Map\n\nStep 1 - First notice of loss (owner: Claims Assistant)\n\
        - Record the loss report from the phone line\n- Create the claim file in Guidewire ClaimCenter\n\
        Step 2 - Coverage verification (owner: Claims Adjuster)\n- Confirm the policy was in force\n\nSystems\n\
        Guidewire ClaimCenter (claim files).\n";
    let mut documents = DocumentTexts::new();
    documents.insert(hash("map"), map);
    let names: Vec<String> = llm.assess(&role, &documents).await?.output.tasks.into_iter().map(|t| t.name).collect();
    ensure!(
        names
            == [
                "Record the loss report from the phone line",
                "Create the claim file in Guidewire ClaimCenter",
                "Confirm the policy was in force"
            ],
        "{names:?}"
    );
    let prose = "We need someone organised. Review claim documents for completeness. Schedule inspections with \
        the field team; the rest is learned on the job.";
    let mut documents = DocumentTexts::new();
    documents.insert(hash("prose"), prose);
    let tasks = llm.assess(&role, &documents).await?.output.tasks;
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    ensure!(
        names == ["Review claim documents for completeness", "Schedule inspections with the field team"],
        "{names:?}"
    );
    ensure!(tasks.iter().all(|t| documents.verify(&t.source)));
    Ok(())
}

// ---- the PDF and DOCX fixtures, through the documents module's extraction ---------------------

/// The PDF and DOCX fixtures, extracted the way the worker extracts them, then read by the offline
/// provider: the same expectations as the Markdown and text fixtures. Their headings are plain
/// lines, so each names them for the span check.
mod extracted {
    use super::*;
    use etter_documents::{DocumentUri, Documents as Fetcher, DocumentsConfig};

    struct Extracted {
        fixture: Fixture,
        /// Every heading of the document, as it is written.
        headings: &'static [&'static str],
    }

    const CLAIMS_ADJUSTER: Extracted = Extracted {
        fixture: Fixture {
            file: "claims_adjuster_jd.pdf",
            role: "Claims Adjuster",
            tasks: &[
                "Review first notice of loss reports and contact claimants within one business day",
                "Verify policy coverage, limits, deductibles and exclusions for each claim",
                "Investigate claims by interviewing claimants, witnesses and police officers",
                "Inspect damaged vehicles and properties and photograph the damage",
                "Estimate repair and replacement costs using Xactimate and CCC One",
                "Set and adjust claim reserves as new information becomes available",
                "Negotiate settlements with claimants, attorneys and repair shops",
                "Refer suspicious claims to the Special Investigations Unit",
                "Document every claim decision in the claims management system",
                "Identify subrogation opportunities and hand them to the recovery team",
                "Explain coverage decisions to policyholders in plain language",
            ],
            skills: &[
                "Knowledge of property and casualty insurance policies",
                "Damage estimation with Xactimate or CCC One",
                "Negotiation and conflict resolution",
                "Investigative interviewing",
                "Fraud detection",
                "Clear written communication",
                "Time management across a caseload of 120+ open claims",
                "Empathy with customers after a loss",
            ],
        },
        headings: &[
            "Claims Adjuster",
            "Summary",
            "Key Responsibilities",
            "Required Skills",
            "Qualifications",
            "Working Conditions",
            "About Northfield Mutual",
        ],
    };

    const REGISTERED_NURSE: Extracted = Extracted {
        fixture: Fixture {
            file: "registered_nurse_jd.docx",
            role: "Registered Nurse, Medical-Surgical Unit",
            tasks: &[
                "Assess patients' physical and psychosocial condition at the start of each shift",
                "Administer medications and intravenous therapies according to physician orders",
                "Monitor vital signs and recognise early signs of patient deterioration",
                "Develop and update individualized nursing care plans",
                "Perform wound care and dressing changes",
                "Educate patients and families about diagnoses, medications and discharge instructions",
                "Document assessments, interventions and outcomes in the electronic health record",
                "Coordinate care with physicians, case managers and allied health professionals",
                "Respond to rapid response and code blue events",
                "Supervise and delegate tasks to licensed practical nurses and nursing assistants",
            ],
            skills: &[
                "Clinical assessment",
                "Medication administration and dosage calculation",
                "IV insertion and infusion pump management",
                "Electronic health record documentation (Epic)",
                "Patient education",
                "Critical thinking under pressure",
                "Infection prevention and control",
                "Teamwork and communication",
            ],
        },
        headings: &[
            "Registered Nurse, Medical-Surgical Unit",
            "Position Summary",
            "Responsibilities",
            "Skills and Competencies",
            "Qualifications",
            "About the Unit",
            "Physical Demands",
        ],
    };

    const PROCESS_MAP: Extracted = Extracted {
        fixture: Fixture {
            file: "claims_handling_process_map.pdf",
            role: "Claims Adjuster",
            tasks: &[
                "Record the loss report from the phone line, web form or agent portal",
                "Create the claim file in Guidewire ClaimCenter",
                "Send the acknowledgement letter to the policyholder",
                "Confirm the policy was in force on the date of loss",
                "Check limits, deductibles and exclusions against the reported loss",
                "Score claim complexity and fraud indicators",
                "Interview the claimant, witnesses and other drivers",
                "Estimate the damage with Xactimate or CCC One",
                "Present the settlement offer to the claimant or their attorney",
                "Issue payment to the claimant, repair shop or lienholder",
                "Send demand letters and track recoveries",
                "Audit a sample of closed claims against this process map",
            ],
            // A process map lists no skills: the tools its steps name are the skills found.
            skills: &["Guidewire", "ClaimCenter", "Xactimate", "CCC One"],
        },
        headings: &["Claims Handling Process Map", "Purpose", "Systems"],
    };

    /// The heading of the section an offset is in: the last line before it that is one of
    /// `headings` or a process step (`Step 3 - …`), lowercase.
    fn section_in(text: &str, offset: usize, headings: &[&str]) -> Option<String> {
        text.get(..offset)?
            .lines()
            .rev()
            .map(str::trim)
            .find(|line| {
                headings.iter().any(|h| h.eq_ignore_ascii_case(line))
                    || line.strip_prefix("Step ").is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
            .map(str::to_lowercase)
    }

    async fn check(extracted: &Extracted) -> Result<()> {
        let fixture = &extracted.fixture;
        let fixtures = fixtures_dir();
        let fetcher = Fetcher::new(DocumentsConfig { file_root: fixtures.clone(), ..DocumentsConfig::default() })?;
        let uri = format!("file://{}/{}", fixtures.display(), fixture.file);
        let document = fetcher.load(&DocumentUri::parse(&uri)?).await?;
        let mut documents = DocumentTexts::new();
        documents.insert(document.content_hash.clone(), document.text.clone());
        let role = RoleName::parse(fixture.role)?;
        let Outputs { assessment, skills, paths, .. } = run_all_steps(&role, &documents).await?;
        // A process map names tools, not the human skills paths lead to.
        ensure!(paths > 0 || fixture.file.contains("process_map"), "a job description gives reskilling paths");

        let task_keys = keys_of(assessment.tasks.iter().map(|t| t.name.as_str()));
        let skill_keys = keys_of(skills.skills.iter().map(|s| s.name.as_str()));
        ensure!(
            missing(fixture.tasks, &task_keys).is_empty(),
            "{}: tasks not found: {:?}",
            fixture.file,
            missing(fixture.tasks, &task_keys)
        );
        ensure!(
            missing(fixture.skills, &skill_keys).is_empty(),
            "{}: skills not found: {:?} (found {skill_keys:?})",
            fixture.file,
            missing(fixture.skills, &skill_keys)
        );
        let in_section = |span: &SourceSpan, allowed: &[&str]| -> Result<()> {
            ensure!(documents.verify(span), "{:?} is not exact", span.text);
            let section = section_in(&document.text, span.start as usize, extracted.headings).unwrap_or_default();
            let ok = allowed.contains(&section.as_str()) || section.starts_with("step ");
            ensure!(ok, "{}: {:?} is in section {section:?}", fixture.file, span.text);
            Ok(())
        };
        for task in &assessment.tasks {
            in_section(&task.source, &["key responsibilities", "responsibilities"])?;
        }
        for skill in &skills.skills {
            let allowed = [
                "key responsibilities",
                "responsibilities",
                "required skills",
                "skills and competencies",
                "qualifications",
            ];
            in_section(&skill.source, &allowed)?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn offline_finds_the_pdf_fixture_tasks_and_skills() -> Result<()> {
        check(&CLAIMS_ADJUSTER).await
    }

    #[tokio::test]
    async fn offline_finds_the_docx_fixture_tasks_and_skills() -> Result<()> {
        check(&REGISTERED_NURSE).await
    }

    #[tokio::test]
    async fn offline_finds_the_process_map_steps() -> Result<()> {
        check(&PROCESS_MAP).await
    }
}

// ---- OpenAI-compatible provider against a local server -----------------------------------------

/// One scripted answer of the fake endpoint.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

/// What the fake endpoint received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
    body: Value,
}

/// A local server speaking OpenAI's chat-completions API: answers from a script (the last answer
/// repeats once the script runs out) and records every request.
#[derive(Default)]
struct FakeOpenAi {
    script: Mutex<VecDeque<Reply>>,
    last: Mutex<Option<Reply>>,
    seen: Mutex<Vec<Seen>>,
}

impl FakeOpenAi {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

async fn answer(State(fake): State<Arc<FakeOpenAi>>, uri: Uri, headers: HeaderMap, body: String) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = serde_json::from_str(&body).unwrap_or(Value::Null);
    fake.seen.lock().unwrap_or_else(PoisonError::into_inner).push(Seen {
        path: uri.path().to_owned(),
        authorization,
        body,
    });
    let next = fake.script.lock().unwrap_or_else(PoisonError::into_inner).pop_front();
    let mut last = fake.last.lock().unwrap_or_else(PoisonError::into_inner);
    let reply = match next {
        Some(reply) => {
            *last = Some(reply.clone());
            reply
        }
        None => last.clone().unwrap_or(Reply { status: 500, headers: Vec::new(), body: "no script".to_owned() }),
    };
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, reply.body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in reply.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// Starts the fake on 127.0.0.1:0 and a provider pointing at it.
async fn fake_openai(script: Vec<Reply>, max_backoff: Duration) -> Result<(Arc<FakeOpenAi>, OpenAiProvider)> {
    fake_openai_over(script, max_backoff, None).await
}

/// A server certificate for the fake and the CA a provider may trust (`ca_pem`, or `None` for the
/// system's roots only).
struct FakeTls {
    server: etter_config::tls::ServerTls,
    ca_pem: Option<Vec<u8>>,
}

/// Starts the fake, over TLS when `tls` is given (then at `https://localhost:PORT`).
async fn fake_openai_over(
    script: Vec<Reply>,
    max_backoff: Duration,
    tls: Option<FakeTls>,
) -> Result<(Arc<FakeOpenAi>, OpenAiProvider)> {
    let fake = Arc::new(FakeOpenAi { script: Mutex::new(script.into()), ..FakeOpenAi::default() });
    let app = Router::new().route("/v1/chat/completions", post(answer)).with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (base_url, ca_pem) = match tls {
        None => {
            tokio::spawn(async move { axum::serve(listener, app).await });
            (format!("http://{address}/v1"), None)
        }
        Some(tls) => {
            let acceptor = etter_tls::Acceptor::new(&tls.server, "test.tls")?;
            let incoming = etter_tls::Incoming::new(listener, acceptor, "llm")?;
            tokio::spawn(async move { axum::serve(incoming, app).await });
            (format!("https://localhost:{}/v1", address.port()), tls.ca_pem)
        }
    };
    let settings = OpenAiSettings {
        base_url: base_url.parse()?,
        model: "test-model".to_owned(),
        api_key: Some("sk-test-key".into()),
        ca_pem,
        timeout: Duration::from_secs(10),
        max_attempts: 3,
        initial_backoff: Duration::from_millis(20),
        max_backoff,
    };
    let limiter = Arc::new(Limiter::new(LimiterSettings {
        requests_per_minute: NonZeroU32::new(600).context("nonzero")?,
        tokens_per_minute: NonZeroU32::new(10_000_000).context("nonzero")?,
        max_concurrent: 4,
    }));
    Ok((fake, OpenAiProvider::new(settings, limiter)?))
}

fn chat(content: &str, prompt_tokens: u64, completion_tokens: u64) -> Reply {
    let body = json!({
        "id": "chatcmpl-test", "object": "chat.completion", "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    });
    Reply { status: 200, headers: Vec::new(), body: body.to_string() }
}

fn error(status: u16, headers: Vec<(&'static str, String)>) -> Reply {
    Reply { status, headers, body: json!({"error": {"message": "try later", "type": "server_error"}}).to_string() }
}

const QUOTE: &str = "Run quarterly business reviews with customer executives";

/// A model's assessment of the Customer Success Manager fixture with one task per `(name, quote,
/// automation)`.
fn assessment_answer(tasks: &[(&str, &str, f64)]) -> String {
    let tasks: Vec<Value> = tasks
        .iter()
        .map(|(name, quote, automation)| {
            json!({"name": name, "automation": automation, "augmentation": 0.8, "confidence": 0.9,
                   "document": hash(CUSTOMER_SUCCESS_MANAGER.file).0, "quote": quote})
        })
        .collect();
    json!({ "tasks": tasks }).to_string()
}

async fn assess_with(
    script: Vec<Reply>,
) -> Result<(Arc<FakeOpenAi>, Result<etter_llm::Completion<Assessment>, LlmError>, DocumentTexts)> {
    let (fake, provider) = fake_openai(script, Duration::from_secs(5)).await?;
    let documents = documents_of(&CUSTOMER_SUCCESS_MANAGER)?;
    let role = RoleName::parse("Customer Success Manager")?;
    let result = provider.assess(&role, &documents).await;
    Ok((fake, result, documents))
}

#[tokio::test]
async fn an_endpoint_behind_a_private_ca_is_reached_with_llm_ca_file_and_refused_without() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = etter_test_certs::Ca::new("gateway CA")?;
    let issued =
        ca.server(dir.path(), "gateway", etter_test_certs::LOOPBACK_NAMES, etter_test_certs::Validity::Current)?;
    let server = etter_config::tls::ServerTls {
        cert_file: issued.cert_file.clone(),
        key_file: issued.key_file.clone(),
        ..etter_config::tls::ServerTls::default()
    };
    let answer = assessment_answer(&[("Quarterly business reviews", QUOTE, 0.3)]);
    let documents = documents_of(&CUSTOMER_SUCCESS_MANAGER)?;
    let role = RoleName::parse("Customer Success Manager")?;

    let trusted = FakeTls { server: server.clone(), ca_pem: Some(ca.pem().into_bytes()) };
    let (fake, provider) = fake_openai_over(vec![chat(&answer, 10, 5)], Duration::from_secs(5), Some(trusted)).await?;
    let completion = provider.assess(&role, &documents).await?;
    ensure!((completion.usage.input_tokens, completion.usage.output_tokens) == (10, 5), "{:?}", completion.usage);
    ensure!(fake.seen().len() == 1, "the answer came over TLS from the fake");

    let untrusted = FakeTls { server, ca_pem: None };
    let (fake, provider) =
        fake_openai_over(vec![chat(&answer, 10, 5)], Duration::from_secs(5), Some(untrusted)).await?;
    let error =
        provider.assess(&role, &documents).await.err().context("a private CA was trusted without llm.ca_file")?;
    let message = format!("{error:?}");
    ensure!(message.contains("UnknownIssuer") || message.contains("certificate"), "{message}");
    ensure!(fake.seen().is_empty(), "nothing reached the fake: {:?}", fake.seen().len());
    Ok(())
}

#[tokio::test]
async fn openai_structured_output_with_usage_and_grounded_spans() -> Result<()> {
    let answer = assessment_answer(&[("Quarterly business reviews", QUOTE, 0.3)]);
    let (fake, result, documents) = assess_with(vec![chat(&answer, 1234, 56)]).await?;
    let completion = result?;

    let seen = fake.seen();
    ensure!(seen.len() == 1);
    let request = &seen[0];
    ensure!(request.path == "/v1/chat/completions");
    ensure!(request.authorization.as_deref() == Some("Bearer sk-test-key"));
    ensure!(request.body["model"] == "test-model");
    let format = &request.body["response_format"];
    ensure!(format["type"] == "json_schema" && format["json_schema"]["strict"] == true, "{format}");
    ensure!(format["json_schema"]["name"] == "ai_assessment");
    let task_schema = &format["json_schema"]["schema"]["properties"]["tasks"]["items"];
    ensure!(
        task_schema["additionalProperties"] == false && task_schema["required"].as_array().map(Vec::len) == Some(6)
    );
    let user = request.body["messages"][1]["content"].as_str().unwrap_or_default();
    ensure!(
        user.contains(QUOTE) && user.contains(&hash(CUSTOMER_SUCCESS_MANAGER.file).0),
        "the prompt carries the document"
    );

    ensure!(completion.usage.input_tokens == 1234 && completion.usage.output_tokens == 56);
    ensure!(completion.discarded.is_empty());
    let [task] = completion.output.tasks.as_slice() else { bail!("one task: {:?}", completion.output) };
    ensure!(task.key == Key::of("Quarterly business reviews") && task.automation == 0.3);
    // The span is computed from the document, not taken from the model.
    let text = documents.get(&task.source.document).context("document")?;
    let start = text.find(QUOTE).context("quote in fixture")?;
    ensure!((task.source.start as usize, task.source.end as usize) == (start, start + QUOTE.len()));
    ensure!(task.source.text == QUOTE);
    Ok(())
}

#[tokio::test]
async fn openai_asks_the_model_a_run_chose() -> Result<()> {
    let answer = assessment_answer(&[("Quarterly business reviews", QUOTE, 0.3)]);
    let (fake, provider) = fake_openai(vec![chat(&answer, 10, 5)], Duration::from_secs(5)).await?;
    let chosen = provider.with_model("other-model")?;
    ensure!(chosen.model() == "other-model" && provider.model() == "test-model");
    let role = RoleName::parse("Customer Success Manager")?;
    chosen.assess(&role, &documents_of(&CUSTOMER_SUCCESS_MANAGER)?).await?;
    let seen = fake.seen();
    ensure!(seen.len() == 1 && seen[0].body["model"] == "other-model", "{:?}", seen.first().map(|r| &r.body["model"]));
    ensure!(matches!(provider.with_model(" "), Err(LlmError::Settings(_))));
    Ok(())
}

#[tokio::test]
async fn openai_waits_out_429_with_retry_after_then_succeeds() -> Result<()> {
    let answer = assessment_answer(&[("Quarterly business reviews", QUOTE, 0.3)]);
    let started = tokio::time::Instant::now();
    let (fake, result, _) =
        assess_with(vec![error(429, vec![("retry-after", "1".to_owned())]), chat(&answer, 100, 10)]).await?;
    let completion = result?;
    ensure!(fake.seen().len() == 2, "one refused request, one retried");
    ensure!(started.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was honoured");
    ensure!(completion.usage.input_tokens == 100 && completion.output.tasks.len() == 1);
    Ok(())
}

#[tokio::test]
async fn openai_retries_server_errors_then_succeeds() -> Result<()> {
    let answer = assessment_answer(&[("Quarterly business reviews", QUOTE, 0.3)]);
    let (fake, result, _) = assess_with(vec![error(503, Vec::new()), chat(&answer, 100, 10)]).await?;
    ensure!(result?.output.tasks.len() == 1);
    ensure!(fake.seen().len() == 2);
    Ok(())
}

#[tokio::test]
async fn openai_gives_up_on_persistent_errors_with_retryable_errors() -> Result<()> {
    let (fake, result, _) = assess_with(vec![error(502, Vec::new())]).await?;
    match result {
        Err(e @ LlmError::Unavailable { status: 502, attempts: 3, .. }) => ensure!(e.is_retryable()),
        other => bail!("expected Unavailable after 3 attempts, got {other:?}"),
    }
    ensure!(fake.seen().len() == 3, "max_attempts bounds the requests");

    // A Retry-After longer than the provider waits in-process: the activity should retry later.
    let (fake, provider) =
        fake_openai(vec![error(429, vec![("retry-after", "120".to_owned())])], Duration::from_secs(5)).await?;
    let documents = documents_of(&CUSTOMER_SUCCESS_MANAGER)?;
    let result = provider.assess(&RoleName::parse("Customer Success Manager")?, &documents).await;
    match result {
        Err(e @ LlmError::RateLimited { attempts: 1, .. }) => {
            ensure!(e.is_retryable() && e.retry_after() == Some(Duration::from_secs(120)));
        }
        other => bail!("expected RateLimited at once, got {other:?}"),
    }
    ensure!(fake.seen().len() == 1);
    Ok(())
}

#[tokio::test]
async fn openai_refused_requests_are_not_retried() -> Result<()> {
    let (fake, result, _) = assess_with(vec![error(401, Vec::new())]).await?;
    match result {
        Err(e @ LlmError::Rejected { status: 401, .. }) => ensure!(!e.is_retryable()),
        other => bail!("expected Rejected, got {other:?}"),
    }
    ensure!(fake.seen().len() == 1);
    Ok(())
}

#[tokio::test]
async fn openai_malformed_json_is_asked_again_then_a_clear_error() -> Result<()> {
    let answer = assessment_answer(&[("Quarterly business reviews", QUOTE, 0.3)]);
    // One malformed answer, then a valid one: asked again at once.
    let (fake, result, _) = assess_with(vec![chat("{\"tasks\": [", 50, 5), chat(&answer, 100, 10)]).await?;
    let completion = result?;
    ensure!(fake.seen().len() == 2);
    ensure!(completion.usage.input_tokens == 150, "the rejected answer's tokens count too");

    // Malformed every time: a clear, non-retryable error that names the step and keeps the usage.
    let (fake, result, _) = assess_with(vec![chat("this is not JSON", 50, 5)]).await?;
    match result {
        Err(e @ LlmError::InvalidOutput { attempts: 3, .. }) => {
            let message = e.to_string();
            ensure!(message.contains("ai_assessment") && message.contains("not JSON"), "{message}");
            ensure!(!e.is_retryable() && e.usage().input_tokens == 150);
        }
        other => bail!("expected InvalidOutput, got {other:?}"),
    }
    ensure!(fake.seen().len() == 3);
    Ok(())
}

#[tokio::test]
async fn openai_scores_outside_the_unit_interval_are_invalid() -> Result<()> {
    let answer = assessment_answer(&[("Quarterly business reviews", QUOTE, 1.7)]);
    let (fake, result, _) = assess_with(vec![chat(&answer, 50, 5)]).await?;
    match result {
        Err(LlmError::InvalidOutput { problem, .. }) => {
            ensure!(problem.contains("tasks[0].automation = 1.7 is not in [0, 1]"), "{problem}");
        }
        other => bail!("expected InvalidOutput, got {other:?}"),
    }
    ensure!(fake.seen().len() == 3);
    Ok(())
}

#[tokio::test]
async fn openai_items_quoting_nothing_in_the_documents_are_dropped() -> Result<()> {
    let answer = assessment_answer(&[
        ("Quarterly business reviews", QUOTE, 0.3),
        ("Approve discounts", "Approve discounts above 20% for strategic accounts", 0.5),
        // Rewrapped and recased by the model: still found, and the span is the document's own text.
        ("Gainsight monitoring", "monitor product usage and   account health scores in gainsight", 0.6),
    ]);
    let (_, result, documents) = assess_with(vec![chat(&answer, 100, 10)]).await?;
    let completion = result?;
    let names: Vec<&str> = completion.output.tasks.iter().map(|t| t.name.as_str()).collect();
    ensure!(names == ["Quarterly business reviews", "Gainsight monitoring"], "{names:?}");
    ensure!(completion.output.tasks[1].source.text == "Monitor product usage and account health scores in Gainsight");
    ensure!(completion.output.tasks.iter().all(|t| documents.verify(&t.source)));
    let [dropped] = completion.discarded.as_slice() else { bail!("one dropped item: {:?}", completion.discarded) };
    ensure!(dropped.contains("Approve discounts") && dropped.contains("not in the documents"), "{dropped}");

    // Nothing grounded at all: the answer is invalid.
    let answer = assessment_answer(&[("Approve discounts", "Approve discounts above 20%", 0.5)]);
    let (_, result, _) = assess_with(vec![chat(&answer, 100, 10)]).await?;
    ensure!(matches!(result, Err(LlmError::InvalidOutput { .. })), "{result:?}");
    Ok(())
}

#[tokio::test]
async fn openai_downstream_steps_keep_only_known_keys() -> Result<()> {
    let role = RoleName::parse("Customer Success Manager")?;
    let documents = documents_of(&CUSTOMER_SUCCESS_MANAGER)?;
    let offline = OfflineProvider::new();
    let assessment = offline.assess(&role, &documents).await?.output;
    let known = assessment.tasks[0].key.0.clone();
    let answer = json!({"ranked": [known, "invented-task", known]}).to_string();
    let (fake, provider) = fake_openai(vec![chat(&answer, 10, 5)], Duration::from_secs(1)).await?;
    let top = provider.top_tasks(&role, &assessment).await?;
    ensure!(top.output.ranked == [Key(known.clone())], "{:?}", top.output);
    ensure!(top.discarded.len() == 2, "{:?}", top.discarded);
    ensure!(fake.seen()[0].body["response_format"]["json_schema"]["name"] == "step_executor");

    let skills = offline.mine_skills(&role, &documents, &assessment).await?.output;
    let skill = skills.skills[0].key.0.clone();
    let answer = json!({"entries": [{"skill": skill, "proficiency": 9, "description": "x"}]}).to_string();
    let (_, provider) = fake_openai(vec![chat(&answer, 10, 5)], Duration::from_secs(1)).await?;
    let architecture = offline.architect_skills(&role, &skills).await?.output;
    let result = provider.catalog(&role, &documents, &skills, &architecture).await;
    ensure!(
        matches!(&result, Err(LlmError::InvalidOutput { problem, .. }) if problem.contains("proficiency = 9")),
        "{result:?}"
    );
    Ok(())
}

// ---- the shared limiter, on tokio's paused clock ------------------------------------------------

fn new_limiter(rpm: u32, tpm: u32, concurrent: usize) -> Result<Arc<Limiter>> {
    Ok(Arc::new(Limiter::new(LimiterSettings {
        requests_per_minute: NonZeroU32::new(rpm).context("rpm")?,
        tokens_per_minute: NonZeroU32::new(tpm).context("tpm")?,
        max_concurrent: concurrent,
    })))
}

/// Starts `n` acquisitions of `tokens` each at once and returns when each was granted, sorted.
async fn grant_times(limiter: &Arc<Limiter>, n: usize, tokens: u64) -> Result<Vec<Duration>> {
    let start = tokio::time::Instant::now();
    let mut handles = Vec::new();
    for _ in 0..n {
        let limiter = Arc::clone(limiter);
        handles.push(tokio::spawn(async move {
            let _permit = limiter.acquire(tokens).await;
            start.elapsed()
        }));
    }
    let mut times = Vec::new();
    for handle in handles {
        times.push(handle.await?);
    }
    times.sort();
    Ok(times)
}

#[tokio::test(start_paused = true)]
async fn limiter_queues_requests_over_the_per_minute_bound() -> Result<()> {
    let limiter = new_limiter(60, 1_000_000, 1_000)?;
    let times = grant_times(&limiter, 150, 1).await?;
    ensure!(times.len() == 150, "every request is granted, none fails");
    ensure!(times.iter().filter(|t| t.is_zero()).count() == 60, "a minute's burst at once");
    // Then one a second: request k (0-based) no earlier than k - 59 seconds.
    for (k, t) in times.iter().enumerate().skip(60) {
        let due = Duration::from_secs(k as u64 - 59);
        ensure!(*t + Duration::from_millis(5) >= due, "request {k} granted at {t:?}, before {due:?}");
    }
    let last = times.last().copied().unwrap_or_default();
    ensure!(last >= Duration::from_secs(90) && last < Duration::from_secs(92), "last at {last:?}");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn limiter_weighs_tokens_against_the_per_minute_bound() -> Result<()> {
    // 6,000 tokens a minute = 100 a second, a full minute's worth available at once.
    let limiter = new_limiter(1_000, 6_000, 1_000)?;
    let times = grant_times(&limiter, 10, 1_500).await?;
    for (k, t) in times.iter().enumerate() {
        let granted = 1_500.0 * (k as f64 + 1.0);
        let allowed = 6_000.0 + 100.0 * t.as_secs_f64();
        ensure!(granted <= allowed + 1.0, "{granted} tokens granted by {t:?}: over the bound {allowed}");
    }
    ensure!(times.iter().filter(|t| t.is_zero()).count() == 4);
    let last = times.last().copied().unwrap_or_default();
    ensure!(last >= Duration::from_secs(90) && last < Duration::from_secs(91), "last at {last:?}");

    // A request above a minute's budget waits for a full bucket instead of failing; tokens used
    // beyond the estimate are charged afterwards and delay the next request.
    let limiter = new_limiter(1_000, 1_000, 10)?;
    let start = tokio::time::Instant::now();
    drop(limiter.acquire(5_000).await);
    ensure!(start.elapsed().is_zero());
    drop(limiter.acquire(5_000).await);
    ensure!(start.elapsed() >= Duration::from_secs(59), "waited for a full bucket: {:?}", start.elapsed());
    let start = tokio::time::Instant::now();
    limiter.charge(600).await;
    ensure!(start.elapsed() >= Duration::from_secs(35), "paid the excess: {:?}", start.elapsed());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn limiter_bounds_requests_in_flight() -> Result<()> {
    let limiter = new_limiter(1_000, 1_000_000, 2)?;
    let first = limiter.acquire(1).await;
    let _second = limiter.acquire(1).await;
    let third = tokio::time::timeout(Duration::from_secs(600), limiter.acquire(1)).await;
    ensure!(third.is_err(), "a third request waits while two are in flight");
    drop(first);
    let third = tokio::time::timeout(Duration::from_secs(1), limiter.acquire(1)).await;
    ensure!(third.is_ok(), "and goes as soon as one finishes");
    Ok(())
}

/// `[llm]` builds the provider it names; an OpenAI-compatible one is reachable through the
/// configured base URL (the same local server as above answers it).
#[tokio::test]
async fn the_configured_provider_is_the_one_built() -> Result<()> {
    use etter_llm::{LlmConfig, ProviderKind};
    let offline = etter_llm::provider_from_config(&LlmConfig::default())?;
    ensure!(offline.name() == "offline", "the default is offline, got {}", offline.name());
    let openai = LlmConfig {
        provider: ProviderKind::OpenAi,
        base_url: "http://127.0.0.1:9/v1".to_owned(),
        model: "gpt-test".to_owned(),
        ..LlmConfig::default()
    };
    ensure!(etter_llm::provider_from_config(&openai)?.name() == "openai");
    let broken = LlmConfig { base_url: "not a url".to_owned(), ..openai };
    let err = etter_llm::provider_from_config(&broken).err().context("a bad base URL must be refused")?;
    ensure!(err.to_string().contains("llm.base_url"), "{err}");
    Ok(())
}
