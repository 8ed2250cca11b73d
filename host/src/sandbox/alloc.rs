//! A global allocator that charges each evaluation's allocations to its
//! thread, so that a jq filter or a template that grows without bound is
//! stopped at its memory budget.
//!
//! The `ionflow` binary installs `Tracking<mimalloc::MiMalloc>`. Outside an
//! evaluation it costs one thread-local read per call. Inside one, every
//! allocation and free moves the thread's count of live bytes; past the
//! budget a flag is raised that jq's interpreter checks at its next step
//! (a cooperative stop, see `pipeline::transform`). An allocator may not
//! fail or unwind without aborting the process, so an allocation that
//! would take the thread past a quarter more than its budget is never
//! made: the thread is parked for good instead, and its owner abandons it
//! (see `pool`). A program that embeds the crate with another allocator
//! has no memory budget; time and depth limits still hold.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// Wraps the allocator `A` with per-thread budgets.
pub struct Tracking<A>(pub A);

thread_local! {
    /// The budget of the evaluation running on this thread; 0 when none.
    static LIMIT: Cell<usize> = const { Cell::new(0) };
    /// Bytes allocated minus bytes freed since the evaluation started.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static OVER: Cell<bool> = const { Cell::new(false) };
    /// Raised before this thread parks itself, so that its owner can tell
    /// a memory stop from a time overrun.
    static PARKED: Cell<*const AtomicBool> = const { Cell::new(std::ptr::null()) };
}

/// Counts allocations against the budget while it lives.
pub struct Budget {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Budget {
    /// Starts a budget of `bytes` on this thread (0: no budget).
    pub fn start(bytes: usize) -> Budget {
        LIVE.set(0);
        OVER.set(false);
        LIMIT.set(bytes);
        Budget {
            _not_send: std::marker::PhantomData,
        }
    }

    /// Whether the evaluation has allocated more than its budget.
    #[inline]
    pub fn exceeded() -> bool {
        OVER.get()
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        LIMIT.set(0);
        OVER.set(false);
    }
}

/// Where this thread reports that it parked itself; set by the pool's
/// workers for the task they run.
pub(super) fn report_park_to(flag: *const AtomicBool) {
    PARKED.set(flag);
}

#[inline]
fn charge(bytes: usize) {
    let limit = LIMIT.get();
    if limit == 0 {
        return;
    }
    let live = LIVE.get().saturating_add(bytes as isize);
    LIVE.set(live);
    if live > limit as isize {
        OVER.set(true);
        if live > (limit + limit / 4) as isize {
            park();
        }
    }
}

#[inline]
fn credit(bytes: usize) {
    if LIMIT.get() != 0 {
        LIVE.set(LIVE.get().saturating_sub(bytes as isize));
    }
}

/// Never returns: the allocation is not made, and the thread sleeps until
/// the process exits. Allocates nothing itself.
#[cold]
fn park() -> ! {
    let flag = PARKED.get();
    if !flag.is_null() {
        // SAFETY: the pool keeps the flag alive as long as the task's
        // worker thread lives, which is forever from here on.
        unsafe { (*flag).store(true, Ordering::SeqCst) };
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

// SAFETY: every call is forwarded to `A` with the same arguments; the
// bookkeeping around it touches only const-initialised thread-locals without
// destructors, which neither allocate nor unwind.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Tracking<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        // SAFETY: forwarded as is.
        unsafe { self.0.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        // SAFETY: forwarded as is.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        credit(layout.size());
        // SAFETY: forwarded as is.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            charge(new_size - layout.size());
        } else {
            credit(layout.size() - new_size);
        }
        // SAFETY: forwarded as is.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}
