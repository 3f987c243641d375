//! Why an unfinished run waits, from what the server knows of its surroundings: whether Temporal
//! answers and workers poll the task queue (the health loop), and how many runs are processing
//! against the caps (the dispatcher's rounds).
//!
//! The first reason that applies is reported, root causes first: Temporal unavailable, no worker,
//! the company's token budget used up, the global cap, the company's cap; a queued run held by
//! none of these starts in the dispatcher's next round. A processing run with no step running
//! waits for a worker: no worker polls, or every worker slot is busy. A VALIDATING run waits for
//! its document checks, or for the document store when it does not answer.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU8, Ordering};

use etter_core::ids::CompanyId;
use etter_proto::v1 as pb;

/// What the server last learned of something it checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Known {
    /// Not checked yet.
    Unknown = 0,
    /// Checked: yes.
    Yes = 1,
    /// Checked: no.
    No = 2,
}

impl Known {
    fn of(value: bool) -> Self {
        if value { Known::Yes } else { Known::No }
    }

    fn load(cell: &AtomicU8) -> Self {
        match cell.load(Ordering::Relaxed) {
            1 => Known::Yes,
            2 => Known::No,
            _ => Known::Unknown,
        }
    }
}

/// How many runs are processing, as the dispatcher's latest round counted them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loads {
    /// Processing runs of every company (and starts in flight).
    pub total: u64,
    /// Processing runs per company (and starts in flight).
    pub by_company: HashMap<CompanyId, u64>,
    /// Companies whose tokens used this month reached their budget: their queued runs are held.
    pub over_budget: Vec<CompanyId>,
}

/// What holds runs back, shared by the health loop and the dispatcher (writers) and every status
/// answer (readers).
#[derive(Debug)]
pub struct Conditions {
    temporal: AtomicU8,
    workers: AtomicU8,
    document_store: AtomicU8,
    loads: RwLock<Loads>,
    max_processing: u64,
    max_processing_per_company: u64,
}

impl Conditions {
    /// Nothing known yet, for the caps of `config`.
    pub fn new(config: &crate::config::DispatchConfig) -> Self {
        Self {
            temporal: AtomicU8::new(Known::Unknown as u8),
            workers: AtomicU8::new(Known::Unknown as u8),
            document_store: AtomicU8::new(Known::Unknown as u8),
            loads: RwLock::new(Loads::default()),
            max_processing: config.max_processing,
            max_processing_per_company: config.max_processing_per_company,
        }
    }

    /// Records whether Temporal answered.
    pub fn set_temporal(&self, up: bool) {
        self.temporal.store(Known::of(up) as u8, Ordering::Relaxed);
    }

    /// Records whether a worker polls the task queue.
    pub fn set_workers(&self, polling: bool) {
        self.workers.store(Known::of(polling) as u8, Ordering::Relaxed);
    }

    /// Records whether the document store answered the latest background checks.
    pub fn set_document_store(&self, up: bool) {
        self.document_store.store(Known::of(up) as u8, Ordering::Relaxed);
    }

    /// Why a VALIDATING run waits.
    pub fn validating(&self) -> pb::WaitReason {
        if Known::load(&self.document_store) == Known::No {
            pb::WaitReason::DocumentStoreUnavailable
        } else {
            pb::WaitReason::DocumentChecks
        }
    }

    /// Whether a worker polls the task queue, as last checked.
    pub fn workers(&self) -> Known {
        Known::load(&self.workers)
    }

    /// Records the dispatcher's latest count of processing runs.
    pub fn set_loads(&self, loads: Loads) {
        match self.loads.write() {
            Ok(mut guard) => *guard = loads,
            Err(poisoned) => *poisoned.into_inner() = loads,
        }
    }

    /// What holds the whole pipeline back, if anything: Temporal or the workers.
    fn blocked(&self) -> Option<pb::WaitReason> {
        if Known::load(&self.temporal) == Known::No {
            Some(pb::WaitReason::TemporalUnavailable)
        } else if self.workers() == Known::No {
            Some(pb::WaitReason::NoWorker)
        } else {
            None
        }
    }

    /// Why a queued run of `company` at `position` in its company's dispatch order waits.
    pub fn queued(&self, company: &CompanyId, position: u32) -> pb::WaitReason {
        if let Some(reason) = self.blocked() {
            return reason;
        }
        let loads = match self.loads.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if loads.over_budget.contains(company) {
            return pb::WaitReason::TokenBudget;
        }
        // Runs ahead of it in its company take the room first.
        let ahead = u64::from(position.saturating_sub(1));
        let company_busy = loads.by_company.get(company).copied().unwrap_or(0);
        if loads.total + ahead >= self.max_processing {
            pb::WaitReason::GlobalCap
        } else if company_busy + ahead >= self.max_processing_per_company {
            pb::WaitReason::CompanyCap
        } else {
            pb::WaitReason::Dispatch
        }
    }

    /// Why a processing run with no step running waits.
    pub fn processing(&self) -> pb::WaitReason {
        self.blocked().unwrap_or(pb::WaitReason::WorkerSlot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DispatchConfig;

    fn conditions(total_cap: u64, company_cap: u64) -> Conditions {
        let config =
            DispatchConfig { max_processing: total_cap, max_processing_per_company: company_cap, ..Default::default() };
        Conditions::new(&config)
    }

    fn company(id: &str) -> CompanyId {
        CompanyId::parse(id).unwrap_or_else(|e| panic!("{id}: {e}"))
    }

    #[test]
    fn a_queued_run_waits_for_the_first_cap_its_turn_meets() {
        let waits = conditions(10, 3);
        let acme = company("acme");
        waits.set_loads(Loads { total: 4, by_company: HashMap::from([(acme.clone(), 1)]), over_budget: Vec::new() });
        // One of acme's three slots is taken: its first two queued runs have room.
        assert_eq!(waits.queued(&acme, 1), pb::WaitReason::Dispatch);
        assert_eq!(waits.queued(&acme, 2), pb::WaitReason::Dispatch);
        // The third waits for its company: the two ahead of it fill the cap.
        assert_eq!(waits.queued(&acme, 3), pb::WaitReason::CompanyCap);
        // Another company with nothing processing: its first three have room.
        let other = company("globex");
        assert_eq!(waits.queued(&other, 3), pb::WaitReason::Dispatch);
        assert_eq!(waits.queued(&other, 4), pb::WaitReason::CompanyCap);
        // With a wide company cap, room until the service is full (4 + 6 = 10).
        let wide = conditions(10, 100);
        wide.set_loads(Loads { total: 4, by_company: HashMap::new(), over_budget: Vec::new() });
        assert_eq!(wide.queued(&other, 6), pb::WaitReason::Dispatch);
        assert_eq!(wide.queued(&other, 7), pb::WaitReason::GlobalCap);
    }

    #[test]
    fn root_causes_come_first() {
        let waits = conditions(10, 3);
        let acme = company("acme");
        waits.set_loads(Loads { total: 10, by_company: HashMap::new(), over_budget: vec![acme.clone()] });
        assert_eq!(waits.queued(&acme, 1), pb::WaitReason::TokenBudget);
        assert_eq!(waits.queued(&company("globex"), 1), pb::WaitReason::GlobalCap);
        // Workers not checked yet: a processing run waits for a slot.
        assert_eq!(waits.processing(), pb::WaitReason::WorkerSlot);

        assert_eq!(waits.validating(), pb::WaitReason::DocumentChecks);
        waits.set_document_store(false);
        assert_eq!(waits.validating(), pb::WaitReason::DocumentStoreUnavailable);
        waits.set_document_store(true);
        assert_eq!(waits.validating(), pb::WaitReason::DocumentChecks);
        waits.set_workers(false);
        assert_eq!(waits.queued(&acme, 1), pb::WaitReason::NoWorker);
        assert_eq!(waits.processing(), pb::WaitReason::NoWorker);
        waits.set_temporal(false);
        assert_eq!(waits.queued(&acme, 1), pb::WaitReason::TemporalUnavailable);
        assert_eq!(waits.processing(), pb::WaitReason::TemporalUnavailable);
        waits.set_temporal(true);
        waits.set_workers(true);
        assert_eq!(waits.processing(), pb::WaitReason::WorkerSlot);
    }
}
