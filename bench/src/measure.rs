//! What every scenario measures with: latency samples and their percentiles, a closed-loop load
//! generator, and a process's CPU time and memory from `/proc`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, ensure};

/// Latencies of one kind of operation.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<Duration>);

impl Samples {
    /// Samples from `durations`.
    pub fn from_vec(durations: Vec<Duration>) -> Self {
        Self(durations)
    }

    /// Adds one latency.
    pub fn push(&mut self, latency: Duration) {
        self.0.push(latency);
    }

    /// The `q` quantile (0.0–1.0) by the nearest-rank method; zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    /// The median.
    pub fn p50(&self) -> Duration {
        self.quantile(0.50)
    }

    /// The 99th percentile.
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    /// The largest latency.
    pub fn max(&self) -> Duration {
        self.0.iter().copied().max().unwrap_or_default()
    }
}

/// Milliseconds, for tables.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `a / b`, or NaN when `b` is zero.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { f64::NAN } else { a / b }
}

/// The wall-clock time between `earlier` and `later`; zero when the clocks say the reverse.
pub fn between(earlier: SystemTime, later: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or_default()
}

/// A protobuf timestamp as wall-clock time.
pub fn wall(ts: &prost_types::Timestamp) -> SystemTime {
    let nanos = Duration::new(ts.seconds.max(0) as u64, ts.nanos.max(0) as u32);
    SystemTime::UNIX_EPOCH + nanos
}

/// A closed-loop load: `clients` tasks call `call(i)` for every `i` in `0..total`, each starting
/// its next call when its previous one answered (the way a client with `clients` workers pushes).
pub struct Load<T> {
    /// Latency of every call.
    pub latencies: Samples,
    /// What each call answered, with its index and the wall-clock time it was sent.
    pub answers: Vec<(usize, SystemTime, T)>,
    /// From the first call sent to the last answer.
    pub elapsed: Duration,
}

impl<T> Load<T> {
    /// Calls answered per second.
    pub fn throughput(&self) -> f64 {
        ratio(self.answers.len() as f64, self.elapsed.as_secs_f64())
    }
}

/// Runs a closed-loop load (see [`Load`]); the first failed call fails it.
pub async fn closed_loop<T, F, Fut>(clients: usize, total: usize, call: F) -> Result<Load<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients.max(1) {
        let next = Arc::clone(&next);
        let call = call.clone();
        tasks.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(done);
                }
                let sent = SystemTime::now();
                let t0 = Instant::now();
                let answer = call(i).await.with_context(|| format!("call {i}"))?;
                done.push((t0.elapsed(), i, sent, answer));
            }
        });
    }
    let mut latencies = Samples::default();
    let mut answers = Vec::with_capacity(total);
    while let Some(joined) = tasks.join_next().await {
        for (latency, i, sent, answer) in joined.context("a load task panicked")?? {
            latencies.push(latency);
            answers.push((i, sent, answer));
        }
    }
    let elapsed = started.elapsed();
    answers.sort_by_key(|(i, _, _)| *i);
    ensure!(answers.len() == total, "{} of {total} calls answered", answers.len());
    Ok(Load { latencies, answers, elapsed })
}

/// A process's CPU time (user + system, all threads) and memory, from `/proc/<pid>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    /// User plus system CPU time so far.
    pub cpu: Duration,
    /// Resident set size now, in bytes.
    pub rss: u64,
    /// The largest resident set size so far (VmHWM), in bytes.
    pub peak_rss: u64,
}

/// Reads `pid`'s [`ProcStats`].
pub fn proc_stats(pid: u32) -> Result<ProcStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("process {pid}"))?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).context("/proc/<pid>/stat without a command")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. indexes 11 and 12 after the command.
    let ticks = |i: usize| -> Result<u64> {
        fields.get(i).context("a short /proc/<pid>/stat")?.parse::<u64>().context("a CPU time in /proc/<pid>/stat")
    };
    let hz = rustix::param::clock_ticks_per_second().max(1);
    let cpu = Duration::from_secs_f64((ticks(11)? + ticks(12)?) as f64 / hz as f64);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcStats { cpu, rss: kib("VmRSS:") * 1024, peak_rss: kib("VmHWM:") * 1024 })
}

/// The local Temporal dev server answering at `address` (`http://host:port`): the process whose
/// command line is `… server start-dev … --port PORT`. `None` for any other Temporal (a cluster,
/// another machine), whose CPU is then not reported.
pub fn temporal_dev_server(address: &str) -> Option<u32> {
    let port = address.trim_end_matches('/').rsplit(':').next()?;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let dev = args.iter().any(|a| *a == b"start-dev");
        let on_port = args.windows(2).any(|w| w[0] == b"--port" && w[1] == port.as_bytes());
        (dev && on_port).then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dev_server_the_services_started_is_found_by_its_address() -> Result<()> {
        let address = etter_tests::service_setting("ETTER_TEMPORAL__ADDRESS", "temporal")?;
        let pid = temporal_dev_server(&address).context("no process serves the dev server's port")?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
        anyhow::ensure!(String::from_utf8_lossy(&cmdline).contains("start-dev"), "process {pid} is not a dev server");
        anyhow::ensure!(proc_stats(pid)?.cpu > Duration::ZERO, "a running dev server has used some CPU");
        anyhow::ensure!(temporal_dev_server("http://127.0.0.1:1").is_none(), "nothing serves port 1");
        Ok(())
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let samples = Samples::from_vec((1..=100).map(Duration::from_millis).collect());
        assert_eq!(samples.p50(), Duration::from_millis(50));
        assert_eq!(samples.p99(), Duration::from_millis(99));
        assert_eq!(samples.max(), Duration::from_millis(100));
        assert_eq!(Samples::default().p99(), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_closed_loop_calls_every_index_once_and_answers_in_order() -> Result<()> {
        let load = closed_loop(4, 50, |i| async move { Ok(i * 2) }).await?;
        let answers: Vec<usize> = load.answers.iter().map(|(_, _, a)| *a).collect();
        assert_eq!(answers, (0..50).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(load.latencies.0.len(), 50);
        Ok(())
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() -> Result<()> {
        let stats = proc_stats(std::process::id())?;
        assert!(stats.rss > 0 && stats.peak_rss >= stats.rss);
        Ok(())
    }
}
