//! consolegate-bench: the load generator behind `scripts/bench.sh`. `run` measures raw
//! loopback TCP, websockify, websocat and consolegate (ws:// and wss://) side by side on
//! loopback and writes a Markdown table; `sink` is the target server it starts for itself.

mod endpoint;
mod measure;
mod procstat;
mod proxies;
mod relay;
mod report;
mod run;
mod sink;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::measure::Profile;
use crate::proxies::Programs;
use crate::report::{Figure, CONSOLEGATE_WS, CONSOLEGATE_WSS};

#[derive(Parser)]
#[command(
    name = "consolegate-bench",
    about = "Benchmark consolegate against raw loopback, a bare relay, websockify and websocat"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the benchmark and print (or write) the Markdown report.
    Run(Box<RunArgs>),
    /// The target server: prints its ports, serves until standard input closes.
    Sink {
        /// Exit after this many seconds even if standard input stays open.
        #[arg(long, default_value_t = 4 * 3600)]
        lifetime: u64,
    },
    /// The bare relay in front of a sink: prints its ports, relays until standard input
    /// closes.
    Relay {
        /// The sink's ports line (`sink source=... stats=...`).
        #[arg(long)]
        sink: String,
        /// Exit after this many seconds even if standard input stays open.
        #[arg(long, default_value_t = 4 * 3600)]
        lifetime: u64,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The consolegate binary (build it with --release for real figures).
    #[arg(long)]
    consolegate: PathBuf,
    /// The websockify program (from a virtual environment).
    #[arg(long)]
    websockify: Option<PathBuf>,
    /// Why websockify is not given, for the report.
    #[arg(long)]
    websockify_missing: Option<String>,
    #[arg(long)]
    websocat: Option<PathBuf>,
    #[arg(long)]
    websocat_missing: Option<String>,
    /// Directory with ca.pem, proxy.pem/.key (TLS, RSA-2048) and engine.pem/.key (tickets).
    #[arg(long, default_value = "tests/fixtures/pki")]
    pki: PathBuf,
    /// Where configuration files and the subjects' logs go.
    #[arg(long, default_value = "target/bench")]
    workdir: PathBuf,
    /// Runs whose medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds-long functional check: tiny windows and counts, one run; exits non-zero if
    /// any consolegate figure is missing or a held session died.
    #[arg(long)]
    smoke: bool,
    /// Measured window of each throughput and setup-rate test, in seconds.
    #[arg(long, default_value_t = 2.0)]
    window: f64,
    /// Idle-session counts to hold, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,9000")]
    hold: Vec<usize>,
    /// Seconds the idle sessions are held before each is checked.
    #[arg(long, default_value_t = 10.0)]
    hold_time: f64,
    /// Sessions set up concurrently in the setup-rate test.
    #[arg(long, default_value_t = 32)]
    setup_concurrency: usize,
    /// Stop opening idle sessions once a subject's processes use this much (MiB of PSS).
    #[arg(long, default_value_t = 6144)]
    memory_cap_mib: u64,
    /// Extra KEY=value line for consolegate's configuration (repeatable).
    #[arg(long = "consolegate-config")]
    consolegate_config: Vec<String>,
    /// A line for the report's header (versions, commit); repeatable.
    #[arg(long = "header")]
    header: Vec<String>,
    /// Only these groups of figures: down, up, rtt, setup, hold (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Write the Markdown report here as well as to standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Raises the soft descriptor limit to the hard one: 9,000 sessions need 18,000 descriptors
/// in the proxy and 9,000 here. Children (the subjects) inherit it.
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by reference.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
    }
    limit.rlim_cur
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let fd_limit = raise_fd_limit();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("consolegate-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Sink { lifetime } => {
            match runtime.block_on(sink::run(Duration::from_secs(lifetime))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("consolegate-bench sink: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Relay { sink, lifetime } => {
            let Some(ports) = sink::SinkPorts::parse_line(&sink) else {
                eprintln!("consolegate-bench relay: not a sink ports line: {sink}");
                return ExitCode::FAILURE;
            };
            match relay::start(ports) {
                Ok(()) => {
                    runtime.block_on(sink::until_released(Duration::from_secs(lifetime)));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("consolegate-bench relay: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(args) => runtime.block_on(run_command(*args, fd_limit)),
    }
}

async fn run_command(args: RunArgs, fd_limit: u64) -> ExitCode {
    let smoke = args.smoke;
    let (runs, profile, tickets_per_mode) = if smoke {
        (
            1,
            Profile {
                warmup: Duration::from_millis(100),
                window: Duration::from_millis(300),
                rtt_small: 50,
                rtt_large: 10,
                setup_concurrency: 4,
                hold_counts: vec![100],
                hold_time: Duration::from_millis(300),
                open_concurrency: 16,
                memory_cap_kib: args.memory_cap_mib * 1024,
                memory_floor_kib: 2 * 1024 * 1024,
            },
            8,
        )
    } else {
        (
            args.runs.max(1),
            Profile {
                warmup: Duration::from_millis(500),
                window: Duration::from_secs_f64(args.window.max(0.1)),
                rtt_small: 2000,
                rtt_large: 300,
                setup_concurrency: args.setup_concurrency.max(1),
                hold_counts: args.hold.clone(),
                hold_time: Duration::from_secs_f64(args.hold_time.max(0.0)),
                open_concurrency: 32,
                memory_cap_kib: args.memory_cap_mib * 1024,
                memory_floor_kib: 4 * 1024 * 1024,
            },
            1024,
        )
    };
    let header = header(&args, runs, &profile, fd_limit);
    let options = run::Options {
        programs: Programs {
            consolegate: args.consolegate,
            websockify: args.websockify,
            websocat: args.websocat,
            pki: args.pki,
            workdir: args.workdir,
        },
        websockify_missing: args.websockify_missing,
        websocat_missing: args.websocat_missing,
        runs,
        profile: profile.clone(),
        tickets_per_mode,
        consolegate_config: args.consolegate_config.join("\n"),
        only: args.only.clone(),
    };
    let results = match run::run(options).await {
        Ok(results) => results,
        Err(e) => {
            eprintln!("consolegate-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let markdown = results.to_markdown(&header);
    println!("{markdown}");
    if let Some(out) = &args.out {
        if let Err(e) = std::fs::write(out, &markdown) {
            eprintln!("consolegate-bench: cannot write {}: {e}", out.display());
            return ExitCode::FAILURE;
        }
        eprintln!("bench: report written to {}", out.display());
    }
    if smoke {
        return smoke_verdict(&results, &profile);
    }
    ExitCode::SUCCESS
}

/// The smoke's only assertions: every consolegate figure was measured (no speed threshold)
/// and every held session survived.
fn smoke_verdict(results: &report::Results, profile: &Profile) -> ExitCode {
    let mut missing = Vec::new();
    let mut figures = vec![
        (Figure::DownOne, CONSOLEGATE_WS),
        (Figure::DownSixteen, CONSOLEGATE_WS),
        (Figure::UpOne, CONSOLEGATE_WS),
        (Figure::Rtt64P50, CONSOLEGATE_WS),
        (Figure::Rtt64kP50, CONSOLEGATE_WS),
        (Figure::SetupWs, CONSOLEGATE_WS),
        (Figure::DownOne, CONSOLEGATE_WSS),
        (Figure::UpOne, CONSOLEGATE_WSS),
        (Figure::SetupWss, CONSOLEGATE_WSS),
        (Figure::CpuDown, CONSOLEGATE_WS),
    ];
    for &n in &profile.hold_counts {
        figures.push((Figure::PssPerSession(n), CONSOLEGATE_WS));
        match results.median(Figure::HeldAlive(n), CONSOLEGATE_WS) {
            Some(alive) if alive as usize == n => {}
            other => missing.push(format!("{n} held sessions: {other:?} alive")),
        }
    }
    for (figure, subject) in figures {
        if results.median(figure, subject).is_none() {
            missing.push(format!(
                "{} ({})",
                figure.label(),
                report::SUBJECTS[subject]
            ));
        }
    }
    if missing.is_empty() {
        eprintln!("bench smoke: every consolegate figure measured");
        ExitCode::SUCCESS
    } else {
        eprintln!("bench smoke FAILED: {}", missing.join("; "));
        ExitCode::FAILURE
    }
}

/// How an idle CPU waits for work. In a VM, waking a halted vCPU goes through the
/// hypervisor, and every round trip through a relay wakes one more process than through raw
/// loopback, so this moves the round-trip figures more than anything a proxy does.
fn idle_policy() -> String {
    match (
        system_value("/sys/devices/system/cpu/cpuidle/current_driver"),
        system_value("/sys/module/haltpoll/parameters/guest_halt_poll_ns"),
    ) {
        (Some(driver), Some(ns)) if driver == "haltpoll" => match ns.parse::<u64>() {
            Ok(0) => "idle vCPUs halt without polling (haltpoll.guest_halt_poll_ns=0)".into(),
            Ok(ns) => format!("idle vCPUs poll up to {} µs before halting", ns / 1000),
            Err(_) => format!("cpuidle haltpoll, guest_halt_poll_ns {ns}"),
        },
        (Some(driver), _) => format!("cpuidle driver {driver}"),
        (None, _) => "cpuidle driver unknown".into(),
    }
}

/// A one-line kernel setting or fact from /proc or /sys, trimmed.
fn system_value(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn header(args: &RunArgs, runs: usize, profile: &Profile, fd_limit: u64) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = system_value("/proc/sys/kernel/osrelease").unwrap_or_default();
    // BBR paces in TCP itself (a timer per transmit) unless the qdisc is fq: it moves every
    // figure here, so the report says which one ran.
    let congestion = system_value("/proc/sys/net/ipv4/tcp_congestion_control")
        .unwrap_or_else(|| "unknown".into());
    let idle = idle_policy();
    let mut lines = vec![
        "# consolegate benchmark".to_owned(),
        String::new(),
        format!(
            "Run {} on {cores} × {cpu}, Linux {kernel}, TCP congestion control {congestion}, {idle}, descriptor limit {fd_limit}.",
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
        ),
        format!(
            "{runs} run(s); throughput and setup windows {:.1} s after {:.1} s warm-up; {} × 64 B and {} × 64 KiB round trips; \
             {} concurrent session setups; idle holds of {:?} sessions for {:.0} s.",
            profile.window.as_secs_f64(),
            profile.warmup.as_secs_f64(),
            profile.rtt_small,
            profile.rtt_large,
            profile.setup_concurrency,
            profile.hold_counts,
            profile.hold_time.as_secs_f64()
        ),
        "Everything on loopback; load generator, sink and subject share the machine's cores. \
         MB = 10^6 bytes. wss:// uses an RSA-2048 server key, full handshakes (no resumption); \
         consolegate verifies a freshly signed RSA-2048 ticket per session. \
         The bare relay (`consolegate-bench relay`) is the least any relay can do: raw TCP in, \
         raw TCP out, one blocking thread per direction splicing through a 1 MiB pipe."
            .to_owned(),
    ];
    if !args.header.is_empty() {
        lines.push(String::new());
        lines.extend(args.header.iter().map(|h| format!("- {h}")));
    }
    lines.join("\n")
}
