//! Action keys. The recipe is explicit and versioned, as sccache's is: a format version, the
//! compiler's identity (its `--version` and the digest of its binary), the command with its
//! argv[0], its own output and shard names and the build directory taken out, and every input's
//! path and content digest.
//!
//! Paths are relative to the build directory because thindist runs the thin link with
//! relative module paths: the shards then record relative paths too, and a tree checked out in
//! two places gives the same keys. The shard and output names are replaced by placeholders, since
//! lld's DTLTO puts its process id in them; the shard still counts by its content.

use crate::job::BackendJob;
use anyhow::{Context, Result};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const KEY_FORMAT: &str = "thindist-backend-key-v1";

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Which compiler a job runs, precisely enough that another version never shares its results.
#[derive(Clone, Debug)]
pub struct CompilerIdentity {
    pub version: String,
    pub binary_digest: String,
}

impl CompilerIdentity {
    pub fn probe(compiler: &str) -> Result<CompilerIdentity> {
        let path =
            which(compiler).with_context(|| format!("compiler {compiler} not found on PATH"))?;
        let binary = std::fs::read(&path)
            .with_context(|| format!("cannot read compiler {}", path.display()))?;
        let output = std::process::Command::new(&path)
            .arg("--version")
            .output()
            .with_context(|| format!("cannot run {} --version", path.display()))?;
        Ok(CompilerIdentity {
            version: String::from_utf8_lossy(&output.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
            binary_digest: sha256_hex(&binary),
        })
    }
}

/// `program` as the OS would find it: a path as is, a bare name on PATH, symlinks resolved.
fn which(program: &str) -> Option<PathBuf> {
    let found = if program.contains('/') {
        Some(PathBuf::from(program))
    } else {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    };
    found.and_then(|p| p.canonicalize().ok())
}

/// Content digests of files, each file read once per run however many jobs import it.
#[derive(Default)]
pub struct Digests {
    by_path: Mutex<HashMap<PathBuf, thindist_reapi::Digest>>,
    compilers: Mutex<HashMap<String, CompilerIdentity>>,
}

impl Digests {
    /// The SHA-256 of a file, in hex.
    pub fn file(&self, path: &Path) -> Result<String> {
        Ok(self.file_digest(path)?.hash)
    }

    /// The file's digest as the Remote Execution API names blobs (hash and size).
    pub fn file_digest(&self, path: &Path) -> Result<thindist_reapi::Digest> {
        if let Some(d) = self.by_path.lock().unwrap().get(path) {
            return Ok(d.clone());
        }
        let digest = thindist_reapi::Digest::of_file(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        self.by_path
            .lock()
            .unwrap()
            .insert(path.to_path_buf(), digest.clone());
        Ok(digest)
    }

    pub fn compiler(&self, compiler: &str) -> Result<CompilerIdentity> {
        if let Some(id) = self.compilers.lock().unwrap().get(compiler) {
            return Ok(id.clone());
        }
        let id = CompilerIdentity::probe(compiler)?;
        self.compilers
            .lock()
            .unwrap()
            .insert(compiler.to_string(), id.clone());
        Ok(id)
    }
}

/// A job's key and what went into it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ActionKey {
    pub hex: String,
    /// The compiler's identity, as one line.
    pub compiler: String,
    /// The command as it enters the key.
    pub normalized_command: Vec<String>,
    /// (path relative to the build directory, SHA-256 of the contents), module first.
    pub inputs: Vec<(String, String)>,
}

/// The command with the compiler, this job's output and shard names, and the build directory
/// replaced by placeholders.
pub fn normalize_command(job: &BackendJob) -> Vec<String> {
    let native = job.native.to_string_lossy().into_owned();
    let shard = job.shard.to_string_lossy().into_owned();
    let cwd = format!("{}/", job.cwd.display());
    let mut out = vec!["<compiler>".to_string()];
    for arg in job.command.iter().skip(1) {
        out.push(
            arg.replace(&cwd, "")
                .replace(&native, "<native>")
                .replace(&shard, "<shard>"),
        );
    }
    out
}

fn relative(path: &Path, cwd: &Path) -> String {
    crate::fsutil::relative_below(path, cwd)
        .to_string_lossy()
        .into_owned()
}

pub fn action_key(job: &BackendJob, digests: &Digests) -> Result<ActionKey> {
    let identity = digests.compiler(&job.command[0])?;
    let compiler = format!("{} sha256:{}", identity.version, identity.binary_digest);
    let normalized_command = normalize_command(job);
    let mut inputs = Vec::with_capacity(job.imports.len() + 2);
    let named = std::iter::once((relative(&job.module, &job.cwd), &job.module))
        .chain(std::iter::once(("<shard>".to_string(), &job.shard)))
        .chain(
            job.imports
                .iter()
                .chain(&job.extra_inputs)
                .map(|p| (relative(p, &job.cwd), p)),
        );
    for (name, path) in named {
        let digest = digests
            .file(&job.cwd.join(path))
            .with_context(|| format!("input of the back end of {}", job.module.display()))?;
        inputs.push((name, digest));
    }
    let mut hasher = sha2::Sha256::new();
    let mut line = |text: &str| {
        hasher.update(text.as_bytes());
        hasher.update(b"\n");
    };
    line(KEY_FORMAT);
    line(&compiler);
    for arg in &normalized_command {
        line(&format!("arg {arg}"));
    }
    for (name, digest) in &inputs {
        line(&format!("input {name} {digest}"));
    }
    Ok(ActionKey {
        hex: hex::encode(hasher.finalize()),
        compiler,
        normalized_command,
        inputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::FlagsSource;
    use proptest::prelude::*;

    fn job_in(dir: &Path, native: &str, shard: &str) -> BackendJob {
        std::fs::write(dir.join("a.o"), b"module").unwrap();
        std::fs::write(dir.join("b.o"), b"import").unwrap();
        std::fs::write(dir.join(shard), b"shard").unwrap();
        BackendJob {
            module: "a.o".into(),
            shard: shard.into(),
            imports: vec!["b.o".into()],
            extra_inputs: vec![],
            native: native.into(),
            published: None,
            command: vec![
                "sh".into(),
                "-O2".into(),
                format!("-fthinlto-index={shard}"),
                "-c".into(),
                "a.o".into(),
                "-o".into(),
                native.into(),
                format!("-fprofile-sample-use={}/p.prof", dir.display()),
            ],
            cwd: dir.to_path_buf(),
            flags_source: FlagsSource::LinkDerived,
            size: 6,
        }
    }

    #[test]
    fn keys_do_not_depend_on_location_or_temporary_names() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let k1 = action_key(
            &job_in(d1.path(), "a.1.111.native.o", "a.1.111.bc"),
            &Digests::default(),
        )
        .unwrap();
        let k2 = action_key(
            &job_in(d2.path(), "a.1.222.native.o", "a.1.222.bc"),
            &Digests::default(),
        )
        .unwrap();
        assert_eq!(k1, k2);
    }

    #[test]
    fn keys_change_with_any_input_or_argument() {
        let d = tempfile::tempdir().unwrap();
        let job = job_in(d.path(), "n.o", "s.bc");
        let base = action_key(&job, &Digests::default()).unwrap().hex;
        std::fs::write(d.path().join("b.o"), b"import changed").unwrap();
        assert_ne!(action_key(&job, &Digests::default()).unwrap().hex, base);
        let job = job_in(d.path(), "n.o", "s.bc");
        let mut other = job.clone();
        other.command[1] = "-O3".into();
        assert_ne!(action_key(&other, &Digests::default()).unwrap().hex, base);
        std::fs::write(d.path().join("s.bc"), b"other shard").unwrap();
        assert_ne!(action_key(&job, &Digests::default()).unwrap().hex, base);
    }

    #[test]
    fn missing_input_names_the_module() {
        let d = tempfile::tempdir().unwrap();
        let mut job = job_in(d.path(), "n.o", "s.bc");
        job.imports.push("gone.o".into());
        let err = action_key(&job, &Digests::default()).unwrap_err();
        assert!(format!("{err:#}").contains("gone.o") && format!("{err:#}").contains("a.o"));
    }

    proptest! {
        /// Normalization removes the build directory wherever it appears and nothing else.
        #[test]
        fn normalization_strips_only_the_build_directory(args in proptest::collection::vec("[a-z=./-]{0,12}", 0..6)) {
            let mut job = job_in(tempfile::tempdir().unwrap().path(), "n.o", "s.bc");
            job.cwd = PathBuf::from("/build/tree");
            job.command = std::iter::once("cc".to_string()).chain(args.iter().map(|a| format!("/build/tree/{a}"))).collect();
            let normalized = normalize_command(&job);
            for (n, a) in normalized.iter().skip(1).zip(&args) {
                let expected = a.replace("n.o", "<native>").replace("s.bc", "<shard>");
                prop_assert_eq!(n, &expected);
            }
        }
    }
}
