//! Prometheus metrics for the admin listener's `/metrics`: what the proxy counts as it works
//! (refusals by their closed-set kind, connections dropped before a request, latencies,
//! session durations) kept in [`Metrics`], plus what is read at scrape time from the session
//! registry, the configuration in force and the logger (open sessions, bytes relayed,
//! certificate expiry, dropped log lines). Encoded with `prometheus-client` in the
//! OpenMetrics text format, which Prometheus reads.

use std::fmt;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::health;
use crate::proxy::Shared;
use crate::refusal::Refusal;
use crate::vencrypt;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One label with a value from a closed set.
type Label = [(&'static str, &'static str); 1];

/// Why a connection was closed before it made a request: the closed set of `reason` labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// `MAX_HANDSHAKES` connections were already in their handshake.
    MaxHandshakes,
    /// `MAX_HANDSHAKES_PER_CLIENT` connections from the same address were.
    MaxHandshakesPerClient,
    /// No request within `HANDSHAKE_TIMEOUT`.
    HandshakeTimeout,
    /// The TLS handshake failed.
    TlsFailed,
    /// TLS without an `SSL_CERTIFICATE`, or plain HTTP with `SSL_ONLY`.
    SchemeRefused,
    /// A trusted load balancer's connection without a usable PROXY protocol header.
    ProxyProtocol,
}

impl Dropped {
    const ALL: [Dropped; 6] = [
        Dropped::MaxHandshakes,
        Dropped::MaxHandshakesPerClient,
        Dropped::HandshakeTimeout,
        Dropped::TlsFailed,
        Dropped::SchemeRefused,
        Dropped::ProxyProtocol,
    ];

    fn label(self) -> &'static str {
        match self {
            Dropped::MaxHandshakes => "max_handshakes",
            Dropped::MaxHandshakesPerClient => "max_handshakes_per_client",
            Dropped::HandshakeTimeout => "handshake_timeout",
            Dropped::TlsFailed => "tls_failed",
            Dropped::SchemeRefused => "scheme_refused",
            Dropped::ProxyProtocol => "proxy_protocol",
        }
    }
}

/// What the proxy counts as it works; cheap to update (atomics), shared by every task.
#[derive(Debug)]
pub struct Metrics {
    refusals: Family<Label, Counter>,
    dropped: Family<Label, Counter>,
    reloads: Family<Label, Counter>,
    vencrypt: Family<Label, Counter>,
    session_duration: Histogram,
    tls_handshake: Histogram,
    target_connect: Histogram,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let metrics = Metrics {
            refusals: Family::default(),
            dropped: Family::default(),
            reloads: Family::default(),
            vencrypt: Family::default(),
            // 1 s to 18 h: consoles are opened for minutes to hours.
            session_duration: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            // 1 ms to about 4 s.
            tls_handshake: Histogram::new(exponential_buckets(0.001, 2.5, 10)),
            target_connect: Histogram::new(exponential_buckets(0.001, 2.5, 10)),
        };
        // Every label value exists from the start, so a rate() over it is defined at zero.
        for kind in Refusal::KINDS {
            let _ = metrics.refusals.get_or_create(&[("kind", kind)]);
        }
        for reason in Dropped::ALL {
            let _ = metrics.dropped.get_or_create(&[("reason", reason.label())]);
        }
        for result in ["applied", "refused"] {
            let _ = metrics.reloads.get_or_create(&[("result", result)]);
        }
        for outcome in vencrypt::OUTCOMES {
            let _ = metrics.vencrypt.get_or_create(&[("outcome", outcome)]);
        }
        metrics
    }
}

impl Metrics {
    /// A console request refused before its session, by [`Refusal::kind`].
    pub fn refused(&self, kind: &'static str) {
        self.refusals.get_or_create(&[("kind", kind)]).inc();
    }

    pub fn dropped(&self, reason: Dropped) {
        self.dropped
            .get_or_create(&[("reason", reason.label())])
            .inc();
    }

    /// A SIGHUP reload, put in force or refused.
    pub fn reloaded(&self, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.reloads.get_or_create(&[("result", result)]).inc();
    }

    /// How an `ssl_target` session's VeNCrypt negotiation ended: `encrypted`, `passthrough`,
    /// or the label of the step that failed ([`vencrypt::OUTCOMES`]).
    pub fn vencrypt(&self, outcome: &'static str) {
        self.vencrypt.get_or_create(&[("outcome", outcome)]).inc();
    }

    pub fn session_ended(&self, duration: Duration) {
        self.session_duration.observe(duration.as_secs_f64());
    }

    pub fn tls_handshake_done(&self, took: Duration) {
        self.tls_handshake.observe(took.as_secs_f64());
    }

    /// Resolving and connecting to a console target succeeded after `took`.
    pub fn target_connected(&self, took: Duration) {
        self.target_connect.observe(took.as_secs_f64());
    }
}

/// Every metric, now, in the OpenMetrics text format.
///
/// # Errors
/// Formatting failed (it writes to a `String`, so only on a bug).
pub fn render(shared: &Shared) -> Result<String, fmt::Error> {
    let metrics = &shared.metrics;
    let mut registry = Registry::default();
    registry.register(
        "consolegate_refusals",
        "Console requests refused before their session, by reason",
        metrics.refusals.clone(),
    );
    registry.register(
        "consolegate_connections_dropped",
        "Connections closed before they made a request, by reason",
        metrics.dropped.clone(),
    );
    registry.register(
        "consolegate_config_reloads",
        "Configuration reloads (SIGHUP), by result",
        metrics.reloads.clone(),
    );
    registry.register(
        "consolegate_vencrypt_negotiations",
        "VeNCrypt negotiations of ssl_target sessions, by outcome (encrypted, passthrough, or the step that failed)",
        metrics.vencrypt.clone(),
    );
    registry.register(
        "consolegate_session_duration_seconds",
        "How long ended console sessions lasted",
        metrics.session_duration.clone(),
    );
    registry.register(
        "consolegate_tls_handshake_duration_seconds",
        "Time to complete a browser's TLS handshake",
        metrics.tls_handshake.clone(),
    );
    registry.register(
        "consolegate_target_connect_duration_seconds",
        "Time to resolve and connect to a console target",
        metrics.target_connect.clone(),
    );
    registry.register_collector(Box::new(Snapshot::take(shared)));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// The values read at scrape time.
#[derive(Debug)]
struct Snapshot {
    open: usize,
    started: u64,
    max_sessions: usize,
    to_target: u64,
    to_client: u64,
    /// `(key, subject, not_after as Unix seconds)`.
    certificates: Vec<(&'static str, String, i64)>,
    dropped_log_lines: u64,
    spliced: u64,
    ready: bool,
}

impl Snapshot {
    fn take(shared: &Shared) -> Snapshot {
        let proxy = shared.current();
        let open = shared.registry.len();
        let (to_target, to_client) = shared.registry.bytes_totals();
        let ready = health::readiness(
            shared.lifecycle.get(),
            &proxy.certificates,
            shared.limits.open_sessions(),
            proxy.settings.max_sessions,
            chrono::Utc::now(),
        )
        .is_ok();
        Snapshot {
            open,
            started: shared.registry.started_total(),
            max_sessions: proxy.settings.max_sessions,
            to_target,
            to_client,
            certificates: proxy
                .certificates
                .iter()
                .map(|c| {
                    (
                        c.key,
                        c.summary.subject.clone(),
                        c.summary.not_after.timestamp(),
                    )
                })
                .collect(),
            dropped_log_lines: crate::logging::dropped_lines(),
            spliced: crate::splice::spliced_bytes(),
            ready,
        }
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64| {
            let metric = ConstGauge::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
        };
        let counter = |encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64| {
            let metric = ConstCounter::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)
        };
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        gauge(
            &mut encoder,
            "consolegate_sessions_open",
            "Console sessions open now",
            count(self.open),
        )?;
        gauge(
            &mut encoder,
            "consolegate_sessions_max",
            "MAX_SESSIONS in force",
            count(self.max_sessions),
        )?;
        counter(
            &mut encoder,
            "consolegate_sessions",
            "Console sessions started",
            self.started,
        )?;
        counter(
            &mut encoder,
            "consolegate_log_lines_dropped",
            "Log lines lost because their destination could not take them",
            self.dropped_log_lines,
        )?;
        counter(
            &mut encoder,
            "consolegate_spliced_bytes",
            "Bytes relayed to ws:// browsers by the kernel without a copy (part of to_client)",
            self.spliced,
        )?;
        gauge(
            &mut encoder,
            "consolegate_ready",
            "1 when /readyz answers 200",
            i64::from(self.ready),
        )?;

        let mut bytes = encoder.encode_descriptor(
            "consolegate_relayed_bytes",
            "Bytes relayed, open sessions included, by direction",
            None,
            MetricType::Counter,
        )?;
        for (direction, value) in [("to_target", self.to_target), ("to_client", self.to_client)] {
            ConstCounter::new(value).encode(bytes.encode_family(&[("direction", direction)])?)?;
        }

        let mut expiry = encoder.encode_descriptor(
            "consolegate_certificate_expiry_timestamp_seconds",
            "When each loaded certificate expires (Unix time), by configuration key and subject",
            None,
            MetricType::Gauge,
        )?;
        for (key, subject, not_after) in &self.certificates {
            let labels = [("key", *key), ("subject", subject.as_str())];
            ConstGauge::new(*not_after).encode(expiry.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::ConnectError;
    use crate::limits::LimitError;

    #[test]
    fn sample_refusals_have_listed_kinds() {
        let samples = [
            Refusal::Subprotocol { offered: vec![] },
            Refusal::Handshake(String::new()),
            Refusal::Origin { origin: None },
            Refusal::Limit(LimitError::TooManySessions { max: 1 }),
            Refusal::Limit(LimitError::TooManyForClient {
                client: "192.0.2.1".parse().unwrap(),
                max: 1,
            }),
            Refusal::Connect(ConnectError::NoAddress {
                host: String::new(),
            }),
            Refusal::Connect(ConnectError::TimedOut {
                target: String::new(),
                after: Duration::ZERO,
            }),
        ];
        for refusal in samples {
            assert!(
                Refusal::KINDS.contains(&refusal.kind()),
                "{}",
                refusal.kind()
            );
        }
    }

    #[test]
    fn every_label_exists_at_zero() {
        let metrics = Metrics::default();
        metrics.refused("expired");
        metrics.dropped(Dropped::TlsFailed);
        let mut registry = Registry::default();
        registry.register("r", "r", metrics.refusals.clone());
        registry.register("d", "d", metrics.dropped.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("r_total{kind=\"expired\"} 1"), "{text}");
        assert!(text.contains("r_total{kind=\"bad_signature\"} 0"), "{text}");
        assert!(text.contains("d_total{reason=\"tls_failed\"} 1"), "{text}");
        assert!(
            text.contains("d_total{reason=\"max_handshakes\"} 0"),
            "{text}"
        );
    }
}
