//! The build log: for each module of a link, what its last back end was made of and how it
//! ended, so that `thindist explain OBJECT` can say where the flags came from, what the key
//! was, and why the module was compiled again (which input changed) or taken from the cache.
//!
//! One small versioned JSON file per link, written atomically at the end of a run. A missing,
//! torn or foreign-version file is treated as no history, as Ninja does with its log.

use crate::cache::ActionKey;
use crate::events::ExecutedBy;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

const LOG_VERSION: u32 = 1;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub module: PathBuf,
    pub flags_source: String,
    pub command: Vec<String>,
    pub key: ActionKey,
    pub executed_by: Option<ExecutedBy>,
    pub succeeded: bool,
    pub duration_ms: u128,
    /// Why the job ran (or not), against the previous entry.
    pub reason: String,
    /// Where the native object was kept beside its bitcode, if it was.
    #[serde(default)]
    pub published: Option<PathBuf>,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct BuildLog {
    version: u32,
    /// The directory the link ran in: module paths are relative to it.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    pub entries: BTreeMap<PathBuf, Entry>,
}

/// The newest logged back end of `object` (a path relative to `cwd` or absolute) among the
/// build logs in `logs_dir`: the log's path and the entry.
pub fn find_entry(logs_dir: &Path, object: &Path, cwd: &Path) -> Option<(PathBuf, Entry)> {
    let wanted = crate::fsutil::normalize(&cwd.join(object));
    let mut logs: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(logs_dir)
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    logs.sort_by_key(|l| std::cmp::Reverse(l.0));
    logs.into_iter().find_map(|(_, path)| {
        let log = BuildLog::load(&path);
        let base = log.cwd.clone().unwrap_or_else(|| cwd.to_path_buf());
        let entry = log
            .entries
            .into_values()
            .find(|e| crate::fsutil::normalize(&base.join(&e.module)) == wanted)?;
        Some((path, entry))
    })
}

impl BuildLog {
    /// The log at `path`, or an empty one if it is missing, unreadable or of another version.
    pub fn load(path: &Path) -> BuildLog {
        std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<BuildLog>(&bytes).ok())
            .filter(|log| log.version == LOG_VERSION)
            .unwrap_or_default()
    }

    pub fn save(&mut self, path: &Path) -> Result<()> {
        self.version = LOG_VERSION;
        crate::fsutil::write_atomic(path, &serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write build log {}", path.display()))
    }
}

/// Why a job ran again, comparing its key with the previous run's.
pub fn explain(previous: Option<&ActionKey>, current: &ActionKey) -> String {
    let Some(prev) = previous else {
        return "no previous build of this module".to_string();
    };
    if prev.hex == current.hex {
        return "unchanged since the previous build".to_string();
    }
    if prev.compiler != current.compiler {
        return format!(
            "the compiler changed ({} -> {})",
            prev.compiler, current.compiler
        );
    }
    if prev.normalized_command != current.normalized_command {
        return "the compile command changed".to_string();
    }
    let old: BTreeMap<_, _> = prev.inputs.iter().cloned().collect();
    let new: BTreeMap<_, _> = current.inputs.iter().cloned().collect();
    let mut changes = Vec::new();
    for (path, digest) in &new {
        match old.get(path) {
            None => changes.push(format!("{path} is a new input")),
            Some(d) if d != digest => changes.push(format!(
                "{path} changed ({} -> {})",
                &d[..12],
                &digest[..12]
            )),
            _ => {}
        }
    }
    changes.extend(
        old.keys()
            .filter(|p| !new.contains_key(*p))
            .map(|p| format!("{p} is no longer an input")),
    );
    if changes.is_empty() {
        "the key changed".to_string()
    } else {
        changes.join("; ")
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        writeln!(f, "module:     {}", self.module.display())?;
        writeln!(f, "flags from: {}", self.flags_source)?;
        writeln!(
            f,
            "command:    {}",
            crate::cmdline::shell_line(&self.command)
        )?;
        writeln!(f, "compiler:   {}", self.key.compiler)?;
        writeln!(f, "key:        {}", self.key.hex)?;
        writeln!(f, "inputs:")?;
        for (path, digest) in &self.key.inputs {
            writeln!(f, "  {digest}  {path}")?;
        }
        let outcome = match (self.succeeded, self.executed_by) {
            (true, Some(ExecutedBy::Cache)) => "taken from the cache".to_string(),
            (true, Some(by)) => format!(
                "compiled ({}) in {:.2}s",
                by.name(),
                self.duration_ms as f64 / 1000.0
            ),
            (false, _) => "failed".to_string(),
            (true, None) => "not run".to_string(),
        };
        writeln!(f, "outcome:    {outcome}")?;
        match &self.published {
            Some(native) => writeln!(f, "native:     {}", native.display())?,
            None => writeln!(
                f,
                "native:     not kept beside the bitcode (--keep-natives keeps it); cached under its key"
            )?,
        }
        write!(f, "why:        {}", self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(hex: &str, inputs: &[(&str, &str)]) -> ActionKey {
        ActionKey {
            hex: hex.into(),
            compiler: "clang 22".into(),
            normalized_command: vec!["<compiler>".into()],
            inputs: inputs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }

    #[test]
    fn explains_which_input_changed() {
        let a = "0".repeat(64);
        let b = "1".repeat(64);
        let prev = key("k1", &[("a.o", &a), ("b.o", &a)]);
        let cur = key("k2", &[("a.o", &a), ("b.o", &b)]);
        assert_eq!(
            explain(Some(&prev), &cur),
            "b.o changed (000000000000 -> 111111111111)"
        );
        assert_eq!(explain(None, &cur), "no previous build of this module");
        assert_eq!(
            explain(Some(&cur), &cur),
            "unchanged since the previous build"
        );
    }

    #[test]
    fn torn_or_foreign_logs_start_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        std::fs::write(&path, b"{\"version\": 1, \"entr").unwrap();
        assert!(BuildLog::load(&path).entries.is_empty());
        std::fs::write(&path, b"{\"version\": 99, \"entries\": {}}").unwrap();
        assert!(BuildLog::load(&path).entries.is_empty());
        let mut log = BuildLog::default();
        log.entries.insert(
            "a.o".into(),
            Entry {
                module: "a.o".into(),
                flags_source: "x".into(),
                command: vec!["cc".into()],
                key: key("k", &[]),
                executed_by: Some(ExecutedBy::Local),
                succeeded: true,
                duration_ms: 5,
                reason: "r".into(),
                published: None,
            },
        );
        log.save(&path).unwrap();
        assert_eq!(BuildLog::load(&path).entries.len(), 1);
    }
}
