//! Named scenarios of the kv workload: the real member code (node + storage + kv) under
//! the simulator's faults, with clients whose histories must be linearizable.

use kv::{Command, Op};
use lincheck::{KvOp, KvResult, Outcome, Verdict};
use sim::kv::{run_kv_seed, KvCluster, KvConfig, OpMix};
use sim::NetConfig;
use std::time::Duration;

const STEPS: u64 = 5_000_000;

/// Heals, drains and checks a scripted run: no violation, identical replicas, and a
/// linearizable history. Returns the number of operations that completed with a result.
fn finish(c: &mut KvCluster) -> u64 {
    if let Err(v) = c.drain(30_000_000) {
        panic!("{v}\n{}", c.violation_report().unwrap_or_default());
    }
    match c.check_history(STEPS) {
        Verdict::Linearizable => {}
        other => panic!("history of {} operations: {other:?}", c.history().len()),
    }
    c.stats().ok
}

fn run(c: &mut KvCluster, d: Duration) {
    if !c.run_for(d) {
        panic!("{}", c.violation_report().unwrap_or_default());
    }
}

#[test]
fn one_client_on_a_reliable_cluster_is_linearizable() {
    // The baseline: one client, one operation at a time, no faults. Every operation
    // completes, and get/put/append/delete/cas results match a single copy of the map.
    let mut c = KvCluster::new(KvConfig::new(3, 1, 11));
    run(&mut c, Duration::from_secs(10));
    let ok = finish(&mut c);
    let s = c.stats();
    assert_eq!((s.failed, s.unknown), (0, 0), "{s:?}");
    assert!(ok >= 100, "only {ok} operations completed");
}

#[test]
fn many_clients_on_a_reliable_cluster_are_linearizable() {
    // Thirty concurrent clients on five keys: concurrency without faults, so the checker
    // has real interleavings to order and the members batch many proposals per Ready.
    let mut c = KvCluster::new(KvConfig::new(5, 30, 12));
    run(&mut c, Duration::from_secs(10));
    let ok = finish(&mut c);
    assert!(ok >= 2_000, "only {ok} operations completed");
    assert_eq!(c.stats().unknown, 0);
}

#[test]
fn unreliable_network_loses_duplicates_and_reorders_requests_and_replies() {
    // Client requests and replies travel the same lossy network as peer messages: lost
    // replies make clients resend the same command, duplicates deliver it twice, and
    // sessions must make each write execute once.
    let mut cfg = KvConfig::new(5, 10, 13);
    cfg.net = NetConfig::unreliable();
    let mut c = KvCluster::new(cfg);
    run(&mut c, Duration::from_secs(20));
    let ok = finish(&mut c);
    assert!(ok >= 300, "only {ok} operations completed");
    assert!(c.stats().resends > 20, "{:?}", c.stats());
}

#[test]
fn crash_and_restart_of_one_member_at_a_time() {
    // A power cut loses what the member had not synced (or tears it); the restarted member
    // recovers from its WAL and snapshot and rejoins. One member at a time: the cluster
    // keeps a majority and keeps serving.
    let mut c = KvCluster::new(KvConfig::new(3, 8, 14));
    run(&mut c, Duration::from_secs(1));
    for round in 0..12u64 {
        let id = round % 3 + 1;
        c.crash(id);
        run(&mut c, Duration::from_millis(400));
        c.restart(id);
        run(&mut c, Duration::from_millis(600));
    }
    finish(&mut c);
    assert_eq!(c.stats().crashes, 12);
}

#[test]
fn crash_and_restart_of_several_members_at_once() {
    // A majority loses power together: progress stops until they are back, then resumes
    // from what their disks kept.
    let mut c = KvCluster::new(KvConfig::new(5, 8, 15));
    run(&mut c, Duration::from_secs(1));
    for round in 0..6u64 {
        let ids = [round % 5 + 1, (round + 2) % 5 + 1, (round + 4) % 5 + 1];
        for id in ids {
            c.crash(id);
        }
        run(&mut c, Duration::from_millis(700));
        for id in ids {
            c.restart(id);
        }
        run(&mut c, Duration::from_secs(1));
    }
    let before = c.stats().ok;
    run(&mut c, Duration::from_secs(2));
    assert!(c.stats().ok > before, "no progress after the last restart");
    finish(&mut c);
}

#[test]
fn crash_and_restart_of_every_member_at_once() {
    // Whole-cluster power cut, several times, with syncs in flight: everything any client
    // saw acknowledged must survive, because it was durable on a majority first.
    let mut cfg = KvConfig::new(3, 6, 16);
    cfg.disk.sync_min_us = 2_000;
    cfg.disk.sync_max_us = 20_000;
    let mut c = KvCluster::new(cfg);
    run(&mut c, Duration::from_secs(1));
    for _ in 0..5 {
        for id in c.ids() {
            c.crash(id);
        }
        run(&mut c, Duration::from_millis(300));
        for id in c.ids() {
            c.restart(id);
        }
        run(&mut c, Duration::from_secs(2));
    }
    let ok = finish(&mut c);
    assert!(ok >= 100, "only {ok} operations completed");
}

#[test]
fn partitions_with_many_clients() {
    // Twenty clients while the network splits again and again (isolated leader, minority
    // against majority, one-way links); some clients are stuck with the minority side,
    // whose writes must not take effect there and whose reads must not be served stale.
    let mut cfg = KvConfig::new(5, 20, 17);
    cfg.client_confined = 0.5;
    let mut c = KvCluster::new(cfg);
    run(&mut c, Duration::from_secs(1));
    for round in 0..8u64 {
        let leader = c.leader().unwrap_or(1);
        match round % 3 {
            0 => {
                let rest: Vec<u64> = c.ids().into_iter().filter(|&id| id != leader).collect();
                c.partition(&[&[leader], &rest]);
            }
            1 => c.partition(&[&[1, 2], &[3, 4, 5]]),
            _ => {
                c.cut_link(leader, leader % 5 + 1);
                c.cut_link((leader + 1) % 5 + 1, leader);
            }
        }
        run(&mut c, Duration::from_millis(1_500));
        c.heal();
        run(&mut c, Duration::from_millis(1_000));
    }
    let ok = finish(&mut c);
    assert!(ok >= 1_000, "only {ok} operations completed");
}

#[test]
fn a_member_cut_off_catches_up_by_install_snapshot_despite_crashes_and_partitions() {
    // Snapshots every 10 entries: a member away for a while finds the log it needs
    // compacted on every peer and must install a snapshot (in 256-byte chunks), while
    // other members crash and the network splits. Its state must end identical to the
    // others' and the history linearizable.
    let mut cfg = KvConfig::new(5, 10, 18);
    cfg.snapshot_interval_entries = 10;
    cfg.snapshot_chunk_bytes = 256;
    cfg.segment_bytes_max = 1 << 10;
    let mut c = KvCluster::new(cfg);
    run(&mut c, Duration::from_secs(1));
    for round in 0..4u64 {
        let away = round % 5 + 1;
        c.disconnect(away);
        run(&mut c, Duration::from_secs(1));
        let victim = (round + 2) % 5 + 1;
        c.crash(victim);
        run(&mut c, Duration::from_millis(500));
        c.partition(&[
            &[away, victim],
            &[1, 2, 3, 4, 5]
                .into_iter()
                .filter(|&id| id != away && id != victim)
                .collect::<Vec<_>>(),
        ]);
        c.restart(victim);
        run(&mut c, Duration::from_millis(500));
        c.heal();
        run(&mut c, Duration::from_secs(1));
    }
    finish(&mut c);
    let s = c.stats();
    assert!(s.snapshots_installed >= 4, "{s:?}");
    assert!(s.snapshots_taken >= 50, "{s:?}");
}

#[test]
fn a_write_retried_across_a_leader_change_executes_once() {
    // Raft thesis §6.3: a client whose reply is lost resends the same command (same
    // session and sequence number); the state machine must not run it twice. Here the
    // leader applies an append and is cut off before its reply arrives; the client times
    // out, finds the new leader and resends, which commits the command a second time at a
    // new index. The value must hold the suffix once.
    let mut cfg = KvConfig::new(3, 1, 19);
    cfg.random_ops = false;
    cfg.client_timeout_us = 300_000;
    cfg.op_deadline_us = 20_000_000;
    let mut c = KvCluster::new(cfg);
    run(&mut c, Duration::from_secs(2));
    let session = c.client_session(0).expect("registered");
    let (key, suffix) = (b"k".to_vec(), b"once;".to_vec());
    c.client_invoke(0, KvOp::append(key.clone(), suffix.clone()));
    let leader = loop {
        run(&mut c, Duration::from_micros(100));
        let done = |id: u64| c.node(id).and_then(|n| n.state().get(&key)).is_some();
        if let Some(id) = c.ids().into_iter().find(|&id| done(id)) {
            break id;
        }
    };
    c.disconnect(leader);
    while !c.client_idle(0) {
        run(&mut c, Duration::from_millis(10));
    }
    c.connect(leader);
    c.client_invoke(0, KvOp::get(key.clone()));
    while !c.client_idle(0) {
        run(&mut c, Duration::from_millis(10));
    }
    let ops = c.history().operations();
    assert_eq!(ops.len(), 2);
    assert_eq!(ops[0].outcome(), &Outcome::Ok(KvResult::Done));
    assert_eq!(ops[1].outcome(), &Outcome::Ok(KvResult::Value(Some(suffix.clone()))));
    let payload = Command::with_session(session, 1, Op::Append { key, suffix }).encode();
    assert!(c.entries_with_payload(&payload) >= 2, "the retry did not commit again");
    finish(&mut c);
}

#[test]
fn persisted_raft_state_stays_bounded_by_the_snapshot_threshold() {
    // Log compaction (Raft §7): with a snapshot every S entries the WAL segments it
    // covers are deleted and older snapshot files removed, so a member's disk holds about
    // S entries, one snapshot, and one partly covered segment. Measured: the largest disk
    // footprint of any member over the run, against S × (average entry + record framing)
    // + the largest snapshot + one segment.
    let s_entries = 50;
    let mut cfg = KvConfig::new(3, 8, 20);
    cfg.snapshot_interval_entries = s_entries;
    cfg.segment_bytes_max = 4 << 10;
    let segment = cfg.segment_bytes_max;
    let mut c = KvCluster::new(cfg);
    let (mut max_disk, mut max_snapshot) = (0u64, 0u64);
    for _ in 0..200 {
        run(&mut c, Duration::from_millis(100));
        for id in c.ids() {
            max_disk = max_disk.max(c.disk_bytes(id));
            max_snapshot = max_snapshot.max(c.node(id).map_or(0, |n| n.last_snapshot_bytes()));
        }
    }
    let s = c.stats().clone();
    let entry = s.entry_bytes_applied / s.entries_applied.max(1) + 26;
    let bound = s_entries * entry + max_snapshot + segment;
    let ratio = max_disk as f64 / bound as f64;
    println!(
        "S={s_entries} entries of ~{entry} B, snapshot up to {max_snapshot} B, {segment} B segments: disk at most {max_disk} B = {ratio:.2} x bound {bound} B ({} entries applied)",
        s.entries_applied
    );
    assert!(s.entries_applied > 20 * s_entries, "too little traffic: {s:?}");
    assert!(ratio < 3.0, "disk {max_disk} B is {ratio:.2} x the bound {bound} B");
    finish(&mut c);
}

#[test]
fn the_checker_catches_stale_reads() {
    // The kv workload is only as good as its checker. A planted client bug — serializable
    // (local, possibly stale) reads recorded as linearizable — must be caught: a member
    // cut off with a minority keeps answering reads from its old state while the
    // majority moves on.
    let mut cfg = KvConfig::new(3, 6, 21);
    cfg.stale_reads = true;
    cfg.client_confined = 1.0;
    // Writes on the cut-off side are given up on quickly, so its clients go on reading.
    cfg.mix = OpMix { get: 60, put: 20, append: 10, delete: 0, cas: 10, compact: 0, lease: 0 };
    cfg.client_timeout_us = 200_000;
    cfg.op_deadline_us = 400_000;
    let mut c = KvCluster::new(cfg);
    let mut caught = false;
    for _ in 0..20 {
        run(&mut c, Duration::from_millis(500));
        let leader = c.leader().unwrap_or(1);
        let rest: Vec<u64> = c.ids().into_iter().filter(|&id| id != leader).collect();
        c.partition(&[&[leader], &rest]);
        run(&mut c, Duration::from_millis(3_000));
        c.heal();
        if let Verdict::NotLinearizable(v) = c.check_history(STEPS) {
            println!("caught: {v}");
            caught = true;
            break;
        }
    }
    assert!(caught, "stale reads went unnoticed");
}

#[test]
fn fifty_kv_swarm_seeds_pass_safety_liveness_and_linearizability() {
    // The swarm over seeds the CLI's default range does not cover: every seed's fault mix
    // must keep replicas consistent, make progress once healed, and yield a linearizable
    // history (a search that runs out of budget is reported, not failed).
    let (mut ops, mut installed, mut unknown) = (0, 0, 0);
    for seed in 5000..5050 {
        let out = run_kv_seed(seed, false);
        if let Some(f) = &out.failure {
            panic!(
                "seed {seed} violated {}\nlast events:\n{}\nreplay: cargo run --release -p sim -- --seed {seed} --workload kv -v",
                f.violation,
                f.recent_events.join("\n")
            );
        }
        ops += out.stats.ops;
        installed += out.stats.snapshots_installed;
        unknown += u64::from(matches!(out.verdict, sim::kv::swarm::LinVerdict::Unknown(_)));
    }
    println!("50 kv seeds: {ops} operations, {installed} snapshots installed, {unknown} unknown");
    assert!(ops > 20_000, "only {ops} operations");
    assert!(installed > 20, "only {installed} snapshots installed");
    assert!(unknown <= 5, "{unknown} seeds ran out of checker budget");
}

#[test]
fn same_kv_seed_gives_the_same_trace_hash() {
    // Determinism: the seed alone decides a kv run — member code, disks, clients and the
    // checker — so a failure replays exactly.
    let a = run_kv_seed(31, false);
    let b = run_kv_seed(31, false);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.stats, b.stats);
    assert_ne!(run_kv_seed(32, false).trace_hash, a.trace_hash);
}

#[test]
fn a_sequential_client_does_not_wait_for_heartbeats() {
    // Issue 12: a client that sends its next write only once the previous one answered
    // must be paced by the round trips (client, leader, follower acks, one sync, apply),
    // never by a timer. If an answer waited for a heartbeat (a commit notice sent only
    // with heartbeats, a read or write parked until the next tick), one client would
    // manage about one operation per heartbeat interval. Required here: at least 3.
    let mut cfg = KvConfig::new(3, 1, 41);
    cfg.random_ops = false;
    cfg.think_us = 0;
    let heartbeat_us = cfg.tick_interval_us * u64::from(cfg.heartbeat_interval_ticks);
    let mut c = KvCluster::new(cfg);
    run(&mut c, Duration::from_secs(2));
    assert!(c.client_session(0).is_some(), "registered within 2 s");
    const APPENDS: u64 = 1000;
    let started_us = c.now_us();
    for n in 0..APPENDS {
        c.client_invoke(0, KvOp::append(b"k".to_vec(), format!("{n};").into_bytes()));
    }
    while !c.client_idle(0) {
        run(&mut c, Duration::from_millis(10));
    }
    let elapsed_us = c.now_us() - started_us;
    let per_heartbeat = (APPENDS * heartbeat_us) as f64 / elapsed_us as f64;
    println!("{APPENDS} appends in {} ms: {per_heartbeat:.1} per heartbeat", elapsed_us / 1000);
    assert!(per_heartbeat >= 3.0, "{per_heartbeat:.2} appends per heartbeat interval");
    let ok = finish(&mut c);
    assert_eq!(ok, APPENDS, "every append completed");
}

#[test]
fn a_larger_checker_budget_settles_a_seed_the_default_leaves_unknown() {
    // `sim --lincheck-steps`: seed 96's history outgrows the default search budget (so
    // swarms report it "unknown", not proven); the budget must reach the checker, and a
    // larger one must prove the same history linearizable.
    use sim::kv::swarm::{run_kv_params, KvParams, LinVerdict, KV_LINCHECK_STEPS};
    let run = |steps: u64| {
        let mut p = KvParams::from_seed(96);
        p.lincheck_steps = steps;
        let out = run_kv_params(p, false);
        assert!(out.failure.is_none(), "seed 96 failed: {:?}", out.failure.map(|f| f.violation));
        (out.verdict, out.stats)
    };
    let (default, stats) = run(KV_LINCHECK_STEPS);
    assert!(
        matches!(default, LinVerdict::Unknown(_)),
        "the default budget settled seed 96: {default:?}"
    );
    let (larger, same_stats) = run(100_000_000);
    assert!(matches!(larger, LinVerdict::Linearizable), "100M steps: {larger:?}");
    assert_eq!(stats, same_stats, "the budget changes only the check, not the run");
}
