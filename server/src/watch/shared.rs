//! Store reads that the streams of one server share.
//!
//! Every scoped stream looks at the store when a run in its scope moved: the scope's sequence
//! heads, the events after its marks, the status of each run with news. A thousand streams of one
//! company woken by one event would ask the same questions a thousand times at once (measured in
//! `docs/BENCHMARKS.md`, fan-out). Here a read already under way, or just finished, answers every
//! stream that asks the same question — provided the read *started after* the moment that
//! stream decided to look, so that no stream is answered from before the change that woke it.
//! The store stays the source of truth and each stream's cursor logic is unchanged: sharing only
//! removes repeated reads.
//!
//! Streams of a scope that have sent the same events stand at the same marks, and from there one
//! look serves them all ([`Pass`]): it reads, encodes each event with its run's status and the
//! token after it, once; each stream then only copies the bytes out.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use tokio::time::Instant;

use etter_core::ids::{CompanyId, WorkflowId};
use etter_core::steps::Plan;
use etter_proto::v1 as pb;
use etter_store::RunEvent;

use super::scoped::Pass;
use super::wire::EncodedEvent;
use crate::convert;
use crate::error::ApiError;

/// A scope's key (`batch:{id}`, `company:{id}`) and marks in it.
pub type ScopedMarks = (Arc<str>, Vec<(WorkflowId, u64)>);

/// The reads the scoped streams of one server share.
pub struct SharedReads {
    /// Whole looks at the store, by scope and the marks they start from: streams at the same
    /// marks send the same frames, tokens included, so one look (and its encoding) serves them.
    pub passes: Coalesced<(Arc<str>, MarksKey), Pass>,
    /// Sequence heads, by scope (`batch:{id}`, `company:{id}`).
    pub heads: Coalesced<Arc<str>, Vec<(WorkflowId, u64)>>,
    /// Events after a set of marks, by scope and the marks (a read is bounded by its scope, so
    /// it answers only streams of that scope).
    pub events: Coalesced<ScopedMarks, Vec<RunEvent>>,
    /// A run's plan and status, by run.
    pub statuses: Coalesced<WorkflowId, StatusRead>,
    /// Queue positions of a company's queued runs, by company.
    pub positions: Coalesced<CompanyId, Vec<(WorkflowId, u32)>>,
}

impl Default for SharedReads {
    fn default() -> Self {
        Self {
            passes: Coalesced::keeping(KEEP_PASSES),
            heads: Coalesced::default(),
            events: Coalesced::default(),
            statuses: Coalesced::default(),
            positions: Coalesced::default(),
        }
    }
}

/// A stream's marks (the last sequence sent, per run), shared by the streams that reach the same
/// ones. Equal by content (pointer first: streams in step hold the same marks), hashed once.
#[derive(Clone, Debug)]
pub struct MarksKey(Arc<(BTreeMap<WorkflowId, u64>, u64)>);

impl MarksKey {
    /// Marks, hashed.
    pub fn new(marks: BTreeMap<WorkflowId, u64>) -> Self {
        let mut hasher = std::hash::DefaultHasher::new();
        marks.hash(&mut hasher);
        Self(Arc::new((marks, hasher.finish())))
    }

    /// The marks.
    pub fn marks(&self) -> &BTreeMap<WorkflowId, u64> {
        &self.0.0
    }
}

impl Hash for MarksKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.1);
    }
}

impl PartialEq for MarksKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || (self.0.1 == other.0.1 && self.0.0 == other.0.0)
    }
}

impl Eq for MarksKey {}

/// One read of a run's status, and its events encoded with it: every stream that shares the
/// read sends the same bytes for an event, so the first one encodes them for all.
pub struct StatusRead {
    /// The run's plan (heartbeat ETAs).
    pub plan: Plan,
    /// The run's status as read.
    pub status: pb::RunStatus,
    /// Events encoded with `status`, by sequence.
    encoded: Mutex<HashMap<u64, EncodedEvent>>,
}

impl StatusRead {
    /// A read of `status`, nothing encoded yet.
    pub fn new(plan: Plan, status: pb::RunStatus) -> Self {
        Self { plan, status, encoded: Mutex::default() }
    }

    /// `event` (one of this run's) carrying this read's status, encoded once per read.
    pub fn event(&self, event: &RunEvent) -> EncodedEvent {
        let mut encoded = self.encoded.lock().unwrap_or_else(PoisonError::into_inner);
        encoded
            .entry(event.sequence)
            .or_insert_with(|| EncodedEvent::new(&convert::event(event, Some(self.status.clone()))))
            .clone()
    }
}

/// Finished reads older than this are forgotten (a stream woken later cannot use them anyway).
const KEEP: Duration = Duration::from_secs(1);
/// Looks carry encoded frames (up to a page of events), so they are forgotten sooner: a stream
/// woken before a look started comes for it within milliseconds, or else looks on its own.
const KEEP_PASSES: Duration = Duration::from_millis(250);
/// A table is swept of old reads once it holds this many, then whenever it has doubled since its
/// last sweep: a constant cost per read, amortised, and no read kept long after `keep`.
const SWEEP_AT_LEAST: usize = 16;

type Flight<V> = Shared<BoxFuture<'static, Result<Arc<V>, ApiError>>>;

/// Identical reads by key, shared among callers that may use them (see the module).
pub struct Coalesced<K, V> {
    table: Mutex<Table<K, V>>,
    /// How long a read is kept after it started.
    keep: Duration,
}

struct Table<K, V> {
    reads: HashMap<K, (Instant, Flight<V>)>,
    /// The next sweep is due at this many reads.
    sweep_at: usize,
}

impl<K, V> Default for Coalesced<K, V> {
    fn default() -> Self {
        Self::keeping(KEEP)
    }
}

impl<K, V> Coalesced<K, V> {
    /// A table whose reads are forgotten `keep` after they started.
    pub fn keeping(keep: Duration) -> Self {
        Self { table: Mutex::new(Table { reads: HashMap::new(), sweep_at: SWEEP_AT_LEAST }), keep }
    }
}

impl<K, V> Coalesced<K, V>
where
    K: Hash + Eq + Clone,
    V: Send + Sync + 'static,
{
    /// The answer of the latest read of `key` if it started at or after `not_before` (under way
    /// or finished); otherwise starts `read` and answers what it reads.
    pub async fn get<Fut>(&self, key: &K, not_before: Instant, read: impl FnOnce() -> Fut) -> Result<Arc<V>, ApiError>
    where
        Fut: Future<Output = Result<V, ApiError>> + Send + 'static,
    {
        let flight = {
            let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
            match table.reads.get(key) {
                Some((started, flight)) if *started >= not_before => flight.clone(),
                _ => {
                    let now = Instant::now();
                    if table.reads.len() >= table.sweep_at {
                        table.reads.retain(|_, (started, _)| now.duration_since(*started) < self.keep);
                        table.sweep_at = (2 * table.reads.len()).max(SWEEP_AT_LEAST);
                    }
                    let flight = read().map(|answer| answer.map(Arc::new)).boxed().shared();
                    table.reads.insert(key.clone(), (now, flight.clone()));
                    flight
                }
            }
        };
        flight.await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn callers_share_a_read_that_started_after_they_looked_and_never_an_older_one() {
        let reads = Arc::new(AtomicUsize::new(0));
        let coalesced: Coalesced<&str, usize> = Coalesced::default();
        let read = || {
            let reads = Arc::clone(&reads);
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(reads.fetch_add(1, Ordering::SeqCst) + 1)
            }
        };
        let looked = Instant::now();
        // Ten callers at once: one read.
        let answers = futures::future::join_all((0..10).map(|_| coalesced.get(&"company", looked, read))).await;
        assert!(answers.iter().all(|a| a.as_ref().is_ok_and(|v| **v == 1)), "{answers:?}");
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // A caller that looked before that read started may use it, finished as it is.
        assert_eq!(*coalesced.get(&"company", looked, read).await.unwrap_or_default(), 1);
        // A caller woken after it started must not: it gets a read of its own.
        let woken = Instant::now();
        assert_eq!(*coalesced.get(&"company", woken, read).await.unwrap_or_default(), 2);
        // Other keys are other reads.
        assert_eq!(*coalesced.get(&"batch", looked, read).await.unwrap_or_default(), 3);
    }

    #[tokio::test]
    async fn streams_at_equal_marks_share_a_look_and_streams_elsewhere_do_not() {
        let run = |n: u8| WorkflowId::parse(&format!("role-onboard-cr-acme-r{n}-1")).unwrap_or_else(|e| panic!("{e}"));
        let marks = |heads: &[(u8, u64)]| MarksKey::new(heads.iter().map(|(n, s)| (run(*n), *s)).collect());
        // Two streams that took their snapshots apart hold equal marks, not the same ones.
        let (one, other, behind) = (marks(&[(1, 3), (2, 5)]), marks(&[(1, 3), (2, 5)]), marks(&[(1, 3), (2, 4)]));
        let looks = Arc::new(AtomicUsize::new(0));
        let coalesced: Coalesced<MarksKey, usize> = Coalesced::default();
        let look = || {
            let looks = Arc::clone(&looks);
            async move { Ok(looks.fetch_add(1, Ordering::SeqCst) + 1) }
        };
        let looked = Instant::now();
        assert_eq!(*coalesced.get(&one, looked, look).await.unwrap_or_default(), 1);
        assert_eq!(*coalesced.get(&other, looked, look).await.unwrap_or_default(), 1);
        assert_eq!(*coalesced.get(&one.clone(), looked, look).await.unwrap_or_default(), 1);
        assert_eq!(*coalesced.get(&behind, looked, look).await.unwrap_or_default(), 2);
        assert_eq!(looks.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn old_reads_are_forgotten_while_the_table_is_in_use() {
        let coalesced: Coalesced<usize, usize> = Coalesced::keeping(Duration::from_millis(20));
        let looked = Instant::now();
        for key in 0..SWEEP_AT_LEAST {
            let _ = coalesced.get(&key, looked, || async { Ok(0) }).await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        // The next new read sweeps the table: only reads younger than 20 ms stay (this one).
        let _ = coalesced.get(&SWEEP_AT_LEAST, Instant::now(), || async { Ok(0) }).await;
        let table = coalesced.table.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(table.reads.len(), 1);
        assert_eq!(table.sweep_at, SWEEP_AT_LEAST);
    }

    #[tokio::test]
    async fn a_failed_read_fails_every_caller_that_shared_it_and_the_next_look_reads_again() {
        let coalesced: Coalesced<u8, u8> = Coalesced::default();
        let looked = Instant::now();
        let failing = || async { Err(ApiError::Unavailable("the store is down".to_owned())) };
        let answers =
            futures::future::join(coalesced.get(&1, looked, failing), coalesced.get(&1, looked, failing)).await;
        assert!(matches!(answers, (Err(ApiError::Unavailable(_)), Err(ApiError::Unavailable(_)))));
        let later = Instant::now();
        assert_eq!(*coalesced.get(&1, later, || async { Ok(7) }).await.unwrap_or_default(), 7);
    }
}
