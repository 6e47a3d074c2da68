//! The ticket decoder one layer in: the fuzzer writes the JSON envelope and the target
//! base64-encodes it, so mutations land on fields, signedFields and the signature rather
//! than on base64 text. Seeds: the vectors' decoded JSON.
//! Oracle: no panic, and every base64 spelling the decoder accepts (standard, URL-safe,
//! unpadded) gets the same verdict, since only the decoded JSON may decide.
#![no_main]

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
use base64::Engine;
use consolegate::ticket::MAX_TICKET_LEN;
use consolegate_fuzz::{vectors_now, verifiers};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|json: &[u8]| {
    let now = vectors_now();
    let spellings = [
        STANDARD.encode(json),
        URL_SAFE.encode(json),
        STANDARD_NO_PAD.encode(json),
    ];
    for verifier in verifiers() {
        let verdicts: Vec<_> = spellings.iter().map(|t| verifier.verify(t, now)).collect();
        if spellings.iter().all(|t| t.len() <= MAX_TICKET_LEN) {
            assert_eq!(
                verdicts[0], verdicts[1],
                "URL-safe spelling judged differently"
            );
            assert_eq!(
                verdicts[0], verdicts[2],
                "unpadded spelling judged differently"
            );
        }
        if let Ok(verified) = &verdicts[0] {
            assert!(verified.valid_from <= now && now <= verified.valid_to);
        }
    }
});
