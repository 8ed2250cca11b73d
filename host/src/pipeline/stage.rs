//! The transform step on all cores.
//!
//! Transforms are pure per record, so a page is cut into chunks that the
//! sandbox's workers run at the same time; the owner collects the outcomes
//! by record index, so they come out in input order. One page is worked on
//! while the run writes the previous one, so at most two pages are in
//! memory. A page of JSON Lines text is parsed on the workers straight into
//! jaq values, and when every sink takes JSON text the outputs are written
//! as text there too: no `serde_json::Value` on the way.
//!
//! Each record is one step of its chunk's task (see `crate::sandbox`): a
//! limit fails that record only. A step its worker had to be abandoned for
//! fails too, and the rest of its chunk runs again on another worker.

use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};

use jaq_core::Vars;
use jaq_json::Val;
use serde_json::Value;

use super::sources::JsonLines;
use super::transform::{JqFilter, JqGlobals, JqLimits};
use super::values::{normalize, parse, to_json, to_val, write_json};
use crate::sandbox::{self, Failure, GRACE, Pool, Progress, WATCH_EVERY, alloc::Budget};

/// One `[[transforms]]` step.
#[derive(Debug, Clone)]
pub struct Transform {
    pub filter: JqFilter,
    pub limits: JqLimits,
}

/// A page of source records.
pub enum Page {
    Records(Vec<Value>),
    Lines(JsonLines),
}

impl Page {
    pub fn len(&self) -> usize {
        match self {
            Page::Records(r) => r.len(),
            Page::Lines(l) => l.len(),
        }
    }
}

/// What became of one record.
pub enum Outcome {
    /// Its outputs as records.
    Records(Vec<Value>),
    /// Its outputs as JSON Lines text: `count` lines in `text[range]` of chunk `chunk`.
    Text {
        chunk: usize,
        range: Range<usize>,
        count: usize,
    },
    /// A transform failed it.
    Failed { stage: String, error: String },
    /// The line is not JSON: the run stops, as it would reading it.
    BadLine(String),
}

/// A page after the transforms.
pub struct Done {
    pub page: Arc<Page>,
    pub outcomes: Vec<Outcome>,
    texts: Vec<Vec<u8>>,
}

impl Done {
    /// A page that has no transforms to go through.
    pub fn untransformed(records: Vec<Value>) -> Done {
        Done {
            page: Arc::new(Page::Records(Vec::new())),
            outcomes: records
                .into_iter()
                .map(|r| Outcome::Records(vec![r]))
                .collect(),
            texts: Vec::new(),
        }
    }

    pub fn text(&self, chunk: usize, range: Range<usize>) -> &[u8] {
        &self.texts[chunk][range]
    }
}

pub struct Stage {
    transforms: Arc<[Transform]>,
    /// The run's `$state`, `$vars`, `$env` and `$run`.
    globals: Arc<JqGlobals>,
    /// Outputs as JSON Lines text rather than records.
    text: bool,
}

/// Results of one chunk: its task, its first record, its outcomes and text.
type ChunkResult = (usize, usize, Vec<Outcome>, Vec<u8>);

/// A page whose chunks are queued or running.
pub struct Pending {
    page: Arc<Page>,
    results: Receiver<ChunkResult>,
    sender: SyncSender<ChunkResult>,
    /// Task id, records, progress of the chunks not back yet.
    running: Vec<(usize, Range<usize>, Arc<Progress>)>,
    next_task: usize,
    transforms: Arc<[Transform]>,
    globals: Arc<JqGlobals>,
    text: bool,
    /// Outcomes known before any worker ran: records that could not be queued.
    refused: Vec<(usize, Outcome)>,
}

impl Stage {
    pub fn new(transforms: Arc<[Transform]>, text: bool, globals: JqGlobals) -> Stage {
        Stage {
            transforms,
            globals: Arc::new(globals),
            text,
        }
    }

    /// Queues the page's chunks on the workers.
    pub fn submit(&self, page: Page) -> Pending {
        let n = page.len();
        let workers = Pool::global().workers();
        // A few chunks per worker, so that one slow chunk does not idle the others.
        let chunk = n.div_ceil(workers * 4).max(16);
        // Room for every chunk's result, so a worker never waits on the owner.
        let (sender, results) = sync_channel(n.div_ceil(chunk) + 64);
        let mut pending = Pending {
            page: Arc::new(page),
            results,
            sender,
            running: Vec::new(),
            next_task: 0,
            transforms: self.transforms.clone(),
            globals: self.globals.clone(),
            text: self.text,
            refused: Vec::new(),
        };
        let mut start = 0;
        while start < n {
            let end = (start + chunk).min(n);
            if let Some(refused) = pending.start(start..end) {
                pending.refused.extend(refused);
            }
            start = end;
        }
        pending
    }
}

impl Pending {
    /// Starts a task for `records`; if no task can run (too many frozen
    /// threads), its records fail at once.
    fn start(&mut self, records: Range<usize>) -> Option<Vec<(usize, Outcome)>> {
        let id = self.next_task;
        self.next_task += 1;
        let page = self.page.clone();
        let transforms = self.transforms.clone();
        let globals = self.globals.clone();
        let sender = self.sender.clone();
        let text = self.text;
        let range = records.clone();
        let submitted = Pool::global().submit(move |progress| {
            let (outcomes, out) =
                run_chunk(&page, &transforms, &globals, range.clone(), text, progress);
            let _ = sender.send((id, range.start, outcomes, out));
        });
        match submitted {
            Ok(progress) => {
                self.running.push((id, records, progress));
                None
            }
            Err(_) => Some(
                records
                    .map(|i| {
                        let first = &self.transforms[0].limits;
                        (
                            i,
                            Outcome::Failed {
                                stage: "transforms[0]".into(),
                                error: Failure::Exhausted.describe(
                                    "the jq filter",
                                    first.time,
                                    first.memory_mib,
                                ),
                            },
                        )
                    })
                    .collect(),
            ),
        }
    }

    /// Waits for every record of the page, abandoning the workers of steps
    /// that overran (their records fail; the rest of their chunk runs again).
    pub fn wait(mut self) -> Done {
        let n = self.page.len();
        let mut outcomes: Vec<Option<Outcome>> = (0..n).map(|_| None).collect();
        let mut texts: Vec<Vec<u8>> = Vec::new();
        let mut missing = n;
        for (i, outcome) in std::mem::take(&mut self.refused) {
            outcomes[i] = Some(outcome);
            missing -= 1;
        }
        // Every missing record belongs to a running task, until none runs.
        while missing > 0 && !self.running.is_empty() {
            match self.results.recv_timeout(WATCH_EVERY) {
                Ok((id, first, chunk_outcomes, text)) => {
                    let Some(at) = self.running.iter().position(|(t, ..)| *t == id) else {
                        continue; // from an abandoned task
                    };
                    self.running.swap_remove(at);
                    let chunk = texts.len();
                    texts.push(text);
                    for (offset, mut outcome) in chunk_outcomes.into_iter().enumerate() {
                        if let Outcome::Text { chunk: c, .. } = &mut outcome {
                            *c = chunk;
                        }
                        outcomes[first + offset] = Some(outcome);
                        missing -= 1;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let mut restarts = Vec::new();
                    self.running.retain(|(_, records, progress)| {
                        match Pool::global().overran(progress, GRACE) {
                            Some(stuck) => {
                                restarts.push((records.clone(), stuck));
                                false
                            }
                            None => true,
                        }
                    });
                    for (records, stuck) in restarts {
                        let failed = records.start + stuck.step;
                        let t = &self.transforms[stuck.part.min(self.transforms.len() - 1)];
                        let limit = if stuck.memory {
                            sandbox::Limit::Memory
                        } else {
                            sandbox::Limit::Time
                        };
                        outcomes[failed] = Some(Outcome::Failed {
                            stage: format!("transforms[{}]", stuck.part),
                            error: Failure::Limit {
                                limit,
                                abandoned: true,
                            }
                            .describe(
                                "the jq filter",
                                t.limits.time,
                                t.limits.memory_mib,
                            ),
                        });
                        missing -= 1;
                        for again in [records.start..failed, failed + 1..records.end] {
                            if again.is_empty() {
                                continue;
                            }
                            if let Some(refused) = self.start(again) {
                                for (i, outcome) in refused {
                                    outcomes[i] = Some(outcome);
                                    missing -= 1;
                                }
                            }
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        Done {
            page: self.page,
            outcomes: outcomes
                .into_iter()
                .map(|o| {
                    o.unwrap_or_else(|| Outcome::Failed {
                        stage: "transforms".into(),
                        error: "the transform's worker stopped without an answer".into(),
                    })
                })
                .collect(),
            texts,
        }
    }
}

/// Runs on a worker: every record of `records`, each a guarded step.
fn run_chunk(
    page: &Page,
    transforms: &[Transform],
    globals: &JqGlobals,
    records: Range<usize>,
    text: bool,
    progress: &Progress,
) -> (Vec<Outcome>, Vec<u8>) {
    let mut outcomes = Vec::with_capacity(records.len());
    let mut out = Vec::new();
    let globals = globals.vars();
    for (step, i) in records.enumerate() {
        let input = match page {
            Page::Records(records) => Ok(to_val(&records[i])),
            Page::Lines(lines) => parse(lines.line(i)).map_err(|e| e.to_string()),
        };
        let input = match input {
            Ok(input) => input,
            Err(e) => {
                outcomes.push(Outcome::BadLine(e));
                continue;
            }
        };
        let before = out.len();
        let part = std::cell::Cell::new(0);
        let first = &transforms[0].limits;
        let result = sandbox::guarded(progress, step, first.time, || {
            run_record(
                transforms, &globals, input, text, &mut out, progress, step, &part,
            )
        });
        let outcome = match result {
            Ok(Ok(Some(values))) => Outcome::Records(values),
            Ok(Ok(None)) => Outcome::Text {
                chunk: 0,
                range: before..out.len(),
                count: out[before..].iter().filter(|b| **b == b'\n').count(),
            },
            Ok(Err(error)) => {
                out.truncate(before);
                Outcome::Failed {
                    stage: format!("transforms[{}]", part.get()),
                    error,
                }
            }
            Err(failure) => {
                out.truncate(before);
                let t = &transforms[part.get()].limits;
                Outcome::Failed {
                    stage: format!("transforms[{}]", part.get()),
                    error: failure.describe("the jq filter", t.time, t.memory_mib),
                }
            }
        };
        outcomes.push(outcome);
    }
    (outcomes, out)
}

/// Every transform on one record; its outputs as records, or appended to
/// `out` as JSON Lines (then `None`).
#[allow(clippy::too_many_arguments)]
fn run_record(
    transforms: &[Transform],
    globals: &Vars<Val>,
    input: Val,
    text: bool,
    out: &mut Vec<u8>,
    progress: &Progress,
    step: usize,
    part: &std::cell::Cell<usize>,
) -> Result<Option<Vec<Value>>, String> {
    let mut batch = vec![input];
    for (i, t) in transforms.iter().enumerate() {
        part.set(i);
        let _budget = Budget::start(t.limits.memory_bytes());
        let mut next = Vec::with_capacity(batch.len());
        for val in batch {
            // The first transform's one input runs on the clock that
            // `sandbox::guarded` started for this step an instant ago.
            if i > 0 {
                progress.begin_part(step, i, t.limits.time);
            }
            next.extend(t.filter.eval(val, t.limits.time, globals)?);
        }
        if i + 1 < transforms.len() {
            // Between steps a record is JSON, as it was when each step
            // read a `Value`.
            batch = next.into_iter().map(normalize).collect::<Result<_, _>>()?;
        } else {
            batch = next;
        }
        if text && i + 1 == transforms.len() {
            for val in &batch {
                write_json(val, out)?;
            }
            return Ok(None);
        }
    }
    if text {
        return Ok(None);
    }
    batch
        .iter()
        .map(to_json)
        .collect::<Result<_, _>>()
        .map(Some)
}

/// Runs every transform on one record and waits: `ionflow test`.
pub fn run_one(transforms: &Arc<[Transform]>, record: Value, globals: &JqGlobals) -> Outcome {
    let stage = Stage::new(transforms.clone(), false, globals.clone());
    let mut done = stage.submit(Page::Records(vec![record])).wait();
    done.outcomes.pop().unwrap_or(Outcome::Records(Vec::new()))
}
