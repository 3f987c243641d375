//! The harness's clients: the way a careful client calls a replicated service. Each call goes to
//! one of the replicas; a call that fails because a replica (or what is behind it) is down is
//! tried again, on the other replica, with a short backoff, for as long as the run allows. A call
//! that carries a `request_id` is tried again with the same id, so the server answers it once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use etter_proto::v1::pipeline_service_client::PipelineServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::stack::{BearerToken, Client};

/// How long one call may take before it is abandoned and tried again.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Clients of every replica, chosen in turn.
pub struct Api {
    clients: Vec<Client>,
    next: AtomicUsize,
    /// How long a call is tried before it is given up.
    patience: Duration,
}

/// How a call ended after its tries.
#[derive(Debug)]
pub enum Outcome<T> {
    /// Answered.
    Answered(T),
    /// Refused for a reason trying again would not change (its status).
    Refused(Status),
    /// Still failing when the patience ran out (the last status).
    GaveUp(Status),
}

impl Api {
    /// Clients of the servers at `addrs` (`host:port`), connecting lazily (a replica that is down
    /// now is reached once it is back), sending `token`.
    pub fn new(addrs: &[String], token: &str, patience: Duration) -> Result<Self> {
        let bearer = BearerToken::new(token)?;
        let clients = addrs
            .iter()
            .map(|addr| {
                let channel: Channel = Endpoint::from_shared(format!("http://{addr}"))?
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(CALL_TIMEOUT)
                    .connect_lazy();
                Ok(PipelineServiceClient::with_interceptor(channel, bearer.clone()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { clients, next: AtomicUsize::new(0), patience })
    }

    /// The next replica's client.
    pub fn client(&self) -> Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        self.clients[i].clone()
    }

    /// Calls `call` with `request` on one replica after another until it is answered, refused for
    /// good, or the patience runs out (the same request each time: its `request_id` too). The
    /// answer, and how many calls were made.
    pub async fn call<R, T, F, Fut>(&self, request: &R, mut call: F) -> (Outcome<T>, u32)
    where
        R: Clone,
        F: FnMut(Client, R) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.patience;
        let mut backoff = Duration::from_millis(100);
        let mut tries = 0;
        loop {
            tries += 1;
            match call(self.client(), request.clone()).await {
                Ok(answer) => return (Outcome::Answered(answer.into_inner()), tries),
                Err(status) if !transient(&status) => return (Outcome::Refused(status), tries),
                Err(status) => {
                    if tokio::time::Instant::now() + backoff >= deadline {
                        return (Outcome::GaveUp(status), tries);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Whether a failed call may succeed when tried again: the replica, its store or Temporal was
/// unreachable, or the call timed out. INTERNAL is not among them: a fault must be answered with
/// a clear, retryable error, and the harness reports every INTERNAL it gets.
pub fn transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded | Code::Aborted
    )
}
