//! One process-wide bound on LLM use: requests per minute, tokens per minute, and requests in
//! flight. Callers over a bound wait their turn; nothing fails because a bound was reached.

use std::{num::NonZeroU32, sync::Arc};

use governor::{
    Quota, RateLimiter,
    clock::Clock,
    middleware::NoOpMiddleware,
    state::{InMemoryState, NotKeyed},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bounds of a [`Limiter`] (the proposed `llm.requests_per_minute`, `llm.tokens_per_minute`,
/// `llm.max_concurrent` configuration keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterSettings {
    /// Requests started per minute, at most (a full minute's worth may start at once).
    pub requests_per_minute: NonZeroU32,
    /// Tokens (prompt and answer) per minute, at most.
    pub tokens_per_minute: NonZeroU32,
    /// Requests in flight at once, at most.
    pub max_concurrent: usize,
}

/// Time as tokio sees it, so the limiter waits on tokio's timer: in production that is the real
/// clock, and under `tokio::time::pause` (tests) it is virtual time that advances on its own when
/// every task waits — the limiter is tested without sleeping.
#[derive(Debug, Clone, Copy, Default)]
struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> Self::Instant {
        tokio::time::Instant::now().into_std()
    }
}

type Gcra = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;

/// A shared limiter of LLM requests: create one per process and hand it to every provider.
///
/// Token counts are known only after an answer, so a request reserves its *estimated* tokens up
/// front ([`Limiter::acquire`]) and pays the excess afterwards ([`Limiter::charge`]), which delays
/// later requests just as the provider's own token bucket would.
#[derive(Debug)]
pub struct Limiter {
    requests: Gcra,
    tokens: Gcra,
    token_burst: NonZeroU32,
    in_flight: Arc<Semaphore>,
}

/// Permission to have one request in flight; dropping it frees the slot.
#[derive(Debug)]
pub struct LimiterPermit {
    _slot: Option<OwnedSemaphorePermit>,
}

impl Limiter {
    /// A limiter with these bounds.
    pub fn new(settings: LimiterSettings) -> Self {
        Self {
            requests: RateLimiter::direct_with_clock(Quota::per_minute(settings.requests_per_minute), TokioClock),
            tokens: RateLimiter::direct_with_clock(Quota::per_minute(settings.tokens_per_minute), TokioClock),
            token_burst: settings.tokens_per_minute,
            // A zero would deadlock every caller; one in flight is the least that makes progress.
            in_flight: Arc::new(Semaphore::new(settings.max_concurrent.max(1))),
        }
    }

    /// Waits until one more request may start with about `estimated_tokens` tokens: a free
    /// in-flight slot, a request of the per-minute budget, and the tokens. A request estimated
    /// above a whole minute's tokens waits for a full bucket rather than failing.
    pub async fn acquire(&self, estimated_tokens: u64) -> LimiterPermit {
        // `acquire_owned` fails only on a closed semaphore, and this one is never closed.
        let slot = Arc::clone(&self.in_flight).acquire_owned().await.ok();
        wait_for(&self.requests, NonZeroU32::MIN).await;
        self.charge(estimated_tokens).await;
        LimiterPermit { _slot: slot }
    }

    /// Takes `tokens` more from the per-minute token budget, waiting while it is spent: how a
    /// request that used more than it reserved pays the difference.
    pub async fn charge(&self, tokens: u64) {
        let tokens = u32::try_from(tokens).unwrap_or(u32::MAX).min(self.token_burst.get());
        if let Some(n) = NonZeroU32::new(tokens) {
            wait_for(&self.tokens, n).await;
        }
    }
}

/// Waits until `n` cells of a GCRA bucket are free and takes them.
async fn wait_for(bucket: &Gcra, n: NonZeroU32) {
    loop {
        match bucket.check_n(n) {
            Ok(Ok(())) => return,
            Ok(Err(not_until)) => tokio::time::sleep(not_until.wait_time_from(TokioClock.now())).await,
            // More than the burst can never be granted; callers clamp `n` to it, so this is
            // unreachable, and letting the request through beats waiting forever.
            Err(_) => return,
        }
    }
}
