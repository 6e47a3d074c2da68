//! Loading configuration files from disk: which files count, in what order, and how
//! problems are reported. Each scenario is a directory under `tests/fixtures/config/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use consolegate::config::{self, ConfigError, ListenHost, Origin, RawConfig, Settings, TlsVersion};

/// The fixture directory of the configuration scenarios.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

/// A path inside the fixtures.
fn fixture(path: &str) -> PathBuf {
    fixtures().join(path)
}

/// `items` displayed, with the fixture directory left out of paths for readability.
fn shown<T: ToString>(items: &[T]) -> Vec<String> {
    let root = format!("{}/", fixtures().display());
    items
        .iter()
        .map(|item| item.to_string().replace(&root, ""))
        .collect()
}

fn load(paths: &[&str]) -> Result<RawConfig, Vec<ConfigError>> {
    let paths: Vec<PathBuf> = paths.iter().map(|path| fixture(path)).collect();
    config::load(&paths)
}

fn value<'a>(raw: &'a RawConfig, key: &str) -> &'a str {
    &raw.get(key).unwrap_or_else(|| panic!("{key} is set")).value
}

#[test]
fn layered_files_apply_in_name_order_and_later_values_win() {
    let raw = load(&["layered/main.conf"]).unwrap();
    assert_eq!(value(&raw, "PROXY_PORT"), "6300");
    assert_eq!(
        raw.get("PROXY_PORT").unwrap().origin,
        Origin::new(fixture("layered/main.conf.d/20-override.conf"), 2)
    );
    assert_eq!(value(&raw, "LOG_LEVEL"), "warn");
    assert_eq!(
        value(&raw, "SSL_CERTIFICATE"),
        "/etc/pki/ovirt-engine/certs/websocket-proxy.cer"
    );
    assert_eq!(value(&raw, "SSL_CIPHERS"), "HIGH:!aNULL:!SHA1");
    assert_eq!(
        shown(&raw.warnings),
        ["layered/main.conf.d/10-setup.conf:1: PKI_DIR: unknown key, ignored"]
    );

    let (settings, warnings) = Settings::from_raw(&raw).unwrap();
    assert_eq!(warnings, []);
    assert_eq!(settings.proxy_port, 6300);
    assert_eq!(settings.handshake_timeout, Duration::from_secs(90));
    assert_eq!(settings.log_level, tracing::Level::WARN);
    assert!(settings.ssl_only);
}

#[test]
fn only_visible_regular_conf_files_count_in_a_drop_in_directory() {
    // ignored.txt, .hidden.conf and the directory 15-directory.conf/ each set a key of
    // their own.
    let raw = load(&["layered/main.conf"]).unwrap();
    for key in [
        "READ_IGNORED_TXT",
        "READ_HIDDEN_CONF",
        "READ_DIRECTORY_CONF",
    ] {
        assert!(raw.get(key).is_none(), "{key}");
    }
}

#[test]
fn engine_setup_deployment_loads_packaged_defaults_then_setup_file() {
    // As deployed: the packaged file, then the /etc file (absent) and its .d folder,
    // where engine-setup writes 10-setup.conf.
    let raw = load(&[
        "engine/share/ovirt-websocket-proxy.conf",
        "engine/etc/ovirt-websocket-proxy.conf",
    ])
    .unwrap();
    assert_eq!(
        shown(&raw.warnings),
        [
            "engine/share/ovirt-websocket-proxy.conf:4: PACKAGE_NAME: unknown key, ignored",
            "engine/share/ovirt-websocket-proxy.conf:5: PACKAGE_VERSION: unknown key, ignored",
            "engine/share/ovirt-websocket-proxy.conf:6: PACKAGE_DISPLAY_VERSION: unknown key, ignored",
            "engine/share/ovirt-websocket-proxy.conf:20: ENGINE_USR: unknown key, ignored",
            "engine/etc/ovirt-websocket-proxy.conf: not found; skipped",
            "engine/etc/ovirt-websocket-proxy.conf.d/10-setup.conf:1: PKI_DIR: unknown key, ignored",
        ]
    );

    let (settings, warnings) = Settings::from_raw(&raw).unwrap();
    assert_eq!(warnings, []);
    assert_eq!(settings.proxy_host, ListenHost::Any);
    assert_eq!(settings.proxy_port, 6100);
    assert!(!settings.source_is_ipv6);
    assert!(settings.ssl_only);
    assert_eq!(
        settings.ssl_certificate.as_deref(),
        Some(Path::new("/etc/pki/ovirt-engine/certs/websocket-proxy.cer"))
    );
    assert_eq!(
        settings.ssl_key.as_deref(),
        Some(Path::new(
            "/etc/pki/ovirt-engine/keys/websocket-proxy.key.nopass"
        ))
    );
    assert_eq!(
        settings.cert_for_data_verification.as_deref(),
        Some(Path::new("/etc/pki/ovirt-engine/certs/engine.cer"))
    );
    assert_eq!(settings.ssl_min_version, TlsVersion::Tls12);
    assert!(!settings.trace_enable);
    assert_eq!(settings.trace_file, None);
}

#[test]
fn syntax_errors_in_every_file_are_all_reported() {
    let errors = load(&["errors"]).unwrap_err();
    assert_eq!(
        shown(&errors),
        [
            "errors/10-first.conf:2: blanks around `=` are not allowed: write KEY=value",
            "errors/10-first.conf:3: SSL_KEY: unterminated `\"` in the value",
            "errors/10-first.conf:5: expected KEY=value, with a key of ASCII letters, digits and `_`",
            "errors/20-second.conf:1: SSL_CERTIFICATE: `${` without a closing `}`",
            "errors/20-second.conf:3: CERT_FOR_DATA_VERIFICATION: `\\` at the end of the value escapes nothing: write `\\\\` for a backslash",
            "errors/20-second.conf:4: blanks around `=` are not allowed: write KEY=value",
            "errors/20-second.conf:5: TRACE_FILE: `${TRACE-DIR}` does not name a key: expected ASCII letters, digits and `_`",
            "errors/30-latin1.conf:2: not valid UTF-8",
        ]
    );
    let with_keys: Vec<&str> = errors
        .iter()
        .filter_map(|error| error.key.as_deref())
        .collect();
    assert_eq!(
        with_keys,
        [
            "SSL_KEY",
            "SSL_CERTIFICATE",
            "CERT_FOR_DATA_VERIFICATION",
            "TRACE_FILE"
        ]
    );
}

#[test]
fn invalid_values_are_all_reported_with_file_line_and_key() {
    let raw = load(&["invalid-values/main.conf"]).unwrap();
    let errors = Settings::from_raw(&raw).unwrap_err();
    assert_eq!(
        shown(&errors),
        [
            "invalid-values/main.conf:2: PROXY_HOST: \"not_a_host\" is not an IP address or host name (or * for every address)",
            "invalid-values/main.conf:3: PROXY_PORT: \"61o0\" is not a port number (0-65535)",
            "invalid-values/main.conf:4: SSL_MIN_VERSION: \"SSLv3\" is not a TLS version (TLSv1.2 or TLSv1.3)",
            "invalid-values/main.conf.d/10-setup.conf:2: CERT_FOR_DATA_VERIFICATION: is not set: the engine certificate is needed to verify tickets",
            "invalid-values/main.conf:6: TICKET_CLOCK_SKEW: \"soon\" is not a duration (whole seconds, or e.g. 500ms, 2m, \"1h 30s\")",
            "invalid-values/main.conf:7: HANDSHAKE_TIMEOUT: \"10x\" is not a duration (whole seconds, or e.g. 500ms, 2m, \"1h 30s\")",
            "invalid-values/main.conf:8: WS_MAX_MESSAGE_SIZE: \"512\" is not a size in bytes of at least 1024",
            "invalid-values/main.conf:9: LOG_LEVEL: \"loud\" is not a log level (error, warn, info, debug or trace)",
            "invalid-values/main.conf.d/10-setup.conf:1: SSL_KEY: is set but SSL_CERTIFICATE is empty: a key needs its certificate",
        ]
    );
}

#[test]
fn alias_sets_the_engine_certificate_and_the_later_assignment_wins() {
    let raw = load(&["alias/main.conf"]).unwrap();
    assert_eq!(
        value(&raw, "CERT_FOR_DATA_VERIFICATION"),
        "/etc/pki/ovirt-engine/certs/rotated-engine.cer"
    );
    assert_eq!(
        value(&raw, "BACKUP"),
        "/etc/pki/ovirt-engine/certs/engine.cer"
    );
    assert_eq!(
        shown(&raw.warnings),
        ["alias/main.conf.d/20-validation.conf:2: BACKUP: unknown key, ignored"]
    );
    let lines = raw.print_lines();
    assert!(lines.contains(
        &"CERT_FOR_DATA_VERIFICATION=/etc/pki/ovirt-engine/certs/rotated-engine.cer".to_owned()
    ));
    assert!(!lines
        .iter()
        .any(|line| line.starts_with("CERT_FOR_DATA_VALIDATION")));
}

#[test]
fn unknown_keys_are_kept_for_expansion_warned_and_printed_last_with_secrets_masked() {
    let raw = load(&["unknown/main.conf"]).unwrap();
    assert_eq!(
        value(&raw, "CERT_FOR_DATA_VERIFICATION"),
        "/etc/pki/ovirt-engine/certs/engine.cer"
    );
    assert_eq!(value(&raw, "DB_PASSWORD"), "s3cret value");
    assert_eq!(
        shown(&raw.warnings),
        [
            "unknown/main.conf:1: PACKAGE_NAME: unknown key, ignored",
            "unknown/main.conf:2: ENGINE_USR: unknown key, ignored",
            "unknown/main.conf:3: PKI_DIR: unknown key, ignored",
            "unknown/main.conf:5: SSL_CERTIFCATE: unknown key, ignored",
            "unknown/main.conf:6: DB_PASSWORD: unknown key, ignored",
        ]
    );
    let lines = raw.print_lines();
    let unknown_start = config::KEYS.len();
    assert_eq!(
        lines[unknown_start..],
        [
            "DB_PASSWORD=********",
            "ENGINE_USR=/usr/share/ovirt-engine",
            "PACKAGE_NAME=ovirt-engine",
            "PKI_DIR=/etc/pki/ovirt-engine",
            "SSL_CERTIFCATE=/typo/in/the/key.cer",
        ]
    );
    assert!(!format!("{raw:?}").contains("s3cret"));
    assert!(Settings::from_raw(&raw).is_ok());
}

#[test]
fn missing_file_is_skipped_but_its_drop_in_directory_is_read() {
    let raw = load(&["missing/absent.conf"]).unwrap();
    assert_eq!(
        shown(&raw.warnings),
        ["missing/absent.conf: not found; skipped"]
    );
    assert_eq!(value(&raw, "PROXY_PORT"), "6101");
    let (settings, _) = Settings::from_raw(&raw).unwrap();
    assert_eq!(settings.proxy_port, 6101);
}

#[test]
fn missing_files_alone_leave_the_defaults() {
    let raw = load(&["missing/nowhere.conf", "missing/elsewhere.conf"]).unwrap();
    assert_eq!(
        shown(&raw.warnings),
        [
            "missing/nowhere.conf: not found; skipped",
            "missing/elsewhere.conf: not found; skipped"
        ]
    );
    assert_eq!(raw.print_lines(), RawConfig::defaults().print_lines());
}

#[test]
fn directory_argument_reads_its_conf_files_in_name_order() {
    let raw = load(&["directory"]).unwrap();
    assert_eq!(value(&raw, "PROXY_PORT"), "6202");
    assert_eq!(
        raw.get("PROXY_PORT").unwrap().origin,
        Origin::new(fixture("directory/20-second.conf"), 1)
    );
    assert_eq!(value(&raw, "LOG_LEVEL"), "debug");
    // README and 10-first.conf.rpmsave would set READ_README and READ_RPMSAVE.
    assert_eq!(raw.warnings, []);
}

#[test]
fn later_paths_win_over_earlier_ones() {
    let raw = load(&["directory", "missing/absent.conf"]).unwrap();
    assert_eq!(value(&raw, "PROXY_PORT"), "6101");
    assert_eq!(value(&raw, "LOG_LEVEL"), "debug");
}

#[test]
fn bom_and_crlf_from_windows_editors_are_accepted() {
    let raw = load(&["encoding/windows.conf"]).unwrap();
    assert_eq!(value(&raw, "PROXY_PORT"), "6400");
    assert_eq!(
        value(&raw, "CERT_FOR_DATA_VERIFICATION"),
        r"C:\pki\engine.cer"
    );
    assert_eq!(raw.get("SSL_ONLY").unwrap().origin.line, 4);
    let (settings, _) = Settings::from_raw(&raw).unwrap();
    assert!(settings.ssl_only);
    assert_eq!(
        settings.ssl_certificate.as_deref(),
        Some(Path::new("/pki/proxy.cer"))
    );
}

#[test]
fn printed_configuration_reads_back_the_same() {
    let raw = load(&["layered/main.conf"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let printed = dir.path().join("printed.conf");
    std::fs::write(&printed, raw.print_lines().join("\n")).unwrap();
    let reread = config::load(&[printed]).unwrap();
    assert_eq!(reread.print_lines(), raw.print_lines());
}
