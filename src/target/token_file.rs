//! websockify-compatible token files: `TOKEN: host:port` lines in one file or in every file
//! of a directory, the token taken from the request by [`super::token`].
//!
//! The files belong to someone else (Abiquo's cron job rewrites its file every minute), so
//! the table is kept in step with them without ever serving a half-written one:
//!
//! - Every lookup first compares the files' identity and metadata (device, inode, size,
//!   modification and change times: one `stat` per file, far cheaper than websockify,
//!   which re-reads the files on every request). A watcher (inotify) would not remove the
//!   need for this check: a browser may arrive between a write and its notification, and
//!   inotify misses changes on NFS. Concurrent lookups share one check.
//! - A change is loaded only once the files are quiet: seen unchanged by us for [`QUIET`], or
//!   for [`SETTLE`] when their modification times are [`QUIET`] old already. A file being
//!   rewritten in place (truncated, then written piece by piece) is never loaded half-way;
//!   until it is quiet the previous table stays in use. A read is kept only if no file
//!   changed while it was read.
//! - A token missing from the table while a change is pending waits for the change (at most
//!   [`MISS_WAIT`]) before it is refused, so a token written just before the browser arrives
//!   is found. Files that never stay quiet that long are then read as they are, keeping
//!   only complete (newline-terminated) lines, with a warning.
//! - A read that fails (a file missing, unreadable) keeps the previous table; the failure is
//!   logged once, and the recovery too.
//! - A malformed line is logged with its file and line and skipped; the rest is used.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io;
use std::net::Ipv6Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{info, warn};

use super::token::{self, TokenError};
use super::{ConsoleRequest, ResolveError, Target, TargetResolver};
use crate::ticket;

/// How long files must stay unchanged before a change is loaded.
pub const QUIET: Duration = Duration::from_millis(250);

/// How long a change to files last modified at least [`QUIET`] ago must be seen unchanged
/// before it is loaded. Their age alone is not enough: Linux may show a file truncated by a
/// writer with its new size but, for an instant, its old modification time.
pub const SETTLE: Duration = Duration::from_millis(25);

/// How long a lookup for a token not in the table waits for a pending change.
pub const MISS_WAIT: Duration = Duration::from_secs(2);

/// Largest token file read; a line per console is some 50 bytes.
pub const MAX_FILE_SIZE: u64 = 64 * 1024 * 1024;

/// How often a read is retried when a file changes while it is read.
const READ_ATTEMPTS: usize = 3;

/// Why a token file cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is {size} bytes, more than the {max} allowed for a token file")]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("{path} kept changing while it was read ({attempts} attempts)")]
    Changing { path: PathBuf, attempts: usize },
}

/// Why one line of a token file is skipped. Never contains the line: it holds a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("expected `TOKEN: host:port` (a colon and a blank after the token)")]
    NoSeparator,
    #[error("more than one `: ` separator; expected `TOKEN: host:port`")]
    ExtraSeparator,
    #[error("the token is empty")]
    EmptyToken,
    #[error("the token is longer than {max} bytes", max = token::MAX_TOKEN_LEN)]
    TokenTooLong,
    #[error("the target has no port; expected host:port")]
    NoPort,
    #[error("the target's port is not a number from 1 to 65535")]
    BadPort,
    #[error("the target's host is not an IP address or a host name")]
    BadHost,
    #[error("unix socket targets are not supported")]
    UnixSocket,
    #[error("the line is not valid UTF-8")]
    NotUtf8,
}

/// Reads one line: `None` for blank lines and `#` comments. As websockify, the token ends
/// at the first colon followed by a blank and the port follows the last colon of the target;
/// an IPv6 host may be written `[::1]:5900` (or, as websockify allows, `::1:5900`).
///
/// # Errors
/// Why the line cannot be used.
pub fn parse_line(line: &str) -> Result<Option<(String, Target)>, LineError> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let separator = |text: &str| {
        text.char_indices()
            .find(|&(i, c)| c == ':' && text[i + 1..].starts_with(char::is_whitespace))
            .map(|(i, _)| i)
    };
    let at = separator(line).ok_or(LineError::NoSeparator)?;
    let (token, rest) = (line[..at].trim(), line[at + 1..].trim());
    if separator(rest).is_some() {
        return Err(LineError::ExtraSeparator);
    }
    if token.is_empty() {
        return Err(LineError::EmptyToken);
    }
    if token.len() > token::MAX_TOKEN_LEN {
        return Err(LineError::TokenTooLong);
    }
    if rest.starts_with("unix_socket:") {
        return Err(LineError::UnixSocket);
    }
    Ok(Some((token.to_owned(), parse_target(rest)?)))
}

/// Reads `host:port`, `[v6]:port` or `v6:port` (the port after the last colon).
fn parse_target(text: &str) -> Result<Target, LineError> {
    let (host, port) = text.rsplit_once(':').ok_or(LineError::NoPort)?;
    let port = ticket::parse_port(port).ok_or(LineError::BadPort)?;
    let host = if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(LineError::BadHost)?;
        inner.parse::<Ipv6Addr>().map_err(|_| LineError::BadHost)?;
        inner.to_owned()
    } else if host.contains(':') {
        host.parse::<Ipv6Addr>().map_err(|_| LineError::BadHost)?;
        host.to_owned()
    } else {
        ticket::parse_host(host).ok_or(LineError::BadHost)?
    };
    Ok(Target {
        host,
        port,
        ssl_target: false,
    })
}

/// A usable line: its number, token and target.
pub type Entry = (usize, String, Target);

/// One file's lines: the usable entries with their line numbers, and the skipped lines.
/// With `complete_lines_only`, a last line without its newline is left out: the file may
/// still be being written.
pub fn parse_text(text: &[u8], complete_lines_only: bool) -> (Vec<Entry>, Vec<(usize, LineError)>) {
    let mut entries = Vec::new();
    let mut malformed = Vec::new();
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    // `split` yields an empty piece after a final newline; an unterminated last line is
    // whatever follows the last newline.
    let unterminated = lines.pop().filter(|last| !last.is_empty());
    if let Some(last) = unterminated.filter(|_| !complete_lines_only) {
        lines.push(last);
    }
    for (index, raw) in lines.into_iter().enumerate() {
        let number = index + 1;
        let parsed = std::str::from_utf8(raw)
            .map_err(|_| LineError::NotUtf8)
            .and_then(parse_line);
        match parsed {
            Ok(Some((token, target))) => entries.push((number, token, target)),
            Ok(None) => {}
            Err(error) => malformed.push((number, error)),
        }
    }
    (entries, malformed)
}

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    path: PathBuf,
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl FileStamp {
    fn new(path: PathBuf, meta: &fs::Metadata) -> FileStamp {
        FileStamp {
            path,
            device: meta.dev(),
            inode: meta.ino(),
            size: meta.size(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    fn modified_at(&self) -> Option<SystemTime> {
        let seconds = u64::try_from(self.modified.0).ok()?;
        let nanos = u32::try_from(self.modified.1).ok()?;
        SystemTime::UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
    }
}

/// The files of a source, sorted by path; equal stamps mean unchanged files.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<FileStamp>);

impl Stamp {
    /// Whether every file was last modified at least [`QUIET`] ago by the wall clock.
    fn quiet_by_age(&self, now: SystemTime) -> bool {
        self.0.iter().all(|file| {
            file.modified_at()
                .and_then(|at| now.duration_since(at).ok())
                .is_some_and(|age| age >= QUIET)
        })
    }

    /// When the newest file becomes quiet by its age, as a monotonic instant.
    fn quiet_at(&self, now: SystemTime, now_instant: Instant) -> Instant {
        let newest = self.0.iter().filter_map(FileStamp::modified_at).max();
        match newest.and_then(|at| now.duration_since(at).ok()) {
            Some(age) => now_instant + QUIET.saturating_sub(age),
            None => now_instant + QUIET,
        }
    }
}

/// Names skipped in a directory: hidden files and editors' backups.
fn is_skipped(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with('.') || name.ends_with('~')
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> TokenFileError + '_ {
    move |source| TokenFileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Stats the source: the file itself, or every eligible regular file in the directory.
fn observe(source: &Path) -> Result<Stamp, TokenFileError> {
    let meta = fs::metadata(source).map_err(io_error(source))?;
    if !meta.is_dir() {
        return Ok(Stamp(vec![FileStamp::new(source.to_owned(), &meta)]));
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(source).map_err(io_error(source))? {
        let entry = entry.map_err(io_error(source))?;
        if is_skipped(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => files.push(FileStamp::new(path, &meta)),
            Ok(_) => {}
            // Removed between the listing and the stat: a writer at work, not an error.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&path)(e)),
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Stamp(files))
}

/// A token table and what it was read from.
#[derive(Debug)]
struct Snapshot {
    tokens: HashMap<String, Target>,
    /// `None` when the files were not quiet when read: the next check reads them again.
    stamp: Option<Stamp>,
    files: usize,
}

/// A fully read source, and what to tell the operator about it.
struct Loaded {
    snapshot: Snapshot,
    /// What was read, quiet or not.
    stamp: Stamp,
    /// `file:line: problem` for each skipped line and each conflicting duplicate.
    problems: Vec<String>,
}

/// Reads every file of the source while no file changes, else retries. The read counts as
/// quiet only if it is exactly `settled`, a state seen unchanged long enough; otherwise only
/// complete lines are used and the snapshot has no stamp, so that it is read again.
fn load(source: &Path, settled: Option<&Stamp>) -> Result<Loaded, TokenFileError> {
    for _ in 0..READ_ATTEMPTS {
        let before = observe(source)?;
        let mut texts = Vec::with_capacity(before.0.len());
        let mut vanished = false;
        for file in &before.0 {
            if file.size > MAX_FILE_SIZE {
                return Err(TokenFileError::TooLarge {
                    path: file.path.clone(),
                    size: file.size,
                    max: MAX_FILE_SIZE,
                });
            }
            match read_limited(&file.path) {
                Ok(text) => texts.push(text),
                // A directory's file removed since the listing: a writer at work.
                Err(e) if e.kind() == io::ErrorKind::NotFound && file.path != source => {
                    vanished = true;
                    break;
                }
                Err(e) => return Err(io_error(&file.path)(e)),
            }
        }
        if vanished || observe(source)? != before {
            continue;
        }
        let quiet = settled == Some(&before);
        return Ok(build(before, &texts, quiet));
    }
    Err(TokenFileError::Changing {
        path: source.to_owned(),
        attempts: READ_ATTEMPTS,
    })
}

fn read_limited(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut text = Vec::new();
    fs::File::open(path)?
        .take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut text)?;
    Ok(text)
}

/// The table from the files' texts, in path order, later definitions winning.
fn build(stamp: Stamp, texts: &[Vec<u8>], quiet: bool) -> Loaded {
    let mut tokens: HashMap<String, (Target, String)> = HashMap::new();
    let mut problems = Vec::new();
    for (file, text) in stamp.0.iter().zip(texts) {
        let (entries, malformed) = parse_text(text, !quiet);
        for (line, error) in malformed {
            problems.push(format!(
                "{}:{line}: {error}; line skipped",
                file.path.display()
            ));
        }
        for (line, token, target) in entries {
            let place = format!("{}:{line}", file.path.display());
            if let Some((earlier, earlier_place)) = tokens.get(&token) {
                if *earlier != target {
                    problems.push(format!(
                        "{place}: token {} defined again with another target (first at \
                         {earlier_place}); this later definition wins",
                        ticket::fingerprint(&token)
                    ));
                }
            }
            tokens.insert(token, (target, place));
        }
    }
    Loaded {
        snapshot: Snapshot {
            tokens: tokens
                .into_iter()
                .map(|(token, (target, _))| (token, target))
                .collect(),
            stamp: quiet.then(|| stamp.clone()),
            files: stamp.0.len(),
        },
        stamp,
        problems,
    }
}

/// A change seen but not loaded yet, because the files were not quiet.
#[derive(Debug, Clone)]
struct Pending {
    stamp: Stamp,
    first_seen: Instant,
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    /// The table matches the files (or the files cannot be read: the table is kept).
    Current,
    /// The files changed and are not quiet yet; look again at this instant.
    Pending { quiet_at: Instant },
}

/// The state of the single checker that lookups share.
#[derive(Debug)]
struct Checker {
    pending: Option<Pending>,
    /// The last read or stat failure, logged once until it changes or clears.
    last_error: Option<String>,
    /// When the last check started, and what it found: a lookup that arrived before that
    /// start takes this result instead of checking again.
    last_started: Option<Instant>,
    last_result: Freshness,
}

/// Targets from websockify-style token files.
pub struct TokenFile {
    source: PathBuf,
    snapshot: ArcSwap<Snapshot>,
    checker: Mutex<Checker>,
}

impl fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snapshot = self.snapshot.load();
        f.debug_struct("TokenFile")
            .field("source", &self.source)
            .field("tokens", &snapshot.tokens.len())
            .field("files", &snapshot.files)
            .finish()
    }
}

impl TokenFile {
    /// Reads `source` (a file, or a directory of files) for the first time. Returns the
    /// resolver and a `file:line: problem` line for each line skipped.
    ///
    /// # Errors
    /// The source or one of its files cannot be read, or kept changing while read.
    pub fn open(source: &Path) -> Result<(TokenFile, Vec<String>), TokenFileError> {
        let loaded = load(source, None)?;
        let resolver = TokenFile {
            source: source.to_owned(),
            snapshot: ArcSwap::from_pointee(loaded.snapshot),
            checker: Mutex::new(Checker {
                pending: None,
                last_error: None,
                last_started: None,
                last_result: Freshness::Current,
            }),
        };
        Ok((resolver, loaded.problems))
    }

    /// How many tokens and files the current table holds.
    pub fn size(&self) -> (usize, usize) {
        let snapshot = self.snapshot.load();
        (snapshot.tokens.len(), snapshot.files)
    }

    /// The target for `token`, after making sure the table is as current as the files allow.
    pub async fn lookup(&self, token: &str) -> Option<Target> {
        let arrived = Instant::now();
        let deadline = arrived + MISS_WAIT;
        let mut freshness = self.check(arrived, false).await;
        loop {
            if let Some(target) = self.snapshot.load().tokens.get(token) {
                return Some(target.clone());
            }
            match freshness {
                Freshness::Current => return None,
                Freshness::Pending { .. } if Instant::now() >= deadline => {
                    // Still changing after MISS_WAIT: read the files as they are.
                    freshness = self.check(Instant::now(), true).await;
                    if let Freshness::Pending { .. } = freshness {
                        return None;
                    }
                }
                Freshness::Pending { quiet_at } => {
                    tokio::time::sleep_until(quiet_at.min(deadline)).await;
                    freshness = self.check(Instant::now(), false).await;
                }
            }
        }
    }

    /// Brings the table up to date with the files, sharing the work with concurrent lookups:
    /// a check that started after `arrived` answers for this one too. With `force`, files
    /// that are not quiet are read anyway, keeping complete lines only.
    async fn check(&self, arrived: Instant, force: bool) -> Freshness {
        let mut checker = self.checker.lock().await;
        if !force
            && checker
                .last_started
                .is_some_and(|started| started >= arrived)
        {
            return checker.last_result;
        }
        let started = Instant::now();
        checker.last_started = Some(started);
        let source = self.source.clone();
        let installed = self.snapshot.load().stamp.clone();
        let pending = checker.pending.clone();
        let examined = tokio::task::spawn_blocking(move || {
            examine(&source, installed.as_ref(), pending, force, started)
        })
        .await;
        let result = match examined {
            Ok(examined) => self.apply(&mut checker, examined),
            Err(join_error) => {
                warn!(error = %join_error, "token file check did not complete; keeping the current table");
                Freshness::Current
            }
        };
        checker.last_result = result;
        result
    }

    /// Installs what [`examine`] loaded and logs what the operator should know.
    fn apply(&self, checker: &mut Checker, examined: Examined) -> Freshness {
        let result = match examined {
            Examined::Unchanged => {
                checker.pending = None;
                Freshness::Current
            }
            Examined::Waiting { pending, quiet_at } => {
                checker.pending = Some(pending);
                Freshness::Pending { quiet_at }
            }
            Examined::Loaded { loaded, forced } => {
                checker.pending = None;
                for problem in &loaded.problems {
                    warn!(source = %self.source.display(), "token file: {problem}");
                }
                let (tokens, files) = (loaded.snapshot.tokens.len(), loaded.snapshot.files);
                self.snapshot.store(Arc::new(loaded.snapshot));
                if forced {
                    warn!(
                        source = %self.source.display(),
                        tokens, files,
                        "token file keeps changing: loaded it while still being written (complete lines only); write a temporary file and rename it instead"
                    );
                } else {
                    info!(source = %self.source.display(), tokens, files, skipped_lines = loaded.problems.len(), "token file reloaded");
                }
                Freshness::Current
            }
            Examined::Failed(error) => {
                let message = error.to_string();
                if checker.last_error.as_deref() != Some(message.as_str()) {
                    let (tokens, _) = self.size();
                    warn!(error = %message, tokens, "token file cannot be read: keeping the previous table");
                }
                checker.last_error = Some(message);
                return Freshness::Current;
            }
        };
        if checker.last_error.take().is_some() {
            info!(source = %self.source.display(), "token file readable again");
        }
        result
    }
}

/// What a check found on disk.
enum Examined {
    Unchanged,
    Waiting { pending: Pending, quiet_at: Instant },
    Loaded { loaded: Loaded, forced: bool },
    Failed(TokenFileError),
}

/// The blocking part of a check: stat, and read when the change is quiet.
fn examine(
    source: &Path,
    installed: Option<&Stamp>,
    pending: Option<Pending>,
    force: bool,
    now: Instant,
) -> Examined {
    let observed = match observe(source) {
        Ok(stamp) => stamp,
        Err(error) => return Examined::Failed(error),
    };
    if installed == Some(&observed) {
        return Examined::Unchanged;
    }
    let pending = match pending {
        Some(pending) if pending.stamp == observed => pending,
        _ => Pending {
            stamp: observed,
            first_seen: now,
        },
    };
    // Settled: seen unchanged for QUIET, or for SETTLE when the files are old already.
    let wall = SystemTime::now();
    let seen_for = now.saturating_duration_since(pending.first_seen);
    let settled = seen_for >= QUIET || (seen_for >= SETTLE && pending.stamp.quiet_by_age(wall));
    if !settled && !force {
        let by_age = pending
            .stamp
            .quiet_at(wall, now)
            .max(pending.first_seen + SETTLE);
        let quiet_at = by_age.min(pending.first_seen + QUIET);
        return Examined::Waiting { pending, quiet_at };
    }
    match load(source, settled.then_some(&pending.stamp)) {
        Ok(loaded) if loaded.snapshot.stamp.is_none() && !force => {
            // Changed again since the stat: wait for the new state to settle.
            let pending = Pending {
                stamp: loaded.stamp,
                first_seen: now,
            };
            let quiet_at = pending
                .stamp
                .quiet_at(SystemTime::now(), now)
                .max(now + SETTLE)
                .min(now + QUIET);
            Examined::Waiting { pending, quiet_at }
        }
        Ok(loaded) => Examined::Loaded {
            forced: loaded.snapshot.stamp.is_none(),
            loaded,
        },
        Err(error) => Examined::Failed(error),
    }
}

#[async_trait]
impl TargetResolver for TokenFile {
    async fn resolve(&self, request: &ConsoleRequest<'_>) -> Result<Target, ResolveError> {
        let token = token::from_request(request.path, request.query)?;
        self.lookup(&token).await.ok_or_else(|| {
            let (tokens, files) = self.size();
            TokenError::Unknown {
                known_by: format!(
                    "token file {} ({tokens} tokens from {files} file(s))",
                    self.source.display()
                ),
            }
            .into()
        })
    }

    fn fingerprint(&self, path: &str, query: Option<&str>) -> String {
        token::fingerprint(path, query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, port: u16) -> Target {
        Target {
            host: host.to_owned(),
            port,
            ssl_target: false,
        }
    }

    #[test]
    fn lines_in_websockify_format() {
        assert_eq!(
            parse_line("abc: 10.0.0.5:5900"),
            Ok(Some(("abc".to_owned(), target("10.0.0.5", 5900))))
        );
        assert_eq!(
            parse_line("  d41d8cd98f00b204e9800998ecf8427e:\tvnc.example.com:5901  "),
            Ok(Some((
                "d41d8cd98f00b204e9800998ecf8427e".to_owned(),
                target("vnc.example.com", 5901)
            )))
        );
        assert_eq!(
            parse_line("a:b: host:1"),
            Ok(Some(("a:b".to_owned(), target("host", 1))))
        );
        assert_eq!(
            parse_line("abc: host:1\r"),
            Ok(Some(("abc".to_owned(), target("host", 1))))
        );
    }

    #[test]
    fn blank_lines_and_comments_are_skipped() {
        for line in ["", "   ", "# a comment", "  # indented: comment"] {
            assert_eq!(parse_line(line), Ok(None), "{line:?}");
        }
    }

    #[test]
    fn ipv6_targets_with_or_without_brackets() {
        assert_eq!(
            parse_line("t: [::1]:5900"),
            Ok(Some(("t".to_owned(), target("::1", 5900))))
        );
        assert_eq!(
            parse_line("t: [fe80::1:2]:5900"),
            Ok(Some(("t".to_owned(), target("fe80::1:2", 5900))))
        );
        assert_eq!(
            parse_line("t: fe80::1:5900"),
            Ok(Some(("t".to_owned(), target("fe80::1", 5900))))
        );
        assert_eq!(target("::1", 5900).to_string(), "[::1]:5900");
    }

    #[test]
    fn malformed_lines_say_why() {
        for (line, error) in [
            ("abc 10.0.0.5:5900", LineError::NoSeparator),
            ("abc:10.0.0.5:5900", LineError::NoSeparator),
            ("abc: host: 5900", LineError::ExtraSeparator),
            (": host:5900", LineError::EmptyToken),
            ("abc: host", LineError::NoPort),
            ("abc: host:0", LineError::BadPort),
            ("abc: host:65536", LineError::BadPort),
            ("abc: host:59o0", LineError::BadPort),
            ("abc: host:", LineError::BadPort),
            ("abc: bad_host!:5900", LineError::BadHost),
            ("abc: [::1:5900", LineError::BadHost),
            ("abc: [10.0.0.1]:5900", LineError::BadHost),
            ("abc: [::1]x:5900", LineError::BadHost),
            ("abc: unix_socket:/run/vnc.sock", LineError::UnixSocket),
        ] {
            assert_eq!(parse_line(line), Err(error), "{line:?}");
        }
        let long = format!("{}: host:1", "t".repeat(token::MAX_TOKEN_LEN + 1));
        assert_eq!(parse_line(&long), Err(LineError::TokenTooLong));
    }

    #[test]
    fn text_keeps_line_numbers_and_skips_bad_lines() {
        let text = b"# tokens\na: h:1\n\nbad line\nb: [::1]:2\n\xff: h:3\nc: h:4";
        let (entries, malformed) = parse_text(text, false);
        assert_eq!(
            entries,
            [
                (2, "a".to_owned(), target("h", 1)),
                (5, "b".to_owned(), target("::1", 2)),
                (7, "c".to_owned(), target("h", 4)),
            ]
        );
        assert_eq!(
            malformed,
            [(4, LineError::NoSeparator), (6, LineError::NotUtf8)]
        );
    }

    #[test]
    fn an_unterminated_last_line_is_left_out_when_asked() {
        let (entries, _) = parse_text(b"a: h:1\nb: h:59", true);
        assert_eq!(entries, [(1, "a".to_owned(), target("h", 1))]);
        let (entries, _) = parse_text(b"a: h:1\nb: h:59\n", true);
        assert_eq!(entries.len(), 2);
        let (entries, malformed) = parse_text(b"", true);
        assert!(entries.is_empty() && malformed.is_empty());
    }

    #[test]
    fn hidden_and_backup_files_are_skipped() {
        assert!(is_skipped(OsStr::new(".tokens.swp")));
        assert!(is_skipped(OsStr::new("tokens~")));
        assert!(!is_skipped(OsStr::new("tokens")));
        assert!(!is_skipped(OsStr::new("vm-42.conf")));
    }

    fn write(path: &Path, text: &str) {
        fs::write(path, text).unwrap();
    }

    /// Sets a file's modification time to `ago` in the past, so it counts as quiet.
    fn age(path: &Path, ago: Duration) {
        let file = fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - ago).unwrap();
    }

    #[test]
    fn a_directory_is_read_in_name_order_later_definitions_winning() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("20-b"), "x: h:2\ny: h:3\n");
        write(&dir.path().join("10-a"), "x: h:1\nz: h:9\noops\n");
        write(&dir.path().join(".hidden"), "w: h:4\n");
        fs::create_dir(dir.path().join("sub")).unwrap();
        let (file, problems) = TokenFile::open(dir.path()).unwrap();
        let snapshot = file.snapshot.load();
        assert_eq!(snapshot.tokens.len(), 3);
        assert_eq!(snapshot.tokens["x"], target("h", 2));
        assert_eq!(snapshot.files, 2);
        assert!(!snapshot.tokens.contains_key("w"));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].ends_with("10-a:3: expected `TOKEN: host:port` (a colon and a blank after the token); line skipped"), "{problems:?}");
        assert!(
            problems[1].contains("20-b:1: token ") && problems[1].contains("first at"),
            "{problems:?}"
        );
        assert!(
            !problems[1].contains(": x "),
            "the token itself must not be shown"
        );
    }

    #[test]
    fn a_missing_source_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let error = TokenFile::open(&dir.path().join("nope")).unwrap_err();
        assert!(error.to_string().starts_with("cannot read "), "{error}");
    }

    #[tokio::test]
    async fn changes_are_loaded_once_quiet_and_failures_keep_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        write(&path, "a: h:1\n");
        age(&path, Duration::from_secs(5));
        let (file, _) = TokenFile::open(&path).unwrap();
        assert_eq!(file.lookup("a").await, Some(target("h", 1)));

        // A fresh change is not loaded at once: "a" is still served from the old table...
        write(&path, "b: h:2\n");
        assert_eq!(file.lookup("a").await, Some(target("h", 1)));
        // ...and a lookup for the new token waits for the quiet period and finds it.
        let started = Instant::now();
        assert_eq!(file.lookup("b").await, Some(target("h", 2)));
        assert!(started.elapsed() <= MISS_WAIT);
        assert_eq!(file.lookup("a").await, None);

        // The file disappears: the table is kept.
        fs::remove_file(&path).unwrap();
        assert_eq!(file.lookup("b").await, Some(target("h", 2)));
        assert_eq!(file.lookup("zzz").await, None);

        // It comes back, old already: loaded at the next lookup without waiting.
        write(&path, "c: h:3\n");
        age(&path, Duration::from_secs(5));
        assert_eq!(file.lookup("c").await, Some(target("h", 3)));
        assert_eq!(file.lookup("b").await, None);
    }
}
