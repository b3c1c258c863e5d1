//! Swarm testing of the kv workload: each seed draws its own cluster, client load and
//! fault mix; a safety phase with faults, a liveness phase that heals everything and
//! requires progress and convergence, then the linearizability check of the history.

use super::client::OpMix;
use super::cluster::{kv_trace, sim_peer_url, KvCluster, KvConfig, KvStats};
use crate::checker::Violation;
use crate::cluster::stream_seed;
use crate::faults::{self, Agenda, FaultEffect, FaultParams, FaultPlan, SafetyPhase, Timed};
use crate::swarm::{
    draw_catch_up, draw_disk, draw_long_delay, draw_net, permille, Failure, Membership,
    PartitionKind, ALL_KINDS,
};
use lincheck::{check, CheckOptions, KvModel, Verdict};
use node::MemberChange;
use raft::{NodeId, Rng};
use std::collections::BTreeSet;
use std::fmt::{self, Write};

/// After the heal, a leader must be elected within this.
pub const KV_LIVENESS_LEADER_BOUND_US: u64 = 10_000_000;
/// After the heal, every client must complete an operation invoked after it within this.
pub const KV_LIVENESS_PROGRESS_BOUND_US: u64 = 30_000_000;
/// Once clients stop, every member must apply everything within this.
pub const KV_CONVERGENCE_BOUND_US: u64 = 20_000_000;
/// Share of seeds with watchers.
pub const WATCH_SEEDS: f64 = 0.4;
/// Share of seeds whose clients use leases.
pub const LEASE_SEEDS: f64 = 0.4;
/// Share of seeds with one slow applier and a small apply gap (back-pressure).
pub const SLOW_APPLIER_SEEDS: f64 = 0.4;
/// Share of kv seeds whose clients also change the auth state (users, roles,
/// permissions, enable/disable): every member must hold the log's auth state at every
/// applied index.
pub const AUTH_SEEDS: f64 = 0.3;
/// Search steps the linearizability check may take per seed (deterministic budget).
pub const KV_LINCHECK_STEPS: u64 = 5_000_000;
/// The operation deadline of clients that never give up: they resend the same request
/// (same session and sequence number) until it has a definite answer.
pub const PATIENT: u64 = u64::MAX;
/// Share of kv seeds (of those whose sessions never expire) with clients that never
/// give up: every operation must end with a result.
pub const PATIENT_SEEDS: f64 = 0.2;
/// Share of seeds with spare members and an operator changing the membership.
pub const MEMBERSHIP_SEEDS: f64 = 0.3;

/// Everything a seed decides about its kv run.
#[derive(Clone, Debug)]
pub struct KvParams {
    /// The seed.
    pub seed: u64,
    /// Cluster, clients, network, disk, snapshots.
    pub cluster: KvConfig,
    /// The safety phase's network faults and crashes, and its length.
    pub faults: FaultParams,
    /// Mean time between the operator's membership changes during the safety phase
    /// (`None`: the membership stays as founded). Seeds with changes have spare members.
    pub member_change_interval_us: Option<u64>,
    /// Search steps the linearizability check may take ([`KV_LINCHECK_STEPS`] unless
    /// `sim --lincheck-steps` says otherwise; not drawn from the seed).
    pub lincheck_steps: u64,
}

impl KvParams {
    /// Member slots the faults pick among. Spare members take part once a membership
    /// change started them: crashes and network faults pick among every slot (a spare
    /// never started is down already, and the restart of a spare never added or of a
    /// removed member does nothing).
    fn fault_slots(&self) -> usize {
        self.cluster.members + self.cluster.spare_members
    }

    /// Draws a seed's parameters.
    pub fn from_seed(seed: u64) -> KvParams {
        KvParams::from_seed_with(seed, Membership::Random)
    }

    /// Draws a seed's parameters, with membership changes as `membership` says (a seed
    /// that has them under `random` runs the same under `always`).
    pub fn from_seed_with(seed: u64, membership: Membership) -> KvParams {
        let mut r = Rng::new(stream_seed(seed, 0x4b56_5357));
        let members = r.range(3, 8) as usize;
        let clients = match r.range(0, 4) {
            0 => r.range(1, 4),
            1 | 2 => r.range(3, 13),
            _ => r.range(12, 41),
        } as usize;
        let mut c = KvConfig::new(members, clients, seed);
        c.net = draw_net(&mut r);
        draw_long_delay(&mut c.net, seed, 0x4b56_4c44);
        c.disk = draw_disk(&mut r);
        c.clock_drift = permille(&mut r, 50);
        c.keys = r.range(3, 11) as usize;
        c.snapshot_interval_entries = r.range(10, 201);
        // Drawn from their own stream, so the other parameters stay as they were.
        c.catch_up_entries = draw_catch_up(&mut Rng::new(stream_seed(seed, 0x4b43_5543)));
        c.segment_bytes_max = r.range(1 << 10, 16 << 10);
        c.snapshot_chunk_bytes = [256, 4096, 1 << 20][r.range(0, 3) as usize];
        c.session_idle_entries_max = if r.chance(0.25) { r.range(150, 1_500) } else { 100_000 };
        c.crash_during_write = if r.chance(0.5) { 0.0 } else { permille(&mut r, 3) };
        c.crash_restart_us = r.range(10_000, 1_000_000);
        let ops_per_second = r.range(100, 1_501);
        c.think_us = clients as u64 * 1_000_000 / ops_per_second;
        c.client_timeout_us = r.range(200_000, 1_500_000);
        c.op_deadline_us = r.range(2_000_000, 8_000_000);
        c.client_confined = permille(&mut r, 600);
        c.mix = OpMix {
            get: r.range(10, 50) as u32,
            put: r.range(5, 30) as u32,
            append: r.range(0, 30) as u32,
            delete: r.range(0, 15) as u32,
            cas: r.range(5, 30) as u32,
            compact: r.range(0, 4) as u32,
            lease: 0,
        };
        let mut kinds: Vec<PartitionKind> =
            ALL_KINDS.iter().copied().filter(|_| r.chance(0.6)).collect();
        if kinds.is_empty() {
            kinds.push(ALL_KINDS[r.range(0, ALL_KINDS.len() as u64) as usize]);
        }
        // The watch and lease workloads draw from a stream of their own, so a seed that
        // uses neither runs exactly as before they existed.
        let mut w = Rng::new(stream_seed(seed, 0x4b56_574c));
        if w.chance(WATCH_SEEDS) {
            c.watchers = w.range(1, 7) as usize;
            c.watch_start_window_us = w.range(0, 10_000_001);
            c.watch_batch_changes = [1, 5, 50, 1000][w.range(0, 4) as usize];
            c.watch_move_mean_us = (!w.chance(0.2)).then(|| w.range(500_000, 5_000_001));
        }
        if w.chance(LEASE_SEEDS) {
            c.mix.lease = w.range(5, 40) as u32;
            c.lease_keys = w.range(1, 7) as usize;
            c.lease_ttl_secs_max = w.range(1, 6) as i64;
        }
        // Drawn last, so the draws above stay what they were for every seed.
        if c.watchers > 0 {
            c.watch_batch_bytes = [16, 256, 4096, u64::MAX][w.range(0, 4) as usize];
        }
        // Apply back-pressure draws from its own stream too: one slow applier and a
        // small apply gap, so that member holds back appends past the gap.
        let mut a = Rng::new(stream_seed(seed, 0x4b56_4150));
        if a.chance(SLOW_APPLIER_SEEDS) {
            c.slow_applier = Some((a.range(0, members as u64) as usize, a.range(20_000, 300_001)));
            c.apply_gap_entries_max = a.range(1, 41);
        }
        // Membership changes draw from a stream of their own, for the same reason.
        let mut m = Rng::new(stream_seed(seed, 0x4b56_4d42));
        let member_change_interval_us = membership.decide(m.chance(MEMBERSHIP_SEEDS)).then(|| {
            c.spare_members = m.range(1, 3) as usize;
            m.range(300_000, 4_000_000)
        });
        // Auth changes in a share of seeds, from a stream of their own.
        let mut au = Rng::new(stream_seed(seed, 0x4155_5448));
        if au.chance(AUTH_SEEDS) {
            c.auth_share = [0.02, 0.05, 0.15][au.range(0, 3) as usize];
        }
        // Clients that never give up in a share of the seeds whose sessions never expire
        // (an expired session leaves a write's outcome unknown), from a stream of their own.
        let mut pa = Rng::new(stream_seed(seed, 0x5041_5449));
        if c.session_idle_entries_max >= 100_000 && pa.chance(PATIENT_SEEDS) {
            c.op_deadline_us = PATIENT;
        }
        KvParams {
            seed,
            cluster: c,
            // Drawn in this order (a struct literal's fields evaluate in order).
            faults: FaultParams {
                partition_interval_us: (!r.chance(0.15)).then(|| r.range(300_000, 5_000_000)),
                partition_duration_us: r.range(200_000, 4_000_000),
                partition_kinds: kinds,
                crash_interval_us: (!r.chance(0.15)).then(|| r.range(500_000, 6_000_000)),
                crash_max_at_once: r.range(1, members as u64 + 1) as usize,
                all_crash: permille(&mut r, 200),
                restart_delay_us: r.range(50_000, 3_000_000),
                safety_duration_us: r.range(15_000_000, 30_000_001),
            },
            member_change_interval_us,
            lincheck_steps: KV_LINCHECK_STEPS,
        }
    }
}

impl fmt::Display for KvParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.cluster;
        let ms = |us: u64| us / 1000;
        writeln!(
            f,
            "seed {} (kv): {} members, {} clients on {} keys every ~{} ms (timeout {} ms, deadline {}), safety phase {} s",
            self.seed,
            c.members,
            c.clients,
            c.keys,
            ms(c.think_us),
            ms(c.client_timeout_us),
            if c.op_deadline_us == PATIENT {
                "never".to_string()
            } else {
                format!("{} ms", ms(c.op_deadline_us))
            },
            self.faults.safety_duration_us / 1_000_000
        )?;
        let (n, d) = (&c.net, &c.disk);
        writeln!(
            f,
            "  net: loss {:.3} dup {:.3} delay {}..{} us, long {:.3} up to {} ms; disk: sync {}..{} us, slow {:.3} up to {} ms, crash during sync {:.4}{}",
            n.loss, n.duplicate, n.delay_min_us, n.delay_max_us, n.long_delay, ms(n.long_delay_max_us),
            d.sync_min_us, d.sync_max_us, d.slow_sync, ms(d.slow_sync_max_us), c.crash_during_write,
            n.describe_long_delay()
        )?;
        writeln!(
            f,
            "  snapshot every {} entries (catch-up {}) in {} B chunks, {} B segments, sessions idle max {}, drift {:.3}, mix {:?}",
            c.snapshot_interval_entries,
            c.catch_up_entries,
            c.snapshot_chunk_bytes,
            c.segment_bytes_max,
            c.session_idle_entries_max,
            c.clock_drift,
            c.mix
        )?;
        if c.watchers > 0 {
            writeln!(
                f,
                "  watch: {} watchers starting within {} ms, {} changes and {} bytes per batch, moving every {:?} ms",
                c.watchers,
                ms(c.watch_start_window_us),
                c.watch_batch_changes,
                c.watch_batch_bytes,
                c.watch_move_mean_us.map(ms)
            )?;
        }
        if let Some((idx, us)) = c.slow_applier {
            writeln!(
                f,
                "  slow applier: member {} applies each batch within {} ms; apply gap {}",
                idx + 1,
                ms(us),
                c.apply_gap_entries_max
            )?;
        }
        if c.mix.lease > 0 {
            writeln!(
                f,
                "  leases: {} leased keys, TTLs 1..={} s",
                c.lease_keys, c.lease_ttl_secs_max
            )?;
        }
        if let Some(every) = self.member_change_interval_us {
            writeln!(
                f,
                "  membership: {} spare members, a change every ~{} ms",
                c.spare_members,
                ms(every)
            )?;
        }
        let confined = format!(" (clients confined {:.2})", c.client_confined);
        write!(f, "{}", self.faults.describe(&confined))
    }
}

/// The linearizability verdict of a run, in brief.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinVerdict {
    /// The history has a linearization.
    Linearizable,
    /// The step budget ran out first (not a failure; counted).
    Unknown(String),
    /// No linearization: a failure (the explanation is in the [`Failure`]).
    NotLinearizable,
    /// Not checked: the run failed before the end.
    NotChecked,
}

/// What one kv seed's run did.
#[derive(Clone, Debug)]
pub struct KvOutcome {
    /// The parameters the seed drew.
    pub params: KvParams,
    /// Simulated time covered.
    pub sim_time_us: u64,
    /// Events processed.
    pub events: u64,
    /// Counters.
    pub stats: KvStats,
    /// Network faults cut.
    pub partitions: u64,
    /// The linearizability verdict.
    pub verdict: LinVerdict,
    /// FNV-1a 64 of the whole trace.
    pub trace_hash: u64,
    /// The failure, if the seed failed.
    pub failure: Option<Failure>,
}

struct KvSwarm {
    p: KvParams,
    c: KvCluster,
    rng: Rng,
    /// The operator's choices (a stream of their own).
    rng_members: Rng,
    /// Members the operator ever asked to remove: never added again (a removed id is
    /// never reused, as etcd's members_removed; the leader would pick a fresh id that
    /// names no simulated slot).
    removal_asked: BTreeSet<NodeId>,
    agenda: Agenda<Timed<ChangeMembers>>,
    partitions: u64,
}

/// The kv workload's own action in the safety phase: the operator's next membership
/// change.
#[derive(Clone, Copy, Debug)]
struct ChangeMembers;

/// Runs one kv seed: safety phase, liveness phase, linearizability. `verbose` prints
/// every event.
pub fn run_kv_seed(seed: u64, verbose: bool) -> KvOutcome {
    run_kv_params(KvParams::from_seed(seed), verbose)
}

/// Runs one kv seed with membership changes as `membership` says.
pub fn run_kv_seed_with(seed: u64, membership: Membership, verbose: bool) -> KvOutcome {
    run_kv_params(KvParams::from_seed_with(seed, membership), verbose)
}

/// Runs one kv swarm run with the given parameters (a seed's own, or a named
/// scenario's).
pub fn run_kv_params(mut p: KvParams, verbose: bool) -> KvOutcome {
    let seed = p.seed;
    p.cluster.verbose = verbose;
    if verbose {
        println!("{p}");
    }
    let c = KvCluster::new(p.cluster.clone());
    let rng = Rng::new(stream_seed(seed, 0x4b56_0006));
    let rng_members = Rng::new(stream_seed(seed, 0x4b56_4d43));
    let mut s = KvSwarm {
        p,
        c,
        rng,
        rng_members,
        removal_asked: BTreeSet::new(),
        agenda: Agenda::new(),
        partitions: 0,
    };
    let result =
        s.safety_phase().and_then(|()| s.liveness_phase()).and_then(|()| s.outcomes_known());
    let (verdict, violation) = match result {
        Ok(()) => s.linearizability(),
        Err(v) => (LinVerdict::NotChecked, Some(v)),
    };
    s.outcome(verdict, violation)
}

impl SafetyPhase for KvSwarm {
    type Work = ChangeMembers;
    type Target = KvCluster;

    fn fault_parts(
        &mut self,
    ) -> (FaultPlan<'_>, &mut Rng, &mut Agenda<Timed<ChangeMembers>>, &mut KvCluster) {
        let plan = self.p.faults.plan(self.p.fault_slots());
        (plan, &mut self.rng, &mut self.agenda, &mut self.c)
    }

    fn count(&mut self, effect: FaultEffect) {
        self.partitions += effect.partitions;
    }

    fn run_until_us(&mut self, at_us: u64) {
        self.c.run_until_us(at_us);
    }

    fn check(&self) -> Result<(), Violation> {
        match self.c.violation() {
            Some((v, _)) => Err(v.clone()),
            None => Ok(()),
        }
    }

    /// One change, and the next one half to one and a half mean intervals later (drawn
    /// from the operator's own stream).
    fn work(&mut self, _: ChangeMembers) {
        self.change_members();
        let mean = self.p.member_change_interval_us.expect("scheduled only when set");
        let at = self.c.now_us() + self.rng_members.range(mean / 2, mean * 3 / 2 + 1);
        self.agenda.schedule(at, Timed::Work(ChangeMembers));
    }
}

impl KvSwarm {
    /// The first faults and the first membership change (half a mean interval in) on
    /// the agenda, then the shared loop. Changes are on the agenda like faults, so they
    /// go on whether or not faults do (they once ran only between faults, so seeds
    /// without faults, and the six fault-free named scenarios, never changed members).
    fn safety_phase(&mut self) -> Result<(), Violation> {
        self.p.faults.plan(self.p.fault_slots()).start(&mut self.rng, &mut self.agenda);
        if let Some(mean) = self.p.member_change_interval_us {
            self.agenda.schedule(mean / 2, Timed::Work(ChangeMembers));
        }
        faults::run_safety_phase(self, self.p.faults.safety_duration_us)
    }

    /// Heal everything; require a leader, an operation completed by every client, and
    /// once clients stop, every member applying everything into identical states.
    fn liveness_phase(&mut self) -> Result<(), Violation> {
        self.agenda.clear();
        let start = self.c.now_us();
        let slots = self.p.cluster.members + self.p.cluster.spare_members;
        faults::calm(&mut self.c, slots, &self.p.cluster.net);
        self.check()?;
        let mut leader_seen = false;
        let patience = self.p.cluster.net.patience();
        loop {
            self.step()?;
            let elapsed = self.c.now_us() - start;
            leader_seen = leader_seen || self.c.leader().is_some();
            if !leader_seen && elapsed > KV_LIVENESS_LEADER_BOUND_US * patience {
                let details = format!(
                    "no leader within {} s of healing everything",
                    KV_LIVENESS_LEADER_BOUND_US * patience / 1_000_000
                );
                return Err(Violation::new("Liveness (election)", details));
            }
            let stuck = self.c.clients_without_progress_since(start);
            if stuck.is_empty() {
                break;
            }
            if elapsed > KV_LIVENESS_PROGRESS_BOUND_US * patience {
                let details = format!(
                    "clients {stuck:?} completed no operation within {} s of healing everything",
                    KV_LIVENESS_PROGRESS_BOUND_US * patience / 1_000_000
                );
                return Err(Violation::new("Liveness (client progress)", details));
            }
        }
        self.c.set_clients_active(false);
        let stop = self.c.now_us();
        while !(self.c.clients_idle() && self.c.quiescent()) {
            self.step()?;
            if self.c.now_us() - stop > KV_CONVERGENCE_BOUND_US * patience {
                let details = format!(
                    "members did not all apply the same log within {} s of the clients stopping (clients idle: {})",
                    KV_CONVERGENCE_BOUND_US * patience / 1_000_000,
                    self.c.clients_idle()
                );
                return Err(Violation::new("Liveness (convergence)", details));
            }
        }
        let stop = self.c.now_us();
        while let Some(v) = self.c.settled(stop) {
            v?;
            self.step()?;
        }
        self.c.check_states_identical()
    }

    /// The operator makes one membership change, as `etcdctl member ...` would: promote
    /// the learner if there is one, else add an unused spare (as a learner, or now and
    /// then directly as a voter), else remove a random voter (the leader included) while
    /// there are more voters than the founders. Outcomes (refusals included) are counted
    /// by the cluster; nothing waits for them.
    fn change_members(&mut self) {
        let Some(table) = self.c.members_table() else { return };
        let founders = self.p.cluster.members;
        let voters: Vec<NodeId> = table.iter().filter(|m| !m.is_learner).map(|m| m.id).collect();
        let known = |id: NodeId| {
            table.iter().any(|m| m.id == id)
                || self.c.is_retired(id)
                || self.removal_asked.contains(&id)
        };
        let slots = founders + self.p.cluster.spare_members;
        let spare = (founders as NodeId + 1..=slots as NodeId).find(|&id| !known(id));
        let change = if let Some(l) = table.iter().find(|m| m.is_learner) {
            MemberChange::Promote(l.id)
        } else if let Some(id) = spare {
            let is_learner = !self.rng_members.chance(0.25);
            MemberChange::Add { peer_urls: vec![sim_peer_url(id)], is_learner }
        } else if voters.len() > founders {
            let victim = voters[self.rng_members.range(0, voters.len() as u64) as usize];
            self.removal_asked.insert(victim);
            MemberChange::Remove(victim)
        } else {
            return;
        };
        self.c.change_members(change);
    }

    /// With clients that never give up ([`PATIENT`] deadline), every operation must end
    /// with a definite answer: a result or an auth refusal, never given up on.
    fn outcomes_known(&mut self) -> Result<(), Violation> {
        let st = self.c.stats();
        if self.p.cluster.op_deadline_us != PATIENT || st.ok + st.refused == st.ops {
            return Ok(());
        }
        let details = format!(
            "clients that never give up ended with {} of {} operations without an answer ({} unknown of which {} refused by auth, {} failed)",
            st.ops - st.ok - st.refused,
            st.ops,
            st.unknown,
            st.refused,
            st.failed
        );
        let v = Violation::new("Clients never give up", details);
        self.c.record(v.clone());
        Err(v)
    }

    fn step(&mut self) -> Result<(), Violation> {
        let now = self.c.now_us() + 10_000;
        self.c.run_until_us(now);
        self.check()
    }

    fn linearizability(&mut self) -> (LinVerdict, Option<Violation>) {
        let options = CheckOptions { timeout: None, max_steps: Some(self.p.lincheck_steps) };
        let verdict = check(&KvModel::strict(), &self.c.settled_history(), &options);
        let c = &mut self.c;
        let ops = c.history().len();
        kv_trace!(c, "lincheck: {} ({ops} operations)", verdict.label());
        match verdict {
            Verdict::Linearizable => (LinVerdict::Linearizable, None),
            Verdict::Unknown(reason) => (LinVerdict::Unknown(reason), None),
            Verdict::NotLinearizable(v) => {
                let v = Violation::new("Linearizability", v.to_string());
                c.record(v.clone());
                (LinVerdict::NotLinearizable, Some(v))
            }
        }
    }

    fn outcome(self, verdict: LinVerdict, violation: Option<Violation>) -> KvOutcome {
        let failure = violation.map(|v| Failure {
            time_us: self.c.violation().map_or(self.c.now_us(), |(_, t)| *t),
            violation: v,
            recent_events: self.c.recent_events(),
        });
        KvOutcome {
            sim_time_us: self.c.now_us(),
            events: self.c.events(),
            stats: self.c.stats().clone(),
            partitions: self.partitions,
            verdict,
            trace_hash: self.c.trace_hash(),
            failure,
            params: self.p,
        }
    }
}

/// One line per outcome, for the CLI.
pub fn describe_outcome(out: &KvOutcome) -> String {
    let s = &out.stats;
    let mut line = String::new();
    let _ = write!(
        line,
        "{} ops ({} ok, {} failed, {} unknown), {} resends, {} sessions ({} expired), {} snapshots taken, {} installed, {} crashes, {} network faults, {} entries applied{}; lincheck: {}",
        s.ops,
        s.ok,
        s.failed,
        s.unknown,
        s.resends,
        s.registrations,
        s.sessions_expired,
        s.snapshots_taken,
        s.snapshots_installed,
        s.crashes,
        out.partitions,
        s.entries_applied,
        workload_counts(s),
        match &out.verdict {
            LinVerdict::Linearizable => "linearizable".to_string(),
            LinVerdict::Unknown(r) => format!("unknown ({r})"),
            LinVerdict::NotLinearizable => "NOT linearizable".to_string(),
            LinVerdict::NotChecked => "not checked".to_string(),
        }
    );
    line
}

/// The watch and lease counters, when the seed used them.
pub fn workload_counts(s: &KvStats) -> String {
    let mut out = String::new();
    if s.watch_messages > 0 || s.watch_reconnects > 0 {
        let _ = write!(
            out,
            ", {} watch events checked ({} reconnects, {} compacted)",
            s.watch_events, s.watch_reconnects, s.watch_compacted
        );
    }
    if s.member_changes + s.member_changes_failed > 0 {
        let _ = write!(
            out,
            ", {} membership changes ({} refused or lost), {} joined, {} removed",
            s.member_changes, s.member_changes_failed, s.members_joined, s.members_removed
        );
    }
    if s.leases_granted > 0 {
        let _ = write!(
            out,
            ", {} leases granted ({} keep-alives acked, {} expired, {} revoked)",
            s.leases_granted, s.keep_alives_acked, s.leases_expired, s.leases_revoked
        );
    }
    if s.auth_ops > 0 {
        let _ = write!(
            out,
            ", {} auth changes answered, {} user commands served and {} refused at apply",
            s.auth_ops, s.auth_served, s.auth_refused
        );
    }
    out
}
