//! `--trace FILE` writes valid Chrome trace-event JSON that accounts for the run.

mod util;

use serde_json::Value;
use std::collections::HashMap;
use std::process::Command;
use util::{many_modules, many_objects, thindist};

#[test]
fn trace_has_every_job_and_adds_up_to_the_wall_time() {
    let p = many_modules(12);
    let mut link = vec![
        "ld",
        "-j2",
        // Real compiles, not hits from whatever the default cache holds: with every job a hit,
        // the untraced start-up (the clang driver's -###) outweighs the stages.
        "--no-cache",
        "--trace",
        "trace.json",
        "--",
        "clang-22",
        "-fuse-ld=lld",
        "-flto=thin",
        "-o",
        "prog",
    ];
    let objects = many_objects(12);
    link.extend(objects.iter().map(String::as_str));
    let started = std::time::Instant::now();
    let out = Command::new(thindist())
        .args(&link)
        .current_dir(p.dir())
        .output()
        .unwrap();
    let measured = started.elapsed().as_micros() as f64;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let trace: Value =
        serde_json::from_slice(&std::fs::read(p.path("trace.json")).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    // Every B has its E on the same lane, in order, with nothing else open on that lane.
    let mut open: HashMap<u64, (String, f64)> = HashMap::new();
    let mut spans: Vec<(String, f64, f64)> = Vec::new();
    for e in events {
        for field in ["ph", "pid", "tid", "name"] {
            assert!(e.get(field).is_some(), "event without {field}: {e}");
        }
        let tid = e["tid"].as_u64().unwrap();
        let name = e["name"].as_str().unwrap().to_string();
        match e["ph"].as_str().unwrap() {
            "B" => assert!(
                open.insert(tid, (name, e["ts"].as_f64().unwrap()))
                    .is_none(),
                "two open events on lane {tid}"
            ),
            "E" => {
                let (begun, ts) = open.remove(&tid).expect("end without begin");
                assert_eq!(begun, name);
                spans.push((name, ts, e["ts"].as_f64().unwrap()));
            }
            "X" | "M" => {}
            other => panic!("unexpected phase {other}"),
        }
    }
    assert!(open.is_empty(), "events never ended: {open:?}");
    let jobs: Vec<_> = spans.iter().filter(|(n, _, _)| n.ends_with(".o")).collect();
    assert_eq!(jobs.len(), 13, "one span per module");
    let run = events.iter().find(|e| e["name"] == "thindist run").unwrap();
    let run_dur = run["dur"].as_f64().unwrap();
    // The run event covers what the process measured, less its start-up and exit.
    assert!(
        run_dur <= measured && run_dur > measured * 0.5,
        "run {run_dur}us, measured {measured}us"
    );
    // Preparation, thin link, back ends (first start to last end) and final link add up to
    // the run.
    let preparation = events.iter().find(|e| e["name"] == "preparation").unwrap();
    let preparation = preparation["dur"].as_f64().unwrap();
    let span = |name: &str| {
        spans
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, b, e)| e - b)
            .unwrap()
    };
    let first = jobs.iter().map(|j| j.1).fold(f64::MAX, f64::min);
    let last = jobs.iter().map(|j| j.2).fold(0.0, f64::max);
    let stages = preparation + span("thin link") + (last - first) + span("final link");
    assert!(
        stages <= run_dur && stages > run_dur * 0.8,
        "stages {stages}us of run {run_dur}us"
    );
}

/// A relink that the cache answers in full: one span for the lookups, with their count, each
/// module's job a hit inside it, and the stages still add up to the run.
#[test]
fn trace_shows_the_cache_lookups_that_answered_the_jobs() {
    let p = many_modules(12);
    let objects = many_objects(12);
    let link = |output: &str, trace: &str| {
        let out = p
            .cmd(thindist())
            .args([
                "ld",
                "-j2",
                "--trace",
                trace,
                "--",
                "ld.lld-22",
                "-e",
                "main",
                "-o",
            ])
            .arg(output)
            .args(&objects)
            .current_dir(p.dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    link("prog", "first.json");
    // Another output: no earlier link to restore, every back end from the cache.
    link("prog2", "trace.json");
    let trace: Value =
        serde_json::from_slice(&std::fs::read(p.path("trace.json")).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    let named = |name: &str| events.iter().find(|e| e["name"] == name).unwrap();
    let lookups = named("cache lookups");
    assert_eq!(lookups["args"]["hits"], 13, "{lookups}");
    let (start, dur) = (
        lookups["ts"].as_f64().unwrap(),
        lookups["dur"].as_f64().unwrap(),
    );
    let ends: Vec<&Value> = events
        .iter()
        .filter(|e| e["ph"] == "E" && e["name"].as_str().unwrap().ends_with(".o"))
        .collect();
    assert_eq!(ends.len(), 13);
    for end in &ends {
        assert_eq!(end["args"]["cache"], "hit", "{end}");
        assert!(end["ts"].as_f64().unwrap() >= start + dur, "{end}");
    }
    let thin_link_end = events
        .iter()
        .find(|e| e["name"] == "thin link" && e["ph"] == "E")
        .unwrap();
    let final_link_start = events
        .iter()
        .find(|e| e["name"] == "final link" && e["ph"] == "B")
        .unwrap();
    assert!(thin_link_end["ts"].as_f64().unwrap() <= start);
    assert!(start + dur <= final_link_start["ts"].as_f64().unwrap());
}
