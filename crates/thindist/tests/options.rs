//! Where options come from and what they limit: make's jobserver, `-j`, environment variables
//! and `thindist.toml`.

mod util;

use util::{many_modules, many_objects, max_parallel_jobs, thindist};

#[test]
fn make_jobserver_sets_parallel_jobs() {
    let p = many_modules(12);
    let makefile = format!(
        "prog: {objs}\n\t+{thindist} ld --trace trace.json -- ld.lld-22 -e main -o $@ $^\n",
        objs = many_objects(12).join(" "),
        thindist = thindist()
    );
    std::fs::write(p.path("Makefile"), makefile).unwrap();
    // With more slots than this machine has CPUs, only the jobserver can explain going past
    // the CPU count.
    let cpus = std::thread::available_parallelism().unwrap().get();
    let slots = cpus + 2;
    let out = p
        .cmd("make")
        .arg(format!("-j{slots}"))
        .arg("prog")
        .current_dir(p.dir())
        .env_remove("THINDIST_JOBS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let most = max_parallel_jobs(&p.path("trace.json"));
    assert!(
        most > cpus && most <= slots,
        "{most} jobs at once under make -j{slots} on {cpus} CPUs"
    );
}

#[test]
fn jobs_come_from_the_command_line_the_environment_or_the_config_file() {
    let p = many_modules(8);
    let link = |extra: &[&str], env: &[(&str, &str)]| {
        let mut cmd = p.cmd(thindist());
        // Without the cache, so that each link runs its jobs (an unchanged one would be restored).
        cmd.arg("ld").args(extra).args([
            "--no-cache",
            "--trace",
            "trace.json",
            "--",
            "ld.lld-22",
            "-e",
            "main",
            "-o",
            "prog",
        ]);
        cmd.args(many_objects(8))
            .current_dir(p.dir())
            .env_remove("THINDIST_JOBS")
            .env_remove("MAKEFLAGS");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        max_parallel_jobs(&p.path("trace.json"))
    };
    assert_eq!(link(&["-j1"], &[]), 1);
    assert_eq!(link(&[], &[("THINDIST_JOBS", "1")]), 1);
    std::fs::write(p.path("thindist.toml"), "jobs = 1\n").unwrap();
    assert_eq!(link(&[], &[]), 1, "the config file applies");
    std::fs::write(p.path("thindist.toml"), "jobs = \n").unwrap();
    let out = p
        .cmd(thindist())
        .args(["ld", "--", "ld.lld-22", "-o", "x", "main.o"])
        .current_dir(p.dir())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("thindist.toml is not valid TOML"),
        "{err}"
    );
}

#[test]
fn thindist_ld_symlink_reads_options_from_the_environment() {
    let p = many_modules(4);
    let link = p.path("thindist-ld");
    std::os::unix::fs::symlink(thindist(), &link).unwrap();
    let out = p
        .cmd(&link)
        .args(["-e", "main", "-o", "prog"])
        .args(many_objects(4))
        .current_dir(p.dir())
        .env("THINDIST_LINKER", "ld.lld-22")
        .env("THINDIST_JOBS", "1")
        .env("THINDIST_TRACE", "trace.json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(max_parallel_jobs(&p.path("trace.json")), 1);
    let out = p
        .cmd(&link)
        .arg("--version")
        .env("THINDIST_LINKER", "ld.lld-22")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("LLD"));
}

#[test]
fn parallel_links_under_make_do_not_wait_for_tokens_nobody_holds() {
    // Two links run at once under make -j2: each holds one of make's two slots, so no token is
    // ever free. Each must finish its jobs on its own slot instead of waiting for a token.
    let p = many_modules(6);
    let objs = many_objects(6).join(" ");
    let makefile = format!(
        "all: prog1 prog2\nprog1 prog2: {objs}\n\t+{thindist} ld --trace $@.json -- ld.lld-22 -e main -o $@ $^\n",
        thindist = thindist()
    );
    std::fs::write(p.path("Makefile"), makefile).unwrap();
    let out = p
        .cmd("timeout")
        .args(["120", "make", "-j2", "all"])
        .current_dir(p.dir())
        .env_remove("THINDIST_JOBS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make did not finish: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(p.path("prog1").exists() && p.path("prog2").exists());
}

#[test]
fn cache_lookups_under_make_give_back_the_tokens_they_take() {
    // The second link takes every module from the cache, its lookups on make's implicit slot
    // and the tokens free at once; make counts its tokens when it exits and complains of any
    // not given back.
    let p = many_modules(6);
    let objs = many_objects(6).join(" ");
    let makefile = format!(
        "prog1 prog2: {objs}\n\t+{thindist} ld -- ld.lld-22 -e main -o $@ $^\n",
        thindist = thindist()
    );
    std::fs::write(p.path("Makefile"), makefile).unwrap();
    for target in ["prog1", "prog2"] {
        let out = p
            .cmd("timeout")
            .args(["120", "make", "-j3", target])
            .current_dir(p.dir())
            .env_remove("THINDIST_JOBS")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "make {target}: {:?}\n{err}",
            out.status
        );
        assert!(!err.contains("jobserver"), "make {target}: {err}");
        if target == "prog2" {
            assert!(err.contains(" 0 misses"), "{err}");
        }
    }
    assert!(p.path("prog2").exists());
}

#[test]
fn boolean_options_accept_the_usual_spellings_in_the_environment() {
    let p = many_modules(2);
    for value in ["1", "true", "yes", "on"] {
        let out = p
            .cmd(thindist())
            .args(["ld", "--", "ld.lld-22", "-e", "main", "-o", "prog"])
            .args(many_objects(2))
            .current_dir(p.dir())
            .env("THINDIST_VERBOSE", value)
            .env("THINDIST_NO_CACHE", value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "THINDIST_VERBOSE={value}: {err}");
        assert!(
            err.contains("-fthinlto-index="),
            "verbose prints the commands: {err}"
        );
    }
}

#[test]
fn install_links_creates_a_working_thindist_ld_and_replaces_nothing() {
    let p = many_modules(2);
    let bin = p.path("bin");
    let install = || {
        p.cmd(thindist())
            .args(["install-links"])
            .arg(&bin)
            .output()
            .unwrap()
    };
    let out = install();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = p
        .cmd(bin.join("thindist-ld"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("LLD"));
    // Again: already there, nothing to do.
    let out = install();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Something else of that name is left alone.
    std::fs::remove_file(bin.join("thindist-ld")).unwrap();
    std::fs::write(bin.join("thindist-ld"), "mine").unwrap();
    let out = install();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a link to"));
    assert_eq!(
        std::fs::read_to_string(bin.join("thindist-ld")).unwrap(),
        "mine"
    );
}
