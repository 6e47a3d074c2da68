//! The line syntax of configuration files (contract section 7), on text already read.
//!
//! Follows ovirt-engine's `configfile.py` (`ConfigFile.expandString`), which upstream
//! files are written for, including its refusal of a `$` that does not start `${NAME}`.
//! Unlike it, rejects what it silently misreads (blanks around `=`, an unterminated
//! quote, a trailing backslash) and warns about the text it drops after a blank.

use std::borrow::Cow;
use std::path::Path;

use super::{is_secret, ConfigError, ConfigWarning, Origin, RawConfig};

/// Why a line is not a valid assignment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum SyntaxError {
    #[error("expected KEY=value, with a key of ASCII letters, digits and `_`")]
    NotAnAssignment,
    #[error("blanks around `=` are not allowed: write KEY=value")]
    BlankAroundEquals,
    #[error("unterminated `\"` in the value")]
    UnterminatedQuote,
    #[error("`\\` at the end of the value escapes nothing: write `\\\\` for a backslash")]
    TrailingBackslash,
    #[error("`${{` without a closing `}}`")]
    UnclosedExpansion,
    #[error("`${{{name}}}` does not name a key: expected ASCII letters, digits and `_`")]
    BadExpansionName { name: String },
    #[error("`$` must start `${{NAME}}`: write `\\$` for a literal `$`")]
    BareDollar,
}

/// A value read from the text after `=`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Value<'a> {
    pub text: String,
    /// Text after the blank that ended the value: upstream drops it silently, we warn.
    pub ignored: Option<&'a str>,
}

/// Applies every assignment in `text`, the contents of `file`, to `config` in order.
/// A line in error is skipped and its error pushed to `errors`, so that one run
/// reports every mistake; later lines still see the assignments before it.
pub(super) fn apply_text(
    text: &str,
    file: &Path,
    config: &mut RawConfig,
    errors: &mut Vec<ConfigError>,
) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (index, line) in lines(text).enumerate() {
        let origin = Origin::new(file, index + 1);
        let (key, raw_value) = match split_line(line) {
            Ok(Some(assignment)) => assignment,
            Ok(None) => continue,
            Err(error) => {
                errors.push(ConfigError {
                    origin: Some(origin),
                    key: None,
                    message: error.to_string(),
                });
                continue;
            }
        };
        match parse_value(raw_value, config) {
            Ok(value) => {
                if let Some(ignored) = value.ignored {
                    config.warnings.push(ConfigWarning {
                        origin: origin.clone(),
                        key: Some(key.to_owned()),
                        message: ignored_text_message(key, ignored),
                    });
                }
                config.assign(key, value.text, origin);
            }
            Err(error) => errors.push(ConfigError {
                origin: Some(origin),
                key: Some(key.to_owned()),
                message: error.to_string(),
            }),
        }
    }
}

/// The lines of `text` as upstream's Python reads a file (universal newlines): `\n`, `\r\n`
/// and a lone `\r` each end a line. A stray `\r` kept in a value would silently change it,
/// e.g. `SSL_ONLY=yes\r` would not read as true.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some(end) = rest.find(['\r', '\n']) else {
            return Some(std::mem::take(&mut rest));
        };
        let line = &rest[..end];
        let terminator = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + terminator..];
        Some(line)
    })
}

/// The warning for text dropped after a value; it does not quote a secret's text.
fn ignored_text_message(key: &str, ignored: &str) -> String {
    const ADVICE: &str = "quote the value to keep blanks";
    if is_secret(key) {
        format!("text after the value is ignored; {ADVICE}")
    } else {
        format!("text after the value is ignored: {ignored:?}; {ADVICE}")
    }
}

/// Splits an assignment into key and unparsed value; `Ok(None)` for blank and comment lines.
///
/// Blanks may precede the key but not surround `=`, except that blanks followed by
/// nothing or a comment are an empty value, as upstream reads them.
pub(super) fn split_line(line: &str) -> Result<Option<(&str, &str)>, SyntaxError> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let key_len = line.find(|c| !is_key_char(c)).unwrap_or(line.len());
    let (key, rest) = line.split_at(key_len);
    if key.is_empty() {
        return Err(SyntaxError::NotAnAssignment);
    }
    if let Some(value) = rest.strip_prefix('=') {
        let after_blank = value.trim_start_matches(is_blank);
        if after_blank.len() < value.len()
            && !after_blank.is_empty()
            && !after_blank.starts_with('#')
        {
            return Err(SyntaxError::BlankAroundEquals);
        }
        return Ok(Some((key, value)));
    }
    if rest.starts_with(is_blank) && rest.trim_start_matches(is_blank).starts_with('=') {
        Err(SyntaxError::BlankAroundEquals)
    } else {
        Err(SyntaxError::NotAnAssignment)
    }
}

/// Reads the text after `=`: `\` makes the next character literal, `"` toggles quoting,
/// a blank or `#` outside quotes ends the value, and `${NAME}` expands to NAME's value
/// in `config` (empty when unset), inside quotes too.
pub(super) fn parse_value<'a>(raw: &'a str, config: &RawConfig) -> Result<Value<'a>, SyntaxError> {
    let mut text = String::new();
    let mut quoted = false;
    let mut ignored = None;
    let mut rest = raw;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        match c {
            '\\' => {
                let escaped = rest.chars().next().ok_or(SyntaxError::TrailingBackslash)?;
                text.push(escaped);
                rest = &rest[escaped.len_utf8()..];
            }
            '"' => quoted = !quoted,
            '$' => {
                let (name, after) = split_expansion(rest)?;
                if let Some(entry) = config.get(name) {
                    text.push_str(&entry.value);
                }
                rest = after;
            }
            _ if !quoted && is_blank(c) => {
                let tail = rest.trim();
                ignored = (!tail.is_empty() && !tail.starts_with('#')).then_some(tail);
                break;
            }
            '#' if !quoted => break,
            _ => text.push(c),
        }
    }
    if quoted {
        return Err(SyntaxError::UnterminatedQuote);
    }
    Ok(Value { text, ignored })
}

/// Splits `{NAME}rest`, the text after a `$`, into NAME and rest.
fn split_expansion(text: &str) -> Result<(&str, &str), SyntaxError> {
    let inner = text.strip_prefix('{').ok_or(SyntaxError::BareDollar)?;
    let end = inner.find('}').ok_or(SyntaxError::UnclosedExpansion)?;
    let name = &inner[..end];
    if name.is_empty() || !name.chars().all(is_key_char) {
        return Err(SyntaxError::BadExpansionName {
            name: name.to_owned(),
        });
    }
    Ok((name, &inner[end + 1..]))
}

/// `value` written so that [`parse_value`] reads it back unchanged (without expanding).
pub(super) fn quote_value(value: &str) -> Cow<'_, str> {
    let needs_escape = |c: char| matches!(c, '"' | '\\' | '$');
    if !value.contains(|c| needs_escape(c) || is_blank(c) || c == '#') {
        return Cow::Borrowed(value);
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        if needs_escape(c) {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    Cow::Owned(quoted)
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The characters that end an unquoted value.
fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses the value of a one-line assignment against the built-in defaults.
    fn value(line: &str) -> Result<String, SyntaxError> {
        value_in(line, &RawConfig::defaults())
    }

    fn value_in(line: &str, config: &RawConfig) -> Result<String, SyntaxError> {
        let (_, raw) = split_line(line)?.expect("an assignment");
        parse_value(raw, config).map(|value| value.text)
    }

    /// Applies `text` as file `f.conf` to the defaults.
    fn apply(text: &str) -> (RawConfig, Vec<ConfigError>) {
        let mut config = RawConfig::defaults();
        let mut errors = Vec::new();
        apply_text(text, Path::new("f.conf"), &mut config, &mut errors);
        (config, errors)
    }

    fn get<'a>(config: &'a RawConfig, key: &str) -> &'a str {
        &config.get(key).expect(key).value
    }

    #[test]
    fn blank_and_comment_lines_are_ignored() {
        for line in [
            "",
            "   ",
            "\t",
            "# comment",
            "   # indented comment",
            "#KEY=1",
        ] {
            assert_eq!(split_line(line), Ok(None), "{line:?}");
        }
    }

    #[test]
    fn assignment_splits_at_the_first_equals() {
        assert_eq!(split_line("KEY=a=b"), Ok(Some(("KEY", "a=b"))));
        assert_eq!(split_line("  KEY=1"), Ok(Some(("KEY", "1"))));
        assert_eq!(split_line("\tK_2=1"), Ok(Some(("K_2", "1"))));
        assert_eq!(split_line("KEY="), Ok(Some(("KEY", ""))));
    }

    #[test]
    fn bad_keys_are_errors() {
        for line in ["KEY x", "-K=1", "=1", "KEY", "KÉY=1", "K.Y=1", "\"KEY\"=1"] {
            assert_eq!(
                split_line(line),
                Err(SyntaxError::NotAnAssignment),
                "{line:?}"
            );
        }
    }

    #[test]
    fn blanks_around_equals_are_errors() {
        for line in ["KEY =x", "KEY\t=x", "KEY= x", "KEY=\tx", "KEY = x"] {
            assert_eq!(
                split_line(line),
                Err(SyntaxError::BlankAroundEquals),
                "{line:?}"
            );
        }
    }

    #[test]
    fn blanks_after_equals_then_nothing_or_a_comment_are_an_empty_value() {
        assert_eq!(value("KEY=   ").unwrap(), "");
        assert_eq!(value("KEY= # nothing here").unwrap(), "");
    }

    #[test]
    fn plain_values_are_taken_as_written() {
        assert_eq!(value("KEY=HIGH:!aNULL").unwrap(), "HIGH:!aNULL");
        assert_eq!(
            value("KEY=/etc/pki/ovirt-engine/certs/engine.cer").unwrap(),
            "/etc/pki/ovirt-engine/certs/engine.cer"
        );
        assert_eq!(value("KEY=a=b").unwrap(), "a=b");
        assert_eq!(value("KEY=").unwrap(), "");
    }

    #[test]
    fn quotes_are_removed_and_keep_blanks_and_hashes() {
        assert_eq!(value(r#"KEY="a b""#).unwrap(), "a b");
        assert_eq!(value(r#"KEY="a # b""#).unwrap(), "a # b");
        assert_eq!(value(r#"KEY=a"b c"d"#).unwrap(), "ab cd");
        assert_eq!(value(r#"KEY="""#).unwrap(), "");
        assert_eq!(value(r#"KEY="1h 30s" # comment"#).unwrap(), "1h 30s");
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        assert_eq!(value(r#"KEY="abc"#), Err(SyntaxError::UnterminatedQuote));
        assert_eq!(value(r#"KEY="a"b"c"#), Err(SyntaxError::UnterminatedQuote));
    }

    #[test]
    fn hash_or_blank_outside_quotes_ends_the_value() {
        assert_eq!(value("KEY=abc#comment").unwrap(), "abc");
        assert_eq!(value("KEY=abc # comment").unwrap(), "abc");
        assert_eq!(value("KEY=abc\t# comment").unwrap(), "abc");
        assert_eq!(value("KEY=abc   ").unwrap(), "abc");
        assert_eq!(value("KEY=#").unwrap(), "");
    }

    #[test]
    fn text_after_a_blank_is_ignored_and_reported() {
        let config = RawConfig::defaults();
        let parsed = parse_value("abc def ghi ", &config).unwrap();
        assert_eq!(parsed.text, "abc");
        assert_eq!(parsed.ignored, Some("def ghi"));
        assert_eq!(parse_value("abc # comment", &config).unwrap().ignored, None);
        assert_eq!(parse_value("abc#def", &config).unwrap().ignored, None);
        assert_eq!(parse_value("abc   ", &config).unwrap().ignored, None);
    }

    #[test]
    fn backslash_makes_the_next_character_literal() {
        assert_eq!(value(r"KEY=a\ b").unwrap(), "a b");
        assert_eq!(value(r"KEY=a\#b").unwrap(), "a#b");
        assert_eq!(value(r#"KEY=a\"b"#).unwrap(), "a\"b");
        assert_eq!(value(r"KEY=a\\b").unwrap(), r"a\b");
        assert_eq!(value(r"KEY=\n").unwrap(), "n");
        assert_eq!(value(r#"KEY="a\"b""#).unwrap(), "a\"b");
        assert_eq!(value(r#"KEY="a\\""#).unwrap(), r"a\");
        assert_eq!(value(r"KEY=\${PROXY_PORT}").unwrap(), "${PROXY_PORT}");
        assert_eq!(value(r#"KEY="\${PROXY_PORT}""#).unwrap(), "${PROXY_PORT}");
    }

    #[test]
    fn lone_trailing_backslash_is_an_error() {
        assert_eq!(value(r"KEY=abc\"), Err(SyntaxError::TrailingBackslash));
        assert_eq!(value(r#"KEY="abc\"#), Err(SyntaxError::TrailingBackslash));
    }

    #[test]
    fn expansion_uses_defaults_earlier_values_and_empty_when_unset() {
        let config = RawConfig::from_pairs(&[("PKI_DIR", "/etc/pki/ovirt-engine")]);
        assert_eq!(
            value_in("K=${PKI_DIR}/certs/a.cer", &config).unwrap(),
            "/etc/pki/ovirt-engine/certs/a.cer"
        );
        assert_eq!(
            value_in("K=port:${PROXY_PORT}", &config).unwrap(),
            "port:6100"
        );
        assert_eq!(value_in("K=a${UNSET}b", &config).unwrap(), "ab");
        assert_eq!(
            value_in("K=${CERT_FOR_DATA_VALIDATION}", &config).unwrap(),
            ""
        );
    }

    #[test]
    fn expansion_happens_inside_quotes_and_is_not_reparsed() {
        let config = RawConfig::from_pairs(&[("DIR", "a b#\"c")]);
        assert_eq!(
            value_in(r#"K="${DIR}/x y""#, &config).unwrap(),
            "a b#\"c/x y"
        );
        assert_eq!(value_in("K=${DIR}/x", &config).unwrap(), "a b#\"c/x");
    }

    #[test]
    fn malformed_expansions_are_errors() {
        assert_eq!(value("K=${PKI_DIR"), Err(SyntaxError::UnclosedExpansion));
        assert_eq!(
            value(r#"K="${PKI_DIR""#),
            Err(SyntaxError::UnclosedExpansion)
        );
        assert_eq!(
            value("K=${}"),
            Err(SyntaxError::BadExpansionName {
                name: String::new()
            })
        );
        assert_eq!(
            value("K=${PKI-DIR}"),
            Err(SyntaxError::BadExpansionName {
                name: "PKI-DIR".to_owned()
            })
        );
        assert_eq!(value("K=$PKI_DIR"), Err(SyntaxError::BareDollar));
        assert_eq!(value("K=a$"), Err(SyntaxError::BareDollar));
        assert_eq!(value(r"K=a\$b").unwrap(), "a$b");
    }

    #[test]
    fn non_ascii_values_survive() {
        assert_eq!(value("K=/srv/päth/ünïcode").unwrap(), "/srv/päth/ünïcode");
        assert_eq!(value("K=\"é ü\"").unwrap(), "é ü");
        assert_eq!(value(r"K=\é").unwrap(), "é");
    }

    #[test]
    fn quote_value_round_trips() {
        let config = RawConfig::defaults();
        for original in [
            "",
            "plain",
            "HIGH:!aNULL",
            "a b",
            "a#b",
            "q\"q",
            r"back\slash",
            "${X}",
            "tab\there",
            "é ü",
        ] {
            let quoted = quote_value(original);
            assert_eq!(
                parse_value(&quoted, &config).unwrap().text,
                original,
                "{quoted}"
            );
        }
        assert_eq!(quote_value("plain"), Cow::Borrowed("plain"));
    }

    #[test]
    fn a_file_assigns_in_order_and_later_values_win() {
        let (config, errors) = apply(
            "# comment\n\
             PKI_DIR=\"/etc/pki/ovirt-engine\"\n\
             \n\
             PROXY_PORT=6100\n\
             SSL_CERTIFICATE=${PKI_DIR}/certs/websocket-proxy.cer\n\
             PROXY_PORT=6200\n\
             PROXY_HOST=${PROXY_HOST}\n",
        );
        assert_eq!(errors, []);
        assert_eq!(
            get(&config, "SSL_CERTIFICATE"),
            "/etc/pki/ovirt-engine/certs/websocket-proxy.cer"
        );
        assert_eq!(get(&config, "PROXY_PORT"), "6200");
        assert_eq!(
            config.get("PROXY_PORT").unwrap().origin,
            Origin::new("f.conf", 6)
        );
        assert_eq!(get(&config, "PROXY_HOST"), "*");
    }

    #[test]
    fn unknown_keys_are_kept_and_warned_with_file_and_line() {
        let (config, errors) = apply("\nPKI_DIR=/pki\n");
        assert_eq!(errors, []);
        assert_eq!(get(&config, "PKI_DIR"), "/pki");
        let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(warnings, ["f.conf:2: PKI_DIR: unknown key, ignored"]);
    }

    #[test]
    fn ignored_text_is_warned_but_not_quoted_for_secrets() {
        let (config, _) = apply("SSL_CIPHERS=HIGH :!aNULL\nDB_PASSWORD=abc def\n");
        assert_eq!(get(&config, "SSL_CIPHERS"), "HIGH");
        let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            [
                "f.conf:1: SSL_CIPHERS: text after the value is ignored: \":!aNULL\"; quote the value to keep blanks",
                "f.conf:2: DB_PASSWORD: text after the value is ignored; quote the value to keep blanks",
                "f.conf:2: DB_PASSWORD: unknown key, ignored",
            ]
        );
    }

    #[test]
    fn every_bad_line_is_reported_and_skipped() {
        let (config, errors) = apply(
            "PROXY_PORT =1\n\
             PROXY_PORT=7000\n\
             SSL_KEY=\"/k\n\
             bad line\n\
             SSL_CERTIFICATE=${X\n",
        );
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            [
                "f.conf:1: blanks around `=` are not allowed: write KEY=value",
                "f.conf:3: SSL_KEY: unterminated `\"` in the value",
                "f.conf:4: expected KEY=value, with a key of ASCII letters, digits and `_`",
                "f.conf:5: SSL_CERTIFICATE: `${` without a closing `}`",
            ]
        );
        assert_eq!(get(&config, "PROXY_PORT"), "7000");
        assert_eq!(get(&config, "SSL_KEY"), "");
    }

    #[test]
    fn bom_and_crlf_are_accepted() {
        let (config, errors) = apply("\u{feff}PROXY_PORT=7000\r\n# c\r\nSSL_ONLY=True\r\n");
        assert_eq!(errors, []);
        assert_eq!(get(&config, "PROXY_PORT"), "7000");
        assert_eq!(get(&config, "SSL_ONLY"), "True");
        assert_eq!(config.get("SSL_ONLY").unwrap().origin.line, 3);
    }

    #[test]
    fn a_lone_carriage_return_ends_a_line_as_upstream_reads_it() {
        // Found by fuzzing (fuzz/corpus/config_text/regression-lone-cr): the `\r` was kept in
        // the value, so `yes\r` was not a boolean and SSL_ONLY read as false.
        let (config, errors) = apply("SSL_ONLY=yes\rPROXY_PORT=7000\r\r\nSSL_KEY=/k\r");
        assert_eq!(errors, []);
        assert_eq!(get(&config, "SSL_ONLY"), "yes");
        assert_eq!(get(&config, "PROXY_PORT"), "7000");
        assert_eq!(get(&config, "SSL_KEY"), "/k");
        assert_eq!(config.get("SSL_KEY").unwrap().origin.line, 4);
        assert_eq!(lines("a\n\nb\r\n").collect::<Vec<_>>(), ["a", "", "b"]);
        assert_eq!(lines("").count(), 0);
    }

    #[test]
    fn bom_is_accepted_before_a_comment_only() {
        let (_, errors) = apply("\u{feff}# header\nPROXY_PORT=1\n");
        assert_eq!(errors, []);
    }
}
