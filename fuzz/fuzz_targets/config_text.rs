//! The configuration parser: a file's text through the line syntax, then every key through
//! its typed parser and the cross-field checks, as `serve` and `check-config` run them.
//! Seeds: the configuration fixtures and the demo configuration.
//! Oracle: no panic; every error names a line of the text; and what `check-config` prints
//! reads back as the same configuration (secrets, which it masks, aside).
#![no_main]

use std::path::Path;

use consolegate::config::{is_secret, RawConfig, Settings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("fuzz.conf");
    let mut config = RawConfig::defaults();
    let errors = config.apply_text(text, file);
    // Upstream's universal newlines: `\n`, `\r\n` and a lone `\r` each end a line.
    let lines = text.matches(['\n', '\r']).count() + 1;
    for error in &errors {
        let origin = error
            .origin
            .as_ref()
            .expect("a syntax error names its line");
        assert!(origin.line >= 1 && origin.line <= lines, "{error}");
    }
    let _ = Settings::from_raw(&config);

    let printed = config.print_lines();
    let mut reread = RawConfig::defaults();
    let reread_errors = reread.apply_text(&printed.join("\n"), file);
    assert!(
        reread_errors.is_empty(),
        "printed configuration does not read back: {reread_errors:?}"
    );
    for line in &printed {
        let key = line.split('=').next().expect("KEY=value");
        if is_secret(key) {
            continue;
        }
        assert_eq!(
            config.get(key).map(|entry| &entry.value),
            reread.get(key).map(|entry| &entry.value),
            "{key} printed as {line:?}"
        );
    }
});
