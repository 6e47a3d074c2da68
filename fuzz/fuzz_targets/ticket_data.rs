//! The payload parser: a ticket's `data` (percent-encoded JSON) to a console target.
//! Seeds: the vectors' `data` fields and payload shapes from the contract.
//! Oracle: no panic, and an accepted target survives the engine's encoding: the payload a
//! Java engine would write for it (compact JSON, form-encoded) reads back as the same target.
#![no_main]

use consolegate::ticket::parse_data;
use libfuzzer_sys::fuzz_target;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Java's `URLEncoder` set, as the engine encodes `data`.
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'-')
    .remove(b'*')
    .remove(b'_');

fuzz_target!(|data: &[u8]| {
    let Ok(data) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(target) = parse_data(data) else {
        return;
    };
    assert_ne!(target.port, 0);
    let payload = serde_json::json!({
        "port": target.port.to_string(),
        "host": target.host,
        "ssl_target": target.ssl_target,
    })
    .to_string();
    let encoded = utf8_percent_encode(&payload, FORM).to_string();
    assert_eq!(parse_data(&encoded).as_ref(), Ok(&target), "{encoded}");
});
