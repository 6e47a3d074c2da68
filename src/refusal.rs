//! Why a console request was refused before its session started, in one type: the browser gets
//! a short generic reason and a status, the log the precise reason, metrics a closed-set kind.
//! Every check before the upgrade (subprotocol, target choice, connect) reports through it.

use hyper::StatusCode;

use crate::connect::ConnectError;
use crate::target::ResolveError;

#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("subprotocol \"binary\" not offered (offered: {offered:?})")]
    Subprotocol { offered: Vec<String> },
    #[error("bad websocket handshake: {0}")]
    Handshake(String),
    #[error("{0}")]
    Resolve(#[from] ResolveError),
    #[error("{0}")]
    Connect(#[from] ConnectError),
}

impl Refusal {
    /// A closed set of labels, for metrics and log filters.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Subprotocol { .. } => "subprotocol",
            Refusal::Handshake(_) => "bad_handshake",
            Refusal::Resolve(e) => e.kind(),
            Refusal::Connect(e) => e.kind(),
        }
    }

    /// Which check refused, for the log message.
    pub fn stage(&self) -> &'static str {
        match self {
            Refusal::Subprotocol { .. } | Refusal::Handshake(_) => "websocket handshake",
            Refusal::Resolve(_) => "ticket",
            Refusal::Connect(_) => "target unreachable",
        }
    }

    /// The HTTP status answered instead of `101`.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Subprotocol { .. } | Refusal::Handshake(_) => StatusCode::BAD_REQUEST,
            Refusal::Resolve(_) => StatusCode::FORBIDDEN,
            Refusal::Connect(ConnectError::TimedOut { .. }) => StatusCode::GATEWAY_TIMEOUT,
            Refusal::Connect(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// What the browser may know: nothing about the ticket's content or the internal network.
    pub fn public_reason(&self) -> &'static str {
        match self {
            Refusal::Subprotocol { .. } => "unsupported websocket subprotocol: use \"binary\"",
            Refusal::Handshake(_) => "bad websocket handshake",
            Refusal::Resolve(_) => "console ticket refused",
            Refusal::Connect(_) => "console unreachable",
        }
    }
}
