//! Client `request_id`s: a retried mutating call (Push, Retry, Cancel) returns the first
//! call's answer, byte for byte; the same `request_id` with another payload is `INVALID_ARGUMENT`.
//!
//! The key is (company, request_id), kept [`etter_store::IDEMPOTENCY_TTL`]. The payload
//! is identified by the hash of the request without its `request_id`. A call looks its key up
//! before doing anything ([`Idempotency::replay`]) and stores its answer after
//! ([`Idempotency::remember`]); of two concurrent first calls, the one that stores second answers
//! with the first one's answer.

use etter_core::ids::{CompanyId, RequestId};
use etter_store::{self, PutRequest, RequestKey, RunStore};
use prost::Message;
use sha2::{Digest as _, Sha256};

use crate::error::ApiError;

/// Parses a request's optional `request_id` (empty = none), as an `INVALID_ARGUMENT` on
/// `request_id` when malformed.
pub fn request_id(value: &str, reason: &'static str) -> Result<Option<RequestId>, ApiError> {
    if value.is_empty() {
        return Ok(None);
    }
    RequestId::parse(value).map(Some).map_err(|e| ApiError::invalid(reason, "request_id", e.problem))
}

/// Hex SHA-256 of a message's encoding. Callers pass the request with its `request_id` cleared.
pub fn payload_hash<M: Message>(payload_without_request_id: &M) -> String {
    hex::encode(Sha256::digest(payload_without_request_id.encode_to_vec()))
}

/// The idempotency of one call: nothing to do without a `request_id`.
pub struct Idempotency<'a> {
    store: &'a dyn RunStore,
    key: Option<RequestKey>,
    hash: String,
    /// The RPC, for the error of an unreadable stored answer.
    rpc: &'static str,
}

impl<'a> Idempotency<'a> {
    /// The idempotency of a call of `rpc` in `company` with `request_id` and a payload hashed by
    /// [`payload_hash`].
    pub fn new(
        store: &'a dyn RunStore,
        rpc: &'static str,
        company: &CompanyId,
        request_id: Option<RequestId>,
        hash: String,
    ) -> Self {
        let key = request_id.map(|request_id| RequestKey { company: company.clone(), request_id });
        Self { store, key, hash, rpc }
    }

    /// The answer of an earlier call with the same key and payload, if any.
    pub async fn replay<R: Message + Default>(&self) -> Result<Option<R>, ApiError> {
        let Some(key) = &self.key else { return Ok(None) };
        match self.store.lookup_request(key, &self.hash, etter_store::now()).await? {
            Some(stored) => self.decode(&stored).map(Some),
            None => Ok(None),
        }
    }

    /// Stores `response` as the key's answer and answers it — or, when a concurrent call with the
    /// same key stored its answer first, that answer.
    pub async fn remember<R: Message + Default>(&self, response: R) -> Result<R, ApiError> {
        let Some(key) = &self.key else { return Ok(response) };
        match self.store.put_request_if_absent(key, &self.hash, &response.encode_to_vec(), etter_store::now()).await? {
            PutRequest::Inserted => Ok(response),
            PutRequest::Existing(stored) => self.decode(&stored),
        }
    }

    fn decode<R: Message + Default>(&self, bytes: &[u8]) -> Result<R, ApiError> {
        R::decode(bytes).map_err(|e| ApiError::Internal(format!("stored {} response is unreadable: {e}", self.rpc)))
    }
}
