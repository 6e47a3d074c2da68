//! One benchmark run: start the sink and every subject side by side, measure each figure on
//! each subject in turn (figure by figure, so all subjects see the same machine state), repeat
//! for the requested number of runs, then hold idle sessions on freshly started subjects.

use std::path::PathBuf;
use std::time::Duration;

use chrono::TimeDelta;

use crate::endpoint::{Access, Client, SetupError, TicketPool};
use crate::measure::{self, Profile, Throughput};
use crate::proxies::{self, Processes, Programs, StartError};
use crate::report::{
    Figure, Flow, Results, BARE_RELAY, CONSOLEGATE_WS, CONSOLEGATE_WSS, RAW, SUBJECTS, WEBSOCAT,
    WEBSOCKIFY,
};
use crate::sink::{Mode, SinkPorts};

/// Browsers that stop reading in the backpressure test.
const STALLED_SESSIONS: usize = 16;

/// Size of each message in the browser-to-target test: large enough for bulk transfer, and
/// within websocat's default 64 KiB message buffer (a 64 KiB payload plus header is not).
const UP_MESSAGE: usize = 32 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot create {path}: {source}")]
    Workdir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Setup(#[from] SetupError),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub programs: Programs,
    /// Why websockify or websocat is missing, when it is.
    pub websockify_missing: Option<String>,
    pub websocat_missing: Option<String>,
    pub runs: usize,
    pub profile: Profile,
    /// Distinct tickets signed per sink behaviour.
    pub tickets_per_mode: usize,
    /// Extra `KEY=value` lines for consolegate's configuration.
    pub consolegate_config: String,
    /// Only these groups of figures (down, up, rtt, setup, hold); empty: all.
    pub only: Vec<String>,
}

impl Options {
    fn wants(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }
}

/// A subject that is up: how to reach it and which process serves each sink behaviour.
struct Live {
    access: Access,
    /// websockify's wss:// access for the wss:// setup-rate row.
    wss_access: Option<Access>,
    pids: [Option<u32>; 4],
}

impl Live {
    fn pid(&self, mode: Mode) -> Option<u32> {
        Mode::ALL
            .iter()
            .position(|&m| m == mode)
            .and_then(|i| self.pids[i])
    }
}

/// A subject served by `processes`, with the process behind each sink behaviour.
fn served_by(
    processes: Processes,
    access: Access,
    wss_access: Option<Access>,
) -> (Option<Processes>, Live) {
    let pids = Mode::ALL.map(|m| processes.pid(m));
    let live = Live {
        access,
        wss_access,
        pids,
    };
    (Some(processes), live)
}

/// Shared by every start: the sink, the tickets, the programs.
struct Bench {
    options: Options,
    client: Client,
    sink: SinkPorts,
    tickets: std::sync::Arc<TicketPool>,
}

impl Bench {
    /// Starts one subject; `Err` is the reason it is n/a.
    fn start(&self, subject: usize) -> Result<(Option<Processes>, Live), String> {
        let programs = &self.options.programs;
        match subject {
            RAW => Ok((
                None,
                Live {
                    access: Access::Raw(self.sink),
                    wss_access: None,
                    pids: [None; 4],
                },
            )),
            BARE_RELAY => {
                let (processes, ports) = proxies::start_relay(&programs.workdir, self.sink)
                    .map_err(|e| e.to_string())?;
                Ok(served_by(processes, Access::Raw(ports), None))
            }
            WEBSOCKIFY => {
                let program = programs
                    .websockify
                    .as_ref()
                    .ok_or_else(|| missing(&self.options.websockify_missing))?;
                let (processes, addr) = proxies::start_websockify(programs, program, self.sink)
                    .map_err(|e| e.to_string())?;
                Ok(served_by(
                    processes,
                    Access::Websockify { addr, tls: false },
                    Some(Access::Websockify { addr, tls: true }),
                ))
            }
            WEBSOCAT => {
                let program = programs
                    .websocat
                    .as_ref()
                    .ok_or_else(|| missing(&self.options.websocat_missing))?;
                let (processes, addrs) = proxies::start_websocat(programs, program, self.sink)
                    .map_err(|e| e.to_string())?;
                Ok(served_by(processes, Access::Websocat(addrs), None))
            }
            _ => {
                let (processes, addr) =
                    proxies::start_consolegate(programs, &self.options.consolegate_config)
                        .map_err(|e| e.to_string())?;
                let access = Access::Consolegate {
                    addr,
                    tls: subject == CONSOLEGATE_WSS,
                    tickets: self.tickets.clone(),
                };
                Ok(served_by(processes, access, None))
            }
        }
    }
}

/// A subject's column name.
fn name(subject: usize) -> &'static str {
    SUBJECTS[subject]
}

fn missing(reason: &Option<String>) -> String {
    reason.clone().unwrap_or_else(|| "not installed".into())
}

/// The figures in table order.
fn declare(results: &mut Results, hold_counts: &[usize]) {
    for figure in [
        Figure::DownOne,
        Figure::DownSixteen,
        Figure::UpOne,
        Figure::Rtt64P50,
        Figure::Rtt64P99,
        Figure::Rtt64kP50,
        Figure::Rtt64kP99,
        Figure::SetupWs,
        Figure::SetupWss,
        Figure::CpuSetupWs,
        Figure::CpuSetupWss,
        Figure::CpuDown,
        Figure::CpuUp,
        Figure::MachineCpu(Flow::DownOne),
        Figure::MachineCpu(Flow::DownSixteen),
        Figure::MachineCpu(Flow::UpOne),
        Figure::CoresBusy(Flow::DownOne),
        Figure::CoresBusy(Flow::DownSixteen),
        Figure::CoresBusy(Flow::UpOne),
        Figure::BusiestProcess(Flow::DownOne),
        Figure::BusiestProcess(Flow::DownSixteen),
        Figure::BusiestProcess(Flow::UpOne),
        Figure::StalledPerSession,
        Figure::StalledGrowth,
    ] {
        results.declare(figure);
    }
    for &n in hold_counts {
        for figure in [
            Figure::HeldAlive(n),
            Figure::PssBefore(n),
            Figure::PssHolding(n),
            Figure::PssPerSession(n),
            Figure::FdsHolding(n),
        ] {
            results.declare(figure);
        }
    }
}

/// Runs everything and returns the samples.
///
/// # Errors
/// The sink, the ticket signer or the TLS client cannot be set up; a subject that fails to
/// start is reported as n/a instead.
pub async fn run(options: Options) -> Result<Results, RunError> {
    let workdir = options.programs.workdir.clone();
    std::fs::create_dir_all(&workdir).map_err(|source| RunError::Workdir {
        path: workdir.display().to_string(),
        source,
    })?;
    let pki: PathBuf = options.programs.pki.clone();
    let (_sink_process, sink) = proxies::start_sink(&workdir)?;
    eprintln!("bench: sink listening ({})", sink.to_line());
    let client = Client::new(&pki.join("ca.pem"))?;
    eprintln!(
        "bench: signing {} tickets per sink behaviour",
        options.tickets_per_mode
    );
    let tickets = std::sync::Arc::new(TicketPool::sign(
        &pki.join("engine.key"),
        &pki.join("engine.pem"),
        sink,
        options.tickets_per_mode,
        TimeDelta::hours(6),
    )?);
    let bench = Bench {
        options,
        client,
        sink,
        tickets,
    };
    let profile = bench.options.profile.clone();
    let mut results = Results::default();
    results.runs = bench.options.runs;
    declare(&mut results, &profile.hold_counts);

    // Main phase: every subject up at once, measured figure by figure.
    let mut live: Vec<Result<Live, String>> = Vec::new();
    let mut processes = Vec::new();
    for subject in 0..SUBJECTS.len() {
        if subject == CONSOLEGATE_WSS {
            // The same consolegate process serves wss:// on the same port.
            let same = match &live[CONSOLEGATE_WS] {
                Ok(Live {
                    access: Access::Consolegate { addr, tickets, .. },
                    pids,
                    ..
                }) => Ok(Live {
                    access: Access::Consolegate {
                        addr: *addr,
                        tls: true,
                        tickets: tickets.clone(),
                    },
                    wss_access: None,
                    pids: *pids,
                }),
                Ok(_) => Err("consolegate did not start".to_owned()),
                Err(e) => Err(e.clone()),
            };
            live.push(same);
            continue;
        }
        match bench.start(subject) {
            Ok((process, subject_live)) => {
                processes.extend(process);
                live.push(Ok(subject_live));
            }
            Err(reason) => {
                eprintln!("bench: {} unavailable: {reason}", name(subject));
                live.push(Err(reason));
            }
        }
    }
    for run in 1..=bench.options.runs {
        eprintln!("bench: run {run} of {}", bench.options.runs);
        main_phase(&bench, &live, &mut results).await;
    }
    if !bench.options.wants("hold") {
        return Ok(results);
    }
    drop(processes);

    // Hold phase: each subject freshly started, so "before" is its idle footprint.
    for run in 1..=bench.options.runs {
        for subject in [WEBSOCKIFY, WEBSOCAT, CONSOLEGATE_WS, CONSOLEGATE_WSS] {
            eprintln!("bench: run {run}: 16 stalled browsers on {}", name(subject));
            stall_phase(&bench, subject, &mut results).await;
        }
        for &count in &profile.hold_counts {
            for subject in [WEBSOCKIFY, WEBSOCAT, CONSOLEGATE_WS, CONSOLEGATE_WSS] {
                eprintln!(
                    "bench: run {run}: holding {count} idle sessions on {}",
                    name(subject)
                );
                hold_phase(&bench, subject, count, &mut results).await;
            }
        }
    }
    Ok(results)
}

async fn main_phase(bench: &Bench, live: &[Result<Live, String>], results: &mut Results) {
    let profile = &bench.options.profile;
    let client = &bench.client;
    let settle = || tokio::time::sleep(Duration::from_millis(200));
    for (subject, state) in live.iter().enumerate() {
        let Err(reason) = state else { continue };
        for figure in [
            Figure::DownOne,
            Figure::UpOne,
            Figure::Rtt64P50,
            Figure::SetupWs,
        ] {
            results.note(figure, subject, format!("{}: {reason}", name(subject)));
        }
    }
    let up = |s: usize| live[s].as_ref().ok();

    let wants = |group: &str| bench.options.wants(group);
    for (figure, flow, sessions) in [
        (Figure::DownOne, Flow::DownOne, 1),
        (Figure::DownSixteen, Flow::DownSixteen, 16),
    ] {
        if !wants("down") {
            break;
        }
        for subject in 0..SUBJECTS.len() {
            let Some(l) = up(subject) else { continue };
            let pid = l.pid(Mode::Source);
            match measure::throughput_down(client, &l.access, sessions, pid, profile).await {
                Ok(t) => {
                    results.sample(figure, subject, t.bytes_per_second / 1e6);
                    if sessions == 1 {
                        cpu_sample(results, Figure::CpuDown, subject, t.cpu_seconds_per_gb);
                    }
                    machine_sample(results, flow, subject, &t);
                }
                Err(e) => results.note(figure, subject, format!("{}: {e}", name(subject))),
            }
            settle().await;
        }
    }
    for subject in 0..SUBJECTS.len() {
        let Some(l) = up(subject).filter(|_| wants("up")) else {
            continue;
        };
        let pid = l.pid(Mode::Discard);
        match measure::throughput_up(
            client,
            &l.access,
            bench.sink.stats_addr(),
            pid,
            UP_MESSAGE,
            profile,
        )
        .await
        {
            Ok(t) => {
                results.sample(Figure::UpOne, subject, t.bytes_per_second / 1e6);
                cpu_sample(results, Figure::CpuUp, subject, t.cpu_seconds_per_gb);
                machine_sample(results, Flow::UpOne, subject, &t);
            }
            Err(e) => results.note(Figure::UpOne, subject, format!("{}: {e}", name(subject))),
        }
        settle().await;
    }
    for (size, count, p50, p99) in [
        (64, profile.rtt_small, Figure::Rtt64P50, Figure::Rtt64P99),
        (
            64 * 1024,
            profile.rtt_large,
            Figure::Rtt64kP50,
            Figure::Rtt64kP99,
        ),
    ] {
        for subject in 0..SUBJECTS.len() {
            let Some(l) = up(subject).filter(|_| wants("rtt")) else {
                continue;
            };
            match measure::latency(client, &l.access, size, count).await {
                Ok(latency) => {
                    results.sample(p50, subject, latency.p50_us);
                    results.sample(p99, subject, latency.p99_us);
                }
                Err(e) => results.note(p50, subject, format!("{}: {e}", name(subject))),
            }
            settle().await;
        }
    }
    for subject in 0..SUBJECTS.len() {
        let Some(l) = up(subject).filter(|_| wants("setup")) else {
            continue;
        };
        let (ws, wss) = match subject {
            CONSOLEGATE_WSS => (None, Some(&l.access)),
            WEBSOCKIFY => (Some(&l.access), l.wss_access.as_ref()),
            _ => (Some(&l.access), None),
        };
        if subject == WEBSOCAT {
            results.note(
                Figure::SetupWss,
                subject,
                "websocat: run as the issue does (ws-l, no TLS)",
            );
        }
        if subject == RAW || subject == BARE_RELAY {
            results.note(
                Figure::SetupWs,
                subject,
                "raw loopback and the bare relay: no WebSocket, no ticket: TCP connect (to the sink, or to the relay, which connects to the sink), one echo, close",
            );
        }
        for (figure, cpu_figure, access) in [
            (Figure::SetupWs, Figure::CpuSetupWs, ws),
            (Figure::SetupWss, Figure::CpuSetupWss, wss),
        ] {
            let Some(access) = access else { continue };
            let pid = l.pid(Mode::Echo);
            match measure::setup_rate(client, access, pid, profile).await {
                Ok(setup) => {
                    results.sample(figure, subject, setup.per_second);
                    cpu_sample(results, cpu_figure, subject, setup.cpu_us_per_session);
                    if setup.failures > 0 {
                        let first = setup.first_failure.unwrap_or_default();
                        results.note(
                            figure,
                            subject,
                            format!(
                                "{}: sessions failed during the setup test (e.g. {first})",
                                name(subject)
                            ),
                        );
                    }
                }
                Err(e) => results.note(figure, subject, format!("{}: {e}", name(subject))),
            }
            settle().await;
        }
    }
}

fn machine_sample(results: &mut Results, flow: Flow, subject: usize, t: &Throughput) {
    for (figure, value) in [
        (Figure::MachineCpu(flow), t.machine_cpu_seconds_per_gb),
        (Figure::CoresBusy(flow), t.cores_busy),
    ] {
        match value {
            Some(v) => results.sample(figure, subject, v),
            None => results.note(figure, subject, "/proc/stat could not be read"),
        }
    }
    let figure = Figure::BusiestProcess(flow);
    match &t.busiest_process {
        Some((cores, role)) => {
            results.sample(figure, subject, *cores);
            results.note(figure, subject, format!("busiest process: {role}"));
        }
        None => results.note(figure, subject, "no process's CPU time could be read"),
    }
}

fn cpu_sample(results: &mut Results, figure: Figure, subject: usize, value: Option<f64>) {
    match value {
        Some(v) => results.sample(figure, subject, v),
        None if subject == RAW => {
            results.note(figure, subject, "raw loopback: no proxy in the path")
        }
        None => results.note(
            figure,
            subject,
            format!("{}: no CPU reading", name(subject)),
        ),
    }
}

/// Backpressure on a freshly started subject: memory with browsers that stop reading.
async fn stall_phase(bench: &Bench, subject: usize, results: &mut Results) {
    let (processes, live) = match bench.start(subject) {
        Ok(started) => started,
        Err(reason) => {
            let note = format!("{}: {reason}", name(subject));
            return results.note(Figure::StalledPerSession, subject, note);
        }
    };
    let Some(pid) = live.pid(Mode::Source) else {
        return;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stall = if bench.options.profile.hold_time < Duration::from_secs(3) {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(3)
    };
    match measure::stalled(&bench.client, &live.access, pid, STALLED_SESSIONS, stall).await {
        Ok(s) => {
            results.sample(Figure::StalledPerSession, subject, s.per_session_kib);
            results.sample(Figure::StalledGrowth, subject, s.growth_kib);
        }
        Err(e) => results.note(
            Figure::StalledPerSession,
            subject,
            format!("{}: {e}", name(subject)),
        ),
    }
    drop(processes);
    tokio::time::sleep(Duration::from_millis(500)).await;
}

async fn hold_phase(bench: &Bench, subject: usize, count: usize, results: &mut Results) {
    let alive_figure = Figure::HeldAlive(count);
    let (processes, live) = match bench.start(subject) {
        Ok(started) => started,
        Err(reason) => {
            results.note(
                alive_figure,
                subject,
                format!("{}: {reason}", name(subject)),
            );
            return;
        }
    };
    let Some(pid) = live.pid(Mode::Console) else {
        return;
    };
    // Let the fresh process finish starting before its idle footprint is read.
    tokio::time::sleep(Duration::from_millis(500)).await;
    match measure::hold(
        &bench.client,
        &live.access,
        pid,
        count,
        &bench.options.profile,
    )
    .await
    {
        Ok(hold) => {
            results.sample(alive_figure, subject, hold.alive as f64);
            results.sample(
                Figure::PssBefore(count),
                subject,
                hold.before.pss_kib as f64 / 1024.0,
            );
            results.sample(
                Figure::PssHolding(count),
                subject,
                hold.holding.pss_kib as f64 / 1024.0,
            );
            if let Some(per) = hold.pss_per_session_kib() {
                results.sample(Figure::PssPerSession(count), subject, per);
            }
            results.sample(Figure::FdsHolding(count), subject, hold.holding.fds as f64);
            if hold.opened < hold.wanted {
                results.note(
                    alive_figure,
                    subject,
                    format!(
                        "{}: opened {} of {} ({}); per-session memory is over those opened",
                        name(subject),
                        hold.opened,
                        hold.wanted,
                        hold.stopped.as_deref().unwrap_or("failures")
                    ),
                );
            }
            if hold.holding.processes > 1 {
                results.note(
                    Figure::PssHolding(count),
                    subject,
                    format!(
                        "{}: {} processes while holding {count} (one per session)",
                        name(subject),
                        hold.holding.processes
                    ),
                );
            }
        }
        Err(e) => results.note(alive_figure, subject, format!("{}: {e}", name(subject))),
    }
    drop(processes);
    // Let the closed sessions' sockets drain before the next subject starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
}
