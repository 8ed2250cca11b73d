//! Running what a pipeline's author wrote (jq filters, templates) so that a
//! runaway one fails its record, never the process.
//!
//! Evaluations run on worker threads with a large stack ([`Pool`]), each
//! step (one record) with a time budget and a memory budget
//! ([`alloc::Budget`]). jq's interpreter checks the time, the memory and
//! its stack depth at every step it takes and stops with [`raise`], which
//! unwinds to [`guarded`] without printing anything. What cannot be stopped
//! from inside (a native operation that computes for long without
//! returning to the interpreter, an allocation past the budget) is stopped
//! from outside: see `pool`.

pub mod alloc;
mod pool;

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::sync::Once;
use std::time::Duration;

pub use pool::{MAX_ABANDONED, Pool, Progress, Stuck, WORKER_STACK};

/// Past its budget, a step that could not be stopped from inside is
/// abandoned after this much more time.
pub const GRACE: Duration = Duration::from_secs(1);

/// How often an owner looks at the steps it waits for.
pub const WATCH_EVERY: Duration = Duration::from_millis(50);

/// Which limit stopped an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Time,
    Memory,
    Depth,
}

/// The payload [`raise`] unwinds with.
struct LimitHit(Limit);

/// Stops the evaluation on this thread at `limit`: unwinds to [`guarded`]
/// without running the panic hook.
pub fn raise(limit: Limit) -> ! {
    // Unwinding a deep recursion takes a while; the owner must not take
    // it for a step that cannot be stopped.
    let progress = CURRENT.get();
    if !progress.is_null() {
        // SAFETY: the worker sets CURRENT to the progress of the task it
        // runs, which it holds until the task returns.
        unsafe { (*progress).stopping() };
    }
    std::panic::resume_unwind(Box::new(LimitHit(limit)))
}

/// How an evaluation failed.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Stopped at a limit; `abandoned` when only its owner could stop it.
    Limit { limit: Limit, abandoned: bool },
    /// The evaluated code panicked (a bug in jaq, minijinja or ionflow).
    Panicked(String),
    /// [`MAX_ABANDONED`] threads were frozen already: nothing more runs.
    Exhausted,
}

impl Failure {
    /// The error of a record, for an evaluation named `what` whose limits
    /// are described by `limits` (e.g. "1000 ms, 256 MiB").
    pub fn describe(&self, what: &str, time: Duration, memory_mib: usize) -> String {
        let ms = time.as_millis();
        match self {
            Failure::Limit {
                limit: Limit::Time,
                abandoned: false,
            } => format!(
                "{what} ran past its time limit of {ms} ms for this record; raise timeout_ms or \
                 simplify it"
            ),
            Failure::Limit {
                limit: Limit::Time,
                abandoned: true,
            } => format!(
                "{what} ran past its time limit of {ms} ms for this record inside one operation \
                 that cannot be interrupted, and was stopped {} ms later; its thread was frozen",
                GRACE.as_millis()
            ),
            Failure::Limit {
                limit: Limit::Memory,
                abandoned,
            } => format!(
                "{what} used more than its memory limit of {memory_mib} MiB for this record{}; \
                 raise max_memory_mb or simplify it",
                if *abandoned {
                    " and its thread was frozen"
                } else {
                    ""
                }
            ),
            Failure::Limit {
                limit: Limit::Depth,
                ..
            } => format!(
                "{what} recursed past its depth limit (a definition that calls itself without end?)"
            ),
            Failure::Panicked(message) => format!("{what} failed inside its evaluator: {message}"),
            Failure::Exhausted => format!(
                "{what} was not run: {MAX_ABANDONED} evaluations in this process could not be \
                 stopped and hold their threads; restart ionflow and fix the filter or template \
                 that the dead letter names"
            ),
        }
    }
}

thread_local! {
    static IN_SANDBOX: Cell<bool> = const { Cell::new(false) };
    /// The stack size of this thread, when it is a worker.
    static STACK: Cell<usize> = const { Cell::new(0) };
    /// The progress of the task this worker runs.
    static CURRENT: Cell<*const Progress> = const { Cell::new(std::ptr::null()) };
}

/// How much stack jaq's own recursion may use on this thread: a 32nd of a
/// worker's stack (16 MiB, twice what jq 1.6 gets from its C stack; the
/// rest is for native code walking deep values), a megabyte elsewhere.
pub fn eval_stack() -> usize {
    match STACK.get() {
        0 => 1 << 20,
        size => size / 32,
    }
}

/// A panic inside an evaluation becomes that record's error, so the
/// default hook's message on stderr would only repeat it.
fn install_quiet_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_SANDBOX.get() {
                previous(info);
            }
        }));
    });
}

/// Runs step `step` of a task on a worker: publishes it to the owner and
/// turns a limit or a panic into a [`Failure`].
pub fn guarded<R>(
    progress: &Progress,
    step: usize,
    budget: Duration,
    f: impl FnOnce() -> R,
) -> Result<R, Failure> {
    progress.begin(step, budget);
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(f));
    progress.end();
    outcome.map_err(|payload| match payload.downcast::<LimitHit>() {
        Ok(hit) => Failure::Limit {
            limit: hit.0,
            abandoned: false,
        },
        Err(payload) => Failure::Panicked(
            payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into()),
        ),
    })
}

/// Runs `f` as a one-step task on the pool and waits for it, abandoning
/// the worker if it overruns `budget` by [`GRACE`].
pub fn run_one<R: Send + 'static>(
    budget: Duration,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, Failure> {
    let pool = Pool::global();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let progress = pool
        .submit(move |progress| {
            let _ = tx.send(guarded(progress, 0, budget, f));
        })
        .map_err(|_| Failure::Exhausted)?;
    loop {
        match rx.recv_timeout(WATCH_EVERY) {
            Ok(outcome) => return outcome,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Some(stuck) = pool.overran(&progress, GRACE) {
                    return Err(Failure::Limit {
                        limit: if stuck.memory {
                            Limit::Memory
                        } else {
                            Limit::Time
                        },
                        abandoned: true,
                    });
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Failure::Panicked("the evaluation thread ended".into()));
            }
        }
    }
}
