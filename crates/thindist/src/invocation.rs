//! What the user ran: the real linker and its arguments (an lld command, or the lld command a
//! clang driver runs), the linker `thindist-ld` stands in for, the compiler that matches it,
//! and the commands of the calling shell.

use crate::cmdline;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// The real linker and its arguments, from what the user ran.
pub struct LinkerInvocation {
    pub linker: String,
    pub args: Vec<String>,
    /// The clang driver that named this linker, if the link came through one.
    pub driver: Option<String>,
}

fn is_compiler_driver(program: &str) -> bool {
    let name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.contains("clang") || name == "cc" || name == "c++"
}

/// Resolves `LINKER ARGS...`: an lld command as is, or a clang driver command turned into the
/// lld command it runs (`-###`).
pub fn resolve_invocation(command: &[String], cwd: &Path) -> Result<LinkerInvocation> {
    let Some((program, args)) = command.split_first() else {
        bail!("no linker command given (usage: thindist ld -- LINKER ARGS...)");
    };
    if !is_compiler_driver(program) {
        return Ok(LinkerInvocation {
            linker: program.clone(),
            args: args.to_vec(),
            driver: None,
        });
    }
    let output = Command::new(program)
        .args(args)
        .arg("-###")
        .current_dir(cwd)
        .output()
        .with_context(|| format!("cannot run the compiler driver {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} -### failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8_lossy(&output.stderr);
    let jobs: Vec<Vec<String>> = text
        .lines()
        .filter(|l| l.starts_with(" \""))
        .map(cmdline::tokenize_gnu)
        .collect();
    match jobs.as_slice() {
        [link] if link.first().is_some_and(|l| l.contains("ld")) => Ok(LinkerInvocation {
            linker: link[0].clone(),
            args: link[1..].to_vec(),
            driver: Some(program.clone()),
        }),
        _ => bail!(
            "{program} runs {} commands for this invocation; thindist ld takes a pure link (compile sources separately)",
            jobs.len()
        ),
    }
}

/// Guesses the clang that matches a linker: `ld.lld-22` -> `clang-22` beside it.
pub fn default_compiler(invocation: &LinkerInvocation) -> String {
    if let Some(driver) = &invocation.driver {
        return driver.clone();
    }
    let linker = Path::new(&invocation.linker);
    let name = linker
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clang = match name.strip_prefix("ld.lld") {
        Some(suffix) => format!("clang{suffix}"),
        None => "clang".to_string(),
    };
    match linker.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) if dir.join(&clang).exists() => dir.join(&clang).to_string_lossy().into_owned(),
        _ => clang,
    }
}

/// The file `path` names, symlinks followed: (device, inode).
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The real linker for `thindist-ld`: `THINDIST_LINKER`, else the first `ld.lld` (or
/// `ld.lld-N`, newest first) on PATH. Never thindist itself, under any name or path (compared
/// by device and inode): as its own linker, `thindist-ld` would start itself without end.
pub fn real_linker() -> Result<String> {
    let me = std::env::current_exe().ok().and_then(|p| file_id(&p));
    let is_me = |path: &Path| me.is_some() && file_id(path) == me;
    if let Some(linker) = std::env::var("THINDIST_LINKER")
        .ok()
        .filter(|l| !l.is_empty())
    {
        if which::which(&linker).is_ok_and(|p| is_me(&p)) {
            bail!("THINDIST_LINKER={linker} is thindist itself, which would run itself without end: name the real linker (e.g. THINDIST_LINKER=ld.lld-22)");
        }
        return Ok(linker);
    }
    let mut names = vec!["ld.lld".to_string()];
    names.extend((14..=40).rev().map(|v| format!("ld.lld-{v}")));
    let found = names
        .iter()
        .filter_map(|name| which::which_all(name).ok())
        .flatten()
        .find(|candidate| !is_me(candidate));
    found
        .map(|found| found.to_string_lossy().into_owned())
        .context("no real linker found: set THINDIST_LINKER (e.g. THINDIST_LINKER=ld.lld-22) or put ld.lld on PATH")
}

/// The commands of the shell that started this process, when that is `sh -c SCRIPT`: kbuild
/// links single-object modules in the same shell command that compiles them.
pub fn parent_shell_commands() -> Vec<Vec<String>> {
    let ppid = std::os::unix::process::parent_id();
    let Ok(raw) = std::fs::read(format!("/proc/{ppid}/cmdline")) else {
        return Vec::new();
    };
    let argv: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    match argv.iter().position(|a| a == "-c") {
        Some(i) if argv.get(i + 1).is_some() => crate::shell::split_commands(&argv[i + 1]),
        _ => Vec::new(),
    }
}
