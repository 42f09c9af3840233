//! Link-time code-generation options reach the back ends with the effect ld.lld 22 gives them
//! in-process: every `-f` option the clang 22 driver turns into a `-plugin-opt=`, each row of
//! thindist's option table (`ltoopts`), and Linux 7.x's AutoFDO and Propeller link options. The
//! effects are read from the outputs (sections, symbols, vector registers) of both links.

mod util;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use util::{thindist, SmallProject};

/// `hot` has a block the profile says never runs: machine function splitting moves it to
/// `.text.split.hot` as `hot.cold`. The profile's line offsets follow this layout.
const MAIN: &str = "int g(int x);
__attribute__((noinline)) int hot(int x){
  int s=0;
  for(int i=0;i<x;i++){
    if (x>1000000) {
      s+=g(i);
      s^=g(s);
      s+=g(s*3);
    } else
      s+=i*x;
  }
  return s;
}
void scale(int *a, const int *b, int n);
int bump(void);
int main(int c, char **v){ (void)v; int a[64], b[64]; for (int i = 0; i < 64; i++) b[i] = i * c; scale(a, b, 64); return (hot(c) + a[63] + bump()) & 1; }
";

/// A text AutoFDO profile of `hot` (line offsets from its first line) and `main`.
const PROFILE: &str = "hot:100000:1\n 0: 1\n 1: 1\n 2: 10000\n 3: 10000\n 4: 0\n 5: 0\n 6: 0\n 8: 10000\n 10: 1\nmain:100:1\n 0: 1\n";

/// A Propeller cluster profile: `hot`'s entry block alone in its section, the rest split off.
const PROPELLER: &str = "v1\nf hot\nc 0\n";

const OBJECTS: &[&str] = &["main.o", "g.o", "vec.o", "tls.o"];

/// The AutoFDO-compiled main module, and plain -O2 modules with a leaf, a vectorizable loop and
/// a thread-local variable.
fn project() -> SmallProject {
    let p = SmallProject::new(&[
        ("main.c", MAIN),
        ("g.c", "int g(int x) { return x * 7; }\n"),
        (
            "vec.c",
            "void scale(int *restrict a, const int *restrict b, int n) { for (int i = 0; i < n; i++) a[i] = b[i] * 3 + 1; }\n",
        ),
        ("tls.c", "__thread int tv;\nint bump(void) { return ++tv; }\n"),
    ]);
    std::fs::write(p.path("prof.txt"), PROFILE).unwrap();
    std::fs::write(p.path("bb.txt"), PROPELLER).unwrap();
    for object in OBJECTS {
        let source = object.replace(".o", ".c");
        let mut cmd = p.cmd("clang-22");
        if source == "main.c" {
            cmd.args([
                "-gline-tables-only",
                "-fdebug-info-for-profiling",
                "-fprofile-sample-use=prof.txt",
            ]);
        }
        ok(
            cmd.args(["-O2", "-flto=thin", "-c", &source, "-o", object])
                .output()
                .unwrap(),
            &format!("compiling {source}"),
        );
    }
    p
}

fn ok(out: Output, what: &str) -> String {
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

fn tool(name: &str, args: &[&str], file: &Path) -> String {
    let out = Command::new(name).args(args).arg(file).output().unwrap();
    assert!(out.status.success(), "{name} {}", file.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What an object or program shows of its code generation: its section names, its symbol
/// names, and `<xmm>` when its code uses vector registers.
fn facts(file: &Path) -> BTreeSet<String> {
    let mut facts = BTreeSet::new();
    for line in tool("llvm-readelf-22", &["-S", "--wide"], file).lines() {
        if let Some((_, rest)) = line.split_once("] ") {
            if let Some(name) = rest.split_whitespace().next() {
                facts.insert(name.to_string());
            }
        }
    }
    for line in tool("llvm-readelf-22", &["-s", "--wide"], file).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() == 8 && fields[0].ends_with(':') {
            facts.insert(fields[7].to_string());
        }
    }
    if tool("llvm-objdump-22", &["-d"], file).contains("%xmm") {
        facts.insert("<xmm>".into());
    }
    facts
}

fn has(facts: &BTreeSet<String>, fact: &str) -> bool {
    facts.iter().any(|f| f.contains(fact))
}

/// One row of the option table: link options and what they do to the output (a fact that
/// contains this text is there or not).
struct Case {
    link: &'static [&'static str],
    expect: &'static [(&'static str, bool)],
}

const CASES: &[Case] = &[
    // lld's defaults: a section per function, vectorized loops, nothing else.
    Case {
        link: &[],
        expect: &[
            (".text.g", true),
            ("<xmm>", true),
            (".text.split.", false),
            (".llvm_bb_addr_map", false),
            (".stack_sizes", false),
            ("__emutls_v.tv", false),
        ],
    },
    // Linux 7.x scripts/Makefile.autofdo (CONFIG_LTO_CLANG_THIN, with a profile).
    Case {
        link: &[
            "--mllvm=-enable-fs-discriminator=true",
            "--mllvm=-improved-fs-discriminator=true",
            "-plugin-opt=thinlto",
            "-plugin-opt=-split-machine-functions",
            "--lto-sample-profile=prof.txt",
        ],
        expect: &[(".text.split.hot", true), ("hot.cold", true)],
    },
    // Linux 7.x scripts/Makefile.propeller without a profile, lld >= 20.
    Case {
        link: &["--lto-basic-block-address-map"],
        expect: &[(".llvm_bb_addr_map", true)],
    },
    // Makefile.propeller with a profile (it filters -split-machine-functions out).
    Case {
        link: &["--lto-basic-block-sections=bb.txt"],
        expect: &[(".text.split.hot", true), (".llvm_bb_addr_map", false)],
    },
    // Makefile.propeller's spelling for lld < 20: lld 22 ignores it.
    Case {
        link: &["--lto-basic-block-sections=labels"],
        expect: &[(".llvm_bb_addr_map", false)],
    },
    // The LLVM flag: lld 22 sets the address map from its own option only.
    Case {
        link: &["-plugin-opt=-basic-block-address-map"],
        expect: &[(".llvm_bb_addr_map", false)],
    },
    Case {
        link: &["--lto-basic-block-sections=all"],
        expect: &[(".text.hot.hot.hot.__part.", false), ("hot.__part.1", true)],
    },
    Case {
        link: &[
            "--lto-basic-block-sections=all",
            "--lto-unique-basic-block-section-names",
        ],
        expect: &[(".text.hot.hot.hot.__part.1", true)],
    },
    Case {
        link: &[
            "-plugin-opt=-split-machine-functions",
            "--lto-sample-profile=prof.txt",
        ],
        expect: &[("hot.cold", true)],
    },
    Case {
        link: &["-plugin-opt=-stack-size-section"],
        expect: &[(".stack_sizes", true)],
    },
    Case {
        link: &["-plugin-opt=-emulated-tls"],
        expect: &[("__emutls_v.tv", true)],
    },
    Case {
        link: &["-plugin-opt=-call-graph-section"],
        expect: &[(".llvm.callgraph", true)],
    },
    Case {
        link: &["-plugin-opt=-enable-jmc-instrument"],
        expect: &[("__CheckForDebuggerJustMyCode", true)],
    },
    // The driver's -f[no-]function-sections, -f[no-]data-sections: lld sections LTO code
    // either way.
    Case {
        link: &[
            "-plugin-opt=-function-sections=1",
            "-plugin-opt=-data-sections=1",
        ],
        expect: &[(".text.g", true)],
    },
    Case {
        link: &[
            "-plugin-opt=-function-sections=0",
            "-plugin-opt=-data-sections=0",
        ],
        expect: &[(".text.g", true)],
    },
    Case {
        link: &["-plugin-opt=-unique-section-names=0"],
        expect: &[(".text.g", false)],
    },
    // No vectorizer below -O2.
    Case {
        link: &["--lto-O1"],
        expect: &[("<xmm>", false)],
    },
    Case {
        link: &["-plugin-opt=O1"],
        expect: &[("<xmm>", false)],
    },
    Case {
        link: &["--lto-O3"],
        expect: &[("<xmm>", true)],
    },
    // Thin-link-only and no-effect rows, and an LLVM option clang registers too.
    Case {
        link: &[
            "--lto-whole-program-visibility",
            "--lto-validate-all-vtables-have-type-infos",
            "--no-lto-pgo-warn-mismatch",
            "-plugin-opt=mcpu=x86-64",
            "--thinlto-jobs=1",
            "-mllvm",
            "-import-instr-limit=5",
        ],
        expect: &[(".text.g", true)],
    },
    // The driver's -ggdb and -mtls-dialect=gnu2 (no effect on a relocatable link's code).
    Case {
        link: &[
            "-plugin-opt=-debugger-tune=gdb",
            "-plugin-opt=-enable-tlsdesc",
        ],
        expect: &[(".text.g", true)],
    },
];

#[test]
fn each_table_option_has_its_in_process_effect() {
    let p = project();
    for case in CASES {
        let what = case.link.join(" ");
        ok(
            p.cmd("ld.lld-22")
                .args(["-r", "-o", "inproc.o"])
                .args(case.link)
                .args(OBJECTS)
                .output()
                .unwrap(),
            &format!("in-process link with {what}"),
        );
        ok(
            p.cmd(thindist())
                .args(["ld", "--no-cache", "--", "ld.lld-22", "-r", "-o", "dist.o"])
                .args(case.link)
                .args(OBJECTS)
                .output()
                .unwrap(),
            &format!("thindist link with {what}"),
        );
        let inproc = facts(&p.path("inproc.o"));
        let dist = facts(&p.path("dist.o"));
        for (fact, expected) in case.expect {
            assert_eq!(
                has(&inproc, fact),
                *expected,
                "in-process with [{what}]: {fact}: {inproc:?}"
            );
            assert_eq!(
                has(&dist, fact),
                *expected,
                "thindist with [{what}]: {fact}: {dist:?}"
            );
        }
    }
}

/// The `-plugin-opt=` options `clang-22 -###` passes for a link with `extra`.
fn driver_plugin_opts(p: &SmallProject, extra: &[&str]) -> BTreeSet<String> {
    let out = p
        .cmd("clang-22")
        .args(["-###", "-flto=thin", "-fuse-ld=lld"])
        .args(extra)
        .args(["-o", "x", "main.o"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()
        .unwrap_or("")
        .split('"')
        .filter(|t| t.starts_with("-plugin-opt="))
        .map(String::from)
        .collect()
}

/// Every `-f` option of `clang-22 --help` for which the driver adds a `-plugin-opt=` to an LTO
/// link.
fn driver_lto_options(p: &SmallProject) -> Vec<String> {
    let help = Command::new("clang-22").arg("--help").output().unwrap();
    let candidates: Vec<String> = String::from_utf8_lossy(&help.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("  -f"))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .map(|name| format!("-f{name}"))
        .collect();
    let base = driver_plugin_opts(p, &[]);
    let chunks: Vec<&[String]> = candidates.chunks(candidates.len() / 4 + 1).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let base = &base;
                s.spawn(move || {
                    chunk
                        .iter()
                        .filter(|f| !driver_plugin_opts(p, &[f.as_str()]).is_subset(base))
                        .cloned()
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

#[test]
fn every_driver_codegen_option_links_through_thindist_ld_as_in_process() {
    let p = project();
    let found = driver_lto_options(&p);
    for expected in [
        "-ffunction-sections",
        "-fdata-sections",
        "-fsplit-machine-functions",
        "-femulated-tls",
        "-fstack-size-section",
    ] {
        assert!(
            found.iter().any(|f| f == expected),
            "{expected} not in {found:?}"
        );
    }
    let link_in_process = |options: &[&str], output: &str| {
        p.cmd("clang-22")
            .args([
                "-flto=thin",
                "-fuse-ld=lld",
                "-fprofile-sample-use=prof.txt",
            ])
            .args(options)
            .args(["-o", output])
            .args(OBJECTS)
            .output()
            .unwrap()
    };
    // Options go into groups that link in-process together (some exclude each other, such as
    // -fcodegen-data-generate and -fcodegen-data-use); options whose in-process link fails
    // alone (a runtime library this machine lacks, an unfinished instruction selector) have
    // nothing to compare with.
    let mut groups: Vec<Vec<&str>> = Vec::new();
    let mut unusable = Vec::new();
    for option in &found {
        let fits = |group: &Vec<&str>| {
            let mut with: Vec<&str> = group.clone();
            with.push(option);
            link_in_process(&with, "probe").status.success()
        };
        match groups.iter().position(fits) {
            Some(i) => groups[i].push(option),
            None if fits(&Vec::new()) => groups.push(vec![option]),
            None => unusable.push(option),
        }
    }
    eprintln!("driver LTO options linked in groups {groups:?}; failing in-process: {unusable:?}");
    let linker = p.path("thindist-ld");
    std::os::unix::fs::symlink(thindist(), &linker).unwrap();
    for options in &groups {
        let what = options.join(" ");
        ok(
            link_in_process(options, "prog-inproc"),
            &format!("in-process link with {what}"),
        );
        ok(
            p.cmd("clang-22")
                .arg(format!("--ld-path={}", linker.display()))
                .args(["-flto=thin", "-fprofile-sample-use=prof.txt"])
                .args(options)
                .args(["-o", "prog-thindist"])
                .args(OBJECTS)
                .env("THINDIST_LINKER", "ld.lld-22")
                .env("THINDIST_KEEP_NATIVES", "1")
                .output()
                .unwrap(),
            &format!("clang-22 --ld-path=thindist-ld with {what}"),
        );
        assert!(
            p.path("main.thinlto-native.o").is_file(),
            "thindist linked it"
        );
        std::fs::remove_file(p.path("main.thinlto-native.o")).unwrap();
        let inproc = facts(&p.path("prog-inproc"));
        let dist = facts(&p.path("prog-thindist"));
        assert_eq!(inproc, dist, "with {what}");
        let run = |prog: &str| Command::new(p.path(prog)).output().unwrap().status;
        assert_eq!(run("prog-inproc"), run("prog-thindist"));
        if options.contains(&"-fstack-size-section") {
            for effect in [".stack_sizes", "__emutls_v.tv", "hot.cold"] {
                assert!(has(&dist, effect), "{effect} with {what}: {dist:?}");
            }
        }
    }
}

#[test]
fn options_no_back_end_takes_stop_the_link_before_any_job() {
    let p = project();
    for (link, says) in [
        (
            &["-plugin-opt=-relocation-model=pic"][..],
            &[
                "`-plugin-opt=-relocation-model=pic`",
                "rejects the link's LLVM option",
            ][..],
        ),
        (&["--lto-emit-asm"], &["`--lto-emit-asm`", "assembly"]),
        (&["--lto-CGO1"], &["`--lto-CGO1`", "--lto-O"]),
        (
            &["-mllvm", "-import-instr-limit=many"],
            &[
                "`-mllvm -import-instr-limit=many`",
                "rejects the link's LLVM option",
            ],
        ),
        (
            &["-mllvm", "-always-rename-promoted-locals=false"],
            &[
                "-always-rename-promoted-locals=false",
                "LLVM 23",
                "is LLVM 22",
            ],
        ),
    ] {
        let out = p
            .cmd(thindist())
            .args([
                "ld",
                "--no-cache",
                "--keep-natives",
                "--",
                "ld.lld-22",
                "-r",
                "-o",
                "out.o",
            ])
            .args(link)
            .args(OBJECTS)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{link:?} was accepted: {err}");
        for text in says {
            assert!(err.contains(text), "{link:?}: no {text:?} in: {err}");
        }
        assert!(!err.contains("back-end compile of"), "{err}");
        assert!(!p.path("out.o").exists());
        for object in OBJECTS {
            let native = p.path(&object.replace(".o", ".thinlto-native.o"));
            assert!(
                !native.exists(),
                "{link:?}: a back end ran: {}",
                native.display()
            );
        }
    }
}

#[test]
fn the_compiler_is_asked_once_whether_it_takes_the_links_llvm_options() {
    use std::os::unix::fs::PermissionsExt;
    let p = SmallProject::new(&[
        ("main.c", "int g(int);\nint main(void) { return g(0); }\n"),
        ("g.c", "int g(int x) { return x; }\n"),
    ]);
    p.compile_all(&["-O2"]);
    let wrapper = p.path("clang-logged");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >>{}\nexec clang-22 \"$@\"\n",
            p.path("compiler.log").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let probes = || {
        std::fs::read_to_string(p.path("compiler.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("-c /dev/null -o /dev/null"))
            .count()
    };
    let link = |options: &[&str], output: &str, limit: u32| {
        let wrapper = wrapper.to_str().unwrap();
        let mut options = options.to_vec();
        options.extend(["--compiler", wrapper]);
        let limit = format!("-import-instr-limit={limit}");
        let out = p.ld_with(
            &options,
            &["-r", "-mllvm", &limit, "main.o", "g.o", "-o", output],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    link(&[], "one.o", 5);
    assert_eq!(probes(), 1);
    link(&[], "two.o", 5);
    assert_eq!(probes(), 1, "the same compiler and options: remembered");
    link(&[], "three.o", 7);
    assert_eq!(probes(), 2, "other options are asked about");
    link(&["--no-cache"], "four.o", 7);
    assert_eq!(probes(), 3, "without a cache nothing is remembered");
}

/// The rule where a module's flags and the link both speak: the link's option applies to every
/// module, after the module's own (as in-process, where the link's are the only ones); where
/// the link says nothing, the module's own flag stands, even against lld's in-process default.
#[test]
fn link_options_win_over_module_flags_where_they_speak() {
    let p = SmallProject::new(&[
        (
            "vec.c",
            "void scale(int *restrict a, const int *restrict b, int n) { for (int i = 0; i < n; i++) a[i] = b[i] * 3 + 1; }\n",
        ),
        ("split.c", "int split_one(int x) { return x * 17; }\n"),
        ("plain.c", "int plain_one(int x) { return x * 19; }\n"),
    ]);
    let module_flags = [
        ("vec", &["-O2"][..]),
        ("split", &["-O2", "-ffunction-sections"]),
        ("plain", &["-O2"]),
    ];
    for (stem, flags) in module_flags {
        let (source, object) = (format!("{stem}.c"), format!("{stem}.o"));
        let mut argv = vec!["clang-22"];
        argv.extend(flags);
        argv.extend(["-flto=thin", "-c", &source, "-o", &object]);
        ok(
            p.cmd(argv[0]).args(&argv[1..]).output().unwrap(),
            &format!("compiling {source}"),
        );
        p.write_record(&object, &argv);
    }
    let link = |options: &[&str]| {
        let mut args = vec!["-r", "-o", "out.o"];
        args.extend(options);
        args.extend(["vec.o", "split.o", "plain.o"]);
        let err = ok(
            p.ld_with(&["--no-cache", "--keep-natives"], &args),
            &format!("link with {options:?}"),
        );
        assert!(!err.contains("no saved flags"), "{err}");
        (
            facts(&p.path("vec.thinlto-native.o")),
            facts(&p.path("split.thinlto-native.o")),
            facts(&p.path("plain.thinlto-native.o")),
        )
    };
    // The link says nothing: each module's own flags.
    let (vec, split, plain) = link(&[]);
    assert!(has(&vec, "<xmm>"), "-O2 vectorizes: {vec:?}");
    assert!(has(&split, ".text.split_one"), "{split:?}");
    assert!(!has(&plain, ".text.plain_one"), "{plain:?}");
    // The link speaks: its level and its function sections for every module.
    let (vec, split, plain) = link(&["--lto-O1", "-plugin-opt=-function-sections=1"]);
    assert!(
        !has(&vec, "<xmm>"),
        "--lto-O1 beats the module's -O2: {vec:?}"
    );
    assert!(has(&split, ".text.split_one"), "{split:?}");
    assert!(has(&plain, ".text.plain_one"), "{plain:?}");
    // `=0` does nothing in-process (lld sections LTO code anyway), so the module's flag stands.
    let (_, split, _) = link(&["-plugin-opt=-function-sections=0"]);
    assert!(has(&split, ".text.split_one"), "{split:?}");
}
