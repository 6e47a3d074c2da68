//! Session limits: how many sessions may be open at once, in total and per client address.
//! Counters rather than semaphores, so a reload can change the maximums while sessions hold
//! their permits; a permit gives its slot back when the session ends, however it ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("{max} sessions are open, the MAX_SESSIONS limit")]
    TooManySessions { max: usize },
    #[error("{client} already has {max} sessions open, the MAX_SESSIONS_PER_CLIENT limit")]
    TooManyForClient { client: IpAddr, max: usize },
}

impl LimitError {
    /// A closed set of labels, for metrics and log filters.
    pub fn kind(&self) -> &'static str {
        match self {
            LimitError::TooManySessions { .. } => "limit_sessions",
            LimitError::TooManyForClient { .. } => "limit_sessions_per_client",
        }
    }
}

/// Open-session counters shared by every connection and kept across reloads.
#[derive(Debug, Default)]
pub struct Limits {
    max_sessions: AtomicUsize,
    max_per_client: AtomicUsize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

impl Limits {
    pub fn new(max_sessions: usize, max_per_client: usize) -> Arc<Limits> {
        let limits = Arc::new(Limits::default());
        limits.set(max_sessions, max_per_client);
        limits
    }

    /// New maximums apply to new sessions; open ones keep their permits.
    pub fn set(&self, max_sessions: usize, max_per_client: usize) {
        self.max_sessions.store(max_sessions, Ordering::Relaxed);
        self.max_per_client.store(max_per_client, Ordering::Relaxed);
    }

    /// Sessions open now.
    pub fn open_sessions(&self) -> usize {
        self.lock().total
    }

    /// Takes a slot for a session from `client`.
    ///
    /// # Errors
    /// The total or the client's limit is reached.
    pub fn try_acquire(self: &Arc<Self>, client: IpAddr) -> Result<SessionPermit, LimitError> {
        let max = self.max_sessions.load(Ordering::Relaxed);
        let max_per_client = self.max_per_client.load(Ordering::Relaxed);
        let mut open = self.lock();
        if open.total >= max {
            return Err(LimitError::TooManySessions { max });
        }
        let mine = open.per_client.entry(client).or_default();
        if *mine >= max_per_client {
            return Err(LimitError::TooManyForClient {
                client,
                max: max_per_client,
            });
        }
        *mine += 1;
        open.total += 1;
        Ok(SessionPermit {
            limits: self.clone(),
            client,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // The counters stay consistent even if a holder panicked: every update is one step.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A slot held by one session; dropping it frees the slot.
#[derive(Debug)]
pub struct SessionPermit {
    limits: Arc<Limits>,
    client: IpAddr,
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        let mut open = self.limits.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.per_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.per_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_and_per_client_limits_and_release() {
        let limits = Limits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = limits.try_acquire(a).unwrap();
        let _a2 = limits.try_acquire(a).unwrap();
        assert_eq!(
            limits.try_acquire(a).unwrap_err(),
            LimitError::TooManyForClient { client: a, max: 2 }
        );
        let _b1 = limits.try_acquire(b).unwrap();
        assert_eq!(
            limits.try_acquire(b).unwrap_err(),
            LimitError::TooManySessions { max: 3 }
        );
        drop(a1);
        assert_eq!(limits.open_sessions(), 2);
        let _b2 = limits.try_acquire(b).unwrap();
        limits.set(10, 10);
        let _a3 = limits.try_acquire(a).unwrap();
        assert_eq!(limits.open_sessions(), 4);
    }

    #[test]
    fn per_client_entries_are_removed_when_empty() {
        let limits = Limits::new(10, 10);
        let permits: Vec<_> = (0..5)
            .map(|i| limits.try_acquire(IpAddr::from([10, 0, 0, i])).unwrap())
            .collect();
        drop(permits);
        assert!(limits.lock().per_client.is_empty());
        assert_eq!(limits.open_sessions(), 0);
    }
}
