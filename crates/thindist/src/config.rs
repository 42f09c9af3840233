//! Layered configuration: built-in defaults, then `thindist.toml`, then `THINDIST_*`
//! environment variables, then the command line.
//!
//! The file's keys are the long option names (`jobs = 8`, `remote = "grpc://..."`). They are
//! applied by setting the matching environment variable when it is not already set, so the
//! environment and the command line, which clap reads, keep precedence over the file.
//!
//! A config file decides where bitcode is sent and which cache is trusted, so a file found by
//! searching is only read when it belongs to this user (or root) and nobody else can write it:
//! anyone can put a `thindist.toml` into a shared directory such as /tmp above a build.

use anyhow::{bail, Context, Result};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The config files that may be in force, in order: `$THINDIST_CONFIG` alone when set (then
/// it must exist, so the bool is true), else each `thindist.toml` in the current directory and
/// its parents, nearest first, then `$XDG_CONFIG_HOME/thindist/thindist.toml`.
fn candidates(cwd: &Path) -> (Vec<PathBuf>, bool) {
    if let Some(path) = std::env::var_os("THINDIST_CONFIG").filter(|p| !p.is_empty()) {
        return (vec![PathBuf::from(path)], true);
    }
    let mut found: Vec<PathBuf> = cwd.ancestors().map(|d| d.join("thindist.toml")).collect();
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    found.extend(config_home.map(|h| h.join("thindist/thindist.toml")));
    (found, false)
}

/// Why a config file may not be trusted, if it may not: it must belong to this user or root
/// and be writable by nobody else.
fn distrust(meta: &std::fs::Metadata) -> Option<String> {
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid && meta.uid() != 0 {
        Some(format!(
            "it belongs to uid {}, not to you (uid {uid}) or root",
            meta.uid()
        ))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "others can write it (mode {:o})",
            meta.mode() & 0o7777
        ))
    } else {
        None
    }
}

/// The config file in force and its text: the first of [`candidates`] that exists and may be
/// trusted. Untrusted ones are skipped with a warning. The file is checked as opened, so it
/// cannot be swapped between the check and the read.
fn find_config_file(cwd: &Path) -> Result<Option<(PathBuf, String)>> {
    use std::io::Read;
    let (candidates, named) = candidates(cwd);
    for path in candidates {
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read config file {}", path.display()))
            }
        };
        let meta = file
            .metadata()
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        if !meta.is_file() {
            continue;
        }
        if let Some(why) = distrust(&meta) {
            crate::events::warn(format!("ignoring config file {}: {why}", path.display()));
            continue;
        }
        let mut text = String::new();
        file.read_to_string(&mut text)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        return Ok(Some((path, text)));
    }
    Ok(None)
}

/// `remote-instance` -> `THINDIST_REMOTE_INSTANCE`.
pub fn env_name(key: &str) -> String {
    format!("THINDIST_{}", key.replace('-', "_").to_ascii_uppercase())
}

/// The environment variables a config file asks for: (name, value) for every key, with arrays
/// joined by commas (list options split their variable on commas). A key whose variable is not
/// in `known` (every option's variable) is an error: a misspelt key must not be ignored.
pub fn config_env(text: &str, origin: &Path, known: &[String]) -> Result<Vec<(String, String)>> {
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", origin.display()))?;
    let mut vars = Vec::new();
    for (key, value) in table {
        if !known.contains(&env_name(&key)) {
            bail!(
                "{}: unknown key {key:?} (keys are long option names, such as remote-instance)",
                origin.display()
            );
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Ok(other.to_string()),
                })
                .collect::<Result<Vec<_>>>()?
                .join(","),
            toml::Value::Table(_) | toml::Value::Datetime(_) => {
                bail!(
                    "{}: key {key} must be a string, number, boolean or list",
                    origin.display()
                )
            }
        };
        vars.push((env_name(&key), text));
    }
    Ok(vars)
}

/// Applies the config file to the environment, before any thread starts; `known` are the
/// variables of every option. Returns the file read, if any.
pub fn apply_config_file(cwd: &Path, known: &[String]) -> Result<Option<PathBuf>> {
    let Some((path, text)) = find_config_file(cwd)? else {
        return Ok(None);
    };
    for (name, value) in config_env(&text, &path, known)? {
        if std::env::var_os(&name).is_none() {
            std::env::set_var(name, value);
        }
    }
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<String> {
        [
            "JOBS",
            "REMOTE",
            "REMOTE_HEADER",
            "REMOTE_ONLY",
            "REMOTE_INSTANCE",
        ]
        .iter()
        .map(|v| format!("THINDIST_{v}"))
        .collect()
    }

    #[test]
    fn keys_become_environment_variables() {
        let vars = config_env(
            "jobs = 8\nremote = \"grpc://127.0.0.1:50051\"\nremote-header = [\"authorization=Bearer x\", \"x-a=b\"]\nremote-only = true\n",
            Path::new("thindist.toml"),
            &known(),
        )
        .unwrap();
        assert_eq!(
            vars,
            vec![
                ("THINDIST_JOBS".into(), "8".into()),
                ("THINDIST_REMOTE".into(), "grpc://127.0.0.1:50051".into()),
                (
                    "THINDIST_REMOTE_HEADER".into(),
                    "authorization=Bearer x,x-a=b".into()
                ),
                ("THINDIST_REMOTE_ONLY".into(), "true".into()),
            ]
        );
    }

    #[test]
    fn bad_files_name_themselves() {
        let err = config_env("jobs = ", Path::new("/x/thindist.toml"), &known()).unwrap_err();
        assert!(format!("{err:#}").contains("/x/thindist.toml"));
        let err = config_env("[remote]\nurl = 1\n", Path::new("t.toml"), &known()).unwrap_err();
        assert!(err.to_string().contains("remote"));
    }

    #[test]
    fn misspelt_keys_are_errors_naming_file_and_key() {
        let err = config_env(
            "remote-instanse = \"x\"\n",
            Path::new("/x/thindist.toml"),
            &known(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/x/thindist.toml") && err.contains("remote-instanse"),
            "{err}"
        );
    }
}
