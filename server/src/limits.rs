//! Admission limits per company (docs/admission.md): how many calls a company's callers may make per
//! minute, and how many runs it (and everyone together) may have QUEUED.
//!
//! **Calls.** governor's GCRA limiters, keyed by company: no timer or task per key, a few bytes
//! of state per company, and exact answers for when a refused call may be made again (sent as
//! `RetryInfo`). Companies of one quota share one keyed limiter; a company whose quota the
//! companies file changes moves to the limiter of its new quota. Keys whose state is back to
//! fresh are pruned, and limiters nobody uses any more are dropped.
//!
//! **Queued runs (backpressure).** A push, batch or retry that would take a company past its
//! `max_queued`, or everyone past `limits.max_queued`, is refused whole with the numbers
//! (`QuotaFailure`), never half-admitted. The check reads the store's counts before the write, so
//! concurrent admissions can overshoot a cap by at most what they add together.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex},
};

use crate::config::LimitsConfig;
use chrono::{Datelike as _, NaiveDate};
use etter_core::ids::CompanyId;
use etter_core::lifecycle::RunState;
use etter_store::{self, RunStore};
use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::NoOpMiddleware,
    state::keyed::DefaultKeyedStateStore,
};

use crate::{
    companies::{Companies, CompanyLimits},
    error::ApiError,
};

/// A calendar month (UTC), the period of token budgets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Month {
    /// Its first day.
    pub first: NaiveDate,
    /// Its last day.
    pub last: NaiveDate,
    /// `YYYY-MM`.
    pub label: String,
}

impl Month {
    /// The month `day` is in.
    pub fn containing(day: NaiveDate) -> Self {
        let first = day.with_day(1).unwrap_or(day);
        let next = if first.month() == 12 {
            NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
        } else {
            NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
        };
        let last = next.and_then(|n| n.pred_opt()).unwrap_or(first);
        Self { first, last, label: first.format("%Y-%m").to_string() }
    }

    /// The month `YYYY-MM` names.
    pub fn parse(label: &str) -> Option<Self> {
        NaiveDate::parse_from_str(&format!("{label}-01"), "%Y-%m-%d").ok().map(Self::containing)
    }
}

/// A company's token budget in one month.
#[derive(Debug, Clone)]
pub struct Budget {
    /// The month.
    pub month: Month,
    /// Tokens it may use in the month; 0 = no budget.
    pub limit: u64,
    /// Tokens its steps used in the month.
    pub used: i64,
    /// Tokens its active runs are still estimated to use.
    pub reserved: i64,
}

impl Budget {
    /// Whether its steps used the whole budget (never without a budget).
    pub fn used_up(&self) -> bool {
        self.limit > 0 && self.used >= i64::try_from(self.limit).unwrap_or(i64::MAX)
    }

    /// What is left to admit (unbounded without a budget).
    pub fn remaining(&self) -> i64 {
        if self.limit == 0 {
            return i64::MAX;
        }
        i64::try_from(self.limit).unwrap_or(i64::MAX).saturating_sub(self.used).saturating_sub(self.reserved).max(0)
    }
}

type Keyed<C> = RateLimiter<CompanyId, DefaultKeyedStateStore<CompanyId>, C, NoOpMiddleware<<C as Clock>::Instant>>;
/// The keyed limiters by (calls per minute, burst).
type ByQuota<C> = HashMap<(u32, u32), Arc<Keyed<C>>>;

/// The admission limits of one server.
pub struct Limits<C: Clock = DefaultClock> {
    companies: Arc<Companies>,
    max_queued: u64,
    clock: C,
    /// One keyed limiter per (calls per minute, burst).
    limiters: Mutex<ByQuota<C>>,
}

impl Limits {
    /// The limits of `companies`, on the real clock.
    pub fn new(companies: Arc<Companies>, config: &LimitsConfig) -> Self {
        Self::with_clock(companies, config, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limits<C> {
    /// The limits of `companies`, measured on `clock`.
    pub fn with_clock(companies: Arc<Companies>, config: &LimitsConfig, clock: C) -> Self {
        Self { companies, max_queued: config.max_queued, clock, limiters: Mutex::new(HashMap::new()) }
    }

    fn limiter(&self, limits: CompanyLimits) -> Arc<Keyed<C>> {
        let key = (limits.calls_per_minute, limits.burst);
        let mut limiters = self.limiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(limiters.entry(key).or_insert_with(|| {
            let per_minute = NonZeroU32::new(limits.calls_per_minute).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(limits.burst).unwrap_or(NonZeroU32::MIN);
            Arc::new(RateLimiter::dashmap_with_clock(
                Quota::per_minute(per_minute).allow_burst(burst),
                self.clock.clone(),
            ))
        }))
    }

    /// Counts one call concerning `company`; past its rate, `RESOURCE_EXHAUSTED` with when to
    /// try again.
    pub fn admit_call(&self, company: &CompanyId) -> Result<(), ApiError> {
        let limits = self.companies.limits(company);
        match self.limiter(limits).check_key(company) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let rate = format!("{} calls per minute, burst {}", limits.calls_per_minute, limits.burst);
                Err(ApiError::ResourceExhausted {
                    reason: "RATE_LIMITED",
                    description: format!(
                        "company {company} is over its limit of {rate}; retry in {} ms",
                        wait.as_millis().max(1)
                    ),
                    retry_after: Some(wait),
                    quota: vec![(format!("company:{company}"), rate)],
                })
            }
        }
    }

    /// Checks that `adding` more QUEUED runs of `company` fit under its cap and the global one.
    pub async fn admit_queued(&self, store: &dyn RunStore, company: &CompanyId, adding: u64) -> Result<(), ApiError> {
        if adding == 0 {
            return Ok(());
        }
        let cap = self.companies.limits(company).max_queued;
        // Two reads on two pooled connections at once: the wait of one round trip, not two.
        let (queued, everyone) = futures::try_join!(
            store.count_runs(Some(company), &[RunState::Validating, RunState::Queued]),
            store.count_runs(None, &[RunState::Validating, RunState::Queued])
        )?;
        // A batch can be made smaller; one run (a push, a retry) can only wait for room.
        let what_to_do = if adding > 1 {
            "push fewer roles, or wait for queued runs to start"
        } else {
            "wait for queued runs to start, then send it again"
        };
        let full = |subject: String, queued: u64, cap: u64| ApiError::ResourceExhausted {
            reason: "QUEUE_FULL",
            description: format!(
                "{subject} has {queued} queued runs of at most {cap}, so there is room for {} more and this request \
                 adds {adding}; {what_to_do}",
                cap.saturating_sub(queued)
            ),
            retry_after: None,
            quota: vec![(subject.clone(), format!("at most {cap} queued runs; {queued} queued, {adding} more asked"))],
        };
        if queued.saturating_add(adding) > cap {
            return Err(full(format!("company {company}"), queued, cap));
        }
        if everyone.saturating_add(adding) > self.max_queued {
            return Err(full("the service".to_owned(), everyone, self.max_queued));
        }
        Ok(())
    }

    /// Whether the company has a token budget.
    pub fn has_budget(&self, company: &CompanyId) -> bool {
        self.companies.limits(company).token_budget > 0
    }

    /// The company's token budget in `month`: its budget per month (0 = none), what its steps
    /// used in that month and, for the current month, what its active runs still reserve.
    pub async fn budget(&self, store: &dyn RunStore, company: &CompanyId, month: Month) -> Result<Budget, ApiError> {
        let current = month == Month::containing(etter_store::now().date_naive());
        let reservations = async { if current { store.token_reservations(company).await } else { Ok(0) } };
        let (usage, reserved) = futures::try_join!(store.usage(company, month.first, month.last), reservations)?;
        let used = usage.iter().map(|row| row.tokens.input.saturating_add(row.tokens.output)).sum::<i64>();
        Ok(Budget { month, limit: self.companies.limits(company).token_budget, used, reserved })
    }

    /// Checks that `adding` more estimated tokens, for `runs` new runs, fit in the company's budget
    /// this month (admission reserves them: they count until the runs end); past it,
    /// `RESOURCE_EXHAUSTED` with a `QuotaFailure` saying what remains.
    pub async fn admit_tokens(
        &self,
        store: &dyn RunStore,
        company: &CompanyId,
        runs: usize,
        adding: i64,
    ) -> Result<(), ApiError> {
        if self.companies.limits(company).token_budget == 0 || adding <= 0 {
            return Ok(());
        }
        let budget = self.budget(store, company, Month::containing(etter_store::now().date_naive())).await?;
        let remaining = budget.remaining();
        if adding > remaining {
            let subject = format!("company:{company}:tokens:{}", budget.month.label);
            let numbers = format!(
                "budget {} tokens for {}; used {}, reserved by queued and running runs {}, remaining {remaining}; this \
                 request needs {adding}",
                budget.limit, budget.month.label, budget.used, budget.reserved
            );
            // What could make room: runs that end use less than they reserved; a batch can be smaller.
            let mut options = Vec::new();
            if budget.reserved > 0 {
                options.push("wait for its queued and running runs to end (what they do not use is released)");
            }
            if runs > 1 && remaining > 0 {
                options.push("push fewer roles");
            }
            options.extend(["wait for next month", "ask for a larger budget"]);
            let what_to_do = match options.split_last() {
                Some((last, rest)) if !rest.is_empty() => format!("{}, or {last}", rest.join(", ")),
                _ => options.join(""),
            };
            return Err(ApiError::ResourceExhausted {
                reason: "BUDGET_EXCEEDED",
                description: format!(
                    "company {company} has {remaining} tokens of this month's budget left (after what its queued \
                     and running runs reserve) and this request needs {adding}; {what_to_do}"
                ),
                retry_after: None,
                quota: vec![(subject, numbers)],
            });
        }
        Ok(())
    }

    /// Forgets companies whose call state is fresh again, and limiters of quotas nobody has any
    /// more (call now and then).
    pub fn prune(&self) {
        let mut limiters = self.limiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        limiters.retain(|_, limiter| {
            limiter.retain_recent();
            limiter.shrink_to_fit();
            !limiter.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn limits(
        clock: &FakeRelativeClock,
        calls_per_minute: u32,
        burst: u32,
    ) -> anyhow::Result<Limits<FakeRelativeClock>> {
        let config = LimitsConfig { calls_per_minute, burst, ..LimitsConfig::default() };
        let companies = Arc::new(Companies::load(std::path::Path::new(""), CompanyLimits::defaults(&config))?);
        Ok(Limits::with_clock(companies, &config, clock.clone()))
    }

    fn retry_after(result: Result<(), ApiError>) -> Option<Duration> {
        match result {
            Err(ApiError::ResourceExhausted { reason: "RATE_LIMITED", retry_after, .. }) => retry_after,
            _ => None,
        }
    }

    #[test]
    fn exactly_the_quota_is_admitted_and_refusals_say_when_to_return() -> anyhow::Result<()> {
        let clock = FakeRelativeClock::default();
        // 60 a minute: one a second, five at once.
        let limits = limits(&clock, 60, 5)?;
        let acme = CompanyId::parse("acme")?;
        for n in 0..5 {
            assert!(limits.admit_call(&acme).is_ok(), "call {n} of the burst");
        }
        assert_eq!(retry_after(limits.admit_call(&acme)), Some(Duration::from_secs(1)));
        clock.advance(Duration::from_millis(400));
        assert_eq!(retry_after(limits.admit_call(&acme)), Some(Duration::from_millis(600)));
        clock.advance(Duration::from_millis(600));
        assert!(limits.admit_call(&acme).is_ok(), "one more after a second");
        assert!(retry_after(limits.admit_call(&acme)).is_some());
        // Across a minute, exactly the rate.
        let mut admitted = 0;
        for _ in 0..600 {
            clock.advance(Duration::from_millis(100));
            admitted += u32::from(limits.admit_call(&acme).is_ok());
        }
        assert_eq!(admitted, 60);
        Ok(())
    }

    #[test]
    fn one_companys_limit_never_affects_another() -> anyhow::Result<()> {
        let clock = FakeRelativeClock::default();
        let limits = limits(&clock, 60, 2)?;
        let (acme, globex) = (CompanyId::parse("acme")?, CompanyId::parse("globex")?);
        assert!(limits.admit_call(&acme).is_ok() && limits.admit_call(&acme).is_ok());
        assert!(limits.admit_call(&acme).is_err());
        assert!(limits.admit_call(&globex).is_ok() && limits.admit_call(&globex).is_ok(), "globex has its own");
        Ok(())
    }

    #[test]
    fn fresh_keys_and_unused_limiters_are_pruned() -> anyhow::Result<()> {
        let clock = FakeRelativeClock::default();
        let limits = limits(&clock, 60, 2)?;
        limits.admit_call(&CompanyId::parse("acme")?).ok();
        limits.prune();
        assert_eq!(limits.limiters.lock().map(|l| l.len()).unwrap_or_default(), 1, "acme's state is recent");
        clock.advance(Duration::from_secs(120));
        limits.prune();
        assert_eq!(limits.limiters.lock().map(|l| l.len()).unwrap_or_default(), 0, "nothing left to remember");
        Ok(())
    }
}
