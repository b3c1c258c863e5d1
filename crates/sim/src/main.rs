//! `sim`: the simulator's command line. Run many swarm seeds on all cores, replay one seed
//! with its event trace, or benchmark the core.
//!
//! ```text
//! cargo run --release -p sim -- --seeds 300 [--from 1000] [--jobs 2] [--keep-going]
//! cargo run --release -p sim -- --seed 42 [-v]
//! cargo run --release -p sim -- --workload kv --seeds 200 | --seed 42 [-v]
//! cargo run --release -p sim -- --scenario long_delay_crash_all_partitions_snapshots [--workload kv] [-v]
//! cargo run --release -p sim -- --bench [--bench-seconds 10]
//! ```

use clap::{Parser, ValueEnum};
use sim::bench::run_bench;
use sim::kv::swarm::run_kv_params;
use sim::kv::swarm::{describe_outcome, LinVerdict};
use sim::kv::{run_kv_seed, KvOutcome, KvStats};
use sim::scenario::Scenario;
use sim::swarm::{run_params, run_seed, SeedOutcome};
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
    /// Run one named scenario (`sim::scenario`; `--scenario list` names them all).
    #[arg(long, conflicts_with_all = ["seed", "seeds", "bench"])]
    scenario: Option<String>,
    /// With --seed or --scenario: print every event of the trace.
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
    /// The real member code (node, storage, kv) with clients whose history is checked
    /// for linearizability.
    Kv,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(name) = &args.scenario {
        return one_scenario(name, args.workload == Workload::Kv, args.verbose);
    }
    if args.workload == Workload::Kv {
        if args.bench {
            eprintln!("error: --bench measures the raft core; it has no kv workload");
            return ExitCode::from(2);
        }
        if let Some(seed) = args.seed {
            return kv_one_seed(seed, args.verbose);
        }
        let count = args.seeds.unwrap_or(100);
        return kv_many_seeds(args.from, count, args.jobs.max(1), args.keep_going);
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

/// Runs one named scenario of either workload (or lists them for `list`).
fn one_scenario(name: &str, kv: bool, verbose: bool) -> ExitCode {
    let Some(scenario) = Scenario::from_name(name) else {
        if name != "list" {
            eprintln!("error: no scenario {name:?}; the scenarios are:");
        }
        for s in Scenario::all() {
            println!("{}", s.name());
        }
        return if name == "list" { ExitCode::SUCCESS } else { ExitCode::from(2) };
    };
    println!("scenario {} (seed {})", scenario.name(), scenario.seed());
    let (replay, wall) = (scenario.replay_command(kv), Instant::now());
    if kv {
        kv_report(run_kv_params(scenario.kv_params(), verbose), wall, verbose, &replay)
    } else {
        report(run_params(scenario.raft_params(), verbose), wall, verbose, &replay)
    }
}

fn print_failure(out: &SeedOutcome) {
    print_failure_with(out, &replay_command(out.params.seed));
}

fn print_failure_with(out: &SeedOutcome, replay: &str) {
    let Some(f) = &out.failure else { return };
    let seed = out.params.seed;
    println!("FAILED seed {seed} at {:.3} s simulated", f.time_us as f64 / 1e6);
    println!("violated: {}", f.violation);
    println!("{}", out.params);
    println!("last {} events:", f.recent_events.len());
    for line in &f.recent_events {
        println!("  {line}");
    }
    println!("replay: {replay}");
}

fn one_seed(seed: u64, verbose: bool) -> ExitCode {
    let wall = Instant::now();
    report(run_seed(seed, verbose), wall, verbose, &replay_command(seed))
}

/// Prints one run's outcome (its wall time counted from `wall`); fails if it failed.
fn report(out: SeedOutcome, wall: Instant, verbose: bool, replay: &str) -> ExitCode {
    let seed = out.params.seed;
    if !verbose {
        println!("{}", out.params);
    }
    println!(
        "seed {seed}: {} after {:.1} s simulated, {} events, {} proposals ({} accepted), {} committed, {} crashes, {} network faults, {} membership changes, {} transfers, {:.3} s wall",
        if out.failure.is_some() { "FAILED" } else { "ok" },
        out.sim_time_us as f64 / 1e6,
        out.events,
        out.proposals,
        out.proposals_accepted,
        out.commands_committed,
        out.crashes,
        out.partitions,
        out.conf_changes,
        out.transfers,
        wall.elapsed().as_secs_f64()
    );
    print_failure_with(&out, replay);
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
    membership_seeds: u64,
    conf_changes: u64,
    transfers: u64,
}

/// Names the seed a worker was running if the run panics (a bug in the simulator or an
/// assertion in the code under test), so the failure can be replayed alone.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        let seed = self.0;
        eprintln!(
            "seed {seed} panicked (message above); replay it alone: \
             cargo run --release -p sim -- --seed {seed} [--workload kv] -v"
        );
    }
}

/// Runs `run(seed)` for seeds `from..from + count` on `jobs` threads and hands each result
/// to `on_result` with its position `k` (in completion order). Unless `keep_going`, workers
/// stop after the lowest failing seed: every lower seed still runs, so the failure reported
/// does not depend on thread timing.
fn run_parallel<T: Send>(
    (from, count, jobs, keep_going): (u64, u64, usize, bool),
    run: impl Fn(u64) -> T + Sync,
    failed: impl Fn(&T) -> bool + Sync,
    mut on_result: impl FnMut(u64, T),
) {
    let wall = Instant::now();
    let next = AtomicU64::new(0);
    let first_failure = AtomicU64::new(u64::MAX);
    let (tx, rx) = mpsc::channel::<(u64, T)>();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            let (tx, next, first_failure, run, failed) =
                (tx.clone(), &next, &first_failure, &run, &failed);
            s.spawn(move || loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                if k >= count || k > first_failure.load(Ordering::SeqCst) {
                    break;
                }
                let guard = SeedGuard(from + k);
                let out = run(from + k);
                std::mem::forget(guard);
                if failed(&out) && !keep_going {
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

/// Runs seeds `from..from + count` on `jobs` threads. Output does not depend on thread
/// timing: totals are sums, and on failure the lowest failing seed is reported (workers
/// finish every lower seed before stopping; with `keep_going` they run every seed).
fn many_seeds(from: u64, count: u64, jobs: usize, keep_going: bool) -> ExitCode {
    let wall = Instant::now();
    let mut totals = Totals::default();
    let mut failed: Option<(u64, SeedOutcome)> = None;
    let mut failing: Vec<(u64, String)> = Vec::new();
    let has_failed = |out: &SeedOutcome| out.failure.is_some();
    run_parallel(
        (from, count, jobs, keep_going),
        |seed| run_seed(seed, false),
        has_failed,
        |k, out| {
            totals.seeds += 1;
            totals.sim_time_us += out.sim_time_us;
            totals.events += out.events;
            totals.proposals += out.proposals;
            totals.committed += out.commands_committed;
            totals.membership_seeds += u64::from(out.params.membership_interval_us.is_some());
            totals.conf_changes += out.conf_changes;
            totals.transfers += out.transfers;
            if let Some(f) = &out.failure {
                failing.push((from + k, f.violation.invariant.to_string()));
            }
            if out.failure.is_some() && failed.as_ref().is_none_or(|(j, _)| k < *j) {
                failed = Some((k, out));
            }
        },
    );
    let secs = wall.elapsed().as_secs_f64();
    if let Some((_, out)) = &failed {
        print_failure(out);
        if keep_going {
            print_failing(&mut failing, count);
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
        "  membership: {} seeds with changes, {} changes accepted, {} leadership transfers",
        totals.membership_seeds, totals.conf_changes, totals.transfers
    );
    print_wall(secs, jobs, totals.seeds);
    if failed.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_failing(failing: &mut [(u64, String)], count: u64) {
    failing.sort();
    println!("{} of {count} seeds failed:", failing.len());
    for (seed, invariant) in failing.iter() {
        println!("  seed {seed}: {invariant}");
    }
}

fn print_wall(secs: f64, jobs: usize, seeds: u64) {
    println!(
        "  wall {secs:.1} s on {jobs} workers: {:.2} seeds/s, {:.3} s per seed per worker",
        seeds as f64 / secs,
        secs * jobs as f64 / seeds.max(1) as f64
    );
}

fn kv_replay_command(seed: u64) -> String {
    format!("cargo run --release -p sim -- --seed {seed} --workload kv -v")
}

fn print_kv_failure(out: &KvOutcome) {
    print_kv_failure_with(out, &kv_replay_command(out.params.seed));
}

fn print_kv_failure_with(out: &KvOutcome, replay: &str) {
    let Some(f) = &out.failure else { return };
    let seed = out.params.seed;
    println!("FAILED seed {seed} (kv) at {:.3} s simulated", f.time_us as f64 / 1e6);
    println!("violated: {}", f.violation);
    println!("{}", out.params);
    println!("last {} events:", f.recent_events.len());
    for line in &f.recent_events {
        println!("  {line}");
    }
    println!("replay: {replay}");
}

fn kv_one_seed(seed: u64, verbose: bool) -> ExitCode {
    let wall = Instant::now();
    kv_report(run_kv_seed(seed, verbose), wall, verbose, &kv_replay_command(seed))
}

/// [`report`] for the kv workload.
fn kv_report(out: KvOutcome, wall: Instant, verbose: bool, replay: &str) -> ExitCode {
    let seed = out.params.seed;
    if !verbose {
        println!("{}", out.params);
    }
    println!(
        "seed {seed} (kv): {} after {:.1} s simulated, {} events, {:.3} s wall",
        if out.failure.is_some() { "FAILED" } else { "ok" },
        out.sim_time_us as f64 / 1e6,
        out.events,
        wall.elapsed().as_secs_f64()
    );
    println!("  {}", describe_outcome(&out));
    print_kv_failure_with(&out, replay);
    println!("trace-hash: {:016x}", out.trace_hash);
    if out.failure.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[derive(Default)]
struct KvTotals {
    seeds: u64,
    sim_time_us: u64,
    events: u64,
    stats: KvStats,
    partitions: u64,
    linearizable: u64,
    unknown: Vec<u64>,
    watch_seeds: u64,
    lease_seeds: u64,
    member_seeds: u64,
    /// The largest WAL over its seed's bound: (ratio, seed, bytes, bound).
    raft_state_ratio_max: (f64, u64, u64, u64),
    auth_seeds: u64,
}

impl KvTotals {
    fn add(&mut self, seed: u64, out: &KvOutcome) {
        self.seeds += 1;
        self.sim_time_us += out.sim_time_us;
        self.events += out.events;
        self.partitions += out.partitions;
        let (t, s) = (&mut self.stats, &out.stats);
        t.ops += s.ops;
        t.ok += s.ok;
        t.failed += s.failed;
        t.unknown += s.unknown;
        t.resends += s.resends;
        t.registrations += s.registrations;
        t.sessions_expired += s.sessions_expired;
        t.snapshots_taken += s.snapshots_taken;
        t.snapshots_installed += s.snapshots_installed;
        t.crashes += s.crashes;
        t.entries_applied += s.entries_applied;
        t.appends_held_back += s.appends_held_back;
        t.watch_events += s.watch_events;
        t.watch_messages += s.watch_messages;
        t.watch_reconnects += s.watch_reconnects;
        t.watch_compacted += s.watch_compacted;
        t.leases_granted += s.leases_granted;
        t.keep_alives_acked += s.keep_alives_acked;
        t.leases_expired += s.leases_expired;
        t.leases_revoked += s.leases_revoked;
        t.member_changes += s.member_changes;
        t.member_changes_failed += s.member_changes_failed;
        t.members_joined += s.members_joined;
        t.members_removed += s.members_removed;
        self.member_seeds += u64::from(out.params.member_change_interval_us.is_some());
        let bound = sim::kv::raft_state_bytes_bound(&out.params.cluster);
        let ratio = s.raft_state_bytes_max as f64 / bound as f64;
        if ratio > self.raft_state_ratio_max.0 {
            self.raft_state_ratio_max = (ratio, seed, s.raft_state_bytes_max, bound);
        }
        self.watch_seeds += u64::from(out.params.cluster.watchers > 0);
        self.lease_seeds += u64::from(out.params.cluster.mix.lease > 0);
        t.auth_ops += s.auth_ops;
        t.auth_served += s.auth_served;
        t.auth_refused += s.auth_refused;
        self.auth_seeds += u64::from(out.params.cluster.auth_share > 0.0);
        match out.verdict {
            LinVerdict::Linearizable => self.linearizable += 1,
            LinVerdict::Unknown(_) => self.unknown.push(seed),
            LinVerdict::NotLinearizable | LinVerdict::NotChecked => {}
        }
    }
}

/// The kv workload over many seeds; see [`many_seeds`].
fn kv_many_seeds(from: u64, count: u64, jobs: usize, keep_going: bool) -> ExitCode {
    let wall = Instant::now();
    let mut totals = KvTotals::default();
    let mut failed: Option<(u64, KvOutcome)> = None;
    let mut failing: Vec<(u64, String)> = Vec::new();
    let has_failed = |out: &KvOutcome| out.failure.is_some();
    let run = |seed| run_kv_seed(seed, false);
    run_parallel((from, count, jobs, keep_going), run, has_failed, |k, out| {
        totals.add(from + k, &out);
        if let Some(f) = &out.failure {
            failing.push((from + k, f.violation.invariant.to_string()));
            if failed.as_ref().is_none_or(|(j, _)| k < *j) {
                failed = Some((k, out));
            }
        }
    });
    let secs = wall.elapsed().as_secs_f64();
    if let Some((_, out)) = &failed {
        print_kv_failure(out);
        if keep_going {
            print_failing(&mut failing, count);
        }
    }
    let verdict = if failed.is_some() { "FAILED" } else { "passed" };
    let t = &totals;
    println!("sim (kv): {} of {count} seeds ({from}..{}) run: {verdict}", t.seeds, from + count);
    println!(
        "  simulated {:.2} h ({:.0} s per seed), {} events",
        t.sim_time_us as f64 / 3.6e9,
        t.sim_time_us as f64 / 1e6 / t.seeds.max(1) as f64,
        t.events
    );
    let s = &t.stats;
    println!(
        "  {} ops: {} ok, {} failed, {} unknown; {} resends, {} sessions ({} expired)",
        s.ops, s.ok, s.failed, s.unknown, s.resends, s.registrations, s.sessions_expired
    );
    println!(
        "  {} snapshots taken, {} installed; {} crashes; {} network faults; {} entries applied; {} appends held back (apply gap)",
        s.snapshots_taken, s.snapshots_installed, s.crashes, t.partitions, s.entries_applied, s.appends_held_back
    );
    let (ratio, seed, bytes, bound) = t.raft_state_ratio_max;
    println!(
        "  largest WAL against its bound: {bytes} B of {bound} B ({:.0}%, seed {seed})",
        ratio * 100.0
    );
    println!(
        "  watch ({} seeds): {} events checked, {} reconnects, {} compacted; leases ({} seeds): {} granted, {} keep-alives acked, {} expired, {} revoked",
        t.watch_seeds,
        s.watch_events,
        s.watch_reconnects,
        s.watch_compacted,
        t.lease_seeds,
        s.leases_granted,
        s.keep_alives_acked,
        s.leases_expired,
        s.leases_revoked
    );
    println!(
        "  membership ({} seeds): {} changes done, {} refused or lost, {} members joined by snapshot, {} removed",
        t.member_seeds, s.member_changes, s.member_changes_failed, s.members_joined, s.members_removed
    );
    println!(
        "  auth ({} seeds): {} auth changes answered, every replica's auth state the log's at every applied index; {} user commands served with their permission at apply, {} refused",
        t.auth_seeds, s.auth_ops, s.auth_served, s.auth_refused
    );
    let mut unknown = t.unknown.clone();
    unknown.sort();
    println!(
        "  linearizability: {} linearizable, {} unknown (step budget){}{}",
        t.linearizable,
        unknown.len(),
        if unknown.is_empty() { "" } else { ": seeds " },
        unknown.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" ")
    );
    print_wall(secs, jobs, t.seeds);
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
