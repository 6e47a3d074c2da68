//! oVirt's way of naming a console: the request path is a ticket signed by the engine
//! ([`crate::ticket`] verifies it). The default resolver, and the base that
//! [`super::single_use`] builds on.

use std::sync::Arc;

use async_trait::async_trait;

use super::{ConsoleRequest, ResolveError, Target, TargetResolver};
use crate::ticket::{TicketError, TicketVerifier, VerifiedTicket};

/// Signed oVirt tickets: the path is the ticket.
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

    /// Verifies the request's ticket and keeps everything verification learnt, for wrappers
    /// that need more than the target (its id and validity window).
    ///
    /// # Errors
    /// Why the ticket is refused.
    pub fn verify(&self, request: &ConsoleRequest<'_>) -> Result<VerifiedTicket, TicketError> {
        self.verifier.verify(request.path, request.now)
    }

    pub fn verifier(&self) -> &TicketVerifier {
        &self.verifier
    }
}

#[async_trait]
impl TargetResolver for SignedTickets {
    async fn resolve(&self, request: &ConsoleRequest<'_>) -> Result<Target, ResolveError> {
        Ok(self.verify(request)?.target)
    }
}
