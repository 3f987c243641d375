//! Live-progress fan-out through Redis pub/sub (`redis.url`): whoever commits events
//! of a run (the worker recording steps, a server replica pushing, dispatching, cancelling)
//! publishes the run's workflow id; every server replica subscribes and wakes the watch streams
//! the run concerns, so they read the new events from the store at once instead of at their next
//! poll.
//!
//! Redis only makes streams faster. The store stays the source of truth: a lost message, a Redis
//! that is down or restarting, costs latency (streams still poll), never an event. Publishing
//! never blocks a writer: ids go through a bounded queue to a background task, and are dropped
//! when the queue is full or Redis is away.
//!
//! Without Redis (the embedded profile), a server learns of other processes' changes by one look
//! at the store every few milliseconds ([`Hub::follow_store`]) instead of every stream polling on
//! its own timer.

use std::{sync::Arc, time::Duration};

use futures::StreamExt as _;
use redis::AsyncCommands as _;
use tokio::sync::{broadcast, mpsc, watch};

use crate::Announce;
use crate::RunStore;
use crate::WatchScope;
use etter_core::error::chain;
use etter_core::ids::WorkflowId;

/// The pub/sub channel.
pub const CHANNEL: &str = "etter:run-events";
/// Ids waiting to be published at most; more are dropped (streams still poll).
const QUEUE: usize = 4096;
/// Between reconnection attempts.
const RECONNECT: Duration = Duration::from_secs(1);
/// [`Hub::follow_store`] looks this far behind its previous look: a change is stamped with its
/// writer's clock before it commits, so one that commits a little late is still found.
const STORE_LOOKBACK: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// Why fan-out cannot start, or Redis does not answer.
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    /// `redis.url` does not parse as a Redis URL.
    #[error("redis.url is not usable")]
    Url(#[source] redis::RedisError),
    /// Redis could not be reached, or failed the check (with what to change, when TLS is why).
    #[error("redis does not answer{}", advice(.0))]
    Unreachable(#[source] redis::RedisError),
    /// `[redis]` is unusable (a TLS file that does not load).
    #[error(transparent)]
    Config(#[from] etter_config::ConfigError),
    /// Redis did not answer the check in time, or answered something else than it should.
    #[error("redis does not answer: {0}")]
    NoAnswer(String),
}

/// Publishes the ids of runs with new events ([`Announce`] for the store).
pub struct Publisher {
    queue: mpsc::Sender<WorkflowId>,
}

impl Publisher {
    /// Starts publishing to the Redis of `client` (connecting lazily, reconnecting as needed).
    pub fn start(client: redis::Client) -> Arc<Self> {
        let (queue, mut ids) = mpsc::channel::<WorkflowId>(QUEUE);
        tokio::spawn(async move {
            let mut connection = None;
            let mut warned = false;
            while let Some(id) = ids.recv().await {
                if connection.is_none() {
                    match client.get_multiplexed_async_connection().await {
                        Ok(c) => connection = Some(c),
                        Err(e) => {
                            if !warned {
                                tracing::warn!(error = %explained(&e), "redis unavailable; live updates fall back to polling");
                                warned = true;
                            }
                            continue;
                        }
                    }
                }
                if let Some(c) = connection.as_mut() {
                    let published: redis::RedisResult<i64> = c.publish(CHANNEL, id.as_str()).await;
                    match published {
                        Ok(_) => warned = false,
                        Err(e) => {
                            if !warned {
                                tracing::warn!(error = %e, "cannot publish to redis; live updates fall back to polling");
                                warned = true;
                            }
                            connection = None;
                        }
                    }
                }
            }
        });
        Arc::new(Self { queue })
    }
}

impl Announce for Publisher {
    fn moved(&self, run: &WorkflowId) {
        // Full queue or no task: drop it; streams poll anyway.
        let _ = self.queue.try_send(run.clone());
    }
}

/// A run moved (a change of it was committed), as a server learned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The run.
    pub run: WorkflowId,
    /// When this server learned it: a store read started after it sees the change.
    pub at: std::time::Instant,
}

/// Where a server's watch streams learn that runs moved: fed by the Redis subscription, or, without
/// Redis, by the server's own writes.
#[derive(Clone)]
pub struct Hub {
    sender: broadcast::Sender<Moved>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    /// A hub nobody feeds yet.
    pub fn new() -> Self {
        Self { sender: broadcast::channel(QUEUE).0 }
    }

    /// A receiver of the runs that move from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Moved> {
        self.sender.subscribe()
    }

    /// Feeds the hub from the Redis of `client` until `drain` turns true, reconnecting after
    /// failures.
    pub fn follow_redis(&self, client: redis::Client, mut drain: watch::Receiver<bool>) {
        let sender = self.sender.clone();
        tokio::spawn(async move {
            let mut warned = false;
            loop {
                let subscribed = async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(CHANNEL).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                };
                match subscribed.await {
                    Ok(pubsub) => {
                        tracing::info!("following live updates through redis");
                        warned = false;
                        let mut messages = pubsub.into_on_message();
                        loop {
                            tokio::select! {
                                message = messages.next() => match message {
                                    Some(message) => {
                                        if let Ok(id) = message.get_payload::<String>()
                                            && let Ok(id) = WorkflowId::parse(&id)
                                        {
                                            let _ = sender.send(Moved { run: id, at: std::time::Instant::now() });
                                        }
                                    }
                                    None => break,
                                },
                                _ = drain.changed() => return,
                            }
                        }
                        tracing::warn!("the redis subscription ended; live updates poll until it is back");
                    }
                    Err(e) => {
                        if !warned {
                            tracing::warn!(error = %explained(&e), "cannot subscribe to redis; live updates poll until it is back");
                            warned = true;
                        }
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(RECONNECT) => {}
                    _ = drain.changed() => return,
                }
            }
        });
    }
}

/// `: <what to change>` when TLS refused the connection to Redis, else empty.
fn advice(error: &redis::RedisError) -> String {
    let text = format!("{error} {error:?}");
    let fixes = etter_config::tls::Fixes {
        ca: "`redis.tls.ca_file`".to_owned(),
        identity: "`redis.tls.cert_file` and `redis.tls.key_file`".to_owned(),
        server_name: "a host in `redis.url` that the certificate carries".to_owned(),
    };
    etter_config::tls::advice(&text, &fixes).map(|advice| format!(": {advice}")).unwrap_or_default()
}

/// A Redis error with what to change when TLS is why.
fn explained(error: &redis::RedisError) -> String {
    format!("{error}{}", advice(error))
}

impl Hub {
    /// How many receivers the hub has now (watch streams, and whatever else follows it).
    pub fn receivers(&self) -> usize {
        self.sender.receiver_count()
    }

    /// Feeds the hub from the store until `drain` turns true: every `interval`, the runs changed
    /// since the previous look (by any process: the worker's steps) whose sequence is new to it.
    /// A missed change (a look that failed, a commit later than [`STORE_LOOKBACK`]) only waits
    /// for the streams' own polls.
    ///
    /// Only while `wanted()` says someone needs the changes: a look reads every run changed in
    /// the last [`STORE_LOOKBACK`], thousands while a batch is being stored, and nobody may be
    /// watching. Whoever starts wanting them reads the store first, so the changes before that
    /// are not needed; the first look after a pause still reaches [`STORE_LOOKBACK`] behind it.
    pub fn follow_store(
        &self,
        store: Arc<dyn RunStore>,
        interval: Duration,
        mut drain: watch::Receiver<bool>,
        wanted: impl Fn() -> bool + Send + 'static,
    ) {
        let sender = self.sender.clone();
        tokio::spawn(async move {
            // Sequences seen in the previous look; a run missing from a look changed before it.
            let mut seen: std::collections::HashMap<WorkflowId, u64> = std::collections::HashMap::new();
            let mut since = crate::now();
            let mut warned = false;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    _ = drain.changed() => return,
                }
                let look = crate::now();
                if !wanted() {
                    seen.clear();
                    since = look;
                    continue;
                }
                match store.sequence_heads(&WatchScope::UpdatedSince(since - STORE_LOOKBACK)).await {
                    Ok(heads) => {
                        warned = false;
                        let at = std::time::Instant::now();
                        let mut now_seen = std::collections::HashMap::with_capacity(heads.len());
                        for (run, head) in heads {
                            if seen.get(&run).is_none_or(|seen| *seen < head) {
                                let _ = sender.send(Moved { run: run.clone(), at });
                            }
                            now_seen.insert(run, head);
                        }
                        seen = now_seen;
                        since = look;
                    }
                    Err(e) => {
                        if !warned {
                            tracing::warn!(error = %chain(&e), "cannot look for changed runs; live updates poll until it answers");
                            warned = true;
                        }
                    }
                }
            }
        });
    }
}

/// Answers whether the Redis of `redis.url` is reachable (the `etter.redis` health entry), over one
/// connection kept between checks and reopened after a failure.
pub struct Probe {
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl Probe {
    /// A probe of the Redis of `client` (nothing is connected until the first [`Probe::ping`]).
    pub fn new(client: redis::Client) -> Self {
        Self { client, connection: tokio::sync::Mutex::new(None) }
    }

    /// `PING`, answered with `PONG` within `bound`.
    pub async fn ping(&self, bound: Duration) -> Result<(), FanoutError> {
        let mut connection = self.connection.lock().await;
        // The connection goes back only after a good answer: a failed one is reopened next time.
        let answer = tokio::time::timeout(bound, async {
            let mut c = match connection.take() {
                Some(c) => c,
                None => self.client.get_multiplexed_async_connection().await?,
            };
            let pong = redis::cmd("PING").query_async::<String>(&mut c).await?;
            *connection = Some(c);
            Ok::<_, redis::RedisError>(pong)
        })
        .await;
        match answer {
            Ok(Ok(pong)) if pong == "PONG" => Ok(()),
            Ok(Ok(other)) => Err(FanoutError::NoAnswer(format!("PING answered {other:?}"))),
            Ok(Err(e)) => Err(FanoutError::Unreachable(e)),
            Err(_) => Err(FanoutError::NoAnswer(format!("no answer to PING within {bound:?}"))),
        }
    }
}

impl Announce for Hub {
    fn moved(&self, run: &WorkflowId) {
        // No receivers: nobody watches.
        let _ = self.sender.send(Moved { run: run.clone(), at: std::time::Instant::now() });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::NewRun;
    use crate::config::StoreLocation;
    use etter_core::ids::{CompanyId, RoleName};

    fn new_run(role: &str) -> Result<NewRun, Box<dyn std::error::Error>> {
        Ok(NewRun::queued(CompanyId::parse("acme")?, RoleName::parse(role)?, role, "test"))
    }

    /// The next move within `wait`, if any.
    async fn next(moved: &mut broadcast::Receiver<Moved>, wait: Duration) -> Option<WorkflowId> {
        tokio::time::timeout(wait, moved.recv()).await.ok()?.ok().map(|m| m.run)
    }

    #[tokio::test]
    async fn the_store_is_looked_at_only_while_someone_wants_its_changes() -> Result<(), Box<dyn std::error::Error>> {
        // A directory of its own: a store left by an earlier run would answer with its runs and
        // write nothing.
        let scratch = tempfile::Builder::new().prefix("etter-follow-store-").tempdir()?;
        let dir = scratch.path().to_path_buf();
        // No announcer: the hub learns of this store's writes only by looking.
        let store = crate::connect(&StoreLocation::Sqlite(dir.join("runs.db"))).await?;
        let hub = Hub::new();
        let mut moved = hub.subscribe();
        let wanted = Arc::new(AtomicBool::new(false));
        let (_drain_tx, drain) = watch::channel(false);
        let flag = Arc::clone(&wanted);
        hub.follow_store(Arc::clone(&store), Duration::from_millis(10), drain, move || flag.load(Ordering::SeqCst));

        let unwatched = store.create_run(new_run("Unwatched")?).await?.run;
        assert_eq!(next(&mut moved, Duration::from_millis(300)).await, None, "nobody wants changes: no look");

        // Wanted again: the first look reaches back, so the change made meanwhile is found too.
        wanted.store(true, Ordering::SeqCst);
        assert_eq!(next(&mut moved, Duration::from_secs(10)).await, Some(unwatched.workflow_id));
        let watched = store.create_run(new_run("Watched")?).await?.run;
        assert_eq!(next(&mut moved, Duration::from_secs(10)).await, Some(watched.workflow_id));
        store.close().await;
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
