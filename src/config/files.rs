//! Which files make up the configuration, and reading them: the only file-system
//! access of the config module. Each file's text goes to `syntax::apply_text`.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::syntax::apply_text;
use super::{ConfigError, ConfigWarning, Origin, RawConfig};

/// Merges the built-in defaults and the files `paths` stand for, later assignments winning.
///
/// A directory stands for its `*.conf` files in byte-wise name order. Any other path
/// stands for itself, then the `*.conf` files of `<path>.d` if that is a directory; a
/// missing file is skipped with a warning, as upstream does, since packages ship the
/// defaults and engine-setup writes only the `.d` file.
///
/// # Errors
///
/// Every unreadable file or directory and every bad line of every file, in file order.
pub fn load(paths: &[PathBuf]) -> Result<RawConfig, Vec<ConfigError>> {
    match load_all(paths) {
        (config, errors) if errors.is_empty() => Ok(config),
        (_, errors) => Err(errors),
    }
}

/// Like [`load`], but also returns what the good lines merged to when some lines are bad,
/// so that value errors can be reported in the same run as syntax errors.
pub fn load_all(paths: &[PathBuf]) -> (RawConfig, Vec<ConfigError>) {
    let mut config = RawConfig::defaults();
    let mut errors = Vec::new();
    for path in paths {
        load_path(path, &mut config, &mut errors);
    }
    (config, errors)
}

/// Applies what one command-line path stands for.
fn load_path(path: &Path, config: &mut RawConfig, errors: &mut Vec<ConfigError>) {
    match fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => {
            load_dir(path, config, errors);
            return;
        }
        Ok(_) => load_file(path, config, errors),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            config.warnings.push(ConfigWarning {
                origin: Origin::new(path, 0),
                key: None,
                message: "not found; skipped".to_owned(),
            });
        }
        Err(error) => errors.push(file_error(path, 0, format!("cannot read: {error}"))),
    }
    let drop_in = drop_in_dir(path);
    if drop_in.is_dir() {
        load_dir(&drop_in, config, errors);
    }
}

/// `<path>.d`, the directory whose files amend `path`.
fn drop_in_dir(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".d");
    PathBuf::from(name)
}

fn load_dir(dir: &Path, config: &mut RawConfig, errors: &mut Vec<ConfigError>) {
    match conf_files(dir) {
        Ok(files) => {
            for file in files {
                load_file(&file, config, errors);
            }
        }
        Err(error) => errors.push(file_error(
            dir,
            0,
            format!("cannot list the directory: {error}"),
        )),
    }
}

/// The regular files (symbolic links followed) named `*.conf` in `dir`, in byte-wise
/// name order. Hidden files are left out, as upstream's `glob('*.conf')` does.
fn conf_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.file_name().is_some_and(is_conf_name) && path.is_file() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

fn is_conf_name(name: &OsStr) -> bool {
    let name = name.as_encoded_bytes();
    name.ends_with(b".conf") && !name.starts_with(b".")
}

fn load_file(path: &Path, config: &mut RawConfig, errors: &mut Vec<ConfigError>) {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) => {
            errors.push(file_error(path, 0, format!("cannot read: {error}")));
            return;
        }
    };
    match std::str::from_utf8(&bytes) {
        Ok(text) => apply_text(text, path, config, errors),
        Err(error) => {
            let valid = &bytes[..error.valid_up_to()];
            let line = valid.iter().filter(|&&byte| byte == b'\n').count() + 1;
            errors.push(file_error(path, line, "not valid UTF-8".to_owned()));
        }
    }
}

/// An error about a whole file (`line` 0) or a line of it, not about a key.
fn file_error(path: &Path, line: usize, message: String) -> ConfigError {
    ConfigError {
        origin: Some(Origin::new(path, line)),
        key: None,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_names_are_visible_and_end_in_conf() {
        for name in ["10-setup.conf", "a.conf", "x.d.conf"] {
            assert!(is_conf_name(OsStr::new(name)), "{name}");
        }
        for name in [
            ".hidden.conf",
            ".conf",
            "a.conf.rpmsave",
            "a.CONF",
            "README",
            "a.conf~",
        ] {
            assert!(!is_conf_name(OsStr::new(name)), "{name}");
        }
    }

    #[test]
    fn drop_in_dir_appends_to_the_name() {
        assert_eq!(
            drop_in_dir(Path::new("/etc/ovirt-engine/ovirt-websocket-proxy.conf")),
            Path::new("/etc/ovirt-engine/ovirt-websocket-proxy.conf.d")
        );
    }
}
