//! `notify_on_complete`: delivers run-finished events from the store's outbox to each company's
//! webhook (`server.companies_file`), signed, retried with backoff, never on the pipeline's path.
//!
//! The outbox row is written with the run's final state ([`RunStore::transition`]); this
//! deliverer claims due rows (every replica runs one; claims are leased, so a replica that dies
//! mid-delivery hands its rows over), posts each as JSON and records the result. A receiver that
//! is down or answers non-2xx gets the event again after `server.webhook_retry_initial`,
//! doubling up to `server.webhook_retry_max`, for `server.webhook_max_attempts` attempts.
//!
//! **Request.** `POST` with `Content-Type: application/json` and
//! - `Etter-Event-Id`: the event's id, the same on every attempt (deduplicate on it);
//! - `Etter-Timestamp`: Unix seconds when this attempt was signed;
//! - `Etter-Signature`: `v1=` + hex HMAC-SHA256 over `{timestamp}.{body}` with the company's
//!   `webhook_secret`. A receiver recomputes it and rejects stale timestamps (replays).

use std::{sync::Arc, time::Duration};

use crate::config::ServerConfig;
use etter_core::backoff::Backoff;
use etter_core::error::chain;
use etter_store::{self, Delivery, Notification, NotificationClaim, Run, RunStore, Timestamp};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use tokio::sync::watch;

use crate::companies::{Companies, Webhook};

/// Events claimed per round.
const CLAIM_LIMIT: u32 = 32;
/// How often the outbox is looked at when idle.
const POLL: Duration = Duration::from_millis(500);

/// The deliverer of one server replica.
pub struct Deliverer {
    store: Arc<dyn RunStore>,
    companies: Arc<Companies>,
    config: ServerConfig,
    claimer: String,
    http: reqwest::Client,
}

/// Why the webhook client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `server.webhook_ca_file` does not load.
    #[error(transparent)]
    Config(#[from] etter_config::ConfigError),
    /// The HTTP client could not be built.
    #[error("cannot build the webhook client")]
    Http(#[source] reqwest::Error),
}

impl Deliverer {
    /// A deliverer claiming as `claimer`.
    pub fn new(
        store: Arc<dyn RunStore>,
        companies: Arc<Companies>,
        config: ServerConfig,
        claimer: String,
    ) -> Result<Self, ClientError> {
        let mut http = reqwest::Client::builder()
            .timeout(config.webhook_timeout)
            .user_agent(concat!("etter-server/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none());
        if !config.webhook_ca_file.as_os_str().is_empty() {
            let pem = etter_config::tls::certificates_pem("server", "webhook_ca_file", &config.webhook_ca_file)?;
            for ca in reqwest::Certificate::from_pem_bundle(&pem).map_err(ClientError::Http)? {
                http = http.add_root_certificate(ca);
            }
        }
        let http = http.build().map_err(ClientError::Http)?;
        Ok(Self { store, companies, config, claimer, http })
    }

    /// Delivers until `drain` turns true.
    pub async fn run(self, mut drain: watch::Receiver<bool>) {
        loop {
            if *drain.borrow() {
                return;
            }
            let busy = match self.round().await {
                Ok(delivered) => delivered == CLAIM_LIMIT as usize,
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "webhook round failed on the store; retrying");
                    false
                }
            };
            if busy {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                _ = drain.changed() => return,
            }
        }
    }

    /// Claims due events and delivers them; answers how many were claimed.
    async fn round(&self) -> Result<usize, etter_store::StoreError> {
        let claim = NotificationClaim {
            claimer: self.claimer.clone(),
            limit: CLAIM_LIMIT,
            // Long enough for every claimed delivery to time out one after another.
            lease: self.config.webhook_timeout * (CLAIM_LIMIT + 1),
            now: etter_store::now(),
        };
        let claimed = self.store.claim_notifications(&claim).await?;
        for notification in &claimed {
            let outcome = self.deliver(notification).await;
            let now = etter_store::now();
            let delivery = match outcome {
                Ok(()) => Delivery::Delivered,
                Err(error) if notification.attempts + 1 >= self.config.webhook_max_attempts => {
                    tracing::error!(event = notification.id, run = %notification.workflow_id, %error,
                        "webhook event given up after {} attempts", notification.attempts + 1);
                    Delivery::GiveUp { error }
                }
                Err(error) => {
                    let wait = backoff(&self.config, notification.attempts);
                    tracing::warn!(event = notification.id, run = %notification.workflow_id, %error,
                        "webhook delivery failed; retrying in {wait:?}");
                    Delivery::Retry { error, next_attempt: later(now, wait) }
                }
            };
            if !self.store.settle_notification(notification.id, &self.claimer, delivery, now).await? {
                tracing::info!(event = notification.id, "the webhook event's claim lapsed; another replica has it");
            }
        }
        Ok(claimed.len())
    }

    /// One delivery attempt: the error says why it failed, in words for the log and the outbox.
    async fn deliver(&self, notification: &Notification) -> Result<(), String> {
        let webhook = self
            .companies
            .get(&notification.company)
            .webhook
            .ok_or_else(|| format!("company {} has no webhook in the companies file", notification.company))?;
        let run = self.store.get_run(&notification.workflow_id).await.map_err(|e| chain(&e).to_string())?;
        let body = serde_json::to_vec(&event(notification, &run, &self.config)).map_err(|e| e.to_string())?;
        let timestamp = etter_store::now().timestamp();
        let response = self
            .http
            .post(webhook.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Etter-Event-Id", notification.id.to_string())
            .header("Etter-Timestamp", timestamp.to_string())
            .header("Etter-Signature", signature(&webhook, timestamp, &body))
            .body(body)
            .send()
            .await
            .map_err(|e| {
                let text = format!("{} {e:?}", chain(&e));
                let fixes = etter_config::tls::Fixes {
                    ca: "`server.webhook_ca_file`".to_owned(),
                    identity: "a client certificate for webhooks (etter-server does not send one: the receiver must \
                               not require it)"
                        .to_owned(),
                    server_name: "the company's `webhook_url` to that name".to_owned(),
                };
                let advice = etter_config::tls::advice(&text, &fixes).map(|a| format!(": {a}")).unwrap_or_default();
                format!("cannot reach {}: {}{advice}", webhook.url, chain(&e))
            })?;
        let status = response.status();
        if status.is_success() {
            tracing::info!(event = notification.id, run = %notification.workflow_id, "webhook event delivered");
            Ok(())
        } else {
            Err(format!("{} answered {status}", webhook.url))
        }
    }
}

/// `v1=` + hex HMAC-SHA256 of `{timestamp}.{body}`.
pub fn signature(webhook: &Webhook, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(&webhook.secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = hex::encode(mac.finalize().into_bytes());
    format!("v1={digest}")
}

/// The event's JSON: what a receiver needs to act on a finished run without calling back.
fn event(notification: &Notification, run: &Run, config: &ServerConfig) -> serde_json::Value {
    let time = |t: Option<Timestamp>| t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    serde_json::json!({
        "id": notification.id.to_string(),
        "type": "run.finished",
        "create_time": time(Some(notification.create_time)),
        "run": {
            "workflow_id": run.workflow_id.as_str(),
            "role_id": run.role_id.as_str(),
            "company_id": run.company_id.as_str(),
            "role_name": run.role_name.as_str(),
            "run_number": run.run_number,
            "status": notification.state.as_str(),
            "batch_id": run.batch_id.as_ref().map(|b| b.as_str()),
            "needs_review": run.needs_review,
            "error": run.error.as_ref().map(|e| serde_json::json!({
                "code": e.code, "message": e.message, "step": e.step, "action": e.action,
            })),
            "tokens_used": { "input": run.tokens_used.input, "output": run.tokens_used.output },
            "dashboard_url": config.dashboard_url_for(&run.role_id, &run.company_id),
            "create_time": time(Some(run.create_time)),
            "start_time": time(run.start_time),
            "end_time": time(run.end_time),
        },
    })
}

/// The wait after failed attempt number `attempts + 1`.
fn backoff(config: &ServerConfig, attempts: u32) -> Duration {
    Backoff::after(config.webhook_retry_initial, config.webhook_retry_max, attempts.saturating_add(1))
}

fn later(now: Timestamp, wait: Duration) -> Timestamp {
    chrono::TimeDelta::from_std(wait).ok().and_then(|d| now.checked_add_signed(d)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_jitter() {
        let config = ServerConfig {
            webhook_retry_initial: Duration::from_secs(5),
            webhook_retry_max: Duration::from_secs(60),
            ..ServerConfig::default()
        };
        // Attempts already made → the nominal wait; each wait is drawn from [nominal / 2, nominal].
        for (attempts, nominal) in [(0, 5), (1, 10), (2, 20), (3, 40), (4, 60), (5, 60), (u32::MAX, 60)] {
            let wait = backoff(&config, attempts);
            let nominal = Duration::from_secs(nominal);
            assert!(wait >= nominal / 2 && wait <= nominal, "after {attempts} attempts: {wait:?}, nominal {nominal:?}");
        }
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_and_body() -> anyhow::Result<()> {
        // Computed independently: Python's hmac.new(b"Jefe", b"0.what do ya want for nothing?", sha256).
        let webhook = Webhook { url: reqwest::Url::parse("http://127.0.0.1/")?, secret: b"Jefe".to_vec() };
        let signed = signature(&webhook, 0, b"what do ya want for nothing?");
        assert_eq!(signed, "v1=37f471929915ccd2cbbe79feb84ffcff4f2bb25e15fc41c2506687331ae179cc");
        assert_ne!(signed, signature(&webhook, 1, b"what do ya want for nothing?"), "the timestamp is signed");
        Ok(())
    }
}
