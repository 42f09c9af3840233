//! Builds the fork server's preload library (preload/forkserver.c) as a shared object, to be
//! embedded in the thindist binary: `cargo install` then gives a tool that needs no other file.
//! C, not a Rust cdylib, because cargo cannot hand one crate's cdylib to another's build.

fn main() {
    let source = "preload/forkserver.c";
    println!("cargo:rerun-if-changed={source}");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap())
        .join("libthindist-forkserver.so");
    let compiler = cc::Build::new().get_compiler();
    let status = compiler
        .to_command()
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(source)
        .arg("-ldl")
        .status()
        .expect("cannot run the C compiler to build the fork server's preload library");
    assert!(status.success(), "building {source} failed");
}
