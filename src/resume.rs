//! Reconnect without a new ticket (`RECONNECT_GRACE_PERIOD`): when a browser's WebSocket drops
//! without a clean close, the session keeps its VNC connection for the grace period and the
//! browser may re-attach with a resume secret; the VNC server never notices.
//!
//! Protocol `consolegate.v1` (a WebSocket subprotocol the console page offers before `binary`;
//! binary frames carry the RFB stream exactly as with `binary`, text frames carry JSON control
//! messages):
//!
//! - proxy → browser, first: `{"type":"session","resume":SECRET,"grace":SECONDS,"heartbeat":SECONDS}`
//!   (`heartbeat`: the ping interval rounded up, 0 when off, so that the page can tell a
//!   connection that went silent from an idle one; a browser must accept its absence)
//! - either way, from time to time: `{"type":"ack","received":N}` — N is the number of stream
//!   bytes received so far; the sender may forget what the peer has acknowledged.
//! - to re-attach, the browser opens `/.consolegate/resume` offering `consolegate.v1` and
//!   sends `{"type":"resume","resume":SECRET,"received":N}`; the proxy answers
//!   `{"type":"resumed","resume":NEW_SECRET,"received":M}`, resends its stream from byte N,
//!   and the browser resends its own from byte M. Nothing is lost or duplicated. A browser
//!   may re-attach before the proxy has noticed that its old connection is gone (a browser
//!   often learns first, or gives up on a silent connection first): the old connection is
//!   then let go and the new one continues the session.
//!
//! A secret is 256 random bits, used once: every resume hands out a new one. Only its SHA-256
//! is kept. A wrong or expired secret is refused like a bad ticket (close 4403).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use hyper_tungstenite::HyperWebsocketStream;
use serde_json::{json, Value};
use tokio::sync::{oneshot, Notify};

/// The WebSocket subprotocol of resumable sessions.
pub const PROTOCOL: &str = "consolegate.v1";

/// Where a browser re-attaches. Never a ticket: tickets are base64 of JSON, `eyJ...`.
pub const PATH: &str = ".consolegate/resume";

/// A control message, as it travels in a text frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Session {
        secret: String,
        grace_secs: u64,
        heartbeat_secs: u64,
    },
    Ack {
        received: u64,
    },
    Resume {
        secret: String,
        received: u64,
    },
    Resumed {
        secret: String,
        received: u64,
    },
}

impl Control {
    pub fn to_text(&self) -> String {
        match self {
            Control::Session {
                secret,
                grace_secs,
                heartbeat_secs,
            } => {
                json!({"type": "session", "resume": secret, "grace": grace_secs, "heartbeat": heartbeat_secs})
            }
            Control::Ack { received } => json!({"type": "ack", "received": received}),
            Control::Resume { secret, received } => {
                json!({"type": "resume", "resume": secret, "received": received})
            }
            Control::Resumed { secret, received } => {
                json!({"type": "resumed", "resume": secret, "received": received})
            }
        }
        .to_string()
    }

    /// Parses a control message; `None` for anything malformed or unknown.
    pub fn parse(text: &str) -> Option<Control> {
        let value: Value = serde_json::from_str(text).ok()?;
        let secret = || value.get("resume")?.as_str().map(str::to_owned);
        let received = || value.get("received")?.as_u64();
        match value.get("type")?.as_str()? {
            "ack" => Some(Control::Ack {
                received: received()?,
            }),
            "resume" => Some(Control::Resume {
                secret: secret()?,
                received: received()?,
            }),
            "resumed" => Some(Control::Resumed {
                secret: secret()?,
                received: received()?,
            }),
            "session" => Some(Control::Session {
                secret: secret()?,
                grace_secs: value.get("grace")?.as_u64()?,
                heartbeat_secs: match value.get("heartbeat") {
                    None => 0,
                    Some(heartbeat) => heartbeat.as_u64()?,
                },
            }),
            _ => None,
        }
    }
}

/// A new resume secret and the key it is filed under.
pub fn new_secret() -> (String, [u8; 32]) {
    let mut secret = [0u8; 32];
    openssl::rand::rand_bytes(&mut secret).expect("the system random generator works");
    let text = URL_SAFE_NO_PAD.encode(secret);
    let key = key_of(&text);
    (text, key)
}

/// What a secret is filed under: its hash, so the table never holds a usable secret.
pub fn key_of(secret: &str) -> [u8; 32] {
    openssl::sha::sha256(secret.as_bytes())
}

/// The stream bytes sent to the browser and not yet acknowledged, so that they can be sent
/// again after a re-attach. Bounded: when full, the relay stops reading from the target
/// until an acknowledgement frees room, so a browser that never acknowledges costs at most
/// `cap` bytes.
#[derive(Debug)]
pub struct Retained {
    inner: Mutex<Chunks>,
    cap: usize,
    /// Signalled when an acknowledgement frees room.
    pub room: Notify,
}

#[derive(Debug, Default)]
struct Chunks {
    chunks: VecDeque<Bytes>,
    bytes: usize,
    /// Stream offset of the first retained byte: what the browser has acknowledged.
    acked: u64,
}

/// Why a re-attach cannot continue the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("browser says it received {received} bytes; the proxy can resend from {acked} to {sent}")]
pub struct GapError {
    pub received: u64,
    pub acked: u64,
    pub sent: u64,
}

impl Retained {
    pub fn new(cap: usize) -> Retained {
        Retained {
            inner: Mutex::default(),
            cap,
            room: Notify::new(),
        }
    }

    pub fn has_room(&self) -> bool {
        self.lock().bytes < self.cap
    }

    /// Keeps a chunk about to be sent.
    pub fn keep(&self, chunk: Bytes) {
        let mut inner = self.lock();
        inner.bytes += chunk.len();
        inner.chunks.push_back(chunk);
    }

    /// Forgets everything before stream offset `received`.
    pub fn ack(&self, received: u64) {
        let mut inner = self.lock();
        let mut forget = received.saturating_sub(inner.acked);
        while forget > 0 {
            let Some(front) = inner.chunks.front_mut() else {
                break;
            };
            let len = front.len() as u64;
            if len <= forget {
                inner.chunks.pop_front();
                forget -= len;
                inner.bytes -= len as usize;
                inner.acked += len;
            } else {
                let _ = front.split_to(forget as usize);
                inner.bytes -= forget as usize;
                inner.acked += forget;
                forget = 0;
            }
        }
        drop(inner);
        self.room.notify_one();
    }

    /// The bytes to send again to a browser that received `received` bytes, when `sent` have
    /// been sent in all.
    ///
    /// # Errors
    /// `received` is before what is retained (acknowledged and forgotten) or after `sent`.
    pub fn resend_from(&self, received: u64, sent: u64) -> Result<Vec<Bytes>, GapError> {
        let inner = self.lock();
        let gap = GapError {
            received,
            acked: inner.acked,
            sent,
        };
        if received < inner.acked || received > sent || inner.acked + inner.bytes as u64 != sent {
            return Err(gap);
        }
        let mut skip = received - inner.acked;
        let mut out = Vec::new();
        for chunk in &inner.chunks {
            if skip >= chunk.len() as u64 {
                skip -= chunk.len() as u64;
            } else {
                out.push(chunk.slice(skip as usize..));
                skip = 0;
            }
        }
        Ok(out)
    }

    fn lock(&self) -> MutexGuard<'_, Chunks> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A browser coming back to a parked session. It travels boxed: a relaying resumable
/// session keeps a slot for one, and idle sessions should not pay for a whole WebSocket.
pub struct Reattach {
    pub websocket: HyperWebsocketStream,
    /// Stream bytes the browser says it received before the drop.
    pub received: u64,
    pub client: SocketAddr,
    pub request_id: String,
}

/// Resumable sessions, filed under the hash of their current resume secret: those waiting for
/// their browser, and those still relaying, which a browser that noticed a drop first takes
/// over.
#[derive(Default)]
pub struct Parking {
    waiting: Mutex<HashMap<[u8; 32], oneshot::Sender<Box<Reattach>>>>,
}

impl std::fmt::Debug for Parking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parking")
            .field("waiting", &self.lock().len())
            .finish()
    }
}

impl Parking {
    /// Files a session under `key`; it gets its browser back through the receiver.
    pub fn park(&self, key: [u8; 32]) -> oneshot::Receiver<Box<Reattach>> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(key, tx);
        rx
    }

    /// Takes a session off the table (its grace period is over, it ended, or its secret
    /// was used).
    pub fn unpark(&self, key: &[u8; 32]) {
        self.lock().remove(key);
    }

    /// Hands a re-attaching browser to the session filed under `secret`.
    ///
    /// # Errors
    /// No session waits under that secret (wrong, used, or expired): the browser is given back.
    pub fn reattach(&self, secret: &str, reattach: Box<Reattach>) -> Result<(), Box<Reattach>> {
        let waiting = self.lock().remove(&key_of(secret));
        match waiting {
            Some(session) => session.send(reattach),
            None => Err(reattach),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], oneshot::Sender<Box<Reattach>>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_round_trip() {
        for message in [
            Control::Session {
                secret: "s".into(),
                grace_secs: 30,
                heartbeat_secs: 20,
            },
            Control::Ack { received: 12345 },
            Control::Resume {
                secret: "abc".into(),
                received: 7,
            },
            Control::Resumed {
                secret: "def".into(),
                received: 9,
            },
        ] {
            assert_eq!(Control::parse(&message.to_text()), Some(message));
        }
        for junk in [
            "",
            "{}",
            "[1]",
            r#"{"type":"ack"}"#,
            r#"{"type":"ack","received":-1}"#,
            r#"{"type":"x"}"#,
            r#"{"type":"session","resume":"s","grace":30,"heartbeat":"20"}"#,
        ] {
            assert_eq!(Control::parse(junk), None, "{junk}");
        }
        // Sessions from proxies before the heartbeat field.
        assert_eq!(
            Control::parse(r#"{"type":"session","resume":"s","grace":30}"#),
            Some(Control::Session {
                secret: "s".into(),
                grace_secs: 30,
                heartbeat_secs: 0
            })
        );
    }

    #[test]
    fn retained_bytes_are_trimmed_by_acks_and_resent_from_any_offset() {
        let retained = Retained::new(10);
        retained.keep(Bytes::from_static(b"abcd"));
        retained.keep(Bytes::from_static(b"efgh"));
        assert!(retained.has_room());
        retained.keep(Bytes::from_static(b"ijk"));
        assert!(!retained.has_room());
        let joined = |chunks: Vec<Bytes>| chunks.concat();
        assert_eq!(joined(retained.resend_from(0, 11).unwrap()), b"abcdefghijk");
        assert_eq!(joined(retained.resend_from(6, 11).unwrap()), b"ghijk");
        retained.ack(6);
        assert!(retained.has_room());
        assert_eq!(joined(retained.resend_from(6, 11).unwrap()), b"ghijk");
        assert_eq!(joined(retained.resend_from(11, 11).unwrap()), b"");
        assert_eq!(retained.resend_from(5, 11).unwrap_err().acked, 6);
        assert!(retained.resend_from(12, 11).is_err());
        retained.ack(11);
        assert_eq!(joined(retained.resend_from(11, 11).unwrap()), b"");
        retained.ack(3); // late, out-of-order acks change nothing
        assert_eq!(joined(retained.resend_from(11, 11).unwrap()), b"");
    }

    #[test]
    fn secrets_are_single_use_and_filed_by_hash() {
        let (secret, key) = new_secret();
        assert_eq!(secret.len(), 43);
        assert_eq!(key, key_of(&secret));
        assert_ne!(new_secret().0, secret);
    }
}
