//! `--trace FILE`: the run as Chrome trace-event JSON (opens in Perfetto or chrome://tracing):
//! the preparation before the thin link, the thin link, the cache lookups, every job on the lane it ran in with its module, cache hit or miss and where
//! it ran, and the final link.

use crate::events::{Event, Reporter};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct TraceWriter {
    start: Instant,
    events: Vec<Value>,
    /// Which lanes (trace threads) are busy, so that overlapping jobs get their own rows.
    lanes: Vec<bool>,
    lane_of: HashMap<PathBuf, usize>,
}

impl Default for TraceWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceWriter {
    pub fn new() -> Self {
        let start = Instant::now();
        let meta = json!({"name": "process_name", "ph": "M", "pid": 1, "tid": 0, "args": {"name": "thindist"}});
        TraceWriter {
            start,
            events: vec![meta],
            lanes: Vec::new(),
            lane_of: HashMap::new(),
        }
    }

    fn now_us(&self) -> u128 {
        self.start.elapsed().as_micros()
    }

    fn push(&mut self, name: &str, phase: &str, tid: usize, args: Value) {
        let ts = self.now_us();
        self.events.push(json!({"name": name, "cat": "thindist", "ph": phase, "ts": ts, "pid": 1, "tid": tid, "args": args}));
    }

    /// Writes the trace with one enclosing event for the whole run, atomically.
    pub fn write(mut self, path: &Path) -> Result<()> {
        let total = self.now_us();
        self.events.push(json!({"name": "thindist run", "cat": "thindist", "ph": "X", "ts": 0, "dur": total, "pid": 1, "tid": 0, "args": {}}));
        let text =
            serde_json::to_vec(&json!({"traceEvents": self.events, "displayTimeUnit": "ms"}))?;
        crate::fsutil::write_atomic(path, &text)
            .with_context(|| format!("cannot write trace {}", path.display()))
    }
}

impl Reporter for TraceWriter {
    fn on_event(&mut self, event: &Event) {
        match event {
            Event::ThinLinkStarted { .. } => {
                // Everything before the thin link (the linker's command from the clang driver,
                // the inputs, a look for an earlier identical link) as one span.
                let dur = self.now_us();
                self.events.push(json!({"name": "preparation", "cat": "thindist", "ph": "X", "ts": 0, "dur": dur, "pid": 1, "tid": 0, "args": {}}));
                self.push("thin link", "B", 0, json!({}))
            }
            Event::ThinLinkFinished { modules, .. } => {
                self.push("thin link", "E", 0, json!({"modules": modules}))
            }
            Event::CacheLookupsFinished { hits, duration } => {
                let dur = duration.as_micros();
                let ts = self.now_us().saturating_sub(dur);
                self.events.push(json!({"name": "cache lookups", "cat": "thindist", "ph": "X", "ts": ts, "dur": dur, "pid": 1, "tid": 0, "args": {"hits": hits}}));
            }
            Event::FinalLinkStarted { .. } => self.push("final link", "B", 0, json!({})),
            Event::FinalLinkFinished { .. } => self.push("final link", "E", 0, json!({})),
            Event::JobStarted { job } => {
                let lane = match self.lanes.iter().position(|busy| !busy) {
                    Some(free) => free,
                    None => {
                        self.lanes.push(false);
                        self.lanes.len() - 1
                    }
                };
                self.lanes[lane] = true;
                self.lane_of.insert(job.module.clone(), lane);
                let name = job.name();
                self.push(&name, "B", lane + 1, json!({"module": name}));
            }
            Event::JobFinished { job, outcome } => {
                let lane = self.lane_of.remove(&job.module).unwrap_or(0);
                if let Some(busy) = self.lanes.get_mut(lane) {
                    *busy = false;
                }
                let name = job.name();
                let args = json!({
                    "module": name,
                    "cache": if outcome.executed_by == crate::events::ExecutedBy::Cache { "hit" } else { "miss" },
                    "executed_by": outcome.executed_by.name(),
                    "succeeded": outcome.succeeded(),
                });
                self.push(&name, "E", lane + 1, args);
            }
            Event::Warning { .. } => {}
        }
    }
}
