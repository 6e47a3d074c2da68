//! Static files on the proxy port (`WEB_ROOT`): the console page and the noVNC modules it
//! loads, so that a console URL needs nothing but the proxy. A request is either a WebSocket
//! upgrade (its path is a ticket, [`crate::session`]) or a file request, decided by its
//! `Upgrade` header in [`crate::server`].
//!
//! GET and HEAD only; no directory listings; a path is decoded, refused if any segment is
//! `..`, `.` or hidden, and the file it names is resolved (symbolic links included) and
//! served only if it lies inside the root. Responses carry a content type from a fixed table,
//! `nosniff`, and validators (`ETag`, `Last-Modified`) with `Cache-Control: no-cache`, so a
//! browser revalidates cheaply and picks up a new console page after an upgrade.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::header::{
    HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, LAST_MODIFIED, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;
use tracing::{debug, warn};

use crate::ticket;

/// The file a directory path (`/`, `/dir/`) stands for.
const INDEX: &str = "index.html";

/// Largest file served: the console page and noVNC's modules are far smaller, and a file
/// is read whole into memory.
const MAX_FILE_SIZE: u64 = 32 * 1024 * 1024;

/// For HTML pages: scripts, styles and connections from this origin only (`'self'` covers
/// `wss://` to the same host), inline styles for noVNC's canvas, data: URLs for its cursor,
/// and no framing by other sites.
const PAGE_POLICY: &str = "default-src 'self'; img-src 'self' data: blob:; \
     style-src 'self' 'unsafe-inline'; frame-ancestors 'self'; base-uri 'none'; form-action 'none'";

#[derive(Debug, thiserror::Error)]
pub enum WebRootError {
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path} is not a directory")]
    NotDirectory { path: PathBuf },
}

/// Why a request path names no file, before any file is looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathRefusal {
    #[error("path is not valid UTF-8 once percent-decoded")]
    NotUtf8,
    #[error("path has a {0:?} segment")]
    DotSegment(String),
    #[error("path names a hidden file or directory")]
    Hidden,
    #[error("path contains a NUL, a backslash or an encoded slash")]
    BadCharacter,
}

/// The directory whose files are served, resolved once at start-up.
#[derive(Debug, Clone)]
pub struct WebRoot {
    root: PathBuf,
}

impl WebRoot {
    /// Resolves `path` (symbolic links included) and checks it is a directory.
    ///
    /// # Errors
    /// It does not exist, cannot be read, or is not a directory.
    pub fn open(path: &Path) -> Result<WebRoot, WebRootError> {
        let root = std::fs::canonicalize(path).map_err(|source| WebRootError::Open {
            path: path.into(),
            source,
        })?;
        if !root.is_dir() {
            return Err(WebRootError::NotDirectory { path: path.into() });
        }
        Ok(WebRoot { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Answers one non-upgrade request: the file, `304`, or a short refusal.
    pub async fn serve<B>(&self, request: &Request<B>, request_id: &str) -> Response<Full<Bytes>> {
        let head = match *request.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => {
                debug!(request_id, method = %request.method(), "static files: method not allowed");
                let mut response = refusal(StatusCode::METHOD_NOT_ALLOWED, request_id);
                response
                    .headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
                return response;
            }
        };
        let path = request.uri().path();
        let relative = match parse_request_path(path) {
            Ok(relative) => relative,
            Err(reason) => {
                warn!(request_id, path = %ticket::fingerprint(path), %reason, "static files: refused");
                return refusal(StatusCode::NOT_FOUND, request_id);
            }
        };
        let file = match self.find(&relative).await {
            Ok(Some(file)) => file,
            Ok(None) => {
                // The path may be a ticket pasted without its `#`: log only its fingerprint.
                debug!(request_id, path = %ticket::fingerprint(path), "static files: not found");
                return refusal(StatusCode::NOT_FOUND, request_id);
            }
            Err(e) => {
                warn!(request_id, path = %ticket::fingerprint(path), error = %e, "static files: cannot read");
                return refusal(StatusCode::INTERNAL_SERVER_ERROR, request_id);
            }
        };
        let etag = etag(file.len, file.modified);
        let not_modified = request
            .headers()
            .get(IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|tag| tag.trim() == etag || tag.trim() == "*")
            });
        let mut response = if not_modified {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response
        } else {
            let body = if head {
                Bytes::new()
            } else {
                match tokio::fs::read(&file.path).await {
                    Ok(body) => Bytes::from(body),
                    Err(e) => {
                        warn!(request_id, file = %file.path.display(), error = %e, "static files: cannot read");
                        return refusal(StatusCode::INTERNAL_SERVER_ERROR, request_id);
                    }
                }
            };
            let mut response = Response::new(Full::new(body));
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(file.len));
            response
        };
        let content_type = content_type(&file.path);
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Ok(value) = HeaderValue::from_str(&etag) {
            headers.insert(ETAG, value);
        }
        if let Ok(value) = HeaderValue::from_str(&http_date(file.modified)) {
            headers.insert(LAST_MODIFIED, value);
        }
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        if content_type.starts_with("text/html") {
            headers.insert(
                CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_POLICY),
            );
        }
        debug!(request_id, file = %file.path.display(), status = response.status().as_u16(), "static file");
        response
    }

    /// The regular file `relative` names inside the root, following symbolic links only
    /// while they stay inside; a directory stands for its `index.html`.
    ///
    /// # Errors
    /// Reading metadata failed for another reason than the file not existing.
    async fn find(&self, relative: &Path) -> io::Result<Option<Found>> {
        let mut candidate = self.root.join(relative);
        for _ in 0..2 {
            let resolved = match tokio::fs::canonicalize(&candidate).await {
                Ok(resolved) => resolved,
                Err(e) if is_missing(&e) => return Ok(None),
                Err(e) => return Err(e),
            };
            if !resolved.starts_with(&self.root) {
                warn!(
                    "static files: {} leads outside WEB_ROOT (to {}); refused",
                    candidate.display(),
                    resolved.display()
                );
                return Ok(None);
            }
            let metadata = tokio::fs::metadata(&resolved).await?;
            if metadata.is_dir() {
                candidate = resolved.join(INDEX);
                continue;
            }
            if !metadata.is_file() || metadata.len() > MAX_FILE_SIZE {
                return Ok(None);
            }
            return Ok(Some(Found {
                path: resolved,
                len: metadata.len(),
                modified: metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            }));
        }
        Ok(None)
    }
}

struct Found {
    path: PathBuf,
    len: u64,
    modified: SystemTime,
}

/// Errors that mean "no such file" for a request path: missing, through a regular file
/// (`/console.html/x`, ENOTDIR), a name too long (a ticket pasted as a path, ENAMETOOLONG),
/// or a symbolic-link loop (ELOOP).
fn is_missing(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::NotFound || matches!(error.raw_os_error(), Some(20 | 36 | 40))
}

/// The file path a request path names, relative to the root, or why it names none.
/// Pure: the caller still resolves symbolic links and checks the result stays inside.
pub fn parse_request_path(path: &str) -> Result<PathBuf, PathRefusal> {
    let mut relative = PathBuf::new();
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        if raw.contains("%2f") || raw.contains("%2F") || raw.contains("%5c") || raw.contains("%5C")
        {
            return Err(PathRefusal::BadCharacter);
        }
        let segment = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| PathRefusal::NotUtf8)?;
        if segment == "." || segment == ".." {
            return Err(PathRefusal::DotSegment(segment.into_owned()));
        }
        if segment.starts_with('.') {
            return Err(PathRefusal::Hidden);
        }
        if segment.contains(['\0', '\\', '/']) {
            return Err(PathRefusal::BadCharacter);
        }
        relative.push(segment.as_ref());
    }
    Ok(relative)
}

/// The content type for a file, by extension; unknown types are served as opaque bytes, and
/// `nosniff` keeps browsers from guessing otherwise.
pub fn content_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("ico") => "image/x-icon",
        Some("webp") => "image/webp",
        Some("woff") => "font/woff",
        Some("woff2") => "font/woff2",
        Some("ttf") => "font/ttf",
        Some("oga" | "ogg") => "audio/ogg",
        Some("mp3") => "audio/mpeg",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// A weak validator from size and modification time: cheap, and it changes whenever a
/// rebuild replaces the file.
fn etag(len: u64, modified: SystemTime) -> String {
    let nanos = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("W/\"{len:x}-{nanos:x}\"")
}

/// RFC 9110 IMF-fixdate.
fn http_date(time: SystemTime) -> String {
    DateTime::<Utc>::from(time)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

fn refusal(status: StatusCode, request_id: &str) -> Response<Full<Bytes>> {
    let text = match status {
        StatusCode::NOT_FOUND => "not found",
        StatusCode::METHOD_NOT_ALLOWED => "only GET and HEAD are served here",
        _ => "cannot serve this file",
    };
    let mut response = Response::new(Full::from(format!("{text} (request id {request_id})\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths_map_to_relative_files() {
        assert_eq!(parse_request_path("/"), Ok(PathBuf::new()));
        assert_eq!(
            parse_request_path("/console.html"),
            Ok(PathBuf::from("console.html"))
        );
        assert_eq!(
            parse_request_path("/novnc/core/rfb.js"),
            Ok(PathBuf::from("novnc/core/rfb.js"))
        );
        assert_eq!(
            parse_request_path("//novnc//core/"),
            Ok(PathBuf::from("novnc/core"))
        );
        assert_eq!(
            parse_request_path("/a%20b.txt"),
            Ok(PathBuf::from("a b.txt"))
        );
    }

    #[test]
    fn traversal_and_hidden_paths_are_refused() {
        for (path, refusal) in [
            ("/../etc/passwd", PathRefusal::DotSegment("..".into())),
            ("/novnc/../../x", PathRefusal::DotSegment("..".into())),
            ("/%2e%2e/etc/passwd", PathRefusal::DotSegment("..".into())),
            ("/%2E%2E/x", PathRefusal::DotSegment("..".into())),
            ("/./x", PathRefusal::DotSegment(".".into())),
            ("/.git/config", PathRefusal::Hidden),
            ("/.%2e/x", PathRefusal::DotSegment("..".into())),
            ("/a%2f..%2fb", PathRefusal::BadCharacter),
            ("/a%5c..%5cb", PathRefusal::BadCharacter),
            ("/a%00b", PathRefusal::BadCharacter),
            ("/a\\b", PathRefusal::BadCharacter),
            ("/%ff", PathRefusal::NotUtf8),
        ] {
            assert_eq!(parse_request_path(path), Err(refusal), "{path}");
        }
    }

    #[test]
    fn content_types_by_extension() {
        for (name, expected) in [
            ("console.html", "text/html; charset=utf-8"),
            ("rfb.js", "text/javascript; charset=utf-8"),
            ("X.JS", "text/javascript; charset=utf-8"),
            ("console.css", "text/css; charset=utf-8"),
            ("novnc.svg", "image/svg+xml"),
            ("bell.oga", "audio/ogg"),
            ("package.json", "application/json"),
            ("LICENSE", "application/octet-stream"),
            ("x.exe", "application/octet-stream"),
        ] {
            assert_eq!(content_type(Path::new(name)), expected, "{name}");
        }
    }

    #[test]
    fn validators() {
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(784_111_777);
        assert_eq!(http_date(time), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            etag(255, time),
            format!("W/\"ff-{:x}\"", 784_111_777_000_000_000u128)
        );
        assert_ne!(
            etag(255, time),
            etag(255, time + std::time::Duration::from_nanos(1))
        );
    }
}
