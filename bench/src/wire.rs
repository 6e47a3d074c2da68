//! The client side of the wire, written for load generation: the WebSocket opening handshake,
//! masked binary frames out, and a streaming parser for frames in that counts payload bytes
//! without copying them. The same [`Conn`] also speaks raw TCP, so the raw-loopback baseline
//! runs through exactly the same client code as the proxies.
//!
//! A browser-grade client (tungstenite) would spend more CPU per byte than the proxies under
//! test on this 2-core machine and blur the comparison; this one does the minimum.

use std::io;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Largest response head accepted from a server during the handshake.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// How long a close handshake may take before the socket is simply dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Any byte stream a session runs over: TCP or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("server refused the upgrade: {0}")]
    Refused(String),
    #[error("server response head is not HTTP or larger than {MAX_RESPONSE_HEAD} bytes")]
    BadResponse,
    #[error("server sent a masked frame")]
    MaskedFrame,
    #[error("server sent a frame with reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    #[error("connection closed")]
    Closed,
}

/// What a chunk of bytes from the server contained.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fed {
    /// Payload bytes of data frames (binary, text, continuation).
    pub payload: usize,
    /// A close frame arrived.
    pub closed: bool,
    /// Payloads of ping frames to answer with pongs.
    pub pings: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Payload,
}

/// Streaming parser of server-to-client frames: fed arbitrary chunks, it keeps only the
/// current frame's header and, for control frames, their (at most 125-byte) payload.
#[derive(Debug)]
pub struct FrameParser {
    state: State,
    header: [u8; 14],
    header_len: usize,
    opcode: u8,
    remaining: u64,
    control: Vec<u8>,
}

impl Default for FrameParser {
    fn default() -> Self {
        FrameParser {
            state: State::Header,
            header: [0; 14],
            header_len: 0,
            opcode: 0,
            remaining: 0,
            control: Vec::new(),
        }
    }
}

impl FrameParser {
    /// Parses `data`, which continues whatever was fed before.
    ///
    /// # Errors
    /// A masked frame or a reserved opcode: the server is broken and the session is over.
    pub fn feed(&mut self, mut data: &[u8], fed: &mut Fed) -> Result<(), WireError> {
        while !data.is_empty() {
            match self.state {
                State::Header => {
                    let needed = self.header_needed();
                    let take = (needed - self.header_len).min(data.len());
                    self.header[self.header_len..self.header_len + take]
                        .copy_from_slice(&data[..take]);
                    self.header_len += take;
                    data = &data[take..];
                    if self.header_len == self.header_needed() {
                        self.start_payload(fed)?;
                    }
                }
                State::Payload => {
                    let take = usize::try_from(self.remaining)
                        .unwrap_or(usize::MAX)
                        .min(data.len());
                    if is_data(self.opcode) {
                        fed.payload += take;
                    } else {
                        self.control.extend_from_slice(&data[..take]);
                    }
                    self.remaining -= take as u64;
                    data = &data[take..];
                    if self.remaining == 0 {
                        self.finish_frame(fed);
                    }
                }
            }
        }
        Ok(())
    }

    /// Header bytes needed given what has arrived so far (at least the first two).
    fn header_needed(&self) -> usize {
        if self.header_len < 2 {
            return 2;
        }
        let extended = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        2 + extended + mask
    }

    fn start_payload(&mut self, fed: &mut Fed) -> Result<(), WireError> {
        if self.header[1] & 0x80 != 0 {
            return Err(WireError::MaskedFrame);
        }
        self.opcode = self.header[0] & 0x0f;
        if !matches!(
            self.opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ) {
            return Err(WireError::ReservedOpcode(self.opcode));
        }
        self.remaining = match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => u64::from_be_bytes(self.header[2..10].try_into().unwrap_or([0; 8])),
            short => u64::from(short),
        };
        self.header_len = 0;
        self.control.clear();
        self.state = State::Payload;
        if self.remaining == 0 {
            self.finish_frame(fed);
        }
        Ok(())
    }

    fn finish_frame(&mut self, fed: &mut Fed) {
        match self.opcode {
            OP_CLOSE => fed.closed = true,
            OP_PING => fed.pings.push(std::mem::take(&mut self.control)),
            _ => {}
        }
        self.state = State::Header;
    }
}

fn is_data(opcode: u8) -> bool {
    matches!(opcode, OP_CONTINUATION | OP_TEXT | OP_BINARY)
}

/// One client-to-server frame: FIN set, masked with `mask` as RFC 6455 requires.
pub fn encode_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x80 | opcode);
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    let start = frame.len();
    frame.extend_from_slice(payload);
    apply_mask(&mut frame[start..], mask);
    frame
}

/// XORs `data` with the repeating 4-byte `mask`, eight bytes at a time.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let value = u64::from_ne_bytes((&*chunk).try_into().unwrap_or([0; 8])) ^ wide;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// The request a browser sends to open a console.
pub fn handshake_request(host: &str, path: &str, key: &str, subprotocol: Option<&str>) -> String {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(protocol) = subprotocol {
        request.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// A cheap, per-connection-distinct generator for masks and handshake keys; the benchmark
/// needs variety, not secrecy.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn mask(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }
}

/// An open session as the browser sees it: raw bytes, or WebSocket frames over TCP or TLS.
pub struct Conn {
    stream: Box<dyn Io>,
    framing: Option<FrameParser>,
    rng: XorShift,
    /// Payload bytes that arrived together with the handshake response.
    early: usize,
}

/// What one read brought.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub payload: usize,
    pub closed: bool,
}

impl Conn {
    /// A raw TCP session: bytes are payload, end of stream is the close.
    pub fn raw(stream: Box<dyn Io>, seed: u64) -> Conn {
        Conn {
            stream,
            framing: None,
            rng: XorShift::new(seed),
            early: 0,
        }
    }

    /// Opens a WebSocket session on `stream` for `path`.
    ///
    /// # Errors
    /// I/O failures, a non-101 answer (its status line), or a response that is not HTTP.
    pub async fn websocket(
        mut stream: Box<dyn Io>,
        host: &str,
        path: &str,
        subprotocol: Option<&str>,
        seed: u64,
    ) -> Result<Conn, WireError> {
        let mut rng = XorShift::new(seed);
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&rng.next_u64().to_ne_bytes());
        nonce[8..].copy_from_slice(&rng.next_u64().to_ne_bytes());
        let request = handshake_request(host, path, &STANDARD.encode(nonce), subprotocol);
        stream.write_all(request.as_bytes()).await?;

        let mut head = Vec::with_capacity(512);
        let mut chunk = [0u8; 1024];
        let end = loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(WireError::Closed);
            }
            head.extend_from_slice(&chunk[..n]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if head.len() > MAX_RESPONSE_HEAD {
                return Err(WireError::BadResponse);
            }
        };
        let status_line = head
            .split(|&b| b == b'\r')
            .next()
            .map(|line| String::from_utf8_lossy(line).into_owned())
            .ok_or(WireError::BadResponse)?;
        if !status_line.starts_with("HTTP/1.1 101") {
            return Err(WireError::Refused(status_line));
        }
        let mut parser = FrameParser::default();
        let mut fed = Fed::default();
        parser.feed(&head[end..], &mut fed)?;
        if fed.closed {
            return Err(WireError::Closed);
        }
        Ok(Conn {
            stream,
            framing: Some(parser),
            rng,
            early: fed.payload,
        })
    }

    pub fn is_websocket(&self) -> bool {
        self.framing.is_some()
    }

    /// The bytes to write for one message carrying `payload`: a masked binary frame, or the
    /// payload itself on raw TCP. Precomputing them keeps the client's own cost out of
    /// throughput figures.
    pub fn wire_message(&mut self, payload: &[u8]) -> Vec<u8> {
        if self.is_websocket() {
            encode_frame(OP_BINARY, payload, self.rng.mask())
        } else {
            payload.to_vec()
        }
    }

    /// Sends `payload` as one message.
    ///
    /// # Errors
    /// The write failed.
    pub async fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        if self.is_websocket() {
            let frame = encode_frame(OP_BINARY, payload, self.rng.mask());
            self.stream.write_all(&frame).await
        } else {
            self.stream.write_all(payload).await
        }
    }

    /// Reads once into `buf` and parses what came; pings are answered at once.
    ///
    /// # Errors
    /// I/O failures and protocol violations by the server.
    pub async fn recv(&mut self, buf: &mut [u8]) -> Result<Received, WireError> {
        let fed = read_and_parse(&mut self.stream, &mut self.early, &mut self.framing, buf).await?;
        for ping in fed.pings {
            let pong = encode_frame(OP_PONG, &ping, self.rng.mask());
            self.stream.write_all(&pong).await?;
        }
        Ok(Received {
            payload: fed.payload,
            closed: fed.closed,
        })
    }

    /// Reads until `expected` payload bytes have arrived.
    ///
    /// # Errors
    /// The session closed first, or a read failed.
    pub async fn recv_payload(&mut self, expected: usize, buf: &mut [u8]) -> Result<(), WireError> {
        let mut got = 0;
        while got < expected {
            let received = self.recv(buf).await?;
            got += received.payload;
            if received.closed && got < expected {
                return Err(WireError::Closed);
            }
        }
        Ok(())
    }

    /// Ends the session as a browser does: a close frame with 1000, then waits (bounded)
    /// for the server's close frame or end of stream. Raw TCP just shuts down.
    pub async fn close(mut self) {
        if self.is_websocket() {
            let frame = encode_frame(OP_CLOSE, &1000u16.to_be_bytes(), self.rng.mask());
            if self.stream.write_all(&frame).await.is_err() {
                return;
            }
            let mut buf = [0u8; 512];
            let _ = tokio::time::timeout(CLOSE_WAIT, async {
                while let Ok(received) = self.recv(&mut buf).await {
                    if received.closed {
                        break;
                    }
                }
            })
            .await;
        } else {
            let _ = self.stream.shutdown().await;
        }
    }

    /// Separate halves for sending and receiving at the same time (bulk transfers). The
    /// receiving half does not answer pings.
    pub fn into_split(self) -> (ConnReader, ConnWriter) {
        let (read, write) = tokio::io::split(self.stream);
        (
            ConnReader {
                read,
                framing: self.framing,
                early: self.early,
            },
            ConnWriter { write },
        )
    }
}

/// The receiving half of a [`Conn`].
pub struct ConnReader {
    read: ReadHalf<Box<dyn Io>>,
    framing: Option<FrameParser>,
    early: usize,
}

impl ConnReader {
    /// Reads once into `buf`; see [`Conn::recv`].
    ///
    /// # Errors
    /// I/O failures and protocol violations by the server.
    pub async fn recv(&mut self, buf: &mut [u8]) -> Result<Received, WireError> {
        let fed = read_and_parse(&mut self.read, &mut self.early, &mut self.framing, buf).await?;
        Ok(Received {
            payload: fed.payload,
            closed: fed.closed,
        })
    }
}

/// One read into `buf`, parsed into frames when the session is a WebSocket: what
/// [`Conn::recv`] and [`ConnReader::recv`] share. Payload that arrived with the upgrade
/// response (`early`) is reported first, without reading.
async fn read_and_parse<R: AsyncRead + Unpin>(
    read: &mut R,
    early: &mut usize,
    framing: &mut Option<FrameParser>,
    buf: &mut [u8],
) -> Result<Fed, WireError> {
    if *early > 0 {
        return Ok(Fed {
            payload: std::mem::take(early),
            ..Fed::default()
        });
    }
    let n = read.read(buf).await?;
    let mut fed = Fed::default();
    match framing {
        _ if n == 0 => fed.closed = true,
        None => fed.payload = n,
        Some(parser) => parser.feed(&buf[..n], &mut fed)?,
    }
    Ok(fed)
}

/// The sending half of a [`Conn`].
pub struct ConnWriter {
    write: WriteHalf<Box<dyn Io>>,
}

impl ConnWriter {
    /// Writes bytes prepared by [`Conn::wire_message`].
    ///
    /// # Errors
    /// The write failed.
    pub async fn send_wire(&mut self, wire: &[u8]) -> io::Result<()> {
        self.write.write_all(wire).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            len @ 0..=125 => frame.push(len as u8),
            len @ 126..=0xffff => {
                frame.push(126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn counts_payload_of_every_length_encoding_fed_byte_by_byte() {
        let mut stream = Vec::new();
        for len in [0usize, 5, 125, 126, 65535, 65536, 200_000] {
            stream.extend(server_frame(OP_BINARY, &vec![7u8; len]));
        }
        let total: usize = [0usize, 5, 125, 126, 65535, 65536, 200_000].iter().sum();
        for chunk in [1usize, 3, 1000, stream.len()] {
            let mut parser = FrameParser::default();
            let mut fed = Fed::default();
            for piece in stream.chunks(chunk) {
                parser.feed(piece, &mut fed).unwrap();
            }
            assert_eq!(fed.payload, total, "chunk size {chunk}");
            assert!(!fed.closed);
        }
    }

    #[test]
    fn control_frames_are_not_payload() {
        let mut stream = server_frame(OP_PING, b"hi");
        stream.extend(server_frame(OP_BINARY, b"abc"));
        stream.extend(server_frame(OP_CLOSE, &1000u16.to_be_bytes()));
        let mut parser = FrameParser::default();
        let mut fed = Fed::default();
        parser.feed(&stream, &mut fed).unwrap();
        assert_eq!(fed.payload, 3);
        assert_eq!(fed.pings, vec![b"hi".to_vec()]);
        assert!(fed.closed);
    }

    #[test]
    fn masked_or_reserved_frames_from_a_server_are_errors() {
        let mut parser = FrameParser::default();
        let masked = encode_frame(OP_BINARY, b"x", [1, 2, 3, 4]);
        assert!(matches!(
            parser.feed(&masked, &mut Fed::default()),
            Err(WireError::MaskedFrame)
        ));
        let mut parser = FrameParser::default();
        assert!(matches!(
            parser.feed(&[0x83, 0], &mut Fed::default()),
            Err(WireError::ReservedOpcode(3))
        ));
    }

    #[test]
    fn client_frames_are_masked_and_unmask_back() {
        let payload: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        let mask = [0xde, 0xad, 0xbe, 0xef];
        let frame = encode_frame(OP_BINARY, &payload, mask);
        assert_eq!(frame[0], 0x82);
        assert_eq!(frame[1], 0x80 | 127);
        assert_eq!(&frame[2..10], &(payload.len() as u64).to_be_bytes());
        assert_eq!(&frame[10..14], &mask);
        let mut body = frame[14..].to_vec();
        assert_ne!(body, payload);
        apply_mask(&mut body, mask);
        assert_eq!(body, payload);

        let small = encode_frame(OP_CLOSE, &1000u16.to_be_bytes(), mask);
        assert_eq!(&small[..2], &[0x88, 0x82]);
    }

    #[test]
    fn handshake_offers_the_subprotocol_only_when_asked() {
        let with = handshake_request("localhost", "/t", "a2V5", Some("binary"));
        assert!(with.starts_with("GET /t HTTP/1.1\r\n"));
        assert!(with.contains("Sec-WebSocket-Protocol: binary\r\n"));
        assert!(with.ends_with("\r\n\r\n"));
        let without = handshake_request("localhost", "/", "a2V5", None);
        assert!(!without.contains("Protocol"));
    }
}
