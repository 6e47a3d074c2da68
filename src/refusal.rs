//! Why a console request was refused before its session started, in one type: the browser gets
//! a short reason it can act on (a 4xxx close code after the upgrade, or an HTTP status with
//! `REFUSE_WITH_HTTP_STATUS`), the log the precise reason, metrics a closed-set kind. Every
//! check before the session (subprotocol, origin, limits, target choice, policy, connect)
//! reports through it.

use hyper::StatusCode;

use crate::connect::ConnectError;
use crate::limits::LimitError;
use crate::policy::PolicyError;
use crate::target::{ReplayError, ResolveError};
use crate::ticket::TicketError;

#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("subprotocol \"binary\" not offered (offered: {})", shown(offered))]
    Subprotocol { offered: Vec<String> },
    #[error("bad websocket handshake: {0}")]
    Handshake(String),
    #[error("origin {origin:?} is not in ALLOWED_ORIGINS")]
    Origin { origin: Option<String> },
    #[error("{0}")]
    Limit(#[from] LimitError),
    #[error("{0}")]
    Resolve(#[from] ResolveError),
    #[error("target not allowed: {0}")]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Connect(#[from] ConnectError),
}

impl Refusal {
    /// Every value [`Refusal::kind`] returns, so metrics can report each one from the start
    /// (at zero). A new kind belongs here too; a unit test in `metrics` checks samples.
    pub const KINDS: &'static [&'static str] = &[
        "subprotocol",
        "bad_handshake",
        "origin_not_allowed",
        "limit_sessions",
        "limit_sessions_per_client",
        "malformed",
        "unsupported_signature",
        "bad_signature",
        "not_yet_valid",
        "expired",
        "bad_payload",
        "no_token",
        "malformed_token",
        "unknown_token",
        "authority_refused",
        "authority_unreachable",
        "authority_timeout",
        "authority_bad_answer",
        "replayed",
        "replay_store_unavailable",
        "target_port_not_allowed",
        "target_host_not_allowed",
        "target_unresolvable",
        "target_unreachable",
        "target_timeout",
    ];

    /// A closed set of labels, for metrics and log filters.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Subprotocol { .. } => "subprotocol",
            Refusal::Handshake(_) => "bad_handshake",
            Refusal::Origin { .. } => "origin_not_allowed",
            Refusal::Limit(e) => e.kind(),
            Refusal::Resolve(e) => e.kind(),
            Refusal::Policy(e) => e.kind(),
            Refusal::Connect(e) => e.kind(),
        }
    }

    /// Which check refused, for the log message.
    pub fn stage(&self) -> &'static str {
        match self {
            Refusal::Subprotocol { .. } | Refusal::Handshake(_) => "websocket handshake",
            Refusal::Origin { .. } => "origin",
            Refusal::Limit(_) => "limit",
            Refusal::Resolve(ResolveError::Ticket(_)) => "ticket",
            Refusal::Resolve(ResolveError::Token(_)) => "token",
            Refusal::Resolve(ResolveError::Authority(_)) => "token authority",
            Refusal::Resolve(ResolveError::Replay(_)) => "single-use ticket",
            Refusal::Policy(_) => "target policy",
            Refusal::Connect(_) => "target unreachable",
        }
    }

    /// The HTTP status answered instead of `101`.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Subprotocol { .. } | Refusal::Handshake(_) => StatusCode::BAD_REQUEST,
            Refusal::Resolve(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Origin { .. } | Refusal::Resolve(_) | Refusal::Policy(_) => {
                StatusCode::FORBIDDEN
            }
            Refusal::Limit(LimitError::TooManySessions { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Limit(LimitError::TooManyForClient { .. }) => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Connect(ConnectError::TimedOut { .. }) => StatusCode::GATEWAY_TIMEOUT,
            Refusal::Connect(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The WebSocket close code for a refusal delivered after the upgrade: 4000 plus the HTTP
    /// status it stands for. `None` where no upgrade is possible (the handshake itself is bad).
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Refusal::Subprotocol { .. } | Refusal::Handshake(_) => None,
            Refusal::Resolve(ResolveError::Ticket(
                TicketError::Expired { .. } | TicketError::NotYetValid { .. },
            )) => Some(4401),
            _ => Some(4000 + self.status().as_u16()),
        }
    }

    /// A short reason the console user can act on, shown by noVNC. Safe: it says nothing
    /// about the ticket's content or the internal network.
    pub fn user_message(&self) -> &'static str {
        match self {
            Refusal::Resolve(ResolveError::Ticket(TicketError::Expired { .. })) => {
                "console link expired - open the console again from the portal"
            }
            Refusal::Resolve(ResolveError::Ticket(TicketError::NotYetValid { .. })) => {
                "console link not valid yet - check this computer's clock, then open the console again"
            }
            Refusal::Resolve(e) if e.is_unavailable() => {
                "console authorization is temporarily unavailable - try again in a minute"
            }
            Refusal::Resolve(ResolveError::Replay(ReplayError::Replayed { .. })) => {
                "console link already used - open the console again from the portal"
            }
            Refusal::Resolve(_) => "console link is not valid - open the console again from the portal",
            Refusal::Origin { .. } => "consoles cannot be opened from this page",
            Refusal::Policy(_) => "this console is not reachable through this proxy - ask your administrator",
            Refusal::Limit(LimitError::TooManyForClient { .. }) => {
                "too many consoles open from your address - close one and try again"
            }
            Refusal::Limit(LimitError::TooManySessions { .. }) => "the console proxy is busy - try again in a minute",
            Refusal::Connect(ConnectError::TimedOut { .. }) => {
                "the virtual machine's console did not answer - is the VM running?"
            }
            Refusal::Connect(_) => "the virtual machine's console is not reachable - is the VM running?",
            Refusal::Subprotocol { .. } | Refusal::Handshake(_) => self.public_reason(),
        }
    }

    /// What the browser may know: nothing about the ticket's content or the internal network.
    /// Unknown and refused tokens read the same, so that the answer does not tell which
    /// tokens exist.
    pub fn public_reason(&self) -> &'static str {
        match self {
            Refusal::Subprotocol { .. } => "unsupported websocket subprotocol: use \"binary\"",
            Refusal::Handshake(_) => "bad websocket handshake",
            Refusal::Origin { .. } => "consoles cannot be opened from this page",
            Refusal::Limit(_) => "too many console sessions, try again later",
            Refusal::Resolve(e) if e.is_unavailable() => {
                "console authorization temporarily unavailable: try again shortly"
            }
            Refusal::Resolve(ResolveError::Replay(ReplayError::Replayed { .. })) => {
                "console ticket already used: open the console again from the portal"
            }
            Refusal::Resolve(ResolveError::Ticket(_) | ResolveError::Replay(_)) => {
                "console ticket refused"
            }
            Refusal::Resolve(ResolveError::Token(_) | ResolveError::Authority(_)) => {
                "console token refused"
            }
            Refusal::Policy(_) => "console target not allowed",
            Refusal::Connect(_) => "console unreachable",
        }
    }
}

/// At most this many offered subprotocols are logged, each cut to [`SHOWN_LEN`] characters:
/// the header is the client's to fill (up to `MAX_REQUEST_HEADER_SIZE`), the log line is not.
const SHOWN_PROTOCOLS: usize = 8;
const SHOWN_LEN: usize = 40;

/// The offered subprotocols as the log shows them: quoted and escaped, bounded in size.
fn shown(offered: &[String]) -> String {
    let mut shown: Vec<String> = offered
        .iter()
        .take(SHOWN_PROTOCOLS)
        .map(|p| match p.char_indices().nth(SHOWN_LEN) {
            Some((cut, _)) => format!("{:?}...", &p[..cut]),
            None => format!("{p:?}"),
        })
        .collect();
    if offered.len() > SHOWN_PROTOCOLS {
        shown.push(format!("and {} more", offered.len() - SHOWN_PROTOCOLS));
    }
    format!("[{}]", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::target::{AuthorityError, TokenError};
    use crate::ticket::TicketError;

    fn refusal(error: impl Into<ResolveError>) -> Refusal {
        Refusal::Resolve(error.into())
    }

    #[test]
    fn every_way_of_naming_a_console_maps_to_a_status_kind_and_public_text() {
        let url = || "http://auth/".to_owned();
        let cases = [
            (
                refusal(TicketError::BadSignature),
                403,
                "bad_signature",
                "ticket",
            ),
            (refusal(TokenError::Missing), 403, "no_token", "token"),
            (
                refusal(TokenError::Unknown {
                    known_by: "x".into(),
                }),
                403,
                "unknown_token",
                "token",
            ),
            (
                refusal(AuthorityError::Unknown { url: url() }),
                403,
                "unknown_token",
                "token",
            ),
            (
                refusal(AuthorityError::Refused { url: url() }),
                403,
                "authority_refused",
                "token",
            ),
            (
                refusal(AuthorityError::Unreachable {
                    url: url(),
                    reason: "refused".into(),
                }),
                503,
                "authority_unreachable",
                "unavailable",
            ),
            (
                refusal(AuthorityError::TimedOut {
                    url: url(),
                    after: Duration::from_secs(1),
                }),
                503,
                "authority_timeout",
                "unavailable",
            ),
            (
                refusal(AuthorityError::BadAnswer {
                    url: url(),
                    reason: "500".into(),
                }),
                503,
                "authority_bad_answer",
                "unavailable",
            ),
            (
                refusal(ReplayError::Replayed {
                    id: "abc".into(),
                    store: "memory",
                }),
                403,
                "replayed",
                "already used",
            ),
            (
                refusal(ReplayError::Unavailable {
                    reason: "down".into(),
                }),
                503,
                "replay_store_unavailable",
                "unavailable",
            ),
        ];
        for (refusal, status, kind, public) in cases {
            assert_eq!(refusal.status().as_u16(), status, "{refusal}");
            assert_eq!(refusal.kind(), kind, "{refusal}");
            assert!(
                refusal.public_reason().contains(public),
                "{} for {refusal}",
                refusal.public_reason()
            );
            assert_eq!(refusal.close_code(), Some(4000 + status), "{refusal}");
            let user = refusal.user_message();
            let expected = match status {
                503 => "console authorization is temporarily unavailable",
                _ if public == "already used" => "console link already used",
                _ => "console link is not valid",
            };
            assert!(user.starts_with(expected), "{user} for {refusal}");
        }
    }

    #[test]
    fn public_texts_reveal_no_internal_detail() {
        let refusal = refusal(AuthorityError::Unreachable {
            url: "http://10.1.2.3:8080/check".into(),
            reason: "connection refused".into(),
        });
        assert!(refusal.to_string().contains("10.1.2.3"));
        for text in [refusal.public_reason(), refusal.user_message()] {
            assert!(
                !text.contains("10.1.2.3") && !text.contains("refused"),
                "{text}"
            );
        }
    }

    #[test]
    fn offered_subprotocols_are_logged_bounded() {
        let refusal = |offered: Vec<String>| Refusal::Subprotocol { offered }.to_string();
        assert_eq!(
            refusal(vec!["base64".into(), "chat\"x".into()]),
            r#"subprotocol "binary" not offered (offered: ["base64", "chat\"x"])"#
        );
        let many = refusal(
            (0..5000)
                .map(|i| format!("p{i}-{}", "x".repeat(100)))
                .collect(),
        );
        assert!(many.len() < 1000, "{} bytes", many.len());
        assert!(many.ends_with(r#"..., and 4992 more])"#), "{many}");
    }
}
