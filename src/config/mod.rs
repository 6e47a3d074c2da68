//! Configuration: upstream-style `KEY=value` files merged in order into typed [`Settings`].
//!
//! Three steps, as in the contract (`docs/ticket-format.md`, section 7):
//! [`load`] finds and reads the files and is the only code here that touches the file
//! system; `syntax` turns each line into an assignment on a [`RawConfig`], the merged
//! key-to-string map; [`Settings::from_raw`] parses each key once and checks the keys
//! together. Every step collects all problems before failing, so the operator sees
//! every mistake in one run. The caller reports warnings and refuses to start on
//! errors; the certificate files that [`Settings`] names are opened elsewhere.

mod files;
pub mod keys;
pub mod resolvers;
mod settings;
mod syntax;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

pub use files::{load, load_all};
pub use keys::{is_secret, KeyDef, KEYS};
pub use resolvers::{ReplayStoreKind, ResolverMode, ResolverSettings, SecretUrl};
pub use settings::{
    check_admin_token, parse_bool, parse_duration, parse_listen_host, parse_log_level,
    parse_message_size, parse_path, parse_port, parse_tls_version, InvalidValue, ListenHost,
    Secret, Settings, TlsVersion, MAX_DURATION,
};

/// What `check-config` prints instead of a secret value.
const MASK: &str = "********";

/// Where a value or a problem comes from: a file and line, or a whole source when
/// `line` is 0 (the built-in defaults, a file that is missing or unreadable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl Origin {
    /// The name shown for values no file has set.
    const BUILT_IN: &'static str = "built-in default";

    pub fn new(file: impl Into<PathBuf>, line: usize) -> Origin {
        Origin {
            file: file.into(),
            line,
        }
    }

    /// The origin of values no file has set.
    pub fn built_in() -> Origin {
        Origin::new(Origin::BUILT_IN, 0)
    }

    /// Whether no file set the value, so an error about it has no place to point at.
    pub fn is_built_in(&self) -> bool {
        self.line == 0 && self.file.as_os_str() == Origin::BUILT_IN
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}", self.file.display(), self.line)
        }
    }
}

/// A key's merged value and the assignment that won.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: String,
    pub origin: Origin,
}

/// Something the operator should fix that does not stop the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub origin: Origin,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_located(f, Some(&self.origin), self.key.as_deref(), &self.message)
    }
}

/// A configuration mistake that stops the proxy: where, which key, what is wrong and
/// what is expected, e.g. `10-setup.conf:1: PROXY_PORT: "61o0" is not a port number (0-65535)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Absent when the problem is not at one place, e.g. a required key no file sets.
    pub origin: Option<Origin>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_located(f, self.origin.as_ref(), self.key.as_deref(), &self.message)
    }
}

/// Writes `origin: KEY: message`, leaving out the parts that are absent.
fn write_located(
    f: &mut fmt::Formatter<'_>,
    origin: Option<&Origin>,
    key: Option<&str>,
    message: &str,
) -> fmt::Result {
    if let Some(origin) = origin {
        write!(f, "{origin}: ")?;
    }
    if let Some(key) = key {
        write!(f, "{key}: ")?;
    }
    f.write_str(message)
}

/// The merged key-to-string map: built-in defaults, then every assignment in file order,
/// later ones winning. Keys are canonical (an alias sets the key it stands for); unknown
/// keys are kept, since upstream files define helpers such as `PKI_DIR` for `${PKI_DIR}`.
#[derive(Clone)]
pub struct RawConfig {
    entries: BTreeMap<String, Entry>,
    /// Problems found while merging that do not stop the proxy, in file order.
    pub warnings: Vec<ConfigWarning>,
}

impl RawConfig {
    /// The built-in defaults alone, before any file is read.
    pub fn defaults() -> RawConfig {
        let entries = KEYS
            .iter()
            .map(|key| {
                let entry = Entry {
                    value: key.default.to_owned(),
                    origin: Origin::built_in(),
                };
                (key.name.to_owned(), entry)
            })
            .collect();
        RawConfig {
            entries,
            warnings: Vec::new(),
        }
    }

    /// The defaults overridden by `pairs`, taken literally (no file syntax), with origin
    /// `test`: lets tests build a configuration without files.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> RawConfig {
        let mut config = RawConfig::defaults();
        for (key, value) in pairs {
            config.assign(key, (*value).to_owned(), Origin::new("test", 0));
        }
        config
    }

    /// Applies `text`, the contents of configuration file `file`, on top of this
    /// configuration, as [`load`] does for each file it reads; returns every bad line's
    /// error (the good lines still apply). No file is opened: for tools and fuzzing.
    pub fn apply_text(&mut self, text: &str, file: &std::path::Path) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        syntax::apply_text(text, file, self, &mut errors);
        errors
    }

    /// The entry for `key` or the key an alias of it stands for.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(keys::canonical_key(key))
    }

    /// `KEY=value` lines for `check-config`: registered keys in [`KEYS`] order, then
    /// unknown keys by name. Secret values are masked; others are quoted where needed
    /// so the output reads back as the same configuration.
    pub fn print_lines(&self) -> Vec<String> {
        let known = KEYS.iter().map(|key| key.name);
        let unknown = self
            .entries
            .keys()
            .map(String::as_str)
            .filter(|name| keys::key_def(name).is_none());
        known
            .chain(unknown)
            .filter_map(|name| {
                let entry = self.entries.get(name)?;
                let shown = masked(name, &entry.value);
                let value = syntax::quote_value(&shown);
                Some(format!("{name}={value}"))
            })
            .collect()
    }

    /// Sets `key` (or the key it is an alias of) to `value`, warning when the key is unknown.
    fn assign(&mut self, key: &str, value: String, origin: Origin) {
        let key = keys::canonical_key(key);
        if keys::key_def(key).is_none() {
            self.warnings.push(ConfigWarning {
                origin: origin.clone(),
                key: Some(key.to_owned()),
                message: "unknown key, ignored".to_owned(),
            });
        }
        self.entries.insert(key.to_owned(), Entry { value, origin });
    }
}

/// `value` as it may be shown for key `name`: masked when secret, except that an empty
/// secret shows as empty, which tells the operator it is unset and leaks nothing; any other
/// value has the password of a URL in it masked.
fn masked<'a>(name: &str, value: &'a str) -> Cow<'a, str> {
    if is_secret(name) && !value.is_empty() {
        Cow::Borrowed(MASK)
    } else {
        mask_url_password(value)
    }
}

/// `scheme://user:password@host...` with the password replaced by the mask, so that a
/// `REDIS_URL` or `TOKEN_AUTHORITY_URL` can be printed and logged. Other text is unchanged.
pub fn mask_url_password(value: &str) -> Cow<'_, str> {
    let Some(scheme_end) = value.find("://") else {
        return Cow::Borrowed(value);
    };
    let authority_start = scheme_end + 3;
    let authority_len = value[authority_start..]
        .find(['/', '?', '#'])
        .unwrap_or(value.len() - authority_start);
    let authority = &value[authority_start..authority_start + authority_len];
    let Some(at) = authority.rfind('@') else {
        return Cow::Borrowed(value);
    };
    let Some(colon) = authority[..at].find(':') else {
        return Cow::Borrowed(value);
    };
    let password_start = authority_start + colon + 1;
    let password_end = authority_start + at;
    if password_start == password_end {
        return Cow::Borrowed(value);
    }
    Cow::Owned(format!(
        "{}{MASK}{}",
        &value[..password_start],
        &value[password_end..]
    ))
}

/// Masks secrets, so a configuration can be logged with `{:?}`.
impl fmt::Debug for RawConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: BTreeMap<&str, Entry> = self
            .entries
            .iter()
            .map(|(name, entry)| {
                let shown = Entry {
                    value: masked(name, &entry.value).into_owned(),
                    origin: entry.origin.clone(),
                };
                (name.as_str(), shown)
            })
            .collect();
        f.debug_struct("RawConfig")
            .field("entries", &entries)
            .field("warnings", &self.warnings)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_hold_every_key() {
        let config = RawConfig::defaults();
        for key in KEYS {
            let entry = config.get(key.name).expect(key.name);
            assert_eq!(entry.value, key.default);
            assert!(entry.origin.is_built_in());
        }
        assert!(config.warnings.is_empty());
    }

    #[test]
    fn alias_sets_the_key_and_is_not_unknown() {
        let config = RawConfig::from_pairs(&[("CERT_FOR_DATA_VALIDATION", "/a.cer")]);
        assert_eq!(
            config.get("CERT_FOR_DATA_VERIFICATION").unwrap().value,
            "/a.cer"
        );
        assert_eq!(
            config.get("CERT_FOR_DATA_VALIDATION").unwrap().value,
            "/a.cer"
        );
        assert!(config.warnings.is_empty());
        assert!(!config
            .print_lines()
            .iter()
            .any(|line| line.contains("VALIDATION")));
    }

    #[test]
    fn later_assignment_of_key_or_alias_wins() {
        let config = RawConfig::from_pairs(&[
            ("CERT_FOR_DATA_VALIDATION", "/a.cer"),
            ("CERT_FOR_DATA_VERIFICATION", "/b.cer"),
        ]);
        assert_eq!(
            config.get("CERT_FOR_DATA_VERIFICATION").unwrap().value,
            "/b.cer"
        );
        let config = RawConfig::from_pairs(&[
            ("CERT_FOR_DATA_VERIFICATION", "/b.cer"),
            ("CERT_FOR_DATA_VALIDATION", "/a.cer"),
        ]);
        assert_eq!(
            config.get("CERT_FOR_DATA_VERIFICATION").unwrap().value,
            "/a.cer"
        );
    }

    #[test]
    fn unknown_keys_are_kept_and_warned() {
        let config = RawConfig::from_pairs(&[("PKI_DIR", "/etc/pki/ovirt-engine")]);
        assert_eq!(
            config.get("PKI_DIR").unwrap().value,
            "/etc/pki/ovirt-engine"
        );
        assert_eq!(config.warnings.len(), 1);
        assert_eq!(
            config.warnings[0].to_string(),
            "test: PKI_DIR: unknown key, ignored"
        );
    }

    #[test]
    fn print_lines_follow_registry_order_then_unknown_keys_by_name() {
        let config = RawConfig::from_pairs(&[("ZED", "z"), ("ALPHA", "a"), ("PROXY_PORT", "7000")]);
        let lines = config.print_lines();
        let names: Vec<&str> = lines
            .iter()
            .map(|line| line.split('=').next().unwrap())
            .collect();
        let mut expected: Vec<&str> = KEYS.iter().map(|key| key.name).collect();
        expected.extend(["ALPHA", "ZED"]);
        assert_eq!(names, expected);
        assert!(lines.contains(&"PROXY_PORT=7000".to_owned()));
        assert!(lines.contains(&"SSL_CIPHERS=HIGH:!aNULL".to_owned()));
        assert!(lines.contains(&"SSL_KEY=".to_owned()));
    }

    #[test]
    fn print_lines_mask_secrets_but_not_their_absence() {
        let config = RawConfig::from_pairs(&[("DB_PASSWORD", "hunter2"), ("API_TOKEN", "")]);
        let lines = config.print_lines();
        assert!(lines.contains(&"DB_PASSWORD=********".to_owned()));
        assert!(lines.contains(&"API_TOKEN=".to_owned()));
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn url_passwords_are_masked_whatever_the_key() {
        for (value, shown) in [
            (
                "redis://:hunter2@10.0.0.9:6379/0",
                "redis://:********@10.0.0.9:6379/0",
            ),
            (
                "https://proxy:p@ss@auth/check?x=1",
                "https://proxy:********@auth/check?x=1",
            ),
            ("http://user@auth/", "http://user@auth/"),
            ("http://auth:8080/a@b", "http://auth:8080/a@b"),
            ("/etc/tokens", "/etc/tokens"),
        ] {
            assert_eq!(mask_url_password(value), shown, "{value}");
        }
        let config = RawConfig::from_pairs(&[("REDIS_URL", "redis://:hunter2@h:1")]);
        assert!(config
            .print_lines()
            .contains(&"REDIS_URL=redis://:********@h:1".to_owned()));
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn print_lines_quote_values_that_need_it() {
        let config = RawConfig::from_pairs(&[("NOTE", "a b#\"c\\$")]);
        assert!(config
            .print_lines()
            .contains(&r#"NOTE="a b#\"c\\\$""#.to_owned()));
    }

    #[test]
    fn errors_and_warnings_name_place_key_and_problem() {
        let error = ConfigError {
            origin: Some(Origin::new("/etc/x.conf", 3)),
            key: Some("PROXY_PORT".to_owned()),
            message: "\"61o0\" is not a port number (0-65535)".to_owned(),
        };
        assert_eq!(
            error.to_string(),
            "/etc/x.conf:3: PROXY_PORT: \"61o0\" is not a port number (0-65535)"
        );
        let error = ConfigError {
            origin: None,
            key: None,
            message: "bad".to_owned(),
        };
        assert_eq!(error.to_string(), "bad");
        let warning = ConfigWarning {
            origin: Origin::new("/etc/missing.conf", 0),
            key: None,
            message: "not found; skipped".to_owned(),
        };
        assert_eq!(warning.to_string(), "/etc/missing.conf: not found; skipped");
        assert_eq!(Origin::built_in().to_string(), "built-in default");
    }
}
