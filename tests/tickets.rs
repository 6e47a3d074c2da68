//! Ticket verdicts: the contract's vectors (real Python and Java encoders), our signer, and
//! forgeries, through the library and through `consolegate ticket`.

mod common;

use std::process::Command;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::TimeDelta;
use common::{fixture, signer, vectors_now};
use consolegate::target::Target;
use consolegate::ticket::{TicketError, TicketVerifier};
use serde_json::Value;

fn vector(name: &str) -> String {
    std::fs::read_to_string(fixture(&format!("vectors/{name}.ticket")))
        .unwrap()
        .trim()
        .to_owned()
}

fn vector_verifier() -> TicketVerifier {
    TicketVerifier::from_pem(&std::fs::read(fixture("vectors/engine-cert.pem")).unwrap()).unwrap()
}

fn test_verifier(cert: &str) -> TicketVerifier {
    TicketVerifier::from_pem(&std::fs::read(fixture(&format!("pki/{cert}"))).unwrap()).unwrap()
}

fn decode(ticket: &str) -> serde_json::Map<String, Value> {
    serde_json::from_slice::<Value>(&STANDARD.decode(ticket).unwrap())
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

fn encode(fields: &serde_json::Map<String, Value>) -> String {
    STANDARD.encode(Value::Object(fields.clone()).to_string())
}

fn localhost_vnc() -> Target {
    Target {
        host: "127.0.0.1".into(),
        port: 5900,
        ssl_target: false,
    }
}

#[test]
fn valid_vectors_are_accepted() {
    for name in [
        "01-valid-py-vnc-plain",
        "03-valid-py-webadmin-data",
        "18-valid-java-engine",
    ] {
        let verified = vector_verifier()
            .verify(&vector(name), vectors_now())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(verified.target, localhost_vnc(), "{name}");
    }
}

#[test]
fn invalid_vectors_are_refused_for_the_right_reason() {
    let verifier = vector_verifier();
    let verdict = |name: &str| verifier.verify(&vector(name), vectors_now()).unwrap_err();
    assert!(matches!(verdict("04-expired"), TicketError::Expired { .. }));
    assert_eq!(verdict("06-tampered-signature"), TicketError::BadSignature);
    assert_eq!(verdict("08-wrong-signer"), TicketError::BadSignature);
    let legacy = verdict("10-legacy-v1-sha1-only");
    assert_eq!(legacy.kind(), "unsupported_signature");
    assert!(legacy.to_string().starts_with("unknown digest"), "{legacy}");
}

#[test]
fn legacy_sha1_is_accepted_only_on_opt_in() {
    let verified = vector_verifier()
        .accept_legacy_sha1(true)
        .verify(&vector("10-legacy-v1-sha1-only"), vectors_now());
    assert_eq!(verified.unwrap().target, localhost_vnc());
}

#[test]
fn validity_window_is_inclusive_and_skew_is_optional() {
    let ticket = vector("18-valid-java-engine");
    let from = "2026-11-21T15:46:16Z".parse().unwrap();
    let to = "2027-11-21T15:46:16Z".parse().unwrap();
    let verifier = vector_verifier();
    assert!(verifier.verify(&ticket, from).is_ok());
    assert!(verifier.verify(&ticket, to).is_ok());
    let early = from - TimeDelta::seconds(1);
    assert!(matches!(
        verifier.verify(&ticket, early),
        Err(TicketError::NotYetValid { .. })
    ));
    assert!(matches!(
        verifier.verify(&ticket, to + TimeDelta::seconds(1)),
        Err(TicketError::Expired { .. })
    ));
    let lenient = vector_verifier().clock_skew(std::time::Duration::from_secs(5));
    assert!(lenient.verify(&ticket, early).is_ok());
    assert!(lenient.verify(&ticket, to + TimeDelta::seconds(5)).is_ok());
}

#[test]
fn embedded_certificate_is_never_trusted() {
    // Vector 08 embeds its own signer's certificate; only the configured one counts. And a
    // ticket whose embedded certificate was swapped for the engine's is still refused.
    let mut fields = decode(&vector("08-wrong-signer"));
    let engine = decode(&vector("01-valid-py-vnc-plain"))["certificate"].clone();
    fields.insert("certificate".into(), engine);
    assert_eq!(
        vector_verifier().verify(&encode(&fields), vectors_now()),
        Err(TicketError::BadSignature)
    );
}

#[test]
fn boundary_shifting_forgery_is_refused() {
    // Contract section 3: move the whole signed string into `salt`, list only `salt`, and
    // choose any data. Upstream accepts this; we must not.
    let mut fields = decode(&vector("18-valid-java-engine"));
    let signed: String = ["salt", "data", "validFrom", "validTo"]
        .iter()
        .map(|k| fields[*k].as_str().unwrap().to_owned())
        .collect();
    fields.insert("salt".into(), Value::from(signed));
    fields.insert("signedFields".into(), Value::from("salt"));
    fields.insert(
        "data".into(),
        Value::from("%7B%22port%22%3A%2222%22%2C%22host%22%3A%2210.0.0.1%22%7D"),
    );
    fields.insert("validTo".into(), Value::from("29991231235959"));
    let refused = vector_verifier()
        .verify(&encode(&fields), vectors_now())
        .unwrap_err();
    assert!(
        matches!(refused, TicketError::MalformedField { field: "salt", .. }),
        "{refused}"
    );

    // Same with a well-formed salt: the signedFields rule refuses it.
    let mut fields = decode(&vector("18-valid-java-engine"));
    fields.insert("signedFields".into(), Value::from("salt,data"));
    let refused = vector_verifier()
        .verify(&encode(&fields), vectors_now())
        .unwrap_err();
    assert!(
        matches!(refused, TicketError::SignedFieldsInvalid { .. }),
        "{refused}"
    );
}

#[test]
fn changing_any_signed_field_breaks_the_signature() {
    let original = decode(&vector("18-valid-java-engine"));
    let changes = [
        ("data", "%7B%22port%22%3A%225901%22%2C%22host%22%3A%22127.0.0.1%22%2C%22ssl_target%22%3Afalse%7D"),
        ("validTo", "20281121154616"),
        ("validFrom", "20261121154617"),
        ("salt", "999wUMgRETA="),
    ];
    for (field, value) in changes {
        let mut fields = original.clone();
        fields.insert(field.into(), Value::from(value));
        assert_eq!(
            vector_verifier().verify(&encode(&fields), vectors_now()),
            Err(TicketError::BadSignature),
            "{field}"
        );
    }
}

#[test]
fn pss_salt_length_must_be_the_maximum() {
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Padding;
    use openssl::sign::{RsaPssSaltlen, Signer};
    let key =
        PKey::private_key_from_pem(&std::fs::read(fixture("pki/engine.key")).unwrap()).unwrap();
    let good = signer("engine").sign(&localhost_vnc(), vectors_now(), TimeDelta::seconds(60));
    let mut fields = decode(&good);
    let message: String = ["salt", "data", "validFrom", "validTo"]
        .iter()
        .map(|k| fields[*k].as_str().unwrap().to_owned())
        .collect();
    let mut pss32 = Signer::new(MessageDigest::sha256(), &key).unwrap();
    pss32.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
    pss32.set_rsa_mgf1_md(MessageDigest::sha256()).unwrap();
    pss32
        .set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
        .unwrap();
    pss32.update(message.as_bytes()).unwrap();
    fields.insert(
        "v2_signature".into(),
        Value::from(STANDARD.encode(pss32.sign_to_vec().unwrap())),
    );
    let verifier = test_verifier("engine.pem");
    assert!(verifier.verify(&good, vectors_now()).is_ok());
    assert_eq!(
        verifier.verify(&encode(&fields), vectors_now()),
        Err(TicketError::BadSignature)
    );
}

#[test]
fn signed_tickets_look_like_the_java_engine_and_verify() {
    let ticket = signer("engine").sign(&localhost_vnc(), vectors_now(), TimeDelta::seconds(120));
    let json = String::from_utf8(STANDARD.decode(&ticket).unwrap()).unwrap();
    let java = String::from_utf8(STANDARD.decode(vector("18-valid-java-engine")).unwrap()).unwrap();
    let keys = |text: &str| -> Vec<String> {
        // Key order as written, which serde_json's map would sort away.
        text.match_indices("\":")
            .filter_map(|(i, _)| text[..i].rsplit('"').next().map(String::from))
            .filter(|k| {
                [
                    "salt",
                    "data",
                    "certificate",
                    "signedFields",
                    "validFrom",
                    "v2_signature",
                    "validTo",
                ]
                .contains(&k.as_str())
            })
            .collect()
    };
    assert_eq!(keys(&json), keys(&java));
    assert!(!json.contains(": ") && !json.contains(", "), "compact JSON");
    let ours = decode(&ticket);
    let theirs = decode(&vector("18-valid-java-engine"));
    assert_eq!(
        ours["data"], theirs["data"],
        "engine-style percent-encoding"
    );
    assert_eq!(ours["signedFields"], "salt,data,validFrom,validTo");
    assert!(ours["certificate"].as_str().unwrap().contains("\r\n"));
    assert_eq!(ours["validFrom"], "20270101000000");
    assert_eq!(ours["validTo"], "20270101000200");
    assert_eq!(
        test_verifier("engine.pem")
            .verify(&ticket, vectors_now())
            .unwrap()
            .target,
        localhost_vnc()
    );
}

#[test]
fn rsa_4096_and_rotation() {
    let target = Target {
        host: "::1".into(),
        port: 5901,
        ssl_target: true,
    };
    let big = signer("engine-4096").sign(&target, vectors_now(), TimeDelta::seconds(60));
    assert!(big.len() > 3000);
    assert_eq!(
        test_verifier("engine-4096.pem")
            .verify(&big, vectors_now())
            .unwrap()
            .target,
        target
    );
    assert_eq!(
        test_verifier("engine.pem").verify(&big, vectors_now()),
        Err(TicketError::BadSignature)
    );

    let rotation = test_verifier("engines-rotation.pem");
    assert_eq!(rotation.key_count(), 2);
    for name in ["engine", "other-engine"] {
        let ticket = signer(name).sign(&target, vectors_now(), TimeDelta::seconds(60));
        assert!(rotation.verify(&ticket, vectors_now()).is_ok(), "{name}");
    }
}

#[test]
fn url_safe_and_unpadded_base64_are_accepted_but_junk_is_not() {
    let ticket = vector("18-valid-java-engine");
    let url_safe = ticket
        .replace('+', "-")
        .replace('/', "_")
        .trim_end_matches('=')
        .to_owned();
    assert!(vector_verifier().verify(&url_safe, vectors_now()).is_ok());
    let junk = format!("{}!{}", &ticket[..100], &ticket[100..]);
    assert_eq!(
        vector_verifier().verify(&junk, vectors_now()),
        Err(TicketError::NotBase64)
    );
    let truncated = &ticket[..ticket.len() / 2];
    assert!(vector_verifier().verify(truncated, vectors_now()).is_err());
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_consolegate"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn cli_verify_gives_each_vector_its_verdict() {
    let cert = fixture("vectors/engine-cert.pem");
    let cert = cert.to_str().unwrap();
    let expected = [
        ("01-valid-py-vnc-plain", 0),
        ("03-valid-py-webadmin-data", 0),
        ("18-valid-java-engine", 0),
        ("04-expired", 1),
        ("06-tampered-signature", 1),
        ("08-wrong-signer", 1),
        ("10-legacy-v1-sha1-only", 1),
    ];
    for (name, code) in expected {
        let file = fixture(&format!("vectors/{name}.ticket"));
        let (status, stdout, _) = cli(&[
            "ticket",
            "verify",
            "--cert",
            cert,
            "--now",
            "2027-01-01T00:00:00Z",
            file.to_str().unwrap(),
        ]);
        assert_eq!(status, code, "{name}: {stdout}");
        if code == 0 {
            assert!(
                stdout.starts_with("127.0.0.1:5900\nssl_target=false\n"),
                "{name}: {stdout}"
            );
        } else {
            assert!(stdout.starts_with("refused: "), "{name}: {stdout}");
        }
    }
    let (status, stdout, _) = cli(&[
        "ticket",
        "verify",
        "--cert",
        cert,
        "--now",
        "2027-01-01T00:00:00Z",
        "--accept-legacy-sha1",
        fixture("vectors/10-legacy-v1-sha1-only.ticket")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!((status, stdout.lines().next()), (0, Some("127.0.0.1:5900")));
}

#[test]
fn cli_sign_then_verify_from_stdin() {
    use std::io::Write;
    let key = fixture("pki/engine.key");
    let cert = fixture("pki/engine.pem");
    let (status, ticket, stderr) = cli(&[
        "ticket",
        "sign",
        "--key",
        key.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--host",
        "vnc.example",
        "--port",
        "5905",
        "--ssl-target",
        "--lifetime",
        "60",
        "--now",
        "2027-01-01T00:00:00Z",
    ]);
    assert_eq!(status, 0, "{stderr}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_consolegate"))
        .args([
            "ticket",
            "verify",
            "--cert",
            cert.to_str().unwrap(),
            "--now",
            "2027-01-01T00:00:30Z",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ticket.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with("vnc.example:5905\nssl_target=true\n")
    );

    // One minute later it has expired.
    let (status, stdout, _) = cli(&[
        "ticket",
        "verify",
        "--cert",
        cert.to_str().unwrap(),
        "--now",
        "2027-01-01T00:01:01Z",
        ticket.trim(),
    ]);
    assert_eq!(status, 1);
    assert!(stdout.contains("expired"), "{stdout}");
    // The ticket never shows in what the command prints.
    assert!(!stdout.contains(&ticket.trim()[..40]));

    // A key that does not match the certificate is refused at once.
    let other = fixture("pki/other-engine.key");
    let (status, _, stderr) = cli(&[
        "ticket",
        "sign",
        "--key",
        other.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--host",
        "h",
        "--port",
        "1",
    ]);
    assert_ne!(status, 0);
    assert!(stderr.contains("does not match"), "{stderr}");
}
