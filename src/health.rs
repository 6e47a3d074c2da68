//! Liveness and readiness: what `/livez` and `/readyz` on the admin listener answer, and what
//! a load balancer's health check acts on. The process's [`Lifecycle`] (starting, serving,
//! draining) lives in [`crate::proxy::Shared`]; [`readiness`] is a pure function of it, the
//! configuration in force and the clock, so it is tested without sockets.

use std::sync::atomic::{AtomicU8, Ordering};

use chrono::{DateTime, Utc};

use crate::proxy::LoadedCertificate;

/// Where the process is in its life, as far as serving goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Configuration read, listener not bound yet.
    Starting = 0,
    /// The accept loop runs.
    Serving = 1,
    /// SIGTERM or SIGINT received: no new connections, open sessions finish.
    Draining = 2,
}

/// The current [`Phase`], shared by the server, the signal handling and the admin listener.
#[derive(Debug, Default)]
pub struct Lifecycle(AtomicU8);

impl Lifecycle {
    pub fn set(&self, phase: Phase) {
        self.0.store(phase as u8, Ordering::Relaxed);
    }

    pub fn get(&self) -> Phase {
        match self.0.load(Ordering::Relaxed) {
            0 => Phase::Starting,
            1 => Phase::Serving,
            _ => Phase::Draining,
        }
    }
}

/// Whether new console sessions can be served now; `Err` lists every reason they cannot.
///
/// Not ready while starting or draining, when the TLS certificate has expired (browsers
/// refuse it), when every engine certificate has expired (a stale copy: during a rotation
/// the old one may expire while the new one is valid), or at `MAX_SESSIONS` (a load
/// balancer then sends new browsers to another instance; open sessions are not touched).
pub fn readiness(
    phase: Phase,
    certificates: &[LoadedCertificate],
    open_sessions: usize,
    max_sessions: usize,
    now: DateTime<Utc>,
) -> Result<(), Vec<String>> {
    let mut reasons = Vec::new();
    match phase {
        Phase::Starting => reasons.push("starting: the listener is not bound yet".to_owned()),
        Phase::Draining => {
            reasons.push("draining: shutting down, open sessions are finishing".to_owned())
        }
        Phase::Serving => {}
    }
    for certificate in certificates.iter().filter(|c| c.key == "SSL_CERTIFICATE") {
        if certificate.summary.not_after <= now {
            reasons.push(format!(
                "SSL_CERTIFICATE {} expired on {}",
                certificate.summary.subject, certificate.summary.not_after
            ));
        }
    }
    let mut engine = certificates
        .iter()
        .filter(|c| c.key == "CERT_FOR_DATA_VERIFICATION")
        .peekable();
    if engine.peek().is_some() && engine.all(|c| c.summary.not_after <= now) {
        reasons.push("every CERT_FOR_DATA_VERIFICATION certificate has expired".to_owned());
    }
    if open_sessions >= max_sessions {
        reasons.push(format!(
            "MAX_SESSIONS reached ({open_sessions} sessions open)"
        ));
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::CertSummary;
    use chrono::TimeDelta;

    fn cert(key: &'static str, not_after: DateTime<Utc>) -> LoadedCertificate {
        LoadedCertificate {
            key,
            summary: CertSummary {
                subject: format!("CN={key}"),
                not_after,
                is_demo: false,
            },
        }
    }

    #[test]
    fn ready_only_when_serving_with_valid_certificates_and_room() {
        let now = Utc::now();
        let later = now + TimeDelta::days(30);
        let earlier = now - TimeDelta::days(1);
        let good = [
            cert("SSL_CERTIFICATE", later),
            cert("CERT_FOR_DATA_VERIFICATION", later),
        ];
        assert_eq!(readiness(Phase::Serving, &good, 0, 10, now), Ok(()));
        assert!(readiness(Phase::Starting, &good, 0, 10, now).is_err());
        let draining = readiness(Phase::Draining, &good, 0, 10, now).unwrap_err();
        assert!(draining[0].starts_with("draining"), "{draining:?}");
        let full = readiness(Phase::Serving, &good, 10, 10, now).unwrap_err();
        assert_eq!(full, ["MAX_SESSIONS reached (10 sessions open)"]);

        let expired_tls = [
            cert("SSL_CERTIFICATE", earlier),
            cert("CERT_FOR_DATA_VERIFICATION", later),
        ];
        let reasons = readiness(Phase::Draining, &expired_tls, 0, 10, now).unwrap_err();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[1].starts_with("SSL_CERTIFICATE CN=SSL_CERTIFICATE expired on"));

        // Engine key rotation: the old certificate expired, the new one is valid.
        let rotation = [
            cert("CERT_FOR_DATA_VERIFICATION", earlier),
            cert("CERT_FOR_DATA_VERIFICATION", later),
        ];
        assert_eq!(readiness(Phase::Serving, &rotation, 0, 10, now), Ok(()));
        let stale = [cert("CERT_FOR_DATA_VERIFICATION", earlier)];
        assert_eq!(
            readiness(Phase::Serving, &stale, 0, 10, now).unwrap_err(),
            ["every CERT_FOR_DATA_VERIFICATION certificate has expired"]
        );
    }

    #[test]
    fn lifecycle_round_trips() {
        let lifecycle = Lifecycle::default();
        assert_eq!(lifecycle.get(), Phase::Starting);
        lifecycle.set(Phase::Serving);
        assert_eq!(lifecycle.get(), Phase::Serving);
        lifecycle.set(Phase::Draining);
        assert_eq!(lifecycle.get(), Phase::Draining);
    }
}
