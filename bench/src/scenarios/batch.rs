//! Batch admission: how long a `PushBatch` of 2,500 roles takes to be
//! acknowledged (every item validated, its document checked, persisted and queued, the batch
//! audited), and the server's CPU time per item. Documents on the file root (`batch`), or in an
//! S3-compatible store (`batch-s3`: moto on loopback, one HEAD per document).

use std::time::Instant;

use anyhow::{Result, ensure};
use etter_proto::v1::BatchItemOutcome;
use etter_tests::stack::Profile;

use crate::Mode;
use crate::deploy::Deployment;
use crate::measure::{Samples, ms, proc_stats};
use crate::report::{Section, num};

/// Where the batch's documents are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Files on the server's documents root.
    FileRoot,
    /// Objects in a local S3-compatible store (moto).
    S3,
}

pub async fn run(profile: Profile, mode: Mode, source: Source) -> Result<Section> {
    let (items, rounds) = match source {
        Source::FileRoot => (mode.pick(2_500, 50), mode.pick(3, 1)),
        // Every round needs objects of its own, uploaded before the server starts.
        Source::S3 => (mode.pick(2_500, 50), mode.pick(2, 1)),
    };
    let moto = match source {
        Source::S3 => Some(Moto::start(BUCKET, items * rounds).await?),
        Source::FileRoot => None,
    };
    let s3_env = moto.as_ref().map(|m| {
        [
            ("ETTER_DOCUMENTS__S3__ENDPOINT", m.endpoint.clone()),
            ("ETTER_DOCUMENTS__S3__ALLOW_HTTP", "true".to_owned()),
            ("ETTER_DOCUMENTS__S3__ACCESS_KEY_ID", "etter".to_owned()),
            ("ETTER_DOCUMENTS__S3__SECRET_ACCESS_KEY", "etter-secret".to_owned()),
        ]
    });
    // Every round's roles stay queued (no worker), so the queue caps leave room for all rounds;
    // they are still checked. The dispatcher may start one run at a time: admission is measured,
    // not thousands of workflows that nobody runs.
    let mut env = vec![
        ("ETTER_LIMITS__MAX_QUEUED_PER_COMPANY", "1000000"),
        ("ETTER_LIMITS__MAX_QUEUED", "1000000"),
        ("ETTER_DISPATCH__MAX_PROCESSING_PER_COMPANY", "1"),
        ("ETTER_TEMPORAL__WORKFLOW_EXECUTION_TIMEOUT", "5m"),
    ];
    if let Some(s3) = &s3_env {
        env.extend(s3.iter().map(|(k, v)| (*k, v.as_str())));
    }
    let name = match source {
        Source::FileRoot => "batch",
        Source::S3 => "batch-s3",
    };
    let deployment = Deployment::start(name, profile, false, &env).await?;
    let pid = deployment.server_pid()?;
    let mut section = Section::new(
        name,
        profile.name(),
        &["round", "items", "acknowledged in ms", "items/s", "server CPU ms", "server CPU µs per item"],
    );
    let where_documents = match source {
        Source::FileRoot => "on the file root".to_owned(),
        Source::S3 => format!(
            "in a local S3-compatible store (moto on loopback; `documents.max_concurrent_checks` = {CHECKS} at \
             once, one ranged GET each, whose Content-Range gives the size)"
        ),
    };
    section.notes.push(format!(
        "{rounds} batches of {items} roles one after the other into one company (earlier rounds' runs stay \
         queued: no worker runs them); the dispatcher's cap is one run, so it stays idle. Each item has a \
         document of its own {where_documents}, which the server checks (exists, readable, within the size \
         limit, what its extension says) before it queues the run."
    ));
    let file = deployment.document_path()?;
    let mut acks = Samples::default();
    for round in 1..=rounds {
        let mut batch = deployment.batch(items, |i| format!("Batch {round} Role {i}"));
        for (i, item) in batch.items.iter_mut().enumerate() {
            let uri = match source {
                Source::FileRoot => {
                    let own = deployment.stack.docs.join(format!("batch-{round}-{i}.txt"));
                    std::fs::copy(&file, &own)?;
                    format!("file://{}", own.display())
                }
                Source::S3 => format!("s3://{BUCKET}/roles/{}.txt", (round - 1) * items + i),
            };
            for document in &mut item.documents {
                document.uri.clone_from(&uri);
            }
        }
        let before = proc_stats(pid)?;
        let t0 = Instant::now();
        let answer = deployment.client.clone().push_batch(batch).await?.into_inner();
        let elapsed = t0.elapsed();
        let cpu = proc_stats(pid)?.cpu.saturating_sub(before.cpu);
        let queued = answer.items.iter().filter(|r| r.outcome() == BatchItemOutcome::Accepted).count();
        ensure!(queued == items, "{queued} of {items} items were queued: {:?}", answer.items.first());
        acks.push(elapsed);
        section.row(vec![
            round.to_string(),
            items.to_string(),
            num(ms(elapsed), 0),
            num(items as f64 / elapsed.as_secs_f64(), 0),
            num(ms(cpu), 0),
            num(cpu.as_secs_f64() * 1e6 / items as f64, 0),
        ]);
    }
    let median = acks.p50();
    section.check(
        format!("PushBatch of {items} acknowledged (median round)"),
        "< 1 s",
        format!("{} ms", num(ms(median), 0)),
        median.as_secs_f64() < 1.0,
    );
    deployment.stop().await?;
    drop(moto);
    Ok(section)
}

/// The bucket of the S3 variant.
const BUCKET: &str = "etter-bench";

/// `documents.max_concurrent_checks`, the default.
const CHECKS: usize = 32;

/// moto's S3 server (`scripts/lib/moto_s3.py`) with a bucket of objects; stops when dropped.
struct Moto {
    endpoint: String,
    _child: tokio::process::Child,
}

impl Moto {
    async fn start(bucket: &str, objects: usize) -> Result<Self> {
        use tokio::io::AsyncBufReadExt as _;
        let python = std::env::var("ETTER_TOOLS__PYTHON").map_err(|_| {
            anyhow::anyhow!("ETTER_TOOLS__PYTHON is not set: run `scripts/services up` and source .etter/services.env")
        })?;
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lib/moto_s3.py");
        let mut child = tokio::process::Command::new(python)
            .arg(&script)
            .arg(bucket)
            .arg(objects.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("moto has no stdout"))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(std::time::Duration::from_secs(600), lines.next_line())
            .await
            .map_err(|_| anyhow::anyhow!("moto did not upload {objects} objects within 10 minutes"))??
            .ok_or_else(|| anyhow::anyhow!("moto exited before it was ready: is moto[server] in the venv?"))?;
        let address = ready.strip_prefix("READY ").ok_or_else(|| anyhow::anyhow!("unexpected moto output: {ready}"))?;
        Ok(Self { endpoint: format!("http://{address}"), _child: child })
    }
}
