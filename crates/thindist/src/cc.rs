//! `thindist cc`: runs a front-end compile unchanged and records the flags of the object it
//! writes, so the back end can reuse them. Anything that is not a compile to an object passes
//! straight through, so it can stand in for `CC` in any makefile.

use crate::flags::{output_of, record_path, SavedCompile};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE_EXTENSIONS: &[&str] = &[
    "c", "cc", "cpp", "cxx", "c++", "C", "m", "mm", "i", "ii", "S", "s", "bc", "ll",
];

/// The objects a compile command writes, or `None` when it is not a compile to objects.
pub fn compiled_objects(args: &[String]) -> Option<Vec<PathBuf>> {
    let stops = [
        "-E",
        "-S",
        "-M",
        "-MM",
        "-###",
        "-v",
        "--version",
        "-dumpversion",
        "-dumpmachine",
        "-fsyntax-only",
        "--help",
    ];
    if !args.iter().any(|a| a == "-c") || args.iter().any(|a| stops.contains(&a.as_str())) {
        return None;
    }
    if let Some(out) = output_of(args) {
        return Some(vec![PathBuf::from(out)]);
    }
    let objects: Vec<PathBuf> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .filter(|a| {
            Path::new(a)
                .extension()
                .is_some_and(|e| SOURCE_EXTENSIONS.contains(&e.to_string_lossy().as_ref()))
        })
        .filter_map(|a| {
            Path::new(a)
                .file_stem()
                .map(|s| PathBuf::from(format!("{}.o", s.to_string_lossy())))
        })
        .collect();
    (!objects.is_empty()).then_some(objects)
}

/// Runs the compile `command` and records its flags beside each object it writes and, when
/// `cache` is given, in the cache under the object's content.
pub fn run_cc(command: &[String], cache: Option<&crate::cache::DiskCache>) -> Result<i32> {
    let Some((compiler, args)) = command.split_first() else {
        bail!("no compiler command given (usage: thindist cc -- COMPILER ARGS...)");
    };
    let Some(objects) = compiled_objects(args) else {
        return crate::exec::pass_through(compiler, args);
    };
    let status = Command::new(compiler)
        .args(args)
        .status()
        .with_context(|| format!("cannot run the compiler {compiler}"))?;
    if !status.success() {
        return Ok(status.code().unwrap_or(1));
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let record = SavedCompile {
        argv: command.to_vec(),
        cwd: cwd.clone(),
    };
    let bytes = serde_json::to_vec(&record)?;
    let records = cache.map(crate::cache::DiskCache::records_dir);
    for object in objects {
        let object = cwd.join(&object);
        // `-o /dev/null` and the like: no object to describe, and nothing may be written
        // beside a device.
        if !std::fs::metadata(&object).is_ok_and(|m| m.is_file()) {
            continue;
        }
        if let Err(err) = crate::fsutil::write_atomic(&record_path(&object), &bytes) {
            crate::events::warn(format!("no flags record for {}: {err:#}", object.display()));
        }
        if let (Some(dir), Ok(digest)) = (&records, thindist_reapi::Digest::of_file(&object)) {
            // Best effort: the record beside the object is the one that must exist.
            let _ = crate::fsutil::write_atomic(&dir.join(format!("{}.json", digest.hash)), &bytes);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Vec<String> {
        x.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn finds_objects_of_compiles() {
        assert_eq!(
            compiled_objects(&s("-O2 -c a.c -o out/a.o")),
            Some(vec![PathBuf::from("out/a.o")])
        );
        assert_eq!(
            compiled_objects(&s("-c src/a.c src/b.cc")),
            Some(vec![PathBuf::from("a.o"), PathBuf::from("b.o")])
        );
        assert_eq!(compiled_objects(&s("-o prog a.o b.o")), None);
        assert_eq!(compiled_objects(&s("-E -c a.c")), None);
        assert_eq!(compiled_objects(&s("-dumpversion")), None);
    }
}
