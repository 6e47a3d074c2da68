//! Tokens as websockify takes them from a request: the `token` query parameter
//! (`/websockify?token=abc`, what noVNC sends), else the whole path (`/abc`). Shared by the
//! token file and token authority resolvers, which differ only in where they look it up.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use crate::ticket;

/// Longest token accepted; real ones are a few dozen characters.
pub const MAX_TOKEN_LEN: usize = 1024;

/// Why a request's token cannot be used. Never contains the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("request carries no token (no token= query parameter and an empty path)")]
    Missing,
    #[error("token is {len} bytes, more than the {max} allowed")]
    TooLong { len: usize, max: usize },
    #[error("token is not valid UTF-8 after percent-decoding")]
    NotUtf8,
    #[error("unknown token: not in {known_by}")]
    Unknown { known_by: String },
}

impl TokenError {
    /// A closed set of labels, for metrics and log filters.
    pub fn kind(&self) -> &'static str {
        match self {
            TokenError::Missing => "no_token",
            TokenError::TooLong { .. } | TokenError::NotUtf8 => "malformed_token",
            TokenError::Unknown { .. } => "unknown_token",
        }
    }
}

/// The request's token: the first non-empty `token` query parameter, form-decoded as
/// websockify's `parse_qs` does (`%XX` and `+` for space, a trailing newline dropped); if
/// there is none, the path without its leading `/`, percent-decoded.
///
/// # Errors
/// No token at all, one that is too long, or one that is not UTF-8.
pub fn from_request<'a>(path: &'a str, query: Option<&'a str>) -> Result<Cow<'a, str>, TokenError> {
    let token = match query.map(query_token).transpose()?.flatten() {
        Some(token) => Cow::Owned(token),
        None => percent_decode_str(path.trim_start_matches('/'))
            .decode_utf8()
            .map_err(|_| TokenError::NotUtf8)?,
    };
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong {
            len: token.len(),
            max: MAX_TOKEN_LEN,
        });
    }
    Ok(token)
}

/// The first non-empty `token` parameter of `query`, if any.
fn query_token(query: &str) -> Result<Option<String>, TokenError> {
    let form_decode = |text: &str| {
        percent_decode_str(&text.replace('+', " "))
            .decode_utf8()
            .map(Cow::into_owned)
    };
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if form_decode(name).ok().as_deref() != Some("token") {
            continue;
        }
        if value.len() > 3 * MAX_TOKEN_LEN {
            return Err(TokenError::TooLong {
                len: value.len(),
                max: MAX_TOKEN_LEN,
            });
        }
        let value = form_decode(value).map_err(|_| TokenError::NotUtf8)?;
        let value = value.trim_end_matches('\n');
        if !value.is_empty() {
            return Ok(Some(value.to_owned()));
        }
    }
    Ok(None)
}

/// The log name of the request's token (see [`ticket::fingerprint`]), or `none`.
pub fn fingerprint(path: &str, query: Option<&str>) -> String {
    from_request(path, query)
        .map_or_else(|_| "none".to_owned(), |token| ticket::fingerprint(&token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_token_wins_over_the_path() {
        assert_eq!(
            from_request("websockify", Some("token=abc")).unwrap(),
            "abc"
        );
        assert_eq!(
            from_request("", Some("a=1&token=abc&token=def")).unwrap(),
            "abc"
        );
        assert_eq!(from_request("path-token", None).unwrap(), "path-token");
        assert_eq!(
            from_request("path-token", Some("other=1")).unwrap(),
            "path-token"
        );
    }

    #[test]
    fn query_tokens_are_form_decoded_like_parse_qs() {
        assert_eq!(from_request("", Some("token=a%2Fb%3D")).unwrap(), "a/b=");
        assert_eq!(from_request("", Some("token=a+b")).unwrap(), "a b");
        assert_eq!(from_request("", Some("token=abc%0A")).unwrap(), "abc");
    }

    #[test]
    fn empty_query_token_falls_back_to_the_path() {
        assert_eq!(from_request("xyz", Some("token=")).unwrap(), "xyz");
        assert_eq!(from_request("xyz", Some("token=%0A")).unwrap(), "xyz");
        assert_eq!(from_request("", Some("token=")), Err(TokenError::Missing));
        assert_eq!(from_request("", None), Err(TokenError::Missing));
    }

    #[test]
    fn path_tokens_are_percent_decoded() {
        assert_eq!(from_request("a%20b", None).unwrap(), "a b");
        assert_eq!(from_request("a+b", None).unwrap(), "a+b");
        assert_eq!(from_request("%FF", None), Err(TokenError::NotUtf8));
    }

    #[test]
    fn invalid_utf8_is_refused_but_an_encoded_replacement_character_is_not() {
        assert_eq!(
            from_request("", Some("token=%FF")),
            Err(TokenError::NotUtf8)
        );
        assert_eq!(
            from_request("", Some("token=%EF%BF%BD")).unwrap(),
            "\u{FFFD}"
        );
    }

    #[test]
    fn long_tokens_are_refused() {
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            from_request(&long, None),
            Err(TokenError::TooLong {
                len: MAX_TOKEN_LEN + 1,
                max: MAX_TOKEN_LEN
            })
        );
        assert!(from_request(&long[1..], None).is_ok());
    }

    #[test]
    fn fingerprints_name_the_token_not_the_path() {
        assert_eq!(
            fingerprint("websockify", Some("token=abc")),
            ticket::fingerprint("abc")
        );
        assert_eq!(fingerprint("abc", None), ticket::fingerprint("abc"));
        assert_eq!(fingerprint("", None), "none");
    }
}
