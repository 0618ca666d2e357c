//! Fork-join over the CPU's cores for the fused kernels: a few helper threads that spin briefly
//! between calls, so that a training step's hundreds of short parallel sections (each 10 µs to
//! 1 ms) start within microseconds.
//!
//! Why not rayon: a rayon call from a thread outside its pool waits for a sleeping worker to
//! wake, which took 30-80 µs on the machines here (two 50 µs halves joined in 81-188 µs, worse
//! than running them one after the other; docs/log/2026-11.md, 2026-11-27), and the training step is such a
//! thread. Here the calling thread always works too, helpers join a call only if they arrive in
//! time, and the caller waits only for parts a helper has actually begun.
//!
//! Results never depend on the number of threads: callers cut their work into parts whose
//! boundaries depend on the problem's shape only, and each part is computed the same way
//! whichever thread runs it. `LAB_THREADS` sets how many threads work (the caller included;
//! default: the cores available); `LAB_THREADS=1` runs everything on the calling thread.
//!
//! One call runs at a time: a call made while another is running (from another thread, or from
//! inside a task) runs its parts on its own thread, so calls never wait for each other.

use std::mem::MaybeUninit;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::ptr::null_mut;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize};
use std::sync::{Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long an idle helper spins (and then yields) before it sleeps: longer than the gaps
/// between a training step's parallel sections, short enough to give the core back soon after.
const SPIN: Duration = Duration::from_micros(50);
const YIELD: Duration = Duration::from_millis(2);

/// Runs `task(i)` for every `i` in `0..parts`, on the calling thread and whichever helpers
/// join; returns when all have finished. A panic in a task is raised again here.
pub fn for_each(parts: usize, task: impl Fn(usize) + Sync) {
    let pool = pool();
    if parts <= 1 || pool.helpers.is_empty() || IN_TASK.get() {
        (0..parts).for_each(task);
        return;
    }
    let job = Job { task: &task, parts, next: AtomicUsize::new(0), panic: Mutex::new(None) };
    // The pool hands the job to helpers as a raw pointer, which `Retire` below withdraws (and
    // waits for every helper holding it to let go of) before `job` goes out of scope.
    let ptr = &job as *const Job<'_> as *mut Job<'static>;
    if pool.current.compare_exchange(null_mut(), ptr, SeqCst, SeqCst).is_err() {
        // Another call holds the helpers: run this one here.
        (0..parts).for_each(task);
        return;
    }
    pool.epoch.fetch_add(1, SeqCst);
    if pool.sleeping.load(SeqCst) > 0 {
        pool.helpers.iter().for_each(Thread::unpark);
    }
    {
        let _retire = Retire(pool);
        let _in_task = InTask::enter();
        job.run();
    }
    if let Some(payload) = job.panic.lock().unwrap_or_else(|e| e.into_inner()).take() {
        resume_unwind(payload);
    }
}

/// How many threads a [`for_each`] call made here would use, the caller included (one inside a
/// task, where calls run inline).
pub fn threads() -> usize {
    if IN_TASK.get() { 1 } else { pool().helpers.len() + 1 }
}

/// Runs `task(i, parts)` for every `i` in `0..count` as [`for_each`] does, where `parts[j]` is
/// part `i` of the `j`-th of `N` new vectors: vector `j` has `lens[j]` elements cut into
/// consecutive parts of `part_lens[j]` (the last may be shorter; parts past the end are empty).
/// Returns the vectors. Each part is zero-filled by the thread that runs its task, just before
/// the task: outputs need no serial fill, and a part is in that core's cache when written.
pub fn outputs<const N: usize>(
    count: usize,
    lens: [usize; N],
    part_lens: [usize; N],
    task: impl Fn(usize, [&mut [f32]; N]) + Sync,
) -> [Vec<f32>; N] {
    let zeroed = |i, parts: [&mut [MaybeUninit<f32>]; N]| {
        task(i, parts.map(zero));
    };
    // SAFETY: every element is written (zero) before the task sees it.
    unsafe { outputs_uninit(count, lens, part_lens, zeroed) }
}

/// Zeroes a part of [`outputs_uninit`] and hands it out as initialised.
pub fn zero(part: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    part.fill(MaybeUninit::new(0.0));
    // SAFETY: every element was just written; `MaybeUninit<f32>` has `f32`'s layout.
    unsafe { &mut *(part as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// [`outputs`] without the zero-fill, for tasks that write every element of their parts (which
/// saves a pass over each output: the memsets were ~4% of an `ntf` step).
///
/// # Safety
/// Every task must initialise every element of the parts it is given.
pub unsafe fn outputs_uninit<const N: usize>(
    count: usize,
    lens: [usize; N],
    part_lens: [usize; N],
    task: impl Fn(usize, [&mut [MaybeUninit<f32>]; N]) + Sync,
) -> [Vec<f32>; N] {
    for (len, part) in lens.iter().zip(&part_lens) {
        assert!(count * part >= *len, "{count} parts of {part} do not cover {len} elements");
    }
    let mut vectors: [Vec<f32>; N] = std::array::from_fn(|j| Vec::with_capacity(lens[j]));
    let starts: [Shared<MaybeUninit<f32>>; N] = std::array::from_fn(|j| Shared(vectors[j].as_mut_ptr().cast()));
    for_each(count, |i| {
        let parts = std::array::from_fn(|j| {
            let (start, end) = ((i * part_lens[j]).min(lens[j]), ((i + 1) * part_lens[j]).min(lens[j]));
            // SAFETY: `start..end` lies inside vector `j`'s capacity, and `for_each` runs each
            // `i` once, so no two tasks get overlapping ranges.
            unsafe { std::slice::from_raw_parts_mut(starts[j].get().add(start), end - start) }
        });
        task(i, parts);
    });
    for (vector, len) in vectors.iter_mut().zip(lens) {
        // SAFETY: the parts cover `0..len` (checked above), every task ran (a panic would have
        // left `for_each` above), and the caller promised that each initialised its parts.
        unsafe { vector.set_len(len) };
    }
    vectors
}

/// A raw pointer that the tasks of one call share, each touching its own elements.
pub(crate) struct Shared<T>(pub(crate) *mut T);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Shared<T> {}

// SAFETY: users hand each task disjoint elements, and read-only data nobody writes meanwhile.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// The pointer (a method, so that closures capture the `Sync` wrapper, not its field).
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

thread_local! {
    /// Whether this thread is running a task: calls made from tasks run on their own thread. A
    /// helper that became a caller would otherwise wait for every helper to let go of the pool,
    /// itself included.
    static IN_TASK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as running tasks until dropped (also when a task panics).
struct InTask(bool);

impl InTask {
    fn enter() -> Self {
        InTask(IN_TASK.replace(true))
    }
}

impl Drop for InTask {
    fn drop(&mut self) {
        IN_TASK.set(self.0);
    }
}

/// A call's tasks, shared with the helpers by reference.
struct Job<'a> {
    task: &'a (dyn Fn(usize) + Sync),
    parts: usize,
    /// The next part nobody has claimed yet.
    next: AtomicUsize,
    /// The first panic a helper's task raised, to raise again on the calling thread.
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

impl Job<'_> {
    fn run(&self) {
        loop {
            let i = self.next.fetch_add(1, SeqCst);
            if i >= self.parts {
                return;
            }
            (self.task)(i);
        }
    }
}

struct Pool {
    helpers: Vec<Thread>,
    /// The running call's job, null between calls.
    current: AtomicPtr<Job<'static>>,
    /// Bumped by every call, so that waiting helpers notice one.
    epoch: AtomicU64,
    /// Helpers that may hold `current`'s job: the caller waits for none before returning.
    active: AtomicUsize,
    /// Helpers asleep (or about to be), for the caller to wake.
    sleeping: AtomicUsize,
}

/// Withdraws the job from the pool when the call ends (or unwinds) and waits until no helper
/// holds it.
struct Retire(&'static Pool);

impl Drop for Retire {
    fn drop(&mut self) {
        self.0.current.store(null_mut(), SeqCst);
        while self.0.active.load(SeqCst) != 0 {
            std::hint::spin_loop();
        }
    }
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        let threads = match std::env::var("LAB_THREADS") {
            Err(_) => cores,
            Ok(v) => v.trim().parse::<usize>().ok().filter(|&n| n >= 1).unwrap_or_else(|| {
                eprintln!("warning: LAB_THREADS={v:?} is not a positive integer; using {cores} threads");
                cores
            }),
        };
        // The pool lives as long as the process; its helpers are spawned once it has its
        // address, and each learns its own handle from the spawn.
        let pool: &'static mut Pool = Box::leak(Box::new(Pool {
            helpers: Vec::new(),
            current: AtomicPtr::new(null_mut()),
            epoch: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            sleeping: AtomicUsize::new(0),
        }));
        let address = pool as *mut Pool as usize;
        let helpers = (1..threads)
            .filter_map(|i| {
                thread::Builder::new()
                    .name(format!("lab-helper-{i}"))
                    // SAFETY: the pool is leaked, so the address stays valid forever; helpers
                    // only read it through shared references.
                    .spawn(move || helper(unsafe { &*(address as *const Pool) }))
                    .ok()
                    .map(|handle| handle.thread().clone())
            })
            .collect();
        pool.helpers = helpers;
        &*pool
    })
}

fn helper(pool: &'static Pool) {
    let _in_task = InTask::enter();
    let mut seen = pool.epoch.load(SeqCst);
    loop {
        let idle = Instant::now();
        loop {
            let epoch = pool.epoch.load(SeqCst);
            if epoch != seen {
                seen = epoch;
                break;
            }
            let waited = idle.elapsed();
            if waited < SPIN {
                for _ in 0..64 {
                    std::hint::spin_loop();
                }
            } else if waited < YIELD {
                thread::yield_now();
            } else {
                // A caller bumps the epoch and then reads `sleeping`; this helper counts itself
                // and then reads the epoch: one of the two sees the other, so no wake-up is lost.
                pool.sleeping.fetch_add(1, SeqCst);
                if pool.epoch.load(SeqCst) == seen {
                    thread::park();
                }
                pool.sleeping.fetch_sub(1, SeqCst);
            }
        }
        // Counted before looking at the job, so that a caller who withdraws it afterwards waits.
        pool.active.fetch_add(1, SeqCst);
        let job = pool.current.load(SeqCst);
        if !job.is_null() {
            // SAFETY: the job stays alive until its caller has withdrawn it and seen `active`
            // at zero, which cannot happen before the decrement below.
            let job = unsafe { &*job };
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| job.run())) {
                job.panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(payload);
            }
        }
        pool.active.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_runs_once_on_its_own_zeroed_elements() {
        for count in [0usize, 1, 2, 3, 17, 64] {
            let len = (count * 5).saturating_sub(2);
            let [a, b] = outputs(count, [len, count], [5, 1], |i, [a, b]| {
                assert!(a.iter().chain(b.iter()).all(|&x| x == 0.0), "parts start zeroed");
                for x in a {
                    *x += (i + 1) as f32;
                }
                b[0] = i as f32;
            });
            let expected: Vec<f32> = (0..len).map(|j| (j / 5 + 1) as f32).collect();
            assert_eq!((a, b), (expected, (0..count).map(|i| i as f32).collect::<Vec<_>>()));
        }
    }

    #[test]
    fn concurrent_and_nested_calls_complete() {
        let total = AtomicUsize::new(0);
        thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        for_each(4, |_| {
                            for_each(3, |_| {
                                total.fetch_add(1, SeqCst);
                            })
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(SeqCst), 4 * 200 * 4 * 3);
    }

    #[test]
    fn a_panicking_task_panics_the_call() {
        let result = catch_unwind(|| for_each(8, |i| assert!(i != 5, "task 5 fails")));
        assert!(result.is_err());
        // The pool still works afterwards.
        let count = AtomicUsize::new(0);
        for_each(8, |_| {
            count.fetch_add(1, SeqCst);
        });
        assert_eq!(count.load(SeqCst), 8);
    }

    #[test]
    #[should_panic(expected = "do not cover")]
    fn parts_must_cover_the_outputs() {
        outputs(2, [11], [5], |_, _| {});
    }
}
