//! Choosing the console a browser may reach. [`TargetResolver`] is the one seam between
//! "who says where this browser goes" and everything after it: policy, connect, relay and
//! logging see only the [`Target`] or the [`ResolveError`].
//!
//! The ways to say it, one module each: [`signed`] (oVirt tickets signed by the engine, the
//! default), [`single_use`] (the same tickets, each accepted once, with a [`replay`] store),
//! [`token_file`] (websockify's `TOKEN: host:port` files) and [`authority`] (an HTTP service
//! that answers for tokens, the nova-consoleauth model). [`token`] takes a token out of a
//! request the way websockify does.

pub mod authority;
pub mod replay;
pub mod signed;
pub mod single_use;
pub mod token;
pub mod token_file;

use std::fmt;
use std::net::SocketAddr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::ticket::{self, TicketError};

pub use authority::{AuthorityError, TokenAuthority};
pub use replay::ReplayError;
pub use signed::SignedTickets;
pub use single_use::SingleUseTickets;
pub use token::TokenError;
pub use token_file::TokenFile;

/// Where a console session goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// An IP literal (IPv6 without brackets) or a host name.
    pub host: String,
    pub port: u16,
    /// The VNC server wants VeNCrypt/X509VNC negotiated by the proxy (contract section 4).
    pub ssl_target: bool,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What the proxy knows about a console request when it must choose the target.
#[derive(Debug, Clone)]
pub struct ConsoleRequest<'a> {
    /// The request-target's path without the leading `/`, exactly as sent.
    pub path: &'a str,
    /// The query string, without `?`, if any.
    pub query: Option<&'a str>,
    pub client: SocketAddr,
    pub now: DateTime<Utc>,
}

/// Why no target was chosen. Carries the precise reason for the log; [`crate::refusal`]
/// decides what the browser is told.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{0}")]
    Ticket(#[from] TicketError),
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("{0}")]
    Authority(#[from] AuthorityError),
    #[error("{0}")]
    Replay(#[from] ReplayError),
}

impl ResolveError {
    /// A closed set of labels, for metrics and log filters.
    pub fn kind(&self) -> &'static str {
        match self {
            ResolveError::Ticket(e) => e.kind(),
            ResolveError::Token(e) => e.kind(),
            ResolveError::Authority(e) => e.kind(),
            ResolveError::Replay(e) => e.kind(),
        }
    }

    /// Whether the refusal is about the proxy's own helpers (the token authority, the replay
    /// store) rather than the request: the browser may try again later with the same link.
    pub fn is_unavailable(&self) -> bool {
        match self {
            ResolveError::Ticket(_) | ResolveError::Token(_) => false,
            ResolveError::Authority(e) => e.is_unavailable(),
            ResolveError::Replay(e) => e.is_unavailable(),
        }
    }
}

/// One way of turning a console request into a target.
#[async_trait]
pub trait TargetResolver: Send + Sync + fmt::Debug {
    /// # Errors
    /// A [`ResolveError`] saying why this request may not reach any target.
    async fn resolve(&self, request: &ConsoleRequest<'_>) -> Result<Target, ResolveError>;

    /// A short, non-reversible name for the request's credential, for log lines: the ticket
    /// in the path by default; token resolvers name the token wherever it was found.
    fn fingerprint(&self, path: &str, _query: Option<&str>) -> String {
        ticket::fingerprint(path)
    }
}
