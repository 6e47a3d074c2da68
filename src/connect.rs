//! Opening the TCP connection to a console target: resolve the name, let the target policy
//! pick the addresses, try each in turn within one deadline, and tune the socket like the
//! browser side.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::target::Target;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("connecting to {addr} failed: {source}")]
    Failed { addr: SocketAddr, source: io::Error },
    #[error("no answer from {target} within {after:?}")]
    TimedOut { target: String, after: Duration },
}

impl ConnectError {
    /// A closed set of labels, for metrics and the browser-facing refusal.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectError::Resolve { .. } | ConnectError::NoAddress { .. } => "target_unresolvable",
            ConnectError::Failed { .. } => "target_unreachable",
            ConnectError::TimedOut { .. } => "target_timeout",
        }
    }
}

/// The addresses `target` resolves to, by the deadline.
///
/// # Errors
/// The name does not resolve, resolves to nothing, or not in time.
pub async fn resolve(
    target: &Target,
    deadline: Instant,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, ConnectError> {
    let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
    let addrs: Vec<SocketAddr> = tokio::time::timeout_at(deadline, lookup)
        .await
        .map_err(|_| ConnectError::TimedOut {
            target: target.to_string(),
            after: timeout,
        })?
        .map_err(|source| ConnectError::Resolve {
            host: target.host.clone(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(ConnectError::NoAddress {
            host: target.host.clone(),
        });
    }
    Ok(addrs)
}

/// Connects to the first of `addrs` that answers, by the deadline.
///
/// # Errors
/// The last address's failure, or [`ConnectError::TimedOut`] once the deadline passes.
pub async fn connect_any(
    target: &Target,
    addrs: &[SocketAddr],
    deadline: Instant,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let mut last_error = ConnectError::NoAddress {
        host: target.host.clone(),
    };
    for &addr in addrs {
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => {
                return Err(ConnectError::TimedOut {
                    target: target.to_string(),
                    after: timeout,
                })
            }
            Ok(Ok(stream)) => {
                tune(&stream);
                return Ok(stream);
            }
            Ok(Err(source)) => last_error = ConnectError::Failed { addr, source },
        }
    }
    Err(last_error)
}

/// No Nagle delay (console input is small and latency-bound) and TCP keepalive, so a peer
/// that vanished without a FIN is eventually noticed. On a listening socket, Linux hands
/// both to every accepted connection: no system calls per browser.
pub fn tune<S: std::os::fd::AsFd>(socket: &S) {
    let socket = socket2::SockRef::from(socket);
    let _ = socket.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(6);
    let _ = socket.set_tcp_keepalive(&keepalive);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_inherit_the_listeners_options() {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        tune(&socket);
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(16).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let accepted = socket2::SockRef::from(&accepted);
        assert!(accepted.nodelay().unwrap());
        assert!(accepted.keepalive().unwrap());
        assert_eq!(accepted.keepalive_time().unwrap(), Duration::from_secs(60));
        assert_eq!(
            accepted.keepalive_interval().unwrap(),
            Duration::from_secs(10)
        );
        assert_eq!(accepted.keepalive_retries().unwrap(), 6);
    }
}
