//! Single-use signed tickets: [`SignedTickets`] first (a forged or expired ticket never
//! reaches the store), then a [`ReplayStore`] records the ticket's id; a ticket whose id is
//! already recorded is a replay and is refused. The id is consumed before the target is
//! connected, so a refused replay never opens a target connection; a ticket whose console
//! then turns out unreachable is used up too, and the portal issues a new one.

use std::sync::Arc;

use async_trait::async_trait;

use super::replay::{ReplayError, ReplayStore};
use super::{ConsoleRequest, ResolveError, SignedTickets, Target, TargetResolver};

/// Signed tickets, each accepted once.
#[derive(Debug, Clone)]
pub struct SingleUseTickets {
    tickets: SignedTickets,
    store: Arc<dyn ReplayStore>,
}

impl SingleUseTickets {
    pub fn new(tickets: SignedTickets, store: Arc<dyn ReplayStore>) -> Self {
        Self { tickets, store }
    }
}

#[async_trait]
impl TargetResolver for SingleUseTickets {
    async fn resolve(&self, request: &ConsoleRequest<'_>) -> Result<Target, ResolveError> {
        let verified = self.tickets.verify(request)?;
        let until = self.tickets.verifier().accepted_until(&verified);
        match self.store.first_use(&verified.id, until, request.now).await {
            Ok(true) => Ok(verified.target),
            Ok(false) => Err(ReplayError::Replayed {
                id: verified.id.to_hex()[..12].to_owned(),
                store: self.store.name(),
            }
            .into()),
            Err(reason) => Err(ReplayError::Unavailable { reason }.into()),
        }
    }
}
