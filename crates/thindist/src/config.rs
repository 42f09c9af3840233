//! Layered configuration: built-in defaults, then `thindist.toml`, then `THINDIST_*`
//! environment variables, then the command line.
//!
//! The file's keys are the long option names (`jobs = 8`, `remote = "grpc://..."`). They are
//! applied by setting the matching environment variable when it is not already set, so the
//! environment and the command line, which clap reads, keep precedence over the file.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The config file in force: `$THINDIST_CONFIG`, else the nearest `thindist.toml` in the
/// current directory or a parent, else `$XDG_CONFIG_HOME/thindist/thindist.toml`.
pub fn find_config_file(cwd: &Path) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("THINDIST_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    for dir in cwd.ancestors() {
        let candidate = dir.join("thindist.toml");
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(config_home.join("thindist/thindist.toml")).filter(|p| p.is_file())
}

/// `remote-instance` -> `THINDIST_REMOTE_INSTANCE`.
pub fn env_name(key: &str) -> String {
    format!("THINDIST_{}", key.replace('-', "_").to_ascii_uppercase())
}

/// The environment variables a config file asks for: (name, value) for every key, with arrays
/// joined by commas (list options split their variable on commas).
pub fn config_env(text: &str, origin: &Path) -> Result<Vec<(String, String)>> {
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", origin.display()))?;
    let mut vars = Vec::new();
    for (key, value) in table {
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

/// Applies the config file to the environment, before any thread starts.
pub fn apply_config_file(cwd: &Path) -> Result<()> {
    let Some(path) = find_config_file(cwd) else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    for (name, value) in config_env(&text, &path)? {
        if std::env::var_os(&name).is_none() {
            std::env::set_var(name, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_environment_variables() {
        let vars = config_env(
            "jobs = 8\nremote = \"grpc://127.0.0.1:50051\"\nremote-header = [\"authorization=Bearer x\", \"x-a=b\"]\nremote-only = true\n",
            Path::new("thindist.toml"),
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
        let err = config_env("jobs = ", Path::new("/x/thindist.toml")).unwrap_err();
        assert!(format!("{err:#}").contains("/x/thindist.toml"));
        let err = config_env("[remote]\nurl = 1\n", Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("remote"));
    }
}
