//! oVirt console tickets: decode, verify the engine's signature and validity window, and
//! issue new ones the way a Java engine does (`docs/ticket-format.md` is the contract).
//!
//! Pure code: no sockets, no clock. The caller passes `now`, so tests pin time and the
//! server passes the wall clock. [`crate::target`] wraps the verifier as one way of
//! choosing a console target.

use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::Padding;
use openssl::sign::{RsaPssSaltlen, Signer, Verifier};
use openssl::x509::X509;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{Map, Value};

use crate::target::Target;

/// Largest ticket accepted; an RSA-4096 ticket is about 4 KB, so this is generous while
/// keeping garbage cheap to refuse.
pub const MAX_TICKET_LEN: usize = 16 * 1024;

/// The fields that must all be signed: with no separator between signed values, leaving
/// any one out lets a holder of an old ticket shift boundaries and forge a new one
/// (contract section 3).
const REQUIRED_SIGNED: [&str; 4] = ["salt", "data", "validFrom", "validTo"];

/// Field order of a real Java engine's `signedFields`.
const ENGINE_SIGNED_FIELDS: &str = "salt,data,validFrom,validTo";

const TIME_FORMAT: &str = "%Y%m%d%H%M%S";

/// Standard and URL-safe alphabets, padding optional: accepting both is harmless because the
/// signature still decides, while unknown characters are refused, never skipped.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Why a ticket was refused. The `Display` text is precise and goes to the log (it never
/// contains the ticket or its signature); browsers get only [`TicketError::kind`]-level
/// information.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("ticket is empty")]
    Empty,
    #[error("ticket is {len} bytes, more than the {max} allowed")]
    TooLong { len: usize, max: usize },
    #[error("ticket is not base64")]
    NotBase64,
    #[error("ticket is not a JSON object: {0}")]
    NotJson(String),
    #[error("ticket field {field} is missing")]
    MissingField { field: &'static str },
    #[error("ticket field {field} is not a string")]
    NotAString { field: &'static str },
    #[error("ticket field {field} is malformed: {reason}")]
    MalformedField { field: &'static str, reason: String },
    #[error("unknown digest: ticket has no v2_signature")]
    UnknownDigest,
    #[error("unknown digest: ticket has only a legacy SHA-1 signature (TICKET_ACCEPT_LEGACY_SHA1 is off)")]
    LegacyRefused,
    #[error("signedFields must list salt, data, validFrom and validTo{digest} exactly once each and nothing else; it lists {listed:?}", digest = if *.with_digest { " and digest" } else { "" })]
    SignedFieldsInvalid {
        listed: Vec<String>,
        with_digest: bool,
    },
    #[error("signature does not verify against any configured engine certificate")]
    BadSignature,
    #[error("ticket not valid yet: valid from {valid_from}, now {now}")]
    NotYetValid {
        valid_from: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    #[error("ticket expired: valid to {valid_to}, now {now}")]
    Expired {
        valid_to: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    #[error("ticket payload is invalid: {0}")]
    BadPayload(String),
    #[error("ticket asks for a websocket target (path), which is not supported")]
    UnsupportedWebSocketTarget,
}

impl TicketError {
    /// A closed set of short labels, for metrics and the browser-facing refusal.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Empty | Self::TooLong { .. } | Self::NotBase64 | Self::NotJson(_) => "malformed",
            Self::MissingField { .. } | Self::NotAString { .. } | Self::MalformedField { .. } => {
                "malformed"
            }
            Self::UnknownDigest | Self::LegacyRefused => "unsupported_signature",
            Self::SignedFieldsInvalid { .. } | Self::BadSignature => "bad_signature",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::Expired { .. } => "expired",
            Self::BadPayload(_) | Self::UnsupportedWebSocketTarget => "bad_payload",
        }
    }
}

/// Errors loading the engine certificate or signing key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no certificate found in the PEM data")]
    NoCertificate,
    #[error("cannot parse PEM: {0}")]
    Pem(String),
    #[error("certificate key is not RSA (oVirt tickets are RSA-PSS)")]
    NotRsa,
    #[error("signing key does not match the certificate")]
    KeyMismatch,
}

/// A ticket that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedTicket {
    pub target: Target,
    pub valid_from: DateTime<Utc>,
    pub valid_to: DateTime<Utc>,
    /// Names this ticket without revealing it, e.g. in a replay store.
    pub id: TicketId,
}

/// SHA-256 over the signed values `salt`, `data`, `validFrom` and `validTo`, each
/// length-prefixed, in that fixed order.
///
/// Not a hash of the ticket text or of its signature bytes: the same signed content can be
/// sent in several encodings (base64 alphabets and padding, JSON escapes and key order, the
/// `signedFields` order) and, from 4.4.6-4.4.10 engines, with two signatures (`signature`
/// and `v2_signature`). Every such variant is the same ticket and must get the same id, or a
/// single-use ticket could be replayed in another dress. The random `salt` makes it unique
/// per issued ticket; without the signature it cannot be turned back into a usable ticket.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TicketId(pub [u8; 32]);

impl TicketId {
    fn of(salt: &str, data: &str, valid_from: &str, valid_to: &str) -> TicketId {
        let mut hasher = openssl::sha::Sha256::new();
        hasher.update(b"consolegate ticket id v1");
        for value in [salt, data, valid_from, valid_to] {
            hasher.update(&(value.len() as u64).to_be_bytes());
            hasher.update(value.as_bytes());
        }
        TicketId(hasher.finish())
    }

    /// Lowercase hex, for store keys.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Shows a prefix only: enough to match log lines, never the whole key.
impl fmt::Debug for TicketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TicketId({}..)", &self.to_hex()[..12])
    }
}

/// Verifies tickets against one or more engine certificates (several during key rotation).
pub struct TicketVerifier {
    keys: Vec<PKey<Public>>,
    accept_legacy_sha1: bool,
    clock_skew: TimeDelta,
}

impl fmt::Debug for TicketVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketVerifier")
            .field("keys", &self.keys.len())
            .field("accept_legacy_sha1", &self.accept_legacy_sha1)
            .field("clock_skew", &self.clock_skew)
            .finish()
    }
}

impl TicketVerifier {
    /// Builds a verifier from PEM holding one or more certificates; every one's key is trusted.
    ///
    /// # Errors
    /// The PEM holds no certificate, or a certificate whose key is not RSA.
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let certs = X509::stack_from_pem(pem).map_err(|e| KeyError::Pem(e.to_string()))?;
        if certs.is_empty() {
            return Err(KeyError::NoCertificate);
        }
        let keys = certs
            .iter()
            .map(|cert| {
                let key = cert
                    .public_key()
                    .map_err(|e| KeyError::Pem(e.to_string()))?;
                key.rsa().map_err(|_| KeyError::NotRsa)?;
                Ok(key)
            })
            .collect::<Result<Vec<_>, KeyError>>()?;
        Ok(Self {
            keys,
            accept_legacy_sha1: false,
            clock_skew: TimeDelta::zero(),
        })
    }

    /// Accept tickets from engines up to 4.4.10 that carry only a SHA-1 signature.
    pub fn accept_legacy_sha1(mut self, yes: bool) -> Self {
        self.accept_legacy_sha1 = yes;
        self
    }

    /// Tolerance applied to both ends of the validity window (upstream has none).
    pub fn clock_skew(mut self, skew: std::time::Duration) -> Self {
        self.clock_skew = TimeDelta::from_std(skew).unwrap_or(TimeDelta::MAX);
        self
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Decodes and verifies `ticket` as it appears in the URL (no percent-decoding).
    ///
    /// # Errors
    /// Any [`TicketError`]; checks run from the cheapest to the most expensive.
    pub fn verify(&self, ticket: &str, now: DateTime<Utc>) -> Result<VerifiedTicket, TicketError> {
        let fields = decode_envelope(ticket)?;
        let salt = fields.string("salt")?;
        check_salt(salt)?;
        let data = fields.string("data")?;
        let payload = decode_data(data)?;
        let valid_from = parse_time("validFrom", fields.string("validFrom")?)?;
        let valid_to = parse_time("validTo", fields.string("validTo")?)?;
        let digest = fields.optional_string("digest")?;
        if let Some(digest) = digest {
            if digest != "sha1" {
                return Err(TicketError::MalformedField {
                    field: "digest",
                    reason: "only \"sha1\" is defined".into(),
                });
            }
        }
        let signed_fields = check_signed_fields(fields.string("signedFields")?, digest.is_some())?;
        let message = signed_fields
            .iter()
            .map(|name| fields.string(name))
            .collect::<Result<String, _>>()?;

        match fields.optional_string("v2_signature")? {
            Some(signature) => {
                let signature = decode_signature("v2_signature", signature)?;
                if !self
                    .keys
                    .iter()
                    .any(|key| verify_pss(key, message.as_bytes(), &signature))
                {
                    return Err(TicketError::BadSignature);
                }
            }
            None => {
                let legacy = fields.optional_string("signature")?;
                match (legacy, digest) {
                    (Some(signature), Some(_)) if self.accept_legacy_sha1 => {
                        let signature = decode_signature("signature", signature)?;
                        if !self
                            .keys
                            .iter()
                            .any(|k| verify_sha1(k, message.as_bytes(), &signature))
                        {
                            return Err(TicketError::BadSignature);
                        }
                    }
                    (Some(_), Some(_)) => return Err(TicketError::LegacyRefused),
                    _ => return Err(TicketError::UnknownDigest),
                }
            }
        }

        // Checked: a skew that reaches past the calendar's ends tolerates everything rather
        // than overflowing (`DateTime + TimeDelta` panics).
        if now
            .checked_add_signed(self.clock_skew)
            .is_some_and(|latest| latest < valid_from)
        {
            return Err(TicketError::NotYetValid { valid_from, now });
        }
        if now
            .checked_sub_signed(self.clock_skew)
            .is_some_and(|earliest| earliest > valid_to)
        {
            return Err(TicketError::Expired { valid_to, now });
        }
        let target = parse_payload(&payload)?;
        let id = TicketId::of(
            salt,
            data,
            fields.string("validFrom")?,
            fields.string("validTo")?,
        );
        Ok(VerifiedTicket {
            target,
            valid_from,
            valid_to,
            id,
        })
    }

    /// The last instant at which `ticket` still verifies: its `validTo` plus the clock skew
    /// allowed. A replay store must remember a ticket at least until then.
    pub fn accepted_until(&self, ticket: &VerifiedTicket) -> DateTime<Utc> {
        ticket
            .valid_to
            .checked_add_signed(self.clock_skew)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// Reads a ticket's `data` field, as it stands in the ticket (percent-encoded JSON), into
/// its console target: the payload half of [`TicketVerifier::verify`], which runs the same
/// two steps (the format before the signature check, the target after it). For tools and
/// fuzzing; it proves nothing about who issued the payload.
///
/// # Errors
/// [`TicketError::MalformedField`] for `data` that is not percent-encoded JSON,
/// [`TicketError::BadPayload`] or [`TicketError::UnsupportedWebSocketTarget`] for a payload
/// that names no usable target.
pub fn parse_data(data: &str) -> Result<Target, TicketError> {
    parse_payload(&decode_data(data)?)
}

/// A short, non-reversible name for a ticket in logs: a prefix of its SHA-256.
pub fn fingerprint(ticket: &str) -> String {
    let hash = openssl::sha::sha256(ticket.as_bytes());
    hash[..6].iter().map(|b| format!("{b:02x}")).collect()
}

struct Fields(Map<String, Value>);

impl Fields {
    fn optional_string(&self, field: &'static str) -> Result<Option<&str>, TicketError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(TicketError::NotAString { field }),
        }
    }

    fn string(&self, field: &str) -> Result<&str, TicketError> {
        // `field` comes from REQUIRED_SIGNED or the validated signedFields list.
        let field = static_name(field);
        self.optional_string(field)?
            .ok_or(TicketError::MissingField { field })
    }
}

fn static_name(field: &str) -> &'static str {
    [
        "salt",
        "data",
        "validFrom",
        "validTo",
        "digest",
        "signedFields",
    ]
    .into_iter()
    .find(|known| *known == field)
    .unwrap_or("unknown")
}

fn decode_envelope(ticket: &str) -> Result<Fields, TicketError> {
    if ticket.is_empty() {
        return Err(TicketError::Empty);
    }
    if ticket.len() > MAX_TICKET_LEN {
        return Err(TicketError::TooLong {
            len: ticket.len(),
            max: MAX_TICKET_LEN,
        });
    }
    let json = STANDARD_LENIENT
        .decode(ticket)
        .or_else(|_| URL_SAFE_LENIENT.decode(ticket))
        .map_err(|_| TicketError::NotBase64)?;
    match serde_json::from_slice::<Value>(&json) {
        Ok(Value::Object(map)) => Ok(Fields(map)),
        Ok(_) => Err(TicketError::NotJson("top level is not an object".into())),
        Err(e) => Err(TicketError::NotJson(e.to_string())),
    }
}

/// `salt` is base64 of 8 bytes: exactly 12 characters.
fn check_salt(salt: &str) -> Result<(), TicketError> {
    let ok = salt.len() == 12 && STANDARD.decode(salt).map(|b| b.len() == 8).unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(TicketError::MalformedField {
            field: "salt",
            reason: "expected base64 of 8 bytes (12 characters)".into(),
        })
    }
}

fn parse_time(field: &'static str, value: &str) -> Result<DateTime<Utc>, TicketError> {
    let malformed = |reason: &str| TicketError::MalformedField {
        field,
        reason: reason.into(),
    };
    if value.len() != 14 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("expected 14 digits, yyyyMMddHHmmss"));
    }
    NaiveDateTime::parse_from_str(value, TIME_FORMAT)
        .map(|t| t.and_utc())
        .map_err(|_| malformed("not a valid date and time"))
}

fn decode_signature(field: &'static str, value: &str) -> Result<Vec<u8>, TicketError> {
    STANDARD_LENIENT
        .decode(value)
        .map_err(|_| TicketError::MalformedField {
            field,
            reason: "not base64".into(),
        })
}

/// Checks `signedFields` and returns the names in signing order.
fn check_signed_fields(listed: &str, with_digest: bool) -> Result<Vec<&str>, TicketError> {
    let names: Vec<&str> = listed.split(',').map(str::trim).collect();
    let expected = REQUIRED_SIGNED.len() + usize::from(with_digest);
    let required = REQUIRED_SIGNED
        .iter()
        .chain(with_digest.then_some(&"digest"));
    let complete = names.len() == expected
        && required
            .into_iter()
            .all(|r| names.iter().filter(|n| *n == r).count() == 1);
    if complete {
        Ok(names)
    } else {
        // Bounded for the log line: the list comes from the ticket, which anyone can write.
        Err(TicketError::SignedFieldsInvalid {
            listed: names
                .into_iter()
                .take(8)
                .map(|n| n.chars().take(40).collect())
                .collect(),
            with_digest,
        })
    }
}

/// The PSS salt length a Java engine uses: the maximum for the key,
/// `ceil((modBits-1)/8) - hLen - 2`. Verification uses exactly this, never auto-detection.
fn max_pss_salt_len(key_bits: u32) -> i32 {
    let em_len = (key_bits as i32 - 1 + 7) / 8;
    em_len - 32 - 2
}

fn verify_pss(key: &PKey<Public>, message: &[u8], signature: &[u8]) -> bool {
    let run = || -> Result<bool, openssl::error::ErrorStack> {
        let mut verifier = Verifier::new(MessageDigest::sha256(), key)?;
        verifier.set_rsa_padding(Padding::PKCS1_PSS)?;
        verifier.set_rsa_mgf1_md(MessageDigest::sha256())?;
        verifier.set_rsa_pss_saltlen(RsaPssSaltlen::custom(max_pss_salt_len(key.bits())))?;
        verifier.update(message)?;
        verifier.verify(signature)
    };
    run().unwrap_or(false)
}

fn verify_sha1(key: &PKey<Public>, message: &[u8], signature: &[u8]) -> bool {
    let run = || -> Result<bool, openssl::error::ErrorStack> {
        let mut verifier = Verifier::new(MessageDigest::sha1(), key)?;
        verifier.set_rsa_padding(Padding::PKCS1)?;
        verifier.update(message)?;
        verifier.verify(signature)
    };
    run().unwrap_or(false)
}

/// Percent-decodes `data` (`%XX` only; `+` stays `+`) and parses the JSON object inside.
/// Done before the signature check: a well-formed `data` pins the boundaries between the
/// concatenated signed values.
fn decode_data(data: &str) -> Result<Map<String, Value>, TicketError> {
    let malformed = |reason: String| TicketError::MalformedField {
        field: "data",
        reason,
    };
    let bytes = data.as_bytes();
    for (i, _) in data.match_indices('%') {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
        if hex.is_none() {
            return Err(malformed(format!("bad percent escape at offset {i}")));
        }
    }
    let decoded = percent_decode_str(data)
        .decode_utf8()
        .map_err(|_| malformed("not UTF-8 after percent-decoding".into()))?;
    match serde_json::from_str::<Value>(&decoded) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(malformed("not a JSON object".into())),
        Err(e) => Err(malformed(format!("not JSON: {e}"))),
    }
}

/// The console target inside a verified payload.
fn parse_payload(payload: &Map<String, Value>) -> Result<Target, TicketError> {
    let bad = |reason: &str| TicketError::BadPayload(reason.into());
    let host = match payload.get("host") {
        Some(Value::String(h)) => h.as_str(),
        Some(_) => return Err(bad("host is not a string")),
        None => return Err(bad("host is missing")),
    };
    let port = match payload.get("port") {
        Some(Value::String(p)) => p.as_str(),
        Some(_) => return Err(bad("port is not a string")),
        None => return Err(bad("port is missing")),
    };
    let ssl_target = match payload.get("ssl_target") {
        Some(Value::Bool(b)) => *b,
        None | Some(Value::Null) => false,
        Some(_) => return Err(bad("ssl_target is not a boolean")),
    };
    for optional in ["path", "token"] {
        match payload.get(optional) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(Value::String(_)) if optional == "path" => {
                return Err(TicketError::UnsupportedWebSocketTarget)
            }
            Some(Value::String(_)) => {}
            Some(_) => {
                return Err(TicketError::BadPayload(format!(
                    "{optional} is not a string"
                )))
            }
        }
    }
    let port = parse_port(port).ok_or_else(|| bad("port is not a number from 1 to 65535"))?;
    let host = parse_host(host).ok_or_else(|| bad("host is not an IP address or a host name"))?;
    Ok(Target {
        host,
        port,
        ssl_target,
    })
}

/// A port number from 1 to 65535, digits only.
pub(crate) fn parse_port(port: &str) -> Option<u16> {
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse::<u16>().ok().filter(|p| *p != 0)
}

/// An IP literal (IPv6 without brackets) or an RFC 1123 host name.
pub(crate) fn parse_host(host: &str) -> Option<String> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Some(host.to_owned());
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let name = host.strip_suffix('.').unwrap_or(host);
    (name.len() <= 253 && name.split('.').all(label_ok)).then(|| host.to_owned())
}

/// Issues tickets exactly as a Java engine does, for tests, demos and non-oVirt integrators.
pub struct TicketSigner {
    key: PKey<Private>,
    certificate_pem: String,
}

/// Java's `URLEncoder`: alphanumerics and `.-*_` stay, everything else is `%XX`
/// (there are no spaces in the JSON it encodes).
const FORM_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'-')
    .remove(b'*')
    .remove(b'_');

impl TicketSigner {
    /// # Errors
    /// Unparseable PEM, a non-RSA key, or a key that does not belong to the certificate.
    pub fn from_pem(key_pem: &[u8], cert_pem: &[u8]) -> Result<Self, KeyError> {
        let key = PKey::private_key_from_pem(key_pem).map_err(|e| KeyError::Pem(e.to_string()))?;
        key.rsa().map_err(|_| KeyError::NotRsa)?;
        let cert = X509::from_pem(cert_pem).map_err(|e| KeyError::Pem(e.to_string()))?;
        let cert_key = cert
            .public_key()
            .map_err(|e| KeyError::Pem(e.to_string()))?;
        if !key.public_eq(&cert_key) {
            return Err(KeyError::KeyMismatch);
        }
        let der = cert.to_der().map_err(|e| KeyError::Pem(e.to_string()))?;
        Ok(Self {
            key,
            certificate_pem: java_pem(&der),
        })
    }

    /// Signs a ticket for `target`, valid from `valid_from` for `lifetime`.
    pub fn sign(&self, target: &Target, valid_from: DateTime<Utc>, lifetime: TimeDelta) -> String {
        let mut salt = [0u8; 8];
        openssl::rand::rand_bytes(&mut salt).expect("the system random generator works");
        let salt = STANDARD.encode(salt);
        let payload = format!(
            r#"{{"port":{},"host":{},"ssl_target":{}}}"#,
            Value::from(target.port.to_string()),
            Value::from(target.host.as_str()),
            target.ssl_target
        );
        let data = utf8_percent_encode(&payload, FORM_ENCODE).to_string();
        let valid_from_s = valid_from.format(TIME_FORMAT).to_string();
        let valid_to_s = (valid_from + lifetime).format(TIME_FORMAT).to_string();
        let message = [salt.as_str(), &data, &valid_from_s, &valid_to_s].concat();
        let signature = STANDARD.encode(self.sign_pss(message.as_bytes()));
        // Field order and compact JSON as the engine's encoder writes them.
        let json = format!(
            r#"{{"salt":{},"data":{},"certificate":{},"signedFields":{},"validFrom":{},"v2_signature":{},"validTo":{}}}"#,
            Value::from(salt),
            Value::from(data),
            Value::from(self.certificate_pem.as_str()),
            Value::from(ENGINE_SIGNED_FIELDS),
            Value::from(valid_from_s),
            Value::from(signature),
            Value::from(valid_to_s),
        );
        STANDARD.encode(json)
    }

    fn sign_pss(&self, message: &[u8]) -> Vec<u8> {
        let run = || -> Result<Vec<u8>, openssl::error::ErrorStack> {
            let mut signer = Signer::new(MessageDigest::sha256(), &self.key)?;
            signer.set_rsa_padding(Padding::PKCS1_PSS)?;
            signer.set_rsa_mgf1_md(MessageDigest::sha256())?;
            signer.set_rsa_pss_saltlen(RsaPssSaltlen::custom(max_pss_salt_len(self.key.bits())))?;
            signer.update(message)?;
            signer.sign_to_vec()
        };
        run().expect("RSA-PSS signing with a validated RSA key succeeds")
    }
}

/// PEM as Java's MIME encoder writes it: 76-character lines separated by CRLF.
fn java_pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\r\n-----END CERTIFICATE-----\n",
        lines.join("\r\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> String {
        let map: Map<String, Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        STANDARD.encode(Value::Object(map).to_string())
    }

    fn verifier() -> TicketVerifier {
        TicketVerifier::from_pem(include_bytes!("../tests/fixtures/vectors/engine-cert.pem"))
            .unwrap()
    }

    fn now() -> DateTime<Utc> {
        "2027-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn salt_length_matches_the_engine() {
        assert_eq!(max_pss_salt_len(2048), 222);
        assert_eq!(max_pss_salt_len(4096), 478);
        assert_eq!(max_pss_salt_len(3072), 350);
    }

    #[test]
    fn garbage_is_refused_before_any_crypto() {
        let v = verifier();
        assert_eq!(v.verify("", now()), Err(TicketError::Empty));
        assert_eq!(v.verify("!!!", now()), Err(TicketError::NotBase64));
        assert!(matches!(
            v.verify(&STANDARD.encode("[1]"), now()),
            Err(TicketError::NotJson(_))
        ));
        let long = "A".repeat(MAX_TICKET_LEN + 4);
        assert!(matches!(
            v.verify(&long, now()),
            Err(TicketError::TooLong { .. })
        ));
    }

    #[test]
    fn field_formats_are_strict() {
        let v = verifier();
        let base = [
            ("salt", "888wUMgRETA="),
            ("data", "%7B%7D"),
            ("validFrom", "20261121154616"),
            ("validTo", "20271121154616"),
            ("signedFields", "salt,data,validFrom,validTo"),
            ("v2_signature", "AAAA"),
        ];
        let with = |key: &str, value: &str| {
            let mut pairs = base.to_vec();
            pairs.retain(|(k, _)| *k != key);
            pairs.push((key, value));
            fields(&pairs)
        };
        let err = |t: String| v.verify(&t, now()).unwrap_err();
        assert!(matches!(
            err(with("salt", "888wUMgRETA=888")),
            TicketError::MalformedField { field: "salt", .. }
        ));
        assert!(matches!(
            err(with("validFrom", "2026112115461")),
            TicketError::MalformedField {
                field: "validFrom",
                ..
            }
        ));
        assert!(matches!(
            err(with("validTo", "20271321154616")),
            TicketError::MalformedField {
                field: "validTo",
                ..
            }
        ));
        assert!(matches!(
            err(with("data", "%7B%ZZ")),
            TicketError::MalformedField { field: "data", .. }
        ));
        assert!(matches!(
            err(with("data", "%7B")),
            TicketError::MalformedField { field: "data", .. }
        ));
        // The boundary-shifting forgery of contract section 3: only salt listed.
        assert!(matches!(
            err(with("signedFields", "salt")),
            TicketError::SignedFieldsInvalid { .. }
        ));
        assert!(matches!(
            err(with("signedFields", "salt,data,validFrom,validTo,salt")),
            TicketError::SignedFieldsInvalid { .. }
        ));
        assert!(matches!(
            err(with("signedFields", "salt,data,validFrom,certificate")),
            TicketError::SignedFieldsInvalid { .. }
        ));
        assert_eq!(err(with("v2_signature", "AAAA")), TicketError::BadSignature);
        let mut no_sig = base.to_vec();
        no_sig.retain(|(k, _)| *k != "v2_signature");
        assert_eq!(err(fields(&no_sig)), TicketError::UnknownDigest);
    }

    #[test]
    fn signed_fields_may_have_blanks_and_any_order() {
        assert_eq!(
            check_signed_fields(" salt , validFrom,validTo,data", false).unwrap(),
            vec!["salt", "validFrom", "validTo", "data"]
        );
        assert!(check_signed_fields("salt,digest,validFrom,validTo,data", true).is_ok());
        assert!(check_signed_fields("salt,validFrom,validTo,data", true).is_err());
    }

    #[test]
    fn ticket_id_is_the_same_for_every_encoding_of_a_ticket() {
        let v = verifier();
        let original =
            include_str!("../tests/fixtures/vectors/01-valid-py-vnc-plain.ticket").trim();
        let id = v.verify(original, now()).unwrap().id;
        // Same fields, other key order and whitespace, URL-safe base64 without padding.
        let json: Map<String, Value> =
            serde_json::from_slice(&STANDARD.decode(original).unwrap()).unwrap();
        let reordered: Vec<(String, Value)> = json.into_iter().rev().collect();
        let text = format!(
            "{{ {} }}",
            reordered
                .iter()
                .map(|(k, v)| format!("{}: {v}", Value::from(k.as_str())))
                .collect::<Vec<_>>()
                .join(" , ")
        );
        let recoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        assert_ne!(recoded, original);
        assert_eq!(v.verify(&recoded, now()).unwrap().id, id);
        let other =
            include_str!("../tests/fixtures/vectors/03-valid-py-webadmin-data.ticket").trim();
        assert_ne!(v.verify(other, now()).unwrap().id, id);
        assert_eq!(format!("{id:?}").len(), "TicketId(..)".len() + 12);
    }

    /// A 4.4.6-4.4.10 engine signs the same fields (with `digest`) twice: the ticket must have
    /// one id whichever signature is checked, or dropping `v2_signature` would replay it.
    #[test]
    fn ticket_id_ignores_which_signature_verified() {
        let key =
            PKey::private_key_from_pem(include_bytes!("../tests/fixtures/pki/engine.key")).unwrap();
        let v = TicketVerifier::from_pem(include_bytes!("../tests/fixtures/pki/engine.pem"))
            .unwrap()
            .accept_legacy_sha1(true);
        let (salt, data) = (
            "888wUMgRETA=",
            "%7B%22host%22%3A%22h%22%2C%22port%22%3A%225900%22%7D",
        );
        let (from, to) = ("20261121154616", "20271121154616");
        let message = [salt, data, from, to, "sha1"].concat();
        let mut pss = Signer::new(MessageDigest::sha256(), &key).unwrap();
        pss.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
        pss.set_rsa_mgf1_md(MessageDigest::sha256()).unwrap();
        pss.set_rsa_pss_saltlen(RsaPssSaltlen::custom(max_pss_salt_len(key.bits())))
            .unwrap();
        pss.update(message.as_bytes()).unwrap();
        let v2 = STANDARD.encode(pss.sign_to_vec().unwrap());
        let mut sha1 = Signer::new(MessageDigest::sha1(), &key).unwrap();
        sha1.set_rsa_padding(Padding::PKCS1).unwrap();
        sha1.update(message.as_bytes()).unwrap();
        let legacy = STANDARD.encode(sha1.sign_to_vec().unwrap());
        let base = [
            ("salt", salt),
            ("data", data),
            ("validFrom", from),
            ("validTo", to),
            ("digest", "sha1"),
            ("signedFields", "salt,data,validFrom,validTo,digest"),
        ];
        let both = fields(&[&base[..], &[("v2_signature", &v2), ("signature", &legacy)]].concat());
        let legacy_only = fields(&[&base[..], &[("signature", legacy.as_str())]].concat());
        let id = v.verify(&both, now()).unwrap().id;
        assert_eq!(v.verify(&legacy_only, now()).unwrap().id, id);
        assert_eq!(
            v.accepted_until(&v.verify(&both, now()).unwrap()),
            "2027-11-21T15:46:16Z".parse::<DateTime<Utc>>().unwrap()
        );
        let skewed = v.clock_skew(std::time::Duration::from_secs(30));
        assert_eq!(
            skewed.accepted_until(&skewed.verify(&both, now()).unwrap()),
            "2027-11-21T15:46:46Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn payloads() {
        let parse = |json: &str| {
            parse_payload(
                serde_json::from_str::<Value>(json)
                    .unwrap()
                    .as_object()
                    .unwrap(),
            )
        };
        let t = parse(r#"{"host":"::1","port":"5901","ssl_target":true,"path":null,"token":""}"#)
            .unwrap();
        assert_eq!(
            t,
            Target {
                host: "::1".into(),
                port: 5901,
                ssl_target: true
            }
        );
        assert!(parse(r#"{"host":"vm.example","port":"5900"}"#).is_ok());
        assert!(parse(r#"{"host":"10.0.0.5","port":5900,"ssl_target":false}"#).is_err());
        assert!(parse(r#"{"host":"10.0.0.5","port":"0"}"#).is_err());
        assert!(parse(r#"{"host":"10.0.0.5","port":"65536"}"#).is_err());
        assert!(parse(r#"{"host":"10.0.0.5","port":"+5900"}"#).is_err());
        assert!(parse(r#"{"host":"a b","port":"5900"}"#).is_err());
        assert!(parse(r#"{"host":"10.0.0.5","port":"5900","ssl_target":"false"}"#).is_err());
        assert_eq!(
            parse(r#"{"host":"10.0.0.5","port":"5900","path":"/apis/kubevirt"}"#),
            Err(TicketError::UnsupportedWebSocketTarget)
        );
    }

    #[test]
    fn plus_is_not_a_space_in_data() {
        let map = decode_data("%7B%22host%22%3A%22a+b%22%7D").unwrap();
        assert_eq!(map["host"], "a+b");
    }

    #[test]
    fn java_pem_shape() {
        let pem = java_pem(&[0u8; 100]);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(pem.ends_with("\r\n-----END CERTIFICATE-----\n"));
        assert!(pem.lines().all(|l| l.trim_end_matches('\r').len() <= 76));
    }

    #[test]
    fn any_clock_skew_is_tolerated_without_overflow() {
        // `now + TimeDelta::MAX` used to panic inside verify.
        let ticket = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/vectors/04-expired.ticket"
        ))
        .unwrap();
        let forever = verifier().clock_skew(std::time::Duration::MAX);
        for now in [now(), DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC] {
            assert!(forever.verify(ticket.trim(), now).is_ok(), "{now}");
        }
        assert!(matches!(
            verifier().verify(ticket.trim(), DateTime::<Utc>::MAX_UTC),
            Err(TicketError::Expired { .. })
        ));
    }

    #[test]
    fn fingerprint_is_short_and_stable() {
        assert_eq!(fingerprint("abc"), "ba7816bf8f01");
    }
}
