//! The worker threads that evaluations run on, and what happens to one
//! that cannot be stopped from inside.
//!
//! A task is a list of steps (one record each); the worker publishes which
//! step it is on and since when. Its owner, waiting for the result, calls
//! [`Pool::overran`]: a step that has run past its budget plus a grace
//! period (or whose thread the allocator parked) gets its worker
//! abandoned. The abandoned thread is frozen by a signal, so it burns no
//! CPU, keeps at most its memory budget, and a replacement worker takes
//! its place. Only [`MAX_ABANDONED`] such threads may pile up in a process;
//! after that, evaluations are refused until it restarts.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::alloc::report_park_to;

/// Stack of each worker thread. Only the pages an evaluation touches are
/// committed; a 32nd bounds how deep jq may recurse (`eval_stack`), the
/// rest is for native code walking or dropping the deepest value that fits
/// in a memory budget (a value nested as deep as 1024 MiB allows was built,
/// compared and dropped within it).
pub const WORKER_STACK: usize = 512 << 20;

/// Threads that could not be stopped and were frozen, per process.
pub const MAX_ABANDONED: usize = 8;

/// A task not yet picked up (the default).
#[allow(dead_code)]
const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
const ABANDONED: u8 = 3;

/// What the owner of a task sees of it while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    state: AtomicU8,
    step: AtomicUsize,
    part: AtomicUsize,
    /// When the current step started, in µs since the pool started; 0
    /// between steps.
    started_us: AtomicU64,
    budget_us: AtomicU64,
    parked: AtomicBool,
    /// The step is unwinding from a limit: it stops by itself.
    unwinding: AtomicBool,
    thread: AtomicU64,
}

impl Progress {
    /// Called by the task when it starts step `step` with this budget.
    pub fn begin(&self, step: usize, budget: Duration) {
        self.begin_part(step, 0, budget);
    }

    /// Like [`Self::begin`], for part `part` of the step (a transform of
    /// several), which restarts the clock.
    pub fn begin_part(&self, step: usize, part: usize, budget: Duration) {
        self.unwinding.store(false, Ordering::Release);
        self.step.store(step, Ordering::Release);
        self.part.store(part, Ordering::Release);
        self.budget_us
            .store(budget.as_micros() as u64, Ordering::Release);
        self.started_us.store(now_us().max(1), Ordering::Release);
    }

    /// Called when the step stops at a limit (`sandbox::raise`).
    pub(super) fn stopping(&self) {
        self.unwinding.store(true, Ordering::Release);
    }

    /// Called by the task when the step is over.
    pub fn end(&self) {
        self.started_us.store(0, Ordering::Release);
    }
}

/// A step that could not be stopped from inside: its worker was abandoned.
#[derive(Debug, Clone, Copy)]
pub struct Stuck {
    pub step: usize,
    pub part: usize,
    /// The allocator parked the thread (memory); otherwise it overran its time.
    pub memory: bool,
}

type Job = Box<dyn FnOnce(&Progress) + Send>;

struct Shared {
    queue: Mutex<VecDeque<(Job, Arc<Progress>)>>,
    ready: Condvar,
    abandoned: AtomicUsize,
}

pub struct Pool {
    shared: Arc<Shared>,
    workers: usize,
}

/// Too many evaluations could not be stopped in this process.
#[derive(Debug, Clone, Copy)]
pub struct Exhausted;

static POOL: OnceLock<Pool> = OnceLock::new();
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

impl Pool {
    /// The process's pool, started on first use: one worker per core (at
    /// most 16), or `IONFLOW_EVAL_THREADS` of them.
    pub fn global() -> &'static Pool {
        POOL.get_or_init(|| {
            let workers = std::env::var("IONFLOW_EVAL_THREADS")
                .ok()
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                .clamp(1, 16);
            super::install_quiet_panics();
            install_freeze_handler();
            let pool = Pool {
                shared: Arc::new(Shared {
                    queue: Mutex::new(VecDeque::new()),
                    ready: Condvar::new(),
                    abandoned: AtomicUsize::new(0),
                }),
                workers,
            };
            for _ in 0..workers {
                pool.spawn_worker();
            }
            pool
        })
    }

    /// How many tasks run at once.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Queues `job`; the returned progress is what [`Self::overran`] watches.
    pub fn submit(
        &self,
        job: impl FnOnce(&Progress) + Send + 'static,
    ) -> Result<Arc<Progress>, Exhausted> {
        if self.shared.abandoned.load(Ordering::Acquire) >= MAX_ABANDONED {
            return Err(Exhausted);
        }
        let progress = Arc::new(Progress::default());
        let mut queue = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.push_back((Box::new(job), progress.clone()));
        drop(queue);
        self.shared.ready.notify_one();
        Ok(progress)
    }

    /// Abandons the worker of `progress` if its current step ran past its
    /// budget plus `grace`, or was parked by the allocator.
    pub fn overran(&self, progress: &Progress, grace: Duration) -> Option<Stuck> {
        let step = progress.step.load(Ordering::Acquire);
        let started = progress.started_us.load(Ordering::Acquire);
        if started == 0
            || progress.state.load(Ordering::Acquire) != RUNNING
            || progress.unwinding.load(Ordering::Acquire)
        {
            return None;
        }
        let parked = progress.parked.load(Ordering::Acquire);
        let limit = started
            .saturating_add(progress.budget_us.load(Ordering::Acquire))
            .saturating_add(grace.as_micros() as u64);
        if !parked && now_us() < limit {
            return None;
        }
        if progress
            .state
            .compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return None;
        }
        // Freeze it only if it is still on the same step; a worker that
        // moved on in the meantime finishes its task, which nobody reads,
        // and exits.
        if progress.step.load(Ordering::Acquire) == step
            && progress.started_us.load(Ordering::Acquire) == started
        {
            freeze(progress.thread.load(Ordering::Acquire));
        }
        let count = self.shared.abandoned.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::error!(
            "an evaluation could not be stopped from inside and its thread was frozen \
             ({count} of at most {MAX_ABANDONED} in this process)"
        );
        self.spawn_worker();
        Some(Stuck {
            step,
            part: progress.part.load(Ordering::Acquire),
            memory: parked,
        })
    }

    fn spawn_worker(&self) {
        // Where memory is not overcommitted, a smaller stack may still be
        // granted; the depth limit then comes sooner for deep values.
        for stack in [WORKER_STACK, WORKER_STACK / 8] {
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name("ionflow-eval".into())
                .stack_size(stack)
                .spawn(move || {
                    super::STACK.set(stack);
                    work(&shared)
                });
            match spawned {
                Ok(_) => return,
                Err(e) => tracing::error!(
                    "could not start an evaluation thread with a {} MiB stack: {e}",
                    stack >> 20
                ),
            }
        }
    }
}

fn work(shared: &Shared) {
    super::IN_SANDBOX.set(true);
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() } as u64;
    loop {
        let (job, progress) = {
            let mut queue = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(next) = queue.pop_front() {
                    break next;
                }
                queue = shared.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
        };
        progress.thread.store(me, Ordering::Release);
        progress.state.store(RUNNING, Ordering::Release);
        report_park_to(&progress.parked);
        super::CURRENT.set(Arc::as_ptr(&progress));
        // The job catches what its steps raise; this only keeps a bug in a
        // job from ending the worker.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&progress)));
        report_park_to(std::ptr::null());
        super::CURRENT.set(std::ptr::null());
        if progress
            .state
            .compare_exchange(RUNNING, DONE, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Abandoned while it finished: a replacement already runs, and
            // the owner may be about to signal this thread, so it must not
            // exit (a pthread_t may be reused once its thread is gone).
            loop {
                std::thread::park();
            }
        }
    }
}

/// The signal that freezes an abandoned thread.
fn freeze_signal() -> libc::c_int {
    libc::SIGRTMIN() + 4
}

extern "C" fn frozen(_: libc::c_int) {
    loop {
        // SAFETY: pause is async-signal-safe.
        unsafe { libc::pause() };
    }
}

fn install_freeze_handler() {
    // SAFETY: a zeroed sigaction is valid; the handler only calls pause,
    // which is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = frozen as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(freeze_signal(), &action, std::ptr::null_mut());
    }
}

fn freeze(thread: u64) {
    if thread != 0 {
        // SAFETY: the thread is a worker of this pool, which never exits
        // while its task is RUNNING.
        unsafe { libc::pthread_kill(thread as libc::pthread_t, freeze_signal()) };
    }
}
