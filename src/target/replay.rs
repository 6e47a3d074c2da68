//! Replay stores: where [`super::single_use`] records the tickets it has accepted, so that
//! each is accepted once. [`MemoryReplayStore`] serves one instance; [`RedisReplayStore`]
//! is shared by every instance behind a load balancer. Both hold ticket ids (hashes,
//! [`TicketId`]), never tickets, and forget each one once it can no longer verify.
//!
//! Both fail closed: a store that cannot answer, or a memory store that is full, refuses
//! the ticket rather than risk accepting it twice.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::ticket::TicketId;

/// Tickets the memory store holds at most: far above what one instance sees in a ticket
/// lifetime (120 s by default); beyond it new tickets are refused, never old ones forgotten.
pub const MEMORY_CAPACITY: usize = 100_000;

/// How much longer than a ticket's acceptance Redis keeps its id: instances whose clocks
/// differ by less than this cannot accept a replay of a ticket another has forgotten.
pub const REDIS_EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// After a failed connection, how long requests are refused at once instead of each
/// trying to connect again.
const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// Prefix of the Redis keys, so the database can be shared.
pub const REDIS_KEY_PREFIX: &str = "consolegate:ticket:";

/// Why a single-use ticket was refused by the replay check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("ticket already used: single-use tickets are accepted once (ticket id {id}, {store} replay store)")]
    Replayed { id: String, store: &'static str },
    #[error("replay store unavailable, single-use ticket refused: {reason}")]
    Unavailable { reason: String },
}

impl ReplayError {
    /// A closed set of labels, for metrics and log filters.
    pub fn kind(&self) -> &'static str {
        match self {
            ReplayError::Replayed { .. } => "replayed",
            ReplayError::Unavailable { .. } => "replay_store_unavailable",
        }
    }

    /// Whether the store, not the ticket, is the problem.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ReplayError::Unavailable { .. })
    }
}

/// Records accepted tickets.
#[async_trait]
pub trait ReplayStore: Send + Sync + fmt::Debug {
    /// Records `id` until `until` (the last instant the ticket verifies). `Ok(true)` the
    /// first time, `Ok(false)` if it was recorded before.
    ///
    /// # Errors
    /// The store cannot tell: the caller must refuse the ticket.
    async fn first_use(
        &self,
        id: &TicketId,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, String>;

    /// A short name for log lines.
    fn name(&self) -> &'static str;
}

/// One instance's record, bounded, each id forgotten once its ticket has expired.
#[derive(Debug)]
pub struct MemoryReplayStore {
    capacity: usize,
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    ids: HashMap<TicketId, DateTime<Utc>>,
    by_expiry: BTreeSet<(DateTime<Utc>, TicketId)>,
}

impl MemoryReplayStore {
    pub fn new(capacity: usize) -> MemoryReplayStore {
        MemoryReplayStore {
            capacity,
            state: Mutex::new(MemoryState::default()),
        }
    }

    /// This process's record, holding [`MEMORY_CAPACITY`] tickets. It belongs to the process,
    /// not to one configuration: a reload (SIGHUP) builds a new resolver around the same
    /// record, so a ticket accepted before the reload is still a replay after it.
    pub fn process_wide() -> Arc<MemoryReplayStore> {
        static STORE: OnceLock<Arc<MemoryReplayStore>> = OnceLock::new();
        STORE
            .get_or_init(|| Arc::new(MemoryReplayStore::new(MEMORY_CAPACITY)))
            .clone()
    }

    /// How many ids are held.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ids
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The synchronous core of [`ReplayStore::first_use`].
    ///
    /// # Errors
    /// The store is full of tickets that are all still valid.
    pub fn record(
        &self,
        id: &TicketId,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(&(expiry, expired)) = state.by_expiry.first() {
            if expiry >= now {
                break;
            }
            state.by_expiry.pop_first();
            state.ids.remove(&expired);
        }
        if state.ids.contains_key(id) {
            return Ok(false);
        }
        if state.ids.len() >= self.capacity {
            return Err(format!(
                "the memory replay store is full ({} tickets still valid)",
                state.ids.len()
            ));
        }
        state.ids.insert(*id, until);
        state.by_expiry.insert((until, *id));
        Ok(true)
    }
}

#[async_trait]
impl ReplayStore for MemoryReplayStore {
    async fn first_use(
        &self,
        id: &TicketId,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, String> {
        self.record(id, until, now)
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

/// A Redis server shared by every instance: `SET <prefix><id> <now> NX PX <ms>` records a
/// ticket atomically; the key expires by itself.
pub struct RedisReplayStore {
    client: redis::Client,
    /// `host:port` (or socket path), for logs: never the URL, which may hold a password.
    shown: String,
    timeout: Duration,
    connection: tokio::sync::Mutex<Connection>,
    /// Whether the last exchange worked, to log the transitions only.
    healthy: AtomicBool,
}

#[derive(Default)]
struct Connection {
    open: Option<MultiplexedConnection>,
    failed_at: Option<Instant>,
    last_failure: String,
}

impl fmt::Debug for RedisReplayStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisReplayStore")
            .field("server", &self.shown)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisReplayStore {
    /// Parses the URL; connects at the first ticket, and again after any failure.
    ///
    /// # Errors
    /// The URL is not a Redis URL.
    pub fn new(url: &str, timeout: Duration) -> Result<RedisReplayStore, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let shown = client.get_connection_info().addr.to_string();
        Ok(RedisReplayStore {
            client,
            shown,
            timeout,
            connection: tokio::sync::Mutex::new(Connection::default()),
            healthy: AtomicBool::new(true),
        })
    }

    /// The open connection, or a new one. `bool`: whether it was already open (and so may
    /// have died since: a Redis restart, an idle connection dropped by a firewall).
    async fn connect(&self) -> Result<(MultiplexedConnection, bool), String> {
        let mut slot = self.connection.lock().await;
        if let Some(open) = &slot.open {
            return Ok((open.clone(), true));
        }
        if let Some(failed_at) = slot.failed_at {
            if failed_at.elapsed() < RECONNECT_BACKOFF {
                return Err(slot.last_failure.clone());
            }
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout);
        let attempt = tokio::time::timeout(
            self.timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        let failure = match attempt {
            Ok(Ok(open)) => {
                slot.open = Some(open.clone());
                slot.failed_at = None;
                return Ok((open, false));
            }
            Ok(Err(e)) => format!("cannot connect to redis at {}: {e}", self.shown),
            Err(_) => format!(
                "cannot connect to redis at {} within {:?}",
                self.shown, self.timeout
            ),
        };
        slot.failed_at = Some(Instant::now());
        slot.last_failure = failure.clone();
        Err(failure)
    }

    /// Forgets a connection that failed, so the next ticket connects again.
    async fn reset(&self) {
        self.connection.lock().await.open = None;
    }

    /// Records `key` unless present. A connection that was open before and turns out dead
    /// is replaced once; any other failure refuses the ticket.
    async fn set_once(&self, key: &str, value: &str, expiry_ms: u64) -> Result<bool, String> {
        let mut retried = false;
        loop {
            let (mut connection, reused) = self.connect().await?;
            let mut command = redis::cmd("SET");
            command
                .arg(key)
                .arg(value)
                .arg("NX")
                .arg("PX")
                .arg(expiry_ms);
            let reply = tokio::time::timeout(
                self.timeout,
                command.query_async::<Option<String>>(&mut connection),
            )
            .await;
            match reply {
                Ok(Ok(reply)) => return Ok(reply.is_some()),
                Ok(Err(e)) => {
                    self.reset().await;
                    let dead =
                        e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error();
                    if reused && dead && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(format!("redis at {}: {e}", self.shown));
                }
                Err(_) => {
                    self.reset().await;
                    return Err(format!(
                        "redis at {} did not answer within {:?}",
                        self.shown, self.timeout
                    ));
                }
            }
        }
    }
}

#[async_trait]
impl ReplayStore for RedisReplayStore {
    async fn first_use(
        &self,
        id: &TicketId,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, String> {
        let left = (until - now).max(TimeDelta::zero());
        let expiry = left.to_std().unwrap_or_default() + REDIS_EXPIRY_MARGIN;
        let expiry_ms = u64::try_from(expiry.as_millis()).unwrap_or(u64::MAX);
        let key = format!("{REDIS_KEY_PREFIX}{}", id.to_hex());
        let result = self.set_once(&key, &now.to_rfc3339(), expiry_ms).await;
        let healthy = result.is_ok();
        if self.healthy.swap(healthy, Ordering::Relaxed) != healthy {
            match &result {
                Err(reason) => warn!(
                    reason = %reason,
                    "replay store unreachable: single-use tickets are refused until it answers"
                ),
                Ok(_) => info!(server = %self.shown, "replay store reachable again"),
            }
        }
        result
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> TicketId {
        TicketId([n; 32])
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn memory_store_accepts_each_id_once_until_it_expires() {
        let store = MemoryReplayStore::new(10);
        assert_eq!(store.record(&id(1), at(120), at(0)), Ok(true));
        assert_eq!(store.record(&id(1), at(120), at(1)), Ok(false));
        assert_eq!(store.record(&id(2), at(120), at(1)), Ok(true));
        // Still remembered at the last instant the ticket verifies...
        assert_eq!(store.record(&id(1), at(120), at(120)), Ok(false));
        // ...and forgotten after it, when the ticket itself is refused as expired.
        assert_eq!(store.record(&id(3), at(500), at(121)), Ok(true));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_full_memory_store_refuses_new_tickets_and_forgets_none() {
        let store = MemoryReplayStore::new(2);
        assert_eq!(store.record(&id(1), at(100), at(0)), Ok(true));
        assert_eq!(store.record(&id(2), at(200), at(0)), Ok(true));
        let error = store.record(&id(3), at(300), at(0)).unwrap_err();
        assert!(error.contains("full (2 tickets still valid)"), "{error}");
        assert_eq!(store.record(&id(1), at(100), at(50)), Ok(false));
        // Once one expires there is room again.
        assert_eq!(store.record(&id(3), at(300), at(150)), Ok(true));
        assert_eq!(store.record(&id(2), at(200), at(150)), Ok(false));
    }

    #[test]
    fn the_process_wide_store_is_one_record() {
        let first = MemoryReplayStore::process_wide();
        let again = MemoryReplayStore::process_wide();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(first.capacity, MEMORY_CAPACITY);
    }

    #[test]
    fn errors_have_kinds_and_say_whether_the_store_is_at_fault() {
        let replayed = ReplayError::Replayed {
            id: "abc".into(),
            store: "memory",
        };
        assert_eq!(replayed.kind(), "replayed");
        assert!(!replayed.is_unavailable());
        let down = ReplayError::Unavailable { reason: "x".into() };
        assert_eq!(down.kind(), "replay_store_unavailable");
        assert!(down.is_unavailable());
    }

    #[test]
    fn redis_urls_are_checked_and_shown_without_password() {
        let store =
            RedisReplayStore::new("redis://:hunter2@127.0.0.1:6390/2", Duration::from_secs(1))
                .unwrap();
        assert_eq!(store.shown, "127.0.0.1:6390");
        assert!(!format!("{store:?}").contains("hunter2"));
        assert!(RedisReplayStore::new("http://127.0.0.1/", Duration::from_secs(1)).is_err());
    }
}
