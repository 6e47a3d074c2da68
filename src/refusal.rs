//! Why a console request was refused before its session started, in one type: the browser gets
//! a short reason it can act on (a 4xxx close code after the upgrade, or an HTTP status with
//! `REFUSE_WITH_HTTP_STATUS`), the log the precise reason, metrics a closed-set kind. Every
//! check before the session (subprotocol, origin, limits, target choice, policy, connect)
//! reports through it.

use hyper::StatusCode;

use crate::connect::ConnectError;
use crate::limits::LimitError;
use crate::policy::PolicyError;
use crate::target::ResolveError;
use crate::ticket::TicketError;

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
