//! `sim --membership always`: seeds that drew no membership changes run with them, and
//! the checkers must tell a real fault from the situations only such runs reach. Each
//! seed here once raised a false alarm.

use sim::swarm::{run_seed_with, Membership};

fn passes_with_changes(seed: u64) {
    let out = run_seed_with(seed, Membership::Always, false);
    if let Some(f) = &out.failure {
        panic!(
            "seed {seed} violated {}\nlast events:\n{}\nreplay: cargo run --release -p sim -- --seed {seed} --membership always -v",
            f.violation,
            f.recent_events.join("\n")
        );
    }
    assert!(out.conf_changes > 0, "seed {seed} made no membership change");
}

#[test]
fn an_ack_after_a_torn_write_that_kept_entries_of_a_newer_term_is_durable() {
    // Seed 773: a follower's write of (hard state term 32, entry 2311 of term 32) was
    // torn after the entry; the restart adopted term 32 from the log (Raft::restore) and
    // acked appends in term 32 while its hard state on disk still said 31. The durable
    // term is the larger of the two, so the ack is durable.
    passes_with_changes(773);
}

#[test]
fn a_kept_snapshot_that_conflicts_with_the_log_may_drop_a_synced_suffix() {
    // Seed 229: a member holding a stale suffix (up to 1223, term 17) got a snapshot at
    // 1214 of term 21 and lost power with it in flight; the snapshot record was kept and
    // replaced the whole log (Raft Figure 13), which is no lost synced entry.
    passes_with_changes(229);
}

fn kv_passes_with_changes(seed: u64) {
    let out = sim::kv::run_kv_seed_with(seed, Membership::Always, false);
    if let Some(f) = &out.failure {
        panic!(
            "kv seed {seed} violated {}\nreplay: cargo run --release -p sim -- --seed {seed} --workload kv --membership always -v",
            f.violation
        );
    }
    assert!(out.stats.member_changes > 0, "kv seed {seed} made no membership change");
}

#[test]
fn a_removed_kv_member_that_missed_its_removal_is_not_awaited_at_convergence() {
    // Seed 794 (kv): n6 joined, was promoted, was removed while its last heartbeat was
    // lost, then crashed and restarted silent with its old log. The cluster converged
    // without it; the convergence check waited for it as long as it was up. Members the
    // leader's configuration no longer holds are not part of the cluster (as in the raft
    // workload).
    kv_passes_with_changes(794);
}

#[test]
fn a_removed_kv_member_that_restarts_learns_it_from_the_peers_it_dials() {
    // Seeds 1271 and 8302 (kv): n4 joined (a learner in 1271, a joiner still without its
    // snapshot in 8302), was removed while down or without hearing of it, and restarted.
    // Such a member never campaigns and the leader sends it nothing, so it stayed up,
    // stale; once the clients stopped the watchers stopped moving, and one left on n4
    // waited for revisions n4 never applied ("Liveness (lease expiry and watch
    // delivery)"). No event was lost: the simulator lacked what the server does, dial
    // every peer at start and stop when one answers "removed" (`sim::kv` dial.rs).
    for seed in [1271, 8302] {
        kv_passes_with_changes(seed);
    }
}

#[test]
fn a_removed_member_holding_its_uncommitted_removal_campaigns_to_finish_it() {
    // Seeds 226, 888, 1462: a leader (or a demoted voter) got the leave entry that took
    // it out of the voters, and no voter of the new configuration got it (a crash lost it,
    // or the leader stepped down by check-quorum first). The others were still joint and
    // needed its vote, which it refused (its log was ahead), and it never campaigned as
    // it was no voter in its latest configuration: no leader ever again ("Liveness
    // (election)"). It now campaigns while it is a voter in the configuration at its
    // commit index (`Raft::promotable`).
    for seed in [226, 888, 1462] {
        passes_with_changes(seed);
    }
}

#[test]
fn a_snapshot_transfer_resumes_from_a_restarted_follower_behind_late_answers() {
    // Seed 2764: n7 restarted mid-transfer and asked for the snapshot from byte 0; the
    // leader started over, then answers of n7's earlier copy (next 128, next 192), held
    // back by the long-delay network, moved it to byte 192. n7, at 64, answered "next 64"
    // to every chunk and the leader ignored answers below its offset: no commit for 120 s
    // ("Liveness (commit)"). A leader now goes back to the lowest offset asked below its
    // own at the next heartbeat answer (`Progress::snapshot_behind`).
    passes_with_changes(2764);
}

#[test]
fn a_removed_member_does_not_count_prevote_grants_held_back_from_an_earlier_term() {
    // Seeds 5476, 6355: a removed member that held its leave entry but did not know it
    // committed kept campaigning (as it may). At term T, in its round for T+1, it counted
    // grants of its earlier round for T, held back 1-2 s by the long-delay network, and
    // became a candidate in T+1. The leader's followers ignored its vote requests (leader
    // lease) and the leader, whose configuration no longer held it, never wrote to it: its
    // term stayed above the leader's for good ("Liveness (election)", no leader in the
    // highest term). A pre-candidate now counts only grants for the term it asks for.
    for seed in [5476, 6355] {
        passes_with_changes(seed);
    }
}

#[test]
fn a_node_whose_addition_never_committed_may_sit_in_a_higher_term() {
    // Seed 4875: n5 led term 12, appended "add voter n6" and was cut off with n6 by a
    // partition at once; the majority elected another leader and the addition was
    // overwritten everywhere but on n6, which still holds it (a configuration takes effect
    // at append) and so campaigns for good, in term 16 above the leader's 15. It disturbs
    // no one: the members it asks are in the leader's lease and the leader never writes to
    // it. The liveness check wanted a leader in the highest term of every up node
    // ("Liveness (election)"); it now wants one no member of its configuration is above.
    passes_with_changes(4875);
}
