//! `thindist distribute`: lld's DTLTO distributor protocol. lld writes a JSON job file (common
//! arguments and inputs, then per job its arguments, inputs and outputs) and runs
//! `DISTRIBUTOR ARGS... JSON`; the distributor runs every job and exits non-zero if any failed.
//!
//! Each job becomes an ordinary [`BackendJob`], so the same executors and cache serve both ways
//! in; a module with saved front-end flags is compiled with them instead of the common ones.

use crate::flags::{self, FlagSources};
use crate::job::{BackendJob, JobBuilder, JobFiles};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, serde::Deserialize)]
pub struct JobFile {
    pub common: Common,
    pub jobs: Vec<JobEntry>,
}

#[derive(Debug, serde::Deserialize)]
pub struct Common {
    #[serde(default)]
    pub linker_output: String,
    pub args: Vec<String>,
    #[serde(default)]
    pub inputs: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
pub struct JobEntry {
    pub args: Vec<String>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

pub fn parse_job_file(text: &str) -> Result<JobFile> {
    let file: JobFile = serde_json::from_str(text)
        .context("the DTLTO job file is not valid JSON of the expected shape")?;
    if file.common.args.is_empty() {
        bail!("the DTLTO job file has no common.args (the compiler to run)");
    }
    for (i, job) in file.jobs.iter().enumerate() {
        if job.inputs.len() < 2 || job.outputs.is_empty() {
            bail!("DTLTO job {i} needs at least a module and a shard in \"inputs\" and one \"outputs\" entry");
        }
    }
    Ok(file)
}

/// Options of the common arguments that every job keeps even when the module has its own saved
/// flags: they come from the link (`-mllvm`, profiles, the target).
fn link_level_options(common: &[String]) -> Vec<String> {
    let mut kept = Vec::new();
    let mut it = common.iter().skip(1);
    while let Some(arg) = it.next() {
        if arg == "-mllvm" {
            kept.push(arg.clone());
            kept.extend(it.next().cloned());
        } else if arg.starts_with("-fprofile-sample-use=")
            || arg.starts_with("-fbasic-block-sections=")
        {
            kept.push(arg.clone());
        }
    }
    kept
}

/// Turns the job file into back-end jobs, run in `cwd` (lld's working directory).
pub fn plan_jobs(
    file: &JobFile,
    cwd: &Path,
    sources: &FlagSources,
) -> Result<(Vec<BackendJob>, Vec<flags::FlagsProblem>)> {
    // A command built from saved flags leaves out lld's common arguments, and with them `-c`.
    let mut mode: Vec<String> = flags::BACKEND_MODE.map(String::from).into();
    mode.push("-c".to_string());
    let mut builder = JobBuilder::new(
        sources,
        cwd,
        file.common.args.clone(),
        link_level_options(&file.common.args),
        mode,
    )
    .with_compiler(file.common.args[0].clone())
    .with_common_inputs(file.common.inputs.iter().map(PathBuf::from).collect());
    let jobs = file
        .jobs
        .iter()
        .map(|entry| {
            builder.job(JobFiles {
                module: PathBuf::from(&entry.inputs[0]),
                shard: PathBuf::from(&entry.inputs[1]),
                imports: entry.inputs[2..].iter().map(PathBuf::from).collect(),
                native: PathBuf::from(&entry.outputs[0]),
                args: entry.args.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((jobs, builder.problems))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::FlagsSource;
    use proptest::prelude::*;

    const SAMPLE: &str = r#"{"common":{"linker_output":"prog","args":["/usr/bin/clang","-c","--target=x86_64-pc-linux-gnu","-O2","-mllvm","-x=1","-fpic"],"inputs":[]},
      "jobs":[{"args":["src/a.o","-fthinlto-index=a.1.9.native.o.thinlto.bc","-o","a.1.9.native.o"],
               "inputs":["src/a.o","a.1.9.native.o.thinlto.bc","src/b.o"],"outputs":["a.1.9.native.o"]}]}"#;

    #[test]
    fn jobs_without_saved_flags_use_common_args() {
        let dir = tempfile::tempdir().unwrap();
        let file = parse_job_file(SAMPLE).unwrap();
        let sources = FlagSources::new(None, vec![], dir.path()).unwrap();
        let (jobs, _) = plan_jobs(&file, dir.path(), &sources).unwrap();
        assert_eq!(
            jobs[0].command[..4],
            [
                "/usr/bin/clang",
                "-c",
                "--target=x86_64-pc-linux-gnu",
                "-O2"
            ]
        );
        assert_eq!(jobs[0].imports, vec![PathBuf::from("src/b.o")]);
        assert_eq!(jobs[0].native, PathBuf::from("a.1.9.native.o"));
        assert_eq!(jobs[0].flags_source, FlagsSource::LinkDerived);
    }

    #[test]
    fn saved_flags_replace_common_args() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("cc.json");
        std::fs::write(&db, serde_json::json!([{"directory": dir.path(), "file": "src/a.c",
            "arguments": ["clang-22", "-O1", "-ffunction-sections", "-c", "src/a.c", "-o", "src/a.o"]}]).to_string()).unwrap();
        let file = parse_job_file(SAMPLE).unwrap();
        let sources = FlagSources::new(Some(&db), vec![], dir.path()).unwrap();
        let (jobs, _) = plan_jobs(&file, dir.path(), &sources).unwrap();
        let cmd = &jobs[0].command;
        assert_eq!(
            cmd[..6],
            [
                "/usr/bin/clang",
                "-O1",
                "-ffunction-sections",
                "-mllvm",
                "-x=1",
                "-x"
            ]
        );
        assert!(!cmd.contains(&"-O2".to_string()));
    }

    #[test]
    fn malformed_job_files_are_rejected() {
        assert!(parse_job_file("{").is_err());
        assert!(parse_job_file(r#"{"common":{"args":[]},"jobs":[]}"#).is_err());
        assert!(parse_job_file(
            r#"{"common":{"args":["c"]},"jobs":[{"args":[],"inputs":["a"],"outputs":["b"]}]}"#
        )
        .is_err());
    }

    proptest! {
        #[test]
        fn parser_never_panics(text in ".*") {
            let _ = parse_job_file(&text);
        }

        #[test]
        fn every_job_is_planned(n in 0usize..20) {
            let dir = tempfile::tempdir().unwrap();
            let jobs: Vec<_> = (0..n).map(|i| serde_json::json!({"args": [format!("m{i}.o")],
                "inputs": [format!("m{i}.o"), format!("m{i}.bc")], "outputs": [format!("m{i}.native.o")]})).collect();
            let text = serde_json::json!({"common": {"args": ["clang", "-c"]}, "jobs": jobs}).to_string();
            let file = parse_job_file(&text).unwrap();
            let sources = FlagSources::new(None, vec![], dir.path()).unwrap();
            let (planned, _) = plan_jobs(&file, dir.path(), &sources).unwrap();
            prop_assert_eq!(planned.len(), n);
        }
    }
}
