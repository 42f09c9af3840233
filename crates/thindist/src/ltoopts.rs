//! Link-time code-generation options: every ld.lld option that affects LTO code generation and
//! what it becomes for a distributed back end (`clang -x ir -fthinlto-index=SHARD -c X.o`),
//! checked against how ld.lld 22 applies it in-process (`createConfig` in lld/ELF/LTO.cpp, the
//! `-plugin-opt=` aliases in lld/ELF/Options.td) and by experiment with clang-22 and ld.lld-22.
//!
//! The parser ([`crate::linkargs`]) looks each option up in [`LLD_OPTIONS`] and keeps the typed
//! [`LtoOpt`]. [`LinkCodegen::from_link`] turns those into back-end options (LLVM options through
//! [`LLD_CODEGEN_FLAGS`]) and refuses, before the thin link runs, what no back end can apply as
//! lld does; [`LinkCodegen::check_compiler`] then asks the back-end clang, once, about the rest.

use crate::cache::Digests;
use crate::linkargs::{Item, LinkArgs};
use anyhow::{bail, Context, Result};
use std::process::Command;

/// What an LTO option of the link means, as a typed value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LtoOpt {
    /// An LLVM option: `-mllvm X`, `--mllvm=X`, `-plugin-opt=-X`.
    Llvm(LlvmOpt),
    /// `--lto-O<n>`, `-plugin-opt=O<n>`: the optimization level.
    OptLevel(String),
    /// `--lto-sample-profile=F`, `-plugin-opt=sample-profile=F`.
    SampleProfile(String),
    /// `--lto-basic-block-sections=all|none|labels|FILE`.
    BasicBlockSections(String),
    /// `--[no-]lto-basic-block-address-map`.
    BasicBlockAddressMap(bool),
    /// `--[no-]lto-unique-basic-block-section-names`.
    UniqueBasicBlockSectionNames(bool),
    /// `--lto-cs-profile-generate`, `-plugin-opt=cs-profile-generate`.
    CsProfileGenerate,
    /// `--lto-cs-profile-file=F`, `-plugin-opt=cs-profile-path=F`: the profile a
    /// cs-profile-generate build writes, else the context-sensitive profile it uses.
    CsProfileFile(String),
    /// `--[no-]lto-pgo-warn-mismatch`.
    PgoWarnMismatch(bool),
    /// `--load-pass-plugin=F`: a pass plugin lld loads into the LTO pipeline.
    PassPlugin(String),
    /// Decided by the thin link, which keeps the option; the back ends read its decisions from
    /// their summary shards.
    ThinLinkOnly,
    /// `--save-temps`: kept on the thin link, and thindist keeps its work directory, which holds
    /// the temporaries of distributed mode.
    SaveTemps,
    /// No effect on generated code in-process either.
    NoEffect,
    /// No back-end compile can do what lld does with it; the reason says what to do instead.
    Unsupported(&'static str),
    /// The link is already distributed (`--thinlto-index-only`, a DTLTO distributor): it is
    /// passed through unchanged.
    AlreadyDistributed,
    /// An `--lto-*`, `--thinlto-*` or `-plugin-opt=` option this table does not know: kept on
    /// the thin link, with a warning.
    Unknown,
}

/// An LLVM command-line option as lld receives it, split as LLVM's parser splits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LlvmOpt {
    /// Without leading dashes: `function-sections`.
    pub name: String,
    /// After the `=`, if any: `1`.
    pub value: Option<String>,
}

impl LlvmOpt {
    pub fn parse(text: &str) -> LlvmOpt {
        let body = text.trim_start_matches('-');
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        LlvmOpt {
            name: name.to_string(),
            value,
        }
    }
}

impl std::fmt::Display for LlvmOpt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(v) => write!(f, "-{}={v}", self.name),
            None => write!(f, "-{}", self.name),
        }
    }
}

/// How a row of [`LLD_OPTIONS`] matches an option (name without dashes, before any `=`).
enum Key {
    /// The option's name; the row gets its value (`lto-sample-profile=F` gets `F`).
    Name(&'static str),
    /// A name prefix; the row gets the rest of the name (`lto-O3` gets `3`).
    NamePrefix(&'static str),
    /// `-plugin-opt=VALUE` with exactly this value.
    Plugin(&'static str),
    /// `-plugin-opt=VALUE` starting with this; the row gets the rest.
    PluginPrefix(&'static str),
}

type Row = (Key, fn(&str) -> LtoOpt);

/// Every lld option that affects LTO code generation (or names an LTO product), in both of
/// lld's spellings, with what it becomes for the back ends and why. First match wins.
const LLD_OPTIONS: &[Row] = &[
    // LLVM options: lld hands them to LLVM's option parser, for its thin link and for every
    // in-process back end alike. Mapped by LLD_CODEGEN_FLAGS, else `-mllvm X` for the back end.
    (Key::Name("mllvm"), |v| LtoOpt::Llvm(LlvmOpt::parse(v))),
    (Key::PluginPrefix("-"), |v| LtoOpt::Llvm(LlvmOpt::parse(v))),
    // Optimization level of every back end: `-O<n>` after the module's own, as lld applies one
    // level to all modules. lld derives the code-generation level from it when --lto-CGO is
    // absent, and so does clang from -O.
    (Key::NamePrefix("lto-O"), |v| LtoOpt::OptLevel(v.into())),
    (Key::PluginPrefix("O"), |v| LtoOpt::OptLevel(v.into())),
    // A code-generation level apart from the optimization level: clang has no option for it.
    (Key::NamePrefix("lto-CGO"), |_| {
        LtoOpt::Unsupported(
            "clang sets the code-generation level from -O only; use --lto-O instead",
        )
    }),
    // AutoFDO profile of the LTO pipeline's sample loader: `-fprofile-sample-use=F` (clang's
    // ThinLTO back end hands it to the same LTO config field).
    (Key::Name("lto-sample-profile"), |v| {
        LtoOpt::SampleProfile(v.into())
    }),
    (Key::PluginPrefix("sample-profile="), |v| {
        LtoOpt::SampleProfile(v.into())
    }),
    // Propeller: `-fbasic-block-sections=all|none|list=FILE` (clang's spelling of a cluster
    // file); `labels`, lld's deprecated spelling of the address map, does nothing in lld 22.
    (Key::Name("lto-basic-block-sections"), |v| {
        LtoOpt::BasicBlockSections(v.into())
    }),
    // Propeller's address map (lld >= 20): `-fbasic-block-address-map` (.llvm_bb_addr_map).
    (Key::Name("lto-basic-block-address-map"), |_| {
        LtoOpt::BasicBlockAddressMap(true)
    }),
    (Key::Name("no-lto-basic-block-address-map"), |_| {
        LtoOpt::BasicBlockAddressMap(false)
    }),
    // `-funique-basic-block-section-names`.
    (Key::Name("lto-unique-basic-block-section-names"), |_| {
        LtoOpt::UniqueBasicBlockSectionNames(true)
    }),
    (Key::Name("no-lto-unique-basic-block-section-names"), |_| {
        LtoOpt::UniqueBasicBlockSectionNames(false)
    }),
    // Context-sensitive PGO: instrumentation into `-fcs-profile-generate=DIR`, or the use of a
    // profile with `-fprofile-use=F` (clang's ThinLTO back end sets the same two config fields).
    (Key::Name("lto-cs-profile-generate"), |_| {
        LtoOpt::CsProfileGenerate
    }),
    (Key::Plugin("cs-profile-generate"), |_| {
        LtoOpt::CsProfileGenerate
    }),
    (Key::Name("lto-cs-profile-file"), |v| {
        LtoOpt::CsProfileFile(v.into())
    }),
    (Key::PluginPrefix("cs-profile-path="), |v| {
        LtoOpt::CsProfileFile(v.into())
    }),
    // Profile/CFG mismatch warnings: off is `-mllvm -no-pgo-warn-mismatch`, on is the default.
    (Key::Name("lto-pgo-warn-mismatch"), |_| {
        LtoOpt::PgoWarnMismatch(true)
    }),
    (Key::Name("no-lto-pgo-warn-mismatch"), |_| {
        LtoOpt::PgoWarnMismatch(false)
    }),
    // A pass plugin in the LTO pipeline: `-fpass-plugin=F`.
    (Key::Name("load-pass-plugin"), |v| {
        LtoOpt::PassPlugin(v.into())
    }),
    // Whole-program devirtualization is decided on the combined summary: the thin link does it
    // and writes its resolutions into each shard, which the back end applies.
    (Key::Name("lto-whole-program-visibility"), |_| {
        LtoOpt::ThinLinkOnly
    }),
    (Key::Name("no-lto-whole-program-visibility"), |_| {
        LtoOpt::ThinLinkOnly
    }),
    (
        Key::Name("lto-validate-all-vtables-have-type-infos"),
        |_| LtoOpt::ThinLinkOnly,
    ),
    (
        Key::Name("no-lto-validate-all-vtables-have-type-infos"),
        |_| LtoOpt::ThinLinkOnly,
    ),
    (Key::Name("lto-known-safe-vtables"), |_| {
        LtoOpt::ThinLinkOnly
    }),
    // Which LTO mode and which files the thin link writes: thindist adds its own index and
    // import options to the thin link, these stay with it.
    (Key::Name("lto"), |_| LtoOpt::ThinLinkOnly),
    (Key::Name("thinlto-emit-imports-files"), |_| {
        LtoOpt::ThinLinkOnly
    }),
    (Key::Plugin("thinlto-emit-imports-files"), |_| {
        LtoOpt::ThinLinkOnly
    }),
    (Key::Name("thinlto-object-suffix-replace"), |_| {
        LtoOpt::ThinLinkOnly
    }),
    (Key::PluginPrefix("thinlto-object-suffix-replace="), |_| {
        LtoOpt::ThinLinkOnly
    }),
    (Key::Name("thinlto-prefix-replace"), |_| {
        LtoOpt::ThinLinkOnly
    }),
    (Key::PluginPrefix("thinlto-prefix-replace="), |_| {
        LtoOpt::ThinLinkOnly
    }),
    // Intermediate files of the link: the thin link saves its own (the index).
    (Key::Name("save-temps"), |_| LtoOpt::SaveTemps),
    (Key::Plugin("save-temps"), |_| LtoOpt::SaveTemps),
    // The link is already distributed: pass it through.
    (Key::Name("thinlto-index-only"), |_| {
        LtoOpt::AlreadyDistributed
    }),
    (Key::PluginPrefix("thinlto-index-only"), |_| {
        LtoOpt::AlreadyDistributed
    }),
    (Key::Name("thinlto-emit-index-files"), |_| {
        LtoOpt::AlreadyDistributed
    }),
    (Key::Name("thinlto-distributor"), |_| {
        LtoOpt::AlreadyDistributed
    }),
    // Settings of lld's own back-end threads, cache, DTLTO remote compiler and full-LTO
    // partitions: thindist has its own jobs and cache; none changes the code.
    (Key::NamePrefix("thinlto-jobs"), |_| LtoOpt::NoEffect),
    (Key::PluginPrefix("jobs="), |_| LtoOpt::NoEffect),
    (Key::NamePrefix("thinlto-cache"), |_| LtoOpt::NoEffect),
    (Key::NamePrefix("thinlto-distributor-arg"), |_| {
        LtoOpt::NoEffect
    }),
    (Key::NamePrefix("thinlto-remote-compiler"), |_| {
        LtoOpt::NoEffect
    }),
    (Key::Name("lto-partitions"), |_| LtoOpt::NoEffect),
    (Key::PluginPrefix("lto-partitions="), |_| LtoOpt::NoEffect),
    // The clang driver always passes `mcpu=` with its default CPU; every function's
    // target-cpu attribute, set by its front end, decides its code, and clang's back end
    // defaults its TargetMachine to the same generic CPU.
    (Key::PluginPrefix("mcpu="), |_| LtoOpt::NoEffect),
    // LLVMgold's mode switch; lld ignores it.
    (Key::Plugin("thinlto"), |_| LtoOpt::NoEffect),
    (Key::Name("plugin"), |_| LtoOpt::NoEffect),
    // Diagnostics of lld's pipeline (pass-manager log, verifier, statistics, time trace):
    // no effect on the code.
    (Key::Name("lto-debug-pass-manager"), |_| LtoOpt::NoEffect),
    (Key::Plugin("debug-pass-manager"), |_| LtoOpt::NoEffect),
    (Key::Plugin("disable-verify"), |_| LtoOpt::NoEffect),
    (Key::PluginPrefix("stats-file="), |_| LtoOpt::NoEffect),
    (Key::PluginPrefix("time-trace"), |_| LtoOpt::NoEffect),
    (Key::PluginPrefix("opt-remarks"), |_| LtoOpt::NoEffect),
    // Where lld keeps native objects and split DWARF: thindist keeps each native object beside
    // its bitcode, and a module compiled with -gsplit-dwarf writes its .dwo beside it.
    (Key::Name("lto-obj-path"), |_| LtoOpt::NoEffect),
    (Key::PluginPrefix("obj-path="), |_| LtoOpt::NoEffect),
    (Key::PluginPrefix("dwo_dir="), |_| LtoOpt::NoEffect),
    // lld then writes assembly or bitcode instead of linking: nothing for a final link.
    (Key::Name("lto-emit-asm"), |_| {
        LtoOpt::Unsupported("it makes lld write assembly instead of a linked file; link in-process")
    }),
    (Key::Plugin("emit-asm"), |_| {
        LtoOpt::Unsupported("it makes lld write assembly instead of a linked file; link in-process")
    }),
    (Key::Name("lto-emit-llvm"), |_| {
        LtoOpt::Unsupported("it makes lld write bitcode instead of a linked file; link in-process")
    }),
    (Key::Plugin("emit-llvm"), |_| {
        LtoOpt::Unsupported("it makes lld write bitcode instead of a linked file; link in-process")
    }),
    // A hand-written pass pipeline: clang's back end runs the standard one only.
    (Key::Name("lto-newpm-passes"), |_| {
        LtoOpt::Unsupported("clang's back end runs only its standard pipeline; link in-process")
    }),
    (Key::Name("lto-aa-pipeline"), |_| {
        LtoOpt::Unsupported("clang's back end runs only its standard pipeline; link in-process")
    }),
    // Compiles one module in-process for debugging; thindist compiles them all.
    (Key::Name("thinlto-single-module"), |_| {
        LtoOpt::Unsupported("it is a debugging aid of in-process ThinLTO; link in-process")
    }),
];

/// Looks up an option (its name without dashes and its value) in [`LLD_OPTIONS`]. `None` for
/// options that are not LTO options.
pub fn classify(name: &str, value: &str) -> Option<LtoOpt> {
    let found = LLD_OPTIONS.iter().find_map(|(key, make)| {
        let arg = match *key {
            Key::Name(n) => (name == n).then_some(value),
            Key::NamePrefix(p) => name.strip_prefix(p),
            Key::Plugin(p) => (name == "plugin-opt" && value == p).then_some(""),
            Key::PluginPrefix(p) => value.strip_prefix(p).filter(|_| name == "plugin-opt"),
        };
        arg.map(make)
    });
    let lto_named =
        name == "plugin-opt" || name.starts_with("lto-") || name.starts_with("thinlto-");
    found.or_else(|| lto_named.then_some(LtoOpt::Unknown))
}

/// What a code-generation option becomes for the back ends.
enum Mapped {
    /// These clang options.
    Options(Vec<String>),
    /// Nothing, with this warning: ld.lld 22 lets one of its own options override it, so it has
    /// no effect in-process either.
    Overridden(&'static str),
}

/// A clang option per state of a boolean LLVM option (`-X`, `-X=true`, `-X=0`, ...).
fn boolean(value: Option<&str>, on: &[&str], off: &[&str]) -> Result<Mapped, String> {
    let set = match value {
        None => true,
        Some("true" | "TRUE" | "True" | "1") => true,
        Some("false" | "FALSE" | "False" | "0") => false,
        Some(other) => return Err(format!("'{other}' is not a boolean")),
    };
    Ok(Mapped::Options(
        (if set { on } else { off })
            .iter()
            .map(|s| s.to_string())
            .collect(),
    ))
}

type FlagRow = (&'static str, fn(Option<&str>) -> Result<Mapped, String>);

/// LLVM options that ld.lld registers (LLVM's code-generation flags, which lld's LTO turns into
/// TargetOptions) and clang does not: `clang-22 -mllvm -function-sections` fails with "Unknown
/// command line argument". Each becomes the clang option that sets the same TargetOption.
const LLD_CODEGEN_FLAGS: &[FlagRow] = &[
    // lld turns function and data sections on for all LTO code whatever this says (in-process
    // `=0` changes nothing), so only `=1` (the driver's -ffunction-sections) does anything.
    ("function-sections", |v| {
        boolean(v, &["-ffunction-sections"], &[])
    }),
    ("data-sections", |v| boolean(v, &["-fdata-sections"], &[])),
    // Machine function splitting (AutoFDO/PGO), `.text.split.*`.
    ("split-machine-functions", |v| {
        boolean(
            v,
            &["-fsplit-machine-functions"],
            &["-fno-split-machine-functions"],
        )
    }),
    ("emulated-tls", |v| {
        boolean(v, &["-femulated-tls"], &["-fno-emulated-tls"])
    }),
    // `.stack_sizes`.
    ("stack-size-section", |v| {
        boolean(v, &["-fstack-size-section"], &["-fno-stack-size-section"])
    }),
    // lld sets the address map from --lto-basic-block-address-map alone, after these flags.
    ("basic-block-address-map", |_| {
        Ok(Mapped::Overridden(
            "ld.lld ignores it (its --lto-basic-block-address-map decides); so do the back ends; \
             use --lto-basic-block-address-map",
        ))
    }),
    ("basic-block-sections", |v| {
        v.ok_or_else(|| "it needs a value".to_string())
            .and_then(basic_block_sections)
    }),
    ("unique-section-names", |v| {
        boolean(
            v,
            &["-funique-section-names"],
            &["-fno-unique-section-names"],
        )
    }),
    // lld sets it from --lto-unique-basic-block-section-names alone, after these flags.
    ("unique-basic-block-section-names", |_| {
        Ok(Mapped::Overridden(
            "ld.lld ignores it (its --lto-unique-basic-block-section-names decides); so do the \
             back ends; use --lto-unique-basic-block-section-names",
        ))
    }),
    // The driver's -fexperimental-call-graph-section (`.llvm.callgraph`).
    ("call-graph-section", |v| {
        boolean(
            v,
            &["-fexperimental-call-graph-section"],
            &["-fno-experimental-call-graph-section"],
        )
    }),
    // The driver's -fpartition-static-data-sections (hot/cold `.data.*` prefixes).
    ("partition-static-data-sections", |v| {
        boolean(
            v,
            &["-fpartition-static-data-sections"],
            &["-fno-partition-static-data-sections"],
        )
    }),
    // The driver's -ggdb, -glldb, -gsce: cc1's spelling (the driver's would turn debug
    // information on; the tuning only shapes what the bitcode already has).
    ("debugger-tune", |v| {
        v.map(|tuning| {
            Mapped::Options(vec!["-Xclang".into(), format!("-debugger-tuning={tuning}")])
        })
        .ok_or_else(|| "it needs a value".to_string())
    }),
    // The driver's -mtls-dialect=gnu2 (x86's name for TLS descriptors).
    ("enable-tlsdesc", |v| {
        boolean(v, &["-mtls-dialect=gnu2"], &["-mtls-dialect=gnu"])
    }),
    // The driver's -fjmc. cc1's spelling, because the driver drops -fjmc without -g on its
    // own command line, while the bitcode's debug info is what the pass looks at.
    ("enable-jmc-instrument", |v| {
        boolean(v, &["-Xclang", "-fjmc"], &[])
    }),
];

/// LLVM options that distributed ThinLTO supports only from an LLVM release on: (name, major,
/// why). The thin link and every back end must agree on them.
const NEEDS_LLVM: &[(&str, u32, &str)] = &[(
    "always-rename-promoted-locals",
    23,
    "the back ends of distributed ThinLTO learned to keep promoted locals' names in LLVM 23 \
     (Linux 7.2 leaves --lto-whole-program-visibility -mllvm -always-rename-promoted-locals=false \
     out of distributed builds until LLVM 23); remove it from the link",
)];

/// `--lto-basic-block-sections=X` (and the LLVM flag) as a clang option.
fn basic_block_sections(value: &str) -> Result<Mapped, String> {
    if value == "labels" {
        // lld 22 reads `labels` as the deprecated spelling of the address map, then sets the
        // address map from --lto-basic-block-address-map: in-process it has no effect at all.
        return Ok(Mapped::Overridden(
            "ld.lld 22 ignores `labels` (deprecated; its --lto-basic-block-address-map decides); \
             so do the back ends; use --lto-basic-block-address-map",
        ));
    }
    // clang spells a cluster file `list=FILE`, lld just `FILE`.
    let clang_value = match value {
        "all" | "none" => value.to_string(),
        file => format!("list={file}"),
    };
    Ok(Mapped::Options(vec![format!(
        "-fbasic-block-sections={clang_value}"
    )]))
}

/// An `-mllvm` option for clang's back end, with the link tokens it came from.
struct CheckedLlvm {
    option: String,
    from: String,
}

/// What the link contributes to every back-end compile.
pub struct LinkCodegen {
    /// Added to every job, after the module's own options, so that the link wins where it
    /// speaks, as in-process.
    pub all_jobs: Vec<String>,
    /// Used instead of saved flags for modules that have none: lld's own defaults for LTO code.
    pub derived: Vec<String>,
    /// Compiler for modules without saved flags, and the one asked about LLVM options.
    pub default_compiler: String,
    /// `-mllvm` options of [`Self::all_jobs`] that clang must confirm it registers.
    llvm: Vec<CheckedLlvm>,
    /// Options needing a newer LLVM: (the link tokens, major, why).
    needs_llvm: Vec<(String, u32, &'static str)>,
    /// What to tell the user about options that do nothing or are unknown.
    pub warnings: Vec<String>,
}

impl LinkCodegen {
    /// Turns the link's LTO options into back-end compile options, as lld applies them
    /// in-process. Fails, naming them, on options no back end can apply that way.
    pub fn from_link(args: &LinkArgs, default_compiler: String) -> Result<Self> {
        let mut codegen = LinkCodegen {
            all_jobs: Vec::new(),
            derived: Vec::new(),
            default_compiler,
            llvm: Vec::new(),
            needs_llvm: Vec::new(),
            warnings: Vec::new(),
        };
        let mut refused = Vec::new();
        let mut cs_generate = false;
        let mut cs_file = None;
        for item in &args.items {
            let Item::Lto(opt, tokens) = item else {
                continue;
            };
            let from = tokens.join(" ");
            let jobs = &mut codegen.all_jobs;
            let mut mapped = |result: Result<Mapped, String>| match result {
                Ok(Mapped::Options(options)) => jobs.extend(options),
                Ok(Mapped::Overridden(why)) => codegen.warnings.push(format!("`{from}`: {why}")),
                Err(why) => refused.push(format!("`{from}`: {why}")),
            };
            match opt {
                LtoOpt::Llvm(llvm) => match codegen_flag(llvm) {
                    Some(result) => mapped(result),
                    None => {
                        if let Some((_, major, why)) =
                            NEEDS_LLVM.iter().find(|(n, ..)| *n == llvm.name)
                        {
                            codegen.needs_llvm.push((from.clone(), *major, why));
                        }
                        jobs.extend(["-mllvm".to_string(), llvm.to_string()]);
                        codegen.llvm.push(CheckedLlvm {
                            option: llvm.to_string(),
                            from,
                        });
                    }
                },
                LtoOpt::OptLevel(level) => jobs.push(format!("-O{level}")),
                LtoOpt::SampleProfile(f) => jobs.push(format!("-fprofile-sample-use={f}")),
                LtoOpt::BasicBlockSections(x) => mapped(basic_block_sections(x)),
                LtoOpt::BasicBlockAddressMap(on) => jobs.push(
                    if *on {
                        "-fbasic-block-address-map"
                    } else {
                        "-fno-basic-block-address-map"
                    }
                    .into(),
                ),
                LtoOpt::UniqueBasicBlockSectionNames(on) => jobs.push(
                    if *on {
                        "-funique-basic-block-section-names"
                    } else {
                        "-fno-unique-basic-block-section-names"
                    }
                    .into(),
                ),
                LtoOpt::CsProfileGenerate => cs_generate = true,
                LtoOpt::CsProfileFile(f) => cs_file = Some(f.clone()),
                LtoOpt::PgoWarnMismatch(on) => {
                    if !on {
                        jobs.extend(["-mllvm".into(), "-no-pgo-warn-mismatch".into()]);
                    }
                }
                LtoOpt::PassPlugin(f) => jobs.push(format!("-fpass-plugin={f}")),
                LtoOpt::Unsupported(why) => refused.push(format!("`{from}`: {why}")),
                LtoOpt::Unknown => codegen.warnings.push(format!(
                    "`{from}` is unknown to thindist: it stays on the thin link, the back ends do \
                     not see it"
                )),
                LtoOpt::ThinLinkOnly
                | LtoOpt::SaveTemps
                | LtoOpt::NoEffect
                | LtoOpt::AlreadyDistributed => {}
            }
        }
        match (cs_generate, cs_file) {
            (true, ref file) => {
                // lld's default name is clang's: `default_%m.profraw`; clang takes only the
                // directory.
                let file = file.as_deref().unwrap_or("default_%m.profraw");
                match file.strip_suffix("default_%m.profraw") {
                    Some("") => codegen.all_jobs.push("-fcs-profile-generate".into()),
                    Some(dir) => codegen.all_jobs.push(format!(
                        "-fcs-profile-generate={}",
                        dir.trim_end_matches('/')
                    )),
                    None => refused.push(format!(
                        "`--lto-cs-profile-file={file}`: clang names the profile \
                         DIR/default_%m.profraw; choose such a name"
                    )),
                }
            }
            (false, Some(file)) => codegen.all_jobs.push(format!("-fprofile-use={file}")),
            (false, None) => {}
        }
        if !refused.is_empty() {
            bail!(
                "these link options cannot be applied by distributed back ends as ld.lld applies \
                 them in-process (nothing was compiled):\n  {}",
                refused.join("\n  ")
            );
        }
        // lld's defaults for modules it knows nothing else about: --lto-O2, a section per
        // function and per datum, and the relocation model of the output.
        codegen.derived = vec![
            "-O2".into(),
            "-ffunction-sections".into(),
            "-fdata-sections".into(),
        ];
        let pic = args.has(&crate::linkargs::Opt::PositionIndependent);
        if pic {
            codegen.derived.push("-fPIC".into());
        } else if !args.is_relocatable() {
            codegen.derived.push("-fno-pic".into());
        }
        Ok(codegen)
    }

    /// Checks, before any job runs, that the back-end compiler can take the link's LLVM
    /// options: those that need a newer LLVM against its version, the rest with one compile of
    /// an empty module (clang names every option it does not register).
    /// What the compiler answered before is remembered in `digests`' memo, by its binary.
    pub fn check_compiler(&self, digests: &Digests) -> Result<()> {
        let compiler = &self.default_compiler;
        if let Some((from, major, why)) = self.needs_llvm.first() {
            let version = clang_major(compiler, &digests.compiler(compiler)?.version)?;
            if version < *major {
                bail!(
                    "the link option `{from}` needs LLVM {major} or later in distributed mode, and \
                     {compiler} is LLVM {version}: {why}"
                );
            }
        }
        if self.llvm.is_empty() {
            return Ok(());
        }
        let options: Vec<&str> = self.llvm.iter().map(|l| l.option.as_str()).collect();
        let question = format!("takes -mllvm {}", options.join(" -mllvm "));
        digests.remember_yes(compiler, &question, || self.probe_llvm_options())
    }

    /// Compiles an empty module with the link's LLVM options: an error names those the
    /// compiler rejects.
    fn probe_llvm_options(&self) -> Result<()> {
        let compiler = &self.default_compiler;
        let mut probe = Command::new(compiler);
        for llvm in &self.llvm {
            probe.args(["-mllvm", &llvm.option]);
        }
        let out = probe
            .args([
                "-Wno-override-module",
                "-x",
                "ir",
                "-c",
                "/dev/null",
                "-o",
                "/dev/null",
            ])
            .output()
            .with_context(|| format!("cannot run the back-end compiler {compiler}"))?;
        if out.status.success() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&out.stderr);
        let rejected: Vec<String> = self
            .llvm
            .iter()
            .filter(|l| {
                // LLVM names an unknown option as given, and one with a bad value as `--NAME`.
                let name = l.option.split('=').next().unwrap_or(&l.option);
                text.contains(&format!("Unknown command line argument '{name}"))
                    || text.contains(&format!("-{} option:", name.trim_start_matches('-')))
            })
            .map(|l| format!("`{}`", l.from))
            .collect();
        if rejected.is_empty() {
            bail!("{compiler} rejects the link's LLVM options (nothing was compiled):\n{text}");
        }
        bail!(
            "the back-end compiler {compiler} rejects the link's LLVM option(s) {}, so no back \
             end could apply them (nothing was compiled). An option that ld.lld registers and \
             clang does not (one of LLVM's code-generation flags) and that thindist knows no \
             clang option for belongs in the modules' compile flags as its clang option; remove \
             it from the link.\n{text}",
            rejected.join(", ")
        )
    }
}

/// What one of [`LLD_CODEGEN_FLAGS`] becomes, or `None` for other LLVM options.
fn codegen_flag(llvm: &LlvmOpt) -> Option<Result<Mapped, String>> {
    LLD_CODEGEN_FLAGS
        .iter()
        .find(|(name, _)| *name == llvm.name)
        .map(|(_, map)| map(llvm.value.as_deref()))
}

/// The LLVM major version in `version`, the first line of `compiler --version`
/// (`Debian clang version 22.1.8 ...`).
fn clang_major(compiler: &str, version: &str) -> Result<u32> {
    version
        .split_once("version ")
        .and_then(|(_, rest)| rest.split('.').next())
        .and_then(|major| major.trim().parse().ok())
        .with_context(|| format!("cannot read a version out of `{compiler} --version`: {version}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags;
    use proptest::prelude::*;
    use std::path::PathBuf;

    fn codegen(line: &str) -> Result<LinkCodegen> {
        let tokens: Vec<String> = line.split_whitespace().map(String::from).collect();
        LinkCodegen::from_link(&LinkArgs::parse(&tokens).unwrap(), "clang-22".into())
    }

    #[test]
    fn link_options_become_compile_options() {
        let cg = codegen("-mllvm -import-instr-limit=5 --lto-O3 --lto-sample-profile=p.afdo --lto-basic-block-sections=bb.txt -pie -o x a.o").unwrap();
        assert_eq!(
            cg.all_jobs,
            vec![
                "-mllvm",
                "-import-instr-limit=5",
                "-O3",
                "-fprofile-sample-use=p.afdo",
                "-fbasic-block-sections=list=bb.txt"
            ]
        );
        assert_eq!(
            cg.derived,
            vec!["-O2", "-ffunction-sections", "-fdata-sections", "-fPIC"]
        );
        assert_eq!(
            flags::option_inputs(&cg.all_jobs),
            vec![PathBuf::from("p.afdo"), PathBuf::from("bb.txt")]
        );
    }

    #[test]
    fn lld_codegen_flags_become_clang_options() {
        let cg = codegen(
            "-plugin-opt=-function-sections=1 -plugin-opt=-data-sections=0 \
             -plugin-opt=-split-machine-functions --mllvm=-emulated-tls=false \
             -mllvm -stack-size-section --lto-basic-block-address-map \
             --lto-basic-block-sections=labels -plugin-opt=-basic-block-sections=all \
             --lto-unique-basic-block-section-names -plugin-opt=-enable-jmc-instrument \
             --no-lto-pgo-warn-mismatch --load-pass-plugin=p.so -plugin-opt=mcpu=x86-64 \
             -plugin-opt=thinlto --lto-whole-program-visibility -o x a.o",
        )
        .unwrap();
        assert_eq!(
            cg.all_jobs,
            vec![
                "-ffunction-sections",
                "-fsplit-machine-functions",
                "-fno-emulated-tls",
                "-fstack-size-section",
                "-fbasic-block-address-map",
                "-fbasic-block-sections=all",
                "-funique-basic-block-section-names",
                "-Xclang",
                "-fjmc",
                "-mllvm",
                "-no-pgo-warn-mismatch",
                "-fpass-plugin=p.so"
            ]
        );
        assert!(cg.llvm.is_empty());
        assert_eq!(cg.warnings.len(), 1, "{:?}", cg.warnings);
        assert!(cg.warnings[0].contains("`--lto-basic-block-sections=labels`"));
    }

    #[test]
    fn cs_profile_options_combine() {
        let cg =
            codegen("--lto-cs-profile-generate --lto-cs-profile-file=out/default_%m.profraw a.o")
                .unwrap();
        assert_eq!(cg.all_jobs, vec!["-fcs-profile-generate=out"]);
        let cg = codegen("-plugin-opt=cs-profile-generate a.o").unwrap();
        assert_eq!(cg.all_jobs, vec!["-fcs-profile-generate"]);
        let cg = codegen("--lto-cs-profile-file=cs.profdata a.o").unwrap();
        assert_eq!(cg.all_jobs, vec!["-fprofile-use=cs.profdata"]);
        assert!(codegen("--lto-cs-profile-generate --lto-cs-profile-file=x.raw a.o").is_err());
    }

    #[test]
    fn unsupported_options_are_refused_together() {
        let err = codegen("--lto-emit-asm --lto-CGO1 -plugin-opt=-function-sections=maybe a.o")
            .err()
            .unwrap()
            .to_string();
        for named in [
            "`--lto-emit-asm`",
            "`--lto-CGO1`",
            "`-plugin-opt=-function-sections=maybe`",
        ] {
            assert!(err.contains(named), "{err}");
        }
    }

    #[test]
    fn unknown_lto_options_are_kept_and_named() {
        let cg = codegen("--lto-frobnicate -plugin-opt=frob=1 a.o").unwrap();
        assert_eq!(cg.warnings.len(), 2);
        assert!(cg.warnings[0].contains("`--lto-frobnicate` is unknown"));
        assert!(cg.warnings[1].contains("`-plugin-opt=frob=1` is unknown"));
        assert!(cg.all_jobs.is_empty());
    }

    #[test]
    fn llvm_options_parse_as_llvm_does() {
        assert_eq!(
            LlvmOpt::parse("--enable-fs-discriminator=true"),
            LlvmOpt {
                name: "enable-fs-discriminator".into(),
                value: Some("true".into())
            }
        );
        assert_eq!(LlvmOpt::parse("-x").to_string(), "-x");
    }

    proptest! {
        /// lld's four spellings of an LLVM option parse to the same typed value, split as
        /// LLVM splits it.
        #[test]
        fn llvm_option_spellings_parse_alike(
            name in "[a-z][a-z0-9-]{0,20}",
            value in proptest::option::of("[a-zA-Z0-9./]{1,8}"),
        ) {
            let text = match &value {
                Some(v) => format!("-{name}={v}"),
                None => format!("-{name}"),
            };
            let expected = vec![LtoOpt::Llvm(LlvmOpt { name: name.clone(), value: value.clone() })];
            for tokens in [
                vec!["-mllvm".to_string(), text.clone()],
                vec![format!("--mllvm={text}")],
                vec![format!("-plugin-opt={text}")],
                vec![format!("--plugin-opt={text}")],
            ] {
                let args = LinkArgs::parse(&tokens).unwrap();
                let parsed: Vec<LtoOpt> = args.lto_options().cloned().collect();
                prop_assert_eq!(&parsed, &expected, "{:?}", tokens);
            }
        }
    }
}
