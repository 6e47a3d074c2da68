//! The PROXY protocol (v1 text and v2 binary, as HAProxy's `send-proxy` and `send-proxy-v2`
//! write it): a load balancer in TCP mode puts one header before the client's bytes, naming
//! the browser's real address, so logs, per-client limits and the session registry see the
//! browser and not the load balancer.
//!
//! Only peers listed in `PROXY_PROTOCOL_TRUSTED` are read this way, and from them the
//! header is required; anyone else could claim any address with it, so from other peers a
//! header is not honoured (the connection is an ordinary one and fails as TLS or HTTP). The
//! header is read byte-exactly, so the TLS or HTTP bytes after it are left for
//! [`crate::server`]; its size is bounded and the caller bounds its time with
//! `HANDSHAKE_TIMEOUT`. Parsing is the `ppp` crate's.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::InvalidValue;

/// The first twelve bytes of every v2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 header, CRLF included (the protocol's own limit).
const V1_MAX: usize = 107;
/// Longest v2 header accepted. Addresses take at most 216 bytes; the rest are TLVs, which
/// HAProxy sends only when told to and which this proxy does not use.
const V2_MAX: usize = 4096;

/// The peers allowed to speak the PROXY protocol; empty: the protocol is off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trusted(Vec<IpNet>);

impl Trusted {
    /// Whether connections from `peer` must start with a header. IPv4 peers seen on an IPv6
    /// socket (`::ffff:10.0.0.5`) match IPv4 entries.
    pub fn contains(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.0.iter().any(|net| net.contains(&peer))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Trusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nets: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&nets.join(","))
    }
}

/// Reads `PROXY_PROTOCOL_TRUSTED`: IP addresses and networks (`10.0.0.0/24`, `fd00::/8`)
/// separated by commas or blanks.
pub fn parse_trusted(value: &str) -> Result<Trusted, InvalidValue> {
    value
        .split([',', ' ', '\t'])
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    InvalidValue::new(item, "an IP address or network (10.0.0.0/24, fd00::/8)")
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Trusted)
}

/// Why a trusted peer's connection did not start with a usable header.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("the connection closed before a complete PROXY protocol header")]
    Closed,
    #[error("reading the PROXY protocol header failed: {0}")]
    Io(io::Error),
    #[error("no PROXY protocol header: the connection starts with {0}; this peer is in PROXY_PROTOCOL_TRUSTED, so it must send one (HAProxy: send-proxy-v2)")]
    Missing(&'static str),
    #[error("malformed PROXY protocol v1 header: {0}")]
    V1(String),
    #[error("malformed PROXY protocol v2 header: {0}")]
    V2(String),
    #[error("PROXY protocol v2 header of {0} bytes is over the {V2_MAX}-byte limit")]
    TooLong(usize),
}

impl From<io::Error> for ProxyHeaderError {
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::UnexpectedEof {
            ProxyHeaderError::Closed
        } else {
            ProxyHeaderError::Io(error)
        }
    }
}

/// Reads one header from the start of `stream`, and nothing after it.
///
/// Returns the client's address, or `None` when the header names none: a v2 `LOCAL`
/// command (the load balancer's own health check) or v1 `UNKNOWN`; the peer is then the
/// client.
///
/// # Errors
/// No header, a malformed or oversized one, or the connection ended first.
pub async fn read_header<R>(stream: &mut R) -> Result<Option<SocketAddr>, ProxyHeaderError>
where
    R: AsyncRead + Unpin,
{
    let mut header = vec![0u8; V2_SIGNATURE.len()];
    // Twelve bytes never reach past a header: the shortest, "PROXY UNKNOWN\r\n", has 15.
    stream.read_exact(&mut header).await?;
    if header == V2_SIGNATURE {
        let mut fixed = [0u8; 4];
        stream.read_exact(&mut fixed).await?;
        header.extend_from_slice(&fixed);
        let total = header.len() + usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
        if total > V2_MAX {
            return Err(ProxyHeaderError::TooLong(total));
        }
        header.resize(total, 0);
        stream.read_exact(&mut header[16..]).await?;
        return parse_v2(&header);
    }
    if !header.starts_with(b"PROXY ") {
        return Err(ProxyHeaderError::Missing(describe_start(&header)));
    }
    // Byte by byte: reading ahead would swallow the TLS or HTTP bytes that follow.
    while !header.ends_with(b"\n") {
        if header.len() >= V1_MAX {
            return Err(ProxyHeaderError::V1(format!(
                "no end of line within {V1_MAX} bytes"
            )));
        }
        header.push(stream.read_u8().await?);
    }
    parse_v1(&header)
}

fn parse_v1(header: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    use ppp::v1::{Addresses, Header};
    let parsed = Header::try_from(header).map_err(|e| ProxyHeaderError::V1(e.to_string()))?;
    Ok(match parsed.addresses {
        Addresses::Tcp4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        Addresses::Tcp6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        Addresses::Unknown => None,
    })
}

fn parse_v2(header: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    use ppp::v2::{Addresses, Command, Header};
    let parsed = Header::try_from(header).map_err(|e| ProxyHeaderError::V2(e.to_string()))?;
    if parsed.command == Command::Local {
        return Ok(None);
    }
    Ok(match parsed.addresses {
        Addresses::IPv4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        Addresses::IPv6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        Addresses::Unspecified | Addresses::Unix(_) => None,
    })
}

/// What a connection without a header starts with, without quoting it (an HTTP request
/// line holds the ticket).
fn describe_start(bytes: &[u8]) -> &'static str {
    match bytes.first() {
        Some(0x16) => "a TLS handshake",
        Some(b'A'..=b'Z') => "what looks like an HTTP request",
        _ => "unrecognised bytes",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, Command, IPv4, IPv6, Protocol, Version};

    async fn read(bytes: &[u8]) -> (Result<Option<SocketAddr>, ProxyHeaderError>, Vec<u8>) {
        let mut reader = bytes;
        let result = read_header(&mut reader).await;
        (result, reader.to_vec())
    }

    fn v2(command: Command, addresses: impl Into<ppp::v2::Addresses>) -> Vec<u8> {
        Builder::with_addresses(Version::Two | command, Protocol::Stream, addresses)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn v1_headers_and_what_follows_them() {
        let (result, rest) =
            read(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 6100\r\nGET / HTTP/1.1").await;
        assert_eq!(result.unwrap(), Some("203.0.113.7:51234".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1");
        let (result, _) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 6100\r\n\x16").await;
        assert_eq!(
            result.unwrap(),
            Some("[2001:db8::7]:40000".parse().unwrap())
        );
        let (result, rest) = read(b"PROXY UNKNOWN\r\n\x16\x03").await;
        assert_eq!(result.unwrap(), None);
        assert_eq!(rest, b"\x16\x03");
    }

    #[tokio::test]
    async fn v2_headers_proxy_and_local() {
        let mut bytes = v2(
            Command::Proxy,
            IPv4::new([203, 0, 113, 7], [10, 0, 0, 1], 51234, 6100),
        );
        bytes.extend_from_slice(b"\x16\x03\x01");
        let (result, rest) = read(&bytes).await;
        assert_eq!(result.unwrap(), Some("203.0.113.7:51234".parse().unwrap()));
        assert_eq!(rest, b"\x16\x03\x01");
        let six = v2(
            Command::Proxy,
            IPv6::new(
                "2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap(),
                "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap(),
                40000,
                6100,
            ),
        );
        assert_eq!(
            read(&six).await.0.unwrap(),
            Some("[2001:db8::7]:40000".parse().unwrap())
        );
        let local = v2(Command::Local, ppp::v2::Addresses::Unspecified);
        assert_eq!(read(&local).await.0.unwrap(), None);
    }

    #[tokio::test]
    async fn missing_truncated_and_oversized_headers() {
        let (result, _) = read(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00").await;
        assert!(matches!(
            result,
            Err(ProxyHeaderError::Missing("a TLS handshake"))
        ));
        let (result, _) = read(b"GET /eyJzYWx0IjoiQUJD HTTP/1.1\r\n").await;
        let message = result.unwrap_err().to_string();
        assert!(message.contains("looks like an HTTP request"), "{message}");
        assert!(!message.contains("eyJ"), "{message}");
        let (result, _) = read(b"PROXY TCP4 203.0.113.7").await;
        assert!(matches!(result, Err(ProxyHeaderError::Closed)));
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(120));
        let (result, _) = read(long.as_bytes()).await;
        assert!(matches!(result, Err(ProxyHeaderError::V1(_))));
        let (result, _) = read(b"PROXY TCP4 nonsense here 1 2\r\n").await;
        assert!(matches!(result, Err(ProxyHeaderError::V1(_))));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        let (result, _) = read(&huge).await;
        assert!(matches!(result, Err(ProxyHeaderError::TooLong(65551))));
        let mut bad_version = V2_SIGNATURE.to_vec();
        bad_version.extend_from_slice(&[0x31, 0x11, 0x00, 0x0c]);
        bad_version.extend_from_slice(&[0; 12]);
        let (result, _) = read(&bad_version).await;
        assert!(matches!(result, Err(ProxyHeaderError::V2(_))));
    }

    #[test]
    fn trusted_peers() {
        let trusted = parse_trusted("127.0.0.1, 10.1.0.0/16 fd00::/8").unwrap();
        assert!(trusted.contains("127.0.0.1".parse().unwrap()));
        assert!(trusted.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(trusted.contains("fd00::5".parse().unwrap()));
        assert!(!trusted.contains("127.0.0.2".parse().unwrap()));
        assert_eq!(trusted.to_string(), "127.0.0.1/32,10.1.0.0/16,fd00::/8");
        assert!(parse_trusted("").unwrap().is_empty());
        assert!(parse_trusted("10.0.0.0/33").is_err());
        assert!(parse_trusted("lb.example.com").is_err());
    }
}
