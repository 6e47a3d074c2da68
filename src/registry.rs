//! The open sessions, for whoever needs to see or act on them (the admin listener, metrics,
//! reconnects): each with its ids, peers, start time and live byte counters, and a token that
//! closes that one session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use crate::target::Target;

/// Bytes relayed so far, updated by the relay as they move.
#[derive(Debug, Default)]
pub struct Counters {
    pub to_target: AtomicU64,
    pub to_client: AtomicU64,
}

impl Counters {
    pub fn to_target(&self) -> u64 {
        self.to_target.load(Ordering::Relaxed)
    }

    pub fn to_client(&self) -> u64 {
        self.to_client.load(Ordering::Relaxed)
    }
}

/// One open session as others see it.
#[derive(Debug)]
pub struct SessionInfo {
    /// Small and unique for the process's life: what an operator types to close it.
    pub id: u64,
    /// The id of the log lines about this session.
    pub request_id: String,
    pub client: SocketAddr,
    pub target: Target,
    pub started: SystemTime,
    pub counters: Counters,
    /// Cancelled to close this session alone (close 1001 to the browser).
    pub close: CancellationToken,
}

#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<u64, Arc<SessionInfo>>>,
    next_id: AtomicU64,
    /// Bytes of the sessions that have ended, moved here under the sessions lock as each
    /// one leaves, so live plus ended never counts a byte twice or misses one.
    ended: Counters,
}

impl Registry {
    /// Adds a session; it is removed when the returned guard drops, however the session ends.
    pub fn register(
        self: &Arc<Self>,
        request_id: &str,
        client: SocketAddr,
        target: &Target,
    ) -> Registered {
        let info = Arc::new(SessionInfo {
            id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            request_id: request_id.to_owned(),
            client,
            target: target.clone(),
            started: SystemTime::now(),
            counters: Counters::default(),
            close: CancellationToken::new(),
        });
        self.lock().insert(info.id, info.clone());
        Registered {
            registry: self.clone(),
            info,
        }
    }

    /// The open sessions, oldest first.
    pub fn list(&self) -> Vec<Arc<SessionInfo>> {
        let mut sessions: Vec<_> = self.lock().values().cloned().collect();
        sessions.sort_by_key(|s| s.id);
        sessions
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Sessions registered since the process started.
    pub fn started_total(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed)
    }

    /// Bytes relayed since the process started, `(to target, to client)`, open sessions
    /// included: a counter that never goes back, for metrics.
    pub fn bytes_totals(&self) -> (u64, u64) {
        let sessions = self.lock();
        sessions.values().fold(
            (self.ended.to_target(), self.ended.to_client()),
            |(to_target, to_client), s| {
                (
                    to_target + s.counters.to_target(),
                    to_client + s.counters.to_client(),
                )
            },
        )
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks session `id` to close; `false` if there is no such session.
    pub fn close(&self, id: u64) -> bool {
        match self.lock().get(&id) {
            Some(info) => {
                info.close.cancel();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<SessionInfo>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A session's place in the registry, held for as long as the session runs.
#[derive(Debug)]
pub struct Registered {
    registry: Arc<Registry>,
    pub info: Arc<SessionInfo>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut sessions = self.registry.lock();
        sessions.remove(&self.info.id);
        let (ended, counters) = (&self.registry.ended, &self.info.counters);
        ended
            .to_target
            .fetch_add(counters.to_target(), Ordering::Relaxed);
        ended
            .to_client
            .fetch_add(counters.to_client(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_list_close_and_remove() {
        let registry = Arc::new(Registry::default());
        let target = Target {
            host: "10.0.0.5".into(),
            port: 5900,
            ssl_target: false,
        };
        let client: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        let first = registry.register("aaaa0001", client, &target);
        let second = registry.register("aaaa0002", client, &target);
        assert_eq!(
            registry.list().iter().map(|s| s.id).collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(registry.close(2));
        assert!(second.info.close.is_cancelled());
        assert!(!first.info.close.is_cancelled());
        assert!(!registry.close(99));
        drop(second);
        assert_eq!(registry.len(), 1);
        drop(first);
        assert!(registry.is_empty());
    }

    #[test]
    fn byte_totals_keep_what_ended_sessions_moved() {
        let registry = Arc::new(Registry::default());
        let target = Target {
            host: "10.0.0.5".into(),
            port: 5900,
            ssl_target: false,
        };
        let client: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        let first = registry.register("aaaa0001", client, &target);
        let second = registry.register("aaaa0002", client, &target);
        first
            .info
            .counters
            .to_target
            .fetch_add(10, Ordering::Relaxed);
        second
            .info
            .counters
            .to_client
            .fetch_add(7, Ordering::Relaxed);
        assert_eq!(registry.bytes_totals(), (10, 7));
        drop(first);
        assert_eq!(registry.bytes_totals(), (10, 7));
        second
            .info
            .counters
            .to_client
            .fetch_add(5, Ordering::Relaxed);
        drop(second);
        assert_eq!(registry.bytes_totals(), (10, 12));
        assert_eq!(registry.started_total(), 2);
    }
}
