//! The audit log (docs/admission.md): every mutating call, allowed or denied, and every denied read —
//! who, company, action, target, outcome, request id, trace id, time — append-only and
//! tamper-evident.
//!
//! Entries form a hash chain: entry `n` stores the hash of entry `n - 1` and its own hash over its
//! canonical JSON (which includes that previous hash). The hash is keyed — HMAC-SHA256 under a
//! [`ChainKey`] the database does not hold, stored as `hmac-sha256:<hex>` — so someone who can
//! write the database alone cannot recompute the chain after changing an entry. (Logs written
//! before the key hold plain SHA-256 hashes; such entries are accepted only before the first
//! keyed one, whose keyed hash covers them through their hashes.) The chain head (the last
//! sequence number and hash) is checkpointed in the same transaction as every append, so an
//! edited entry (its hash no longer matches), a deleted one (a gap, and the next entry's previous
//! hash mismatches) and a truncated tail (the head names entries that are gone) are all detected
//! by a [`ChainWalk`], which names the first bad entry. The server also logs the head as it advances;
//! a walk given such a head recorded elsewhere checks that the log still holds it, which
//! catches what the checkpoint cannot: a tail cut off together with the head.

use std::sync::Arc;

use hmac::{Hmac, Mac as _};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::Timestamp;
use crate::ids::{CompanyId, TraceId};

/// The previous hash of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audited call, as the server records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// When the call was answered (microsecond precision, as stored).
    pub time: Timestamp,
    /// The caller's user id; `anonymous` when the call was not authenticated.
    pub actor: String,
    /// The caller's role (`viewer`, `operator`, `admin`), empty when not authenticated.
    pub role: String,
    /// The company the call concerned, when known.
    pub company: Option<CompanyId>,
    /// The RPC (`Push`, `Cancel`, …).
    pub action: String,
    /// What it acted on: a run, role, batch or company id.
    pub target: String,
    /// `OK` or the gRPC status code's name (`PERMISSION_DENIED`, …).
    pub outcome: String,
    /// Why, for a refusal: the error's message.
    pub reason: String,
    /// The client's idempotency key, if it sent one.
    pub request_id: Option<String>,
    /// The call's trace id.
    pub trace_id: Option<TraceId>,
    /// The caller's address.
    pub peer: Option<String>,
}

/// A stored entry: the event and its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its position, from 1, without gaps.
    pub seq: u64,
    /// What was recorded.
    pub event: AuditEvent,
    /// The hash of the entry before it ([`GENESIS`] for the first).
    pub prev_hash: String,
    /// Its own hash ([`entry_hash`]).
    pub hash: String,
}

/// The checkpointed end of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHead {
    /// The last entry's sequence number (0: none yet).
    pub seq: u64,
    /// The last entry's hash ([`GENESIS`] when none).
    pub hash: String,
}

/// Which entries an admin lists (all set filters must match).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this company's.
    pub company: Option<CompanyId>,
    /// Only this caller's.
    pub actor: Option<String>,
    /// Only this RPC's.
    pub action: Option<String>,
    /// Only refused calls.
    pub denied_only: bool,
    /// Only entries before this sequence number (the page cursor; newest first).
    pub before_seq: Option<u64>,
}

/// What the hash covers, in a fixed order.
#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    time_micros: i64,
    actor: &'a str,
    role: &'a str,
    company: Option<&'a str>,
    action: &'a str,
    target: &'a str,
    outcome: &'a str,
    reason: &'a str,
    request_id: Option<&'a str>,
    trace_id: Option<&'a str>,
    peer: Option<&'a str>,
    prev_hash: &'a str,
}

/// How keyed hashes are stored.
const KEYED: &str = "hmac-sha256:";

/// The key of the audit chain's hashes: held by the servers, not the database.
#[derive(Clone, Default)]
pub struct ChainKey(Option<Arc<[u8]>>);

impl ChainKey {
    /// A key.
    pub fn new(secret: &[u8]) -> Self {
        Self(Some(secret.into()))
    }

    /// No key: plain SHA-256, the form of logs written before the chain was keyed.
    pub fn unkeyed() -> Self {
        Self(None)
    }
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "ChainKey(***)" } else { "ChainKey(unkeyed)" })
    }
}

/// The hash of entry `seq` holding `event` after an entry hashed `prev_hash`, over its canonical
/// JSON: `hmac-sha256:<hex>` under `key`, or lowercase hex SHA-256 without one.
pub fn entry_hash(seq: u64, event: &AuditEvent, prev_hash: &str, key: &ChainKey) -> String {
    let hashed = Hashed {
        seq,
        time_micros: event.time.timestamp_micros(),
        actor: &event.actor,
        role: &event.role,
        company: event.company.as_ref().map(CompanyId::as_str),
        action: &event.action,
        target: &event.target,
        outcome: &event.outcome,
        reason: &event.reason,
        request_id: event.request_id.as_deref(),
        trace_id: event.trace_id.as_ref().map(TraceId::as_str),
        peer: event.peer.as_deref(),
        prev_hash,
    };
    // Serializing a struct of strings and integers cannot fail.
    let json = serde_json::to_vec(&hashed).unwrap_or_default();
    match key.0.as_deref().map(Hmac::<Sha256>::new_from_slice) {
        Some(Ok(mac)) => format!("{KEYED}{}", hex::encode(mac.chain_update(&json).finalize().into_bytes())),
        // HMAC takes keys of any length; an unkeyed chain is what a missing key gives.
        Some(Err(_)) | None => hex::encode(Sha256::digest(&json)),
    }
}

/// Chains `events` after `head` under `key`: the entries to store and the new head.
pub fn chain(head: &AuditHead, events: Vec<AuditEvent>, key: &ChainKey) -> (Vec<AuditEntry>, AuditHead) {
    let mut prev = head.clone();
    let mut entries = Vec::with_capacity(events.len());
    for event in events {
        let seq = prev.seq + 1;
        let hash = entry_hash(seq, &event, &prev.hash, key);
        entries.push(AuditEntry { seq, event, prev_hash: prev.hash.clone(), hash: hash.clone() });
        prev = AuditHead { seq, hash };
    }
    (entries, prev)
}

/// Where the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit entry #{seq}: {problem}")]
pub struct ChainBreak {
    /// The first bad entry (or the first missing one).
    pub seq: u64,
    /// What is wrong with it.
    pub problem: String,
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The head verified.
    pub head: AuditHead,
    /// Entries written before the chain was keyed (all at the start of the log).
    pub unkeyed: u64,
    /// The entry that a head recorded elsewhere names, when one was given.
    pub expected_at: Option<u64>,
}

/// A walk over the whole log in order that checks every link (keyed hashes under its key), then
/// the checkpointed head. With an expected head (a hash recorded elsewhere, such as the head the
/// server logs), the log must also still hold an entry with that hash. The store reads the log
/// page by page and feeds it here: this is the whole of the rule, free of I/O.
#[derive(Debug)]
pub struct ChainWalk<'a> {
    key: &'a ChainKey,
    expect_head: Option<&'a str>,
    last: AuditHead,
    unkeyed: u64,
    keyed_seen: bool,
    expected_at: Option<u64>,
}

impl<'a> ChainWalk<'a> {
    /// A walk from the start of the log.
    pub fn new(key: &'a ChainKey, expect_head: Option<&'a str>) -> Self {
        Self {
            key,
            expect_head,
            last: AuditHead { seq: 0, hash: GENESIS.to_owned() },
            unkeyed: 0,
            keyed_seen: false,
            expected_at: expect_head.filter(|h| *h == GENESIS).map(|_| 0),
        }
    }

    /// The sequence number of the last entry walked (0 before the first): where to read on.
    pub fn position(&self) -> u64 {
        self.last.seq
    }

    /// Checks the next entry of the log.
    pub fn next(&mut self, entry: AuditEntry) -> Result<(), ChainBreak> {
        let break_at = |problem: &str| ChainBreak { seq: entry.seq, problem: problem.to_owned() };
        if entry.seq != self.last.seq + 1 {
            return Err(ChainBreak {
                seq: self.last.seq + 1,
                problem: format!("is missing (the next entry stored is #{})", entry.seq),
            });
        }
        if entry.prev_hash != self.last.hash {
            return Err(break_at("does not follow the entry before it (its previous hash differs)"));
        }
        let recomputed = if entry.hash.starts_with(KEYED) {
            if self.key.0.is_none() {
                return Err(break_at("is keyed, and no key was given to verify it with"));
            }
            self.keyed_seen = true;
            entry_hash(entry.seq, &entry.event, &entry.prev_hash, self.key)
        } else if self.keyed_seen {
            return Err(break_at(
                "is not keyed, yet follows keyed entries: it was rewritten by someone without the key",
            ));
        } else {
            self.unkeyed += 1;
            entry_hash(entry.seq, &entry.event, &entry.prev_hash, &ChainKey::unkeyed())
        };
        if recomputed != entry.hash {
            return Err(break_at("was changed after it was written (its hash does not match)"));
        }
        if self.expect_head == Some(entry.hash.as_str()) {
            self.expected_at = Some(entry.seq);
        }
        self.last = AuditHead { seq: entry.seq, hash: entry.hash };
        Ok(())
    }

    /// Ends the walk after the last stored entry: checks it against the checkpointed `head`.
    pub fn finish(self, head: AuditHead) -> Result<Verified, ChainBreak> {
        let last = self.last;
        if last.seq < head.seq {
            return Err(ChainBreak {
                seq: last.seq + 1,
                problem: format!("and every entry up to #{} are missing (the log was truncated)", head.seq),
            });
        }
        if last != head {
            return Err(ChainBreak {
                seq: head.seq.max(1),
                problem: format!(
                    "the checkpointed head (#{} {}) does not match the last entry (#{} {})",
                    head.seq, head.hash, last.seq, last.hash
                ),
            });
        }
        if let Some(expected) = self.expect_head
            && self.expected_at.is_none()
        {
            return Err(ChainBreak {
                seq: head.seq.max(1),
                problem: format!(
                    "the log does not hold the expected head {expected}: entries up to it were changed, or removed with the head"
                ),
            });
        }
        Ok(Verified { head, unkeyed: self.unkeyed, expected_at: self.expected_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> AuditEvent {
        AuditEvent {
            time: chrono::Utc::now(),
            actor: format!("user-{n}"),
            role: "operator".into(),
            company: CompanyId::parse("acme").ok(),
            action: "Push".into(),
            target: "cr-acme-analyst".into(),
            outcome: "OK".into(),
            reason: String::new(),
            request_id: None,
            trace_id: None,
            peer: Some("127.0.0.1".into()),
        }
    }

    #[test]
    fn a_chain_links_every_entry_to_the_one_before() {
        let key = ChainKey::new(b"the audit key of this test, 32 bytes+");
        let genesis = AuditHead { seq: 0, hash: GENESIS.into() };
        let (first, head) = chain(&genesis, vec![event(1), event(2)], &key);
        let (more, head) = chain(&head, vec![event(3)], &key);
        let all: Vec<_> = first.into_iter().chain(more).collect();
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(all[0].prev_hash, GENESIS);
        assert!(all.windows(2).all(|w| w[1].prev_hash == w[0].hash));
        assert_eq!(head, AuditHead { seq: 3, hash: all[2].hash.clone() });
        assert!(all.iter().all(|e| e.hash.starts_with(KEYED)));
        // Any field changes the hash.
        let mut edited = all[1].event.clone();
        edited.outcome = "PERMISSION_DENIED".into();
        assert_ne!(entry_hash(2, &edited, &all[1].prev_hash, &key), all[1].hash);
        // Without the key, the hash cannot be recomputed: neither unkeyed nor under another key.
        assert_ne!(entry_hash(2, &all[1].event, &all[1].prev_hash, &ChainKey::unkeyed()), all[1].hash);
        let other = ChainKey::new(b"someone else's key, also 32 bytes long");
        assert_ne!(entry_hash(2, &all[1].event, &all[1].prev_hash, &other), all[1].hash);
    }
}
