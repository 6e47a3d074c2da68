//! The measurements, each against one subject reached through an [`Access`]: bulk throughput
//! either way, round-trip latency, session setup rate, and idle sessions held. Every loop is
//! bounded in count and in time; a subject that fails gets an error string, never a number.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::endpoint::{Access, Client};
use crate::procstat;
use crate::sink::{self, Mode, GREETING};
use crate::wire::Conn;

/// Bound on any single step (open, one round trip) of a session.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Payload of the one echo in a setup or liveness check.
const PROBE: &[u8; 64] = &[0x2a; 64];

/// How long a test runs and how big it is.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Transfer before the measured window starts (TCP windows open, caches warm).
    pub warmup: Duration,
    /// The measured window of throughput and setup-rate tests.
    pub window: Duration,
    /// Round trips measured per latency figure, 64 B and 64 KiB.
    pub rtt_small: usize,
    pub rtt_large: usize,
    /// Sessions being set up at once in the setup-rate test.
    pub setup_concurrency: usize,
    /// Idle-session counts to hold.
    pub hold_counts: Vec<usize>,
    /// How long the idle sessions are held before every one is checked.
    pub hold_time: Duration,
    /// Sessions being opened at once while filling a hold.
    pub open_concurrency: usize,
    /// Stop opening when the subject's processes together exceed this (KiB of PSS)...
    pub memory_cap_kib: u64,
    /// ...or the machine has less than this available (KiB).
    pub memory_floor_kib: u64,
}

/// Bulk throughput and what it cost the subject.
#[derive(Debug, Clone)]
pub struct Throughput {
    pub bytes_per_second: f64,
    /// CPU seconds the subject's processes used per 10^9 bytes relayed.
    pub cpu_seconds_per_gb: Option<f64>,
    /// CPU seconds the whole machine used per 10^9 bytes: the subject, the load generator,
    /// the sink and the kernel's work for all of them.
    pub machine_cpu_seconds_per_gb: Option<f64>,
    /// How many cores the machine kept busy on average over the window: at the core count,
    /// the transfer was bound by CPU; below it, by waiting (wake-ups, a stage of the pipeline).
    pub cores_busy: Option<f64>,
    /// The process that used the most CPU over the window, on the whole machine: the cores
    /// it kept busy and what it is (see [`procstat::role`]).
    pub busiest_process: Option<(f64, String)>,
}

#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
}

#[derive(Debug, Clone)]
pub struct Setup {
    pub per_second: f64,
    /// The subject's CPU time over the window divided by the sessions completed in it.
    pub cpu_us_per_session: Option<f64>,
    pub failures: usize,
    pub first_failure: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Hold {
    pub wanted: usize,
    pub opened: usize,
    pub alive: usize,
    pub before: procstat::Usage,
    pub holding: procstat::Usage,
    /// Why opening stopped early, if it did.
    pub stopped: Option<String>,
}

impl Hold {
    /// PSS added per open session, in KiB.
    pub fn pss_per_session_kib(&self) -> Option<f64> {
        (self.opened > 0).then(|| {
            (self.holding.pss_kib as f64 - self.before.pss_kib as f64) / self.opened as f64
        })
    }
}

fn seed() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    NEXT.fetch_add(0x6a09_e667_f3bc_c909, Ordering::Relaxed)
}

async fn open(client: &Client, access: &Access, mode: Mode) -> Result<Conn, String> {
    match tokio::time::timeout(STEP_TIMEOUT, client.open(access, mode, seed())).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("opening a session took over {STEP_TIMEOUT:?}")),
    }
}

fn cpu(pid: Option<u32>) -> Option<f64> {
    pid.map(procstat::cpu_seconds)
}

fn cost(cpu_before: Option<f64>, cpu_after: Option<f64>, bytes: u64) -> Option<f64> {
    match (cpu_before, cpu_after) {
        (Some(a), Some(b)) if bytes > 0 => Some((b - a) / (bytes as f64 / 1e9)),
        _ => None,
    }
}

/// Target-to-browser throughput over `sessions` sessions from the sink's source behaviour.
///
/// # Errors
/// A session could not be opened or ended during the measurement.
pub async fn throughput_down(
    client: &Client,
    access: &Access,
    sessions: usize,
    pid: Option<u32>,
    profile: &Profile,
) -> Result<Throughput, String> {
    let mut conns = Vec::new();
    for _ in 0..sessions {
        conns.push(open(client, access, Mode::Source).await?);
    }
    let received = Arc::new(AtomicU64::new(0));
    let failure = Arc::new(Mutex::new(None::<String>));
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    for mut conn in conns {
        let (received, failure, stop) = (received.clone(), failure.clone(), stop.clone());
        tasks.spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    result = conn.recv(&mut buf) => match result {
                        Ok(r) if !r.closed => { received.fetch_add(r.payload as u64, Ordering::Relaxed); }
                        Ok(_) => { record(&failure, "session closed during the transfer".into()); break; }
                        Err(e) => { record(&failure, e.to_string()); break; }
                    },
                }
            }
        });
    }
    let measured = window(profile, pid, || {
        std::future::ready(Ok(received.load(Ordering::Relaxed)))
    })
    .await;
    stop.cancel();
    finish(tasks).await;
    check(&failure)?;
    nonzero(measured?)
}

/// Browser-to-target throughput over one session into the sink's discard behaviour, counted
/// where the bytes arrive: the sink at `stats` says how many it has received.
///
/// # Errors
/// The session could not be opened or ended during the measurement.
pub async fn throughput_up(
    client: &Client,
    access: &Access,
    stats: SocketAddr,
    pid: Option<u32>,
    message_size: usize,
    profile: &Profile,
) -> Result<Throughput, String> {
    let mut conn = open(client, access, Mode::Discard).await?;
    let payload: Vec<u8> = (0..message_size).map(|i| (i % 253) as u8).collect();
    let wire = conn.wire_message(&payload);
    let (mut reader, mut writer) = conn.into_split();
    let failure = Arc::new(Mutex::new(None::<String>));
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    {
        let (failure, stop) = (failure.clone(), stop.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    result = writer.send_wire(&wire) => if let Err(e) = result {
                        record(&failure, format!("write: {e}"));
                        break;
                    },
                }
            }
        });
    }
    {
        // Nothing comes back; reading notices the session ending mid-transfer.
        let (failure, stop) = (failure.clone(), stop.clone());
        tasks.spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    result = reader.recv(&mut buf) => match result {
                        Ok(r) if !r.closed => {}
                        Ok(_) => { record(&failure, "session closed during the transfer".into()); break; }
                        Err(e) => { record(&failure, e.to_string()); break; }
                    },
                }
            }
        });
    }
    let measured = window(profile, pid, || async move {
        sink::discarded(stats)
            .await
            .map_err(|e| format!("reading the sink's count: {e}"))
    })
    .await;
    stop.cancel();
    finish(tasks).await;
    check(&failure)?;
    nonzero(measured?)
}

/// Waits out the warm-up, then measures the byte count `count` reads and the subject's CPU
/// over the window.
async fn window<F, Fut>(
    profile: &Profile,
    pid: Option<u32>,
    mut count: F,
) -> Result<Throughput, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, String>>,
{
    tokio::time::sleep(profile.warmup).await;
    let bytes_before = count().await?;
    let processes_before = procstat::process_ticks();
    let machine_before = procstat::machine_busy_seconds();
    let (cpu_before, started) = (cpu(pid), Instant::now());
    tokio::time::sleep(profile.window).await;
    let bytes_after = count().await?;
    let (cpu_after, elapsed) = (cpu(pid), started.elapsed());
    let machine_after = procstat::machine_busy_seconds();
    let processes_after = procstat::process_ticks();
    let bytes = bytes_after.saturating_sub(bytes_before);
    Ok(Throughput {
        bytes_per_second: bytes as f64 / elapsed.as_secs_f64(),
        cpu_seconds_per_gb: cost(cpu_before, cpu_after, bytes),
        machine_cpu_seconds_per_gb: cost(machine_before, machine_after, bytes),
        cores_busy: machine_before
            .zip(machine_after)
            .map(|(a, b)| (b - a) / elapsed.as_secs_f64()),
        busiest_process: procstat::busiest_process(
            &processes_before,
            &processes_after,
            elapsed.as_secs_f64(),
        )
        .map(|(share, pid)| (share, procstat::role(pid))),
    })
}

fn nonzero(measured: Throughput) -> Result<Throughput, String> {
    if measured.bytes_per_second > 0.0 {
        Ok(measured)
    } else {
        Err("nothing was relayed during the measured window".into())
    }
}

fn record(slot: &Mutex<Option<String>>, message: String) {
    if let Ok(mut slot) = slot.lock() {
        slot.get_or_insert(message);
    }
}

fn check(slot: &Mutex<Option<String>>) -> Result<(), String> {
    match slot.lock().ok().and_then(|mut s| s.take()) {
        Some(message) => Err(message),
        None => Ok(()),
    }
}

/// Waits (bounded) for the tasks, then abandons the stragglers.
async fn finish(mut tasks: JoinSet<()>) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
}

/// Round-trip time of `size`-byte messages through the echo behaviour: send one message,
/// wait for all of it to come back, `count` times (bounded to 20 s).
///
/// # Errors
/// The session could not be opened or a round trip failed.
pub async fn latency(
    client: &Client,
    access: &Access,
    size: usize,
    count: usize,
) -> Result<Latency, String> {
    let mut conn = open(client, access, Mode::Echo).await?;
    let payload = vec![0x5au8; size];
    let mut buf = vec![0u8; (size + 64).max(64 * 1024)];
    let warmup = (count / 10).clamp(1, 50);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut samples = Vec::with_capacity(count);
    for i in 0..warmup + count {
        if Instant::now() > deadline {
            break;
        }
        let started = Instant::now();
        let round_trip = async {
            conn.send(&payload).await.map_err(|e| e.to_string())?;
            conn.recv_payload(size, &mut buf)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(STEP_TIMEOUT, round_trip).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(format!("no echo within {STEP_TIMEOUT:?}")),
        }
        if i >= warmup {
            samples.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    conn.close().await;
    if samples.is_empty() {
        return Err("no round trip completed within 20s".into());
    }
    samples.sort_by(f64::total_cmp);
    Ok(Latency {
        p50_us: percentile(&samples, 0.50),
        p99_us: percentile(&samples, 0.99),
    })
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Complete sessions per second: connect, TLS if any, upgrade (the subject checks its token
/// or ticket and connects to the target), one 64-byte echo, close handshake. Sessions that
/// finish inside the window count; failures are counted and the first one kept.
///
/// # Errors
/// None completed at all.
pub async fn setup_rate(
    client: &Client,
    access: &Access,
    pid: Option<u32>,
    profile: &Profile,
) -> Result<Setup, String> {
    let start = Instant::now() + profile.warmup;
    let end = start + profile.window;
    let completed = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let first_failure = Arc::new(Mutex::new(None::<String>));
    let mut tasks = JoinSet::new();
    for _ in 0..profile.setup_concurrency {
        let (client, access) = (client.clone(), access.clone());
        let (completed, failures, first_failure) =
            (completed.clone(), failures.clone(), first_failure.clone());
        tasks.spawn(async move {
            let mut buf = vec![0u8; 4096];
            while Instant::now() < end {
                let session = async {
                    let mut conn = open(&client, &access, Mode::Echo).await?;
                    conn.send(PROBE).await.map_err(|e| e.to_string())?;
                    conn.recv_payload(PROBE.len(), &mut buf)
                        .await
                        .map_err(|e| e.to_string())?;
                    conn.close().await;
                    Ok::<(), String>(())
                };
                let result = tokio::time::timeout(STEP_TIMEOUT, session).await;
                let now = Instant::now();
                match result {
                    Ok(Ok(())) if now >= start && now <= end => {
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        record(&first_failure, e);
                    }
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        record(
                            &first_failure,
                            format!("session took over {STEP_TIMEOUT:?}"),
                        );
                    }
                }
            }
        });
    }
    tokio::time::sleep_until(start.into()).await;
    let cpu_before = cpu(pid);
    tokio::time::sleep_until(end.into()).await;
    let cpu_after = cpu(pid);
    let in_window = completed.load(Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    let completed = completed.load(Ordering::Relaxed);
    let first_failure = first_failure.lock().ok().and_then(|mut s| s.take());
    if completed == 0 {
        return Err(first_failure.unwrap_or_else(|| "no session completed".into()));
    }
    Ok(Setup {
        per_second: completed as f64 / profile.window.as_secs_f64(),
        cpu_us_per_session: match (cpu_before, cpu_after) {
            (Some(a), Some(b)) if in_window > 0 => Some((b - a) * 1e6 / in_window as f64),
            _ => None,
        },
        failures: failures.load(Ordering::Relaxed),
        first_failure,
    })
}

/// Opens `wanted` idle sessions to the console behaviour (each receives its first screen,
/// [`GREETING`] bytes, and is proven with one echo, so every relay buffer has been used at its
/// working size, as in a real console that went idle), measures
/// the subject's memory and descriptors before and while holding them, holds them for
/// `profile.hold_time` answering any pings as a browser would, then checks every one with
/// another echo.
///
/// Opening stops early (and says why) after 100 failures, when the subject's memory passes
/// the cap or the machine's available memory the floor, or after three minutes.
pub async fn hold(
    client: &Client,
    access: &Access,
    pid: u32,
    wanted: usize,
    profile: &Profile,
) -> Result<Hold, String> {
    let before = procstat::usage(pid).map_err(|e| format!("subject is gone: {e}"))?;
    let stop_reason = Arc::new(Mutex::new(None::<String>));
    let stopping = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let permits = Arc::new(Semaphore::new(profile.open_concurrency));
    let check = CancellationToken::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    let opened = Arc::new(AtomicUsize::new(0));
    let mut sessions = JoinSet::new();

    for i in 0..wanted {
        if stopping.load(Ordering::Relaxed) {
            break;
        }
        if Instant::now() > deadline {
            record(&stop_reason, "opening took over 180s".into());
            break;
        }
        if i % 100 == 99 {
            if let Some(reason) = over_memory(pid, profile) {
                record(&stop_reason, reason);
                break;
            }
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (client, access) = (client.clone(), access.clone());
        let (failures, stopping, stop_reason, opened, check) = (
            failures.clone(),
            stopping.clone(),
            stop_reason.clone(),
            opened.clone(),
            check.clone(),
        );
        sessions.spawn(async move {
            let mut buf = [0u8; 512];
            let opening = async {
                let mut conn = open(&client, &access, Mode::Console).await?;
                tokio::time::timeout(STEP_TIMEOUT, async {
                    let mut screen = vec![0u8; 64 * 1024];
                    conn.recv_payload(GREETING, &mut screen)
                        .await
                        .map_err(|e| format!("first screen: {e}"))?;
                    drop(screen);
                    conn.send(PROBE).await.map_err(|e| e.to_string())?;
                    conn.recv_payload(PROBE.len(), &mut buf)
                        .await
                        .map_err(|e| e.to_string())
                })
                .await
                .map_err(|_| "no echo".to_string())??;
                Ok::<Conn, String>(conn)
            };
            let result = opening.await;
            drop(permit);
            let mut conn = match result {
                Ok(conn) => conn,
                Err(e) => {
                    if failures.fetch_add(1, Ordering::Relaxed) + 1 >= 100 {
                        record(
                            &stop_reason,
                            format!("100 sessions failed to open, e.g. {e}"),
                        );
                        stopping.store(true, Ordering::Relaxed);
                    }
                    return false;
                }
            };
            opened.fetch_add(1, Ordering::Relaxed);
            // Idle like a browser showing a still screen: answer pings, notice a close.
            loop {
                tokio::select! {
                    () = check.cancelled() => break,
                    result = conn.recv(&mut buf) => match result {
                        Ok(r) if !r.closed => {}
                        _ => return false,
                    },
                }
            }
            let alive = tokio::time::timeout(STEP_TIMEOUT, async {
                conn.send(PROBE).await.map_err(|e| e.to_string())?;
                conn.recv_payload(PROBE.len(), &mut buf)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
            matches!(alive, Ok(Ok(())))
        });
    }
    // Every opening has finished once all permits are back.
    let all = u32::try_from(profile.open_concurrency).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(STEP_TIMEOUT * 2, permits.acquire_many(all)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let holding = procstat::usage(pid).map_err(|e| format!("subject died while holding: {e}"))?;
    tokio::time::sleep(profile.hold_time).await;
    check.cancel();
    let mut alive = 0;
    let collect = async {
        while let Some(result) = sessions.join_next().await {
            if matches!(result, Ok(true)) {
                alive += 1;
            }
        }
    };
    let _ = tokio::time::timeout(STEP_TIMEOUT * 3, collect).await;
    sessions.abort_all();
    let stopped = stop_reason.lock().ok().and_then(|mut s| s.take());
    Ok(Hold {
        wanted,
        opened: opened.load(Ordering::Relaxed),
        alive,
        before,
        holding,
        stopped,
    })
}

/// Memory under backpressure: `sessions` browsers open the source behaviour (a target that
/// writes as fast as it may) and never read. A relay with end-to-end backpressure stops
/// reading the target once the socket buffers are full, so its memory stops growing.
#[derive(Debug, Clone, Copy)]
pub struct Stalled {
    /// PSS added per stalled session once the buffers have filled (after one second).
    pub per_session_kib: f64,
    /// Further growth of the whole subject over the next `hold` seconds: zero when bounded.
    pub growth_kib: f64,
}

/// # Errors
/// A session could not be opened or the subject died.
pub async fn stalled(
    client: &Client,
    access: &Access,
    pid: u32,
    sessions: usize,
    hold: Duration,
) -> Result<Stalled, String> {
    let before = procstat::usage(pid).map_err(|e| format!("subject is gone: {e}"))?;
    let mut conns = Vec::new();
    for _ in 0..sessions {
        conns.push(open(client, access, Mode::Source).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let filled = procstat::usage(pid).map_err(|e| format!("subject died: {e}"))?;
    tokio::time::sleep(hold).await;
    let later = procstat::usage(pid).map_err(|e| format!("subject died: {e}"))?;
    drop(conns);
    Ok(Stalled {
        per_session_kib: (filled.pss_kib as f64 - before.pss_kib as f64) / sessions as f64,
        growth_kib: later.pss_kib as f64 - filled.pss_kib as f64,
    })
}

fn over_memory(pid: u32, profile: &Profile) -> Option<String> {
    if let Ok(usage) = procstat::usage(pid) {
        if usage.pss_kib > profile.memory_cap_kib {
            return Some(format!(
                "stopped opening: subject uses {} MiB, over the {} MiB cap",
                usage.pss_kib / 1024,
                profile.memory_cap_kib / 1024
            ));
        }
    }
    match procstat::mem_available_kib() {
        Some(available) if available < profile.memory_floor_kib => Some(format!(
            "stopped opening: only {} MiB of memory left on the machine",
            available / 1024
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&samples, 0.5), 50.0);
        assert_eq!(percentile(&samples, 0.99), 99.0);
        assert_eq!(percentile(&samples, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn cpu_cost_is_per_gigabyte() {
        assert_eq!(cost(Some(1.0), Some(1.5), 2_000_000_000), Some(0.25));
        assert_eq!(cost(None, Some(1.0), 1), None);
        assert_eq!(cost(Some(1.0), Some(1.0), 0), None);
    }

    #[test]
    fn per_session_memory_is_the_growth_over_open_sessions() {
        let usage = |pss_kib| procstat::Usage {
            pss_kib,
            fds: 0,
            processes: 1,
        };
        let hold = Hold {
            wanted: 10,
            opened: 4,
            alive: 4,
            before: usage(1000),
            holding: usage(1100),
            stopped: None,
        };
        assert_eq!(hold.pss_per_session_kib(), Some(25.0));
        assert_eq!(
            Hold {
                opened: 0,
                ..hold.clone()
            }
            .pss_per_session_kib(),
            None
        );
    }
}
