//! The ticket decoder as the server runs it: any text in the URL path, through every check.
//! Seeds: the contract's vectors. Oracle: no panic, and an accepted ticket's window holds `now`.
#![no_main]

use consolegate_fuzz::{vectors_now, verifiers};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // hyper hands the path over as text; bytes that are not UTF-8 never reach the verifier.
    let Ok(ticket) = std::str::from_utf8(data) else {
        return;
    };
    let now = vectors_now();
    for verifier in verifiers() {
        match verifier.verify(ticket, now) {
            Ok(verified) => {
                assert!(verified.valid_from <= now && now <= verified.valid_to);
                assert_ne!(verified.target.port, 0);
                assert!(!verified.target.host.is_empty());
            }
            Err(error) => {
                // Every refusal has a log text and a closed-set kind, and never echoes the
                // ticket back.
                let text = error.to_string();
                assert!(!error.kind().is_empty());
                assert!(ticket.len() < 24 || !text.contains(ticket));
            }
        }
    }
});
