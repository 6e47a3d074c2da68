//! Collected samples to Markdown: medians over the runs for every figure and subject, the
//! ratios of each proxy to raw loopback, to websockify and to websocat, the targets
//! with a plain met / MISSED verdict, and every reason a cell is n/a as a numbered note.

use std::fmt::Write as _;

/// The columns, in order.
pub const SUBJECTS: [&str; 6] = [
    "raw loopback",
    "bare relay",
    "websockify",
    "websocat",
    "consolegate ws://",
    "consolegate wss://",
];
/// Straight to the sink: the physical limit.
pub const RAW: usize = 0;
/// The least a relay can do ([`crate::relay`]): the limit for anything with a second TCP
/// connection in the path.
pub const BARE_RELAY: usize = 1;
pub const WEBSOCKIFY: usize = 2;
pub const WEBSOCAT: usize = 3;
pub const CONSOLEGATE_WS: usize = 4;
pub const CONSOLEGATE_WSS: usize = 5;

/// Whether a larger figure is better; decides "ahead of" comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    /// Context, not a score (memory before the hold, descriptors).
    Neither,
}

/// The three bulk transfers, for the figures that describe the machine during each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    DownOne,
    DownSixteen,
    UpOne,
}

impl Flow {
    fn label(self) -> &'static str {
        match self {
            Flow::DownOne => "target→browser, 1 session",
            Flow::DownSixteen => "target→browser, 16 sessions",
            Flow::UpOne => "browser→target, 1 session",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    DownOne,
    DownSixteen,
    UpOne,
    Rtt64P50,
    Rtt64P99,
    Rtt64kP50,
    Rtt64kP99,
    SetupWs,
    SetupWss,
    CpuSetupWs,
    CpuSetupWss,
    CpuDown,
    CpuUp,
    /// CPU seconds per GB of every process and the kernel, not only the subject's.
    MachineCpu(Flow),
    /// Cores kept busy during the transfer (all processes and the kernel).
    CoresBusy(Flow),
    /// Cores kept busy by the busiest process on the machine during the transfer.
    BusiestProcess(Flow),
    StalledPerSession,
    StalledGrowth,
    HeldAlive(usize),
    PssBefore(usize),
    PssHolding(usize),
    PssPerSession(usize),
    FdsHolding(usize),
}

impl Figure {
    pub fn label(self) -> String {
        match self {
            Figure::DownOne => "throughput target→browser, 1 session (MB/s)".into(),
            Figure::DownSixteen => "throughput target→browser, 16 sessions (MB/s)".into(),
            Figure::UpOne => "throughput browser→target, 1 session (MB/s)".into(),
            Figure::Rtt64P50 => "round trip 64 B, p50 (µs)".into(),
            Figure::Rtt64P99 => "round trip 64 B, p99 (µs)".into(),
            Figure::Rtt64kP50 => "round trip 64 KiB, p50 (µs)".into(),
            Figure::Rtt64kP99 => "round trip 64 KiB, p99 (µs)".into(),
            Figure::SetupWs => "session setup rate, ws:// (sessions/s)".into(),
            Figure::SetupWss => "session setup rate, wss:// (sessions/s)".into(),
            Figure::CpuSetupWs => "CPU per session set up, ws:// (µs)".into(),
            Figure::CpuSetupWss => "CPU per session set up, wss:// (µs)".into(),
            Figure::CpuDown => "CPU per GB relayed, target→browser (s)".into(),
            Figure::CpuUp => "CPU per GB relayed, browser→target (s)".into(),
            Figure::MachineCpu(flow) => format!(
                "machine CPU per GB (every process and the kernel), {} (s)",
                flow.label()
            ),
            Figure::CoresBusy(flow) => format!("cores busy (all processes), {}", flow.label()),
            Figure::BusiestProcess(flow) => {
                format!("cores busy in the busiest process, {}", flow.label())
            }
            Figure::StalledPerSession => {
                "PSS per session, 16 browsers not reading a flooding target (KiB)".into()
            }
            Figure::StalledGrowth => {
                "further PSS growth of those 16 over the next seconds (KiB)".into()
            }
            Figure::HeldAlive(n) => format!("idle sessions alive after the hold, of {}", group(n)),
            Figure::PssBefore(n) => format!("PSS before opening {} (MiB)", group(n)),
            Figure::PssHolding(n) => format!("PSS holding {} (MiB)", group(n)),
            Figure::PssPerSession(n) => format!("PSS per idle session, {} (KiB)", group(n)),
            Figure::FdsHolding(n) => format!("descriptors holding {}", group(n)),
        }
    }

    pub fn better(self) -> Better {
        match self {
            Figure::DownOne
            | Figure::DownSixteen
            | Figure::UpOne
            | Figure::SetupWs
            | Figure::SetupWss
            | Figure::HeldAlive(_) => Better::Higher,
            Figure::Rtt64P50
            | Figure::Rtt64P99
            | Figure::Rtt64kP50
            | Figure::Rtt64kP99
            | Figure::CpuSetupWs
            | Figure::CpuSetupWss
            | Figure::CpuDown
            | Figure::CpuUp
            | Figure::MachineCpu(_)
            | Figure::StalledPerSession
            | Figure::PssHolding(_)
            | Figure::PssPerSession(_) => Better::Lower,
            Figure::PssBefore(_)
            | Figure::FdsHolding(_)
            | Figure::StalledGrowth
            | Figure::CoresBusy(_)
            | Figure::BusiestProcess(_) => Better::Neither,
        }
    }

    fn format(self, value: f64) -> String {
        match self {
            Figure::CpuDown
            | Figure::CpuUp
            | Figure::MachineCpu(_)
            | Figure::CoresBusy(_)
            | Figure::BusiestProcess(_) => format!("{value:.2}"),
            Figure::PssBefore(_) | Figure::PssHolding(_) => format!("{value:.1}"),
            Figure::PssPerSession(_) | Figure::StalledPerSession | Figure::StalledGrowth => {
                format!("{value:.1}")
            }
            _ if value.abs() >= 100.0 => group(value.round() as usize),
            _ => format!("{value:.1}"),
        }
    }
}

/// 12345 as "12,345".
pub fn group(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[derive(Debug, Clone, Default)]
struct Cell {
    samples: Vec<f64>,
    notes: Vec<String>,
}

#[derive(Debug, Clone)]
struct Row {
    figure: Figure,
    cells: Vec<Cell>,
}

/// Every sample and note of a benchmark run.
#[derive(Debug, Clone, Default)]
pub struct Results {
    rows: Vec<Row>,
    pub runs: usize,
}

impl Results {
    fn row(&mut self, figure: Figure) -> &mut Row {
        if let Some(i) = self.rows.iter().position(|r| r.figure == figure) {
            return &mut self.rows[i];
        }
        self.rows.push(Row {
            figure,
            cells: vec![Cell::default(); SUBJECTS.len()],
        });
        let last = self.rows.len() - 1;
        &mut self.rows[last]
    }

    /// Declares a row so figures appear in a fixed order even if measured out of order.
    pub fn declare(&mut self, figure: Figure) {
        self.row(figure);
    }

    pub fn sample(&mut self, figure: Figure, subject: usize, value: f64) {
        if value.is_finite() {
            self.row(figure).cells[subject].samples.push(value);
        }
    }

    /// A reason attached to a cell: why it is n/a, or something the reader should know.
    pub fn note(&mut self, figure: Figure, subject: usize, note: impl Into<String>) {
        let note = note.into();
        let cell = &mut self.row(figure).cells[subject];
        if !cell.notes.contains(&note) {
            cell.notes.push(note);
        }
    }

    pub fn median(&self, figure: Figure, subject: usize) -> Option<f64> {
        let cell = &self
            .rows
            .iter()
            .find(|r| r.figure == figure)?
            .cells
            .get(subject)?;
        median(&cell.samples)
    }

    /// Cells of consolegate (`subject`) that have a value that is not ahead of websockify's
    /// and websocat's.
    pub fn not_ahead(&self, subject: usize) -> Vec<String> {
        let mut behind = Vec::new();
        for row in &self.rows {
            let Some(ours) = median(&row.cells[subject].samples) else {
                continue;
            };
            for other in [WEBSOCKIFY, WEBSOCAT] {
                let Some(theirs) = median(&row.cells[other].samples) else {
                    continue;
                };
                let ahead = match row.figure.better() {
                    // Holding every session is the most anyone can do.
                    Better::Higher if matches!(row.figure, Figure::HeldAlive(_)) => ours >= theirs,
                    Better::Higher => ours > theirs,
                    Better::Lower => ours < theirs,
                    Better::Neither => true,
                };
                if !ahead {
                    behind.push(format!("{} vs {}", row.figure.label(), SUBJECTS[other]));
                }
            }
        }
        behind
    }

    /// The whole report as Markdown.
    pub fn to_markdown(&self, header: &str) -> String {
        let mut notes: Vec<String> = Vec::new();
        let mut note_number = |note: &str| -> usize {
            if let Some(i) = notes.iter().position(|n| n == note) {
                return i + 1;
            }
            notes.push(note.to_owned());
            notes.len()
        };
        let mut out = String::new();
        let _ = writeln!(out, "{header}");
        let _ = writeln!(
            out,
            "\n## Figures (median of {} run{})\n",
            self.runs,
            if self.runs == 1 { "" } else { "s" }
        );
        let _ = writeln!(out, "| figure | {} |", SUBJECTS.join(" | "));
        let _ = writeln!(out, "|---{}|", "|---:".repeat(SUBJECTS.len()));
        for row in &self.rows {
            let cells: Vec<String> = row
                .cells
                .iter()
                .map(|cell| {
                    let marks: Vec<String> = cell
                        .notes
                        .iter()
                        .map(|n| format!("[{}]", note_number(n)))
                        .collect();
                    let value = match median(&cell.samples) {
                        Some(v) => row.figure.format(v),
                        None if cell.notes.is_empty() => "—".to_owned(),
                        None => "n/a".to_owned(),
                    };
                    format!("{value}{}", marks.join(""))
                })
                .collect();
            let _ = writeln!(out, "| {} | {} |", row.figure.label(), cells.join(" | "));
        }

        for (reference, name) in [
            (RAW, "raw loopback"),
            (BARE_RELAY, "the bare relay"),
            (WEBSOCKIFY, "websockify"),
            (WEBSOCAT, "websocat"),
        ] {
            let columns: Vec<usize> = (WEBSOCKIFY..SUBJECTS.len())
                .filter(|&s| s != reference)
                .collect();
            let _ = writeln!(
                out,
                "\n### Ratio to {name} (each proxy's median ÷ {name}'s)\n"
            );
            let names: Vec<&str> = columns.iter().map(|&s| SUBJECTS[s]).collect();
            let _ = writeln!(out, "| figure | {} |", names.join(" | "));
            let _ = writeln!(out, "|---{}|", "|---:".repeat(columns.len()));
            for row in &self.rows {
                let Some(base) = median(&row.cells[reference].samples).filter(|b| *b != 0.0) else {
                    continue;
                };
                let cells: Vec<String> = columns
                    .iter()
                    .map(|&s| {
                        median(&row.cells[s].samples)
                            .map_or_else(|| "n/a".to_owned(), |v| format!("{:.2}x", v / base))
                    })
                    .collect();
                let _ = writeln!(out, "| {} | {} |", row.figure.label(), cells.join(" | "));
            }
        }

        let _ = writeln!(out, "\n## Targets (issue 8)\n");
        let _ = writeln!(out, "| target | measured | verdict |");
        let _ = writeln!(out, "|---|---|---|");
        for (target, measured, met) in self.targets() {
            let verdict = match met {
                Some(true) => "met",
                Some(false) => "**MISSED**",
                None => "not measured",
            };
            let _ = writeln!(out, "| {target} | {measured} | {verdict} |");
        }
        for (subject, name) in [(CONSOLEGATE_WS, "ws://"), (CONSOLEGATE_WSS, "wss://")] {
            let behind = self.not_ahead(subject);
            if behind.is_empty() {
                let _ = writeln!(
                    out,
                    "\nconsolegate over {name} is ahead of websockify and websocat on every figure both were measured on."
                );
            } else {
                let _ = writeln!(
                    out,
                    "\nconsolegate over {name} is **not** ahead on: {}.",
                    behind.join("; ")
                );
            }
        }

        if !notes.is_empty() {
            let _ = writeln!(out, "\n## Notes\n");
            for (i, note) in notes.iter().enumerate() {
                let _ = writeln!(out, "{}. {note}", i + 1);
            }
        }
        out
    }

    /// The targets for consolegate: (what, measured, met?).
    fn targets(&self) -> Vec<(String, String, Option<bool>)> {
        let ws = CONSOLEGATE_WS;
        let mut rows = Vec::new();
        let ratio = |figure: Figure, subject: usize| {
            Some(self.median(figure, subject)? / self.median(figure, RAW)?)
        };
        for (figure, want, what) in [
            (
                Figure::DownOne,
                0.8,
                "throughput target→browser, 1 session >= 0.8x loopback",
            ),
            (
                Figure::UpOne,
                0.7,
                "throughput browser→target, 1 session >= 0.7x loopback",
            ),
        ] {
            let got = ratio(figure, ws);
            rows.push((
                what.to_owned(),
                got.map_or("n/a".into(), |r| format!("{r:.2}x")),
                got.map(|r| r >= want),
            ));
        }
        let rtt = self.median(Figure::Rtt64P50, ws);
        let raw_rtt = self.median(Figure::Rtt64P50, RAW);
        rows.push((
            "round trip 64 B p50 <= max(loopback + 20 µs, 1.5x loopback)".to_owned(),
            match (rtt, raw_rtt) {
                (Some(r), Some(b)) => {
                    format!("{r:.1} µs vs limit {:.1} µs", (b + 20.0).max(1.5 * b))
                }
                _ => "n/a".into(),
            },
            rtt.zip(raw_rtt).map(|(r, b)| r <= (b + 20.0).max(1.5 * b)),
        ));
        for (figure, subject, want, what) in [
            (
                Figure::SetupWs,
                ws,
                5000.0,
                "session setup rate ws:// >= 5,000/s",
            ),
            (
                Figure::SetupWss,
                CONSOLEGATE_WSS,
                1000.0,
                "session setup rate wss:// >= 1,000/s",
            ),
        ] {
            let got = self.median(figure, subject);
            rows.push((
                what.to_owned(),
                got.map_or("n/a".into(), |v| format!("{}/s", group(v.round() as usize))),
                got.map(|v| v >= want),
            ));
        }
        let growth = self.median(Figure::StalledGrowth, ws);
        rows.push((
            "memory bounded when browsers are slower than the target (growth <= 1 MiB)".to_owned(),
            growth.map_or("n/a".into(), |g| format!("{g:.0} KiB")),
            growth.map(|g| g <= 1024.0),
        ));
        let most = self
            .rows
            .iter()
            .filter_map(|r| match r.figure {
                Figure::HeldAlive(n) => Some(n),
                _ => None,
            })
            .max();
        if let Some(n) = most {
            let alive = self.median(Figure::HeldAlive(n), ws);
            rows.push((
                format!("{} idle sessions held, all alive after the hold", group(n)),
                alive.map_or("n/a".into(), |a| format!("{} alive", group(a as usize))),
                alive.map(|a| a as usize >= n),
            ));
            let per = self.median(Figure::PssPerSession(n), ws);
            rows.push((
                "memory per idle session (PSS) <= 32 KiB".to_owned(),
                per.map_or("n/a".into(), |p| format!("{p:.1} KiB")),
                per.map(|p| p <= 32.0),
            ));
        }
        rows
    }
}

pub fn median(samples: &[f64]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(9000), "9,000");
        assert_eq!(group(1_234_567), "1,234,567");
    }

    #[test]
    fn markdown_has_medians_ratios_verdicts_and_numbered_notes() {
        let mut results = Results {
            runs: 3,
            ..Results::default()
        };
        for v in [1000.0, 1200.0, 1100.0] {
            results.sample(Figure::DownOne, RAW, v);
        }
        for v in [900.0, 880.0, 920.0] {
            results.sample(Figure::DownOne, CONSOLEGATE_WS, v);
        }
        results.sample(Figure::DownOne, BARE_RELAY, 1000.0);
        results.sample(Figure::DownOne, WEBSOCKIFY, 500.0);
        results.note(Figure::DownOne, WEBSOCAT, "websocat not installed");
        results.note(Figure::UpOne, WEBSOCAT, "websocat not installed");
        let md = results.to_markdown("# test");
        assert!(md.contains("median of 3 runs"));
        assert!(
            md.contains(
                "| throughput target→browser, 1 session (MB/s) | 1,100 | 1,000 | 500 | n/a[1] | 900 | — |"
            ),
            "{md}"
        );
        assert!(md.contains("1. websocat not installed"));
        assert!(!md.contains("2. websocat"));
        // 900 / 1100 = 0.82: met; 900 / 500 = 1.80x websockify.
        assert!(md.contains("| 0.82x | met |"), "{md}");
        assert!(
            md.contains("| throughput target→browser, 1 session (MB/s) | n/a | 1.80x | n/a |"),
            "{md}"
        );
        // The bare relay is a reference of its own: 900 / 1000 = 0.90x of it.
        let to_relay = md
            .split("### Ratio to the bare relay")
            .nth(1)
            .expect("a table of ratios to the bare relay");
        assert!(
            to_relay.contains(
                "| throughput target→browser, 1 session (MB/s) | 0.50x | n/a | 0.90x | n/a |"
            ),
            "{md}"
        );
        assert!(md.contains("ahead of websockify and websocat on every figure"));
    }

    #[test]
    fn a_figure_behind_a_comparator_is_named() {
        let mut results = Results::default();
        results.sample(Figure::Rtt64P50, WEBSOCAT, 30.0);
        results.sample(Figure::Rtt64P50, CONSOLEGATE_WS, 40.0);
        results.sample(Figure::PssBefore(10), WEBSOCAT, 1.0);
        results.sample(Figure::PssBefore(10), CONSOLEGATE_WS, 9.0);
        assert_eq!(
            results.not_ahead(CONSOLEGATE_WS),
            vec!["round trip 64 B, p50 (µs) vs websocat".to_owned()]
        );
    }
}
