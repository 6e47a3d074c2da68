//! Choosing the console a browser may reach. [`TargetResolver`] is the one seam between
//! "who says where this browser goes" (a signed oVirt ticket today; token files, a token
//! authority or single-use tickets later) and everything after it: policy, connect, relay
//! and logging see only the [`Target`] or the [`ResolveError`].

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::ticket::{TicketError, TicketVerifier};

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

/// Why no target was chosen. Carries the precise reason for the log.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{0}")]
    Ticket(#[from] TicketError),
}

impl ResolveError {
    /// A closed set of labels, for metrics and log filters.
    pub fn kind(&self) -> &'static str {
        match self {
            ResolveError::Ticket(e) => e.kind(),
        }
    }
}

/// One way of turning a console request into a target.
#[async_trait]
pub trait TargetResolver: Send + Sync + fmt::Debug {
    /// # Errors
    /// A [`ResolveError`] saying why this request may not reach any target.
    async fn resolve(&self, request: &ConsoleRequest<'_>) -> Result<Target, ResolveError>;
}

/// oVirt's way: the path is a ticket signed by the engine.
#[derive(Debug, Clone)]
pub struct SignedTickets {
    verifier: Arc<TicketVerifier>,
}

impl SignedTickets {
    pub fn new(verifier: TicketVerifier) -> Self {
        Self {
            verifier: Arc::new(verifier),
        }
    }
}

#[async_trait]
impl TargetResolver for SignedTickets {
    async fn resolve(&self, request: &ConsoleRequest<'_>) -> Result<Target, ResolveError> {
        Ok(self.verifier.verify(request.path, request.now)?.target)
    }
}
