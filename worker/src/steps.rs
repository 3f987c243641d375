//! What each step of the pipeline does (docs/ARCHITECTURE.md, "The step graph"): read its inputs from the stores, compute its
//! output, write it to the role graph, and report the hashes of its inputs and output.
//!
//! Steps are idempotent: the graph is written with `MERGE` on stable keys, so running a step again
//! with the same inputs — a Temporal retry, a worker killed mid-step — writes the same graph and
//! duplicates nothing. Document text and step outputs live in the stores; what goes back to
//! Temporal is a hash.

use std::collections::BTreeMap;
use std::sync::Arc;

use etter_core::digest::{Digestible, Names, StepDigest};
use etter_core::outputs::ContentHash;
use etter_core::steps::{DocumentKind, StepName, input_hash};
use etter_documents::{DocumentUri, Documents, ExtractedDocument};
use etter_graph::{LinkedDocument, RoleGraph, RoleOutputs, RoleSetup, StepOutput};
use etter_llm::{Completion, DocumentTexts, LlmProvider, REVIEW_BELOW, TokenUsage};
use etter_store::{DocumentRef, Run, RunStore, now};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::failure::StepFailure;

/// What a finished step reports.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    /// Hash of the step's inputs ([`input_hash`]).
    pub input_hash: String,
    /// Hash of the output the step wrote.
    pub output_hash: String,
    /// LLM tokens the step used.
    pub usage: TokenUsage,
    /// The model that answered, for a step that asks one.
    pub model: Option<String>,
    /// What the step produced and why it deserves a review, for a step that produces things.
    pub digest: Option<StepDigest>,
}

impl StepOutcome {
    /// Some output fell below the review threshold, a document had unreadable pages, or the
    /// model's answer had items dropped.
    pub fn needs_review(&self) -> bool {
        self.digest.as_ref().is_some_and(StepDigest::needs_review)
    }
}

/// Items dropped from a model's answer kept as review reasons, at most (the rest are counted).
const DROPPED_REASONS: usize = 10;

/// The shared parts every step uses; one per worker process (clones share them).
#[derive(Clone)]
pub struct StepRunner {
    store: Arc<dyn RunStore>,
    graph: Arc<dyn RoleGraph>,
    documents: Arc<Documents>,
    llm: Arc<dyn LlmProvider>,
}

impl StepRunner {
    /// A runner over the worker's stores, document loader and model.
    pub fn new(
        store: Arc<dyn RunStore>,
        graph: Arc<dyn RoleGraph>,
        documents: Arc<Documents>,
        llm: Arc<dyn LlmProvider>,
    ) -> Self {
        Self { store, graph, documents, llm }
    }

    /// The run store the runner records into.
    pub fn store(&self) -> &Arc<dyn RunStore> {
        &self.store
    }

    /// The hash of `step`'s inputs as they are now, without running it (for the early cutoff of a
    /// STALE re-run): documents are fetched and hashed only when the step consumes them.
    pub async fn current_input_hash(
        &self,
        run: &Run,
        step: StepName,
        upstream: &BTreeMap<StepName, String>,
    ) -> Result<String, StepFailure> {
        let mut documents = Vec::new();
        if !step.spec().consumes.is_empty() {
            for doc in &run.documents {
                let fetched = self.documents.fetch(&DocumentUri::parse(&doc.uri)?).await?;
                documents.push((doc.step_kind(), fetched.content_hash));
            }
        }
        Ok(input_hash(step, &run.role_identity(), &documents, upstream))
    }

    /// Runs `step` of `run`. `upstream` holds the output hashes of the steps it needs (from this
    /// run, or reused from an earlier one).
    pub async fn execute(
        &self,
        run: &Run,
        step: StepName,
        upstream: &BTreeMap<StepName, String>,
    ) -> Result<StepOutcome, StepFailure> {
        let role = &run.role_id;
        let no_docs: &[(DocumentKind, ContentHash)] = &[];
        // The hash of the step's inputs: these documents and the upstream outputs.
        let inputs =
            |documents: &[(DocumentKind, ContentHash)]| input_hash(step, &run.role_identity(), documents, upstream);
        let plain = |output_hash: String| StepOutcome {
            input_hash: inputs(no_docs),
            output_hash,
            usage: TokenUsage::default(),
            model: None,
            digest: None,
        };
        // The model the run chose, or the worker's own; asked for by the steps that use one.
        let llm = || -> Result<Arc<dyn LlmProvider>, StepFailure> {
            match &run.model {
                Some(model) if model != self.llm.model() => Ok(self.llm.with_model(model)?),
                _ => Ok(Arc::clone(&self.llm)),
            }
        };
        match step {
            StepName::RoleSetup => {
                let draup_role = run.draup_role_id.clone().ok_or_else(|| {
                    StepFailure::permanent("DRAUP_ROLE_MISSING", "the run has no Draup role id; push the role with one")
                })?;
                let setup = RoleSetup { company: run.company_id.clone(), role_name: run.role_name.clone(), draup_role };
                self.graph.write(role, StepOutput::RoleSetup(&setup)).await?;
                Ok(plain(hash_json(&setup)?))
            }
            StepName::DocumentLinking => {
                let loaded = self.load_documents(run).await?;
                let mut linked: Vec<LinkedDocument> = loaded
                    .iter()
                    .map(|(doc, extracted)| LinkedDocument {
                        content_hash: extracted.content_hash.clone(),
                        doc_type: doc.kind.clone(),
                        uri: doc.uri.clone(),
                    })
                    .collect();
                linked.sort();
                let seen = now();
                for document in &linked {
                    self.store.record_document_hash(&document.uri, &document.content_hash, seen).await?;
                }
                self.graph.write(role, StepOutput::DocumentLinking(&linked)).await?;
                let hashes = document_hashes(&loaded);
                let unreadable = loaded.iter().filter(|(_, doc)| doc.skipped_pages > 0).map(|(doc, extracted)| {
                    format!("{}: {} pages could not be read and were left out", doc.uri, extracted.skipped_pages)
                });
                let digest = StepDigest::documents(
                    linked.iter().map(|d| (d.uri.as_str(), d.doc_type.as_str(), d.content_hash.0.as_str())),
                )
                .with_review(REVIEW_BELOW, unreadable);
                Ok(StepOutcome {
                    input_hash: inputs(&hashes),
                    output_hash: hash_json(&linked)?,
                    usage: TokenUsage::default(),
                    model: None,
                    digest: Some(digest),
                })
            }
            StepName::AiAssessment => {
                let (texts, hashes) = self.texts(run).await?;
                let llm = llm()?;
                let completion = llm.assess(&run.role_name, &texts).await?;
                self.graph.write(role, StepOutput::Assessment(&completion.output)).await?;
                self.finish(run, step, inputs(&hashes), completion, llm.model(), &Names::default())
            }
            StepName::StepExecutor => {
                let outputs = self.outputs(run, step).await?;
                let llm = llm()?;
                let completion = llm.top_tasks(&run.role_name, &outputs.assessment).await?;
                self.graph.write(role, StepOutput::TopTasks(&completion.output)).await?;
                self.finish(run, step, inputs(no_docs), completion, llm.model(), &names_in(&outputs))
            }
            StepName::Standardization => {
                let outputs = self.outputs(run, step).await?;
                let llm = llm()?;
                let completion = llm.standardize(&run.role_name, &outputs.assessment, &outputs.top_tasks).await?;
                self.graph.write(role, StepOutput::Standardization(&completion.output)).await?;
                self.finish(run, step, inputs(no_docs), completion, llm.model(), &names_in(&outputs))
            }
            StepName::SkillsMiner => {
                let (texts, hashes) = self.texts(run).await?;
                let outputs = self.outputs(run, step).await?;
                let llm = llm()?;
                let completion = llm.mine_skills(&run.role_name, &texts, &outputs.assessment).await?;
                self.graph.write(role, StepOutput::MinedSkills(&completion.output)).await?;
                self.finish(run, step, inputs(&hashes), completion, llm.model(), &names_in(&outputs))
            }
            StepName::SkillsArchitecture => {
                let outputs = self.outputs(run, step).await?;
                let llm = llm()?;
                let completion = llm.architect_skills(&run.role_name, &outputs.skills).await?;
                self.graph.write(role, StepOutput::SkillsArchitecture(&completion.output)).await?;
                self.finish(run, step, inputs(no_docs), completion, llm.model(), &names_in(&outputs))
            }
            StepName::SkillsCatalog => {
                let (texts, _) = self.texts(run).await?;
                let outputs = self.outputs(run, step).await?;
                let llm = llm()?;
                let completion = llm.catalog(&run.role_name, &texts, &outputs.skills, &outputs.architecture).await?;
                self.graph.write(role, StepOutput::SkillsCatalog(&completion.output)).await?;
                self.finish(run, step, inputs(no_docs), completion, llm.model(), &names_in(&outputs))
            }
            StepName::Reskilling => {
                let outputs = self.outputs(run, step).await?;
                let llm = llm()?;
                let completion =
                    llm.reskilling(&run.role_name, &outputs.assessment, &outputs.skills, &outputs.catalog).await?;
                self.graph.write(role, StepOutput::Reskilling(&completion.output)).await?;
                self.finish(run, step, inputs(no_docs), completion, llm.model(), &names_in(&outputs))
            }
            StepName::TaskFeasibility => {
                let outputs = self.outputs(run, step).await?;
                let hashes: Vec<(DocumentKind, ContentHash)> = self.linked_hashes(run).await?;
                let llm = llm()?;
                let completion = llm.feasibility(&run.role_name, &outputs.assessment).await?;
                self.graph.write(role, StepOutput::TaskFeasibility(&completion.output)).await?;
                self.finish(run, step, inputs(&hashes), completion, llm.model(), &names_in(&outputs))
            }
            StepName::Finalize => {
                self.graph.set_visible(role, true).await?;
                let summary = self.graph.role_summary(role).await?.ok_or_else(|| not_in_graph(run, step))?;
                Ok(plain(hash_json(&summary)?))
            }
        }
    }

    /// The outcome of an AI step: its hashes, the tokens and model it used, what it produced,
    /// and why that deserves a review (outputs under [`REVIEW_BELOW`], items dropped from the
    /// model's answer).
    fn finish<T: Serialize + Digestible>(
        &self,
        run: &Run,
        step: StepName,
        input_hash: String,
        completion: Completion<T>,
        model: &str,
        names: &Names,
    ) -> Result<StepOutcome, StepFailure> {
        let discarded = &completion.discarded;
        if !discarded.is_empty() {
            tracing::info!(
                run = %run.workflow_id, %step, discarded = discarded.len(),
                "the model's answer had items dropped while validating: {discarded:?}"
            );
        }
        let mut dropped: Vec<String> = discarded
            .iter()
            .take(DROPPED_REASONS)
            .map(|item| format!("dropped from the model's answer: {item}"))
            .collect();
        if discarded.len() > DROPPED_REASONS {
            dropped
                .push(format!("and {} more items dropped from the model's answer", discarded.len() - DROPPED_REASONS));
        }
        Ok(StepOutcome {
            input_hash,
            output_hash: hash_json(&completion.output)?,
            usage: completion.usage,
            model: Some(model.to_owned()),
            digest: Some(StepDigest::of(&completion.output, names).with_review(REVIEW_BELOW, dropped)),
        })
    }

    /// Fetches and extracts every document of the run, in the order pushed.
    async fn load_documents(&self, run: &Run) -> Result<Vec<(DocumentRef, ExtractedDocument)>, StepFailure> {
        if run.documents.is_empty() {
            return Err(StepFailure::permanent("NO_DOCUMENTS", "the run has no documents; push the role with one"));
        }
        let mut loaded = Vec::with_capacity(run.documents.len());
        for doc in &run.documents {
            let uri = DocumentUri::parse(&doc.uri)?;
            let extracted = self.documents.load(&uri).await?;
            loaded.push((doc.clone(), extracted));
        }
        Ok(loaded)
    }

    /// The documents' texts by content hash, and their kinds and hashes.
    async fn texts(&self, run: &Run) -> Result<(DocumentTexts, Vec<(DocumentKind, ContentHash)>), StepFailure> {
        let loaded = self.load_documents(run).await?;
        let hashes = document_hashes(&loaded);
        let mut texts = DocumentTexts::new();
        for (_, doc) in loaded {
            texts.insert(doc.content_hash, doc.text);
        }
        Ok((texts, hashes))
    }

    /// The content hashes `document_linking` recorded for the run's documents (for steps that
    /// consume a kind of document without reading its text).
    async fn linked_hashes(&self, run: &Run) -> Result<Vec<(DocumentKind, ContentHash)>, StepFailure> {
        let uris: Vec<String> = run.documents.iter().map(|d| d.uri.clone()).collect();
        let recorded = self.store.document_hashes(&uris).await?;
        Ok(run
            .documents
            .iter()
            .filter_map(|doc| {
                let hash = recorded.iter().find(|r| r.uri == doc.uri)?;
                Some((doc.step_kind(), hash.content_hash.clone()))
            })
            .collect())
    }

    /// Everything the graph holds for the run's role (the upstream outputs a step reads).
    async fn outputs(&self, run: &Run, step: StepName) -> Result<RoleOutputs, StepFailure> {
        self.graph.role_outputs(&run.role_id).await?.ok_or_else(|| not_in_graph(run, step))
    }
}

/// The names of the role's tasks and skills, for the digests of outputs that name them by key.
fn names_in(outputs: &RoleOutputs) -> Names {
    Names::new(Some(&outputs.assessment), Some(&outputs.skills))
}

fn not_in_graph(run: &Run, step: StepName) -> StepFailure {
    StepFailure::permanent(
        "UPSTREAM_OUTPUT_MISSING",
        format!(
            "{step} of {}: role {} is not in the role graph; its earlier steps must run first",
            run.workflow_id, run.role_id
        ),
    )
}

fn document_hashes(loaded: &[(DocumentRef, ExtractedDocument)]) -> Vec<(DocumentKind, ContentHash)> {
    loaded.iter().map(|(doc, extracted)| (doc.step_kind(), extracted.content_hash.clone())).collect()
}

/// Hex SHA-256 of a value's JSON: the identity of a step's output.
fn hash_json<T: Serialize>(value: &T) -> Result<String, StepFailure> {
    let bytes = serde_json::to_vec(value)
        .map_err(|err| StepFailure::permanent("OUTPUT_NOT_SERIALIZABLE", format!("cannot hash the output: {err}")))?;
    let digest = Sha256::digest(&bytes);
    Ok(hex::encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_hashes_follow_the_content() -> anyhow::Result<()> {
        let a = hash_json(&vec!["x", "y"])?;
        assert_eq!(a, hash_json(&vec!["x", "y"])?);
        assert_ne!(a, hash_json(&vec!["y", "x"])?);
        assert_eq!(a.len(), 64);
        Ok(())
    }
}
