//! `sim`: the simulator's command line. Run many swarm seeds on all cores, replay one seed
//! with its event trace, or benchmark the core.
//!
//! ```text
//! cargo run --release -p sim -- --seeds 300 [--from 1000] [--jobs 2] [--keep-going]
//! cargo run --release -p sim -- --seeds 10000 --membership always [--workload kv]
//! cargo run --release -p sim -- --seed 42 [-v]
//! cargo run --release -p sim -- --workload kv --seeds 200 | --seed 42 [-v]
//! cargo run --release -p sim -- --scenario long_delay_crash_all_partitions_snapshots [--workload kv] [-v]
//! cargo run --release -p sim -- --bench [--bench-seconds 10]
//! ```

use clap::{Parser, ValueEnum};
use sim::bench::run_bench;
use sim::driver::{self, Engine, SeedRange};
use sim::kv::swarm::{
    describe_outcome, run_kv_params, KvParams, LinVerdict, KV_LINCHECK_STEPS, PATIENT,
};
use sim::kv::{KvOutcome, KvStats};
use sim::scenario::{Exercised, Scenario};
use sim::swarm::{run_params, run_seed_with, Failure, Membership, SeedOutcome};
use std::process::ExitCode;
use std::time::Instant;

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
    /// Which seeds change their membership (spare members and an operator): as each
    /// seed draws it, every seed, or none. `always` keeps every other draw of a seed.
    #[arg(long, value_enum, default_value_t = Membership::Random, conflicts_with_all = ["scenario", "bench"])]
    membership: Membership,
    /// kv workload: search steps the linearizability check may take per seed. A check
    /// that runs out says "unknown (step budget)" for its seed, which is counted, not a
    /// failure; a larger budget settles such seeds (the default keeps swarms fast).
    #[arg(long, default_value_t = KV_LINCHECK_STEPS)]
    lincheck_steps: u64,
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
    let kv = args.workload == Workload::Kv;
    if let Some(name) = &args.scenario {
        return one_scenario(name, kv, args.verbose);
    }
    if args.bench {
        if kv {
            eprintln!("error: --bench measures the raft core; it has no kv workload");
            return ExitCode::from(2);
        }
        return bench(args.bench_seconds);
    }
    if !kv && args.lincheck_steps != KV_LINCHECK_STEPS {
        eprintln!("error: --lincheck-steps is for --workload kv (the raft workload has no linearizability check)");
        return ExitCode::from(2);
    }
    let raft = RaftEngine(args.membership);
    let kv_engine = KvEngine { membership: args.membership, lincheck_steps: args.lincheck_steps };
    let failed = match (args.seed, kv) {
        (Some(seed), false) => driver::one_seed(&raft, seed, args.verbose),
        (Some(seed), true) => driver::one_seed(&kv_engine, seed, args.verbose),
        (None, _) => {
            let range = SeedRange {
                from: args.from,
                count: args.seeds.unwrap_or(100),
                jobs: args.jobs.max(1),
                keep_going: args.keep_going,
            };
            if kv {
                driver::many_seeds(&kv_engine, range)
            } else {
                driver::many_seeds(&raft, range)
            }
        }
    };
    exit_code(failed)
}

fn exit_code(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
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
    let (replay, wall, seed) = (scenario.replay_command(kv), Instant::now(), scenario.seed());
    let (failed, did) = if kv {
        let out = run_kv_params(scenario.kv_params(), verbose);
        (driver::report::<KvEngine>(seed, &out, wall, verbose, &replay), Exercised::from(&out))
    } else {
        let out = run_params(scenario.raft_params(), verbose);
        (driver::report::<RaftEngine>(seed, &out, wall, verbose, &replay), Exercised::from(&out))
    };
    // A run that failed has already said why; one that passed must also have done what
    // the scenario's name promises.
    let unexercised =
        !failed && scenario.check_exercised(&did).map_err(|e| println!("FAILED: {e}")).is_err();
    exit_code(failed || unexercised)
}

/// The raft workload: the bare core under the swarm.
struct RaftEngine(Membership);

#[derive(Default)]
struct Totals {
    sim_time_us: u64,
    seeds: u64,
    events: u64,
    proposals: u64,
    committed: u64,
    membership_seeds: u64,
    conf_changes: u64,
    transfers: u64,
    snapshots: u64,
    snapshots_asked: u64,
}

impl Engine for RaftEngine {
    type Outcome = SeedOutcome;
    type Totals = Totals;
    const LABEL: &'static str = "";

    fn flags(&self) -> String {
        self.0.flag().to_string()
    }

    fn run(&self, seed: u64, verbose: bool) -> SeedOutcome {
        run_seed_with(seed, self.0, verbose)
    }

    fn failure(out: &SeedOutcome) -> Option<&Failure> {
        out.failure.as_ref()
    }

    fn params(out: &SeedOutcome) -> String {
        out.params.to_string()
    }

    fn describe(out: &SeedOutcome, status: &str, wall_secs: f64) -> String {
        format!(
            "seed {}: {status} after {:.1} s simulated, {} events, {} proposals ({} accepted), {} committed, {} crashes, {} network faults, {} membership changes, {} transfers, {wall_secs:.3} s wall",
            out.params.seed,
            out.sim_time_us as f64 / 1e6,
            out.events,
            out.proposals,
            out.proposals_accepted,
            out.commands_committed,
            out.crashes,
            out.partitions,
            out.conf_changes,
            out.transfers,
        )
    }

    fn trace_hash(out: &SeedOutcome) -> u64 {
        out.trace_hash
    }

    fn add(t: &mut Totals, _seed: u64, out: &SeedOutcome) {
        t.seeds += 1;
        t.sim_time_us += out.sim_time_us;
        t.events += out.events;
        t.proposals += out.proposals;
        t.committed += out.commands_committed;
        t.membership_seeds += u64::from(out.params.membership_interval_us.is_some());
        t.conf_changes += out.conf_changes;
        t.transfers += out.transfers;
        t.snapshots += out.snapshots;
        t.snapshots_asked += out.snapshots_asked;
    }

    fn print_totals(t: &Totals) {
        println!(
            "  simulated {:.2} h ({:.0} s per seed), {} events, {} proposals, {} committed",
            t.sim_time_us as f64 / 3.6e9,
            t.sim_time_us as f64 / 1e6 / t.seeds.max(1) as f64,
            t.events,
            t.proposals,
            t.committed
        );
        println!(
            "  membership: {} seeds with changes, {} changes accepted, {} leadership transfers",
            t.membership_seeds, t.conf_changes, t.transfers
        );
        println!(
            "  {} snapshots taken, {} of them because a leader asked (entries trimmed from memory)",
            t.snapshots, t.snapshots_asked
        );
    }
}

/// The kv workload: the real member code, clients, linearizability.
struct KvEngine {
    membership: Membership,
    lincheck_steps: u64,
}

impl Engine for KvEngine {
    type Outcome = KvOutcome;
    type Totals = KvTotals;
    const LABEL: &'static str = " (kv)";

    fn flags(&self) -> String {
        let steps = if self.lincheck_steps == KV_LINCHECK_STEPS {
            String::new()
        } else {
            format!(" --lincheck-steps {}", self.lincheck_steps)
        };
        format!(" --workload kv{}{steps}", self.membership.flag())
    }

    fn run(&self, seed: u64, verbose: bool) -> KvOutcome {
        let mut p = KvParams::from_seed_with(seed, self.membership);
        p.lincheck_steps = self.lincheck_steps;
        run_kv_params(p, verbose)
    }

    fn failure(out: &KvOutcome) -> Option<&Failure> {
        out.failure.as_ref()
    }

    fn params(out: &KvOutcome) -> String {
        out.params.to_string()
    }

    fn describe(out: &KvOutcome, status: &str, wall_secs: f64) -> String {
        format!(
            "seed {} (kv): {status} after {:.1} s simulated, {} events, {wall_secs:.3} s wall\n  {}",
            out.params.seed,
            out.sim_time_us as f64 / 1e6,
            out.events,
            describe_outcome(out)
        )
    }

    fn trace_hash(out: &KvOutcome) -> u64 {
        out.trace_hash
    }

    fn add(t: &mut KvTotals, seed: u64, out: &KvOutcome) {
        t.add(seed, out);
    }

    fn print_totals(totals: &KvTotals) {
        let t = totals;
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
        "  membership ({} seeds): {} changes done, {} refused or lost, {} members joined by snapshot, {} removed, {} crashes of joined members",
        t.member_seeds, s.member_changes, s.member_changes_failed, s.members_joined, s.members_removed, s.spare_crashes
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
        println!(
            "  clients that never give up ({} seeds): every operation ended with an answer",
            t.patient_seeds
        );
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
    /// Seeds whose clients never give up (every operation answered).
    patient_seeds: u64,
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
        t.spare_crashes += s.spare_crashes;
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
        self.patient_seeds += u64::from(out.params.cluster.op_deadline_us == PATIENT);
        match out.verdict {
            LinVerdict::Linearizable => self.linearizable += 1,
            LinVerdict::Unknown(_) => self.unknown.push(seed),
            LinVerdict::NotLinearizable | LinVerdict::NotChecked => {}
        }
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
