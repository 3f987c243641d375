//! Refused calls cost the caller, not the server.
//!
//! Every call refused for what it asked (invalid, not permitted, not found, malformed) is counted
//! against its caller (the token's user) and its peer address, each a GCRA budget of
//! `limits.refused_per_minute`. A caller or address past its budget is blocked until the budget
//! would allow one more: its calls are answered `RESOURCE_EXHAUSTED` with `RetryInfo` by the
//! authenticator, before the request is decoded, handled or recorded in the audit log. So a token
//! of the lowest role cannot make the server store megabytes of refusals, and an address cannot
//! probe ids or tokens at the server's expense.
//!
//! A blocked address blocks the calls that come without a valid token; a caller with a valid
//! token answers for itself (many users may share one address behind a proxy, and one of them
//! must not lock the others out).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};
use tonic::Code;

use crate::error::ApiError;

/// Whether a call answered `code` was refused for what it asked (its caller's doing), as opposed
/// to the server's state (`UNAVAILABLE`, `INTERNAL`, …) or a rate (`RESOURCE_EXHAUSTED`).
pub fn is_callers_fault(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::PermissionDenied
            | Code::NotFound
            | Code::Unauthenticated
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::OutOfRange
    )
}

/// Budgets of refused calls, per caller and per peer address.
pub struct Refusals {
    by_peer: DefaultKeyedRateLimiter<IpAddr>,
    by_caller: DefaultKeyedRateLimiter<String>,
    /// Who is blocked, until when.
    blocked: Mutex<HashMap<Key, Instant>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Peer(IpAddr),
    Caller(String),
}

impl std::fmt::Debug for Refusals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refusals").finish_non_exhaustive()
    }
}

impl Refusals {
    /// Budgets of `per_minute` refused calls (at most that many at once).
    pub fn new(per_minute: u32) -> Self {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN));
        Self { by_peer: RateLimiter::keyed(quota), by_caller: RateLimiter::keyed(quota), blocked: Mutex::default() }
    }

    /// Before a call: `RESOURCE_EXHAUSTED` (with when to try again) while its caller (with a
    /// valid token), or else its address, is past its budget.
    pub fn admit(&self, peer: Option<IpAddr>, caller: Option<&str>) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        if blocked.is_empty() {
            return Ok(());
        }
        let key = match caller {
            Some(caller) => Some(Key::Caller(caller.to_owned())),
            None => peer.map(Key::Peer),
        };
        if let Some(key) = key {
            match blocked.get(&key) {
                Some(until) if *until > now => {
                    let wait = *until - now;
                    let who = match &key {
                        Key::Peer(ip) => format!("address {ip}"),
                        Key::Caller(user) => format!("user {user}"),
                    };
                    return Err(ApiError::ResourceExhausted {
                        reason: "REFUSED_CALLS_RATE_LIMITED",
                        description: format!(
                            "too many refused calls from {who}; retry in {} ms, and fix what the refusals said",
                            wait.as_millis().max(1)
                        ),
                        retry_after: Some(wait),
                        quota: Vec::new(),
                    });
                }
                Some(_) => {
                    blocked.remove(&key);
                }
                None => {}
            }
        }
        Ok(())
    }

    /// After a call refused for what it asked: counts it against its peer and caller, blocking
    /// either once past its budget.
    pub fn count(&self, peer: Option<IpAddr>, caller: Option<&str>) {
        let mut over = Vec::new();
        if let Some(peer) = peer
            && let Err(not_until) = self.by_peer.check_key(&peer)
        {
            over.push((Key::Peer(peer), not_until.wait_time_from(self.by_peer.clock().now())));
        }
        if let Some(caller) = caller {
            let caller = caller.to_owned();
            if let Err(not_until) = self.by_caller.check_key(&caller) {
                over.push((Key::Caller(caller), not_until.wait_time_from(self.by_caller.clock().now())));
            }
        }
        if over.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, wait) in over {
            tracing::warn!(?key, wait_ms = wait.as_millis() as u64, "too many refused calls; blocking for a while");
            blocked.insert(key, now + wait.max(Duration::from_millis(1)));
        }
    }

    /// Forgets callers and addresses not refused lately (call now and then).
    pub fn prune(&self) {
        self.by_peer.retain_recent();
        self.by_caller.retain_recent();
        self.by_peer.shrink_to_fit();
        self.by_caller.shrink_to_fit();
        let now = Instant::now();
        self.blocked.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_past_its_refusals_is_blocked_with_a_wait_and_others_are_not() {
        let refusals = Refusals::new(3);
        let (peer, other_peer) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        for _ in 0..3 {
            assert!(refusals.admit(Some(peer), Some("mallory")).is_ok());
            refusals.count(Some(peer), Some("mallory"));
        }
        // The fourth refusal is past the budget: from then on, calls are refused before anything.
        refusals.count(Some(peer), Some("mallory"));
        match refusals.admit(Some(peer), Some("mallory")) {
            Err(ApiError::ResourceExhausted { reason, retry_after: Some(wait), .. }) => {
                assert_eq!(reason, "REFUSED_CALLS_RATE_LIMITED");
                assert!(wait > Duration::ZERO && wait <= Duration::from_secs(20), "{wait:?}");
            }
            other => panic!("expected RESOURCE_EXHAUSTED with a wait, got {other:?}"),
        }
        // The same user from another address is still blocked; calls without a valid token from
        // the address are too; another user from the address is not (a proxy's address is shared).
        assert!(refusals.admit(Some(other_peer), Some("mallory")).is_err());
        assert!(refusals.admit(Some(peer), None).is_err());
        assert!(refusals.admit(Some(peer), Some("alice")).is_ok());
        assert!(refusals.admit(Some(other_peer), None).is_ok());
        assert!(refusals.admit(None, None).is_ok());
    }

    #[test]
    fn only_refusals_for_what_was_asked_count() {
        for code in [Code::InvalidArgument, Code::PermissionDenied, Code::NotFound, Code::Unauthenticated] {
            assert!(is_callers_fault(code), "{code:?}");
        }
        for code in [Code::Ok, Code::Unavailable, Code::Internal, Code::ResourceExhausted, Code::DeadlineExceeded] {
            assert!(!is_callers_fault(code), "{code:?}");
        }
    }
}
