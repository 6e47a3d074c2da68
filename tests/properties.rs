//! Property tests (proptest) of the parsers and the signature: what `check-config` prints
//! reads back as the same configuration; a ticket signed for any target verifies to exactly
//! that target or is refused as a bad payload; changing any signed field refuses it; no clock
//! or skew makes verification panic; and every accepted duration yields a computable deadline.
//! The coverage-guided counterparts are in `fuzz/` (`scripts/fuzz.sh`).

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use common::{fixture, signer};
use consolegate::config::{is_secret, parse_duration, RawConfig, KEYS, MAX_DURATION};
use consolegate::target::Target;
use consolegate::ticket::{TicketSigner, TicketVerifier};
use proptest::prelude::*;
use serde_json::Value;

fn engine_signer() -> &'static TicketSigner {
    static SIGNER: std::sync::OnceLock<TicketSigner> = std::sync::OnceLock::new();
    SIGNER.get_or_init(|| signer("engine"))
}

fn engine_verifier() -> &'static TicketVerifier {
    static VERIFIER: std::sync::OnceLock<TicketVerifier> = std::sync::OnceLock::new();
    VERIFIER.get_or_init(|| {
        TicketVerifier::from_pem(&std::fs::read(fixture("pki/engine.pem")).unwrap()).unwrap()
    })
}

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap()
}

/// 2030-01-01, the window's start in these tests.
const ISSUED: i64 = 1_893_456_000;

fn sign(target: &Target) -> String {
    engine_signer().sign(target, at(ISSUED), TimeDelta::seconds(120))
}

/// Host names (RFC 1123 labels), IPv4 and IPv6 literals.
fn valid_host() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex(
            "[a-z0-9]([a-z0-9_-]{0,20}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?){0,4}\\.?"
        )
        .unwrap(),
        any::<u32>().prop_map(|ip| Ipv4Addr::from(ip).to_string()),
        any::<u128>().prop_map(|ip| Ipv6Addr::from(ip).to_string()),
    ]
}

fn target(host: impl Strategy<Value = String>) -> impl Strategy<Value = Target> {
    (host, 1..=u16::MAX, any::<bool>()).prop_map(|(host, port, ssl_target)| Target {
        host,
        port,
        ssl_target,
    })
}

fn decode(ticket: &str) -> serde_json::Map<String, Value> {
    match serde_json::from_slice(&STANDARD.decode(ticket).unwrap()).unwrap() {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn encode(fields: &serde_json::Map<String, Value>) -> String {
    STANDARD.encode(Value::Object(fields.clone()).to_string())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_ticket_for_any_valid_target_verifies_to_that_target(target in target(valid_host())) {
        let verified = engine_verifier().verify(&sign(&target), at(ISSUED + 60)).unwrap();
        prop_assert_eq!(verified.target, target);
    }

    /// The signer writes whatever host it is given (JSON-escaped); the verifier must hand back
    /// exactly that host or refuse it, never a different target.
    #[test]
    fn a_ticket_for_any_host_text_verifies_to_itself_or_is_refused(target in target(any::<String>())) {
        match engine_verifier().verify(&sign(&target), at(ISSUED + 60)) {
            Ok(verified) => prop_assert_eq!(verified.target, target),
            Err(error) => prop_assert_eq!(error.kind(), "bad_payload", "{}", error),
        }
    }

    #[test]
    fn changing_any_signed_field_refuses_the_ticket(
        target in target(valid_host()),
        field in prop::sample::select(vec!["salt", "data", "validFrom", "validTo"]),
        replacement in prop_oneof![
            any::<String>(),
            "[A-Za-z0-9+/]{11}=",
            "20[0-9]{12}",
            Just("%7B%22host%22%3A%22169.254.169.254%22%2C%22port%22%3A%2280%22%7D".to_owned()),
        ],
    ) {
        let mut fields = decode(&sign(&target));
        prop_assume!(fields[field] != replacement.as_str());
        fields.insert(field.to_owned(), Value::from(replacement));
        let verdict = engine_verifier().verify(&encode(&fields), at(ISSUED + 60));
        prop_assert!(verdict.is_err(), "a changed {} was accepted: {:?}", field, verdict);
    }

    #[test]
    fn reordering_signed_fields_or_flipping_a_signature_bit_refuses_the_ticket(
        target in target(valid_host()),
        order in Just(vec!["salt", "data", "validFrom", "validTo"]).prop_shuffle(),
        bit in 0usize..2048,
    ) {
        let signed = decode(&sign(&target));
        if order != ["salt", "data", "validFrom", "validTo"] {
            let mut fields = signed.clone();
            fields.insert("signedFields".into(), Value::from(order.join(",")));
            prop_assert_eq!(
                engine_verifier().verify(&encode(&fields), at(ISSUED + 60)).unwrap_err().kind(),
                "bad_signature"
            );
        }
        let mut fields = signed;
        let mut signature = STANDARD.decode(fields["v2_signature"].as_str().unwrap()).unwrap();
        signature[bit / 8] ^= 1 << (bit % 8);
        fields.insert("v2_signature".into(), Value::from(STANDARD.encode(signature)));
        prop_assert_eq!(
            engine_verifier().verify(&encode(&fields), at(ISSUED + 60)).unwrap_err().kind(),
            "bad_signature"
        );
    }

    /// Any instant the calendar holds and any skew: a verdict, never a panic; and the window
    /// widened by the skew decides.
    #[test]
    fn no_clock_or_skew_makes_verification_panic(
        now in DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp(),
        skew_seconds in prop_oneof![0u64..1_000_000, any::<u64>()],
    ) {
        let ticket = sign(&Target { host: "127.0.0.1".into(), port: 5900, ssl_target: false });
        let skew = Duration::from_secs(skew_seconds);
        let verifier = TicketVerifier::from_pem(&std::fs::read(fixture("pki/engine.pem")).unwrap())
            .unwrap()
            .clock_skew(skew);
        let verdict = verifier.verify(&ticket, at(now));
        let skew = i64::try_from(skew_seconds).unwrap_or(i64::MAX);
        let inside = now.saturating_add(skew) >= ISSUED && now.saturating_sub(skew) <= ISSUED + 120;
        prop_assert_eq!(verdict.is_ok(), inside, "{:?}", verdict);
    }

    /// What `check-config` prints (`KEY=value`, quoted where needed) reads back as the same
    /// values, whatever they hold (secrets are masked, so they are left out).
    #[test]
    fn printed_configuration_reads_back_the_same(
        pairs in prop::collection::vec(
            (
                prop_oneof![
                    prop::sample::select(KEYS.iter().map(|key| key.name).collect::<Vec<_>>()),
                    "[A-Z_][A-Z0-9_]{0,12}".prop_map(|name| Box::leak(name.into_boxed_str()) as &str),
                ],
                "[^\r\n]*",
            ),
            0..12,
        )
    ) {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let config = RawConfig::from_pairs(&pairs);
        let printed = config.print_lines();
        let mut reread = RawConfig::defaults();
        let errors = reread.apply_text(&printed.join("\n"), Path::new("printed.conf"));
        prop_assert!(errors.is_empty(), "{:?}", errors);
        for line in &printed {
            let key = line.split('=').next().unwrap();
            if !is_secret(key) {
                prop_assert_eq!(&config.get(key).unwrap().value, &reread.get(key).unwrap().value);
            }
        }
    }

    /// Every duration a key accepts gives a deadline the server can compute.
    #[test]
    fn every_accepted_duration_has_a_computable_deadline(
        text in prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            (any::<u32>(), prop::sample::select(vec!["ms", "s", "m", "h", "d", "w", "y"]))
                .prop_map(|(n, unit)| format!("{n}{unit}")),
        ]
    ) {
        if let Ok(duration) = parse_duration(&text) {
            prop_assert!(duration <= MAX_DURATION);
            prop_assert!(tokio::time::Instant::now().checked_add(duration).is_some());
            prop_assert!(TimeDelta::from_std(duration).is_ok_and(|d| Utc::now().checked_add_signed(d).is_some()));
        }
    }
}
