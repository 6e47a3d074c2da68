//! Why a console request was refused before its session started, in one type: the browser gets
//! a short generic reason and a status, the log the precise reason, metrics a closed-set kind.
//! Every check before the upgrade (subprotocol, target choice, connect) reports through it.

use hyper::StatusCode;

use crate::connect::ConnectError;
use crate::limits::LimitError;
use crate::policy::PolicyError;
use crate::target::ResolveError;

#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("subprotocol \"binary\" not offered (offered: {offered:?})")]
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
            Refusal::Resolve(_) => "ticket",
            Refusal::Policy(_) => "target policy",
            Refusal::Connect(_) => "target unreachable",
        }
    }

    /// The HTTP status answered instead of `101`.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Subprotocol { .. } | Refusal::Handshake(_) => StatusCode::BAD_REQUEST,
            Refusal::Origin { .. } | Refusal::Resolve(_) | Refusal::Policy(_) => {
                StatusCode::FORBIDDEN
            }
            Refusal::Limit(LimitError::TooManySessions { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Limit(LimitError::TooManyForClient { .. }) => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Connect(ConnectError::TimedOut { .. }) => StatusCode::GATEWAY_TIMEOUT,
            Refusal::Connect(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// What the browser may know: nothing about the ticket's content or the internal network.
    pub fn public_reason(&self) -> &'static str {
        match self {
            Refusal::Subprotocol { .. } => "unsupported websocket subprotocol: use \"binary\"",
            Refusal::Handshake(_) => "bad websocket handshake",
            Refusal::Origin { .. } => "consoles cannot be opened from this page",
            Refusal::Limit(_) => "too many console sessions, try again later",
            Refusal::Resolve(_) => "console ticket refused",
            Refusal::Policy(_) => "console target not allowed",
            Refusal::Connect(_) => "console unreachable",
        }
    }
}
