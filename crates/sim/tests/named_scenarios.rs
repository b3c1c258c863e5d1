//! Named deterministic scenarios (`sim::scenario`): each combination of network
//! {reliable, unreliable, long-delay} x {no crash, crash of all members} x {no
//! partitions, partitions} x {no snapshots, snapshots}, for both workloads, with
//! membership changes on; each a fixed seed with fixed parameters. Each run must also
//! exercise what its name says (`Scenario::check_exercised`: a membership change, crashes
//! exactly with crash_all, network faults with partitions, snapshots with snapshots). A
//! failure names its scenario and the command that replays it.

use sim::kv::swarm::{describe_outcome, run_kv_params, LinVerdict};
use sim::scenario::{Exercised, Scenario};
use sim::swarm::run_params;

fn scenario(name: &str) -> Scenario {
    Scenario::from_name(name).unwrap_or_else(|| panic!("no scenario {name}"))
}

/// Safety and liveness of the raft workload (every liveness-phase proposal applied on
/// every member of the final configuration).
fn raft(name: &str) {
    let s = scenario(name);
    let out = run_params(s.raft_params(), false);
    if let Some(f) = &out.failure {
        panic!(
            "scenario {name} (raft, seed {}) violated {}\nlast events:\n{}\nreplay: {}",
            s.seed(),
            f.violation,
            f.recent_events.join("\n"),
            s.replay_command(false)
        );
    }
    assert!(out.commands_committed >= 100, "{name}: only {} committed", out.commands_committed);
    if let Err(e) = s.check_exercised(&Exercised::from(&out)) {
        panic!("{e}\nreplay: {}", s.replay_command(false));
    }
}

/// Safety, liveness, linearizability of the kv workload, and clients that never give up:
/// every operation ends with an answer (a result, or an auth refusal when the
/// scenario's clients act as users).
fn kv(name: &str) {
    let s = scenario(name);
    let out = run_kv_params(s.kv_params(), false);
    let replay = s.replay_command(true);
    if let Some(f) = &out.failure {
        panic!(
            "scenario {name} (kv, seed {}) violated {}\nlast events:\n{}\nreplay: {replay}",
            s.seed(),
            f.violation,
            f.recent_events.join("\n")
        );
    }
    let st = &out.stats;
    let summary = describe_outcome(&out);
    assert_eq!(out.verdict, LinVerdict::Linearizable, "{name}: {summary}\nreplay: {replay}");
    assert!(st.ops >= 30, "{name}: too few operations to mean anything: {summary}");
    // An auth refusal is a definite answer (counted in `unknown` too, see KvStats).
    assert_eq!(
        (st.ok + st.refused, st.unknown - st.refused, st.failed),
        (st.ops, 0, 0),
        "{name}: an operation ended without an answer: {summary}\nreplay: {replay}"
    );
    if let Err(e) = s.check_exercised(&Exercised::from(&out)) {
        panic!("{e}: {summary}\nreplay: {replay}");
    }
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        /// Every name the table lists, in order.
        const NAMES: &[&str] = &[$(stringify!($name)),*];
        mod raft {
            $(#[test] fn $name() { super::raft(stringify!($name)) })*
        }
        mod kv {
            $(#[test] fn $name() { super::kv(stringify!($name)) })*
        }
    };
}

scenarios!(
    reliable_no_crash_no_partitions_no_snapshots,
    reliable_no_crash_no_partitions_snapshots,
    reliable_no_crash_partitions_no_snapshots,
    reliable_no_crash_partitions_snapshots,
    reliable_crash_all_no_partitions_no_snapshots,
    reliable_crash_all_no_partitions_snapshots,
    reliable_crash_all_partitions_no_snapshots,
    reliable_crash_all_partitions_snapshots,
    unreliable_no_crash_no_partitions_no_snapshots,
    unreliable_no_crash_no_partitions_snapshots,
    unreliable_no_crash_partitions_no_snapshots,
    unreliable_no_crash_partitions_snapshots,
    unreliable_crash_all_no_partitions_no_snapshots,
    unreliable_crash_all_no_partitions_snapshots,
    unreliable_crash_all_partitions_no_snapshots,
    unreliable_crash_all_partitions_snapshots,
    long_delay_no_crash_no_partitions_no_snapshots,
    long_delay_no_crash_no_partitions_snapshots,
    long_delay_no_crash_partitions_no_snapshots,
    long_delay_no_crash_partitions_snapshots,
    long_delay_crash_all_no_partitions_no_snapshots,
    long_delay_crash_all_no_partitions_snapshots,
    long_delay_crash_all_partitions_no_snapshots,
    long_delay_crash_all_partitions_snapshots,
);

#[test]
fn the_table_names_every_combination_once() {
    let all: Vec<String> = Scenario::all().iter().map(Scenario::name).collect();
    assert_eq!(NAMES, all.iter().map(String::as_str).collect::<Vec<_>>().as_slice());
}
