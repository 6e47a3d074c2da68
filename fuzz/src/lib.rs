//! What the fuzz targets share: the verifier of the committed ticket vectors and a moment
//! inside their validity window (contract section 8), so that a seed ticket verifies and
//! mutations of it explore every later check, the signature included.

use chrono::{DateTime, Utc};
use consolegate::ticket::TicketVerifier;

/// The engine certificate the vectors in `tests/fixtures/vectors` are signed with.
const ENGINE_CERT: &[u8] = include_bytes!("../../tests/fixtures/vectors/engine-cert.pem");

/// Verifiers for the vectors' engine: as configured by default, and accepting legacy SHA-1
/// tickets (`TICKET_ACCEPT_LEGACY_SHA1`), so both signature paths are reachable.
pub fn verifiers() -> &'static [TicketVerifier; 2] {
    static VERIFIERS: std::sync::OnceLock<[TicketVerifier; 2]> = std::sync::OnceLock::new();
    VERIFIERS.get_or_init(|| {
        let verifier = || TicketVerifier::from_pem(ENGINE_CERT).expect("the vectors' certificate");
        [verifier(), verifier().accept_legacy_sha1(true)]
    })
}

/// Inside every valid vector's window.
pub fn vectors_now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_798_761_600, 0).expect("2027-01-01T00:00:00Z")
}
