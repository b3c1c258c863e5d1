//! `sim`: the simulator's command line. Run many swarm seeds on all cores, replay one seed
//! with its event trace, or benchmark the core.
//!
//! ```text
//! cargo run --release -p sim -- --seeds 300 [--from 1000] [--jobs 2] [--keep-going]
//! cargo run --release -p sim -- --seed 42 [-v]
//! cargo run --release -p sim -- --bench [--bench-seconds 10]
//! ```

use clap::{Parser, ValueEnum};
use sim::bench::run_bench;
use sim::swarm::{run_seed, SeedOutcome};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Deterministic simulation of a raftkv cluster: one seed decides the whole run.
#[derive(Parser, Debug)]
#[command(name = "sim", version)]
struct Args {
    /// Run this many seeds (swarm testing); stops at the first violation. The default
    /// when neither --seed nor --bench is given (100 seeds).
    #[arg(long, conflicts_with_all = ["seed", "bench"])]
    seeds: Option<u64>,
    /// First seed for --seeds.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Run exactly this seed; the output ends with its trace hash.
    #[arg(long, conflicts_with = "bench")]
    seed: Option<u64>,
    /// With --seed: print every event of the trace.
    #[arg(short, long)]
    verbose: bool,
    /// Benchmark: a fault-free in-memory 3-node cluster under heavy proposal load.
    #[arg(long)]
    bench: bool,
    /// Simulated seconds the benchmark runs.
    #[arg(long, default_value_t = 10)]
    bench_seconds: u64,
    /// With --seeds: do not stop at the first violation; list every failing seed.
    #[arg(long)]
    keep_going: bool,
    /// Worker threads for --seeds.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// What the cluster replicates.
    #[arg(long, value_enum, default_value_t = Workload::Raft)]
    workload: Workload,
}

/// The replicated service driven by the simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Opaque commands and a digest state machine: checks the Raft core itself.
    Raft,
    /// The key/value store with linearizability checking (not available yet).
    Kv,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.workload == Workload::Kv {
        eprintln!(
            "error: --workload kv is not available yet (it arrives with the kv crate); use --workload raft, the default"
        );
        return ExitCode::from(2);
    }
    if args.bench {
        return bench(args.bench_seconds);
    }
    if let Some(seed) = args.seed {
        return one_seed(seed, args.verbose);
    }
    many_seeds(args.from, args.seeds.unwrap_or(100), args.jobs.max(1), args.keep_going)
}

fn replay_command(seed: u64) -> String {
    format!("cargo run --release -p sim -- --seed {seed} -v")
}

fn print_failure(out: &SeedOutcome) {
    let Some(f) = &out.failure else { return };
    let seed = out.params.seed;
    println!("FAILED seed {seed} at {:.3} s simulated", f.time_us as f64 / 1e6);
    println!("violated: {}", f.violation);
    println!("{}", out.params);
    println!("last {} events:", f.recent_events.len());
    for line in &f.recent_events {
        println!("  {line}");
    }
    println!("replay: {}", replay_command(seed));
}

fn one_seed(seed: u64, verbose: bool) -> ExitCode {
    let wall = Instant::now();
    let out = run_seed(seed, verbose);
    if !verbose {
        println!("{}", out.params);
    }
    println!(
        "seed {seed}: {} after {:.1} s simulated, {} events, {} proposals ({} accepted), {} committed, {} crashes, {} network faults, {:.3} s wall",
        if out.failure.is_some() { "FAILED" } else { "ok" },
        out.sim_time_us as f64 / 1e6,
        out.events,
        out.proposals,
        out.proposals_accepted,
        out.commands_committed,
        out.crashes,
        out.partitions,
        wall.elapsed().as_secs_f64()
    );
    print_failure(&out);
    println!("trace-hash: {:016x}", out.trace_hash);
    if out.failure.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[derive(Default)]
struct Totals {
    seeds: u64,
    sim_time_us: u64,
    events: u64,
    proposals: u64,
    committed: u64,
}

/// Runs seeds `from..from + count` on `jobs` threads. Output does not depend on thread
/// timing: totals are sums, and on failure the lowest failing seed is reported (workers
/// finish every lower seed before stopping; with `keep_going` they run every seed).
fn many_seeds(from: u64, count: u64, jobs: usize, keep_going: bool) -> ExitCode {
    let wall = Instant::now();
    let next = AtomicU64::new(0);
    let first_failure = AtomicU64::new(u64::MAX);
    let (tx, rx) = mpsc::channel::<(u64, SeedOutcome)>();
    let mut totals = Totals::default();
    let mut failed: Option<(u64, SeedOutcome)> = None;
    let mut failing: Vec<(u64, String)> = Vec::new();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            let (tx, next, first_failure) = (tx.clone(), &next, &first_failure);
            s.spawn(move || loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                if k >= count || k > first_failure.load(Ordering::SeqCst) {
                    break;
                }
                let out = run_seed(from + k, false);
                if out.failure.is_some() && !keep_going {
                    first_failure.fetch_min(k, Ordering::SeqCst);
                }
                if tx.send((k, out)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut last_progress = Instant::now();
        for (k, out) in rx {
            totals.seeds += 1;
            totals.sim_time_us += out.sim_time_us;
            totals.events += out.events;
            totals.proposals += out.proposals;
            totals.committed += out.commands_committed;
            if let Some(f) = &out.failure {
                failing.push((from + k, f.violation.invariant.to_string()));
            }
            if out.failure.is_some() && failed.as_ref().is_none_or(|(j, _)| k < *j) {
                failed = Some((k, out));
            }
            if last_progress.elapsed() >= Duration::from_secs(2) {
                last_progress = Instant::now();
                eprintln!(
                    "progress: {}/{count} seeds, {:.1} s",
                    totals.seeds,
                    wall.elapsed().as_secs_f64()
                );
            }
        }
    });
    let secs = wall.elapsed().as_secs_f64();
    if let Some((_, out)) = &failed {
        print_failure(out);
        if keep_going {
            failing.sort();
            println!("{} of {count} seeds failed:", failing.len());
            for (seed, invariant) in &failing {
                println!("  seed {seed}: {invariant}");
            }
        }
    }
    let verdict = if failed.is_some() { "FAILED" } else { "passed" };
    println!("sim: {} of {count} seeds ({from}..{}) run: {verdict}", totals.seeds, from + count);
    println!(
        "  simulated {:.2} h ({:.0} s per seed), {} events, {} proposals, {} committed",
        totals.sim_time_us as f64 / 3.6e9,
        totals.sim_time_us as f64 / 1e6 / totals.seeds.max(1) as f64,
        totals.events,
        totals.proposals,
        totals.committed
    );
    println!(
        "  wall {secs:.1} s on {jobs} workers: {:.2} seeds/s, {:.3} s per seed per worker",
        totals.seeds as f64 / secs,
        secs * jobs as f64 / totals.seeds.max(1) as f64
    );
    if failed.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn bench(seconds: u64) -> ExitCode {
    let r = run_bench(seconds * 1_000_000, 1);
    println!(
        "bench: 3 nodes, in-memory disks, {} s simulated: {} proposals, {} committed, {} events",
        r.sim_time_us / 1_000_000,
        r.proposals,
        r.committed,
        r.events
    );
    println!(
        "  {:.3} s {}: {:.0} committed proposals per CPU second, {:.0} events per CPU second",
        r.cpu.as_secs_f64(),
        if r.cpu_is_wall_time { "wall (no CPU clock available)" } else { "CPU" },
        r.committed_per_cpu_second(),
        r.events as f64 / r.cpu.as_secs_f64().max(1e-9)
    );
    ExitCode::SUCCESS
}
