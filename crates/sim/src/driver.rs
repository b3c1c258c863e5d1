//! One seed driver for both workloads: an [`Engine`] runs one seed and reports an
//! outcome; [`one_seed`] replays one, [`many_seeds`] runs a range on worker threads
//! with the same first-failure, keep-going and replay-command logic for either engine.

use crate::swarm::Failure;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A workload that runs one seed and reports what happened.
pub trait Engine: Sync {
    /// What one seed's run reports.
    type Outcome: Send;
    /// Sums over many seeds, for the closing report.
    type Totals: Default;
    /// Said after "seed N" and "sim" (e.g. `" (kv)"`).
    const LABEL: &'static str;
    /// The CLI flags that select this workload and its options (e.g.
    /// `" --workload kv --membership always"`), for replay commands.
    fn flags(&self) -> String;

    /// Runs `seed`; `verbose` prints every event.
    fn run(&self, seed: u64, verbose: bool) -> Self::Outcome;
    /// The failure, if the run failed.
    fn failure(out: &Self::Outcome) -> Option<&Failure>;
    /// The run's parameters, as listed before a failure.
    fn params(out: &Self::Outcome) -> String;
    /// The line(s) that sum up one run; `status` is "ok" or "FAILED".
    fn describe(out: &Self::Outcome, status: &str, wall_secs: f64) -> String;
    /// FNV-1a 64 of the whole trace.
    fn trace_hash(out: &Self::Outcome) -> u64;
    /// Adds one seed's outcome to the totals.
    fn add(totals: &mut Self::Totals, seed: u64, out: &Self::Outcome);
    /// The lines of the closing report that follow the verdict line.
    fn print_totals(totals: &Self::Totals);
}

/// The command that replays `seed` of engine `E` with its event trace.
pub fn replay_command<E: Engine>(engine: &E, seed: u64) -> String {
    format!("cargo run --release -p sim -- --seed {seed}{} -v", engine.flags())
}

/// Prints a failed run: when, what, the parameters, the last events, how to replay.
pub fn print_failure<E: Engine>(seed: u64, out: &E::Outcome, replay: &str) {
    let Some(f) = E::failure(out) else { return };
    println!("FAILED seed {seed}{} at {:.3} s simulated", E::LABEL, f.time_us as f64 / 1e6);
    println!("violated: {}", f.violation);
    println!("{}", E::params(out));
    println!("last {} events:", f.recent_events.len());
    for line in &f.recent_events {
        println!("  {line}");
    }
    println!("replay: {replay}");
}

/// Prints one run (its wall time counted from `wall`); true if it failed.
pub fn report<E: Engine>(
    seed: u64,
    out: &E::Outcome,
    wall: Instant,
    verbose: bool,
    replay: &str,
) -> bool {
    if !verbose {
        println!("{}", E::params(out));
    }
    let failed = E::failure(out).is_some();
    let status = if failed { "FAILED" } else { "ok" };
    println!("{}", E::describe(out, status, wall.elapsed().as_secs_f64()));
    print_failure::<E>(seed, out, replay);
    println!("trace-hash: {:016x}", E::trace_hash(out));
    failed
}

/// Runs and prints one seed; true if it failed.
pub fn one_seed<E: Engine>(engine: &E, seed: u64, verbose: bool) -> bool {
    let wall = Instant::now();
    let out = engine.run(seed, verbose);
    report::<E>(seed, &out, wall, verbose, &replay_command(engine, seed))
}

/// Names the seed a worker was running if the run panics (a bug in the simulator or an
/// assertion in the code under test), so the failure can be replayed alone.
struct SeedGuard(String);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        eprintln!("{}", self.0);
    }
}

/// Which seeds to run and how: seeds `from..from + count` on `jobs` threads; with
/// `keep_going`, every seed even after a failure.
#[derive(Clone, Copy, Debug)]
pub struct SeedRange {
    /// First seed.
    pub from: u64,
    /// Seeds to run.
    pub count: u64,
    /// Worker threads (at least 1).
    pub jobs: usize,
    /// Do not stop at the first failure.
    pub keep_going: bool,
}

/// Runs `run(seed)` for every seed of `range` and hands each result to `on_result` with
/// its position `k` (in completion order). Unless `keep_going`, workers stop after the
/// lowest failing seed: every lower seed still runs, so the failure reported does not
/// depend on thread timing.
fn run_parallel<E: Engine>(
    engine: &E,
    range: SeedRange,
    mut on_result: impl FnMut(u64, E::Outcome),
) {
    let SeedRange { from, count, jobs, keep_going } = range;
    let wall = Instant::now();
    let next = AtomicU64::new(0);
    let first_failure = AtomicU64::new(u64::MAX);
    let (tx, rx) = mpsc::channel::<(u64, E::Outcome)>();
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            let (tx, next, first_failure) = (tx.clone(), &next, &first_failure);
            s.spawn(move || loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                if k >= count || k > first_failure.load(Ordering::SeqCst) {
                    break;
                }
                let seed = from + k;
                let guard = SeedGuard(format!(
                    "seed {seed}{} panicked (message above); replay it alone: {}",
                    E::LABEL,
                    replay_command(engine, seed)
                ));
                let out = engine.run(seed, false);
                std::mem::forget(guard);
                if E::failure(&out).is_some() && !keep_going {
                    first_failure.fetch_min(k, Ordering::SeqCst);
                }
                if tx.send((k, out)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut last_progress = Instant::now();
        let mut done = 0;
        for (k, out) in rx {
            done += 1;
            on_result(k, out);
            if last_progress.elapsed() >= Duration::from_secs(2) {
                last_progress = Instant::now();
                eprintln!("progress: {done}/{count} seeds, {:.1} s", wall.elapsed().as_secs_f64());
            }
        }
    });
}

/// Runs a range of seeds and prints the report; true if any seed failed. Output does
/// not depend on thread timing: totals are sums, and on failure the lowest failing seed
/// is reported (workers finish every lower seed before stopping; with `keep_going` they
/// run every seed and every failing one is listed).
pub fn many_seeds<E: Engine>(engine: &E, range: SeedRange) -> bool {
    let SeedRange { from, count, jobs, keep_going } = range;
    let wall = Instant::now();
    let mut totals = E::Totals::default();
    let mut seeds = 0u64;
    let mut first: Option<(u64, E::Outcome)> = None;
    let mut failing: Vec<(u64, String)> = Vec::new();
    run_parallel(engine, range, |k, out| {
        seeds += 1;
        E::add(&mut totals, from + k, &out);
        if let Some(f) = E::failure(&out) {
            failing.push((from + k, f.violation.invariant.to_string()));
            if first.as_ref().is_none_or(|(j, _)| k < *j) {
                first = Some((k, out));
            }
        }
    });
    let secs = wall.elapsed().as_secs_f64();
    if let Some((k, out)) = &first {
        print_failure::<E>(from + k, out, &replay_command(engine, from + k));
        if keep_going {
            failing.sort();
            println!("{} of {count} seeds failed:", failing.len());
            for (seed, invariant) in &failing {
                println!("  seed {seed}: {invariant}");
            }
        }
    }
    let verdict = if first.is_some() { "FAILED" } else { "passed" };
    println!("sim{}: {seeds} of {count} seeds ({from}..{}) run: {verdict}", E::LABEL, from + count);
    E::print_totals(&totals);
    println!(
        "  wall {secs:.1} s on {jobs} workers: {:.2} seeds/s, {:.3} s per seed per worker",
        seeds as f64 / secs,
        secs * jobs as f64 / seeds.max(1) as f64
    );
    first.is_some()
}
