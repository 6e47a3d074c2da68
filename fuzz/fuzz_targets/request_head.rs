//! The request path handling before a session: the request-target hyper accepted, to the
//! credential the resolver gets, and the `Sec-WebSocket-Protocol` values offered.
//! Input: the request-target on the first line, then one header value per line.
//! Seeds: noVNC's and upstream clients' shapes.
//! Oracle: no panic; the credential is the path minus its leading slashes, without the
//! query; subprotocols are trimmed, non-empty and comma-free; the credential goes through
//! the ticket verifier without a panic.
#![no_main]

use consolegate::session::{credential, offered_subprotocols};
use consolegate_fuzz::{vectors_now, verifiers};
use hyper::header::{HeaderMap, HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use hyper::Uri;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let Some(target) = lines.next() else {
        return;
    };
    let mut headers = HeaderMap::new();
    for value in lines {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(SEC_WEBSOCKET_PROTOCOL, value);
        }
    }
    let offered = offered_subprotocols(&headers);
    assert_eq!(offered.is_none(), headers.is_empty());
    for protocol in offered.iter().flatten() {
        assert!(!protocol.is_empty() && !protocol.contains(','));
        assert_eq!(protocol.trim(), protocol);
    }

    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let ticket = credential(&uri);
    assert!(!ticket.starts_with('/') && !ticket.contains('?'));
    assert!(uri.path().ends_with(ticket));
    let _ = verifiers()[0].verify(ticket, vectors_now());
});
