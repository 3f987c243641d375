//! Pushed documents checked before their runs are queued: each exists, is readable, within the
//! size limit, and is what its extension says ([`Documents::check`]). A push with a document that
//! fails is refused; in a batch, that item is stored as VALIDATION_ERROR and the others go on. So
//! a run never waits in the queue only to fail on a document that was missing from the start.
//!
//! Each URI of a request is checked once, at most `documents.max_concurrent_checks` at a time.
//! When the document store cannot be reached, nothing is decided about the documents: the call
//! is refused as unavailable (nothing stored) and can be sent again with its `request_id`.

use std::collections::{BTreeSet, HashMap};

use futures::StreamExt as _;

use crate::error::{ApiError, Violation};
use etter_documents::{DocumentError, DocumentUri, Documents};
use etter_proto::v1 as pb;

/// The outcome of the checks of one request's documents, by URI as given.
#[derive(Debug, Default)]
pub struct DocumentChecks {
    refused: HashMap<String, String>,
}

impl DocumentChecks {
    /// Checks every document URI of `documents` (each once). URIs that do not parse, or that the
    /// configuration refuses outright, are skipped: the request's validation reports them. Fails
    /// as a whole when the document store is unavailable.
    pub async fn run<'a>(
        documents: &Documents,
        uris: impl IntoIterator<Item = &'a pb::Document>,
    ) -> Result<Self, ApiError> {
        let unique: BTreeSet<&str> = uris.into_iter().map(|d| d.uri.as_str()).collect();
        let checkable: Vec<DocumentUri> = unique
            .into_iter()
            .filter_map(|raw| DocumentUri::parse(raw).ok().filter(|uri| documents.config().admit(uri).is_ok()))
            .collect();
        let mut outcomes = futures::stream::iter(checkable)
            .map(|uri| check_one(documents, uri))
            .buffer_unordered(documents.config().max_concurrent_checks);
        let mut checks = DocumentChecks::default();
        while let Some((raw, outcome)) = outcomes.next().await {
            match outcome {
                Ok(_) => {}
                Err(error) if error.recoverable() => return Err(unavailable(&error)),
                Err(error) => {
                    checks.refused.insert(raw, error.to_string());
                }
            }
        }
        Ok(checks)
    }

    /// The violations of one push's (or batch item's) documents: `documents[i].uri` with what is
    /// wrong with the document and what to do.
    pub fn violations(&self, documents: &[pb::Document]) -> Vec<Violation> {
        documents
            .iter()
            .enumerate()
            .filter_map(|(i, doc)| {
                let problem = self.refused.get(&doc.uri)?;
                Some(Violation::new(format!("documents[{i}].uri"), problem.clone()))
            })
            .collect()
    }
}

/// Checks one document; answers its URI as given (the checks key) with the outcome.
async fn check_one(documents: &Documents, uri: DocumentUri) -> (String, Result<(), DocumentError>) {
    let outcome = documents.check(&uri).await.map(drop);
    (uri.as_str().to_owned(), outcome)
}

/// A document that could not be checked now (the store did not answer): the call can be sent
/// again.
fn unavailable(error: &DocumentError) -> ApiError {
    let why = match error {
        DocumentError::Unavailable { detail, .. } | DocumentError::Io { detail, .. } => detail.clone(),
        DocumentError::CheckTimeout { timeout, .. } => format!("no answer within {timeout:?}"),
        other => other.code().to_owned(),
    };
    ApiError::DependencyUnavailable {
        reason: "DOCUMENT_STORE_UNAVAILABLE",
        description: format!(
            "{}: the document could not be checked now ({why}), so nothing was stored; send the same request \
             again in a moment",
            error.uri().unwrap_or_default()
        ),
    }
}
